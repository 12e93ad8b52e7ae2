"""migration_risk reads keys and NOT VALID checks from a real PostgreSQL and grades by them."""
from __future__ import annotations

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk.live_facts import read_facts
from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request
from tests.helpers.alembic_project import REVISION_HEADER, write_alembic_project
from tests.helpers.ansible import run_module

pytestmark = pytest.mark.integration


def risk_of(pg_db, sql):
    return run_request(RiskRequest(sql=sql, connection_params={"db_url": pg_db.url}))


def rules_of(result):
    return [(f["rule"], f["risk"]) for f in result["findings"] if f["rule"] != "lock-timeout-missing"]


def _members(pg_db):
    pg_db.execute("CREATE TABLE members (id int PRIMARY KEY, email text, code text, nick text, "
                  "active boolean, name text)")
    pg_db.execute("CREATE UNIQUE INDEX members_email_key ON members (email)")
    pg_db.execute("CREATE UNIQUE INDEX members_code_active ON members (code) WHERE active")  # partial
    pg_db.execute("CREATE UNIQUE INDEX members_nick_lower ON members (lower(nick))")          # expression
    pg_db.execute("CREATE UNIQUE INDEX members_name_email ON members (name, email)")          # two columns
    pg_db.execute("INSERT INTO members SELECT g, 'e' || g, 'c' || g, 'n' || g, true, 'm' FROM "
                  "generate_series(1, 20) g")
    pg_db.execute("ANALYZE members")


def test_unique_columns_are_the_primary_key_and_single_column_unique_indexes(pg_db):
    _members(pg_db)
    conn = pg_db.connect()
    try:
        facts = read_facts(conn, read_version=False)
    finally:
        conn.close()
    assert facts.tables["members"].unique_columns == {"id", "email"}


def test_update_by_a_uniquely_indexed_column_is_graded_like_a_key(pg_db):
    _members(pg_db)
    by_email = risk_of(pg_db, "UPDATE members SET name = 'y' WHERE email = 'x'")
    assert rules_of(by_email) == [("update-by-key", "low")]
    assert "key column email" in by_email["findings"][0]["message"]
    assert rules_of(risk_of(pg_db, "UPDATE members SET name = 'y' WHERE id = 3")) == [("update-by-key", "low")]
    assert rules_of(risk_of(pg_db, "DELETE FROM members WHERE email = 'x'")) == [("delete-by-key", "medium")]
    # A partial, an expression or a two-column unique index does not bound the rows to one.
    for where in ("code = 'x'", "nick = 'x'", "name = 'x'"):
        assert rules_of(risk_of(pg_db, "UPDATE members SET name = 'y' WHERE " + where)) == [("update", "medium")], where


def test_a_table_without_keys_has_no_key_column(pg_db):
    pg_db.execute("CREATE TABLE events (id int, payload text)")
    pg_db.execute("INSERT INTO events SELECT g, 'p' FROM generate_series(1, 20) g")
    pg_db.execute("ANALYZE events")
    # "id" is only a convention: the database says nothing identifies one row of events.
    assert rules_of(risk_of(pg_db, "UPDATE events SET payload = 'q' WHERE id = 3")) == [("update", "medium")]


def test_not_valid_check_in_the_database_is_named_with_its_column(pg_db):
    pg_db.execute("CREATE TABLE people (id int PRIMARY KEY, email text)")
    pg_db.execute("ALTER TABLE people ADD CONSTRAINT people_email_nn CHECK (email IS NOT NULL) NOT VALID")
    conn = pg_db.connect()
    try:
        facts = read_facts(conn, read_version=False)
    finally:
        conn.close()
    people = facts.tables["people"]
    assert people.unvalidated_not_null_checks == {"people_email_nn": "email"}
    assert people.not_null_checks == set()


def test_revision_that_only_validates_proves_a_later_set_not_null(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE people (id int PRIMARY KEY, email text)")
    pg_db.execute("ALTER TABLE people ADD CONSTRAINT people_email_nn CHECK (email IS NOT NULL) NOT VALID")
    pg_db.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    pg_db.execute("INSERT INTO alembic_version VALUES ('p1')")
    ini = write_alembic_project(tmp_path, {
        "p1.py": '''
            revision = "p1"
            down_revision = None
            def upgrade():
                op.execute("ALTER TABLE people ADD CONSTRAINT people_email_nn CHECK (email IS NOT NULL) NOT VALID")
            def downgrade():
                op.drop_constraint("people_email_nn", "people")
            ''',
        "p2.py": '''
            revision = "p2"
            down_revision = "p1"
            def upgrade():
                op.execute("ALTER TABLE people VALIDATE CONSTRAINT people_email_nn")
            def downgrade():
                pass
            ''',
        "p3.py": '''
            revision = "p3"
            down_revision = "p2"
            def upgrade():
                op.alter_column("people", "email", existing_type=sa.Text(), nullable=False)
            def downgrade():
                op.alter_column("people", "email", existing_type=sa.Text(), nullable=True)
            ''',
    }, header=REVISION_HEADER)
    result = run_request(RiskRequest(alembic_config=str(ini), connection_params={"db_url": pg_db.url}))
    assert [r["revision"] for r in result["revisions"]] == ["p2", "p3"]
    p3 = [f for f in result["findings"] if f["revision"] == "p3" and f["rule"] != "lock-timeout-missing"]
    assert [(f["rule"], f["risk"]) for f in p3] == [("set-not-null-proven", "low")]
    # Without the revision that validates, the NOT VALID check proves nothing: the SET NOT NULL scans
    # (medium, not high, only because people is empty).
    alone = run_request(RiskRequest(alembic_config=str(ini), from_revision="p2",
                                    connection_params={"db_url": pg_db.url}))
    assert [r["revision"] for r in alone["revisions"]] == ["p3"]
    assert rules_of(alone) == [("set-not-null", "medium")]


LEDGER_FROM_A1 = """
ALTER TABLE accounts ADD COLUMN note TEXT;
UPDATE ledger_schema_version SET version_num='a2' WHERE ledger_schema_version.version_num = 'a1';
DELETE FROM ledger_schema_version WHERE ledger_schema_version.version_num = 'a2';
"""


def test_module_judges_bookkeeping_on_the_configured_version_table_as_none(pg_db):
    pg_db.execute("CREATE TABLE accounts (id int PRIMARY KEY)")
    pg_db.execute("CREATE TABLE ledger_schema_version (version_num varchar(32) PRIMARY KEY)")
    pg_db.execute("INSERT INTO ledger_schema_version SELECT 'r' || g FROM generate_series(1, 20) g")
    pg_db.execute("ANALYZE ledger_schema_version")
    args = dict(pg_db.login_args(), sql=LEDGER_FROM_A1)
    plain = run_module("migration_risk", args).result
    # Without the option the version table is an application table (its primary key bounds the rows).
    assert rules_of(plain) == [("add-column", "low"), ("update-by-key", "low"), ("delete-by-key", "medium")]
    ledger = run_module("migration_risk", dict(args, version_table="ledger_schema_version")).result
    assert ledger.get("failed") is not True, ledger.get("msg")
    assert rules_of(ledger) == [("add-column", "low")] and ledger["risk"] == "low"
