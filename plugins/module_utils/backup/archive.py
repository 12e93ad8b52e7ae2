# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure parts of pg_backup: names, manifests, retention, version gates, hashing, atomic files.

Nothing here talks to PostgreSQL or runs a program; ``backup.operations`` does that.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import errno
import gzip
import hashlib
import json
import os
import re
import shutil
import threading
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT_VERSION = 1
STAGING_PREFIX = ".pg_backup-"
FORMATS = ("custom", "directory", "plain")
EXTENSIONS = {"custom": ".dump", "directory": ".dir", "plain": ".sql"}
FORMAT_FLAGS = {"custom": "c", "directory": "d", "plain": "p"}
# The last line pg_dump writes into a complete plain dump.
PLAIN_DUMP_TRAILER = b"-- PostgreSQL database dump complete"
CUSTOM_MAGIC = b"PGDMP"
_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_NAME_RE = re.compile(r"^(?P<db>.+)_(?P<stamp>\d{8}T\d{6}Z(?:-\d+)?)(?P<ext>\.dump|\.dir|\.sql)$")
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_HASH_CHUNK = 4 * 1024 * 1024


class BackupError(Exception):
    """A backup, verification, restore or retention step failed; the message says what to do."""


# ---------------------------------------------------------------- names

def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def backup_name(database: str, fmt: str, when: datetime.datetime, taken: Iterable[str] = ()) -> str:
    """``<database>_<UTC timestamp>.<ext>``: sorts by time, says which database it holds.

    A second backup within the same second gets ``-1``, ``-2``... so nothing is ever overwritten.
    """
    safe_db = re.sub(r"[^A-Za-z0-9_.-]", "_", database) or "db"
    stamp = when.astimezone(datetime.timezone.utc).strftime(_STAMP_FORMAT)
    taken = set(taken)
    name = "%s_%s%s" % (safe_db, stamp, EXTENSIONS[fmt])
    counter = 0
    while name in taken or manifest_name(name) in taken:
        counter += 1
        name = "%s_%s-%d%s" % (safe_db, stamp, counter, EXTENSIONS[fmt])
    return name


def manifest_name(dump_name: str) -> str:
    return dump_name + MANIFEST_SUFFIX


@dataclasses.dataclass(frozen=True)
class BackupEntry:
    """One backup found in a destination folder; ``database`` is its manifest's (exact) database."""
    name: str
    database: str
    stamp: str
    has_manifest: bool

    @property
    def manifest(self) -> str:
        return manifest_name(self.name)


def parse_backup_name(name: str) -> Optional[Tuple[str, str]]:
    match = _NAME_RE.match(name)
    if not match:
        return None
    return match.group("db"), match.group("stamp")


def scan_backups(folder: str) -> Tuple[List[BackupEntry], List[Dict[str, str]]]:
    """Backups in ``folder`` (newest first) keyed by their manifest's database, and the
    backup-like files whose manifest is missing or unreadable (``path`` and ``reason``).

    File names are cleaned-up database names (``shop eu`` and ``shop_eu`` share one), so only
    the manifest says whose a backup is; a file without a readable manifest belongs to nobody
    we can prove and is never touched by retention."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return [], []
    present = set(names)
    entries, skipped = [], []
    for name in names:
        parsed = parse_backup_name(name)
        if not parsed:
            continue
        database, reason = _manifest_database(folder, name, present)
        if database is None:
            skipped.append({"path": os.path.join(folder, name), "reason": reason})
            continue
        entries.append(BackupEntry(name, database, parsed[1], True))
    entries.sort(key=lambda e: (e.stamp, e.name), reverse=True)
    skipped.sort(key=lambda s: s["path"])
    return entries, skipped


def _manifest_database(folder: str, name: str, present: Set[str]) -> Tuple[Optional[str], str]:
    if manifest_name(name) not in present:
        return None, "no manifest beside it"
    try:
        manifest = read_manifest(os.path.join(folder, manifest_name(name)))
    except (BackupError, OSError) as exc:
        return None, "manifest unreadable: %s" % exc
    if os.path.basename(str(manifest.get("file", ""))) != name:
        return None, "its manifest describes another file (%s)" % manifest.get("file")
    if not isinstance(manifest.get("database"), str) or not manifest["database"]:
        return None, "its manifest names no database"
    return manifest["database"], ""


def list_backups(folder: str, database: Optional[str] = None) -> List[BackupEntry]:
    """Backups in ``folder`` (newest first) with a readable manifest, optionally only those
    whose manifest names exactly ``database``."""
    entries = scan_backups(folder)[0]
    return [e for e in entries if database is None or e.database == database]


def plan_retention(entries: List[BackupEntry], keep: int, protect: Iterable[str] = ()) -> Tuple[List[BackupEntry], List[BackupEntry]]:
    """Split into (kept, removed): the newest ``keep`` stay, and a protected backup always stays."""
    if keep < 1:
        raise BackupError("keep must be at least 1 (got %s): retention never removes every backup" % keep)
    protected = set(protect)
    ordered = sorted(entries, key=lambda e: (e.stamp, e.name), reverse=True)
    kept = [e for e in ordered if e.name in protected]
    removed = []
    for entry in ordered:
        if entry.name in protected:
            continue
        if len(kept) < keep:
            kept.append(entry)
        else:
            removed.append(entry)
    return sorted(kept, key=lambda e: (e.stamp, e.name), reverse=True), removed


# ---------------------------------------------------------------- versions

def parse_tool_version(text: str) -> Tuple[int, int]:
    """``pg_dump (PostgreSQL) 15.18 (Debian ...)`` -> (15, 18)."""
    match = _VERSION_RE.search(text or "")
    if not match:
        raise BackupError("cannot read a PostgreSQL version from %r; is this a PostgreSQL client program?" % (text or "")[:120])
    return int(match.group(1)), int(match.group(2) or 0)


def server_major(version_num: int) -> int:
    return version_num // 10000 if version_num >= 100000 else version_num // 100


def server_version_text(version_num: int) -> str:
    if version_num >= 100000:
        return "%d.%d" % (version_num // 10000, version_num % 10000)
    return "%d.%d.%d" % (version_num // 10000, version_num // 100 % 100, version_num % 100)


def check_client_version(tool: str, client: Tuple[int, int], server_num: int, where: str) -> None:
    """pg_dump refuses (or worse) a newer server: say so, and what to install instead."""
    major = server_major(server_num)
    if client[0] < major:
        raise BackupError(
            "%s %d.%d is older than the server (PostgreSQL %s) and cannot dump it. Use a client of major "
            "version %d or newer: install postgresql-client-%d on %s, set bin_dir to its binaries "
            "(for example /usr/lib/postgresql/%d/bin), or run the dump inside the database container "
            "with the container option." % (tool, client[0], client[1], server_version_text(server_num),
                                            major, major, where, major))


def check_restore_version(restore: Tuple[int, int], dumped_with: Optional[Tuple[int, int]]) -> None:
    if dumped_with and restore[0] < dumped_with[0]:
        raise BackupError(
            "pg_restore %d.%d is older than the pg_dump %d.%d that wrote this archive and may not read it; "
            "use pg_restore %d or newer (bin_dir or container option)" % (restore + dumped_with + (dumped_with[0],)))


# ---------------------------------------------------------------- options

# pg_dump 16 and newer also compress with lz4 and zstd (method: level range).
COMPRESS_METHODS = {"gzip": (0, 9), "lz4": (1, 12), "zstd": (1, 22), "none": (0, 0)}
COMPRESS_METHODS_SINCE = {"lz4": 16, "zstd": 16}


@dataclasses.dataclass
class DumpOptions:
    fmt: str = "custom"
    jobs: int = 1
    compress: Optional[int] = None
    lock_wait_timeout: Optional[str] = None
    compress_method: Optional[str] = None

    def check_client(self, client: Tuple[int, int], where: str) -> None:
        """lz4 and zstd need pg_dump 16 or newer; say what to use instead."""
        since = COMPRESS_METHODS_SINCE.get(self.compress_method or "")
        if since and client[0] < since:
            raise BackupError("compress_method: %s needs pg_dump %d or newer; %s has pg_dump %d.%d. Use a newer client "
                              "(bin_dir, or the container option with a PostgreSQL %d+ image) or compress_method: gzip; "
                              "nothing was written" % (self.compress_method, since, where, client[0], client[1], since))

    def validate(self) -> None:
        if self.fmt not in FORMATS:
            raise BackupError("format must be one of %s (got %r)" % (", ".join(FORMATS), self.fmt))
        if self.jobs < 1:
            raise BackupError("jobs must be at least 1 (got %d)" % self.jobs)
        if self.jobs > 1 and self.fmt != "directory":
            raise BackupError("jobs > 1 needs format: directory (pg_dump dumps in parallel only into a "
                              "directory archive); set format: directory or jobs: 1")
        method = self.compress_method or "gzip"
        if method not in COMPRESS_METHODS:
            raise BackupError("compress_method must be one of %s (got %r)" % (", ".join(sorted(COMPRESS_METHODS)), method))
        low, high = COMPRESS_METHODS[method]
        if self.compress is not None and method == "gzip" and not low <= self.compress <= high:
            raise BackupError("compress must be a gzip level from 0 to 9 (PostgreSQL 15 pg_dump); got %s" % self.compress)
        if self.compress is not None and method not in ("gzip", "none") and not low <= self.compress <= high:
            raise BackupError("compress must be a %s level from %d to %d; got %s" % (method, low, high, self.compress))
        if self.fmt == "plain" and (self.compress or method not in ("gzip", "none")):
            raise BackupError("format: plain writes uncompressed SQL that psql can read; for a compressed "
                              "backup use format: custom (or directory) with compress")

    def pg_dump_args(self, output: str, snapshot: Optional[str]) -> List[str]:
        args = ["--format=" + FORMAT_FLAGS[self.fmt], "--no-password", "--file=" + output]
        method = self.compress_method or "gzip"
        if method == "none":
            args.append("--compress=0")
        elif method != "gzip":
            # PostgreSQL 16 syntax: METHOD[:LEVEL]
            args.append("--compress=%s" % method + (":%d" % self.compress if self.compress is not None else ""))
        elif self.compress is not None:
            args.append("--compress=%d" % self.compress)
        if self.jobs > 1:
            args.append("--jobs=%d" % self.jobs)
        if snapshot:
            args.append("--snapshot=" + snapshot)
        if self.lock_wait_timeout:
            args.append("--lock-wait-timeout=" + self.lock_wait_timeout)
        return args


def restore_jobs(fmt: str, jobs: int) -> int:
    """pg_restore runs in parallel only from custom or directory archives."""
    return jobs if fmt in ("custom", "directory") else 1


# ---------------------------------------------------------------- defaults chosen from the host

DEFAULT_FORMAT = "directory"
# pg_dump -j N opens N + 1 connections and one server backend per worker; beyond the core count
# a worker only waits for a core, and past a handful the connections cost more than they give.
MAX_AUTO_JOBS = 8
# gzip level 1: the fastest level within the size goal (bench/backup/REPORT.md, level sweep).
DEFAULT_GZIP_LEVEL = 1
# pg_dump 16 compresses with zstd, several times faster than gzip at a smaller size.
ZSTD_SINCE = 16


def usable_cpus() -> int:
    """Cores this process may run on (a cpuset or container limit, else every core)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_jobs(cpus: int, cap: int = MAX_AUTO_JOBS) -> int:
    """Parallel workers for a dump or restore: one per core, at least 1, at most ``cap``."""
    return max(1, min(int(cpus or 1), cap))


def default_dump_options(*, fmt: Optional[str], jobs: Optional[int], compress: Optional[int],
                         compress_method: Optional[str], client: Tuple[int, int], cpus: int,
                         lock_wait_timeout: Optional[str] = None) -> DumpOptions:
    """The dump the module makes when options are left out.

    - format: directory, the one format pg_dump writes in parallel;
    - jobs: one worker per core for a directory archive (1 for the single-file formats);
    - compression: zstd (its own default level) with a pg_dump of 16 or newer, else gzip level 1.
    Options that are given are kept as given."""
    fmt = fmt or DEFAULT_FORMAT
    if jobs is None:
        jobs = auto_jobs(cpus) if fmt == "directory" else 1
    if fmt != "plain" and compress_method is None:
        if compress is None and client[0] >= ZSTD_SINCE:
            compress_method = "zstd"
        else:
            compress_method = "gzip"
    if compress is None and fmt != "plain" and compress_method == "gzip":
        compress = DEFAULT_GZIP_LEVEL
    return DumpOptions(fmt=fmt, jobs=jobs, compress=compress, lock_wait_timeout=lock_wait_timeout,
                       compress_method=compress_method)


def unsupported_compression(stderr: str) -> bool:
    """pg_dump 16+ built without zstd (or lz4) says so; the default then falls back to gzip."""
    text = (stderr or "").lower()
    return "does not support compression" in text or ("not built with" in text and "support" in text)


# ---------------------------------------------------------------- restore plan

# Settings of pg_restore's own sessions. The restore goes into a database nobody uses until it is
# checked and renamed into place, so no commit needs to wait for its WAL flush (the rename itself
# is a synchronous commit after all of them), and index builds get memory to sort in.
RESTORE_SESSION_SETTINGS = (
    ("maintenance_work_mem", "256MB"),
    ("synchronous_commit", "off"),
)


def restore_pgoptions(inherited: Optional[str], settings=RESTORE_SESSION_SETTINGS) -> str:
    """PGOPTIONS for the restore sessions: the caller's own options, then ours."""
    ours = " ".join("-c %s=%s" % (name, value) for name, value in settings)
    return ("%s %s" % (inherited or "", ours)).strip()


# Sections of a parallel restore. Tables and their data first; then indexes, constraints and
# triggers, during which the loaded tables are counted (a count changes nothing a later step reads).
RESTORE_PHASES = (("pre-data", "data"), ("post-data",))


def pg_restore_phases(inside: str, dbname_arg: str, *, jobs: int, no_owner: bool,
                      split: bool = True) -> List[List[str]]:
    """Argument lists of the pg_restore runs of a custom or directory archive, in order.

    ``split``: two runs (pre-data and data, then post-data) so the row counts can overlap the
    index and constraint builds; else one run of every section. ``--single-transaction`` is never
    used: it cannot run with ``--jobs``, and the restore goes into a new database anyway."""
    common = ["--exit-on-error", "--no-password", "--dbname=" + dbname_arg]
    if no_owner:
        common += ["--no-owner", "--no-privileges"]
    if jobs > 1:
        common.append("--jobs=%d" % jobs)
    if not split:
        return [common + [inside]]
    return [common + ["--section=%s" % section for section in phase] + [inside] for phase in RESTORE_PHASES]


# ---------------------------------------------------------------- hashing and files

def sha256_path(path: str) -> Tuple[str, int]:
    """sha256 and size of a file, or of a directory archive (hash of ``name sha256`` lines, sorted)."""
    if os.path.isdir(path):
        lines = []
        total = 0
        for name in sorted(os.listdir(path)):
            digest, size = _sha256_file(os.path.join(path, name))
            lines.append("%s  %s\n" % (digest, name))
            total += size
        return hashlib.sha256("".join(lines).encode()).hexdigest(), total
    return _sha256_file(path)


def sha256_and_sync(path: str, threads: int = 1) -> Tuple[str, int]:
    """:func:`sha256_path` and :func:`fsync_path` in one pass over a freshly written archive.

    The files of a directory archive are hashed on up to ``threads`` threads (hashlib releases
    the GIL), each file fsynced right after it is read; a single file is fsynced on a second
    thread while it is hashed. The digest is exactly :func:`sha256_path`'s."""
    if not os.path.isdir(path):
        syncer = threading.Thread(target=fsync_path, args=(path,), daemon=True)
        syncer.start()
        try:
            return _sha256_file(path)
        finally:
            syncer.join()
    names = sorted(os.listdir(path))

    def one(name: str) -> Tuple[str, int]:
        full = os.path.join(path, name)
        result = _sha256_file(full)
        fsync_path(full)
        return result

    # largest first, so one big table's file does not start last
    order = sorted(names, key=lambda n: -os.path.getsize(os.path.join(path, n)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(threads, len(names) or 1))) as pool:
        done = dict(zip(order, pool.map(one, order)))
    _fsync_dir(path)
    lines = "".join("%s  %s\n" % (done[name][0], name) for name in names)
    return hashlib.sha256(lines.encode()).hexdigest(), sum(size for _digest, size in done.values())


def _sha256_file(path: str) -> Tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_HASH_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def detect_format(path: str) -> str:
    """The archive format from its content (never from the file name)."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "toc.dat")):
            return "directory"
        raise BackupError("%s is a directory without toc.dat: not a pg_dump directory archive" % path)
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(CUSTOM_MAGIC):
        return "custom"
    if head.startswith(b"\x1f\x8b"):
        raise BackupError("%s is gzip-compressed SQL; decompress it first (gunzip) and restore the .sql file" % path)
    if b"PostgreSQL database dump" in head:
        return "plain"
    raise BackupError("%s is neither a pg_dump archive nor a plain SQL dump (no PGDMP header, no "
                      "'PostgreSQL database dump' header); give the dump or its manifest" % path)


def plain_dump_complete(path: str) -> bool:
    """A plain dump that pg_dump finished ends with its 'dump complete' trailer."""
    size = os.path.getsize(path)
    opener = gzip.open if _is_gzip(path) else open
    if opener is gzip.open:
        tail = b""
        with gzip.open(path, "rb") as handle:  # reads (and CRC-checks) the whole stream
            while True:
                chunk = handle.read(_HASH_CHUNK)
                if not chunk:
                    break
                tail = (tail + chunk)[-4096:]
    else:
        with open(path, "rb") as handle:
            handle.seek(max(0, size - 4096))
            tail = handle.read()
    return PLAIN_DUMP_TRAILER in tail


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def fsync_path(path: str) -> None:
    """fsync a file, or a directory archive's files and the directory itself."""
    if os.path.isdir(path):
        for name in os.listdir(path):
            fsync_path(os.path.join(path, name))
        _fsync_dir(path)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restrict_mode(path: str, owner: Optional[Tuple[int, int]] = None) -> None:
    """Files 0600, directories 0700 (optionally handed back to ``owner``)."""
    if os.path.isdir(path):
        for name in os.listdir(path):
            restrict_mode(os.path.join(path, name), owner)
        if owner:
            os.chown(path, *owner)
        os.chmod(path, 0o700)
    else:
        if owner:
            os.chown(path, *owner)
        os.chmod(path, 0o600)


def ensure_dest(dest: str, check_mode: bool = False, owner: Optional[Tuple[int, int]] = None) -> bool:
    """Create ``dest`` with mode 0700 if missing; True when it was (or would be) created."""
    if os.path.isdir(dest):
        if os.statvfs(dest).f_flag & os.ST_RDONLY:
            raise BackupError("destination %s is on a read-only filesystem; choose a writable dest or remount it "
                              "read-write (nothing was written)" % dest)
        if not check_mode and not os.access(dest, os.W_OK | os.X_OK):
            raise BackupError("destination %s is not writable by this user; fix its permissions or choose "
                              "another dest (nothing was written)" % dest)
        return False
    if os.path.exists(dest):
        raise BackupError("destination %s exists and is not a directory; choose a folder for dest" % dest)
    if check_mode:
        return True
    try:
        os.makedirs(dest, mode=0o700)
    except OSError as exc:
        raise BackupError("cannot create destination %s: %s; create it or choose another dest" % (dest, exc.strerror))
    os.chmod(dest, 0o700)
    if owner:
        os.chown(dest, *owner)
    return True


def make_staging(dest: str, owner: Optional[Dict[str, Any]] = None) -> str:
    """A private folder inside ``dest``: same filesystem, so the final rename is atomic. It holds
    an owner record so that a later run can remove it when this run dies half-way."""
    import tempfile
    try:
        path = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest)
        write_json_file(os.path.join(path, STAGING_OWNER_FILE), owner or this_process())
        return path
    except OSError as exc:
        raise BackupError(describe_os_error(exc, dest))


def stale_staging(dest: str, here: Dict[str, Any]) -> Tuple[List[str], List[Dict[str, str]]]:
    """Staging folders in ``dest`` left by dead runs (to remove), and others found (kept, with why)."""
    stale, kept = [], []
    try:
        names = sorted(os.listdir(dest))
    except OSError:
        return [], []
    for name in names:
        path = os.path.join(dest, name)
        if not name.startswith(STAGING_PREFIX) or os.path.islink(path) or not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, STAGING_OWNER_FILE), encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            kept.append({"path": path, "reason": "no owner record; remove it by hand when no backup runs"})
            continue
        gone = owner_gone(record if isinstance(record, dict) else {}, here)
        if gone:
            stale.append(path)
        elif gone is None:
            kept.append({"path": path, "reason": "made on host %s; that host must clean it" % record.get("host")})
    return stale, kept


def describe_os_error(exc: OSError, dest: str) -> str:
    if exc.errno == errno.ENOSPC:
        return "destination %s is full (no space left on device); free space or choose another dest; nothing was kept" % dest
    if exc.errno == errno.EROFS:
        return "destination %s is on a read-only filesystem; choose a writable dest; nothing was written" % dest
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "destination %s is not writable (%s); fix its permissions or choose another dest" % (dest, exc.strerror)
    return "cannot write into %s: %s" % (dest, exc.strerror or exc)


def remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def publish(staging: str, names: List[str], dest: str) -> None:
    """Rename staged entries into ``dest`` in order (dump first, manifest last), then fsync dest."""
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(dest, name))
    _fsync_dir(dest)


def write_json_file(path: str, data: Dict[str, Any], owner: Optional[Tuple[int, int]] = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    if owner:
        os.fchown(fd, *owner)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_manifest(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise BackupError("manifest %s not found" % path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError("manifest %s is not valid JSON (%s); it may be damaged" % (path, exc))
    if not isinstance(data, dict) or "file" not in data or "sha256" not in data:
        raise BackupError("%s is not a pg_backup manifest (no file/sha256 keys)" % path)
    return data


def resolve_src(src: str) -> Tuple[str, Optional[str]]:
    """``src`` may be a dump or its manifest: return (dump path, manifest path or None)."""
    src = os.path.abspath(src)
    if src.endswith(MANIFEST_SUFFIX):
        manifest = read_manifest(src)
        dump = os.path.join(os.path.dirname(src), os.path.basename(manifest["file"]))
        return dump, src
    if not os.path.exists(src):
        raise BackupError("src %s does not exist; give a dump file, a directory archive or its .manifest.json" % src)
    candidate = manifest_name(src.rstrip("/"))
    return src.rstrip("/"), candidate if os.path.exists(candidate) else None


# ---------------------------------------------------------------- manifest and comparison

def build_manifest(*, database: str, file_name: str, options: DumpOptions, server_version_num: int,
                   alembic_revision: Optional[str], tables: Dict[str, int], sha256: str, size_bytes: int,
                   started: datetime.datetime, finished: datetime.datetime, tools: Dict[str, str],
                   source: Dict[str, Any], snapshot: Optional[str], large_objects: Optional[int] = None,
                   version_table: Optional[str] = None, version_table_missing: bool = False) -> Dict[str, Any]:
    """The JSON written beside a dump. It never holds a password.

    ``alembic_revision`` is None both for an empty version table (the database is at base) and
    for a missing one; ``alembic_version_table_missing`` tells them apart, and a missing table
    must never be read as base."""
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "created_by": "dbops.migrations.pg_backup",
        "database": database,
        "source": source,
        "file": file_name,
        "format": options.fmt,
        "compress": options.compress,
        "compress_method": options.compress_method or ("none" if options.compress == 0 else "gzip"),
        "jobs": options.jobs,
        "server_version": server_version_text(server_version_num),
        "server_version_num": server_version_num,
        "alembic_revision": alembic_revision,
        "alembic_version_table": version_table,
        "alembic_version_table_missing": bool(version_table_missing),
        "large_objects": large_objects,
        "snapshot_consistent": bool(snapshot),
        "tables": dict(sorted(tables.items())),
        "table_count": len(tables),
        "row_count_total": sum(tables.values()),
        "sha256": sha256,
        "sha256_scope": "directory" if options.fmt == "directory" else "file",
        "size_bytes": size_bytes,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_s": round((finished - started).total_seconds(), 3),
        "tools": tools,
    }


def compare_counts(expected: Dict[str, int], actual: Dict[str, int]) -> List[str]:
    """Human-readable differences between manifest row counts and a restored copy."""
    problems = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            problems.append("%s: missing after restore (expected %d rows)" % (table, expected[table]))
        elif table not in expected:
            problems.append("%s: present after restore but not in the manifest" % table)
        elif expected[table] != actual[table]:
            problems.append("%s: %d rows expected, %d restored" % (table, expected[table], actual[table]))
    return problems


def compare_large_objects(expected: Optional[int], actual: int) -> List[str]:
    """Large objects are not tables: their count is checked on its own (old manifests lack it)."""
    if expected is None or expected == actual:
        return []
    return ["large objects: %d expected, %d restored" % (expected, actual)]


_TOC_DATA_RE = re.compile(r"^\d+;\s*\d+\s+\d+\s+TABLE DATA (.*)$", re.MULTILINE)


def toc_data_entries(listing: str) -> List[str]:
    """What follows ``TABLE DATA`` on each entry of ``pg_restore --list`` output: schema, table
    and owner separated by single spaces. pg_restore does not quote them, so a name holding a
    space cannot be split back; :func:`toc_problems` matches the known names instead."""
    return [m.group(1) for m in _TOC_DATA_RE.finditer(listing)]


def _toc_heads(entries: List[str]) -> Set[str]:
    # ``schema name`` of each entry: the entry without its last word (the owner, one word, so
    # ``a "b"`` does not match the entry of ``a "b" c``), and the entry itself (no owner).
    return {head for entry in entries for head in (entry, entry.rsplit(" ", 1)[0])}


def _toc_has(heads: Set[str], table: str) -> bool:
    # ``table`` is ``schema.name``; either part may itself hold dots, so try every split.
    return any("%s %s" % (table[:at], table[at + 1:]) in heads
               for at, char in enumerate(table) if char == ".")


def toc_problems(listing: str, expected_tables: Iterable[str]) -> List[str]:
    """Tables of the manifest that have no TABLE DATA entry in the archive's table of contents."""
    heads = _toc_heads(toc_data_entries(listing))
    missing = sorted(t for t in expected_tables if not _toc_has(heads, t))
    return ["%s: no TABLE DATA entry in the archive" % t for t in missing]


_TOC_BLOBS_RE = re.compile(r"^\d+;\s*\d+\s+\d+\s+(BLOBS|BLOB METADATA|BLOB|LARGE OBJECTS?)\b", re.MULTILINE)


def toc_large_object_problems(listing: str, expected: Optional[int]) -> List[str]:
    """A manifest that counted large objects needs their entries in the table of contents."""
    if not expected or _TOC_BLOBS_RE.search(listing):
        return []
    return ["%d large object(s) counted but the archive has no large object entries" % expected]


def qualified(schema: str, table: str) -> str:
    return "%s.%s" % (schema, table)


def split_qualified(name: str) -> Tuple[str, str]:
    schema, _dot, table = name.partition(".")
    return schema, table


# ---------------------------------------------------------------- restore: rows, settings, names

def row_differences(replaced: Dict[str, int], restored: Dict[str, int]) -> Dict[str, Dict[str, Optional[int]]]:
    """Tables whose row count differs between the database a restore replaced and the restored
    one (``None``: the table exists on one side only)."""
    differences = {}
    for table in sorted(set(replaced) | set(restored)):
        before, after = replaced.get(table), restored.get(table)
        if before != after:
            differences[table] = {"replaced": before, "restored": after,
                                  "difference": (after or 0) - (before or 0)}
    return differences


def rows_lost(differences: Dict[str, Dict[str, Optional[int]]]) -> Dict[str, int]:
    """Per table, how many more rows the replaced database held than the restored one."""
    lost = {}
    for table, diff in differences.items():
        missing = (diff["replaced"] or 0) - (diff["restored"] or 0)
        if missing > 0:
            lost[table] = missing
    return lost


def describe_objects(found: Dict[str, Tuple[int, List[str]]]) -> str:
    """``{"function": (2, ["public.f", "public.g"])}`` -> ``2 function(s) (public.f, public.g)``."""
    parts = []
    for kind in sorted(found):
        count, examples = found[kind]
        text = "%d %s(s)" % (count, kind)
        if examples:
            more = ", ..." if count > len(examples) else ""
            text += " (%s%s)" % (", ".join(examples), more)
        parts.append(text)
    return ", ".join(parts)


# Settings whose value is a list of quoted names (pg_dump's variable_is_guc_list_quote).
GUC_LIST_QUOTE = frozenset(("local_preload_libraries", "search_path", "session_preload_libraries",
                            "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"))


def split_setting(entry: str) -> Tuple[str, List[str]]:
    """One ``name=value`` of ``pg_db_role_setting.setconfig`` -> (name, values to quote as literals).

    List settings such as ``search_path=app, "my schema"`` are stored flattened and must be
    set again element by element, as pg_dump does; other values are one literal."""
    name, sep, value = entry.partition("=")
    if not sep or not name:
        raise BackupError("cannot read the database setting %r" % entry)
    if name.lower() not in GUC_LIST_QUOTE:
        return name, [value]
    return name, split_guc_list(value)


def split_guc_list(value: str) -> List[str]:
    """PostgreSQL's SplitGUCList: comma-separated names, double quotes keep case and commas."""
    items, pos, length = [], 0, len(value)
    while True:
        while pos < length and value[pos].isspace():
            pos += 1
        if pos < length and value[pos] == '"':
            pos += 1
            item = []
            while pos < length:
                if value[pos] == '"':
                    if pos + 1 < length and value[pos + 1] == '"':
                        item.append('"')
                        pos += 2
                        continue
                    pos += 1
                    break
                item.append(value[pos])
                pos += 1
            items.append("".join(item))
        else:
            start = pos
            while pos < length and value[pos] != "," and not value[pos].isspace():
                pos += 1
            items.append(value[start:pos])
        while pos < length and value[pos].isspace():
            pos += 1
        if pos >= length:
            return items
        if value[pos] != ",":
            raise BackupError("cannot read the list setting value %r" % value)
        pos += 1


def plain_name(base: str) -> str:
    """Lower-case ASCII letters, digits and ``_`` only: safe in any tool's argv and easy to type."""
    return re.sub(r"[^a-z0-9_]+", "_", base.lower()).strip("_") or "db"


def derived_db_name(base: str, suffix: str) -> str:
    """``<plain base><suffix>`` within PostgreSQL's 63 bytes (the suffix always survives)."""
    return plain_name(base)[:63 - len(suffix)] + suffix


def replaced_name(base: str, when: datetime.datetime, taken: Iterable[str] = ()) -> str:
    """Where a restore keeps the database it replaced: ``<db>_replaced_<UTC stamp>``."""
    stamp = when.astimezone(datetime.timezone.utc).strftime(_STAMP_FORMAT).lower()
    taken = set(taken)
    name = derived_db_name(base, "_replaced_" + stamp)
    counter = 0
    while name in taken:
        counter += 1
        name = derived_db_name(base, "_replaced_%s_%d" % (stamp, counter))
    return name


# ---------------------------------------------------------------- owner records of scratch work

# Scratch databases, staging folders and databases set aside carry a record of the run that made
# them, so a later run can tell leftovers of a dead run from work still in progress.
RECORD_PREFIX = "dbops.migrations.pg_backup "
STAGING_OWNER_FILE = "owner.json"


def this_process() -> Dict[str, Any]:
    """Who is running: host, boot, pid and the pid's start time (a reused pid has another)."""
    import socket
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "pid_start": process_start(pid),
            "started_at": utc_now().isoformat()}


def owner_record(kind: str, owner: Dict[str, Any], **fields: Any) -> str:
    return record_text(dict(owner, kind=kind, **fields))


def record_text(record: Dict[str, Any]) -> str:
    return RECORD_PREFIX + json.dumps(record, sort_keys=True)


def parse_owner_record(text: Optional[str]) -> Optional[Dict[str, Any]]:
    if not text or not text.startswith(RECORD_PREFIX):
        return None
    try:
        record = json.loads(text[len(RECORD_PREFIX):])
    except ValueError:
        return None
    return record if isinstance(record, dict) and "kind" in record else None


def owner_gone(record: Dict[str, Any], here: Dict[str, Any]) -> Optional[bool]:
    """True when the run that wrote ``record`` is certainly dead, False when it still runs,
    None when that cannot be told from here (another host)."""
    if record.get("host") != here.get("host"):
        return None
    if record.get("boot_id") and here.get("boot_id") and record["boot_id"] != here["boot_id"]:
        return True  # the host restarted since
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    start = process_start(pid)
    if start is None:
        return True
    return bool(record.get("pid_start")) and start != record["pid_start"]


def process_start(pid: int) -> Optional[str]:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "unknown"
    fields = text[text.rindex(")") + 2:].split()
    return fields[19] if len(fields) > 19 else "unknown"


def _boot_id() -> Optional[str]:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None
