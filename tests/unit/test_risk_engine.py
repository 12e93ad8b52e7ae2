"""Engine behaviour: suppressions, configuration, parse errors, live facts (hand-made), checklist, reports."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ansible_collections.dbops.migrations.plugins.module_utils.risk import engine as risk_engine
from ansible_collections.dbops.migrations.plugins.module_utils.risk import reports as risk_reports
from ansible_collections.dbops.migrations.plugins.module_utils.risk.live_facts import (
    ColumnFacts, DbFacts, TableFacts, type_modifiers)
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import (
    RELEASE_FOR_RISK, Engine, MigrationUnit, RiskInputError, analyse_sql, load_config, suppressions_in_python)

REPO_ROOT = Path(__file__).resolve().parents[2]


def rules(result):
    return [f["rule"] for f in result["findings"]]


def facts(rows, size=None, version_num=150004, **columns):
    table = TableFacts(name="orders", rows=rows, size_bytes=size if size is not None else rows * 100,
                       columns={name: ColumnFacts(*spec) for name, spec in columns.items()})
    return DbFacts(version_num=version_num, tables={"orders": table}, index_tables={"ix_orders_a": "orders"})


# -- suppressions
def test_suppression_comment_before_statement_needs_rule_and_keeps_reason():
    sql = ("-- migration-risk: ignore create-index because the table holds 12 rows\n"
           "CREATE INDEX ix ON orders (a);\nCREATE INDEX ix2 ON orders (b);")
    result = analyse_sql(sql).as_result()
    assert result["risk"] == "high"  # the second index (unknown table: assumed large) is not suppressed
    assert [s["reason"] for s in result["suppressed"]] == ["the table holds 12 rows"]
    assert rules(result).count("create-index") == 1


def test_trailing_suppression_comment_applies_to_its_own_statement():
    sql = "CREATE INDEX ix ON orders (a); -- migration-risk: ignore create-index reason: tiny\nSELECT 1;"
    result = analyse_sql(sql).as_result()
    assert result["risk"] == "low" and result["suppressed"][0]["rule"] == "create-index"


def test_suppression_of_another_rule_does_not_hide_the_finding():
    sql = "-- migration-risk: ignore drop-column because planned\nCREATE INDEX ix ON orders (a);"
    assert analyse_sql(sql).as_result()["risk"] == "high"


def test_a_suppression_stays_with_its_statement_and_file():
    # Statements without a suppression comment share one empty table: a suppression must not leak into it.
    suppressed = analyse_sql("CREATE INDEX ix ON orders (a); -- migration-risk: ignore create-index\n").as_result()
    plain = analyse_sql("CREATE INDEX ix ON orders (a);").as_result()
    assert suppressed["risk"] == "low" and plain["risk"] == "high"
    assert risk_engine._NO_SUPPRESSIONS == {}


def test_statement_text_and_line_are_cut_from_the_source_with_multibyte_text():
    sql = "SELECT 'é';\n\nCREATE INDEX ix_é ON orders (a);\n"
    second = risk_engine.parse_statements(sql, "x.sql")[1]
    assert second.text == "CREATE INDEX ix_é ON orders (a)"  # the parser's length stops before the ;
    assert second.line == 3
    finding = analyse_sql(sql).findings[0]
    assert finding.statement == "CREATE INDEX ix_é ON orders (a)" and finding.line == 3


def test_the_standard_json_decoder_gives_the_same_analysis(monkeypatch):
    sql = ("ALTER TABLE orders ADD COLUMN note text DEFAULT random()::text;\n"
           "CREATE INDEX ix ON orders (a);\nUPDATE orders SET a = 1;\n")
    with_default = analyse_sql(sql).as_result()
    monkeypatch.setattr(risk_engine, "_json_loads", json.loads)
    assert analyse_sql(sql).as_result() == with_default


def test_python_file_suppressions():
    source = "# migration-risk: ignore update-all-rows, lock-timeout-missing because backfill of 30 rows\nx = 1\n"
    assert suppressions_in_python(source) == {"update-all-rows": "backfill of 30 rows",
                                              "lock-timeout-missing": "backfill of 30 rows"}
    unit = MigrationUnit(sql="UPDATE orders SET a = 1;", revision="r1", suppressions=suppressions_in_python(source))
    analysis = Engine().analyse([unit])
    assert analysis.risk == "low" and analysis.suppressed[0].rule == "update-all-rows"


# -- configuration
def test_config_file_thresholds_disabled_rules_and_overrides(tmp_path):
    path = tmp_path / "risk.yml"
    path.write_text("thresholds:\n  small_table_rows: 500\n  large_table_rows: 1000\n"
                    "disabled_rules: [lock-timeout-missing]\nrisk_overrides:\n  add-column: medium\n")
    config = load_config(str(path))
    big = Engine(facts=facts(5000), config=config).analyse([MigrationUnit(sql="CREATE INDEX ix ON orders (a)")])
    assert big.risk == "high"
    assert "lock-timeout-missing" not in [f.rule for f in big.findings]
    added = Engine(config=config).analyse([MigrationUnit(sql="ALTER TABLE orders ADD COLUMN x int")])
    assert added.risk == "medium"


@pytest.mark.parametrize("text,needle", [
    ("risk_overrides: {create-index: extreme}", "must be one of"),
    ("surprise: 1", "unknown keys"),
    ("- a\n- b", "must hold a mapping"),
    ("thresholds: {small_table_rows: -1}", "non-negative"),
    ("thresholds: {small_table_rows: [", "not valid YAML"),
])
def test_bad_config(tmp_path, text, needle):
    path = tmp_path / "risk.yml"
    path.write_text(text)
    with pytest.raises(RiskInputError, match=needle):
        load_config(str(path))


# -- parse errors
def test_parse_error_names_source_line_and_statement():
    with pytest.raises(RiskInputError) as err:
        Engine().analyse([MigrationUnit(sql="SELECT 1;\nALTER TABLE t ADD COLUMN (;\n", revision="0007",
                                        source="0007_x.py")])
    msg = str(err.value)
    assert "revision 0007 (0007_x.py)" in msg and "line 2" in msg and "ALTER TABLE t ADD COLUMN (" in msg


def test_empty_sql_is_low_with_no_findings():
    result = analyse_sql("  -- nothing here\n").as_result()
    assert result["risk"] == "low" and result["findings"] == []


# -- live facts (hand-made DbFacts: pure logic)
@pytest.mark.parametrize("rows,expected", [(10, "low"), (50000, "medium"), (2000000, "high")])
def test_index_risk_follows_table_size(rows, expected):
    analysis = Engine(facts=facts(rows)).analyse([MigrationUnit(sql="CREATE INDEX ix ON orders (a)")])
    assert analysis.risk == expected
    assert analysis.findings[0].rows_estimate == rows


def test_lock_seconds_estimated_from_size():
    analysis = Engine(facts=facts(2000000, size=600 * 10 ** 6)).analyse(
        [MigrationUnit(sql="ALTER TABLE orders ALTER COLUMN a TYPE bigint")])
    # a rewrite at 60 MB/s of relation bytes
    assert analysis.checklist()["estimated_lock_seconds"] == pytest.approx(10.0, abs=0.05)


def test_an_exclusion_constraint_builds_slower_than_an_index():
    def seconds(sql):
        return Engine(facts=facts(2000000, size=600 * 10 ** 6)).analyse([MigrationUnit(sql=sql)]).checklist()["estimated_lock_seconds"]

    assert seconds("ALTER TABLE orders ADD CONSTRAINT uq UNIQUE (a)") == pytest.approx(5.0, abs=0.05)
    assert seconds("ALTER TABLE orders ADD CONSTRAINT ex EXCLUDE USING btree (a WITH =)") == pytest.approx(15.0, abs=0.05)


def test_varchar_widening_is_not_a_rewrite_with_facts():
    f = facts(2000000, name=("varchar", (50,), False), qty=("int4", (), False))
    ok = Engine(facts=f).analyse([MigrationUnit(sql="ALTER TABLE orders ALTER COLUMN name TYPE varchar(80)")])
    assert ok.risk == "low" and ok.findings[0].rule == "alter-column-type-coercible"
    bad = Engine(facts=f).analyse([MigrationUnit(sql="ALTER TABLE orders ALTER COLUMN qty TYPE bigint")])
    assert bad.risk == "critical" and "Current type int4" in bad.findings[0].message


def test_pg14_concurrent_index_bug_needs_the_minor_version():
    sql = "CREATE INDEX CONCURRENTLY ix ON orders (a)"
    assert Engine(facts=facts(10, version_num=140002)).analyse([MigrationUnit(sql=sql)]).risk == "high"
    assert Engine(facts=facts(10, version_num=140004)).analyse([MigrationUnit(sql=sql)]).risk == "low"


def test_drop_index_table_comes_from_facts():
    analysis = Engine(facts=facts(10)).analyse([MigrationUnit(sql="DROP INDEX ix_orders_a")])
    assert analysis.findings[0].table == "orders" and analysis.risk == "medium"


def test_new_tables_carry_across_revisions_only_with_a_database():
    units = lambda: [MigrationUnit(sql="CREATE TABLE n (a int)", revision="r1"),  # noqa: E731
                     MigrationUnit(sql="CREATE INDEX ix ON n (a)", revision="r2")]
    assert Engine().analyse(units()).risk == "high"            # r1 may have shipped long ago (and grown)
    assert Engine(facts=facts(10)).analyse(units()).risk == "low"  # the database has no table n yet


def test_existing_type_hint_decides_coercion_without_database():
    unit = MigrationUnit(sql="ALTER TABLE users ALTER COLUMN name TYPE VARCHAR(200)", revision="r1",
                         column_hints={("users", "name"): ("varchar", (100,))})
    assert Engine().analyse([unit]).risk == "low"


# -- checklist and result shape
def test_checklist_and_paths():
    result = analyse_sql("DROP TABLE legacy; UPDATE orders SET a = 1; TRUNCATE audit;").as_result()
    checklist = result["checklist"]
    assert result["risk"] == "critical" and result["recommended_path"] == "manual"
    assert result["backup"] == "required"
    assert checklist["drops"] == ["DROP TABLE legacy", "TRUNCATE audit"]
    assert checklist["large_data"] == ["UPDATE WITHOUT WHERE orders", "TRUNCATE audit"]
    assert checklist["rollback_plan"] is False
    assert checklist["estimated_lock_seconds"] is None


@pytest.mark.parametrize("sql,risk,path,recommended_path,backup", [
    ("CREATE TABLE trades (id bigint PRIMARY KEY)", "low", "low", "auto", "optional"),
    ("DROP INDEX ix_o", "medium", "medium", "review", "recommended"),
    ("CREATE INDEX ix_o ON orders (created_at)", "high", "high", "manual", "required"),
    ("DROP TABLE legacy", "critical", "high", "manual", "required"),
])
def test_release_path_follows_the_risk(sql, risk, path, recommended_path, backup):
    result = analyse_sql(sql).as_result()
    assert (result["risk"], result["path"], result["recommended_path"], result["backup"]) == (
        risk, path, recommended_path, backup)


def test_playbooks_take_the_path_from_the_result_and_rank_every_path():
    release_vars = yaml.safe_load((REPO_ROOT / "playbooks" / "vars" / "release.yml").read_text())
    assert set(RELEASE_FOR_RISK) == set(release_vars["release_levels"])
    assert {verdict["path"] for verdict in RELEASE_FOR_RISK.values()} | {"skip"} == set(release_vars["release_path_rank"])
    # One table: no playbook keeps its own risk -> path mapping.
    playbooks = [p.read_text() for p in (REPO_ROOT / "playbooks").rglob("*.yml")]
    assert not [text for text in playbooks if "path_for_risk" in text]


def test_unloadable_revision_is_high_and_not_analysed():
    unit = MigrationUnit(sql="", revision="r9", error="cannot be imported: ModuleNotFoundError: app")
    result = Engine().analyse([unit]).as_result()
    assert result["risk"] == "high"
    assert result["revisions"][0]["analysed"] is False and result["findings"][0]["rule"] == "revision-not-analysed"


def test_statement_not_in_catalogue_is_reviewed_not_ignored():
    result = analyse_sql("ALTER SYSTEM SET work_mem = '64MB'").as_result()
    assert result["risk"] == "medium" and rules(result) == ["statement-unknown"]


def test_type_modifiers_decoding():
    assert type_modifiers("varchar", 54) == (50,)
    assert type_modifiers("numeric", ((12 << 16) | 2) + 4) == (12, 2)
    assert type_modifiers("int4", -1) == ()


# -- reports
def test_markdown_json_and_sarif():
    result = analyse_sql("CREATE INDEX ix ON orders (a);\nALTER TABLE users DROP COLUMN x;").as_result()
    text = risk_reports.markdown(result)
    assert text.startswith("# Migration risk: CRITICAL")
    assert "| - | critical | `drop-column` |" in text and "postgresql_concurrently=True" in text
    data = json.loads(risk_reports.to_json(dict(result, report=text)))
    assert "report" not in data and data["risk"] == "critical"
    sarif = risk_reports.sarif(result, {"": "m.sql"})
    run = sarif["runs"][0]
    assert sarif["version"] == "2.1.0"
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == {f["rule"] for f in result["findings"]}
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels["drop-column"] == "error" and levels["create-index"] == "error"
    assert levels["lock-timeout-missing"] == "note"
    assert run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "m.sql"


def test_every_rule_is_documented():
    from ansible_collections.dbops.migrations.plugins.module_utils.risk import rules as risk_rules
    doc = (REPO_ROOT / "docs" / "migration_risk.md").read_text()
    missing = [rule_id for rule_id in risk_rules.ALL_RULE_IDS if "`%s`" % rule_id not in doc]
    assert missing == []


def test_password_literals_never_reach_the_result():
    sql = ("CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'app', password 's3cret');"
           "ALTER SYSTEM SET primary_conninfo = 'host=x password=s3cret'")
    result = analyse_sql(sql).as_result()
    assert "s3cret" not in json.dumps(result)


def test_not_null_column_without_default_is_fine_on_an_empty_table():
    sql = "ALTER TABLE orders ADD COLUMN email text NOT NULL"
    assert Engine(facts=facts(0)).analyse([MigrationUnit(sql=sql)]).risk == "low"
    assert Engine(facts=facts(5)).analyse([MigrationUnit(sql=sql)]).risk == "high"


def test_markdown_shows_the_sql_each_revision_was_judged_on():
    units = [MigrationUnit(sql="BEGIN; ALTER TABLE users ADD COLUMN n int; COMMIT;", revision="r1", has_downgrade=True),
             MigrationUnit(sql="", revision="r2", has_downgrade=False, downgrade_note="pass")]
    text = risk_reports.markdown(Engine().analyse(units).as_result())
    assert "<details><summary>revision r1: 3 statements</summary>\n\n```sql\nBEGIN;\n" \
           "ALTER TABLE users ADD COLUMN n int;\nCOMMIT;\n```" in text
    assert "revision r2" not in text.split("## SQL judged")[1]
    assert "- rollback plan: yes, every revision that changes something has a downgrade()" in text


def test_markdown_folds_very_long_revision_sql():
    sql = "".join("UPDATE t SET a = %d WHERE id = %d;\n" % (i, i) for i in range(3000))
    text = risk_reports.markdown(Engine().analyse([MigrationUnit(sql=sql, revision="big")]).as_result())
    section = text.split("## SQL judged")[1]
    assert len(section) < risk_reports.SQL_SHOWN_PER_REVISION + 500
    shown = section.count("UPDATE t SET")
    assert "-- ... %d more statements in revisions[].sql" % (3000 - shown) in section


# -- a custom version table

LEDGER_OFFLINE_SQL = """
CREATE TABLE ledger_schema_version (version_num VARCHAR(32) NOT NULL,
    CONSTRAINT ledger_schema_version_pkc PRIMARY KEY (version_num));
ALTER TABLE accounts ADD COLUMN note TEXT;
INSERT INTO ledger_schema_version (version_num) VALUES ('a1') RETURNING ledger_schema_version.version_num;
UPDATE ledger_schema_version SET version_num='a2' WHERE ledger_schema_version.version_num = 'a1';
DELETE FROM ledger_schema_version WHERE ledger_schema_version.version_num = 'a2';
DROP TABLE ledger_schema_version;
"""


def _judged(sql, **engine_options):
    analysis = Engine(15, **engine_options).analyse([MigrationUnit(sql=sql)])
    return sorted({(f.rule, f.table) for f in analysis.findings})


def test_bookkeeping_on_a_custom_version_table_is_not_a_data_change():
    judged = _judged(LEDGER_OFFLINE_SQL, version_table="ledger_schema_version")
    assert judged == [("add-column", "accounts"), ("lock-timeout-missing", "accounts")]


def test_without_the_option_the_custom_version_table_is_an_application_table():
    # A script from a1 on (the version table already exists) judged without version_table: the writes
    # look like data changes of an unknown (so assumed large) table, so the option must reach the engine.
    from_a1 = LEDGER_OFFLINE_SQL.split(";", 1)[1]
    assert "CREATE TABLE" not in from_a1 and "ADD COLUMN note" in from_a1
    judged = _judged(from_a1)
    assert ("update", "ledger_schema_version") in judged and ("drop-table", "ledger_schema_version") in judged
    assert _judged(from_a1, version_table="ledger_schema_version") == [
        ("add-column", "accounts"), ("lock-timeout-missing", "accounts")]


def test_version_table_in_a_schema_is_bookkeeping_qualified_or_not():
    sql = ("UPDATE ops.ledger_schema_version SET version_num='a2' WHERE version_num = 'a1';\n"
           "UPDATE ledger_schema_version SET version_num='a3' WHERE version_num = 'a2';\n"
           "UPDATE other.ledger_schema_version SET version_num='a3';\n")
    judged = _judged(sql, version_table="ledger_schema_version", version_table_schema="ops")
    # Only the table in the named schema (or unqualified, found through the search_path) is bookkeeping.
    assert [rule for rule, table in judged if table != "other.ledger_schema_version"] == []
    assert ("update-all-rows", "other.ledger_schema_version") in judged


def test_with_a_custom_version_table_alembic_version_is_an_ordinary_table():
    judged = _judged("DROP TABLE alembic_version;", version_table="ledger_schema_version")
    assert ("drop-table", "alembic_version") in judged
    assert _judged("DROP TABLE alembic_version;") == []


def test_a_trace_without_a_database_is_refused_before_anything_runs():
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request
    with pytest.raises(RiskInputError, match="^trace=true needs a database: set db_url or the login_\\* options$"):
        run_request(RiskRequest(sql="ALTER TABLE t ADD COLUMN c int", trace=True))
