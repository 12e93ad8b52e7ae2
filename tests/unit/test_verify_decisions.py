"""The high path's data verification decisions (module_utils/release/verify.py)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.release import verify


def test_public_tables_are_named_bare_and_others_with_their_schema():
    counts = {"public.orders": 3, "audit.events": 5, "public.alembic_version": 1, "public.customers": 2}
    assert verify.release_counts(counts, ["alembic_version"]) == {"audit.events": 5, "customers": 2, "orders": 3}
    assert verify.release_counts(counts, ["public.alembic_version"]) == {"audit.events": 5, "customers": 2, "orders": 3}


def test_every_table_counted_before_is_protected_by_default():
    before = {"orders": 10, "customers": 4, "gone": 1}
    after = {"orders": 9, "customers": 4, "new_table": 0}
    assert verify.lost_rows(before, after) == ["orders: 10 -> 9 rows", "gone: table is gone (had 1 rows)"]


def test_protected_tables_narrow_the_check_and_name_tables_never_counted():
    before = {"orders": 10, "customers": 4}
    after = {"orders": 9, "customers": 5}
    assert verify.lost_rows(before, after, ["customers"]) == []
    assert verify.lost_rows(before, after, ["missing"]) == ["missing: table is gone (had ? rows)"]
    # A protected table created by the migration cannot have lost rows.
    assert verify.lost_rows({}, {"fresh": 0}, ["fresh"]) == []


@pytest.mark.parametrize("expected, got, match", [
    (0, 0, True), (3, Decimal("3"), True), (3, "3.0", True), (3, 4, False), (1.5, "1.5", True),
    ("ok", "ok", True), ("ok", "OK", False), (0, None, False), (None, None, True), (True, "True", True),
    (0, "error: relation \"x\" does not exist", False), ("2", 2, True)])
def test_answers_compare_as_numbers_when_the_expectation_is_one(expected, got, match):
    assert verify.answers_match(expected, got) is match


def test_mismatches_name_the_query_and_both_values():
    queries = [{"name": "orphans", "query": "q1", "expect": 0}, {"name": "total", "query": "q2", "expect": 12}]
    assert verify.query_mismatches(queries, [0, 11]) == ["total: expected 12, got 11"]


def test_malformed_queries_are_refused_before_anything_runs():
    assert verify.query_problems([{"name": "a", "query": "q", "expect": 1}]) == []
    assert verify.query_problems([{"name": "a", "query": "q"}, "SELECT 1"]) == [
        "verify_queries[0] needs name, query and expect (got {'name': 'a', 'query': 'q'})",
        "verify_queries[1] needs name, query and expect (got 'SELECT 1')"]


def test_lines_for_the_operator():
    assert verify.rows_line({"a": 1}, {"a": 2, "b": 0}) == "Rows before -> after: a 1 -> 2; b new -> 0"
    assert verify.verified_line(2, 1, False) == "2 table(s) counted, no rows lost; 1 verification query passed"
    assert verify.verified_line(2, 0, True).endswith(
        "0 verification queries passed (check mode: no migration ran between the two counts)")
