# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One rehearsal: restore a verified archive into a scratch database, migrate it with the real
runner while measuring, compare with migration_risk's estimate, drop the scratch database.

The scratch database lives on the server of the connection options, or, with a
``container.ContainerSpec``, on a throw-away PostgreSQL container that is removed instead (and
the server of the connection options is never connected to).

The scratch database (or container) is removed in a ``finally`` (also on SIGINT and SIGTERM, and
when the controller dies); a run killed with ``kill -9`` leaves it behind, and the next run
removes it (see ``scratch`` and ``container``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import signal
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backups
from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import Backup, Executor
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.monitor import ControllerWatch, SamplingThread
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import (
    MigrateError, MigrateRequest, Migrator)
from ansible_collections.dbops.migrations.plugins.module_utils.pg import (
    ConnInfo, connect, mask_secrets, server_version_num)
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import calibrate as calib
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import measure, records, scratch
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.load import SyntheticLoad, touched_tables
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.container import (
    ContainerSpec, ScratchContainer, archive_major, executor_address)
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.records import RehearsalError

# (argv, environment additions, cwd) -> (rc, stdout, stderr)
Runner = Callable[[List[str], Dict[str, str], Optional[str]], Tuple[int, str, str]]
APP_NAME = "dbops-rehearsal-sampler"
LOAD_APP_NAME = "dbops-rehearsal-load"  # the synthetic load's sessions

_USER_SCHEMAS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'"
                 " AND n.nspname NOT LIKE 'pg\\_temp\\_%%'")
SNAPSHOT_SQL = (
    "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relfilenode, coalesce(tn.nspname, n.nspname),"
    " coalesce(t.relname, c.relname),"
    " CASE WHEN c.relkind IN ('r', 'p', 'm') THEN pg_table_size(c.oid) ELSE pg_relation_size(c.oid) END,"
    " greatest(c.reltuples, 0)::bigint"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = i.indrelid"
    " LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace"
    " WHERE c.relkind IN ('r', 'p', 'm', 'i') AND " + _USER_SCHEMAS)
LOCKS_SQL = (
    "SELECT extract(epoch FROM clock_timestamp())::float8, l.pid, l.mode, n.nspname, c.relname,"
    " left(coalesce(a.query, ''), 300)"
    " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE l.locktype = 'relation' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND a.application_name = %s AND l.mode = ANY(%s) AND c.relkind IN ('r', 'p', 'm') AND " + _USER_SCHEMAS)
STATEMENTS_SQL = (
    "SELECT extract(epoch FROM clock_timestamp())::float8, pid, extract(epoch FROM query_start)::float8,"
    " left(coalesce(query, ''), 300) FROM pg_stat_activity"
    " WHERE application_name = %s AND state = 'active' AND datname = current_database()"
    " AND query_start IS NOT NULL")


@dataclasses.dataclass
class RehearsalRequest:
    migrate: MigrateRequest                  # the runner's request (config, target, lock_timeout, retries...)
    archive: Optional[str] = None            # a dump or its manifest; None: the newest fit one in backup_dir
    backup_dir: Optional[str] = None
    max_archive_age_hours: float = 24.0
    allow_production_server: bool = False
    executor_host: Optional[str] = None      # how alembic reaches the server (compose executor)
    executor_port: Optional[int] = None
    sample_interval: float = 0.05
    factor: float = calib.DEFAULT_FACTOR
    min_seconds: float = calib.DEFAULT_MIN_SECONDS
    estimate: bool = True
    render: Optional[Any] = None             # risk.render_elsewhere.RenderSpec for the compose executor
    vacuum_analyze: bool = True
    jobs: int = 1
    bin_dir: Optional[str] = None            # PostgreSQL client programs (pg_restore), default: PATH
    record_dir: Optional[str] = None
    label: Optional[str] = None              # e.g. the release being rehearsed
    check: bool = False
    container: Optional[ContainerSpec] = None  # a throw-away server instead of the connection options' one
    load_rate: float = 0.0                   # synthetic queries per second per touched table (0: no load)


class Sampler(SamplingThread):
    """Samples the migration sessions' strong locks and statements into the current ledger."""

    thread_name = "dbops-rehearsal-sampler"
    retry_wait = 0.2

    def __init__(self, connect_fn: Callable[[], Any], app_name: str, interval: float):
        self.app_name = app_name
        self._interval = interval
        self.ledger: Optional[measure.LockLedger] = None
        self.errors = 0
        self._lock = threading.Lock()
        super().__init__(connect_fn)

    @property
    def interval(self) -> float:
        return self._interval

    def count_error(self) -> None:
        self.errors += 1

    def swap(self, ledger: Optional[measure.LockLedger]) -> Optional[measure.LockLedger]:
        with self._lock:
            previous, self.ledger = self.ledger, ledger
        return previous

    def sample(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(LOCKS_SQL, (self.app_name, list(measure.STRONG_MODES)))
            lock_rows = cur.fetchall()
            cur.execute(STATEMENTS_SQL, (self.app_name,))
            stmt_rows = cur.fetchall()
        locks = [measure.LockSample(at=r[0], pid=r[1], mode=r[2], table=measure.table_name(r[3], r[4]), query=r[5])
                 for r in lock_rows]
        statements = [measure.StatementSample(at=r[0], pid=r[1], query_start=r[2], query=r[3]) for r in stmt_rows]
        at = lock_rows[0][0] if lock_rows else (stmt_rows[0][0] if stmt_rows else time.time())
        with self._lock:
            if self.ledger is not None:
                self.ledger.add(at, locks, statements)


class _RecordingMigrator(Migrator):
    """The real runner; each revision it applies is measured around it."""

    def __init__(self, *args: Any, recorder: "Rehearsal", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._recorder = recorder

    def _apply(self, step, baseline_invalid) -> None:
        began = self._recorder.begin_revision(step)
        ok = False
        try:
            super()._apply(step, baseline_invalid)
            ok = True
        finally:
            self._recorder.end_revision(step, began, ok)


class _Interrupted(KeyboardInterrupt):
    """SIGTERM (or the controller gone) while rehearsing: unwound like Ctrl-C so every finally runs."""


def take_snapshot(cur) -> measure.Snapshot:
    cur.execute(SNAPSHOT_SQL)
    relations = {}
    for oid, schema, name, kind, filenode, tschema, tname, size, rows in cur.fetchall():
        relations[int(oid)] = measure.Relation(oid=int(oid), schema=schema, name=name, kind=kind,
                                               relfilenode=int(filenode or 0),
                                               table=measure.table_name(tschema, tname),
                                               size_bytes=int(size or 0), rows=int(rows or 0))
    cur.execute("SELECT pg_current_wal_lsn()::text, extract(epoch FROM clock_timestamp())::float8")
    lsn, at = cur.fetchone()
    return measure.Snapshot(relations=relations, wal_lsn_bytes=measure.lsn_to_int(lsn), at=at)


class Rehearsal:
    def __init__(self, request: RehearsalRequest, server: ConnInfo, runner: Runner,
                 log: Callable[[str], None] = lambda _m: None):
        if not server.dbname and not (request.container and request.archive):
            raise RehearsalError("no database given: set login_db (or the database in db_url) to the database "
                                 "whose backups are rehearsed%s" % (
                                     " (with scratch_container and archive it may be left out: the archive's "
                                     "manifest names it)" if request.container else ""))
        self.request = request
        self.server = server
        # Where the copy lives: the server of the connection options, or the scratch container once started.
        self.scratch_server = server
        self.database = server.dbname or ""
        self.container: Optional[ScratchContainer] = None
        self.runner = runner
        self.log = log
        self.owner = backups.this_process()
        self.scratch_name: Optional[str] = None
        self.measurements: List[Dict[str, Any]] = []
        self.sampler: Optional[Sampler] = None
        self.load: Optional[SyntheticLoad] = None
        self._snap_conn = None
        self._before: Optional[measure.Snapshot] = None
        self._interrupted = False
        self._cleaning = False
        self.result: Dict[str, Any] = {"changed": False, "warnings": []}

    # ------------------------------------------------------------ helpers
    def secrets(self) -> List[Optional[str]]:
        """Every password this rehearsal knows, for masking (the container's is made up here)."""
        return [self.server.password, self.container.password if self.container else None]

    def mask(self, text: Any) -> str:
        return mask_secrets(text, *self.secrets())

    def admin_info(self) -> ConnInfo:
        return self.scratch_server.with_dbname(self.scratch_server.options.get("maintenance_db", "postgres"))

    def _admin(self):
        try:
            return connect(self.admin_info(), autocommit=True, application_name="dbops.migration_rehearsal")
        except Exception as exc:
            if self.container is None:
                hint = "check db_url/login_* and that the server accepts connections"
            else:
                hint = "the scratch container %s stopped answering (docker logs %s)" % (
                    self.container.name, self.container.name)
            raise RehearsalError("cannot connect to %s: %s; %s" % (
                self.admin_info().masked_url(), self.mask(exc).strip(), hint))

    def _backup(self) -> Backup:
        def run(argv: List[str], env: Dict[str, str]) -> Tuple[int, str, str]:
            return self.runner(argv, env, None)
        executor = Executor(runner=run, which=self._which, bin_dir=self.request.bin_dir)
        return Backup(info=self.scratch_server, executor=executor, check_mode=False,
                      version_table=self.request.migrate.version_table,
                      version_table_schema=self.request.migrate.version_table_schema)

    @staticmethod
    def _which(name: str) -> Optional[str]:
        import shutil
        return shutil.which(name)

    # ------------------------------------------------------------ the archive
    def archive(self) -> Tuple[str, Dict[str, Any], List[Dict[str, str]]]:
        """(manifest path, manifest, archives passed over)."""
        req = self.request
        if req.archive:
            dump, manifest_path = backups.resolve_src(req.archive)
            if not manifest_path:
                raise RehearsalError("archive %s has no manifest beside it; rehearse on a pg_backup archive" % dump)
            manifest = backups.read_manifest(manifest_path)
            why = records.archive_verdict(manifest, backups.utc_now(), float("inf"))
            if why:
                raise RehearsalError("archive %s is %s" % (manifest_path, why))
            return manifest_path, manifest, []
        if not req.backup_dir:
            raise RehearsalError("give archive (a pg_backup dump or its manifest) or backup_dir (the folder of "
                                 "pg_backup's dest) to rehearse on")
        path, passed_over = records.choose_archive(req.backup_dir, self.server.dbname or "", None,
                                                   req.max_archive_age_hours)
        if path is None:
            detail = "; ".join("%s: %s" % (os.path.basename(p["manifest"]), p["reason"]) for p in passed_over[:5])
            raise RehearsalError(
                "no verified backup of %s newer than %s hours in %s%s. Take one first (pg_backup state=present "
                "verify=restore, or playbooks/backup.yml), or raise max_archive_age_hours."
                % (self.server.dbname, req.max_archive_age_hours, req.backup_dir,
                   (" (" + detail + ")") if detail else ""))
        return path, backups.read_manifest(path), passed_over

    # ------------------------------------------------------------ the run
    def run(self) -> Dict[str, Any]:
        req = self.request
        if req.container is None and not req.allow_production_server:
            raise RehearsalError(
                "the rehearsal restores a full copy of %s into a scratch database on the same server (%s:%s) and "
                "migrates it there: that costs the server disk (the database's size again), CPU, I/O and WAL. "
                "Set allow_production_server: true to do that, ideally in a quiet hour, or rehearse on a throw-away "
                "server with scratch_container; nothing was changed."
                % (self.server.dbname, self.server.host or "localhost", self.server.port))
        started = backups.utc_now()
        clock = time.monotonic()
        manifest_path, manifest, passed_over = self.archive()
        self.database = self.server.dbname or str(manifest.get("database") or "db")
        self.result.update(archive=manifest_path, archive_finished_at=manifest.get("finished_at"),
                           archive_revision=manifest.get("alembic_revision"), archives_passed_over=passed_over)
        if req.container is not None:
            self.container = ScratchContainer(req.container, self.owner, self.database, self.server.user)
        server_num, cleaned = self._clean_leftovers()
        self.result.update(cleaned_up=cleaned["dropped"], leftovers=cleaned["kept"],
                           changed=bool(cleaned["dropped"]) and not req.check)
        self.result["scratch"] = self._where(server_num)
        if req.check:
            name = scratch.scratch_db_name(self.database)
            self.result.update(scratch_db=name, passed=None, revisions=[], measurements=[], calibration=None,
                               msg=self._check_message(manifest_path, manifest, name, cleaned["dropped"]))
            return self.result
        previous = self._install_signal_handlers()
        watch = ControllerWatch(self._controller_gone).start() if req.migrate.watch_controller else None
        self.result["changed"] = True
        try:
            if self.container is not None:
                server_num = self._start_container(self.container, manifest)
            self._rehearse(manifest_path, server_num)
        except MigrateError as exc:
            self.result["passed"] = False
            self.result["failure"] = self.mask(exc.msg)
        finally:
            self._cleaning = True
            if watch:
                watch.stop()
            self._remove_scratch(server_num)
            self._restore_signal_handlers(previous)
        self.result["started_at"] = started.isoformat()
        self.result["finished_at"] = backups.utc_now().isoformat()
        self.result["duration_s"] = round(time.monotonic() - clock, 3)
        self._finish()
        return self.result

    def _clean_leftovers(self) -> Tuple[int, Dict[str, List[Any]]]:
        """(server version, leftovers of killed runs removed and reported). With a container only
        containers are looked at: the server of the connection options is never connected to."""
        if self.container is not None:
            return 0, self.container.clean_leftovers(self.owner, check_mode=self.request.check)
        admin = self._admin()
        try:
            server_num = server_version_num(admin)
            with admin.cursor() as cur:
                return server_num, scratch.clean_leftovers(cur, self.owner, server_num, check_mode=self.request.check)
        finally:
            admin.close()

    def _where(self, server_num: int) -> Dict[str, Any]:
        """Where the copy is (or would be) migrated: result and record key ``scratch``."""
        if self.container is not None:
            return self.container.describe()
        return {"kind": "database", "server": "%s:%s" % (self.server.host or "localhost", self.server.port),
                "server_version": backups.server_version_text(server_num) if server_num else None}

    def _check_message(self, manifest_path: str, manifest: Dict[str, Any], name: str, dropped: List[str]) -> str:
        req = self.request
        if self.container is not None:
            spec = self.container.spec
            where = "a new container of %s%s%s" % (
                spec.image, "" if self.container.image_present() else " (pulled first)",
                " on network %s as %s" % (spec.network, self.container.alias) if spec.network else "")
            finish, leftovers = "remove the container", "container(s)"
        else:
            where = self.server.host or "localhost"
            finish, leftovers = "drop it", "leftover(s)"
        return ("would restore %s (revision %s) into the scratch database %s on %s, migrate it to %s with "
                "lock_timeout=%s and retries=%s while measuring, then %s%s" % (
                    manifest_path, manifest.get("alembic_revision") or "base", name, where, req.migrate.target,
                    req.migrate.lock_timeout, req.migrate.retries, finish,
                    "; would first remove %d %s of killed runs" % (len(dropped), leftovers) if dropped else ""))

    def _start_container(self, container: ScratchContainer, manifest: Dict[str, Any]) -> int:
        """Start the scratch container and refuse one of another major than the archive's server."""
        self.log("starting a scratch container of %s" % container.spec.image)
        self.scratch_server = container.start()
        self.result["scratch"] = container.describe()
        problem = container.version_problem(manifest)
        if problem:
            raise RehearsalError(problem)
        if container.server_num and archive_major(manifest) is None:
            self.result["warnings"].append(
                "the archive's manifest does not say which PostgreSQL it comes from; the container runs %s"
                % backups.server_version_text(container.server_num))
        return container.server_num or 0

    def _rehearse(self, manifest_path: str, server_num: int) -> None:
        req = self.request
        name = self.scratch_name = scratch.scratch_db_name(self.database)
        self.result["scratch_db"] = name
        self.log("restoring %s into %s" % (manifest_path, name))
        restored = self._backup().restore(manifest_path, name, force=False, jobs=max(1, req.jobs), fmt=None,
                                          no_owner=True)
        admin = self._admin()
        try:
            with admin.cursor() as cur:
                scratch.set_owner_comment(cur, name, scratch.owner_comment(self.owner, name))
        finally:
            admin.close()
        self.result["restore"] = {"duration_s": restored.get("duration_s"),
                                  "rows": sum((restored.get("restored_tables") or {}).values())}
        target = self.scratch_server.with_dbname(name)
        if req.vacuum_analyze:
            began = time.monotonic()
            conn = connect(target, autocommit=True, application_name=APP_NAME)
            try:
                with conn.cursor() as cur:
                    cur.execute("VACUUM (ANALYZE)")  # hint bits and statistics, as a live database has them
            finally:
                conn.close()
            self.result["vacuum_analyze_s"] = round(time.monotonic() - began, 3)
        migrate = dataclasses.replace(req.migrate, check=False, watch_controller=False)
        host, port = self._executor_address()
        if host or port:
            migrate.alembic_db = dataclasses.replace(target, host=host or target.host, port=port or target.port)
        plan = self._plan(migrate, target)
        self.result["revisions"] = [step["revision"] for step in plan]
        estimates = self._estimates(plan, target) if req.estimate else {}
        migrator = _RecordingMigrator(migrate, target, self.runner, log=self.log, recorder=self)
        self.sampler = Sampler(lambda: connect(target, autocommit=True, application_name=APP_NAME),
                               migrator.app_name, req.sample_interval).start()
        self._snap_conn = connect(target, autocommit=True, application_name=APP_NAME)
        with self._snap_conn.cursor() as cur:
            cur.execute("SET lock_timeout = '5s'")  # sizes wait for nobody for long
        try:
            self._start_load(estimates, target)
            try:
                outcome = migrator.run()
            except MigrateError as exc:
                self.result["migration"] = _migration_summary(migrator.fail_result(exc))
                raise
            self.result["migration"] = _migration_summary(outcome)
            self.result["passed"] = True
        finally:
            if self.load is not None:
                self.load.stop()
            self.sampler.stop()
            with contextlib.suppress(Exception):
                self._snap_conn.close()
            self._calibrate(estimates)

    def _start_load(self, estimates: Dict[str, Dict[str, Any]], target: ConnInfo) -> None:
        """The synthetic load on the tables migration_risk names for the pending revisions (load_rate)."""
        req = self.request
        if req.load_rate <= 0:
            return
        if not req.estimate:
            self.result["warnings"].append("load_rate needs estimate: true (migration_risk names the tables the "
                                           "load runs on); the rehearsal ran without load")
            return
        self.load = SyntheticLoad(lambda: connect(target, autocommit=True, application_name=LOAD_APP_NAME),
                                  req.load_rate).start(touched_tables(estimates))
        self.result["load"] = {"rate_per_table": req.load_rate, "tables": self.load.tables,
                               "not_there_yet": self.load.skipped}

    def _executor_address(self) -> Tuple[Optional[str], Optional[int]]:
        """How Alembic reaches the copy when it runs elsewhere (compose executor): a scratch container on a
        network by its alias, otherwise executor_login_host/port."""
        if self.container is not None:
            # without a network the runner is local and reaches the published port like this module does
            return executor_address(self.container.spec, self.container.alias) or (None, None)
        return self.request.executor_host, self.request.executor_port

    def _plan(self, migrate: MigrateRequest, target: ConnInfo) -> List[Dict[str, Any]]:
        planner = Migrator(dataclasses.replace(migrate, check=True, show_sql=False, monitor=False), target, self.runner)
        return list(planner.run().get("pending") or [])

    def _estimates(self, plan: List[Dict[str, Any]], target: ConnInfo) -> Dict[str, Dict[str, Any]]:
        """migration_risk per revision against the restored copy, before anything is migrated."""
        from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request
        req = self.request
        estimates: Dict[str, Dict[str, Any]] = {}
        conn = connect(target, autocommit=True, application_name=APP_NAME)
        try:
            with conn.cursor() as cur:
                before = take_snapshot(cur)
        finally:
            conn.close()
        sizes = {table: rel.size_bytes + before.index_bytes().get(table, 0) for table, rel in before.tables().items()}
        rows = {table: rel.rows for table, rel in before.tables().items()}
        for step in plan:
            risk = RiskRequest(alembic_config=None if req.render is not None else req.migrate.config,
                               render=req.render, from_revision=step.get("from_revision") or "base",
                               to_revision=step["revision"], server_version=None,
                               connection_params={"db_url": target.url()},
                               version_table=req.migrate.version_table,
                               version_table_schema=req.migrate.version_table_schema)
            try:
                verdict = run_request(risk)
            except Exception as exc:  # the estimate is a comparison, never a reason to stop
                self.result["warnings"].append("no estimate for %s: %s" % (step["revision"], self.mask(exc)))
                continue
            findings = [f for f in verdict.get("findings") or [] if f.get("revision") in (None, step["revision"])]
            estimates[step["revision"]] = {
                "risk": verdict.get("risk"),
                "estimated_lock_s": (verdict.get("checklist") or {}).get("estimated_lock_seconds"),
                "table_estimates": calib.table_estimates(findings, sizes, rows),
                "findings": [{"rule": f.get("rule"), "table": f.get("table"), "lock": f.get("lock"),
                              "blocks": f.get("blocks"), "risk": f.get("risk")} for f in findings],
            }
        return estimates

    # ------------------------------------------------------------ per revision
    def begin_revision(self, step) -> float:
        with self._snap_conn.cursor() as cur:
            self._before = take_snapshot(cur)
        self.sampler.swap(measure.LockLedger(self.request.sample_interval))
        if self.load is not None:
            self.load.swap(begin=True)
        return time.monotonic()

    def end_revision(self, step, began: float, ok: bool) -> None:
        duration = time.monotonic() - began
        ledger = self.sampler.swap(None) if self.sampler else None
        entry: Dict[str, Any] = {"revision": step.revision, "from_revision": step.from_rev,
                                 "applied": ok, "duration_s": round(duration, 3)}
        if self.load is not None:
            entry["load"] = self.load.swap(begin=False)
        if ok:  # a failed revision was rolled back (or its session still holds its locks): nothing to compare
            try:
                with self._snap_conn.cursor() as cur:
                    after = take_snapshot(cur)
                entry.update(measure.compare(self._before, after))
            except Exception as exc:  # the server went away: what was sampled still counts
                entry["error"] = self.mask(exc).strip()
        if ledger is not None:
            entry.update(lock_s=ledger.lock_seconds(), table_lock_s=ledger.table_lock_seconds(),
                         locks=ledger.locks(), statements=ledger.statements(), samples=ledger.samples)
        self.measurements.append(entry)

    def _calibrate(self, estimates: Dict[str, Dict[str, Any]]) -> None:
        rows = []
        for entry in self.measurements:
            estimate = estimates.get(entry["revision"], {})
            entry["estimate"] = estimate or None
            if not entry.get("applied"):
                continue
            rows.append({"revision": entry["revision"], "measured_lock_s": entry.get("lock_s"),
                         "estimated_lock_s": estimate.get("estimated_lock_s") if estimate else None,
                         "tables": entry.get("table_lock_s") or {},
                         "table_estimates": estimate.get("table_estimates") or {}})
        self.result["measurements"] = self.measurements
        self.result["calibration"] = calib.calibrate(rows, self.request.factor, self.request.min_seconds)

    # ------------------------------------------------------------ cleanup and interruption
    def _remove_scratch(self, server_num: int) -> None:
        """The scratch database goes, or the whole container with it and its volumes."""
        if self.container is None:
            self._drop_scratch(server_num)
            return
        removed = self.container.remove()
        if removed is None:
            return  # never started
        self.result.setdefault("scratch", self.container.describe())["removed"] = removed
        if self.scratch_name:
            self.result["scratch_dropped"] = removed
        if not removed:
            self.result["warnings"].append(
                "could not remove the scratch container %s: %s; the next rehearsal on this host removes it, or "
                "docker rm -f -v %s" % (self.container.name, self.container.remove_error, self.container.name))

    def _drop_scratch(self, server_num: int) -> None:
        name = self.scratch_name
        if not name:
            return
        deadline = time.monotonic() + 30
        while True:
            try:
                admin = connect(self.admin_info(), autocommit=True, application_name="dbops.migration_rehearsal")
                try:
                    with admin.cursor() as cur:
                        scratch.drop(cur, name, server_num)
                finally:
                    admin.close()
                self.result["scratch_dropped"] = True
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    self.result["scratch_dropped"] = False
                    self.result["warnings"].append(
                        "could not drop the scratch database %s: %s; the next rehearsal on this host drops it, or "
                        "DROP DATABASE it by hand" % (name, self.mask(exc).strip()))
                    return
                time.sleep(0.5)

    def _controller_gone(self, pid: int) -> None:
        """From the watch thread: unwind the main thread as SIGTERM does."""
        with contextlib.suppress(Exception):
            os.kill(os.getpid(), signal.SIGTERM)

    def _on_signal(self, signum, _frame) -> None:
        if self._interrupted or self._cleaning:
            return  # the first one unwinds; the cleanup must not be cut short by another
        self._interrupted = True
        raise _Interrupted("signal %d" % signum)

    def _install_signal_handlers(self) -> Dict[int, Any]:
        previous: Dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: Dict[int, Any]) -> None:
        for sig, handler in previous.items():
            with contextlib.suppress(Exception):
                signal.signal(sig, handler)

    # ------------------------------------------------------------ the result
    def _finish(self) -> None:
        req = self.request
        result = self.result
        result.setdefault("passed", False)
        result.setdefault("measurements", self.measurements)
        result.setdefault("calibration", None)
        result.setdefault("revisions", [])
        record = {
            "format_version": records.RECORD_FORMAT_VERSION,
            "id": "%s-%s" % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
                             uuid.uuid4().hex[:6]),
            "database": self.database, "label": req.label, "passed": bool(result["passed"]),
            "failure": result.get("failure"), "revisions": [m["revision"] for m in self.measurements if m.get("applied")]
            if result["passed"] else result["revisions"],
            "target": req.migrate.target, "archive": result.get("archive"),
            "archive_finished_at": result.get("archive_finished_at"),
            "archive_revision": result.get("archive_revision"),
            "started_at": result.get("started_at"), "finished_at": result.get("finished_at"),
            "duration_s": result.get("duration_s"),
            "lock_timeout": str(req.migrate.lock_timeout), "retries": req.migrate.retries,
            "measurements": [{k: m.get(k) for k in _RECORDED} for m in self.measurements],
            "calibration": result.get("calibration"),
            "scratch": {k: v for k, v in (result.get("scratch") or {}).items() if k in _RECORDED_SCRATCH} or None,
        }
        result["record"] = record
        result["summary"] = records.summary_line(record)
        if req.record_dir:
            result["record_path"] = records.write_record(req.record_dir, record)


_RECORDED = ("revision", "duration_s", "lock_s", "rewritten_tables", "wal_bytes", "locks")
# where it ran, for the gate and the approval message (never a password: none is in the result either)
_RECORDED_SCRATCH = ("kind", "image", "server", "server_version")


def _migration_summary(outcome: Dict[str, Any]) -> Dict[str, Any]:
    return {key: outcome.get(key) for key in ("from_revision", "to_revision", "applied", "attempts", "duration_s",
                                              "failure", "invalid_indexes")}
