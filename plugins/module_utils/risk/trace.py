# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lock trace: confirm the static verdict on a throw-away copy of the schema.

The schema (no data) is dumped with ``pg_dump --schema-only`` and restored into a scratch
database.  The pending statements run there inside one transaction, each under a
savepoint; after each one the locks the session holds (``pg_locks``) and the tables'
``relfilenode`` (a change means the table was rewritten) are read.  The transaction is
rolled back and the scratch database dropped whatever happens.  Statements that cannot
run inside a transaction (CONCURRENTLY, VACUUM) are listed as not traced.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.risk import rules as risk_rules
from ansible_collections.dbops.migrations.plugins.module_utils.pg import ConnInfo, connect, mask_secrets, quote_ident
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import (
    CREATE_RULES, Analysis, MigrationUnit, RiskInputError, _excerpt, _is_bookkeeping, parse_statements)

Runner = Callable[[List[str], Dict[str, str]], Tuple[int, str, str]]

PG_LOCK_NAMES = {
    "AccessShareLock": risk_rules.ACCESS_SHARE, "RowShareLock": risk_rules.ROW_SHARE, "RowExclusiveLock": risk_rules.ROW_EXCLUSIVE,
    "ShareUpdateExclusiveLock": risk_rules.SHARE_UPDATE_EXCLUSIVE, "ShareLock": risk_rules.SHARE,
    "ShareRowExclusiveLock": risk_rules.SHARE_ROW_EXCLUSIVE, "ExclusiveLock": risk_rules.EXCLUSIVE,
    "AccessExclusiveLock": risk_rules.ACCESS_EXCLUSIVE,
}
TRACE_ONLY_RULES = frozenset(("lock-timeout-missing", "lock-held-in-transaction", "python-data-loop",
                              "revision-not-analysed", "statement-unknown")) | CREATE_RULES

_RELATIONS_SQL = """
SELECT c.oid, CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       c.relfilenode, c.relkind
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%%'
"""
_LOCKS_SQL = """
SELECT relation, mode FROM pg_locks
 WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted AND relation IS NOT NULL
"""


def find_tool(name: str, bin_dir: Optional[str] = None) -> str:
    if bin_dir:
        candidate = os.path.join(bin_dir, name)
        if os.access(candidate, os.X_OK):
            return candidate
        raise RiskInputError("trace: %s not found in trace_bin_dir %s" % (name, bin_dir))
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/%s" % name),
                      key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0, reverse=True)
    if versions:
        return versions[0]
    raise RiskInputError("trace needs %s: install the PostgreSQL client tools or set trace_bin_dir" % name)


def _version_advice(err: str) -> str:
    """pg_dump refuses servers newer than itself: say which client the trace needs and where to point it."""
    match = re.search(r"server version: (\d+)", err or "")
    if "server version mismatch" not in (err or "") or not match:
        return ""
    major = match.group(1)
    return (". The trace needs pg_dump and pg_restore %s or newer: install postgresql-client-%s on this host and "
            "set trace_bin_dir to its bin folder (e.g. /usr/lib/postgresql/%s/bin)" % (major, major, major))


def _cannot_run_in_transaction(kind: str, node: Dict[str, Any]) -> bool:
    if kind in ("IndexStmt", "DropStmt", "RefreshMatViewStmt") and node.get("concurrent"):
        return True
    if kind == "ReindexStmt" and risk_rules.has_option(node.get("params"), "concurrently"):
        return True
    if kind == "VacuumStmt":
        return bool(node.get("is_vacuumcmd"))  # VACUUM cannot, ANALYZE can
    if kind in ("CreatedbStmt", "DropdbStmt", "AlterSystemStmt"):
        return True
    if kind == "AlterTableStmt":
        for cmd in node.get("cmds") or ():
            part = risk_rules.def_node(cmd.get("AlterTableCmd") or {}, "PartitionCmd")
            if part.get("concurrent"):
                return True
    return False


class _Scratch:
    """A scratch database holding a schema-only copy of the source database."""

    def __init__(self, info: ConnInfo, runner: Runner, bin_dir: Optional[str]):
        self.info = info
        self.runner = runner
        self.bin_dir = bin_dir
        self.name = "dbops_trace_" + uuid.uuid4().hex[:12]
        self.created = False

    def __enter__(self) -> "_Scratch":
        pg_dump = find_tool("pg_dump", self.bin_dir)
        pg_restore = find_tool("pg_restore", self.bin_dir)
        fd, dump_path = tempfile.mkstemp(prefix="dbops-trace-", suffix=".dump")
        os.close(fd)
        try:
            env = self.info.libpq_env()
            dump_argv = [pg_dump, "--schema-only", "--format=custom", "--no-owner", "--no-privileges",
                         "--file", dump_path]
            rc, _out, err = self.runner(dump_argv, env)
            if rc != 0:
                raise RiskInputError("trace: pg_dump --schema-only failed: %s%s"
                                     % (mask_secrets(err.strip()[-500:], self.info.password), _version_advice(err)))
            admin = connect(self.info, autocommit=True, application_name="dbops.migration_risk.trace")
            try:
                with admin.cursor() as cur:
                    cur.execute("CREATE DATABASE %s" % quote_ident(self.name))
                self.created = True
            finally:
                admin.close()
            restore_env = dict(env, PGDATABASE=self.name)
            restore_argv = [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error",
                            "--dbname", self.name, dump_path]
            rc, _out, err = self.runner(restore_argv, restore_env)
            if rc != 0:
                raise RiskInputError("trace: restoring the schema into %s failed: %s"
                                     % (self.name, mask_secrets(err.strip()[-500:], self.info.password)))
        except Exception:
            self.drop()
            raise
        finally:
            os.unlink(dump_path)
        return self

    def __exit__(self, *exc) -> None:
        self.drop()

    def drop(self) -> None:
        if not self.created:
            return
        admin = connect(self.info, autocommit=True, application_name="dbops.migration_risk.trace")
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                            (self.name,))
                cur.execute("DROP DATABASE IF EXISTS %s" % quote_ident(self.name))
            self.created = False
        finally:
            admin.close()


def _relations(cur) -> Dict[int, Tuple[str, int]]:
    cur.execute(_RELATIONS_SQL)
    return {oid: (name, filenode) for oid, name, filenode, _kind in cur.fetchall()}


def _locks(cur) -> Set[Tuple[int, str]]:
    cur.execute(_LOCKS_SQL)
    return {(int(rel), PG_LOCK_NAMES.get(mode, mode)) for rel, mode in cur.fetchall()}


def trace_units(info: ConnInfo, units: List[MigrationUnit], analysis: Analysis, runner: Runner,
                bin_dir: Optional[str] = None) -> Dict[str, Any]:
    statements: List[Dict[str, Any]] = []
    not_traced: List[str] = []
    with _Scratch(info, runner, bin_dir) as scratch:
        conn = connect(info.with_dbname(scratch.name), autocommit=False,
                       application_name="dbops.migration_risk.trace")
        try:
            with conn.cursor() as cur:
                for unit in units:
                    if unit.error or not unit.sql.strip():
                        continue
                    where = "revision %s" % unit.revision if unit.revision else unit.source
                    for stmt in parse_statements(unit.sql, where):
                        kind = stmt.node_type
                        if kind == "TransactionStmt" or _is_bookkeeping(kind, stmt.node,
                                                                        analysis.bookkeeping_tables):
                            continue
                        if _cannot_run_in_transaction(kind, stmt.node):
                            not_traced.append("%s: %s (cannot run inside a transaction)"
                                              % (unit.revision or "sql", _excerpt(stmt.text)[:120]))
                            continue
                        statements.append(_trace_one(cur, unit.revision, stmt.text))
            conn.rollback()
        finally:
            conn.close()
    disagreements = _compare(analysis, statements)
    traced = sum(1 for s in statements if s["error"] is None)
    summary = ("Traced %d statement(s) on a schema-only copy of the database (no rows, so durations show "
               "catalog work only); the transaction was rolled back and the copy dropped. %d not traced, "
               "%d disagreement(s) with the static analysis." % (traced, len(not_traced), len(disagreements)))
    return {"statements": statements, "not_traced": not_traced, "disagreements": disagreements,
            "summary": summary}


def _trace_one(cur, revision: Optional[str], text: str) -> Dict[str, Any]:
    cur.execute("SAVEPOINT dbops_trace")
    before_rel = _relations(cur)
    before_locks = _locks(cur)
    started = time.monotonic()
    error = None
    try:
        cur.execute(text)
    except Exception as exc:  # the statement fails on the copy (an object that does not exist there, ...)
        text_of_error = str(exc).strip()
        error = text_of_error.splitlines()[0] if text_of_error else type(exc).__name__
        cur.execute("ROLLBACK TO SAVEPOINT dbops_trace")
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    locks: List[Dict[str, str]] = []
    rewrote: List[str] = []
    held: Dict[str, str] = {}
    if error is None:
        after_locks = _locks(cur)
        after_rel = _relations(cur)
        names = {oid: entry[0] for oid, entry in before_rel.items()}
        names.update({oid: entry[0] for oid, entry in after_rel.items()})
        for rel, mode in sorted(after_locks - before_locks):
            if rel in names:
                locks.append({"table": names[rel], "mode": mode})
        for rel, mode in after_locks:
            if rel in names and risk_rules.LOCK_STRENGTH.get(mode, 0) > risk_rules.LOCK_STRENGTH.get(held.get(names[rel], "none"), 0):
                held[names[rel]] = mode
        for oid, (name, filenode) in before_rel.items():
            if oid in after_rel and after_rel[oid][1] != filenode:
                rewrote.append(name)
        cur.execute("RELEASE SAVEPOINT dbops_trace")
    return {"revision": revision, "statement": _excerpt(text), "locks": locks, "held": held,
            "rewrote": sorted(rewrote), "duration_ms": duration_ms, "error": error}


def _compare(analysis: Analysis, traced: List[Dict[str, Any]]) -> List[str]:
    """Where the trace contradicts a finding's lock mode or its rewrite prediction."""
    by_statement: Dict[Tuple[Optional[str], str], Dict[str, Any]] = {}
    for item in traced:
        by_statement.setdefault((item["revision"], item["statement"]), item)
    out: List[str] = []
    for finding in analysis.findings:
        if finding.rule in TRACE_ONLY_RULES or not finding.table:
            continue
        item = by_statement.get((finding.revision, finding.statement))
        if item is None or item["error"] is not None:
            continue
        where = "%s%s" % (finding.statement[:80], " (revision %s)" % finding.revision if finding.revision else "")
        new_modes = [lock["mode"] for lock in item["locks"] if lock["table"] == finding.table]
        strongest_new = max(new_modes, key=lambda m: risk_rules.LOCK_STRENGTH.get(m, 0)) if new_modes else None
        held = item["held"].get(finding.table)
        if strongest_new is not None and strongest_new != finding.lock:
            out.append("%s: static analysis says %s on %s, the trace took %s"
                       % (where, finding.lock, finding.table, strongest_new))
        elif strongest_new is None and (held is None or risk_rules.LOCK_STRENGTH.get(held, 0)
                                        < risk_rules.LOCK_STRENGTH.get(finding.lock, 0)):
            out.append("%s: static analysis says %s on %s, the trace saw %s" % (
                where, finding.lock, finding.table, held or "no lock"))
        rewrote = finding.table in item["rewrote"]
        if rewrote != finding.rewrites_table:
            out.append("%s: static analysis says %s, the trace %s" % (
                where, "the table is rewritten" if finding.rewrites_table else "no rewrite",
                "saw a new relfilenode (rewrite)" if rewrote else "saw the same relfilenode (no rewrite)"))
    return out
