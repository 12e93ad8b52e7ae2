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
* samples who waited on the migration (see ``migrate.monitor``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import threading
import time
import uuid
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

try:
    import psycopg2
except ImportError:  # pragma: no cover - the module reports missing psycopg2 before getting here
    psycopg2 = None

from ansible_collections.dbops.migrations.plugins.module_utils.compose.command import project_argv
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.alembic_cli import (
    AlembicPlanError, CONNECTION_LOST, ERROR, KILLED, LOCK_TIMEOUT, RETRYABLE, STATEMENT_TIMEOUT,
    RevisionGraph, Step, classify_failure, duration_ms, error_name, error_tail, executor_problem,
    failing_statement, heads_label, launcher_argv, offline_range, pgoptions, root_cause, split_offline_sql,
    strip_compose_progress)
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.monitor import (
    BlockedTracker, ControllerWatch, Monitor, descendants, write_timeline)
from ansible_collections.dbops.migrations.plugins.module_utils.pg import (
    ConnInfo, connect, mask_secrets, quote_ident)

# (argv, environment additions, cwd) -> (rc, stdout, stderr)
Runner = Callable[[List[str], Dict[str, str], Optional[str]], Tuple[int, str, str]]

ADVISORY_CLASS = 0x44424F  # "DBO": the first key of the collection's advisory locks
APP_NAME_PREFIX = "dbops-migrate-"
INVALID_INDEX = "invalid_index"
CONTROLLER_GONE = "controller_gone"
# What an upgrade trips over when an earlier attempt committed part of the revision.
ALREADY_EXISTS_ERRORS = ("DuplicateColumn", "DuplicateTable", "DuplicateObject", "DuplicateSchema",
                         "DuplicateFunction")
DB_URL_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DB_URL_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?$")
RESERVED_ENV = ("PGPASSWORD", "PGOPTIONS", "PGAPPNAME")


_USER_SCHEMAS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'"
                 " AND n.nspname NOT LIKE 'pg\\_temp\\_%%'")


def _ident(name: str) -> str:
    """An identifier as PostgreSQL's format('%I') prints it (quoted unless plain lower case)."""
    return name if re.match(r"^[a-z_][a-z0-9_$]*$", name) else '"%s"' % name.replace('"', '""')


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
    # The docker CLI, to remove a one-off container whose controller died.
    docker_cli: Optional[str] = None


@dataclasses.dataclass
class MigrateRequest:
    config: Optional[str] = None
    target: str = "head"
    executor: str = "local"
    alembic_bin: str = "alembic"
    # "alembic": the alembic executable; "python": ``python -c LAUNCHER`` (alembic's command line that
    # also reads an ini without script_location, see ``_alembic_cli.LAUNCHER_SCRIPT``).
    launcher: str = "alembic"
    python_bin: str = "python3"
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
    allow_downgrade: bool = False
    db_url_var: str = "DATABASE_URL"
    db_url_scheme: str = "postgresql"
    # Stop (and roll back) when the process that started the run dies.
    watch_controller: bool = True


def validate_url_form(db_url_var: str, db_url_scheme: str) -> None:
    """Bad ``db_url_var`` / ``db_url_scheme`` values, before anything runs."""
    if not DB_URL_VAR.match(db_url_var or "") or db_url_var in RESERVED_ENV:
        raise AlembicPlanError(
            "db_url_var=%r is not usable: give the name of the environment variable the project's env.py reads "
            "the database URL from (letters, digits, _; not %s), e.g. DATABASE_URL"
            % (db_url_var, ", ".join(RESERVED_ENV)))
    if not DB_URL_SCHEME.match(db_url_scheme or ""):
        raise AlembicPlanError(
            "db_url_scheme=%r is not a PostgreSQL URL scheme; use postgresql, or postgresql+DRIVER such as "
            "postgresql+psycopg2 (SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3)" % (db_url_scheme,))


def url_with_scheme(url: str, scheme: str) -> str:
    """``postgresql://...`` with its scheme replaced (the driver part of a SQLAlchemy URL)."""
    return scheme + url[url.index("://"):]


def runner_lock_holder(query: Callable[[str, Sequence[Any]], List[Tuple[Any, ...]]],
                       key: Tuple[int, int]) -> Optional[Dict[str, Any]]:
    """The session holding the migration advisory lock ``key`` in the current database, or None.

    ``query(sql, params)`` runs on any connection to that database (it need not be the holder).
    """
    rows = query(
        "SELECT l.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local'),"
        " extract(epoch FROM clock_timestamp() - a.backend_start)::float8"
        " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid AND l.objsubid = 2",
        (key[0], key[1] % (1 << 32)))
    if not rows:
        return None
    pid, app, client, age = rows[0]
    return {"pid": pid, "application_name": app, "client": client, "connected_s": round(age or 0.0, 1)}


def migration_lock_status(db: ConnInfo, version_table: str = "alembic_version",
                          version_table_schema: Optional[str] = None) -> Dict[str, Any]:
    """Whether a runner holds the migration advisory lock of ``db`` now (read-only).

    Returns ``lock_held``, ``lock_holder_pid`` and ``lock_holder`` (application_name, client,
    connected_s) -- what a release lock asks before declaring a crashed run's lock stale.
    """
    conn = connect(db, autocommit=True, application_name="dbops-migrate-lockcheck")
    try:
        def query(sql: str, params: Sequence[Any]) -> List[Tuple[Any, ...]]:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        holder = runner_lock_holder(query, lock_key(version_table, version_table_schema))
    finally:
        conn.close()
    return {"lock_held": holder is not None, "lock_holder_pid": holder["pid"] if holder else None,
            "lock_holder": holder}


def kill_processes(pids: Sequence[int], sig: int = signal.SIGKILL) -> List[int]:
    killed = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            killed.append(pid)
        except OSError:
            pass
    return killed


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
        self.invocations = 0
        self.container: Optional[str] = None  # the one-off container of the running compose invocation

    def container_name(self) -> str:
        """A unique name for the next one-off container: found again to remove it if we are orphaned."""
        spec = self.request.compose or ComposeSpec()
        project = re.sub(r"[^a-z0-9_.-]", "", (spec.project_name or os.path.basename(spec.project_src or "")
                                               or "app").lower())[:40] or "app"
        self.invocations += 1
        return "%s%s-%s-%d" % (APP_NAME_PREFIX, project, self.app_name[len(APP_NAME_PREFIX):], self.invocations)

    def environment(self) -> Dict[str, str]:
        settings: List[Tuple[str, str]] = []
        if self.lock_timeout_ms is not None:
            settings.append(("lock_timeout", "%dms" % self.lock_timeout_ms))
        if self.statement_timeout_ms is not None:
            settings.append(("statement_timeout", "%dms" % self.statement_timeout_ms))
        env = dict(self.request.extra_env)
        env.update({
            self.request.db_url_var: url_with_scheme(self.db.url(), self.request.db_url_scheme),
            "PGOPTIONS": pgoptions(settings, self.request.extra_env.get("PGOPTIONS", "")),
            "PGAPPNAME": self.app_name,
        })
        if self.db.password:
            env["PGPASSWORD"] = self.db.password
        return env

    def compose_base(self) -> List[str]:
        """``docker compose --project-directory ... -p ... -f ... --profile ...`` of the compose executor."""
        spec = self.request.compose or ComposeSpec()
        # absolute: the compose files are named from it, and the command also runs inside it
        project_src = os.path.abspath(spec.project_src) if spec.project_src else None
        return project_argv(spec.docker_bin, project_src, spec.project_name, spec.files, None, spec.profiles,
                            standalone=spec.standalone)

    def argv(self, *args: str) -> Tuple[List[str], Optional[str]]:
        req = self.request
        if req.executor == "compose":
            spec = req.compose or ComposeSpec()
            argv = self.compose_base()
            self.container = self.container_name()
            argv += ["run", "--rm", "-T", "--name", self.container]
            for name in sorted(self.environment()):
                argv += ["-e", name]  # value comes from the docker CLI's environment, not argv
            argv.append(spec.service)
            if req.launcher == "python":
                return argv + launcher_argv(req.python_bin, req.config, args), spec.project_src
            argv.append("alembic")
            if req.config:
                argv += ["-c", req.config]
            return argv + list(args), spec.project_src
        config = os.path.abspath(req.config or "alembic.ini")
        if req.launcher == "python":
            return launcher_argv(req.python_bin, config, args), os.path.dirname(config)
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
        self.result: Dict[str, Any] = {"changed": False, "applied": [], "reverted": [], "direction": "none",
                                       "attempts": 0, "invalid_indexes": [], "warnings": []}
        self.started = time.monotonic()
        self.controller_gone: Optional[int] = None
        self._kill_lock = threading.Lock()

    # ------------------------------------------------------------ helpers
    def mask(self, text: Any) -> str:
        return mask_secrets(text, *self._secrets)

    def alembic(self, *args: str) -> Tuple[int, str, str]:
        argv, cwd = self.command.argv(*args)
        env = self.command.environment()
        rc, out, err = self.runner(argv, env, cwd)
        if self.request.executor == "compose":
            err = strip_compose_progress(err)  # else "Container db Running" hides alembic's own error
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

    def current_heads(self) -> Tuple[str, ...]:
        """The revisions in the version table: one, or one per unmerged branch; () at base."""
        if self._query("SELECT to_regclass(%s)", (self.version_table_sql(),))[0][0] is None:
            return ()
        return tuple(sorted(r[0] for r in self._query("SELECT version_num FROM %s" % self.version_table_sql())))

    def current_revision(self) -> Optional[str]:
        """The database's revision as results name it (``a,b`` while several branches are unmerged)."""
        return heads_label(self.current_heads())

    def _safe_revision(self) -> Optional[str]:
        with contextlib.suppress(Exception):
            return self.current_revision()
        return self.result.get("to_revision")

    # ------------------------------------------------------------ the controller
    def _controller_died(self, pid: int) -> None:
        """Runs in the watch thread: nobody waits for this run any more, so stop alembic now and let
        PostgreSQL roll its transaction back (the main thread then ends the run)."""
        self.controller_gone = pid
        self.log("the controller (pid %s) is gone: stopping alembic" % pid)
        self.stop_alembic()

    def stop_alembic(self) -> None:
        with self._kill_lock:
            spec = self.request.compose
            if self.request.executor == "compose" and spec and spec.docker_cli and self.command.container:
                # The `compose run` client dying does not stop its container: remove it by name.
                with contextlib.suppress(Exception):
                    self.runner([spec.docker_cli, "rm", "-f", self.command.container], {}, None)
            kill_processes(descendants(os.getpid()))

    def check_controller(self, step: Optional[Step] = None) -> None:
        if self.controller_gone is None:
            return
        self.stop_alembic()
        with contextlib.suppress(Exception):
            self.terminate_orphans()
        current = self.current_revision()
        doing = (" while %s of revision %s ran" % (step.direction, step.revision)) if step else ""
        raise MigrateError(
            "the process that started this migration (pid %s) is gone%s: the migration was stopped, its open "
            "transaction rolled back and the migration lock released. The database is at revision %s. Run the "
            "deployment again to resume." % (self.controller_gone, doing, current or "base"),
            self._failure_result(current, step, CONTROLLER_GONE) if step else {"to_revision": current})

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
            self.check_controller()
            if time.monotonic() >= deadline:
                holder = runner_lock_holder(self._query, self.lock_key)
                who = ("pid %(pid)s (%(application_name)s from %(client)s, connected %(connected_s).0f s ago)"
                       % holder) if holder else "another session"
                raise MigrateError(
                    "another migration runner holds the migration lock of this database (%s); waited %.0f s "
                    "(lock_wait). Wait for it to finish, or raise lock_wait." % (who, self.request.lock_wait),
                    {"runner_lock_holder": holder["pid"] if holder else None})
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
    def executor_lead(self, text: str) -> Optional[str]:
        if self.request.executor != "compose":
            return None
        spec = self.request.compose or ComposeSpec()
        lead = executor_problem(text, spec.service)
        if lead and "(unknown)" in lead:
            lead = lead.replace("(unknown)", self.service_image() or "(unknown)")
        return lead

    def service_image(self) -> Optional[str]:
        """The image compose resolves for the migration service (v2's ``config --format json``)."""
        spec = self.request.compose or ComposeSpec()
        if spec.standalone:
            return None
        with contextlib.suppress(Exception):
            rc, out, _err = self.runner(self.command.compose_base() + ["config", "--format", "json"],
                                        self.command.environment(), spec.project_src)
            if rc == 0:
                return str(json.loads(out)["services"][spec.service]["image"])
        return None

    def load_graph(self) -> RevisionGraph:
        rc, out, err = self.alembic("history", "--verbose")
        if rc != 0:
            lead = self.executor_lead(err + "\n" + out)
            if lead:
                raise MigrateError("alembic could not run (rc=%s): %s. Nothing was changed. Compose said: %s"
                                   % (rc, lead, error_tail(err or out, 4)))
            said = "\n".join(text for text in (err.strip(), out.strip()) if text)  # alembic 1.20 FAILs on stdout
            raise MigrateError("alembic could not read the migration scripts (rc=%s): %s. Check config (alembic.ini) "
                               "and its script_location." % (rc, error_tail(said)))
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
        watch = None
        if req.watch_controller and not req.check:
            watch = ControllerWatch(self._controller_died).start()
        try:
            return self._run()
        except MigrateError:
            raise
        except KeyboardInterrupt:
            # Ctrl-C: alembic got SIGINT too, but a compose container may outlive its client.
            self.stop_alembic()
            with contextlib.suppress(Exception):
                self.terminate_orphans()
            raise MigrateError("interrupted (SIGINT): alembic was stopped and its open transaction rolled back; the "
                               "database is at revision %s. Run again to resume."
                               % (self._safe_revision() or "base"), {"to_revision": self._safe_revision()})
        except psycopg2.Error as exc:
            raise MigrateError(
                "PostgreSQL error while migrating (%s): %s. Check the database, then run again: alembic_version "
                "is only moved by committed revisions." % (type(exc).__name__, self.mask(exc).strip()),
                {"to_revision": self.result.get("to_revision")})
        finally:
            if watch:
                watch.stop()
            with contextlib.suppress(Exception):
                self.conn.close()

    def _plan(self, graph: RevisionGraph) -> Tuple[Optional[str], Optional[str], List[Step]]:
        heads = self.current_heads()
        current = heads_label(heads)
        try:
            target = graph.resolve_target(self.request.target, heads)
            steps = graph.plan(heads, target)
        except AlembicPlanError as exc:
            raise MigrateError(str(exc), {"from_revision": current, "to_revision": current})
        target_label = heads_label(target)
        direction = steps[0].direction if steps else "none"
        self.result["direction"] = direction
        if direction == "downgrade" and not self.request.allow_downgrade:
            raise MigrateError(
                "target %s (%s) is behind the database's revision %s: reaching it is a downgrade that would revert "
                "%s. Nothing was changed. Downgrades can drop columns and data; to run it on purpose set "
                "allow_downgrade: true (take a backup first)."
                % (self.request.target, target_label or "base", current or "base",
                   ", ".join(s.revision for s in steps)),
                {"from_revision": current, "to_revision": current, "target_revision": target_label,
                 "direction": direction, "pending": [s.as_dict() for s in steps]})
        return current, target_label, steps

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
            self.check_controller(step)
            attempt += 1
            self.result["attempts"] += 1
            waits_before = len(self.tracker.own_waits)
            leftovers: List[str] = []
            if self._cleanup and not self.drop_invalid_indexes():
                # The leftover of the previous attempt is still there: building it again would fail.
                kind, out, err = INVALID_INDEX, "", ""
                heads = self.current_heads()
            else:
                self.log("%s %s (attempt %d)" % (step.direction, step.revision, attempt))
                before = self.schema_snapshot()
                rc, out, err = self.alembic(step.direction, step.alembic_target)
                self.check_controller(step)
                kind = None if rc == 0 else classify_failure(rc, err or out)
                if kind is not None and not self.connection_alive():
                    kind = CONNECTION_LOST  # the server went away: our session and the runner lock with it
                    self.reconnect()
                else:
                    self.terminate_orphans()
                heads = self.current_heads()
                if heads == step.heads_after:
                    if kind is not None:
                        self.result["warnings"].append(
                            "alembic reported a failure (%s) after revision %s was committed; the revision stands"
                            % (kind, step.revision))
                    self._record_applied(step, attempt, began)
                    return
                if kind is None:
                    raise MigrateError(
                        "alembic exited 0 but the database is at revision %s instead of %s; check that env.py "
                        "uses %s and the version table %s" % (heads_label(heads), step.to_rev, req.db_url_var,
                                                              self.version_table_sql()),
                        self._failure_result(heads_label(heads)))
                if heads != step.heads_before:
                    raise MigrateError(
                        "revision %s failed and the database is now at %s (expected %s or %s): %s"
                        % (step.revision, heads_label(heads), step.from_rev, step.to_rev,
                           root_cause(err or out) or error_tail(err or out)),
                        self._failure_result(heads_label(heads)))
                self.collect_invalid_indexes(baseline_invalid, step.revision, err or out)
                if kind == ERROR and self._stale_leftover_in(err or out):
                    kind = INVALID_INDEX  # tripped over an earlier run's leftover: drop it and go again
                if self._cleanup:
                    self.drop_invalid_indexes()
                leftovers = self.schema_changes(before, self.schema_snapshot())
            if kind in RETRYABLE + (INVALID_INDEX,) and attempt <= len(delays) and not leftovers:
                self.log("%s on %s, retrying in %.1f s" % (kind, step.revision, delays[attempt - 1]))
                self.sleep(delays[attempt - 1])
                continue
            message = self._failure_message(step, kind, attempt, err or out, waits_before, leftovers)
            result = self._failure_result(heads_label(heads), step, kind, err or out, waits_before)
            if leftovers:
                result["failure"]["partially_applied"] = leftovers
            raise MigrateError(message, result)

    def _stale_leftover_in(self, stderr: str) -> bool:
        """Did the revision trip over an INVALID index an earlier run left (``already exists``)?"""
        return any(entry.get("preexisting") and 'relation "%s" already exists' % entry["index"] in stderr
                   for entry in self.result["invalid_indexes"])

    # ------------------------------------------------------------ half-applied revisions
    def schema_snapshot(self) -> set:
        """Tables, columns, indexes, sequences, views and constraints of the user's schemas.

        Compared around a failed attempt it shows what a revision committed before it failed:
        ``autocommit_block`` commits everything before it, so a revision can fail half-applied.
        """
        rows = self._query(
            "SELECT format('%%s %%I.%%I', CASE WHEN c.relkind IN ('r', 'p') THEN 'table'"
            " WHEN c.relkind = 'S' THEN 'sequence' WHEN c.relkind = 'm' THEN 'materialized view'"
            " ELSE 'view' END, n.nspname, c.relname)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm') AND " + _USER_SCHEMAS +
            # an index names its table: the version table's primary key index is bookkeeping too
            " UNION ALL SELECT format('index %%I.%%I on %%I.%%I', n.nspname, c.relname, tn.nspname, t.relname)"
            " FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace"
            " WHERE " + _USER_SCHEMAS +
            " UNION ALL SELECT format('column %%I.%%I.%%I', n.nspname, c.relname, a.attname)"
            " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND " + _USER_SCHEMAS +
            " UNION ALL SELECT format('constraint %%I on %%I.%%I', o.conname, n.nspname, c.relname)"
            " FROM pg_constraint o JOIN pg_class c ON c.oid = o.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE " + _USER_SCHEMAS)
        return {r[0] for r in rows}

    def schema_changes(self, before: set, after: set) -> List[str]:
        """What a failed attempt left behind, apart from the version table and the INVALID indexes
        (those are reported, dropped and retried on their own)."""
        version_table = self.request.version_table
        invalid = {"index %s.%s" % (_ident(e["schema"]), _ident(e["index"])) for e in self.result["invalid_indexes"]}

        def reported(item: str) -> bool:
            return item.split(" on ")[0] not in invalid and version_table not in re.split(r"[ .]", item)
        changes = ["%s added" % item for item in sorted(after - before) if reported(item)]
        changes += ["%s removed" % item for item in sorted(before - after) if reported(item)]
        return changes

    # ------------------------------------------------------------ results
    def _record_applied(self, step: Step, attempts: int, began: float) -> None:
        entry = step.as_dict()
        entry.update(attempts=attempts, duration_s=round(time.monotonic() - began, 3))
        # Downgrades are listed as reverted, never as applied.
        self.result["reverted" if step.direction == "downgrade" else "applied"].append(entry)
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
        if steps and steps[0].direction == "downgrade":
            self.result["warnings"].append("check mode: would revert %s (a downgrade)"
                                           % ", ".join(s.revision for s in steps))
        return self._finish()

    def _blockers_for_attempt(self, waits_before: int) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
        with self.tracker.lock:
            waits = list(self.tracker.own_waits.values())[waits_before:]
        if waits:
            wait = max(waits, key=lambda w: w["waited_s"])
            return ({"lock": wait["lock"], "waited_s": wait["waited_s"], "statement": wait["statement"]},
                    list(wait["blocked_by"].values()))
        return None, self.probable_blockers()

    def _index_report(self, revision: str) -> str:
        """What happened to the INVALID indexes this revision left, by name."""
        entries = [e for e in self.result["invalid_indexes"] if e.get("revision") == revision and e.get("index")]
        parts = []
        for entry in entries:
            name = "%s.%s" % (entry["schema"], entry["index"])
            if entry.get("dropped"):
                parts.append("The failed build left the INVALID index %s, which was dropped." % name)
            else:
                parts.append("The failed build left the INVALID index %s, which could not be dropped yet (%s); the "
                             "next run drops it first." % (name, entry.get("error") or "open transactions"))
        return " ".join(parts)

    def _state_sentence(self, step: Step, leftovers: Sequence[str], stderr: str) -> str:
        """What is in the database now, truthfully."""
        current = step.from_rev or "base"
        if leftovers:
            return ("The revision was not recorded (the database's revision is still %s), but part of it was "
                    "committed before it failed (an autocommit_block commits what ran before it): %s. Undo that by "
                    "hand or make the revision skip what exists, then run again."
                    % (current, "; ".join(leftovers)))
        if step.direction == "upgrade" and error_name(stderr) in ALREADY_EXISTS_ERRORS:
            return ("The database stays at revision %s, yet what revision %s creates already exists: an earlier "
                    "attempt of %s probably committed part of it before failing (autocommit_block) without recording "
                    "the revision. Drop that leftover by hand or make the revision skip it, then run again."
                    % (current, step.revision, step.revision))
        return "The database stays at revision %s." % current

    def _failure_message(self, step: Step, kind: str, attempts: int, stderr: str, waits_before: int,
                         leftovers: Sequence[str] = ()) -> str:
        current = step.from_rev or "base"
        state = self._state_sentence(step, leftovers, stderr)
        indexes = self._index_report(step.revision)
        if kind == LOCK_TIMEOUT:
            wait, blockers = self._blockers_for_attempt(waits_before)
            lock = wait["lock"] if wait else "a lock"
            statement = failing_statement(stderr) or (wait or {}).get("statement")
            who = "; ".join(
                "pid %s (application_name %r, state %r, transaction open %.1f s, query: %s)"
                % (b.get("pid"), b.get("application_name", ""), b.get("state", ""), b.get("xact_age_s") or 0.0,
                   b.get("query", "")) for b in blockers) or "a session that had ended by the time it was sampled"
            return ("%s of revision %s could not get its lock within lock_timeout=%sms after %d attempt(s): "
                    "it waited for %s (statement: %s), held by %s. %s%s "
                    "End that session (SELECT pg_terminate_backend(pid)) or run again later, or raise retries."
                    % (step.direction.capitalize(), step.revision, self.command.lock_timeout_ms, attempts, lock,
                       self.mask(statement or "unknown"), who, state, (" " + indexes) if indexes else ""))
        if kind == STATEMENT_TIMEOUT:
            return ("%s of revision %s ran longer than statement_timeout=%sms and was rolled back: %s. %s Rewrite "
                    "the migration (batches, CONCURRENTLY, NOT VALID) or raise statement_timeout."
                    % (step.direction.capitalize(), step.revision, self.command.statement_timeout_ms,
                       error_tail(stderr, 4), state))
        if kind == INVALID_INDEX:
            left = [e for e in self.result["invalid_indexes"]
                    if (e["schema"], e["index"], e["table"]) in self._cleanup]
            names = ", ".join("%s.%s" % (e["schema"], e["index"]) for e in left) or "(already dropped)"
            who = "; ".join("pid %s (%s, transaction open %.1f s)" % (b["pid"], b["state"], b["xact_age_s"])
                            for b in self.probable_blockers()) or "open transactions"
            return ("revision %s cannot be built while the INVALID index %s is in the way, and it could not be "
                    "dropped (DROP INDEX CONCURRENTLY waits for %s) after %d attempt(s). The database stays at "
                    "revision %s; run again later and it is dropped first."
                    % (step.revision, names, who, attempts, current))
        if kind == KILLED:
            return ("alembic was killed while applying revision %s; its transaction was rolled back. %s Run again "
                    "to resume." % (step.revision, state))
        if kind == CONNECTION_LOST:
            return ("the connection to PostgreSQL was lost while applying revision %s (%d attempt(s)): %s. %s Run "
                    "again once the server is stable." % (step.revision, attempts, error_tail(stderr, 4), state))
        lead = self.executor_lead(stderr)
        cause = root_cause(stderr) or lead
        lead = lead if lead and lead != cause else None
        return ("%s of revision %s failed: %s.%s %s%s Not retried: only lock timeouts and lost connections are. "
                "alembic said:\n%s"
                % (step.direction.capitalize(), step.revision, (cause or "see below").rstrip("."),
                   (" " + lead + ".") if lead else "", state, (" " + indexes) if indexes else "",
                   error_tail(stderr)))

    def _failure_result(self, current: Optional[str], step: Optional[Step] = None, kind: str = ERROR,
                        stderr: str = "", waits_before: int = 0) -> Dict[str, Any]:
        result = dict(self.result)
        result["to_revision"] = current
        result["duration_s"] = round(time.monotonic() - self.started, 3)
        if step is not None:
            failure: Dict[str, Any] = {"revision": step.revision, "direction": step.direction, "kind": kind,
                                       "cause": root_cause(stderr), "stderr_tail": error_tail(stderr)}
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
