"""release_verify against a real PostgreSQL: every schema counted, read-only, failures named."""
from __future__ import annotations

import pytest

from tests.helpers import postgres as pgh
from tests.helpers.ansible import run_module

pytestmark = pytest.mark.integration


@pytest.fixture
def shop(pg_db):
    pg_db.execute("CREATE TABLE alembic_version (version_num text); INSERT INTO alembic_version VALUES ('0003');"
                  "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 40);"
                  "CREATE SCHEMA audit; CREATE TABLE audit.events (id int); INSERT INTO audit.events VALUES (1), (2);"
                  'CREATE TABLE "odd ""name""" (id int)')
    return pg_db


def verify(db, **args):
    return run_module("release_verify", dict(db.login_args(), exclude_tables=["alembic_version"], **args))


def test_counts_every_schema_like_the_backup_manifest(shop):
    run = verify(shop)
    assert run.rc == 0 and run.result["failed"] is False, run.output[-2000:]
    assert run.result["rows"] == {"audit.events": 2, 'odd "name"': 0, "orders": 40}
    assert run.result["msg"] == "3 table(s) counted" and run.result["changed"] is False
    assert pgh.TEST_PASSWORD not in run.output


def test_lost_rows_fail_naming_the_table_and_both_counts(shop):
    before = verify(shop).result["rows"]
    shop.execute("DELETE FROM orders WHERE id > 30; DROP TABLE audit.events")
    run = verify(shop, before=before)
    assert run.result["failed"] is True
    assert run.result["msg"] == ("Data verification failed, rows were lost: audit.events: table is gone (had 2 rows); "
                                 "orders: 40 -> 30 rows. Rows before -> after: odd \"name\" 0 -> 0; orders 40 -> 30")
    protected = verify(shop, before=before, protected_tables=['odd "name"'])
    assert protected.result["failed"] is False and protected.result["lost"] == []


def test_queries_run_read_only_and_each_failure_is_named(shop):
    queries = [{"name": "orders", "query": "SELECT count(*) FROM orders", "expect": 40},
               {"name": "writes", "query": "DELETE FROM orders RETURNING id", "expect": 1},
               {"name": "typo", "query": "SELECT count(*) FROM order_lines", "expect": 0},
               {"name": "label", "query": "SELECT 'ok'", "expect": "ok"}]
    run = verify(shop, queries=queries)
    assert run.result["failed"] is True
    assert [line.split(":")[0] for line in run.result["mismatches"]] == ["writes", "typo"]
    assert "read-only transaction" in run.result["mismatches"][0]
    assert 'relation "order_lines" does not exist' in run.result["mismatches"][1]
    assert shop.scalar("SELECT count(*) FROM orders") == 40


def test_check_mode_reads_the_same_and_says_no_migration_ran(shop):
    before = verify(shop).result["rows"]
    run = run_module("release_verify", dict(shop.login_args(), exclude_tables=["alembic_version"], before=before),
                     check=True)
    assert run.result["msg"] == ("3 table(s) counted, no rows lost; 0 verification queries passed "
                                 "(check mode: no migration ran between the two counts)")


def test_a_wrong_password_fails_without_showing_it(shop):
    args = dict(shop.login_args(), login_password="not-the-" + pgh.TEST_PASSWORD)
    run = run_module("release_verify", args)
    assert run.result["failed"] is True and run.result["msg"].startswith("cannot count the rows: ")
    assert "not-the-" not in run.output
