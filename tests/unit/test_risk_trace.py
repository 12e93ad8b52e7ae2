"""Trace comparison logic (pure): where a recorded trace contradicts the static verdict."""
from __future__ import annotations

import json

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import RiskInputError, analyse_sql
from ansible_collections.dbops.migrations.plugins.module_utils.risk.trace import (
    _cannot_run_in_transaction, _compare, _version_advice, find_tool)
from pglast import parser


def traced(statement, locks=(), held=None, rewrote=(), error=None):
    return {"revision": None, "statement": statement, "locks": [{"table": t, "mode": m} for t, m in locks],
            "held": held or {t: m for t, m in locks}, "rewrote": list(rewrote), "duration_ms": 1.0, "error": error}


def test_agreement_gives_no_disagreement():
    analysis = analyse_sql("ALTER TABLE orders ALTER COLUMN qty TYPE bigint")
    item = traced("ALTER TABLE orders ALTER COLUMN qty TYPE bigint", [("orders", "ACCESS EXCLUSIVE")], rewrote=["orders"])
    assert _compare(analysis, [item]) == []


def test_other_lock_mode_and_missing_rewrite_are_reported():
    analysis = analyse_sql("CREATE INDEX ix ON orders (a)")
    item = traced("CREATE INDEX ix ON orders (a)", [("orders", "ACCESS EXCLUSIVE")], rewrote=["orders"])
    found = _compare(analysis, [item])
    assert any("says SHARE on orders, the trace took ACCESS EXCLUSIVE" in d for d in found)
    assert any("no rewrite" in d and "new relfilenode" in d for d in found)


def test_lock_already_held_by_an_earlier_statement_is_not_a_disagreement():
    analysis = analyse_sql("CREATE INDEX ix ON orders (a)")
    item = traced("CREATE INDEX ix ON orders (a)", [], held={"orders": "ACCESS EXCLUSIVE"})
    assert _compare(analysis, [item]) == []


def test_failed_statements_are_not_compared():
    analysis = analyse_sql("CREATE INDEX ix ON orders (a)")
    assert _compare(analysis, [traced("CREATE INDEX ix ON orders (a)", error="relation does not exist")]) == []


@pytest.mark.parametrize("sql,expected", [
    ("CREATE INDEX CONCURRENTLY ix ON t (a)", True),
    ("DROP INDEX CONCURRENTLY ix", True),
    ("REINDEX TABLE CONCURRENTLY t", True),
    ("VACUUM t", True),
    ("ANALYZE t", False),
    ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", True),
    ("CREATE INDEX ix ON t (a)", False),
    ("ALTER TABLE t ADD COLUMN x int", False),
])
def test_statements_that_cannot_be_traced_in_a_transaction(sql, expected):
    stmt = json.loads(parser.parse_sql_json(sql))["stmts"][0]["stmt"]
    kind = next(iter(stmt))
    assert _cannot_run_in_transaction(kind, stmt[kind]) is expected


def test_missing_tool_in_given_folder(tmp_path):
    with pytest.raises(RiskInputError, match="pg_dump not found"):
        find_tool("pg_dump", str(tmp_path))


@pytest.mark.parametrize("err", [
    # pg_dump 15's wording, then 16's and 17's
    "pg_dump: error: server version: 17.6 (Debian 17.6-0+deb13u1); pg_dump version: 15.14 (Debian 15.14-0+deb12u1)\n"
    "pg_dump: error: aborting because of server version mismatch",
    "pg_dump: error: aborting because of server version mismatch\n"
    "pg_dump: detail: server version: 17.6; pg_dump version: 16.4",
])
def test_a_server_newer_than_pg_dump_names_the_client_to_install(err):
    advice = _version_advice(err)
    assert "postgresql-client-17" in advice and "trace_bin_dir" in advice and "/usr/lib/postgresql/17/bin" in advice


def test_other_pg_dump_failures_get_no_version_advice():
    assert _version_advice('pg_dump: error: connection to server failed: FATAL:  password authentication failed') == ""
    assert _version_advice("") == ""
