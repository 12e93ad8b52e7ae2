# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run alembic migrations without stalling live traffic.

The runner:

* holds a PostgreSQL advisory lock on its own connection for the whole run, so only one
  runner migrates a database at a time (a second one waits up to ``lock_wait`` and then
  finds nothing left to do, or fails clearly);
* applies one revision per alembic invocation, so a failure rolls back only the revision
  being applied and a retry resumes from there;
* hands ``lock_timeout`` / ``statement_timeout`` to alembic's sessions through
  ``PGOPTIONS`` (works for alembic on this host and inside a container) and tags them with
  a unique ``application_name``;
* retries a revision that could not get its lock (or lost its connection) with backoff,
  and when retries run out fails with the lock it waited for and who held it;
* terminates backends left behind by a killed alembic process, drops INVALID indexes
  left by a failed ``CREATE INDEX CONCURRENTLY`` of the run before retrying;
* samples who waited on the migration (see ``_migrate_monitor``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

try:
    import psycopg2
except ImportError:  # pragma: no cover - the module reports missing psycopg2 before getting here
    psycopg2 = None

from ansible_collections.dbops.migrations.plugins.module_utils._alembic_cli import (
    AlembicPlanError, CONNECTION_LOST, ERROR, KILLED, LOCK_TIMEOUT, RETRYABLE, STATEMENT_TIMEOUT,
    RevisionGraph, Step, classify_failure, duration_ms, error_tail, failing_statement, offline_range,
    pgoptions, split_offline_sql)
from ansible_collections.dbops.migrations.plugins.module_utils._migrate_monitor import (
    BlockedTracker, Monitor, write_timeline)
from ansible_collections.dbops.migrations.plugins.module_utils._pg import (
    ConnInfo, connect, mask_secrets, quote_ident)

# (argv, environment additions, cwd) -> (rc, stdout, stderr)
Runner = Callable[[List[str], Dict[str, str], Optional[str]], Tuple[int, str, str]]

ADVISORY_CLASS = 0x44424F  # "DBO": the first key of the collection's advisory locks
APP_NAME_PREFIX = "dbops-migrate-"
INVALID_INDEX = "invalid_index"


class MigrateError(Exception):
    """The migration failed; ``result`` carries what is known (revision, attempts, blockers)."""

    def __init__(self, msg: str, result: Optional[Dict[str, Any]] = None):
        super().__init__(msg)
        self.msg = msg
        self.result = result or {}


@dataclasses.dataclass
class ComposeSpec:
    project_src: Optional[str] = None
    files: Sequence[str] = ()
    service: str = "migration"
    profiles: Sequence[str] = ("migration",)
    project_name: Optional[str] = None
    docker_bin: str = "docker"
    # True: ``docker_bin`` is the standalone ``docker-compose`` (v1), which takes the same
    # arguments without the ``compose`` subcommand.
    standalone: bool = False


@dataclasses.dataclass
class MigrateRequest:
    config: Optional[str] = None
    target: str = "head"
    executor: str = "local"
    alembic_bin: str = "alembic"
    lock_timeout: Any = "500ms"
    statement_timeout: Any = None
    retries: int = 5
    retry_delay: float = 2.0
    retry_backoff: float = 2.0
    retry_delay_max: float = 60.0
    lock_wait: float = 120.0
    monitor: bool = True
    monitor_interval: float = 0.1
    timeline_file: Optional[str] = None
    version_table: str = "alembic_version"
    version_table_schema: Optional[str] = None
    extra_env: Dict[str, str] = dataclasses.field(default_factory=dict)
    compose: Optional[ComposeSpec] = None
    alembic_db: Optional[ConnInfo] = None  # what alembic connects to, when it differs (compose network)
    check: bool = False
    show_sql: bool = True
    drop_invalid_indexes: bool = True


def lock_key(version_table: str, schema: Optional[str]) -> Tuple[int, int]:
    """The two-int advisory lock key of a project: one per version table."""
    name = "%s.%s" % (schema or "", version_table)
    value = zlib.crc32(name.encode("utf-8"))
    return ADVISORY_CLASS, value - (1 << 32) if value >= (1 << 31) else value


def retry_delays(retries: int, delay: float, backoff: float, cap: float) -> List[float]:
    """Seconds to sleep before each retry: delay, delay*backoff, ... capped at ``cap``."""
    return [round(min(delay * (backoff ** i), cap), 3) for i in range(max(retries, 0))]


class AlembicCommand:
    """Builds alembic invocations for the chosen executor; secrets travel in the environment."""

    def __init__(self, request: MigrateRequest, db: ConnInfo, app_name: str):
        self.request = request
        self.db = request.alembic_db or db
        self.app_name = app_name
        self.lock_timeout_ms = duration_ms(request.lock_timeout, "lock_timeout") if request.lock_timeout not in (None, "") else None
        self.statement_timeout_ms = (duration_ms(request.statement_timeout, "statement_timeout")
                                     if request.statement_timeout not in (None, "") else None)

    def environment(self) -> Dict[str, str]:
        settings: List[Tuple[str, str]] = []
        if self.lock_timeout_ms is not None:
            settings.append(("lock_timeout", "%dms" % self.lock_timeout_ms))
        if self.statement_timeout_ms is not None:
            settings.append(("statement_timeout", "%dms" % self.statement_timeout_ms))
        env = dict(self.request.extra_env)
        env.update({
            "DATABASE_URL": self.db.url(),
            "PGOPTIONS": pgoptions(settings, self.request.extra_env.get("PGOPTIONS", "")),
            "PGAPPNAME": self.app_name,
        })
        if self.db.password:
            env["PGPASSWORD"] = self.db.password
        return env

    def argv(self, *args: str) -> Tuple[List[str], Optional[str]]:
        req = self.request
        if req.executor == "compose":
            spec = req.compose or ComposeSpec()
            argv = [spec.docker_bin] if spec.standalone else [spec.docker_bin, "compose"]
            for path in spec.files:
                argv += ["-f", path]
            if spec.project_src:
                argv += ["--project-directory", spec.project_src]
            if spec.project_name:
                argv += ["-p", spec.project_name]
            for profile in spec.profiles:
                argv += ["--profile", profile]
            argv += ["run", "--rm", "-T"]
            for name in sorted(self.environment()):
                argv += ["-e", name]  # value comes from the docker CLI's environment, not argv
            argv += [spec.service, "alembic"]
            if req.config:
                argv += ["-c", req.config]
            return argv + list(args), spec.project_src
        config = os.path.abspath(req.config or "alembic.ini")
        return [req.alembic_bin, "-c", config] + list(args), os.path.dirname(config)


class Migrator:
    """One run of ``alembic_migrate``: see the module documentation for the contract."""

    def __init__(self, request: MigrateRequest, db: ConnInfo, runner: Runner,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] = lambda _m: None):
        self.request = request
        self.db = db
        self.runner = runner
        self.sleep = sleep
        self.log = log
        self.app_name = APP_NAME_PREFIX + uuid.uuid4().hex[:12]
        secrets = [db.password, request.alembic_db.password if request.alembic_db else None]
        self._secrets = [s for s in secrets if s]
        self.command = AlembicCommand(request, db, self.app_name)
        self.conn = None
        self.lock_key = lock_key(request.version_table, request.version_table_schema)
        self.tracker = BlockedTracker(self.app_name, self.mask, request.monitor_interval,
                                      keep_timeline=bool(request.timeline_file))
        self._cleanup: set = set()
        self.result: Dict[str, Any] = {"changed": False, "applied": [], "attempts": 0,
                                       "invalid_indexes": [], "warnings": []}
        self.started = time.monotonic()

    # ------------------------------------------------------------ helpers
    def mask(self, text: Any) -> str:
        return mask_secrets(text, *self._secrets)

    def alembic(self, *args: str) -> Tuple[int, str, str]:
        argv, cwd = self.command.argv(*args)
        env = self.command.environment()
        rc, out, err = self.runner(argv, env, cwd)
        return rc, self.mask(out), self.mask(err)

    def _connect(self):
        return connect(self.db, autocommit=True, application_name="dbops-migrate-control")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def version_table_sql(self) -> str:
        table = quote_ident(self.request.version_table)
        if self.request.version_table_schema:
            table = quote_ident(self.request.version_table_schema) + "." + table
        return table

    def current_revision(self) -> Optional[str]:
        if self._query("SELECT to_regclass(%s)", (self.version_table_sql(),))[0][0] is None:
            return None
        rows = [r[0] for r in self._query("SELECT version_num FROM %s" % self.version_table_sql())]
        if len(rows) > 1:
            raise MigrateError(
                "the database is at several revisions at once (%s): its branches were never merged; "
                "migrate it with alembic by hand to a single revision first" % ", ".join(sorted(rows)))
        return rows[0] if rows else None

    # ------------------------------------------------------------ advisory lock
    def acquire_runner_lock(self) -> None:
        deadline = time.monotonic() + max(self.request.lock_wait, 0)
        waited_for = None
        while True:
            if self._query("SELECT pg_try_advisory_lock(%s, %s)", self.lock_key)[0][0]:
                if waited_for:
                    self.result["waited_for_runner_s"] = round(time.monotonic() - waited_for, 3)
                return
            waited_for = waited_for or time.monotonic()
            if time.monotonic() >= deadline:
                holder = self._query(
                    "SELECT l.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local'),"
                    " extract(epoch FROM clock_timestamp() - a.backend_start)::float8"
                    " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.classid = %s::oid"
                    " AND l.objid = %s::bigint::oid AND l.objsubid = 2 AND l.granted",
                    (self.lock_key[0], self.lock_key[1] % (1 << 32)))
                who = ("pid %s (%s from %s, connected %.0f s ago)" % holder[0]) if holder else "another session"
                raise MigrateError(
                    "another migration runner holds the migration lock of this database (%s); waited %.0f s "
                    "(lock_wait). Wait for it to finish, or raise lock_wait." % (who, self.request.lock_wait),
                    {"runner_lock_holder": holder[0][0] if holder else None})
            self.sleep(0.2)

    # ------------------------------------------------------------ invalid indexes
    def invalid_indexes(self) -> List[Tuple[str, str, str]]:
        return [tuple(r) for r in self._query(
            "SELECT n.nspname, c.relname, t.relname FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_class t ON t.oid = i.indrelid"
            " WHERE NOT i.indisvalid"
            " AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid)"
            " ORDER BY 1, 2")]

    def _index_entry(self, key: Tuple[str, str, str], revision: Optional[str]) -> Dict[str, Any]:
        for entry in self.result["invalid_indexes"]:
            if (entry["schema"], entry["index"], entry["table"]) == key:
                entry["revision"] = entry.get("revision") or revision
                return entry
        entry = {"schema": key[0], "index": key[1], "table": key[2], "revision": revision, "dropped": False}
        self.result["invalid_indexes"].append(entry)
        return entry

    def collect_invalid_indexes(self, baseline: set, revision: str, stderr: str) -> None:
        """After a failed attempt: INVALID indexes this revision left (or tripped over) need dropping."""
        invalid = set(self.invalid_indexes())
        for key in invalid - baseline:
            self._cleanup.add(key)
            self._index_entry(key, revision)
        # A pre-existing INVALID index with the name the revision builds: an earlier failed run left it.
        for key in invalid & baseline:
            if 'relation "%s" already exists' % key[1] in stderr:
                self._cleanup.add(key)
                self._index_entry(key, revision)["preexisting"] = True

    def drop_invalid_indexes(self) -> bool:
        """Drop the INVALID indexes queued for cleanup; True when none is left."""
        if not self.request.drop_invalid_indexes:
            return not self._cleanup
        for key in sorted(self._cleanup):
            entry = self._index_entry(key, None)
            try:
                # DROP INDEX CONCURRENTLY never blocks reads or writes, but waits for open transactions.
                self._query("SET lock_timeout = '2s'")
                self._query("DROP INDEX CONCURRENTLY IF EXISTS %s.%s" % (quote_ident(key[0]), quote_ident(key[1])))
                entry["dropped"] = True
                entry.pop("error", None)
                self._cleanup.discard(key)
            except Exception as exc:  # reported; retried before the next attempt and by the next run
                entry["error"] = self.mask(exc).strip()
            finally:
                with contextlib.suppress(Exception):
                    self._query("RESET lock_timeout")
        return not self._cleanup

    # ------------------------------------------------------------ orphans and reconnection
    def terminate_orphans(self) -> int:
        """Backends of a killed alembic process keep their locks until they notice: end them."""
        rows = self._query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                           " WHERE application_name = %s AND pid <> pg_backend_pid()", (self.app_name,))
        deadline = time.monotonic() + 10
        while rows and time.monotonic() < deadline:
            left = self._query("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (self.app_name,))
            if not left[0][0]:
                break
            self.sleep(0.1)
        return len(rows)

    def reconnect(self, budget: float = 60.0) -> None:
        """After the server went away: reconnect and take the runner lock again."""
        with contextlib.suppress(Exception):
            self.conn.close()
        deadline = time.monotonic() + budget
        while True:
            try:
                self.conn = self._connect()
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise MigrateError("lost the connection to PostgreSQL and could not reconnect within %.0f s: %s"
                                       % (budget, self.mask(exc).strip()))
                self.sleep(0.5)
        self.acquire_runner_lock()

    def connection_alive(self) -> bool:
        try:
            self._query("SELECT 1")
            return True
        except Exception:
            return False

    def probable_blockers(self) -> List[Dict[str, Any]]:
        """Fallback diagnostics: the oldest open transactions of other sessions."""
        rows = self._query(
            "SELECT pid, coalesce(application_name, ''), coalesce(state, ''),"
            " extract(epoch FROM clock_timestamp() - xact_start)::float8, left(coalesce(query, ''), 300)"
            " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend' AND xact_start IS NOT NULL"
            " AND application_name NOT LIKE 'dbops-migrate-%%'"
            " ORDER BY xact_start LIMIT 3")
        return [{"pid": r[0], "application_name": r[1], "state": r[2], "xact_age_s": round(r[3] or 0, 3),
                 "query": self.mask(r[4])} for r in rows]

    # ------------------------------------------------------------ planning
    def load_graph(self) -> RevisionGraph:
        rc, out, err = self.alembic("history", "--verbose")
        if rc != 0:
            raise MigrateError("alembic could not read the migration scripts (rc=%s): %s. Check config (alembic.ini) "
                               "and its script_location." % (rc, error_tail(err or out)))
        graph = RevisionGraph.from_history(out)
        if not graph.revisions:
            raise MigrateError("alembic found no revisions in this project; check script_location in %s"
                               % (self.request.config or "alembic.ini"))
        return graph

    def render_sql(self, steps: List[Step]) -> Dict[str, str]:
        """Offline SQL per revision (``alembic upgrade --sql from:to``)."""
        if not steps:
            return {}
        first, last = steps[0], steps[-1]
        rc, out, err = self.alembic(first.direction, "--sql",
                                    offline_range(first.from_rev, last.to_rev, first.direction))
        if rc != 0:
            self.result["warnings"].append("could not render the SQL offline: %s" % error_tail(err or out, 3))
            return {}
        return {chunk["revision"]: chunk["sql"] for chunk in split_offline_sql(out)}

    # ------------------------------------------------------------ the run
    def run(self) -> Dict[str, Any]:
        req = self.request
        if req.executor == "local" and req.config and not os.path.isfile(req.config):
            raise MigrateError("alembic config %s not found; set config to the project's alembic.ini" % req.config)
        try:
            self.conn = self._connect()
        except Exception as exc:
            raise MigrateError("cannot connect to %s: %s" % (self.db.masked_url(), self.mask(exc).strip()))
        try:
            return self._run()
        except MigrateError:
            raise
        except psycopg2.Error as exc:
            raise MigrateError(
                "PostgreSQL error while migrating (%s): %s. Check the database, then run again: alembic_version "
                "is only moved by committed revisions." % (type(exc).__name__, self.mask(exc).strip()),
                {"to_revision": self.result.get("to_revision")})
        finally:
            with contextlib.suppress(Exception):
                self.conn.close()

    def _plan(self, graph: RevisionGraph) -> Tuple[Optional[str], Optional[str], List[Step]]:
        current = self.current_revision()
        try:
            target = graph.resolve_target(self.request.target, current)
            steps = graph.plan(current, target)
        except AlembicPlanError as exc:
            raise MigrateError(str(exc), {"from_revision": current, "to_revision": current})
        return current, target, steps

    def _run(self) -> Dict[str, Any]:
        req = self.request
        graph = self.load_graph()
        if req.check:
            current, target, steps = self._plan(graph)
            return self._check_result(current, target, steps)
        self.acquire_runner_lock()
        # Planned under the lock: a runner that waited for another finds the work done.
        current, target, steps = self._plan(graph)
        self.result.update(from_revision=current, to_revision=current, target_revision=target,
                           pending=[s.as_dict() for s in steps])
        if not steps:
            return self._finish()
        baseline_invalid = set(self.invalid_indexes())
        for schema, name, table in sorted(baseline_invalid):
            self.result["invalid_indexes"].append({"schema": schema, "index": name, "table": table,
                                                   "revision": None, "dropped": False, "preexisting": True})
            self.result["warnings"].append(
                "index %s.%s on %s is INVALID (a failed CREATE INDEX CONCURRENTLY?) and predates this run; "
                "drop it with DROP INDEX CONCURRENTLY if a pending revision creates it" % (schema, name, table))
        monitor = None
        if req.monitor:
            monitor = Monitor(lambda: connect(self.db, autocommit=True, application_name="dbops-migrate-monitor"),
                              self.tracker).start()
        try:
            for step in steps:
                self._apply(step, baseline_invalid)
        finally:
            if monitor:
                monitor.stop()
            self._record_monitor()
        return self._finish()

    def _apply(self, step: Step, baseline_invalid: set) -> None:
        req = self.request
        delays = retry_delays(req.retries, req.retry_delay, req.retry_backoff, req.retry_delay_max)
        attempt = 0
        began = time.monotonic()
        while True:
            attempt += 1
            self.result["attempts"] += 1
            waits_before = len(self.tracker.own_waits)
            if self._cleanup and not self.drop_invalid_indexes():
                # The leftover of the previous attempt is still there: building it again would fail.
                kind, out, err = INVALID_INDEX, "", ""
                current = self.current_revision()
            else:
                self.log("%s %s (attempt %d)" % (step.direction, step.revision, attempt))
                rc, out, err = self.alembic(step.direction, step.alembic_target)
                kind = None if rc == 0 else classify_failure(rc, err or out)
                if kind is not None and not self.connection_alive():
                    kind = CONNECTION_LOST  # the server went away: our session and the runner lock with it
                    self.reconnect()
                else:
                    self.terminate_orphans()
                current = self.current_revision()
                if current == step.to_rev:
                    if kind is not None:
                        self.result["warnings"].append(
                            "alembic reported a failure (%s) after revision %s was committed; the revision stands"
                            % (kind, step.revision))
                    self._record_applied(step, attempt, began)
                    return
                if kind is None:
                    raise MigrateError(
                        "alembic exited 0 but the database is at revision %s instead of %s; check that env.py "
                        "uses DATABASE_URL and the version table %s" % (current, step.to_rev, req.version_table),
                        self._failure_result(current))
                if current != step.from_rev:
                    raise MigrateError(
                        "revision %s failed and the database is now at %s (expected %s or %s): %s"
                        % (step.revision, current, step.from_rev, step.to_rev, error_tail(err or out)),
                        self._failure_result(current))
                self.collect_invalid_indexes(baseline_invalid, step.revision, err or out)
                if kind == ERROR and self._cleanup:
                    kind = INVALID_INDEX  # tripped over an earlier run's leftover: drop it and go again
                if self._cleanup:
                    self.drop_invalid_indexes()
            if kind in RETRYABLE + (INVALID_INDEX,) and attempt <= len(delays):
                self.log("%s on %s, retrying in %.1f s" % (kind, step.revision, delays[attempt - 1]))
                self.sleep(delays[attempt - 1])
                continue
            message = self._failure_message(step, kind, attempt, err or out, waits_before)
            if self._cleanup and kind != INVALID_INDEX:
                message += (" The INVALID index %s left by the failed build could not be dropped yet; the next run "
                            "drops it first." % ", ".join("%s.%s" % key[:2] for key in sorted(self._cleanup)))
            raise MigrateError(message, self._failure_result(current, step, kind, err or out, waits_before))

    # ------------------------------------------------------------ results
    def _record_applied(self, step: Step, attempts: int, began: float) -> None:
        entry = step.as_dict()
        entry.update(attempts=attempts, duration_s=round(time.monotonic() - began, 3))
        self.result["applied"].append(entry)
        self.result["to_revision"] = step.to_rev
        self.result["changed"] = True

    def _record_monitor(self) -> None:
        summary = self.tracker.summary() if self.request.monitor else None
        if summary is not None and self.request.timeline_file:
            write_timeline(self.request.timeline_file, self.tracker,
                           {"from_revision": self.result.get("from_revision"),
                            "to_revision": self.result.get("to_revision")})
            summary["timeline_file"] = self.request.timeline_file
        self.result["blocked"] = summary

    def _finish(self) -> Dict[str, Any]:
        self.result["duration_s"] = round(time.monotonic() - self.started, 3)
        self.result.setdefault("blocked", None)
        self.result["diff"] = {"before": "revision: %s\n" % (self.result["from_revision"] or "base"),
                               "after": "revision: %s\n" % (self.result["to_revision"] or "base")}
        return self.result

    def _check_result(self, current: Optional[str], target: Optional[str], steps: List[Step]) -> Dict[str, Any]:
        sql = self.render_sql(steps) if self.request.show_sql else {}
        pending = []
        for step in steps:
            entry = step.as_dict()
            entry["sql"] = sql.get(step.revision)
            pending.append(entry)
        self.result.update(changed=bool(steps), from_revision=current, to_revision=target,
                           target_revision=target, pending=pending, blocked=None)
        return self._finish()

    def _blockers_for_attempt(self, waits_before: int) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
        with self.tracker.lock:
            waits = list(self.tracker.own_waits.values())[waits_before:]
        if waits:
            wait = max(waits, key=lambda w: w["waited_s"])
            return ({"lock": wait["lock"], "waited_s": wait["waited_s"], "statement": wait["statement"]},
                    list(wait["blocked_by"].values()))
        return None, self.probable_blockers()

    def _failure_message(self, step: Step, kind: str, attempts: int, stderr: str, waits_before: int) -> str:
        current = step.from_rev or "base"
        if kind == LOCK_TIMEOUT:
            wait, blockers = self._blockers_for_attempt(waits_before)
            lock = wait["lock"] if wait else "a lock"
            statement = failing_statement(stderr) or (wait or {}).get("statement")
            who = "; ".join(
                "pid %s (application_name %r, state %r, transaction open %.1f s, query: %s)"
                % (b.get("pid"), b.get("application_name", ""), b.get("state", ""), b.get("xact_age_s") or 0.0,
                   b.get("query", "")) for b in blockers) or "a session that had ended by the time it was sampled"
            return ("%s of revision %s could not get its lock within lock_timeout=%sms after %d attempt(s): "
                    "it waited for %s (statement: %s), held by %s. The database stays at revision %s. "
                    "End that session (SELECT pg_terminate_backend(pid)) or run again later, or raise retries."
                    % (step.direction.capitalize(), step.revision, self.command.lock_timeout_ms, attempts, lock,
                       self.mask(statement or "unknown"), who, current))
        if kind == STATEMENT_TIMEOUT:
            return ("%s of revision %s ran longer than statement_timeout=%sms and was rolled back: %s. The database "
                    "stays at revision %s. Rewrite the migration (batches, CONCURRENTLY, NOT VALID) or raise "
                    "statement_timeout." % (step.direction.capitalize(), step.revision, self.command.statement_timeout_ms,
                                            error_tail(stderr, 4), current))
        if kind == INVALID_INDEX:
            names = ", ".join("%s.%s" % key[:2] for key in sorted(self._cleanup))
            who = "; ".join("pid %s (%s, transaction open %.1f s)" % (b["pid"], b["state"], b["xact_age_s"])
                            for b in self.probable_blockers()) or "open transactions"
            return ("revision %s left the INVALID index %s, which could not be dropped yet (DROP INDEX "
                    "CONCURRENTLY waits for %s) after %d attempt(s). The database stays at revision %s; run again "
                    "later and it is dropped first." % (step.revision, names, who, attempts, current))
        if kind == KILLED:
            return ("alembic was killed while applying revision %s; its transaction was rolled back and the "
                    "database stays at revision %s. Run again to resume." % (step.revision, current))
        if kind == CONNECTION_LOST:
            return ("the connection to PostgreSQL was lost while applying revision %s (%d attempt(s)); the "
                    "database stays at revision %s: %s. Run again once the server is stable."
                    % (step.revision, attempts, current, error_tail(stderr, 4)))
        return ("%s of revision %s failed; the database stays at revision %s. alembic said:\n%s"
                % (step.direction.capitalize(), step.revision, current, error_tail(stderr)))

    def _failure_result(self, current: Optional[str], step: Optional[Step] = None, kind: str = ERROR,
                        stderr: str = "", waits_before: int = 0) -> Dict[str, Any]:
        result = dict(self.result)
        result["to_revision"] = current
        result["duration_s"] = round(time.monotonic() - self.started, 3)
        if step is not None:
            failure: Dict[str, Any] = {"revision": step.revision, "direction": step.direction, "kind": kind,
                                       "stderr_tail": error_tail(stderr)}
            if kind == LOCK_TIMEOUT:
                wait, blockers = self._blockers_for_attempt(waits_before)
                failure.update(lock=wait["lock"] if wait else None, blockers=blockers,
                               statement=self.mask(failing_statement(stderr) or ""))
            result["failure"] = failure
        return result

    def fail_result(self, exc: MigrateError) -> Dict[str, Any]:
        """The result of a failed run: the monitor summary included."""
        result = dict(self.result)
        result.update(exc.result)
        result.setdefault("blocked", self.tracker.summary() if self.request.monitor and self.tracker.samples else None)
        result.setdefault("duration_s", round(time.monotonic() - self.started, 3))
        return result
