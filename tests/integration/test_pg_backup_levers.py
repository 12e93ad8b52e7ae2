"""Backups and restores at the host's pace: the default directory dump with one worker per core,
and restores in two pg_restore runs with the row counts overlapping the index builds. The data
must come back identical, and a restore that fails half-way must leave no half-restored target."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid

import pytest

from tests.helpers import postgres as pgh
from tests.helpers.ansible import run_module

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backup_archive
from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import Backup, Executor
from ansible_collections.dbops.migrations.plugins.module_utils.pg import ConnInfo

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE ROLE {reader};
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL UNIQUE, note text);
COMMENT ON TABLE accounts IS 'who trades';
GRANT SELECT ON accounts TO {reader};
CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id),
                     qty numeric(12, 2) CHECK (qty > 0), placed_at timestamptz NOT NULL);
CREATE INDEX orders_account ON orders (account_id, placed_at);
INSERT INTO accounts SELECT g, 'acct ' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE md5(g::text) END
FROM generate_series(1, 3000) g;
INSERT INTO orders SELECT g, 1 + g % 3000, 1 + g % 97, timestamptz '2025-01-01' + g * interval '1 minute'
FROM generate_series(1, 40000) g;
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON orders USING (true);
CREATE SEQUENCE invoice_no START 100; SELECT setval('invoice_no', 4242);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE qty > 50;
CREATE MATERIALIZED VIEW order_totals AS SELECT account_id, sum(qty) AS total FROM orders GROUP BY 1;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch();
SELECT lo_from_bytea(0, 'a large object');
"""


@pytest.fixture
def rich_db(pg_db, pg_server):
    reader = "reader_" + uuid.uuid4().hex[:8]
    pg_db.execute(SCHEMA.format(reader=reader))
    yield pg_db
    with contextlib.suppress(Exception), contextlib.closing(pg_server.connect()) as conn, conn.cursor() as cur:
        cur.execute("DROP OWNED BY %s" % reader)
    with contextlib.suppress(Exception), contextlib.closing(pg_server.connect()) as conn, conn.cursor() as cur:
        cur.execute("DROP ROLE %s" % reader)


def full_dump(server, dbname) -> str:
    """Schema, data, privileges and comments as plain SQL, without pg_dump's random restrict key; by the
    server container's own pg_dump when the host's is too old for the server."""
    if pgh.host_client_cannot_dump(server):
        argv = ["docker", "exec", "-e", "PGPASSWORD", server.container, "pg_dump", "--format=p", "-h", "localhost",
                "-U", server.user, dbname]
        env = dict(os.environ, PGPASSWORD=server.password)
    else:
        argv = [os.path.join(server.bin_dir, "pg_dump"), "--format=p"]
        env = dict(os.environ, **server.libpq_env(dbname))
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def engine(server, dbname, runner=None, **levers) -> Backup:
    def run(argv, env):
        proc = subprocess.run(argv, env=dict(os.environ, **env), capture_output=True, text=True)
        return proc.returncode, proc.stdout, proc.stderr
    info = ConnInfo(host=server.host, port=server.port, user=server.user, password=server.password, dbname=dbname)
    client = pgh.client_options(server) or {"bin_dir": server.bin_dir}  # the server's container when needed
    executor = Executor(runner=runner or run, which=shutil.which, **client)
    return Backup(info=info, executor=executor, **levers)


def names(server) -> set:
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return {row[0] for row in cur.fetchall()}


def test_the_default_backup_is_a_parallel_directory_archive_and_restores_identical(rich_db, pg_server, tmp_path):
    client = pgh.client_options(pg_server)
    made = run_module("pg_backup", dict(rich_db.login_args(), dest=str(tmp_path), **client))
    assert not made.result.get("failed"), made.output
    manifest = made.result["manifest"]
    assert made.result["path"].endswith(".dir") and manifest["format"] == "directory"
    assert manifest["jobs"] == backup_archive.auto_jobs(backup_archive.usable_cpus())
    if client:  # the server's container's pg_dump (Debian's, 16 or newer, built with zstd)
        assert manifest["compress_method"] == "zstd"
    else:
        assert manifest["compress_method"] == "gzip" and manifest["compress"] == 1  # the host's pg_dump 15
    assert made.result["verified"] and made.result["verification"]["checks"] == ["toc"]
    assert made.result["sha256"] == backup_archive.sha256_path(made.result["path"])[0]
    assert manifest["tables"] == {"public.accounts": 3000, "public.orders": 40000}

    target = "lev_" + uuid.uuid4().hex[:8]
    restored = run_module("pg_backup", dict(rich_db.login_args(), state="restored", src=made.result["manifest_path"],
                                            target_db=target, **client))
    try:
        assert not restored.result.get("failed"), restored.output
        assert restored.result["verified"] and restored.result["timings"]["count_overlapped"] is True
        assert restored.result["restored_tables"] == manifest["tables"]
        assert restored.result["restored_large_objects"] == 1
        assert full_dump(pg_server, target) == full_dump(pg_server, rich_db.name)
    finally:
        pgh.drop_database(pg_server, target)


@pytest.mark.parametrize("fmt", ["custom", "directory"])
@pytest.mark.parametrize("split", [True, False], ids=["split", "one-run"])
def test_restore_levers_yield_identical_data(rich_db, pg_server, tmp_path, fmt, split):
    backups = engine(pg_server, rich_db.name)
    made = backups.create(str(tmp_path), backup_archive.DumpOptions(fmt=fmt, jobs=None, compress=None), "list", None)
    target = "lev_" + uuid.uuid4().hex[:8]
    restorer = engine(pg_server, rich_db.name, cpus=2, restore_split=split)
    try:
        result = restorer.restore(made["manifest_path"], target, False, None, None, False)
        assert result["verified"] and result["restored_tables"] == made["manifest"]["tables"]
        assert result["timings"]["count_overlapped"] is split
        assert full_dump(pg_server, target) == full_dump(pg_server, rich_db.name)
    finally:
        pgh.drop_database(pg_server, target)


def test_a_restore_failing_while_building_indexes_leaves_no_target(rich_db, pg_server, tmp_path):
    """pg_restore dies in its second run (indexes, constraints), while the rows are being counted:
    the half-restored scratch database is dropped and the target never appears."""
    made = engine(pg_server, rich_db.name).create(str(tmp_path), backup_archive.DumpOptions(fmt="custom"), "list", None)
    before = names(pg_server)

    def failing(argv, env):
        if any(a == "--section=post-data" for a in argv):
            return 1, "", "pg_restore: error: could not execute query: server closed the connection unexpectedly"
        proc = subprocess.run(argv, env=dict(os.environ, **env), capture_output=True, text=True)
        return proc.returncode, proc.stdout, proc.stderr

    target = "lev_" + uuid.uuid4().hex[:8]
    with pytest.raises(backup_archive.BackupError, match="restore of .* failed"):
        engine(pg_server, rich_db.name, runner=failing).restore(made["manifest_path"], target, False, 2, None, False)
    assert names(pg_server) == before  # no target, no scratch database left behind


def test_verify_restore_uses_the_levers_and_drops_its_scratch(rich_db, pg_server, tmp_path):
    before = names(pg_server)
    made = engine(pg_server, rich_db.name, cpus=2).create(
        str(tmp_path), backup_archive.DumpOptions(fmt=None, jobs=None, compress=None), "restore", None)
    assert made["verified"] and "restore" in made["verification"]["checks"]
    assert made["verification"]["restored_rows"] == 43000 and made["verification"]["restored_large_objects"] == 1
    assert names(pg_server) == before
