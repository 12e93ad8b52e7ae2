"""pg_backup against a real PostgreSQL: roundtrips, verification, restore guards, retention, check mode."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import tempfile
import uuid

import pytest

from tests.helpers import postgres as pgh
from tests.helpers.ansible import run_module

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE SCHEMA audit;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, note text);
CREATE TABLE products (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sku text NOT NULL,
                       price numeric(12,2) NOT NULL, blob bytea);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id integer NOT NULL REFERENCES customers(id),
                     created_at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00', status text);
CREATE TABLE order_items (order_id bigint REFERENCES orders(id) ON DELETE CASCADE,
                          product_id integer REFERENCES products(id), quantity integer NOT NULL,
                          PRIMARY KEY (order_id, product_id));
CREATE TABLE audit.events (id bigint PRIMARY KEY, payload jsonb);
CREATE SEQUENCE invoice_numbers START 1000;
CREATE VIEW customer_totals AS
  SELECT c.id, c.name, count(o.id) AS orders FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.name;
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('0003');
INSERT INTO customers (name, email, note)
  SELECT 'customer ' || g, 'c' || g || '@example.test', CASE WHEN g % 7 = 0 THEN NULL ELSE 'zürich ✓ ' || g END
  FROM generate_series(1, 400) g;
INSERT INTO products (sku, price, blob) SELECT 'SKU-' || g, g * 1.25, decode(md5(g::text), 'hex') FROM generate_series(1, 50) g;
INSERT INTO orders (customer_id, status) SELECT 1 + g % 400, (ARRAY['new','paid','sent'])[1 + g % 3] FROM generate_series(1, 2000) g;
INSERT INTO order_items SELECT o.id, 1 + (o.id % 50), 1 + o.id % 5 FROM orders o;
INSERT INTO order_items SELECT o.id, 1 + ((o.id + 7) % 50), 2 FROM orders o WHERE o.id % 3 = 0;
INSERT INTO audit.events SELECT g, jsonb_build_object('n', g, 'tag', 'e' || g) FROM generate_series(1, 300) g;
SELECT setval('invoice_numbers', 1234);
"""
TABLES = ["audit.events", "public.alembic_version", "public.customers", "public.order_items",
          "public.orders", "public.products"]


def table_fingerprint(db) -> dict:
    """Row count and a content checksum per table, plus sequence positions."""
    result = {}
    for name in TABLES:
        schema, table = name.split(".")
        count, digest = db.execute(
            f'SELECT count(*), md5(coalesce(string_agg(t::text, E\'\\n\' ORDER BY t::text), \'\')) FROM "{schema}"."{table}" t')[0]
        result[name] = (count, digest)
    for seq in ("invoice_numbers", "customers_id_seq", "orders_id_seq"):
        result["seq:" + seq] = db.scalar(f"SELECT last_value FROM {seq}")
    result["view"] = db.scalar("SELECT sum(orders) FROM customer_totals")
    return result


class Other:
    """Another database on the same server, by name (for restore targets)."""

    def __init__(self, server, name):
        self.server, self.name = server, name

    def execute(self, sql, params=None):
        with self.server.connect(self.name) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def scalar(self, sql, params=None):
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None


@pytest.fixture
def shop_db(pg_db):
    pg_db.execute(SCHEMA)
    return pg_db


@pytest.fixture
def target_name(pg_server):
    name = "restore_" + uuid.uuid4().hex[:10]
    yield name
    for db in databases(pg_server):
        if db == name or db.startswith(name + "_replaced_"):
            pgh.drop_database(pg_server, db)


def databases(server) -> set:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return {r[0] for r in cur.fetchall()}


def backup(db, dest, **extra):
    args = dict(db.login_args(), dest=str(dest), **pgh.client_options(db.server))
    args.update(extra)
    return run_module("pg_backup", args, diff=True)


def restore(db, src, target, **extra):
    args = dict(db.login_args(), state="restored", src=str(src), target_db=target, **pgh.client_options(db.server))
    args.update(extra)
    return run_module("pg_backup", args, diff=True)


@pytest.mark.parametrize("fmt,extra", [
    ("custom", {}),
    ("directory", {"jobs": 2}),
    ("plain", {}),
])
def test_roundtrip_equal_content(shop_db, pg_server, tmp_path, target_name, fmt, extra):
    dest = tmp_path / "backups"
    before = table_fingerprint(shop_db)
    run = backup(shop_db, dest, format=fmt, verify="restore", **extra)
    assert not run.result.get('failed'), run.output
    res = run.result
    assert res["changed"] and res["verified"] is True
    path = res["path"]
    assert os.path.basename(path).startswith(shop_db.name + "_")
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == (0o700 if fmt == "directory" else 0o600)
    assert stat.S_IMODE(os.stat(res["manifest_path"]).st_mode) == 0o600
    manifest = json.loads(open(res["manifest_path"]).read())
    assert manifest == res["manifest"]
    assert manifest["format"] == fmt
    assert manifest["alembic_revision"] == "0003"
    assert manifest["server_version"].startswith("%d." % (pg_server.version_num // 10000))
    assert manifest["snapshot_consistent"] is True
    assert manifest["tables"] == {name: before[name][0] for name in TABLES}
    assert manifest["sha256"] == res["sha256"] and manifest["size_bytes"] == res["size_bytes"] > 0
    assert manifest["tools"]["pg_dump"].startswith("pg_dump (PostgreSQL)")
    assert manifest["verification"]["checks"][-1] == "restore"
    assert pgh.TEST_PASSWORD not in json.dumps(res) + open(res["manifest_path"]).read()
    assert not any(n.startswith(".pg_backup-") for n in os.listdir(dest)), "staging folder left behind"
    assert not [d for d in databases(pg_server) if "_verify_" in d], "scratch database left behind"

    run = restore(shop_db, res["manifest_path"], target_name, jobs=2)
    assert not run.result.get('failed'), run.output
    assert run.result["changed"] and run.result["verified"]
    assert table_fingerprint(Other(pg_server, target_name)) == before


def test_check_mode_writes_nothing(shop_db, tmp_path):
    dest = tmp_path / "new-folder"
    args = dict(shop_db.login_args(), dest=str(dest), verify="restore", **pgh.client_options(shop_db.server))
    run = run_module("pg_backup", args, check=True, diff=True)
    assert not run.result.get('failed'), run.output
    assert run.result["changed"] is True
    assert run.result["path"].startswith(str(dest) + "/")
    assert run.result["diff"]["after"]["path"] == run.result["path"]
    assert not dest.exists()


def test_every_run_is_a_new_backup(shop_db, tmp_path):
    first = backup(shop_db, tmp_path, verify="none")
    second = backup(shop_db, tmp_path, verify="none")
    assert not first.result.get('failed') and not second.result.get('failed'), first.output + second.output
    assert first.result["path"] != second.result["path"]
    assert first.result["sha256"] and second.result["verified"] is False
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".manifest.json")]) == 2


def test_manifest_counts_match_the_dumps_snapshot(shop_db, tmp_path, target_name, pg_server):
    """Counts come from the dump's own snapshot, so a restore matches them exactly."""
    run = backup(shop_db, tmp_path, verify="list")
    assert not run.result.get('failed'), run.output
    shop_db.execute("INSERT INTO audit.events SELECT g, '{}' FROM generate_series(1001, 1010) g")
    run2 = restore(shop_db, run.result["path"], target_name)
    assert not run2.result.get('failed'), run2.output
    assert run2.result["restored_tables"]["audit.events"] == run.result["manifest"]["tables"]["audit.events"] == 300


def test_restore_refuses_non_empty_target_then_force_replaces(shop_db, pg_server, tmp_path, target_name):
    made = backup(shop_db, tmp_path, verify="none")
    assert not made.result.get('failed'), made.output
    pgh.create_database(pg_server, target_name)
    other = Other(pg_server, target_name)
    other.execute("CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")

    check = run_module("pg_backup", dict(shop_db.login_args(), state="restored", src=made.result["path"],
                                         target_db=target_name, **pgh.client_options(pg_server)), check=True)
    assert check.result.get('failed') and "not empty" in check.result["msg"]
    refused = restore(shop_db, made.result["path"], target_name)
    assert refused.result.get('failed')
    assert "not empty" in refused.result["msg"] and "force" in refused.result["msg"]
    assert other.scalar("SELECT count(*) FROM precious") == 1

    forced = restore(shop_db, made.result["manifest_path"], target_name, force=True)
    assert not forced.result.get('failed'), forced.output
    assert forced.result["diff"]["before"]["relations"] == 1  # the table precious
    assert other.scalar("SELECT to_regclass('precious')") is None
    assert table_fingerprint(other) == table_fingerprint(shop_db)

    # the restored database is not empty either: a second restore needs force again
    again = restore(shop_db, made.result["manifest_path"], target_name)
    assert again.result.get('failed') and "not empty" in again.result["msg"], again.output


def test_restore_check_mode_creates_nothing(shop_db, pg_server, tmp_path, target_name):
    made = backup(shop_db, tmp_path, verify="none")
    run = run_module("pg_backup", dict(shop_db.login_args(), state="restored", src=made.result["path"],
                                       target_db=target_name, **pgh.client_options(pg_server)), check=True, diff=True)
    assert not run.result.get('failed') and run.result["changed"] is True, run.output
    assert target_name not in databases(pg_server)


def test_verify_catches_a_corrupted_file(shop_db, tmp_path, target_name, pg_server):
    made = backup(shop_db, tmp_path, verify="list", format="custom")
    assert not made.result.get('failed'), made.output
    path = made.result["path"]
    ok = run_module("pg_backup", dict(shop_db.login_args(), state="verified", src=path, verify="restore",
                                      **pgh.client_options(pg_server)))
    assert not ok.result.get('failed') and ok.result["verified"] is True and ok.result["changed"] is False, ok.output
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    bad = run_module("pg_backup", dict(shop_db.login_args(), state="verified", src=made.result["manifest_path"],
                                       **pgh.client_options(pg_server)))
    assert bad.result.get('failed') and "checksum mismatch" in bad.result["msg"]
    refused = restore(shop_db, path, target_name)
    assert refused.result.get('failed') and "checksum mismatch" in refused.result["msg"]
    assert target_name not in databases(pg_server)


def _fake_backup(folder, db, stamp, file_db=None):
    """A backup as retention sees it: a dump and a manifest naming its database."""
    name = f"{file_db or db}_{stamp}.dump"
    (folder / name).write_bytes(b"PGDMP fake")
    (folder / (name + ".manifest.json")).write_text(json.dumps({"file": name, "sha256": "0" * 64, "database": db}))
    return name


def test_retention_keeps_exactly_keep_and_never_the_new_one(shop_db, tmp_path):
    old = [_fake_backup(tmp_path, shop_db.name, f"2020010{i}T000000Z") for i in range(1, 5)]
    foreign = _fake_backup(tmp_path, "otherdb", "20200101T000000Z")
    run = backup(shop_db, tmp_path, verify="none", keep=2, format="custom")
    assert not run.result.get('failed'), run.output
    new = os.path.basename(run.result["path"])
    mine = sorted(n for n in os.listdir(tmp_path) if n.startswith(shop_db.name) and n.endswith(".dump"))
    assert mine == [old[-1], new]
    assert sorted(os.path.basename(p) for p in run.result["removed"]) == old[:3]
    assert (tmp_path / foreign).exists()
    assert not (tmp_path / (old[0] + ".manifest.json")).exists()

    # keep 1 keeps the newest: the backup just made
    run = backup(shop_db, tmp_path, verify="none", keep=1, format="custom")
    newest = os.path.basename(run.result["path"])
    mine = sorted(n for n in os.listdir(tmp_path) if n.startswith(shop_db.name) and n.endswith(".dump"))
    assert mine == [newest]


def test_absent_prunes_with_check_mode_and_idempotency(tmp_path):
    names = [_fake_backup(tmp_path, "app", f"2021020{i}T010000Z") for i in range(1, 6)]
    args = {"state": "absent", "dest": str(tmp_path), "login_db": "app", "keep": 3}
    check = run_module("pg_backup", args, check=True, diff=True)
    assert not check.result.get('failed') and check.result["changed"] is True, check.output
    assert len(check.result["removed"]) == 2 and all((tmp_path / n).exists() for n in names)
    real = run_module("pg_backup", args, diff=True)
    assert not real.result.get('failed') and real.result["changed"] is True
    assert sorted(os.listdir(tmp_path)) == sorted(n for name in names[2:] for n in (name, name + ".manifest.json"))
    again = run_module("pg_backup", args)
    assert not again.result.get('failed') and again.result["changed"] is False and again.result["removed"] == []
    zero = run_module("pg_backup", dict(args, keep=0))
    assert zero.result.get('failed') and "at least 1" in zero.result["msg"]
    assert len(os.listdir(tmp_path)) == 6


def test_run_as_other_os_user(shop_db, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("run_as switches users through runuser, which needs root")
    if pgh.host_client_cannot_dump(shop_db.server):
        pytest.skip("run_as runs the host's pg_dump: " + pgh.host_client_cannot_dump(shop_db.server))
    hidden = backup(shop_db, tmp_path / "b", run_as="postgres", verify="none")
    assert hidden.result.get("failed") and "cannot write into" in hidden.result["msg"]
    assert os.listdir(tmp_path / "b") == []
    base = tempfile.mkdtemp(prefix="dbops-runas-", dir="/tmp")
    os.chmod(base, 0o711)
    try:
        run = backup(shop_db, os.path.join(base, "b"), run_as="postgres", format="directory", jobs=2, verify="list")
        assert not run.result.get('failed'), run.output
        uid = pwd.getpwnam("postgres").pw_uid
        st = os.stat(run.result["path"])
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, 0o700)
        assert stat.S_IMODE(os.stat(os.path.join(base, "b")).st_mode) == 0o700
        for name in os.listdir(run.result["path"]):
            inner = os.stat(os.path.join(run.result["path"], name))
            assert (inner.st_uid, stat.S_IMODE(inner.st_mode)) == (uid, 0o600)
        assert os.stat(run.result["manifest_path"]).st_uid == uid
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_rows_are_counted_in_the_exported_snapshot(shop_db):
    """Rows committed after the snapshot was exported are not counted (and not dumped)."""
    from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import SnapshotCounter
    from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url
    holder = shop_db.connect(autocommit=False)
    try:
        holder.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with holder.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
        shop_db.execute("INSERT INTO audit.events SELECT g, '{}' FROM generate_series(5001, 5100) g")
        counter = SnapshotCounter(parse_db_url(shop_db.url), snapshot, ["audit.events", "public.customers"])
        counter.start()
        assert counter.result() == {"audit.events": 300, "public.customers": 400}
    finally:
        holder.rollback()
        holder.close()
    assert shop_db.scalar("SELECT count(*) FROM audit.events") == 400
