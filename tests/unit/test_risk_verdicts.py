"""Verdicts a DBA would sign: unknown tables, DROP INDEX locks, bounded data changes, the module's own advice
followed, foreign keys rendered exactly, rollback notes, the SQL each revision was judged on, and
suppressions read only from real comments."""
from __future__ import annotations

import json
import textwrap

import pytest
from pglast import parser as pg_parser

from ansible_collections.dbops.migrations.plugins.module_utils.risk.live_facts import (
    ColumnFacts, DbFacts, TableFacts)
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import (
    Engine, MigrationUnit, analyse_sql, suppressions_in_python)


def findings_of(result, rule):
    return [f for f in result["findings"] if f["rule"] == rule]


def only(result, rule):
    found = findings_of(result, rule)
    assert len(found) == 1, [(f["rule"], f["risk"]) for f in result["findings"]]
    return found[0]


def sized(rows, table="orders", index_tables=None, **extra):
    facts = TableFacts(name=table, rows=rows, size_bytes=rows * 100,
                       columns={"id": ColumnFacts("int4", (), True), "email": ColumnFacts("text", (), False)})
    for key, value in extra.items():
        setattr(facts, key, value)
    return DbFacts(version_num=150004, tables={table: facts}, index_tables=dict(index_tables or {}))


# -- unknown tables are assumed large
def test_plain_index_on_unknown_table_is_high():
    result = analyse_sql("CREATE INDEX ix_o ON orders (created_at)").as_result()
    assert result["risk"] == "high" and result["recommended_path"] == "manual" and result["backup"] == "required"
    assert only(result, "create-index")["risk"] == "high"


@pytest.mark.parametrize("rows,expected", [(10, "low"), (50000, "medium"), (2000000, "high")])
def test_plain_index_follows_known_size(rows, expected):
    analysis = Engine(facts=sized(rows)).analyse([MigrationUnit(sql="CREATE INDEX ix ON orders (email)")])
    assert analysis.risk == expected


def test_index_on_table_the_database_does_not_have_is_high():
    analysis = Engine(facts=sized(10)).analyse([MigrationUnit(sql="CREATE INDEX ix ON other (a)")])
    assert analysis.risk == "high" and analysis.findings[0].rows_estimate is None


# -- DROP INDEX: ACCESS EXCLUSIVE on the index's table
def test_drop_index_table_from_an_earlier_revision():
    units = [MigrationUnit(sql="CREATE INDEX CONCURRENTLY ix_orders_day ON orders (day)", revision="r1"),
             MigrationUnit(sql="BEGIN; DROP INDEX ix_orders_day; COMMIT;", revision="r2")]
    result = Engine().analyse(units).as_result()
    drop = only(result, "drop-index")
    assert (drop["table"], drop["lock"], drop["blocks"], drop["risk"]) == (
        "orders", "ACCESS EXCLUSIVE", "reads_and_writes", "medium")
    assert drop["message"].startswith("DROP INDEX ix_orders_day takes ACCESS EXCLUSIVE on orders:")


def test_drop_index_table_from_live_facts():
    analysis = Engine(facts=sized(10, index_tables={"ix_orders_email": "orders"})).analyse(
        [MigrationUnit(sql="DROP INDEX ix_orders_email")])
    assert analysis.findings[0].table == "orders" and analysis.findings[0].rows_estimate == 10


def test_drop_index_on_unknown_table_is_assumed_large_and_its_lock_is_tracked():
    result = analyse_sql("BEGIN; DROP INDEX ix_legacy; UPDATE orders SET a = 1; COMMIT;").as_result()
    drop = only(result, "drop-index")
    assert drop["table"] is None and drop["lock"] == "ACCESS EXCLUSIVE"
    assert "the table of index ix_legacy (unknown here: assumed large and busy)" in drop["message"]
    held = only(result, "lock-held-in-transaction")
    assert held["lock"] == "ACCESS EXCLUSIVE" and held["risk"] == "medium"
    assert held["message"] == ("Statement 3 is slow, and locks taken earlier in this transaction are still held "
                               "while it runs, until the transaction commits: ACCESS EXCLUSIVE on the table of "
                               "index ix_legacy from statement 2.")
    timeout = only(result, "lock-timeout-missing")
    assert timeout["message"].startswith("No lock_timeout is set before the table of index ix_legacy is locked")


def test_held_lock_names_each_statement_that_took_it():
    sql = ("BEGIN; ALTER TABLE users ADD COLUMN x int; DROP INDEX ix_a; "
           "CREATE INDEX ix_b ON orders (b); COMMIT;")
    held = only(analyse_sql(sql).as_result(), "lock-held-in-transaction")
    assert held["message"].endswith(": ACCESS EXCLUSIVE on users from statement 2; ACCESS EXCLUSIVE on the "
                                    "table of index ix_a from statement 3.")
    assert held["table"] == "orders"


def test_drop_index_concurrently_outside_transaction_stays_low():
    assert analyse_sql("DROP INDEX CONCURRENTLY ix_o").risk == "low"


# -- UPDATE and DELETE graded by what they touch
@pytest.mark.parametrize("sql,rule,risk,fragment", [
    ("UPDATE settings SET v = 'x' WHERE id = 3", "update-by-key", "low", "changes 1 row chosen by key column id"),
    ("UPDATE settings SET v = 'x' WHERE id IN (1, 2, 3)", "update-by-key", "low", "changes 3 rows"),
    ("UPDATE settings SET v = 'x' WHERE id = ANY(ARRAY[1, 2]) AND v IS NULL", "update-by-key", "low",
     "changes 2 rows"),
    ("UPDATE settings SET v = 'x' WHERE 7 = settings.id", "update-by-key", "low", "changes 1 row"),
    ("DELETE FROM settings WHERE id = 9", "delete-by-key", "medium", "DELETE removes 1 row of settings"),
    ("UPDATE orders SET n = q * p WHERE id IN (SELECT id FROM orders WHERE n IS NULL LIMIT 5000)",
     "update-batch", "medium", "one bounded batch (at most 5,000 rows, chosen by id)"),
    ("UPDATE orders SET n = q * p WHERE id BETWEEN 1 AND 10000", "update-batch", "medium",
     "(at most 10,000 rows, chosen by id)"),
    ("UPDATE orders SET n = q * p WHERE id BETWEEN $1 AND $2", "update-batch", "medium",
     "(the key range between its parameters, chosen by id)"),
    ("DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < now() LIMIT 1000)", "delete-batch", "medium",
     "(at most 1,000 rows, chosen by id)"),
])
def test_bounded_data_changes(sql, rule, risk, fragment):
    result = analyse_sql(sql).as_result()
    finding = only(result, rule)
    assert finding["risk"] == risk and result["risk"] == risk
    assert finding["lock"] == "ROW EXCLUSIVE" and finding["blocks"] == "none"
    assert fragment in finding["message"]
    assert result["checklist"]["large_data"] == []


@pytest.mark.parametrize("sql,rule", [
    ("UPDATE orders SET n = 1", "update-all-rows"),
    ("UPDATE orders SET n = 1 WHERE created_at < now() - interval '1 day'", "update"),
    ("UPDATE orders SET n = 1 WHERE id > 100", "update"),
    ("UPDATE orders SET n = 1 WHERE id = 5 OR n IS NULL", "update"),
    ("UPDATE orders SET n = 1 WHERE status = 'new'", "update"),
    ("UPDATE orders SET n = 1 WHERE id IN (SELECT id FROM orders WHERE n IS NULL)", "update"),
    ("UPDATE orders SET n = 1 WHERE id BETWEEN 1 AND 10000000", "update"),
    ("UPDATE orders o SET n = 1 FROM users u WHERE o.id = u.id", "update"),
    ("DELETE FROM orders WHERE created_at < now()", "delete"),
    ("UPDATE orders SET n = 1 WHERE id IN (%s)" % ", ".join(str(i) for i in range(101)), "update"),
])
def test_unbounded_data_changes_stay_critical(sql, rule):
    result = analyse_sql(sql).as_result()
    assert only(result, rule)["risk"] == "critical" and result["risk"] == "critical"


def test_key_columns_come_from_live_facts_when_known():
    # The database says the key is `code`, not `id`: equality on id no longer bounds the rows.
    facts = sized(5000000, unique_columns={"code"})
    by_code = Engine(facts=facts).analyse([MigrationUnit(sql="UPDATE orders SET n = 1 WHERE code = 'A1'")])
    by_id = Engine(facts=facts).analyse([MigrationUnit(sql="UPDATE orders SET n = 1 WHERE id = 1")])
    assert [(f.rule, f.risk) for f in by_code.findings] == [("update-by-key", "low")]
    assert [(f.rule, f.risk) for f in by_id.findings] == [("update", "critical")]


def test_batched_backfill_loop_is_a_bounded_batch():
    sql = ("UPDATE orders SET n = q * p WHERE id IN (SELECT id FROM orders WHERE n IS NULL LIMIT 5000);")
    unit = MigrationUnit(sql=sql, revision="r1", extra_findings=[
        {"rule": "python-data-loop", "details": {"line": 12}, "statement": "upgrade() line 12"}])
    result = Engine().analyse([unit]).as_result()
    loop = only(result, "python-data-loop")
    assert loop["risk"] == "medium" and result["risk"] == "medium"
    assert loop["message"] == ("upgrade() repeats bounded batches in a loop (line 12: update one batch orders), each "
                               "committed on its own outside the migration's transaction: the batched backfill. "
                               "Watch replication lag and bloat while it runs.")
    assert result["checklist"]["large_data"] == []


def test_loop_of_batches_inside_one_transaction_stays_critical():
    sql = ("BEGIN; UPDATE orders SET n = q * p WHERE id IN (SELECT id FROM orders WHERE n IS NULL LIMIT 5000); "
           "COMMIT;")
    unit = MigrationUnit(sql=sql, revision="r1", extra_findings=[
        {"rule": "python-data-loop", "details": {"line": 12}, "statement": "upgrade() line 12"}])
    result = Engine().analyse([unit]).as_result()
    loop = only(result, "python-data-loop")
    assert loop["risk"] == "critical" and result["risk"] == "critical"
    assert loop["message"].endswith("Its batches (update one batch orders) run inside the migration's transaction, "
                                    "so every row they change stays locked until it commits: run the loop in "
                                    "op.get_context().autocommit_block().")


def test_loop_with_an_unbounded_statement_stays_critical():
    unit = MigrationUnit(sql="UPDATE orders SET n = 1 WHERE n IS NULL;", revision="r1", extra_findings=[
        {"rule": "python-data-loop", "details": {"line": 12}, "statement": "upgrade() line 12"}])
    result = Engine().analyse([unit]).as_result()
    assert only(result, "python-data-loop")["risk"] == "critical"


# -- the foreign-key safe alternative keeps the key exactly as written
@pytest.mark.parametrize("clause", [
    "MATCH FULL ON DELETE CASCADE ON UPDATE SET NULL DEFERRABLE INITIALLY DEFERRED",
    "ON DELETE SET NULL (user_id)",
    "ON DELETE RESTRICT ON UPDATE CASCADE DEFERRABLE",
    "ON DELETE SET DEFAULT",
])
def test_foreign_key_alternative_keeps_actions_match_and_deferrable(clause):
    sql = "ALTER TABLE shop.orders ADD CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id) %s" % clause
    finding = only(analyse_sql(sql).as_result(), "add-foreign-key")
    first, _comment, validate = finding["safe_alternative"].split("\n")
    assert first.startswith("op.execute('") and first.endswith("')")
    rendered = first[len("op.execute('"):-2]
    assert rendered == "ALTER TABLE shop.orders ADD CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id) " \
                       "%s NOT VALID" % clause
    original = _constraint(sql)
    again = _constraint(rendered)
    assert again.pop("skip_validation") is True and again.pop("initially_valid", False) is False
    assert original.pop("initially_valid") is True and "skip_validation" not in original
    assert _without_locations(again) == _without_locations(original)
    assert validate == "op.execute('ALTER TABLE shop.orders VALIDATE CONSTRAINT fk_user')"


def test_foreign_key_without_a_name_gets_postgresql_default_name():
    sql = "ALTER TABLE orders ADD FOREIGN KEY (user_id, shop_id) REFERENCES users (id, shop) ON DELETE CASCADE"
    alternative = only(analyse_sql(sql).as_result(), "add-foreign-key")["safe_alternative"]
    assert alternative.startswith("op.execute('ALTER TABLE orders ADD CONSTRAINT orders_user_id_shop_id_fkey "
                                  "FOREIGN KEY (user_id, shop_id) REFERENCES users (id, shop) ON DELETE CASCADE "
                                  "NOT VALID')")
    assert alternative.endswith("VALIDATE CONSTRAINT orders_user_id_shop_id_fkey')")


def _constraint(sql):
    stmt = json.loads(pg_parser.parse_sql_json(sql))["stmts"][0]["stmt"]["AlterTableStmt"]
    return dict(stmt["cmds"][0]["AlterTableCmd"]["def"]["Constraint"])


def _without_locations(node):
    if isinstance(node, dict):
        return {k: _without_locations(v) for k, v in node.items() if k != "location"}
    if isinstance(node, list):
        return [_without_locations(v) for v in node]
    return node


# -- following the module's own advice lowers the verdict
FOUR_STEPS = [
    "ALTER TABLE users ADD CONSTRAINT ck_users_email_nn CHECK (email IS NOT NULL) NOT VALID",
    "ALTER TABLE users VALIDATE CONSTRAINT ck_users_email_nn",
    "ALTER TABLE users ALTER COLUMN email SET NOT NULL",
    "ALTER TABLE users DROP CONSTRAINT ck_users_email_nn",
]


def test_four_step_not_null_across_revisions_without_a_database():
    units = [MigrationUnit(sql=step, revision="r%d" % i) for i, step in enumerate(FOUR_STEPS, 1)]
    result = Engine().analyse(units).as_result()
    assert [(r["revision"], r["risk"]) for r in result["revisions"]] == [
        ("r1", "low"), ("r2", "low"), ("r3", "low"), ("r4", "low")]
    assert only(result, "set-not-null-proven")["revision"] == "r3"


def test_four_step_not_null_across_revisions_with_a_database():
    units = [MigrationUnit(sql=step, revision="r%d" % i) for i, step in enumerate(FOUR_STEPS, 1)]
    analysis = Engine(facts=sized(5000000, table="users")).analyse(units)
    assert analysis.risk == "low" and "set-not-null-proven" in [f.rule for f in analysis.findings]


def test_check_validated_in_the_live_database_proves_set_not_null():
    facts = sized(5000000, table="users", not_null_checks={"email"})
    analysis = Engine(facts=facts).analyse([MigrationUnit(sql=FOUR_STEPS[2], revision="r3")])
    assert [(f.rule, f.risk) for f in analysis.findings] == [("set-not-null-proven", "low"),
                                                             ("lock-timeout-missing", "low")]


def test_dropped_check_no_longer_proves_set_not_null():
    units = [MigrationUnit(sql=FOUR_STEPS[0], revision="r1"), MigrationUnit(sql=FOUR_STEPS[1], revision="r2"),
             MigrationUnit(sql=FOUR_STEPS[3], revision="r3"), MigrationUnit(sql=FOUR_STEPS[2], revision="r4")]
    result = Engine().analyse(units).as_result()
    assert only(result, "set-not-null")["revision"] == "r4" and result["risk"] == "high"


def test_check_on_another_column_proves_nothing():
    units = [MigrationUnit(sql="ALTER TABLE users ADD CONSTRAINT ck CHECK (name IS NOT NULL)", revision="r1"),
             MigrationUnit(sql=FOUR_STEPS[2], revision="r2")]
    assert Engine().analyse(units).risk == "high"


# -- rollback checklist: merges and empty upgrades need no downgrade
def test_merge_and_empty_revisions_raise_no_rollback_alarm():
    bookkeeping = ("BEGIN; DELETE FROM alembic_version WHERE alembic_version.version_num = 'r2b'; "
                   "UPDATE alembic_version SET version_num='r3' WHERE alembic_version.version_num = 'r2a'; COMMIT;")
    units = [MigrationUnit(sql="BEGIN; ALTER TABLE users ADD COLUMN n int; COMMIT;", revision="r2a",
                           has_downgrade=True),
             MigrationUnit(sql=bookkeeping, revision="r3", has_downgrade=False, downgrade_note="pass"),
             MigrationUnit(sql="", revision="r4", has_downgrade=False, downgrade_note="pass")]
    checklist = Engine().analyse(units, alembic=True).checklist()
    assert checklist["rollback_plan"] is True
    assert checklist["rollback_notes"] == []


def test_revision_that_changes_something_without_downgrade_still_alarms():
    units = [MigrationUnit(sql="ALTER TABLE users ADD COLUMN n int", revision="r1", has_downgrade=False,
                           downgrade_note="pass"),
             MigrationUnit(sql="SELECT 1", revision="r2", has_downgrade=False, downgrade_note="pass")]
    checklist = Engine().analyse(units, alembic=True).checklist()
    assert checklist["rollback_plan"] is False
    assert checklist["rollback_notes"] == ["r1: pass"]


def test_python_data_change_without_downgrade_still_alarms():
    unit = MigrationUnit(sql="", revision="r1", has_downgrade=False, downgrade_note="pass", extra_findings=[
        {"rule": "python-data-loop", "details": {"line": 3}, "statement": "upgrade() line 3"}])
    assert Engine().analyse([unit]).checklist()["rollback_plan"] is False


def test_unanalysed_revision_is_never_nothing_to_undo():
    unit = MigrationUnit(sql="", revision="r1", has_downgrade=False, error="cannot be imported")
    assert Engine().analyse([unit]).checklist()["rollback_plan"] is False


# -- each revision carries the SQL it was judged on
def test_revisions_carry_their_statements():
    units = [MigrationUnit(sql="BEGIN;\nALTER TABLE users ADD COLUMN n int;\nCREATE INDEX ix ON users (n);\nCOMMIT;",
                           revision="r1", has_downgrade=True),
             MigrationUnit(sql="", revision="r2", has_downgrade=True)]
    result = Engine().analyse(units).as_result()
    assert [r["sql"] for r in result["revisions"]] == [
        ["BEGIN", "ALTER TABLE users ADD COLUMN n int", "CREATE INDEX ix ON users (n)", "COMMIT"], []]
    for key in ("revision", "risk", "has_downgrade", "analysed", "error", "downgrade_drops"):
        assert key in result["revisions"][0]


def test_revision_sql_masks_password_literals():
    unit = MigrationUnit(sql="ALTER ROLE app PASSWORD 's3cret'", revision="r1")
    result = Engine().analyse([unit]).as_result()
    assert result["revisions"][0]["sql"] == ["ALTER ROLE app PASSWORD '********'"]
    assert "s3cret" not in json.dumps(result)


# -- suppressions only from real comments
REVISION_WITH_DOCSTRING = textwrap.dedent('''\
    """Drop the legacy table.

    # migration-risk: ignore all
    """
    from alembic import op

    NOTE = "# migration-risk: ignore all because it is only a string"
    SQL = """
    -- migration-risk: ignore all
    UPDATE orders SET n = 1
    """


    def upgrade():
        op.execute("DROP TABLE legacy")
        op.execute(SQL)
    ''')


def test_python_suppressions_ignore_docstrings_and_string_literals():
    assert suppressions_in_python(REVISION_WITH_DOCSTRING) == {}
    unit = MigrationUnit(sql="DROP TABLE legacy;\nUPDATE orders SET n = 1;", revision="r1",
                         suppressions=suppressions_in_python(REVISION_WITH_DOCSTRING))
    result = Engine().analyse([unit]).as_result()
    assert result["risk"] == "critical" and result["suppressed"] == []
    assert [f["rule"] for f in result["findings"] if f["risk"] == "critical"] == ["drop-table", "update-all-rows"]


def test_python_real_comment_still_suppresses():
    source = REVISION_WITH_DOCSTRING + "    # migration-risk: ignore drop-table because legacy is empty\n"
    assert suppressions_in_python(source) == {"drop-table": "legacy is empty"}


def test_python_suppressions_survive_a_file_that_does_not_tokenize_to_the_end():
    source = "# migration-risk: ignore drop-table because empty\nx = (\n"
    assert suppressions_in_python(source) == {"drop-table": "empty"}


def test_sql_suppression_inside_a_string_literal_does_not_count():
    sql = ("UPDATE orders SET note = 'see below\n-- migration-risk: ignore all\n' ;\n"
           "DROP TABLE legacy;\n"
           "UPDATE orders SET n = 1;")
    result = analyse_sql(sql).as_result()
    assert result["risk"] == "critical" and result["suppressed"] == []
    assert [f["rule"] for f in result["findings"] if f["risk"] == "critical"] == [
        "update-all-rows", "drop-table", "update-all-rows"]


def test_sql_suppression_inside_a_dollar_quoted_body_does_not_count():
    sql = ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 -- migration-risk: ignore all\n $$ LANGUAGE sql;\n"
           "DROP TABLE legacy;")
    assert analyse_sql(sql).as_result()["suppressed"] == []


@pytest.mark.parametrize("sql,suppressed_rules", [
    ("-- migration-risk: ignore drop-table because empty\nDROP TABLE legacy;\nDROP TABLE other;", ["drop-table"]),
    ("DROP TABLE legacy; -- migration-risk: ignore drop-table because empty\nDROP TABLE other;", ["drop-table"]),
    ("DROP TABLE /* migration-risk: ignore drop-table because empty */ legacy;\nDROP TABLE other;",
     ["drop-table"]),
    ("/* migration-risk: ignore all because\n   reviewed */\nDROP TABLE legacy;\nDROP TABLE other;",
     ["drop-table", "lock-timeout-missing"]),
    ("DROP TABLE legacy;\nDROP TABLE other;\n-- migration-risk: ignore all", []),
    ("SELECT 'é';\n-- Migration-Risk: ignore drop-table because empty\nDROP TABLE legacy;\nDROP TABLE other;",
     ["drop-table"]),
])
def test_sql_suppression_placement(sql, suppressed_rules):
    result = analyse_sql(sql).as_result()
    assert [s["rule"] for s in result["suppressed"]] == suppressed_rules
    assert [f["table"] for f in result["findings"] if f["rule"] == "drop-table"] == (
        ["other"] if suppressed_rules else ["legacy", "other"])


def test_line_numbers_with_multibyte_text():
    sql = "SELECT 'é';\n\nSELECT 'ü';\nDROP TABLE legacy;"
    analysis = analyse_sql(sql)
    assert [(f.rule, f.line) for f in analysis.findings] == [("drop-table", 4), ("lock-timeout-missing", 4)]


def test_reason_of_a_block_comment_has_no_delimiters():
    sql = "DROP TABLE /* migration-risk: ignore drop-table because empty */ legacy;"
    assert [s["reason"] for s in analyse_sql(sql).as_result()["suppressed"]] == ["empty"]


def test_validating_a_check_added_not_valid_in_the_database_proves_set_not_null():
    # Step 1 ran in an earlier release; the pending revisions validate it, then SET NOT NULL.
    facts = sized(5000000, table="users", unvalidated_not_null_checks={"ck_users_email_nn": "email"})
    units = [MigrationUnit(sql=FOUR_STEPS[1], revision="r2"), MigrationUnit(sql=FOUR_STEPS[2], revision="r3")]
    analysis = Engine(facts=facts).analyse(units)
    assert [(f.revision, f.rule, f.risk) for f in analysis.findings if f.rule.startswith("set-not-null")] == [
        ("r3", "set-not-null-proven", "low")]
    unproven = Engine(facts=sized(5000000, table="users")).analyse(
        [MigrationUnit(sql=FOUR_STEPS[1], revision="r2"), MigrationUnit(sql=FOUR_STEPS[2], revision="r3")])
    assert unproven.risk == "critical"


HOSTILE_REVISION = '''"""Clean up legacy data.

# migration-risk: ignore all
"""
from alembic import op

revision = "r1"
down_revision = None
NOTE = "# migration-risk: ignore all"


def upgrade():
    op.drop_table("legacy")
    op.execute("""UPDATE orders SET note = 'first line
-- migration-risk: ignore all
last line'""")
    op.execute("UPDATE orders SET n = 1")


def downgrade():
    pass
'''


def test_hostile_comments_in_a_rendered_revision_suppress_nothing(tmp_path):
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.alembic_units import pending_units
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text("raise RuntimeError('env.py must never run')\n")
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (versions / "r1.py").write_text(HOSTILE_REVISION)
    result = Engine().analyse(pending_units(str(tmp_path / "alembic.ini"))).as_result()
    assert result["risk"] == "critical" and result["suppressed"] == []
    assert [f["rule"] for f in result["findings"] if f["risk"] == "critical"] == [
        "drop-table", "update-all-rows", "update-all-rows"]
    assert result["revisions"][0]["sql"][1] == "DROP TABLE legacy"
