"""migration_risk against a real PostgreSQL: live facts change the verdict; Alembic projects; the module."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request
from tests.conftest import EXAMPLE_APP, DbHandle
from tests.helpers import postgres as pg
from tests.helpers.alembic_project import REVISION_HEADER, write_alembic_project
from tests.helpers.ansible import run_module
from tests.helpers.postgres import TEST_PASSWORD

pytestmark = pytest.mark.integration

ALEMBIC = str(Path(sys.executable).parent / "alembic")


def risk_of(pg_db, sql, **kw):
    return run_request(RiskRequest(sql=sql, connection_params={"db_url": pg_db.url}, **kw))


def finding(result, rule):
    found = [f for f in result["findings"] if f["rule"] == rule]
    assert found, [(f["rule"], f["risk"]) for f in result["findings"]]
    return found[0]


@pytest.fixture(scope="module")
def sized_tables(pg_server):
    """tiny: 10 rows; big: about 1.1 M rows (analysed, so pg_class has the estimates). Shared, read-only."""
    name = "t_sized_" + uuid.uuid4().hex[:8]
    pg.create_database(pg_server, name)
    pg_db = DbHandle(pg_server, name)
    pg_db.execute("CREATE TABLE tiny (id int PRIMARY KEY, name varchar(50), qty int, email text)")
    pg_db.execute("INSERT INTO tiny SELECT g, 'n' || g, g, 'e' FROM generate_series(1, 10) g")
    pg_db.execute("CREATE TABLE big (id int PRIMARY KEY, name varchar(50), qty int, email text)")
    pg_db.execute("INSERT INTO big SELECT g, 'n' || g, g, 'e' FROM generate_series(1, 1100000) g")
    pg_db.execute("ANALYZE tiny; ANALYZE big")
    yield pg_db
    pg.drop_database(pg_server, name)


def test_index_on_small_table_is_low_and_on_big_table_high(sized_tables):
    small = risk_of(sized_tables, "CREATE INDEX ix_t ON tiny (qty)")
    big = risk_of(sized_tables, "CREATE INDEX ix_b ON big (qty)")
    assert small["risk"] == "low"
    assert finding(small, "create-index")["rows_estimate"] == 10
    assert big["risk"] == "high"
    assert finding(big, "create-index")["rows_estimate"] > 1000000
    assert big["checklist"]["estimated_lock_seconds"] > 0
    # Without the database the table is assumed large (high) and has no row estimate.
    offline = run_request(RiskRequest(sql="CREATE INDEX ix_b ON big (qty)"))
    assert offline["risk"] == "high"
    assert offline["findings"][0]["rows_estimate"] is None
    assert offline["checklist"]["estimated_lock_seconds"] is None


def test_binary_coercible_type_change_is_low_with_facts(sized_tables):
    widen = risk_of(sized_tables, "ALTER TABLE big ALTER COLUMN name TYPE varchar(100)")
    to_text = risk_of(sized_tables, "ALTER TABLE big ALTER COLUMN name TYPE text")
    narrow = risk_of(sized_tables, "ALTER TABLE big ALTER COLUMN name TYPE varchar(20)")
    int8 = risk_of(sized_tables, "ALTER TABLE big ALTER COLUMN qty TYPE bigint")
    assert widen["risk"] == "low" and finding(widen, "alter-column-type-coercible")
    assert to_text["risk"] == "low"
    assert narrow["risk"] == "critical"
    assert int8["risk"] == "critical" and finding(int8, "alter-column-type")["rewrites_table"] is True
    assert risk_of(sized_tables, "ALTER TABLE tiny ALTER COLUMN qty TYPE bigint")["risk"] == "medium"


def test_set_not_null_proven_by_validated_check(sized_tables):
    assert risk_of(sized_tables, "ALTER TABLE big ALTER COLUMN email SET NOT NULL")["risk"] == "critical"
    sized_tables.execute("ALTER TABLE big ADD CONSTRAINT big_email_nn CHECK (email IS NOT NULL)")
    try:
        proven = risk_of(sized_tables, "ALTER TABLE big ALTER COLUMN email SET NOT NULL", server_version=11)
    finally:
        sized_tables.execute("ALTER TABLE big DROP CONSTRAINT big_email_nn")
    assert proven["risk"] == "low"
    assert finding(proven, "set-not-null-proven")
    # PostgreSQL 11 rules would still scan, but the live server version (12 or newer) wins over server_version.
    assert proven["server_version"] == sized_tables.server.version_num // 10000


def test_detach_partition_concurrently_is_judged_by_the_live_server(pg_db):
    """DETACH PARTITION ... CONCURRENTLY exists from PostgreSQL 14: the verdict follows the server the
    migration will meet, whatever server_version says, and the server agrees."""
    pg_db.execute("CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);"
                  "CREATE TABLE events_2020 PARTITION OF events FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')")
    statement = "ALTER TABLE events DETACH PARTITION events_2020 CONCURRENTLY"
    live = pg_db.server.version_num // 10000
    result = risk_of(pg_db, statement, server_version=13 if live >= 14 else 15)
    assert result["server_version"] == live
    with contextlib.closing(pg_db.connect()) as conn, conn.cursor() as cur:  # outside a transaction block
        if live >= 14:
            assert result["risk"] == "low" and finding(result, "detach-partition-concurrently")["blocks"] == "none"
            cur.execute(statement)
            cur.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass")
            assert cur.fetchone()[0] == 0
        else:
            assert result["risk"] == "high" and finding(result, "detach-partition-concurrently-unsupported")
            with pytest.raises(psycopg2.errors.SyntaxError):
                cur.execute(statement)


def test_data_change_on_small_table_is_medium(sized_tables):
    assert risk_of(sized_tables, "UPDATE tiny SET qty = qty + 1")["risk"] == "medium"
    result = risk_of(sized_tables, "UPDATE big SET qty = qty + 1")
    assert result["risk"] == "critical"
    assert result["checklist"]["large_data"] and "rows" in result["checklist"]["large_data"][0]


def test_drop_index_names_its_table_from_facts(sized_tables):
    sized_tables.execute("CREATE INDEX IF NOT EXISTS ix_tiny_qty ON tiny (qty)")
    result = risk_of(sized_tables, "DROP INDEX ix_tiny_qty")
    assert finding(result, "drop-index")["table"] == "tiny"
    result = risk_of(sized_tables, "DROP INDEX big_pkey")
    assert finding(result, "drop-index")["table"] == "big"


def _alembic(pg_db, *args):
    env = dict(os.environ, DATABASE_URL=pg_db.url)
    proc = subprocess.run([ALEMBIC, "-c", str(EXAMPLE_APP / "alembic.ini"), *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not (EXAMPLE_APP / "alembic.ini").exists(), reason="example app not present")
def test_example_app_pending_revisions_from_the_database_revision(pg_db):
    _alembic(pg_db, "upgrade", "0002")
    result = run_request(RiskRequest(alembic_config=str(EXAMPLE_APP / "alembic.ini"),
                                     connection_params={"db_url": pg_db.url}))
    verdicts = {r["revision"]: r["risk"] for r in result["revisions"]}
    assert list(verdicts) == ["0003", "0004", "0005"]
    # Live facts: the tables are empty, so the index and the type change are cheap; the drop is not.
    assert verdicts["0003"] == "low"
    assert verdicts["0004"] == "medium"
    assert verdicts["0005"] == "critical"
    assert result["checklist"]["drops"] == ["DROP COLUMN users.legacy_status in revision 0005"]
    assert all(r["has_downgrade"] for r in result["revisions"])
    assert all(f["rows_estimate"] is not None for f in result["findings"] if f["table"] in ("orders", "users"))
    assert not any(f["table"] == "alembic_version" for f in result["findings"])


@pytest.mark.skipif(not (EXAMPLE_APP / "alembic.ini").exists(), reason="example app not present")
def test_example_app_without_database_uses_guide_levels():
    result = run_request(RiskRequest(alembic_config=str(EXAMPLE_APP / "alembic.ini")))
    verdicts = {r["revision"]: r["risk"] for r in result["revisions"]}
    # Unknown tables are assumed large: the plain CREATE INDEX of 0003 takes the high path.
    assert verdicts == {"0001": "low", "0002": "low", "0003": "high", "0004": "high", "0005": "critical"}
    assert result["risk"] == "critical" and result["recommended_path"] == "manual" and result["backup"] == "required"
    assert {f["revision"] for f in result["findings"] if f["rule"] == "update-all-rows"} == {"0005"}


def test_alembic_project_with_live_tables_and_same_run_creation(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance numeric(12,2))")
    pg_db.execute("INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 50) g")
    pg_db.execute("ANALYZE accounts")
    ini = write_alembic_project(tmp_path, {
        "a1_create.py": REVISION_HEADER + textwrap.dedent('''
            revision = "a1"
            down_revision = None
            def upgrade():
                op.create_table("ledger", sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.Integer))
            def downgrade():
                op.drop_table("ledger")
            '''),
        "a2_index.py": REVISION_HEADER + textwrap.dedent('''
            revision = "a2"
            down_revision = "a1"
            def upgrade():
                op.create_index("ix_ledger_v", "ledger", ["v"])
                op.alter_column("accounts", "balance", type_=sa.Numeric(14, 2))
            def downgrade():
                raise NotImplementedError()
            '''),
    })
    result = run_request(RiskRequest(alembic_config=str(ini), connection_params={"db_url": pg_db.url}))
    verdicts = {r["revision"]: (r["risk"], r["has_downgrade"]) for r in result["revisions"]}
    # ledger is created by a1 in the same run; numeric(12,2) -> numeric(14,2) needs no rewrite.
    assert verdicts == {"a1": ("low", True), "a2": ("low", False)}
    assert "alter-column-type-coercible" in [f["rule"] for f in result["findings"]]
    assert result["checklist"]["rollback_plan"] is False
    assert any("a2" in note and "raises" in note for note in result["checklist"]["rollback_notes"])


def test_module_end_to_end_with_login_options_keeps_the_password_out(pg_db):
    pg_db.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
    args = dict(pg_db.login_args(), sql="ALTER TABLE users DROP COLUMN name;\nALTER TABLE users ADD COLUMN x int;")
    run = run_module("migration_risk", args, check=True)
    assert run.rc == 0, run.output
    result = run.result
    assert result["changed"] is False
    assert result["risk"] == "critical"
    assert {"risk", "recommended_path", "backup", "findings", "revisions", "checklist", "report"} <= set(result)
    pinned = {"revision", "statement", "operation", "rule", "risk", "lock", "blocks", "rewrites_table", "table",
              "rows_estimate", "message", "safe_alternative"}
    assert all(set(f) == pinned for f in result["findings"])
    assert set(result["checklist"]) >= {"drops", "large_data", "estimated_lock_seconds", "rollback_plan"}
    assert result["sarif"]["version"] == "2.1.0"
    assert "# Migration risk: CRITICAL" in result["report"]
    assert TEST_PASSWORD not in run.output and TEST_PASSWORD not in str(result)


@pytest.mark.skipif(not (EXAMPLE_APP / "alembic.ini").exists(), reason="example app not present")
def test_example_app_at_head_has_nothing_pending(pg_db):
    _alembic(pg_db, "upgrade", "head")
    result = run_request(RiskRequest(alembic_config=str(EXAMPLE_APP / "alembic.ini"),
                                     connection_params={"db_url": pg_db.url}))
    assert result["risk"] == "low" and result["revisions"] == [] and result["findings"] == []
    assert result["checklist"]["rollback_plan"] is True and result["checklist"]["drops"] == []
