"""pg_backup under faults and bad input: full or read-only destination, corrupted archives,
wrong credentials, missing database, an old client, a dump that does not restore; secrets."""
from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import uuid

import pytest

from tests.helpers import postgres as pgh
from tests.helpers.ansible import failure_message, run_module
from tests.helpers.secrets import ArgvWatcher, files_containing, find_secret

pytestmark = pytest.mark.integration

DATA = """
CREATE TABLE items (id serial PRIMARY KEY, body text);
INSERT INTO items (body) SELECT md5(g::text) || md5((g * 3)::text) FROM generate_series(1, 40000) g;
CREATE TABLE tags (item_id int REFERENCES items(id), tag text);
INSERT INTO tags SELECT g, 't' || g % 10 FROM generate_series(1, 500) g;
"""


@pytest.fixture
def data_db(pg_db):
    pg_db.execute(DATA)
    return pg_db


def databases(server) -> set:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return {r[0] for r in cur.fetchall()}


def backup(db, dest, **extra):
    return run_module("pg_backup", dict(db.login_args(), dest=str(dest), **extra))


@contextlib.contextmanager
def tmpfs(path, size="1m", options=""):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    opts = "size=%s,mode=0700%s" % (size, "," + options if options else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.fault("destination full (1 MiB tmpfs) during pg_dump", kind="fault",
                   holds="task fails saying the destination is full; no dump, manifest or staging folder left")
def test_destination_full(data_db, tmp_path):
    with tmpfs(tmp_path / "tiny", "1m") as dest:
        run = backup(data_db, dest, compress=0, verify="none")
        msg = failure_message(run)
        assert "is full" in msg and "nothing was kept" in msg
        assert os.listdir(dest) == []


@pytest.mark.fault("read-only destination", kind="fault",
                   holds="task fails before dumping, saying the filesystem is read-only; nothing written")
def test_read_only_destination(data_db, tmp_path):
    with tmpfs(tmp_path / "ro", "4m", "ro") as dest:
        msg = failure_message(backup(data_db, dest))
        assert "read-only" in msg
        assert os.listdir(dest) == []


@pytest.mark.fault("unwritable destination parent", kind="bad_input",
                   holds="task fails saying dest cannot be created; nothing written")
def test_unwritable_destination(data_db, tmp_path):
    if os.geteuid() == 0:
        blocked = tmp_path / "file-not-folder"
        blocked.write_text("x")
        msg = failure_message(backup(data_db, blocked / "sub"))
        reason = "Not a directory"
    else:
        blocked = tmp_path / "locked"
        blocked.mkdir(mode=0o500)
        msg = failure_message(backup(data_db, blocked / "sub"))
        reason = "Permission denied"
    assert "cannot create destination %s: %s; create it or choose another dest" % (blocked / "sub", reason) in msg, msg


def _corrupt_middle(path):
    with open(path, "r+b") as handle:
        size = os.path.getsize(path)
        handle.seek(size // 2)
        handle.write(b"\0" * 64)


@pytest.mark.fault("corrupted archive at verify", kind="fault",
                   holds="state=verified fails with a checksum mismatch naming the file; the file is left as it is")
def test_corrupted_archive_at_verify(data_db, tmp_path):
    # One archive file to corrupt: the custom format (a directory archive is a folder of files).
    made = backup(data_db, tmp_path, format="custom", verify="none")
    assert not made.result.get("failed"), made.output
    _corrupt_middle(made.result["path"])
    before = os.stat(made.result["path"]).st_mtime_ns
    msg = failure_message(run_module("pg_backup", dict(data_db.login_args(), state="verified", src=made.result["manifest_path"],
                                              verify="restore")))
    assert "checksum mismatch" in msg and made.result["path"] in msg
    assert os.stat(made.result["path"]).st_mtime_ns == before


@pytest.mark.fault("corrupted archive at restore (with and without its manifest)", kind="fault",
                   holds="restore fails; no target or scratch database is created; an existing target is untouched")
def test_corrupted_archive_at_restore(data_db, pg_server, tmp_path):
    made = backup(data_db, tmp_path, format="custom", verify="none", compress=0)
    assert not made.result.get("failed"), made.output
    path = made.result["path"]
    target = "restore_" + uuid.uuid4().hex[:8]
    _corrupt_middle(path)
    msg = failure_message(run_module("pg_backup", dict(data_db.login_args(), state="restored", src=path, target_db=target)))
    assert "checksum mismatch" in msg and "nothing was restored" in msg
    # without the manifest only pg_restore can notice: a truncated archive
    os.unlink(made.result["manifest_path"])
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 3)
    msg = failure_message(run_module("pg_backup", dict(data_db.login_args(), state="restored", src=path, target_db=target)))
    assert "restore of" in msg and "failed" in msg
    left = databases(pg_server)
    assert target not in left and not [d for d in left if d.startswith(target + "_restore_")]


@pytest.mark.fault("dump that pg_dump writes but PostgreSQL cannot restore", kind="fault",
                   holds="verify=list passes, verify=restore fails the task, leaves no dump and no scratch database")
def test_dump_that_does_not_restore(pg_db, pg_server, tmp_path):
    # A CHECK constraint whose function reads a table without a schema: restore runs with an
    # empty search_path, so COPY fails although pg_dump was happy.
    pg_db.execute("""
        CREATE TABLE limits (max_qty int);
        INSERT INTO limits VALUES (100);
        CREATE FUNCTION qty_ok(q int) RETURNS boolean LANGUAGE sql IMMUTABLE
            AS 'SELECT q <= (SELECT max_qty FROM limits)';
        CREATE TABLE orders (id int, qty int CHECK (qty_ok(qty)));
        INSERT INTO orders VALUES (1, 5);
    """)
    listed = backup(pg_db, tmp_path / "list", verify="list")
    assert not listed.result.get("failed") and listed.result["verified"], listed.output
    dest = tmp_path / "restore"
    msg = failure_message(backup(pg_db, dest, verify="restore"))
    assert "failed" in msg
    assert os.listdir(dest) == []
    assert not [d for d in databases(pg_server) if "_verify_" in d]


@pytest.mark.fault("wrong password", kind="bad_input",
                   holds="fails saying to check login_user/login_password; no password in the message; nothing written")
def test_wrong_credentials(data_db, tmp_path):
    wrong = "Wr0ng-Passw0rd-" + uuid.uuid4().hex[:6]
    args = dict(data_db.login_args(), login_password=wrong, dest=str(tmp_path / "b"))
    run = run_module("pg_backup", args)
    msg = failure_message(run)
    assert "password authentication failed" in msg and "login_password" in msg
    assert not find_secret(wrong, json.dumps(run.result), run.output)
    assert not (tmp_path / "b").exists()


@pytest.mark.fault("missing database", kind="bad_input",
                   holds="fails naming the database and what to check; nothing written")
def test_missing_database(pg_server, tmp_path):
    args = dict(pg_server.login_args("no_such_db_x"), dest=str(tmp_path / "b"))
    msg = failure_message(run_module("pg_backup", args))
    assert "no_such_db_x" in msg and "does not exist" in msg and "login_db" in msg
    assert not (tmp_path / "b").exists()


@pytest.mark.fault("pg_dump older than the server", kind="fault",
                   holds="fails before dumping, naming both versions and the fix (client package, bin_dir, container)")
def test_client_older_than_server(data_db, tmp_path):
    old_bin = tmp_path / "pg13"
    old_bin.mkdir()
    for tool in ("pg_dump", "pg_restore", "psql"):
        script = old_bin / tool
        script.write_text("#!/bin/sh\necho '%s (PostgreSQL) 13.4'\n" % tool)
        script.chmod(0o755)
    msg = failure_message(backup(data_db, tmp_path / "b", bin_dir=str(old_bin)))
    assert "pg_dump 13.4 is older than the server (PostgreSQL 15." in msg
    assert "postgresql-client-15" in msg and "bin_dir" in msg and "container" in msg
    assert not (tmp_path / "b").exists()  # the version gate runs before dest is created


@pytest.mark.fault("bad option combinations", kind="bad_input",
                   holds="jobs with custom format, compressed plain, keep 0 each fail with what to set instead")
def test_bad_options(data_db, tmp_path):
    assert "format: directory" in failure_message(backup(data_db, tmp_path, format="custom", jobs=2))
    assert "format: plain" in failure_message(backup(data_db, tmp_path, format="plain", compress=6))
    assert "at least 1" in failure_message(backup(data_db, tmp_path, keep=0))
    assert os.listdir(tmp_path) == []


@pytest.mark.fault("password in results, manifest, files, logs and argv", kind="secret",
                   holds="the password appears in no process argv, result, manifest, backup file or output")
def test_secret_never_leaks(data_db, tmp_path):
    dest = tmp_path / "b"
    with ArgvWatcher(pgh.TEST_PASSWORD) as watcher:
        made = backup(data_db, dest, verify="restore")
        target = "restore_" + uuid.uuid4().hex[:8]
        restored = run_module("pg_backup", dict(data_db.login_args(), state="restored",
                                                src=made.result["manifest_path"], target_db=target, jobs=2))
    pgh.drop_database(data_db.server, target)
    assert not made.result.get("failed") and not restored.result.get("failed"), made.output + restored.output
    assert watcher.samples > 10
    assert watcher.leaks == []
    assert not find_secret(pgh.TEST_PASSWORD, json.dumps(made.result), json.dumps(restored.result),
                           made.output, restored.output)
    assert files_containing(pgh.TEST_PASSWORD, str(dest)) == []


@pytest.mark.fault("permissions of backups and their folder", kind="secret",
                   holds="dump and manifest are 0600, a created dest is 0700 (not world-readable)")
def test_backup_permissions(data_db, tmp_path):
    old = os.umask(0o022)
    try:
        made = backup(data_db, tmp_path / "new" / "b", format="directory", jobs=2)
    finally:
        os.umask(old)
    assert not made.result.get("failed"), made.output
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "b").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(made.result["manifest_path"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(made.result["path"]).st_mode) == 0o700
    for name in os.listdir(made.result["path"]):
        assert stat.S_IMODE(os.stat(os.path.join(made.result["path"], name)).st_mode) == 0o600


@pytest.mark.fault("zstd compression asked of a PostgreSQL 15 pg_dump", kind="bad_input",
                   holds="fails before dumping, naming the client version and what to use instead; nothing written")
def test_zstd_needs_a_newer_client(data_db, tmp_path):
    dest = tmp_path / "b"
    msg = failure_message(backup(data_db, dest, compress_method="zstd", compress=3))
    assert "needs pg_dump 16 or newer" in msg and "compress_method: gzip" in msg
    assert not dest.exists()  # the client check runs before dest is created
    made = backup(data_db, dest, compress_method="none", verify="list")
    assert not made.result.get("failed"), made.output[-3000:]
    assert made.result["manifest"]["compress_method"] == "none"
