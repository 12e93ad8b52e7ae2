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
import re
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils import _backup as bk
from ansible_collections.dbops.migrations.plugins.module_utils._pg import (
    ConnInfo, connect, conninfo_quote, mask_secrets, server_version_num)

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
_ALEMBIC_SQL = """
SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = 'alembic_version' AND c.relkind = 'r'
ORDER BY n.nspname <> 'public', n.nspname LIMIT 1
"""
_USER_OBJECTS_SQL = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
"""
_RESTORE_MARK = "restored by dbops.migrations.pg_backup from sha256:"


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
            raise bk.BackupError("run_as: OS user %s does not exist on this host" % self.run_as)
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
                raise bk.BackupError("%s not found in bin_dir %s; point bin_dir at a PostgreSQL client's bin "
                                     "folder (e.g. /usr/lib/postgresql/15/bin)" % (name, self.bin_dir))
            return path
        found = self.which(name) if self.which else None
        if not found:
            raise bk.BackupError(
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
                raise bk.BackupError("run_as: %s needs root to switch user (use become: true on the task), or "
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
            raise bk.BackupError("%s --version failed on %s: %s" % (name, self.where(), (err or out).strip()[:300]))
        text = out.strip().splitlines()[0] if out.strip() else ""
        return bk.parse_tool_version(text), text

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
                raise bk.BackupError("run_as user %s cannot write into %s: every parent folder of dest must be "
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
            raise bk.BackupError("docker %s failed: %s" % (args[0], (err or out).strip()[:400]))


# ---------------------------------------------------------------- database helpers

def _quote_table(name: str):
    schema, table = bk.split_qualified(name)
    return pgsql.SQL("{}.{}").format(pgsql.Identifier(schema), pgsql.Identifier(table))


def list_tables(cur) -> List[str]:
    cur.execute(_TABLES_SQL)
    return [bk.qualified(s, t) for s, t in cur.fetchall()]


def count_rows(cur, tables: List[str]) -> Dict[str, int]:
    counts = {}
    for name in tables:
        cur.execute(pgsql.SQL("SELECT count(*) FROM {}").format(_quote_table(name)))
        counts[name] = int(cur.fetchone()[0])
    return counts


def alembic_revision(cur) -> Optional[str]:
    cur.execute(_ALEMBIC_SQL)
    row = cur.fetchone()
    if not row:
        return None
    cur.execute(pgsql.SQL("SELECT version_num FROM {}.alembic_version ORDER BY version_num").format(pgsql.Identifier(row[0])))
    revisions = [r[0] for r in cur.fetchall()]
    return ",".join(revisions) if revisions else None


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
        raise bk.BackupError("cannot connect to %s: %s%s" % (info.masked_url(), message, hint))


def database_exists(admin_cur, name: str) -> bool:
    admin_cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return admin_cur.fetchone() is not None


def drop_database(admin_cur, name: str, server_num: int) -> None:
    force = " WITH (FORCE)" if server_num >= 130000 else ""
    admin_cur.execute(pgsql.SQL("DROP DATABASE IF EXISTS {}" + force).format(pgsql.Identifier(name)))


def scratch_name(base: str, purpose: str) -> str:
    """A name for a throw-away database: recognisably from ``base``, but plain ASCII that fits
    PostgreSQL's 63 bytes, so quotes or ``=`` in the user's name never reach a tool's argv."""
    suffix = "_%s_%s" % (purpose, uuid.uuid4().hex[:8])
    plain = re.sub(r"[^a-z0-9_]+", "_", base.lower()).strip("_") or "db"
    return plain[:63 - len(suffix)] + suffix


def count_rows_parallel(info: ConnInfo, tables: List[str], jobs: int) -> Dict[str, int]:
    """Exact row counts on up to ``jobs`` connections (a freshly restored database, nobody writing)."""
    buckets = [tables[i::max(1, jobs)] for i in range(max(1, min(jobs, len(tables))))]
    counters = [SnapshotCounter(info, None, bucket) for bucket in buckets]
    for counter in counters:
        counter.start()
    counts: Dict[str, int] = {}
    for counter in counters:
        counts.update(counter.result())
    return counts


class SnapshotCounter(threading.Thread):
    """Counts rows of ``tables`` (in an exported snapshot when given), on its own connection."""

    def __init__(self, info: ConnInfo, snapshot: Optional[str], tables: List[str]):
        super().__init__(daemon=True)
        self.info, self.snapshot, self.tables = info, snapshot, tables
        self.counts: Dict[str, int] = {}
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            conn = _connect(self.info, autocommit=False)
            try:
                conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
                with conn.cursor() as cur:
                    if self.snapshot:
                        cur.execute("SET TRANSACTION SNAPSHOT %s", (self.snapshot,))
                    self.counts = count_rows(cur, self.tables)
                conn.rollback()
            finally:
                conn.close()
        except BaseException as exc:  # handed to the caller by result()
            self.error = exc

    def result(self) -> Dict[str, int]:
        self.join()
        if self.error is not None:
            if isinstance(self.error, bk.BackupError):
                raise self.error
            raise bk.BackupError("counting rows in the dump's snapshot failed: %s" % self.error)
        return self.counts


# ---------------------------------------------------------------- the engine

@dataclasses.dataclass
class Backup:
    info: ConnInfo
    executor: Executor
    check_mode: bool = False
    log: Callable[[str], None] = lambda message: None
    _timings: Dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def database(self) -> str:
        if not self.info.dbname:
            raise bk.BackupError("no database given: set login_db or the database in db_url")
        return self.info.dbname

    def tool_env(self, dbname: Optional[str] = None) -> Dict[str, str]:
        env = self.info.with_dbname(dbname or self.database).libpq_env()
        return env

    def admin_info(self) -> ConnInfo:
        """Connection for CREATE/DROP DATABASE: the maintenance database ``postgres``."""
        return self.info.with_dbname(self.info.options.get("maintenance_db", "postgres"))

    # -------------------------------------------------- present

    def create(self, dest: str, options: bk.DumpOptions, verify: str, keep: Optional[int]) -> Dict[str, Any]:
        options.validate()
        if keep is not None and keep < 1:
            raise bk.BackupError("keep must be at least 1 (got %d); the backup just made is always kept" % keep)
        dest = os.path.abspath(dest)
        started = bk.utc_now()
        clock = time.monotonic()
        dump_tool_version, dump_tool_text = self.executor.version("pg_dump")
        restore_tool_text = ""
        if verify != "none":
            _version, restore_tool_text = self.executor.version("pg_restore" if options.fmt != "plain" else "psql")
        conn = _connect(self.info, autocommit=False)
        try:
            server_num = server_version_num(conn)
            bk.check_client_version("pg_dump", dump_tool_version, server_num, self.executor.where())
            created_dest = bk.ensure_dest(dest, self.check_mode, self.executor.owner())
            name = bk.backup_name(self.database, options.fmt, started,
                                  os.listdir(dest) if os.path.isdir(dest) else ())
            if self.check_mode:
                return self._predict_present(dest, name, created_dest, keep, server_num)
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_export_snapshot()")
                snapshot = cur.fetchone()[0]
                revision = alembic_revision(cur)
                tables = list_tables(cur)
            staging = bk.make_staging(dest)
            try:
                # Rows are counted in the same snapshot on a second session while pg_dump runs.
                counter = SnapshotCounter(self.info, snapshot, tables)
                counter.start()
                try:
                    sha256, size = self._dump_into(staging, dest, name, options, snapshot)
                finally:
                    counter.join()  # a pg_dump error stays the error reported
                counts = counter.result()
                conn.rollback()  # pg_dump and the counter are done with the snapshot
                finished = bk.utc_now()
                manifest = bk.build_manifest(
                    database=self.database, file_name=name, options=options, server_version_num=server_num,
                    alembic_revision=revision, tables=counts, sha256=sha256, size_bytes=size,
                    started=started, finished=finished,
                    tools={"pg_dump": dump_tool_text, "verify": restore_tool_text,
                           "dbops.migrations": COLLECTION_VERSION},
                    source={"host": self.info.host, "port": self.info.port, "user": self.info.user,
                            "executor": self.executor.where()},
                    snapshot=snapshot)
                verification = self.verify_path(os.path.join(staging, name), manifest, verify,
                                                server_num=server_num, checksum=False)
                manifest["verification"] = verification
                bk.write_json_file(os.path.join(staging, bk.manifest_name(name)), manifest, self.executor.owner())
                if os.path.lexists(os.path.join(dest, name)):
                    raise bk.BackupError("%s appeared in %s while dumping; nothing was overwritten" % (name, dest))
                bk.publish(staging, [name, bk.manifest_name(name)], dest)
            except OSError as exc:
                raise bk.BackupError(bk.describe_os_error(exc, dest))
            finally:
                bk.remove_path(staging)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
        finally:
            conn.close()
        removed: List[str] = []
        if keep is not None:
            removed = self.prune(dest, keep, protect=[name], database=self.database)["removed"]
        duration = round(time.monotonic() - clock, 3)  # dump, checks, verification and retention
        return {
            "changed": True,
            "path": os.path.join(dest, name),
            "manifest_path": os.path.join(dest, bk.manifest_name(name)),
            "manifest": manifest,
            "size_bytes": manifest["size_bytes"],
            "sha256": manifest["sha256"],
            "duration_s": duration,
            "verified": verification["verified"],
            "verification": verification,
            "removed": removed,
            "diff": {"before": {"path": None}, "after": {"path": os.path.join(dest, name)}},
        }

    def _predict_present(self, dest: str, name: str, created_dest: bool, keep: Optional[int], server_num: int) -> Dict[str, Any]:
        removed: List[str] = []
        if keep is not None:
            existing = bk.list_backups(dest, self.database)
            # the new backup takes one of the ``keep`` places
            gone = bk.plan_retention(existing, keep - 1)[1] if keep > 1 else existing
            removed = [os.path.join(dest, e.name) for e in gone]
        path = os.path.join(dest, name)
        return {"changed": True, "path": path, "manifest_path": path + bk.MANIFEST_SUFFIX,
                "manifest": {"database": self.database, "server_version": bk.server_version_text(server_num)},
                "size_bytes": 0, "sha256": "", "duration_s": 0.0, "verified": False,
                "verification": {"mode": "none", "verified": False, "skipped": "check mode"},
                "removed": removed, "dest_created": created_dest,
                "diff": {"before": {"path": None}, "after": {"path": path}}}

    def _dump_into(self, staging: str, dest: str, name: str, options: bk.DumpOptions, snapshot: str) -> Tuple[str, int]:
        work = self.executor.work_dir(staging)
        self.executor.prepare_work_dir(work)
        try:
            output = os.path.join(work, name)
            rc, out, err = self.executor.run("pg_dump", options.pg_dump_args(output, snapshot), self.tool_env())
            if rc != 0:
                raise bk.BackupError(self._dump_failure(rc, err or out, dest))
            self.executor.fetch(output, os.path.join(staging, name))
        finally:
            self.executor.cleanup_work_dir(work)
        path = os.path.join(staging, name)
        if not os.path.exists(path):
            raise bk.BackupError("pg_dump exited 0 but wrote no %s; nothing was kept" % name)
        bk.restrict_mode(path, self.executor.owner())
        bk.fsync_path(path)
        sha256, size = bk.sha256_path(path)
        if size == 0:
            raise bk.BackupError("pg_dump wrote an empty %s; nothing was kept" % name)
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
        fmt = manifest.get("format") or bk.detect_format(path)
        if checksum:
            digest, size = bk.sha256_path(path)
            if digest != manifest.get("sha256"):
                raise bk.BackupError(
                    "checksum mismatch for %s: the manifest says sha256 %s (%s bytes), the file has %s (%d bytes); "
                    "the backup is damaged or was changed; use another backup" % (
                        path, manifest.get("sha256"), manifest.get("size_bytes"), digest, size))
            report["checks"].append("sha256")
        if fmt == "plain":
            if not bk.plain_dump_complete(path):
                raise bk.BackupError("%s is truncated: it lacks pg_dump's 'dump complete' trailer; use another backup" % path)
            report["checks"].append("complete")
        else:
            listing = self.list_archive(path)
            problems = bk.toc_problems(listing, manifest.get("tables", {}).keys())
            if problems:
                raise bk.BackupError("archive %s lacks data for %d table(s): %s" % (path, len(problems), "; ".join(problems[:10])))
            report["checks"].append("toc")
            report["toc_entries"] = len([line for line in listing.splitlines() if line and not line.startswith(";")])
        if mode == "restore":
            scratch = scratch_name(manifest.get("database") or "db", "verify")
            report["scratch_db"] = scratch
            actual = self._restore_into_new(path, fmt, scratch, jobs=max(1, int(manifest.get("jobs") or 1)),
                                            server_num=server_num, keep=False, manifest=manifest, no_owner=True)
            problems = bk.compare_counts(manifest.get("tables", {}), actual)
            if problems:
                raise bk.BackupError("verification restore of %s does not match its manifest: %s" % (path, "; ".join(problems[:10])))
            report["checks"].append("restore")
            report["restored_rows"] = sum(actual.values())
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
            raise bk.BackupError("pg_restore cannot read the table of contents of %s: %s; the archive is damaged "
                                 "or not a pg_dump archive; use another backup" % (path, (err or out).strip()[:400]))
        return out

    # -------------------------------------------------- restore

    def _restore_into_new(self, path: str, fmt: str, new_db: str, *, jobs: int, server_num: Optional[int],
                          keep: bool, manifest: Dict[str, Any], no_owner: bool) -> Dict[str, int]:
        """CREATE DATABASE new_db, restore, count rows; dropped afterwards unless ``keep``."""
        admin = _connect(self.admin_info())
        ok = False
        try:
            with admin.cursor() as cur:
                server_num = server_num or server_version_num(admin)
                cur.execute(pgsql.SQL("CREATE DATABASE {} TEMPLATE template0").format(pgsql.Identifier(new_db)))
            try:
                started = time.monotonic()
                self._run_restore(path, fmt, new_db, jobs, no_owner)
                self._timings["pg_restore_s"] = round(time.monotonic() - started, 3)
                started = time.monotonic()
                target = _connect(self.info.with_dbname(new_db))
                try:
                    with target.cursor() as cur:
                        tables = list_tables(cur)
                finally:
                    target.close()
                counts = count_rows_parallel(self.info.with_dbname(new_db), tables, jobs)
                self._timings["count_s"] = round(time.monotonic() - started, 3)
                ok = True
                return counts
            finally:
                if not (ok and keep):
                    with admin.cursor() as cur:
                        drop_database(cur, new_db, server_num)
        finally:
            admin.close()

    def _run_restore(self, path: str, fmt: str, dbname: str, jobs: int, no_owner: bool) -> None:
        env = self.tool_env(dbname)
        # Session settings for a bulk load into a database nobody uses yet: more memory for index
        # builds; no commit flush per table (the final rename is a synchronous commit after them).
        env["PGOPTIONS"] = ("%s -c maintenance_work_mem=256MB -c synchronous_commit=off"
                            % os.environ.get("PGOPTIONS", "")).strip()
        work = self.executor.work_dir(os.path.dirname(path))
        try:
            if self.executor.container:
                self.executor.prepare_work_dir(work)
            inside = self.executor.push(path, work)
            if fmt == "plain":
                args = ["--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1", "--single-transaction",
                        "--file=" + inside, "--output=/dev/null"]
                rc, out, err = self.executor.run("psql", args, env)
            else:
                args = ["--exit-on-error", "--no-password", "--dbname=dbname=" + conninfo_quote(dbname)]
                if no_owner:
                    args += ["--no-owner", "--no-privileges"]
                if bk.restore_jobs(fmt, jobs) > 1:
                    args.append("--jobs=%d" % jobs)
                else:
                    args.append("--single-transaction")
                args.append(inside)
                rc, out, err = self.executor.run("pg_restore", args, env)
        finally:
            if self.executor.container:
                self.executor.cleanup_work_dir(work)
        if rc != 0:
            raise bk.BackupError("restore of %s into %s failed (exit %d): %s" % (
                path, dbname, rc, mask_secrets((err or out).strip(), self.info.password)[-800:]))

    def restore(self, src: str, target_db: str, force: bool, jobs: int, fmt: Optional[str], no_owner: bool) -> Dict[str, Any]:
        dump, manifest_path = bk.resolve_src(src)
        if not os.path.exists(dump):
            raise bk.BackupError("dump %s named by the manifest does not exist" % dump)
        manifest: Dict[str, Any] = bk.read_manifest(manifest_path) if manifest_path else {}
        detected = bk.detect_format(dump)
        if manifest.get("format") and manifest["format"] != detected:
            raise bk.BackupError("manifest says format %s but %s is a %s archive; the manifest does not belong to this dump"
                                 % (manifest["format"], dump, detected))
        if fmt and fmt != detected:
            raise bk.BackupError("format: %s was given but %s is a %s archive; drop format or fix src" % (fmt, dump, detected))
        clock = time.monotonic()
        sha256, size = bk.sha256_path(dump)
        if manifest and sha256 != manifest.get("sha256"):
            raise bk.BackupError(
                "checksum mismatch for %s: the manifest says sha256 %s, the file has %s; the backup is damaged or "
                "was changed; nothing was restored; use another backup" % (dump, manifest.get("sha256"), sha256))
        if detected != "plain":
            restore_version, _text = self.executor.version("pg_restore")
            dumped_with = (manifest.get("tools") or {}).get("pg_dump")
            bk.check_restore_version(restore_version, bk.parse_tool_version(dumped_with) if dumped_with else None)
            listing = self.list_archive(dump)
            problems = bk.toc_problems(listing, manifest.get("tables", {}).keys())
            if problems:
                raise bk.BackupError("archive %s lacks data: %s; nothing was restored" % (dump, "; ".join(problems[:10])))
        elif not bk.plain_dump_complete(dump):
            raise bk.BackupError("%s is truncated (no 'dump complete' trailer); nothing was restored" % dump)
        mark = _RESTORE_MARK + sha256
        admin = _connect(self.admin_info())
        try:
            server_num = server_version_num(admin)
            with admin.cursor() as cur:
                exists = database_exists(cur, target_db)
                cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (target_db,))
                row = cur.fetchone()
                comment = row[0] if row else None
            base = {"path": dump, "manifest_path": manifest_path, "manifest": manifest, "size_bytes": size,
                    "sha256": sha256, "target_db": target_db}
            if exists and comment == mark:
                return dict(base, changed=False, verified=False, duration_s=round(time.monotonic() - clock, 3),
                            msg="%s was already restored from this backup (sha256 %s)" % (target_db, sha256[:12]))
            objects = self._user_objects(target_db) if exists else 0
            if objects and not force:
                raise bk.BackupError(
                    "target database %s is not empty (%d relations); refusing to overwrite it. Restore into a new "
                    "target_db, or set force: true to replace it (the old database is dropped only after the "
                    "restore succeeded)" % (target_db, objects))
            diff = {"before": {"target_db": target_db, "exists": exists, "relations": objects},
                    "after": {"target_db": target_db, "exists": True, "restored_from": dump}}
            if self.check_mode:
                return dict(base, changed=True, verified=False, duration_s=0.0, diff=diff)
            scratch = scratch_name(target_db, "restore")
            checks_s = time.monotonic() - clock
            counts = self._restore_into_new(dump, detected, scratch, jobs=jobs, server_num=server_num, keep=True,
                                            manifest=manifest, no_owner=no_owner)
            problems = bk.compare_counts(manifest.get("tables", {}), counts) if manifest else []
            with admin.cursor() as cur:
                if problems:
                    drop_database(cur, scratch, server_num)
                    raise bk.BackupError("restored row counts differ from the manifest: %s; %s was left unchanged"
                                         % ("; ".join(problems[:10]), target_db))
                if exists:
                    drop_database(cur, target_db, server_num)
                cur.execute(pgsql.SQL("ALTER DATABASE {} RENAME TO {}").format(pgsql.Identifier(scratch), pgsql.Identifier(target_db)))
                cur.execute(pgsql.SQL("COMMENT ON DATABASE {} IS {}").format(pgsql.Identifier(target_db), pgsql.Literal(mark)))
        finally:
            admin.close()
        timings = dict(self._timings, checks_s=round(checks_s, 3))
        return dict(base, changed=True, verified=bool(manifest), restored_tables=counts, timings=timings,
                    duration_s=round(time.monotonic() - clock, 3), diff=diff)

    def _user_objects(self, dbname: str) -> int:
        conn = _connect(self.info.with_dbname(dbname))
        try:
            with conn.cursor() as cur:
                cur.execute(_USER_OBJECTS_SQL)
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    # -------------------------------------------------- verify an existing backup

    def verify_existing(self, src: str, mode: str) -> Dict[str, Any]:
        dump, manifest_path = bk.resolve_src(src)
        if not manifest_path:
            raise bk.BackupError("no manifest beside %s; verification compares the dump with its manifest" % dump)
        manifest = bk.read_manifest(manifest_path)
        if not os.path.exists(dump):
            raise bk.BackupError("dump %s named by the manifest does not exist" % dump)
        clock = time.monotonic()
        report = self.verify_path(dump, manifest, "list" if mode == "none" else mode)
        return {"changed": False, "path": dump, "manifest_path": manifest_path, "manifest": manifest,
                "size_bytes": manifest.get("size_bytes"), "sha256": manifest.get("sha256"),
                "duration_s": round(time.monotonic() - clock, 3), "verified": report["verified"],
                "verification": report}

    # -------------------------------------------------- retention

    def prune(self, dest: str, keep: int, protect: List[str] = (), database: Optional[str] = None) -> Dict[str, Any]:
        """Keep the newest ``keep`` backups of ``database`` (of each database when None)."""
        dest = os.path.abspath(dest)
        entries = bk.list_backups(dest, database)
        kept, removed = [], []
        for db in sorted({e.database for e in entries}):
            db_kept, db_removed = bk.plan_retention([e for e in entries if e.database == db], keep, protect)
            kept += db_kept
            removed += db_removed
        removed_paths = [os.path.join(dest, e.name) for e in removed]
        if not self.check_mode:
            for entry in removed:
                # manifest first: a dump without manifest is visibly incomplete, never a false "good backup"
                bk.remove_path(os.path.join(dest, entry.manifest))
                bk.remove_path(os.path.join(dest, entry.name))
        return {"changed": bool(removed), "removed": removed_paths,
                "kept": [os.path.join(dest, e.name) for e in kept],
                "diff": {"before": {"backups": sorted(e.name for e in entries)},
                         "after": {"backups": sorted(e.name for e in kept)}}}
