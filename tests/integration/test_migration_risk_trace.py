"""trace=true: the migration runs on a throw-away schema copy; locks and rewrites confirm the static verdict."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request
from tests.conftest import EXAMPLE_APP, DbHandle
from tests.helpers import postgres as pgh
from tests.helpers.ansible import run_module
from tests.helpers.postgres import TEST_PASSWORD

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_db(pg_db):
    """The trace copies the schema with the host's pg_dump, which refuses servers newer than itself."""
    reason = pgh.host_client_cannot_dump(pg_db.server)
    if reason:
        pytest.skip("the trace runs the host's pg_dump: " + reason)
    return pg_db


def _scratch_databases(pg_db):
    return [row[0] for row in pg_db.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbops_trace_%'")]


def test_trace_confirms_locks_and_rewrites_and_leaves_nothing_behind(pg_db):
    pg_db.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
    pg_db.execute("CREATE TABLE orders (id int PRIMARY KEY, user_id int, qty int, note varchar(20))")
    pg_db.execute("INSERT INTO orders VALUES (1, 1, 1, 'x')")
    sql = ("CREATE INDEX ix_orders_user ON orders (user_id);\n"
           "CREATE INDEX CONCURRENTLY ix_orders_note ON orders (note);\n"
           "ALTER TABLE orders ADD CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id);\n"
           "ALTER TABLE orders ALTER COLUMN qty TYPE bigint;\n"
           "ALTER TABLE orders ALTER COLUMN note TYPE varchar(40);\n"
           "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();\n")
    result = run_request(RiskRequest(sql=sql, connection_params={"db_url": pg_db.url}, trace=True))
    trace = result["trace"]
    by_statement = {item["statement"]: item for item in trace["statements"]}
    qty = by_statement["ALTER TABLE orders ALTER COLUMN qty TYPE bigint"]
    assert {"table": "orders", "mode": "ACCESS EXCLUSIVE"} in qty["locks"] and qty["rewrote"] == ["orders"]
    assert by_statement["ALTER TABLE orders ALTER COLUMN note TYPE varchar(40)"]["rewrote"] == []
    index = by_statement["CREATE INDEX ix_orders_user ON orders (user_id)"]
    assert {"table": "orders", "mode": "SHARE"} in index["locks"]
    fk = by_statement["ALTER TABLE orders ADD CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id)"]
    assert {"table": "users", "mode": "SHARE ROW EXCLUSIVE"} in fk["locks"]
    assert by_statement["ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()"]["rewrote"] == ["users"]
    assert any("CONCURRENTLY" in item for item in trace["not_traced"])
    assert trace["disagreements"] == []
    assert "## Lock trace" in result["report"]
    # Rolled back and dropped: the real database is untouched and no scratch copy remains.
    assert pg_db.scalar("SELECT data_type FROM information_schema.columns "
                        "WHERE table_name = 'orders' AND column_name = 'qty'") == "integer"
    assert pg_db.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_orders_user'") == 0
    assert _scratch_databases(pg_db) == []


def test_trace_reports_where_it_disagrees_with_static_analysis(pg_db):
    # With TimeZone UTC, PostgreSQL 12+ changes timestamp -> timestamptz without a rewrite; the catalogue
    # conservatively predicts one. The trace says so.
    pg_db.execute("CREATE TABLE events (id int PRIMARY KEY, at timestamp)")
    sql = "SET timezone = 'UTC';\nALTER TABLE events ALTER COLUMN at TYPE timestamptz;\n"
    result = run_request(RiskRequest(sql=sql, connection_params={"db_url": pg_db.url}, trace=True))
    disagreements = result["trace"]["disagreements"]
    assert len(disagreements) == 1 and "no rewrite" in disagreements[0] and "events" in disagreements[0]
    assert "Trace and static analysis disagree" in result["report"]


@pytest.mark.skipif(not (EXAMPLE_APP / "alembic.ini").exists(), reason="example app not present")
def test_module_trace_on_example_app_pending_revisions(pg_db):
    env = dict(os.environ, DATABASE_URL=pg_db.url)
    proc = subprocess.run([str(Path(sys.executable).parent / "alembic"), "-c", str(EXAMPLE_APP / "alembic.ini"),
                           "upgrade", "0003"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run = run_module("migration_risk", dict(pg_db.login_args(), alembic_config=str(EXAMPLE_APP / "alembic.ini"),
                                            trace=True))
    assert run.rc == 0, run.output
    trace = run.result["trace"]
    revisions = {item["revision"] for item in trace["statements"]}
    assert revisions == {"0004", "0005"}
    drop = [i for i in trace["statements"] if "DROP COLUMN legacy_status" in i["statement"]][0]
    assert {"table": "users", "mode": "ACCESS EXCLUSIVE"} in drop["locks"]
    assert trace["disagreements"] == []
    assert pg_db.scalar("SELECT version_num FROM alembic_version") == "0003"
    assert _scratch_databases(pg_db) == []
    assert TEST_PASSWORD not in run.output


def test_trace_on_a_server_newer_than_pg_dump_names_the_client_it_needs(pg_server):
    reason = pgh.host_client_cannot_dump(pg_server)
    if not reason:
        pytest.skip("the host's pg_dump %d dumps this PostgreSQL %d server: the mismatch shows with a newer server "
                    "(DBOPS_TEST_PG_VERSION=17)" % (pgh.host_client_major(), pg_server.version_num // 10000))
    major = pg_server.version_num // 10000
    name = "t_newer_" + uuid.uuid4().hex[:8]
    pgh.create_database(pg_server, name)
    db = DbHandle(pg_server, name)
    try:
        db.execute("CREATE TABLE orders (id int PRIMARY KEY, qty int)")
        run = run_module("migration_risk", dict(db.login_args(), sql="ALTER TABLE orders ALTER COLUMN qty TYPE bigint",
                                                trace=True))
        assert run.result.get("failed"), run.output[-3000:]
        msg = run.result["msg"]
        assert "server version mismatch" in msg and "postgresql-client-%d" % major in msg, msg
        assert "trace_bin_dir" in msg and "/usr/lib/postgresql/%d/bin" % major in msg
        assert _scratch_databases(db) == []
        assert TEST_PASSWORD not in run.output
    finally:
        pgh.drop_database(pg_server, name)
