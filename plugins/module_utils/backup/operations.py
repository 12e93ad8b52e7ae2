# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_backup operations: dump, verify, restore and prune, against a real server.

Programs run through a ``runner`` callable (``module.run_command`` in the module), always as
argument lists; passwords travel in the environment (``PGPASSWORD``), never in argv.
pg_dump runs on this host, optionally as another OS user (``run_as``, through runuser),
or inside the database container (``container``, through ``docker exec``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backups
from ansible_collections.dbops.migrations.plugins.module_utils.backup import catalog
from ansible_collections.dbops.migrations.plugins.module_utils.pg import (
    ConnInfo, connect, conninfo_quote, mask_secrets, quote_ident, server_version_num)

try:
    from psycopg2 import sql as pgsql
    import psycopg2
except ImportError:  # pragma: no cover - the module reports missing_required_lib
    pgsql = None
    psycopg2 = None

COLLECTION_VERSION = "0.1.0"
# runner(argv, env) -> (rc, stdout, stderr)
Runner = Callable[[List[str], Dict[str, str]], Tuple[int, str, str]]
Which = Callable[[str], Optional[str]]

_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""
# The version table alembic would use: on the search path first (as alembic without
# version_table_schema), else in public, else in the first schema holding it.
_VERSION_TABLE_SQL = """
SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %(table)s AND c.relkind IN ('r', 'p') AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
ORDER BY c.oid IS DISTINCT FROM to_regclass(%(quoted)s), n.nspname <> 'public', n.nspname LIMIT 1
"""
# Tables counted in one transaction: each count locks the table and its indexes until the
# transaction ends, and thousands of them at once exhaust the server's lock table.
COUNT_BATCH = 200


# ---------------------------------------------------------------- where programs run

@dataclasses.dataclass
class Executor:
    """Runs PostgreSQL client programs on this host (as ``run_as``) or in ``container``."""
    runner: Runner
    bin_dir: Optional[str] = None
    run_as: Optional[str] = None
    container: Optional[str] = None
    docker_bin: str = "docker"
    which: Optional[Which] = None
    # How programs inside the container reach the server (the host's view may differ).
    container_host: str = "localhost"
    container_port: int = 5432

    def owner(self) -> Optional[Tuple[int, int]]:
        """Files made for ``run_as`` belong to that user, as with ``sudo -u USER pg_dump -f FILE``."""
        if not self.run_as or self.container:
            return None
        try:
            user = pwd.getpwnam(self.run_as)
        except KeyError:
            raise backups.BackupError("run_as: OS user %s does not exist on this host" % self.run_as)
        return user.pw_uid, user.pw_gid

    def where(self) -> str:
        if self.container:
            return "container %s" % self.container
        return "this host" + (" (as %s)" % self.run_as if self.run_as else "")

    def program(self, name: str) -> str:
        if self.container:
            return os.path.join(self.bin_dir, name) if self.bin_dir else name
        if self.bin_dir:
            path = os.path.join(self.bin_dir, name)
            if not os.access(path, os.X_OK):
                raise backups.BackupError("%s not found in bin_dir %s; point bin_dir at a PostgreSQL client's bin "
                                          "folder (e.g. /usr/lib/postgresql/15/bin)" % (name, self.bin_dir))
            return path
        found = self.which(name) if self.which else None
        if not found:
            raise backups.BackupError(
                "%s is not installed on this host; install the PostgreSQL client (postgresql-client-NN), set "
                "bin_dir, or run inside the database container with the container option" % name)
        return found

    def argv(self, name: str, args: List[str], env: Dict[str, str]) -> List[str]:
        if self.container:
            passed: List[str] = []
            for key in sorted(env):
                passed += ["-e", key]  # value comes from docker's own environment, not argv
            return [self.docker_bin, "exec", *passed, self.container, self.program(name), *args]
        argv = [self.program(name), *args]
        if self.run_as:
            if os.geteuid() != 0:
                raise backups.BackupError("run_as: %s needs root to switch user (use become: true on the task), or "
                                          "drop run_as and use become_user: %s" % (self.run_as, self.run_as))
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        return argv

    def run(self, name: str, args: List[str], env: Dict[str, str]) -> Tuple[int, str, str]:
        if self.container and env:
            env = dict(env, PGHOST=self.container_host, PGPORT=str(self.container_port))
        return self.runner(self.argv(name, args, env), env)

    def docker(self, *args: str) -> Tuple[int, str, str]:
        return self.runner([self.docker_bin, *args], {})

    def version(self, name: str) -> Tuple[Tuple[int, int], str]:
        rc, out, err = self.run(name, ["--version"], {})
        if rc != 0:
            raise backups.BackupError("%s --version failed on %s: %s" % (name, self.where(), (err or out).strip()[:300]))
        text = out.strip().splitlines()[0] if out.strip() else ""
        return backups.parse_tool_version(text), text

    # Files: programs in a container see their own filesystem.
    def work_dir(self, host_staging: str) -> str:
        if self.container:
            return "/tmp/dbops-pg-backup-" + uuid.uuid4().hex[:12]
        return host_staging

    def prepare_work_dir(self, work: str) -> None:
        if self.container:
            self._docker_checked("exec", self.container, "mkdir", "-m", "0700", "-p", work)
        elif self.run_as:
            os.chown(work, *self.owner())
            rc, _out, _err = self.runner(["runuser", "-u", self.run_as, "--", "test", "-w", work], {})
            if rc != 0:
                raise backups.BackupError("run_as user %s cannot write into %s: every parent folder of dest must be "
                                          "searchable (x) by that user; fix the permissions or choose another dest"
                                          % (self.run_as, os.path.dirname(work)))

    def fetch(self, work_path: str, host_path: str) -> None:
        if self.container:
            self._docker_checked("cp", "%s:%s" % (self.container, work_path), host_path)

    def push(self, host_path: str, work: str) -> str:
        if not self.container:
            return host_path
        self._docker_checked("cp", host_path, "%s:%s/" % (self.container, work))
        return "%s/%s" % (work, os.path.basename(host_path.rstrip("/")))

    def cleanup_work_dir(self, work: str) -> None:
        if self.container:
            self.docker("exec", self.container, "rm", "-rf", work)

    def _docker_checked(self, *args: str) -> None:
        rc, out, err = self.docker(*args)
        if rc != 0:
            raise backups.BackupError("docker %s failed: %s" % (args[0], (err or out).strip()[:400]))


# ---------------------------------------------------------------- database helpers

def _quote_table(name: str):
    schema, table = backups.split_qualified(name)
    return pgsql.SQL("{}.{}").format(pgsql.Identifier(schema), pgsql.Identifier(table))


def list_tables(cur) -> List[str]:
    cur.execute(_TABLES_SQL)
    return [backups.qualified(s, t) for s, t in cur.fetchall()]


def count_rows(cur, tables: List[str]) -> Dict[str, int]:
    counts = {}
    for name in tables:
        cur.execute(pgsql.SQL("SELECT count(*) FROM {}").format(_quote_table(name)))
        counts[name] = int(cur.fetchone()[0])
    return counts


def alembic_revision(cur, table: str = "alembic_version", schema: Optional[str] = None) -> Tuple[Optional[str], Optional[str]]:
    """(revision, ``schema.table`` it was read from). (None, None): no such table, which is not
    the same as base (an existing, empty table)."""
    cur.execute(_VERSION_TABLE_SQL, {"table": table, "schema": schema, "quoted": quote_ident(table)})
    row = cur.fetchone()
    if not row:
        return None, None
    cur.execute(pgsql.SQL("SELECT version_num FROM {}.{} ORDER BY version_num").format(
        pgsql.Identifier(row[0]), pgsql.Identifier(table)))
    revisions = [r[0] for r in cur.fetchall()]
    return (",".join(revisions) if revisions else None), backups.qualified(row[0], table)


def _connect(info: ConnInfo, autocommit: bool = True):
    try:
        return connect(info, autocommit=autocommit, application_name="dbops.migrations.pg_backup")
    except psycopg2.OperationalError as exc:
        message = mask_secrets(str(exc).strip(), info.password)
        hint = ""
        if "does not exist" in message:
            hint = "; check login_db/db_url (the database name) and that it exists"
        elif "password authentication failed" in message or "authentication" in message:
            hint = "; check login_user/login_password (or the password in db_url)"
        elif "could not connect" in message or "Connection refused" in message or "timeout" in message:
            hint = "; check login_host/login_port and that PostgreSQL is running and reachable"
        raise backups.BackupError("cannot connect to %s: %s%s" % (info.masked_url(), message, hint))


def database_exists(admin_cur, name: str) -> bool:
    admin_cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return admin_cur.fetchone() is not None


def drop_database(admin_cur, name: str, server_num: int) -> None:
    force = " WITH (FORCE)" if server_num >= 130000 else ""
    admin_cur.execute(pgsql.SQL("DROP DATABASE IF EXISTS {}" + force).format(pgsql.Identifier(name)))


def scratch_name(base: str, purpose: str) -> str:
    """A name for a throw-away database: recognisably from ``base``, but plain ASCII that fits
    PostgreSQL's 63 bytes, so quotes or ``=`` in the user's name never reach a tool's argv."""
    return backups.derived_db_name(base, "_%s_%s" % (purpose, uuid.uuid4().hex[:8]))


def count_rows_parallel(info: ConnInfo, tables: List[str], jobs: int, batch: int = COUNT_BATCH) -> Dict[str, int]:
    """Exact row counts on up to ``jobs`` connections (a freshly restored database, nobody writing);
    ``batch`` tables per transaction."""
    buckets = [tables[i::max(1, jobs)] for i in range(max(1, min(jobs, len(tables))))]
    counters = [SnapshotCounter(info, None, bucket, batch) for bucket in buckets]
    for counter in counters:
        counter.start()
    counts: Dict[str, int] = {}
    for counter in counters:
        counts.update(counter.result())
    return counts


class SnapshotCounter(threading.Thread):
    """Counts rows of ``tables`` (in an exported snapshot when given), on its own connection."""

    def __init__(self, info: ConnInfo, snapshot: Optional[str], tables: List[str], batch: int = COUNT_BATCH):
        super().__init__(daemon=True)
        self.info, self.snapshot, self.tables, self.batch = info, snapshot, tables, max(1, batch)
        self.counts: Dict[str, int] = {}
        self.error: Optional[BaseException] = None
        self._conn = None
        self._halt = threading.Event()

    def cancel(self) -> None:
        """Stop after the statement running now, which is cancelled."""
        self._halt.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.cancel()

    def run(self) -> None:
        try:
            conn = self._conn = _connect(self.info, autocommit=False)
            try:
                conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
                with conn.cursor() as cur:
                    for start in range(0, len(self.tables), self.batch):
                        if self._halt.is_set():
                            raise backups.BackupError("counting was cancelled")
                        # a new transaction per batch frees the locks; the imported snapshot
                        # keeps every batch counting the same data
                        if self.snapshot:
                            cur.execute("SET TRANSACTION SNAPSHOT %s", (self.snapshot,))
                        self.counts.update(count_rows(cur, self.tables[start:start + self.batch]))
                        conn.rollback()
            finally:
                conn.close()
        except BaseException as exc:  # handed to the caller by result()
            self.error = exc

    def result(self) -> Dict[str, int]:
        self.join()
        if self.error is not None:
            if isinstance(self.error, backups.BackupError):
                raise self.error
            raise backups.BackupError("counting rows in the dump's snapshot failed: %s" % self.error)
        return self.counts


class _UnsupportedCompression(Exception):
    """pg_dump was built without the compression method asked for."""


class _Counting(threading.Thread):
    """Tables, large objects and exact row counts of a freshly restored database, on their own
    connections. Each table is counted in its own short transaction, so the count never holds a
    lock that a concurrent index or constraint build of the restore waits for while it waits."""

    def __init__(self, info: ConnInfo, jobs: int):
        super().__init__(daemon=True)
        self.info, self.jobs = info, max(1, jobs)
        self.counts: Dict[str, int] = {}
        self.large_objects = 0
        self.duration = 0.0
        self.error: Optional[BaseException] = None
        self._counters: List[SnapshotCounter] = []
        self._cancelled = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        try:
            conn = _connect(self.info)
            try:
                with conn.cursor() as cur:
                    tables = list_tables(cur)
                    self.large_objects = catalog.large_object_count(cur)
            finally:
                conn.close()
            buckets = [tables[i::self.jobs] for i in range(max(1, min(self.jobs, len(tables))))]
            self._counters = [SnapshotCounter(self.info, None, bucket, batch=1) for bucket in buckets]
            if self._cancelled.is_set():
                raise backups.BackupError("counting was cancelled")
            for counter in self._counters:
                counter.start()
            for counter in self._counters:
                self.counts.update(counter.result())
        except BaseException as exc:  # handed to the caller by result()
            self.error = exc
        finally:
            self.duration = time.monotonic() - started

    def cancel(self) -> None:
        """Stop counting (the restore failed); returns once the counting connections are done."""
        self._cancelled.set()
        for counter in list(self._counters):
            counter.cancel()
        self.join(timeout=30)

    def result(self) -> Tuple[Dict[str, int], int]:
        self.join()
        if self.error is not None:
            if isinstance(self.error, (backups.BackupError, psycopg2.Error)):
                raise self.error
            raise backups.BackupError("counting the rows of the restored database failed: %s" % self.error)
        return self.counts, self.large_objects


# ---------------------------------------------------------------- the engine

@dataclasses.dataclass
class Backup:
    info: ConnInfo
    executor: Executor
    check_mode: bool = False
    log: Callable[[str], None] = lambda message: None
    version_table: str = "alembic_version"
    version_table_schema: Optional[str] = None
    # cores the client programs may use (None: this host's); sets the default number of jobs
    cpus: Optional[int] = None
    # restore levers (all on by default; the benchmark turns them off one at a time)
    restore_settings: Tuple[Tuple[str, str], ...] = backups.RESTORE_SESSION_SETTINGS
    restore_split: bool = True
    _timings: Dict[str, float] = dataclasses.field(default_factory=dict)
    _owner: Optional[Dict[str, Any]] = None
    # what this run removed or settled from interrupted runs, and what it found but left
    cleaned_up: List[str] = dataclasses.field(default_factory=list)
    leftovers: List[Dict[str, str]] = dataclasses.field(default_factory=list)

    @property
    def database(self) -> str:
        if not self.info.dbname:
            raise backups.BackupError("no database given: set login_db or the database in db_url")
        return self.info.dbname

    @property
    def owner(self) -> Dict[str, Any]:
        """This run's identity, written into everything it may leave behind when killed."""
        if self._owner is None:
            self._owner = backups.this_process()
        return self._owner

    def auto_jobs(self) -> int:
        return backups.auto_jobs(self.cpus or backups.usable_cpus())

    def tool_env(self, dbname: Optional[str] = None) -> Dict[str, str]:
        env = self.info.with_dbname(dbname or self.database).libpq_env()
        return env

    def admin_info(self) -> ConnInfo:
        """Connection for CREATE/DROP DATABASE: the maintenance database ``postgres``."""
        return self.info.with_dbname(self.info.options.get("maintenance_db", "postgres"))

    def housekeeping(self) -> Dict[str, Any]:
        return {"cleaned_up": list(self.cleaned_up), "leftovers": list(self.leftovers)}

    # -------------------------------------------------- leftovers of interrupted runs

    def clean_staging(self, dest: str) -> None:
        """Staging folders in ``dest`` whose run died on this host are removed."""
        stale, kept = backups.stale_staging(dest, self.owner)
        for path in stale:
            if not self.check_mode:
                backups.remove_path(path)
            self.cleaned_up.append("%sstaging folder %s of a backup that died" % (self._would(), path))
        self.leftovers += kept

    def clean_databases(self, admin, server_num: int) -> None:
        """Scratch databases of dead runs on this host are dropped; a restore that died while
        swapping databases is finished (when the restored one was in place) or undone."""
        with admin.cursor() as cur:
            for name, record in catalog.recorded_databases(cur):
                if record.get("kind") == "replaced":
                    self._guarded(name, lambda: self._settle_replaced(cur, name, record, server_num))
            for name, record in catalog.recorded_databases(cur):
                if record.get("kind") == "scratch":
                    self._guarded(name, lambda: self._settle_scratch(cur, name, record, server_num))

    def clean_databases_quietly(self, server_num: Optional[int] = None) -> None:
        """The same, when the run itself does not need the maintenance database: a failure to
        look is reported, never fatal."""
        try:
            admin = _connect(self.admin_info())
        except backups.BackupError as exc:
            self.leftovers.append({"database": "*", "reason": "could not look for leftover databases: %s" % exc})
            return
        try:
            self.clean_databases(admin, server_num or server_version_num(admin))
        except psycopg2.Error as exc:
            self.leftovers.append({"database": "*", "reason": "could not look for leftover databases: %s"
                                   % mask_secrets(str(exc).strip(), self.info.password)})
        finally:
            admin.close()

    def _guarded(self, name: str, action: Callable[[], None]) -> None:
        try:
            action()
        except psycopg2.Error as exc:
            self.leftovers.append({"database": name, "reason": "could not clean it up: %s"
                                   % mask_secrets(str(exc).strip(), self.info.password)})

    def _would(self) -> str:
        return "would remove " if self.check_mode else ""

    def _settle_scratch(self, cur, name: str, record: Dict[str, Any], server_num: int) -> None:
        gone = backups.owner_gone(record, self.owner)
        who = _describe_owner(record)
        if gone is None:
            reason = "scratch database of %s; only that host can tell whether it still runs" % who
            self.leftovers.append({"database": name, "reason": reason})
            return
        if not gone:
            return
        if name == record.get("name"):
            if not self.check_mode:
                drop_database(cur, name, server_num)
            self.cleaned_up.append("%sscratch database %s of %s" % (self._would(), name, who))
            return
        # renamed into place after its checks passed; only the final comment was missing
        if not self.check_mode:
            catalog.set_comment(cur, name, None)
        self.cleaned_up.append("%s restore into %s by %s: finished (it had been renamed into place)"
                               % ("would mark the" if self.check_mode else "the", name, who))

    def _settle_replaced(self, cur, name: str, record: Dict[str, Any], server_num: int) -> None:
        if record.get("state") != "swapping":
            return
        gone = backups.owner_gone(record, self.owner)
        who = _describe_owner(record)
        if not gone:
            if gone is None:
                reason = "a restore by %s was replacing it; only that host can tell whether it still runs" % who
                self.leftovers.append({"database": name, "reason": reason})
            return
        target, aside, comment = record.get("database"), record.get("name"), record.get("comment")
        would = "would be " if self.check_mode else ""
        if name == target:
            if not self.check_mode:
                catalog.set_comment(cur, target, comment)
            self.cleaned_up.append("%s: a restore by %s died before replacing it; it %skept as it was"
                                   % (target, who, would or "is "))
        elif name == aside and not database_exists(cur, target):
            if not self.check_mode:
                catalog.rename_database(cur, aside, target)
                catalog.set_comment(cur, target, comment)
            self.cleaned_up.append("%s %srenamed back to %s: a restore by %s died after setting it aside"
                                   % (aside, would or "was ", target, who))
        elif name == aside and _is_scratch_of(catalog.database_comment(cur, target), record.get("scratch")):
            if not self.check_mode:
                catalog.set_comment(cur, target, comment)
                if record.get("empty"):
                    drop_database(cur, aside, server_num)
                else:
                    catalog.set_comment(cur, aside, backups.record_text(dict(record, state="kept")))
            replaced = "(empty) is dropped" if record.get("empty") else "is kept as %s" % aside
            self.cleaned_up.append("a restore into %s by %s died after its swap: the restored database %sstays; "
                                   "the replaced one %s" % (target, who, would, replaced))
        else:
            reason = ("set aside by a restore into %s that died; %s exists and is not that restore's database: "
                      "check both by hand" % (target, target))
            self.leftovers.append({"database": name, "reason": reason})

    # -------------------------------------------------- present

    def create(self, dest: str, options: backups.DumpOptions, verify: str, keep: Optional[int]) -> Dict[str, Any]:
        """Dump into ``dest``. Options left as None (format, jobs, compression) take the defaults
        of :func:`backups.default_dump_options` for this host's pg_dump and cores."""
        if options.fmt is not None and options.jobs is not None:
            options.validate()
        if keep is not None and keep < 1:
            raise backups.BackupError("keep must be at least 1 (got %d); the backup just made is always kept" % keep)
        dest = os.path.abspath(dest)
        started = backups.utc_now()
        clock = time.monotonic()
        dump_tool_version, dump_tool_text = self.executor.version("pg_dump")
        requested = options
        options = backups.default_dump_options(
            fmt=options.fmt, jobs=options.jobs, compress=options.compress, compress_method=options.compress_method,
            client=dump_tool_version, cpus=self.cpus or backups.usable_cpus(), lock_wait_timeout=options.lock_wait_timeout)
        options.validate()
        restore_tool_text = ""
        if verify != "none":
            _version, restore_tool_text = self.executor.version("pg_restore" if options.fmt != "plain" else "psql")
        conn = _connect(self.info, autocommit=False)
        try:
            server_num = server_version_num(conn)
            backups.check_client_version("pg_dump", dump_tool_version, server_num, self.executor.where())
            options.check_client(dump_tool_version, self.executor.where())
            created_dest = backups.ensure_dest(dest, self.check_mode, self.executor.owner())
            if not created_dest:
                self.clean_staging(dest)
            self.clean_databases_quietly(server_num)
            name = backups.backup_name(self.database, options.fmt, started,
                                       os.listdir(dest) if os.path.isdir(dest) else ())
            if self.check_mode:
                return self._predict_present(dest, name, created_dest, keep, server_num)
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_export_snapshot()")
                snapshot = cur.fetchone()[0]
                revision, version_table = alembic_revision(cur, self.version_table, self.version_table_schema)
                large_objects = catalog.large_object_count(cur)
                tables = list_tables(cur)
            staging = backups.make_staging(dest, self.owner)
            try:
                # Rows are counted in the same snapshot on a second session while pg_dump runs.
                counter = SnapshotCounter(self.info, snapshot, tables)
                counter.start()
                try:
                    try:
                        sha256, size = self._dump_into(staging, dest, name, options, snapshot)
                    except _UnsupportedCompression:
                        if requested.compress_method is not None:
                            raise backups.BackupError(
                                "pg_dump on %s was built without %s compression; set compress_method: gzip (or "
                                "another method it supports); nothing was kept"
                                % (self.executor.where(), options.compress_method))
                        # the default zstd is not built into this pg_dump: gzip as on older clients
                        options = dataclasses.replace(options, compress_method="gzip",
                                                      compress=backups.DEFAULT_GZIP_LEVEL)
                        sha256, size = self._dump_into(staging, dest, name, options, snapshot)
                finally:
                    counter.join()  # a pg_dump error stays the error reported
                counts = counter.result()
                conn.rollback()  # pg_dump and the counter are done with the snapshot
                finished = backups.utc_now()
                manifest = backups.build_manifest(
                    database=self.database, file_name=name, options=options, server_version_num=server_num,
                    alembic_revision=revision, tables=counts, sha256=sha256, size_bytes=size,
                    started=started, finished=finished,
                    tools={"pg_dump": dump_tool_text, "verify": restore_tool_text,
                           "dbops.migrations": COLLECTION_VERSION},
                    source={"host": self.info.host, "port": self.info.port, "user": self.info.user,
                            "executor": self.executor.where()},
                    snapshot=snapshot, large_objects=large_objects,
                    version_table=version_table or self._requested_version_table(),
                    version_table_missing=version_table is None)
                verification = self.verify_path(os.path.join(staging, name), manifest, verify,
                                                server_num=server_num, checksum=False)
                manifest["verification"] = verification
                backups.write_json_file(os.path.join(staging, backups.manifest_name(name)), manifest, self.executor.owner())
                if os.path.lexists(os.path.join(dest, name)):
                    raise backups.BackupError("%s appeared in %s while dumping; nothing was overwritten" % (name, dest))
                backups.publish(staging, [name, backups.manifest_name(name)], dest)
            except OSError as exc:
                raise backups.BackupError(backups.describe_os_error(exc, dest))
            finally:
                backups.remove_path(staging)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
        finally:
            conn.close()
        removed: List[str] = []
        skipped: List[Dict[str, str]] = []
        if keep is not None:
            pruned = self.prune(dest, keep, protect=[name], database=self.database)
            removed, skipped = pruned["removed"], pruned["skipped"]
        duration = round(time.monotonic() - clock, 3)  # dump, checks, verification and retention
        return dict(self.housekeeping(), **{
            "changed": True,
            "path": os.path.join(dest, name),
            "manifest_path": os.path.join(dest, backups.manifest_name(name)),
            "manifest": manifest,
            "size_bytes": manifest["size_bytes"],
            "sha256": manifest["sha256"],
            "duration_s": duration,
            "verified": verification["verified"],
            "verification": verification,
            "removed": removed,
            "skipped": skipped,
            "diff": {"before": {"path": None}, "after": {"path": os.path.join(dest, name)}},
        })

    def _requested_version_table(self) -> str:
        if self.version_table_schema:
            return backups.qualified(self.version_table_schema, self.version_table)
        return self.version_table

    def _predict_present(self, dest: str, name: str, created_dest: bool, keep: Optional[int], server_num: int) -> Dict[str, Any]:
        removed: List[str] = []
        if keep is not None:
            existing = backups.list_backups(dest, self.database)
            # the new backup takes one of the ``keep`` places
            gone = backups.plan_retention(existing, keep - 1)[1] if keep > 1 else existing
            removed = [os.path.join(dest, e.name) for e in gone]
        path = os.path.join(dest, name)
        return dict(self.housekeeping(), **{
            "changed": True, "path": path, "manifest_path": path + backups.MANIFEST_SUFFIX,
            "manifest": {"database": self.database, "server_version": backups.server_version_text(server_num)},
            "size_bytes": 0, "sha256": "", "duration_s": 0.0, "verified": False,
            "verification": {"mode": "none", "verified": False, "skipped": "check mode"},
            "removed": removed, "dest_created": created_dest,
            "diff": {"before": {"path": None}, "after": {"path": path}}})

    def _dump_into(self, staging: str, dest: str, name: str, options: backups.DumpOptions, snapshot: str) -> Tuple[str, int]:
        work = self.executor.work_dir(staging)
        self.executor.prepare_work_dir(work)
        try:
            output = os.path.join(work, name)
            rc, out, err = self.executor.run("pg_dump", options.pg_dump_args(output, snapshot), self.tool_env())
            if rc != 0:
                if options.compress_method not in (None, "gzip", "none") and backups.unsupported_compression(err or out):
                    raise _UnsupportedCompression(err or out)
                raise backups.BackupError(self._dump_failure(rc, err or out, dest))
            self.executor.fetch(output, os.path.join(staging, name))
        finally:
            self.executor.cleanup_work_dir(work)
        path = os.path.join(staging, name)
        if not os.path.exists(path):
            raise backups.BackupError("pg_dump exited 0 but wrote no %s; nothing was kept" % name)
        backups.restrict_mode(path, self.executor.owner())
        # hashed while it is flushed to disk; a directory archive's files on one thread per core
        sha256, size = backups.sha256_and_sync(path, threads=self.auto_jobs())
        if size == 0:
            raise backups.BackupError("pg_dump wrote an empty %s; nothing was kept" % name)
        return sha256, size

    def _dump_failure(self, rc: int, stderr: str, dest: str) -> str:
        text = mask_secrets(stderr.strip(), self.info.password)
        if "No space left on device" in text:
            return "destination %s is full (pg_dump: %s); free space or choose another dest; nothing was kept" % (dest, text[-300:])
        if "Read-only file system" in text:
            return "destination %s is read-only (pg_dump: %s); choose a writable dest" % (dest, text[-300:])
        return "pg_dump failed (exit %d) on %s: %s; nothing was kept" % (rc, self.executor.where(), text[-800:])

    # -------------------------------------------------- verification

    def verify_path(self, path: str, manifest: Dict[str, Any], mode: str, *, server_num: Optional[int] = None,
                    checksum: bool = True) -> Dict[str, Any]:
        """``none``, ``list`` (checksum + table of contents) or ``restore`` (scratch restore + row counts)."""
        report: Dict[str, Any] = {"mode": mode, "verified": False, "checks": []}
        if mode == "none":
            return report
        clock = time.monotonic()
        fmt = manifest.get("format") or backups.detect_format(path)
        if checksum:
            digest, size = backups.sha256_path(path)
            if digest != manifest.get("sha256"):
                raise backups.BackupError(
                    "checksum mismatch for %s: the manifest says sha256 %s (%s bytes), the file has %s (%d bytes); "
                    "the backup is damaged or was changed; use another backup" % (
                        path, manifest.get("sha256"), manifest.get("size_bytes"), digest, size))
            report["checks"].append("sha256")
        if fmt == "plain":
            if not backups.plain_dump_complete(path):
                raise backups.BackupError("%s is truncated: it lacks pg_dump's 'dump complete' trailer; use another backup" % path)
            report["checks"].append("complete")
        else:
            listing = self.list_archive(path)
            problems = (backups.toc_problems(listing, manifest.get("tables", {}).keys())
                        + backups.toc_large_object_problems(listing, manifest.get("large_objects")))
            if problems:
                raise backups.BackupError("archive %s lacks data for %d table(s) or kind(s): %s"
                                          % (path, len(problems), "; ".join(problems[:10])))
            report["checks"].append("toc")
            report["toc_entries"] = len([line for line in listing.splitlines() if line and not line.startswith(";")])
        if mode == "restore":
            scratch = scratch_name(manifest.get("database") or "db", "verify")
            report["scratch_db"] = scratch
            actual, large_objects = self._restore_into_new(
                path, fmt, scratch, jobs=self.auto_jobs(), server_num=server_num, keep=False,
                no_owner=True, purpose="verify")
            problems = (backups.compare_counts(manifest.get("tables", {}), actual)
                        + backups.compare_large_objects(manifest.get("large_objects"), large_objects))
            if problems:
                raise backups.BackupError("verification restore of %s does not match its manifest: %s" % (path, "; ".join(problems[:10])))
            report["checks"].append("restore")
            report["restored_rows"] = sum(actual.values())
            report["restored_large_objects"] = large_objects
        report["verified"] = True
        report["duration_s"] = round(time.monotonic() - clock, 3)
        return report

    def list_archive(self, path: str) -> str:
        work = self.executor.work_dir(os.path.dirname(path))
        try:
            if self.executor.container:
                self.executor.prepare_work_dir(work)
            inside = self.executor.push(path, work)
            rc, out, err = self.executor.run("pg_restore", ["--list", inside], {})
        finally:
            if self.executor.container:
                self.executor.cleanup_work_dir(work)
        if rc != 0:
            raise backups.BackupError("pg_restore cannot read the table of contents of %s: %s; the archive is damaged "
                                      "or not a pg_dump archive; use another backup" % (path, (err or out).strip()[:400]))
        return out

    # -------------------------------------------------- restore

    def _restore_into_new(self, path: str, fmt: str, new_db: str, *, jobs: int, server_num: Optional[int],
                          keep: bool, no_owner: bool, purpose: str,
                          like: Optional[catalog.DatabaseState] = None) -> Tuple[Dict[str, int], int]:
        """CREATE DATABASE new_db (marked with this run's owner record), restore, count rows and
        large objects; dropped afterwards unless ``keep`` (and the restore succeeded)."""
        admin = _connect(self.admin_info())
        ok = False
        try:
            with admin.cursor() as cur:
                server_num = server_num or server_version_num(admin)
                try:
                    cur.execute(catalog.create_database_sql(new_db, like))
                except psycopg2.Error as exc:
                    raise backups.BackupError("cannot create the %s database %s: %s; nothing was changed"
                                              % (purpose, new_db, str(exc).strip()))
            try:
                with admin.cursor() as cur:
                    catalog.set_comment(cur, new_db, backups.owner_record("scratch", self.owner, name=new_db, purpose=purpose))
                counts, large_objects = self._load_and_count(path, fmt, new_db, jobs, no_owner)
                ok = True
                return counts, large_objects
            finally:
                if not (ok and keep):
                    with admin.cursor() as cur:
                        drop_database(cur, new_db, server_num)
        finally:
            admin.close()

    def _load_and_count(self, path: str, fmt: str, new_db: str, jobs: int, no_owner: bool) -> Tuple[Dict[str, int], int]:
        """Restore ``path`` into ``new_db`` and count its rows and large objects.

        A custom or directory archive is restored in two runs of pg_restore: tables and data,
        then indexes, constraints and triggers, while the loaded tables are counted beside it."""
        started = time.monotonic()
        counter: Optional[_Counting] = None
        split = self.restore_split and fmt != "plain"
        try:
            with self._restore_session(path, new_db) as (run, inside):
                phases = self._restore_phases(fmt, inside, new_db, jobs, no_owner, split)
                for number, step in enumerate(phases):
                    if split and number == len(phases) - 1:
                        # every row is loaded and committed; nothing later changes a row count
                        counter = _Counting(self.info.with_dbname(new_db), jobs)
                        counter.start()
                    run(step)
            self._timings["pg_restore_s"] = round(time.monotonic() - started, 3)
            if counter is None:
                counter = _Counting(self.info.with_dbname(new_db), jobs)
                counter.start()
            counts, large_objects = counter.result()
        except BaseException:
            if counter is not None:
                counter.cancel()  # the restore failed: its counts are of no use
            raise
        self._timings["count_s"] = round(counter.duration, 3)
        self._timings["count_overlapped"] = bool(split)
        return counts, large_objects

    def _restore_phases(self, fmt: str, inside: str, dbname: str, jobs: int, no_owner: bool,
                        split: bool) -> List[Tuple[str, List[str]]]:
        if fmt == "plain":
            # psql runs a plain dump; ON_ERROR_STOP makes the first error fatal
            return [("psql", ["--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
                              "--file=" + inside, "--output=/dev/null"])]
        # No --single-transaction: it cannot run with --jobs, and it holds a lock per restored object
        # until the end (out of lock table at a few thousand tables). The restore goes into a new
        # database that replaces nothing until it is complete and checked: the atomicity needed.
        return [("pg_restore", argv) for argv in backups.pg_restore_phases(
            inside, "dbname=" + conninfo_quote(dbname), jobs=backups.restore_jobs(fmt, jobs), no_owner=no_owner,
            split=split)]

    @contextlib.contextmanager
    def _restore_session(self, path: str, dbname: str):
        """Yields ``run((program, argv))`` and the archive's path as the programs see it (pushed
        into the container when they run there); every run has the restore's session settings."""
        env = self.tool_env(dbname)
        env["PGOPTIONS"] = backups.restore_pgoptions(os.environ.get("PGOPTIONS"), self.restore_settings)
        work = self.executor.work_dir(os.path.dirname(path))
        try:
            if self.executor.container:
                self.executor.prepare_work_dir(work)
            inside = self.executor.push(path, work)

            def run(step: Tuple[str, List[str]]) -> None:
                program, argv = step
                rc, out, err = self.executor.run(program, argv, env)
                if rc != 0:
                    raise backups.BackupError("restore of %s into %s failed (exit %d): %s" % (
                        path, dbname, rc, mask_secrets((err or out).strip(), self.info.password)[-800:]))
            yield run, inside
        finally:
            if self.executor.container:
                self.executor.cleanup_work_dir(work)

    def _checked_archive(self, src: str, fmt: Optional[str]) -> Dict[str, Any]:
        """Everything about ``src`` that can be checked without touching a database."""
        dump, manifest_path = backups.resolve_src(src)
        if not os.path.exists(dump):
            raise backups.BackupError("dump %s named by the manifest does not exist" % dump)
        manifest: Dict[str, Any] = backups.read_manifest(manifest_path) if manifest_path else {}
        detected = backups.detect_format(dump)
        if manifest.get("format") and manifest["format"] != detected:
            raise backups.BackupError("manifest says format %s but %s is a %s archive; the manifest does not belong to this dump"
                                      % (manifest["format"], dump, detected))
        if fmt and fmt != detected:
            raise backups.BackupError("format: %s was given but %s is a %s archive; drop format or fix src" % (fmt, dump, detected))
        sha256, size = backups.sha256_path(dump)
        if manifest and sha256 != manifest.get("sha256"):
            raise backups.BackupError(
                "checksum mismatch for %s: the manifest says sha256 %s, the file has %s; the backup is damaged or "
                "was changed; nothing was restored; use another backup" % (dump, manifest.get("sha256"), sha256))
        if detected != "plain":
            restore_version, _text = self.executor.version("pg_restore")
            dumped_with = (manifest.get("tools") or {}).get("pg_dump")
            backups.check_restore_version(restore_version, backups.parse_tool_version(dumped_with) if dumped_with else None)
            listing = self.list_archive(dump)
            problems = (backups.toc_problems(listing, manifest.get("tables", {}).keys())
                        + backups.toc_large_object_problems(listing, manifest.get("large_objects")))
            if problems:
                raise backups.BackupError("archive %s lacks data: %s; nothing was restored" % (dump, "; ".join(problems[:10])))
        elif not backups.plain_dump_complete(dump):
            raise backups.BackupError("%s is truncated (no 'dump complete' trailer); nothing was restored" % dump)
        return {"path": dump, "manifest_path": manifest_path, "manifest": manifest, "format": detected,
                "sha256": sha256, "size_bytes": size}

    def restore(self, src: str, target_db: str, force: bool, jobs: Optional[int], fmt: Optional[str],
                no_owner: bool) -> Dict[str, Any]:
        """Restore into a new database, check it, then swap it in. A database it replaces is
        renamed aside (never dropped) and keeps its data until dropped with ``drop_replaced``.
        ``jobs`` None: one pg_restore worker per core of this host."""
        clock = time.monotonic()
        jobs = jobs or self.auto_jobs()
        archive = self._checked_archive(src, fmt)
        dump, manifest = archive["path"], archive["manifest"]
        base = {"path": dump, "manifest_path": archive["manifest_path"], "manifest": manifest,
                "size_bytes": archive["size_bytes"], "sha256": archive["sha256"], "target_db": target_db}
        admin = _connect(self.admin_info())
        try:
            server_num = server_version_num(admin)
            self.clean_databases(admin, server_num)
            with admin.cursor() as cur:
                state = catalog.read_database_state(cur, target_db)
                objects = self._user_objects(target_db) if state else {}
                if objects and not force:
                    raise backups.BackupError(
                        "target database %s is not empty: it holds %s. Refusing to overwrite it; restore into a new "
                        "target_db, or set force: true to replace it (the current database is then kept under "
                        "another name, not dropped)" % (target_db, backups.describe_objects(objects)))
                problems = catalog.restore_problems(cur, catalog.current_role(cur), target_db, state, server_num)
                if problems:
                    raise backups.BackupError("cannot restore into %s: %s. Nothing was changed."
                                              % (target_db, "; ".join(problems)))
                aside = backups.replaced_name(target_db, backups.utc_now(), catalog.database_names(cur)) if state else None
            keep_aside = bool(objects)
            diff = {"before": {"target_db": target_db, "exists": state is not None,
                               "objects": {kind: count for kind, (count, _names) in objects.items()},
                               "relations": sum(count for kind, (count, _names) in objects.items()
                                                if kind in _RELATION_KINDS)},
                    "after": {"target_db": target_db, "exists": True, "restored_from": dump,
                              "replaced_database": aside if keep_aside else None}}
            if self.check_mode:
                return dict(base, **self.housekeeping(), changed=True, verified=False, duration_s=0.0, diff=diff,
                            replaced_database=aside if keep_aside else None,
                            msg="would restore %s into %s%s" % (dump, target_db, (
                                "; the current %s would be kept as %s" % (target_db, aside)) if keep_aside else ""))
            checks_s = time.monotonic() - clock
            scratch = scratch_name(target_db, "restore")
            counts, large_objects = self._restore_into_new(
                dump, archive["format"], scratch, jobs=jobs, server_num=server_num, keep=True, no_owner=no_owner,
                purpose="restore", like=state)
            with admin.cursor() as cur:
                try:
                    problems = []
                    if manifest:
                        problems = (backups.compare_counts(manifest.get("tables", {}), counts)
                                    + backups.compare_large_objects(manifest.get("large_objects"), large_objects))
                    if problems:
                        raise backups.BackupError("restored row counts differ from the manifest: %s; %s was left unchanged"
                                                  % ("; ".join(problems[:10]), target_db))
                    if state:
                        catalog.apply_database_state(cur, scratch, state)
                except BaseException:
                    with contextlib.suppress(Exception):
                        drop_database(cur, scratch, server_num)
                    raise
                self._swap_in(cur, scratch, target_db, state, aside, keep_aside, dump, server_num)
        except psycopg2.Error as exc:
            raise backups.BackupError("restore into %s failed: %s" % (target_db, mask_secrets(str(exc).strip(), self.info.password)))
        finally:
            admin.close()
        result = dict(base, **self.housekeeping(), changed=True, verified=bool(manifest), restored_tables=counts,
                      restored_large_objects=large_objects, replaced_database=aside if keep_aside else None, diff=diff)
        if keep_aside:
            result.update(self._compare_with_replaced(aside, counts, jobs))
        result["timings"] = dict(self._timings, checks_s=round(checks_s, 3))
        result["duration_s"] = round(time.monotonic() - clock, 3)
        result["msg"] = _restore_message(result)
        return result

    def _swap_in(self, cur, scratch: str, target: str, state: Optional[catalog.DatabaseState], aside: Optional[str],
                 keep_aside: bool, dump: str, server_num: int) -> None:
        """Put the checked restore in the place of ``target``. Every step leaves a record that
        lets the next run finish or undo the swap if this one dies half-way."""
        if state is None:
            try:
                catalog.rename_database(cur, scratch, target)
            except BaseException:
                with contextlib.suppress(Exception):
                    drop_database(cur, scratch, server_num)
                raise
            catalog.set_comment(cur, target, None)
            return
        record = dict(self.owner, kind="replaced", database=target, name=aside, scratch=scratch, state="swapping",
                      comment=state.comment, empty=not keep_aside, restored_from=dump)
        try:
            catalog.set_comment(cur, target, backups.record_text(record))
            self._set_aside(cur, target, aside)
        except BaseException:
            with contextlib.suppress(Exception):
                catalog.set_comment(cur, target, state.comment)
            with contextlib.suppress(Exception):
                drop_database(cur, scratch, server_num)
            raise
        try:
            catalog.rename_database(cur, scratch, target)
            catalog.set_comment(cur, target, state.comment)
        except BaseException:
            # the old database goes back where it was, with its own comment
            with contextlib.suppress(Exception):
                if database_exists(cur, target) and not database_exists(cur, scratch):
                    catalog.rename_database(cur, target, scratch)
            with contextlib.suppress(Exception):
                catalog.rename_database(cur, aside, target)
                catalog.set_comment(cur, target, state.comment)
            with contextlib.suppress(Exception):
                drop_database(cur, scratch, server_num)
            raise
        if keep_aside:
            catalog.set_comment(cur, aside, backups.record_text(dict(record, state="kept", replaced_at=backups.utc_now().isoformat())))
        else:
            drop_database(cur, aside, server_num)  # it held no user objects: nothing to keep

    def _set_aside(self, cur, target: str, aside: str) -> None:
        """Rename ``target`` to ``aside``; sessions still connected are ended first (the
        application should be stopped; a pool may reconnect, hence the retries)."""
        for attempt in range(10):
            catalog.terminate_sessions(cur, target)
            try:
                catalog.rename_database(cur, target, aside)
                return
            except psycopg2.errors.ObjectInUse:
                time.sleep(0.1 * (attempt + 1))
        raise backups.BackupError("sessions keep connecting to %s, so it cannot be set aside; stop the application "
                                  "and run the restore again. %s was left unchanged" % (target, target))

    def _compare_with_replaced(self, aside: str, restored: Dict[str, int], jobs: int) -> Dict[str, Any]:
        """Row counts of the replaced database against the restored one: what the restore lost."""
        try:
            conn = _connect(self.info.with_dbname(aside))
            try:
                with conn.cursor() as cur:
                    tables = list_tables(cur)
            finally:
                conn.close()
            replaced = count_rows_parallel(self.info.with_dbname(aside), tables, jobs)
        except (backups.BackupError, psycopg2.Error) as exc:
            return {"row_differences": None, "rows_lost": None,
                    "row_differences_error": "could not count the rows of %s: %s" % (aside, exc)}
        differences = backups.row_differences(replaced, restored)
        lost = backups.rows_lost(differences)
        return {"row_differences": differences, "rows_lost": lost, "rows_lost_total": sum(lost.values())}

    def _user_objects(self, dbname: str) -> Dict[str, Tuple[int, List[str]]]:
        conn = _connect(self.info.with_dbname(dbname))
        try:
            with conn.cursor() as cur:
                return catalog.user_objects(cur)
        finally:
            conn.close()

    def drop_replaced(self, name: str) -> Dict[str, Any]:
        """Drop a database that a restore set aside, and nothing else."""
        clock = time.monotonic()
        admin = _connect(self.admin_info())
        try:
            server_num = server_version_num(admin)
            self.clean_databases(admin, server_num)
            with admin.cursor() as cur:
                if not database_exists(cur, name):
                    return dict(self.housekeeping(), changed=False, dropped=None, duration_s=0.0,
                                msg="%s does not exist (already dropped)" % name)
                record = backups.parse_owner_record(catalog.database_comment(cur, name))
                if not record or record.get("kind") != "replaced" or record.get("name") != name:
                    raise backups.BackupError(
                        "%s was not set aside by a pg_backup restore (its comment holds no such record); nothing was "
                        "dropped. drop_replaced takes the replaced_database a restore returned" % name)
                if record.get("state") != "kept":
                    raise backups.BackupError("a restore that is still running (%s) is replacing %s with %s; nothing was "
                                              "dropped" % (_describe_owner(record), record.get("database"), name))
                if not database_exists(cur, record.get("database") or ""):
                    raise backups.BackupError(
                        "%s replaced %s, which does not exist now: %s may be the only copy; nothing was dropped. Rename "
                        "it back or drop it by hand" % (name, record.get("database"), name))
                if not self.check_mode:
                    try:
                        cur.execute(pgsql.SQL("DROP DATABASE {}").format(pgsql.Identifier(name)))
                    except psycopg2.errors.ObjectInUse:
                        raise backups.BackupError("%s is in use by other sessions; close them and run again; nothing was "
                                                  "dropped" % name)
        finally:
            admin.close()
        return dict(self.housekeeping(), changed=True, dropped=name, duration_s=round(time.monotonic() - clock, 3),
                    msg="%s %s (it was set aside by the restore into %s)" % (
                        "would drop" if self.check_mode else "dropped", name, record.get("database")),
                    diff={"before": {"database": name, "exists": True}, "after": {"database": name, "exists": False}})

    # -------------------------------------------------- verify an existing backup

    def verify_existing(self, src: str, mode: str) -> Dict[str, Any]:
        dump, manifest_path = backups.resolve_src(src)
        if not manifest_path:
            raise backups.BackupError("no manifest beside %s; verification compares the dump with its manifest" % dump)
        manifest = backups.read_manifest(manifest_path)
        if not os.path.exists(dump):
            raise backups.BackupError("dump %s named by the manifest does not exist" % dump)
        clock = time.monotonic()
        if mode == "restore":
            self.clean_databases_quietly()
        report = self.verify_path(dump, manifest, "list" if mode == "none" else mode)
        return dict(self.housekeeping(), **{
            "changed": bool(self.cleaned_up), "path": dump, "manifest_path": manifest_path,
            "manifest": manifest, "size_bytes": manifest.get("size_bytes"), "sha256": manifest.get("sha256"),
            "duration_s": round(time.monotonic() - clock, 3), "verified": report["verified"],
            "verification": report})

    # -------------------------------------------------- retention

    def prune(self, dest: str, keep: int, protect: List[str] = (), database: Optional[str] = None) -> Dict[str, Any]:
        """Keep the newest ``keep`` backups of ``database`` (of each database when None), as their
        manifests name it. Files without a readable manifest are never removed, only reported."""
        dest = os.path.abspath(dest)
        entries, skipped = backups.scan_backups(dest)
        if database is not None:
            entries = [e for e in entries if e.database == database]
        kept, removed = [], []
        for db in sorted({e.database for e in entries}):
            db_kept, db_removed = backups.plan_retention([e for e in entries if e.database == db], keep, protect)
            kept += db_kept
            removed += db_removed
        removed_paths = [os.path.join(dest, e.name) for e in removed]
        if not self.check_mode:
            for entry in removed:
                # manifest first: a dump without manifest is visibly incomplete, never a false "good backup"
                backups.remove_path(os.path.join(dest, entry.manifest))
                backups.remove_path(os.path.join(dest, entry.name))
        return {"changed": bool(removed), "removed": removed_paths,
                "kept": [os.path.join(dest, e.name) for e in kept], "skipped": skipped,
                "diff": {"before": {"backups": sorted(e.name for e in entries)},
                         "after": {"backups": sorted(e.name for e in kept)}}}


_RELATION_KINDS = ("table", "view", "materialized view", "sequence", "foreign table", "composite type")


def _describe_owner(record: Dict[str, Any]) -> str:
    return "pid %s on %s (started %s)" % (record.get("pid"), record.get("host"), record.get("started_at"))


def _is_scratch_of(comment: Optional[str], scratch: Optional[str]) -> bool:
    record = backups.parse_owner_record(comment)
    return bool(record and scratch and record.get("kind") == "scratch" and record.get("name") == scratch)


def _restore_message(result: Dict[str, Any]) -> str:
    tables = result.get("restored_tables") or {}
    text = "restored %s into %s (%d tables, %d rows, %d large objects)" % (
        result["path"], result["target_db"], len(tables), sum(tables.values()), result.get("restored_large_objects") or 0)
    aside = result.get("replaced_database")
    if not aside:
        return text
    text += ". The database it replaced is kept as %s" % aside
    lost = result.get("rows_lost")
    if lost is None:
        text += " (%s)" % result.get("row_differences_error")
    elif lost:
        worst = sorted(lost.items(), key=lambda item: (-item[1], item[0]))[:5]
        text += "; it held %d rows more than the backup in %d table(s): %s" % (
            result["rows_lost_total"], len(lost), ", ".join("%s %d" % item for item in worst))
    elif result.get("row_differences"):
        text += "; no table lost rows, %d table(s) differ in row count" % len(result["row_differences"])
    else:
        text += "; every table has the same row count in both"
    return text + ". Drop it when it is no longer needed: pg_backup state=absent drop_replaced=%s" % aside
