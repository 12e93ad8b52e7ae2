"""The rule catalogue on SQL cases with the risk each must get (no database: unknown tables are assumed large,
so a rule that is cheap only on small tables takes its large-table level, at most high)."""
from __future__ import annotations

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk import rules as risk_rules
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import analyse_sql

# (case id, SQL, expected migration risk, a rule that must be among the findings or None, server version)
CASES = [
    # -- the guide's table
    ("create-table", "CREATE TABLE trades (id bigint PRIMARY KEY, qty int)", "low", "create-table", 15),
    ("create-table-fk", "CREATE TABLE t2 (id int, o int REFERENCES orders(id))", "low", "create-table", 15),
    ("create-table-as", "CREATE TABLE snap AS SELECT * FROM orders", "low", "create-table-as", 15),
    ("add-nullable-column", "ALTER TABLE users ADD COLUMN nickname varchar(60)", "low", "add-column", 15),
    ("add-column-constant-default", "ALTER TABLE users ADD COLUMN active boolean DEFAULT true", "low",
     "add-column", 15),
    ("add-column-now-default", "ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT now()", "low", "add-column", 15),
    ("create-index", "CREATE INDEX ix_o ON orders (created_at)", "high", "create-index", 15),
    ("create-unique-index", "CREATE UNIQUE INDEX ux ON orders (ref)", "high", "create-index", 15),
    ("drop-index", "DROP INDEX ix_o", "medium", "drop-index", 15),
    ("alter-type-int-bigint", "ALTER TABLE orders ALTER COLUMN quantity TYPE bigint", "high", "alter-column-type", 15),
    ("alter-type-using", "ALTER TABLE orders ALTER COLUMN note TYPE int USING note::int", "high",
     "alter-column-type", 15),
    ("drop-table", "DROP TABLE legacy", "critical", "drop-table", 15),
    ("drop-table-if-exists", "DROP TABLE IF EXISTS legacy CASCADE", "critical", "drop-table", 15),
    ("drop-column", "ALTER TABLE users DROP COLUMN legacy_status", "critical", "drop-column", 15),
    ("update-all", "UPDATE orders SET notional = quantity * price", "critical", "update-all-rows", 15),
    ("update-where", "UPDATE orders SET status = 'x' WHERE status IS NULL", "critical", "update", 15),
    ("delete", "DELETE FROM orders WHERE created_at < now() - interval '1 year'", "critical", "delete", 15),
    ("update-by-key", "UPDATE settings SET v = 'x' WHERE id = 1", "low", "update-by-key", 15),
    ("update-by-key-list", "UPDATE settings SET v = 'x' WHERE id IN (1, 2, 3)", "low", "update-by-key", 15),
    ("update-batch", "UPDATE orders SET n = 1 WHERE id IN (SELECT id FROM orders WHERE n IS NULL LIMIT 5000)",
     "medium", "update-batch", 15),
    ("update-range", "UPDATE orders SET n = 1 WHERE id > 1000", "critical", "update", 15),
    ("delete-by-key", "DELETE FROM settings WHERE id = 4", "medium", "delete-by-key", 15),
    ("delete-batch", "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < now() LIMIT 1000)", "medium",
     "delete-batch", 15),
    ("insert-select", "INSERT INTO archive SELECT * FROM orders", "critical", "insert-select", 15),
    ("insert-values", "INSERT INTO settings (k, v) VALUES ('a', 'b')", "low", "insert-values", 15),
    # -- rewrites on ADD COLUMN
    ("add-serial", "ALTER TABLE orders ADD COLUMN seq serial", "high", "add-column-serial", 15),
    ("add-bigserial", "ALTER TABLE orders ADD COLUMN seq bigserial", "high", "add-column-serial", 15),
    ("add-identity", "ALTER TABLE orders ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY", "high",
     "add-column-identity", 15),
    ("add-generated-stored", "ALTER TABLE orders ADD COLUMN total numeric GENERATED ALWAYS AS (a * b) STORED",
     "high", "add-column-generated-stored", 15),
    ("add-generated-virtual", "ALTER TABLE orders ADD COLUMN total numeric GENERATED ALWAYS AS (a * b) VIRTUAL",
     "low", "add-column", 18),
    ("add-volatile-uuid", "ALTER TABLE orders ADD COLUMN u uuid DEFAULT gen_random_uuid()", "high",
     "add-column-volatile-default", 15),
    ("add-volatile-clock", "ALTER TABLE orders ADD COLUMN t timestamptz DEFAULT clock_timestamp()", "high",
     "add-column-volatile-default", 15),
    ("add-volatile-random", "ALTER TABLE orders ADD COLUMN r float8 DEFAULT random()", "high",
     "add-column-volatile-default", 15),
    ("add-user-func-default", "ALTER TABLE orders ADD COLUMN r int DEFAULT app.next_code()", "high",
     "add-column-volatile-default", 15),
    ("add-default-pg10", "ALTER TABLE users ADD COLUMN active boolean DEFAULT true", "high",
     "add-column-default-pre11", 10),
    ("add-default-pg11", "ALTER TABLE users ADD COLUMN active boolean DEFAULT true", "low", "add-column", 11),
    ("add-not-null-no-default", "ALTER TABLE users ADD COLUMN email text NOT NULL", "high", "add-column-not-null", 15),
    ("add-not-null-default", "ALTER TABLE users ADD COLUMN tier int NOT NULL DEFAULT 0", "low", "add-column", 15),
    ("add-column-unique", "ALTER TABLE users ADD COLUMN code text UNIQUE", "high", "add-column-unique", 15),
    ("add-column-references", "ALTER TABLE orders ADD COLUMN trade_id int REFERENCES trades(id)", "low",
     "add-column", 15),
    ("add-column-check", "ALTER TABLE orders ADD COLUMN q int CHECK (q > 0)", "high", "add-column-check", 15),
    # -- type changes that need no rewrite (no database: the old type is unknown, so still high)
    ("alter-type-text-unknown", "ALTER TABLE users ALTER COLUMN name TYPE text", "high", "alter-column-type", 15),
    # -- NOT NULL
    ("set-not-null", "ALTER TABLE users ALTER COLUMN email SET NOT NULL", "high", "set-not-null", 15),
    ("drop-not-null", "ALTER TABLE users ALTER COLUMN email DROP NOT NULL", "low", "drop-not-null", 15),
    ("set-default", "ALTER TABLE users ALTER COLUMN tier SET DEFAULT 1", "low", "set-default", 15),
    ("four-step-not-null-same-run-pg12",
     "ALTER TABLE users ADD CONSTRAINT ck CHECK (email IS NOT NULL) NOT VALID;"
     "ALTER TABLE users VALIDATE CONSTRAINT ck;"
     "ALTER TABLE users ALTER COLUMN email SET NOT NULL", "low", "set-not-null-proven", 15),
    ("four-step-not-null-pg11",
     "ALTER TABLE users ADD CONSTRAINT ck CHECK (email IS NOT NULL) NOT VALID;"
     "ALTER TABLE users VALIDATE CONSTRAINT ck;"
     "ALTER TABLE users ALTER COLUMN email SET NOT NULL", "high", "set-not-null", 11),
    # -- constraints
    ("fk", "ALTER TABLE orders ADD CONSTRAINT fk_u FOREIGN KEY (user_id) REFERENCES users(id)", "high",
     "add-foreign-key", 15),
    ("fk-not-valid", "ALTER TABLE orders ADD CONSTRAINT fk_u FOREIGN KEY (user_id) REFERENCES users(id) NOT VALID",
     "low", "add-foreign-key-not-valid", 15),
    ("check", "ALTER TABLE orders ADD CONSTRAINT ck_q CHECK (quantity > 0)", "high", "add-check", 15),
    ("check-not-valid", "ALTER TABLE orders ADD CONSTRAINT ck_q CHECK (quantity > 0) NOT VALID", "low",
     "add-check-not-valid", 15),
    ("validate", "ALTER TABLE orders VALIDATE CONSTRAINT ck_q", "low", "validate-constraint", 15),
    ("unique", "ALTER TABLE users ADD CONSTRAINT uq_email UNIQUE (email)", "high", "add-unique", 15),
    ("unique-using-index", "ALTER TABLE users ADD CONSTRAINT uq_email UNIQUE USING INDEX uq_email_idx", "low",
     "add-unique-using-index", 15),
    ("primary-key", "ALTER TABLE events ADD PRIMARY KEY (id)", "high", "add-primary-key", 15),
    ("primary-key-using-index", "ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY USING INDEX ev_idx",
     "low", "add-primary-key-using-index", 15),
    ("exclusion", "ALTER TABLE bookings ADD CONSTRAINT ex EXCLUDE USING gist (room WITH =, during WITH &&)", "high",
     "add-exclusion", 15),
    ("drop-constraint", "ALTER TABLE orders DROP CONSTRAINT ck_q", "low", "drop-constraint", 15),
    # -- indexes, concurrency, transactions
    ("cic", "CREATE INDEX CONCURRENTLY ix_o ON orders (created_at)", "low", "create-index-concurrently", 15),
    ("cic-in-transaction", "BEGIN; CREATE INDEX CONCURRENTLY ix_o ON orders (created_at); COMMIT;", "high",
     "concurrent-index-in-transaction", 15),
    ("cic-new-table-in-transaction", "BEGIN; CREATE TABLE n (a int); CREATE INDEX CONCURRENTLY ix_n ON n (a); "
     "COMMIT;", "high", "concurrent-index-in-transaction", 15),
    ("drop-index-concurrently", "DROP INDEX CONCURRENTLY ix_o", "low", "drop-index-concurrently", 15),
    ("drop-index-held", "BEGIN; DROP INDEX ix_o; UPDATE orders SET n = 1 WHERE n IS NULL; COMMIT;", "critical",
     "lock-held-in-transaction", 15),
    ("drop-index-concurrently-in-txn", "BEGIN; DROP INDEX CONCURRENTLY ix_o; COMMIT;", "high",
     "drop-index-concurrently-in-transaction", 15),
    ("reindex", "REINDEX TABLE orders", "high", "reindex", 15),
    ("reindex-index", "REINDEX INDEX ix_o", "high", "reindex", 15),
    ("reindex-concurrently", "REINDEX TABLE CONCURRENTLY orders", "low", "reindex-concurrently", 15),
    ("reindex-concurrently-pg11", "REINDEX TABLE CONCURRENTLY orders", "high", "reindex-concurrently-unsupported", 11),
    # -- maintenance statements squawk does not flag
    ("truncate", "TRUNCATE orders", "critical", "truncate", 15),
    ("truncate-many", "TRUNCATE orders, trades CASCADE", "critical", "truncate", 15),
    ("vacuum-full", "VACUUM FULL orders", "high", "vacuum-full", 15),
    ("vacuum", "VACUUM ANALYZE orders", "low", "vacuum", 15),
    ("vacuum-in-txn", "BEGIN; VACUUM orders; COMMIT;", "high", "vacuum-in-transaction", 15),
    ("cluster", "CLUSTER orders USING ix_o", "high", "cluster", 15),
    ("set-tablespace", "ALTER TABLE orders SET TABLESPACE fast", "high", "set-tablespace", 15),
    ("set-logged", "ALTER TABLE orders SET LOGGED", "high", "set-logged", 15),
    ("set-unlogged", "ALTER TABLE orders SET UNLOGGED", "high", "set-unlogged", 15),
    ("copy-from", "COPY orders FROM STDIN", "high", "copy-from", 15),
    ("refresh-matview", "REFRESH MATERIALIZED VIEW daily", "high", "refresh-matview", 15),
    ("refresh-matview-conc", "REFRESH MATERIALIZED VIEW CONCURRENTLY daily", "low",
     "refresh-matview-concurrently", 15),
    ("lock-table", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE", "high", "lock-table", 15),
    # -- renames and contract changes
    ("rename-column", "ALTER TABLE users RENAME COLUMN name TO full_name", "high", "rename-column", 15),
    ("rename-table", "ALTER TABLE users RENAME TO customers", "high", "rename-table", 15),
    ("rename-index", "ALTER INDEX ix_o RENAME TO ix_orders_created", "low", "rename-other", 15),
    ("set-schema", "ALTER TABLE users SET SCHEMA archive", "medium", "set-schema", 15),
    ("drop-schema", "DROP SCHEMA reporting CASCADE", "critical", "drop-schema", 15),
    ("drop-view", "DROP VIEW v_orders", "medium", "drop-view", 15),
    ("drop-type", "DROP TYPE order_status", "high", "drop-type", 15),
    ("drop-database", "DROP DATABASE prod", "critical", "drop-database", 15),
    # -- enums, extensions, procedural code
    ("enum-add", "ALTER TYPE order_status ADD VALUE 'held'", "low", "enum-add-value", 15),
    ("enum-add-pg11-txn", "BEGIN; ALTER TYPE order_status ADD VALUE 'held'; COMMIT;", "high",
     "enum-add-value-in-transaction", 11),
    ("enum-rename", "ALTER TYPE order_status RENAME VALUE 'new' TO 'open'", "high", "enum-rename-value", 15),
    ("create-enum", "CREATE TYPE mood AS ENUM ('a', 'b')", "low", None, 15),
    ("create-extension", "CREATE EXTENSION IF NOT EXISTS pg_trgm", "medium", "create-extension", 15),
    ("do-block", "DO $$ BEGIN UPDATE orders SET x = 1; END $$", "high", "do-block", 15),
    ("create-trigger", "CREATE TRIGGER t BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION f()", "low",
     "create-trigger", 15),
    # -- partitions and versions
    ("detach-partition", "ALTER TABLE measurements DETACH PARTITION m2020", "medium", "detach-partition", 15),
    ("detach-concurrently", "ALTER TABLE measurements DETACH PARTITION m2020 CONCURRENTLY", "low",
     "detach-partition-concurrently", 15),
    ("detach-concurrently-pg13", "ALTER TABLE measurements DETACH PARTITION m2020 CONCURRENTLY", "high",
     "detach-partition-concurrently-unsupported", 13),
    ("attach-partition", "ALTER TABLE measurements ATTACH PARTITION m2021 FOR VALUES FROM ('2021-01-01') TO "
     "('2022-01-01')", "medium", "attach-partition", 15),
    ("attach-partition-pg11", "ALTER TABLE measurements ATTACH PARTITION m2021 FOR VALUES FROM ('2021-01-01') TO "
     "('2022-01-01')", "high", "attach-partition-pre12", 11),
    ("create-partition", "CREATE TABLE m2021 PARTITION OF measurements FOR VALUES FROM ('2021-01-01') TO "
     "('2022-01-01')", "low", "create-partition", 15),
    # -- tables created earlier in the same run are not risky
    ("same-run-index", "CREATE TABLE n (a int, b text); CREATE INDEX ix_n ON n (a)", "low", "create-table", 15),
    ("same-run-fk", "CREATE TABLE n (a int); ALTER TABLE n ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES users(id)",
     "low", "create-table", 15),
    ("same-run-type-change", "CREATE TABLE n (a int); ALTER TABLE n ALTER COLUMN a TYPE bigint", "low",
     "create-table", 15),
    ("same-run-update", "CREATE TABLE n (a int); UPDATE n SET a = 1; DELETE FROM n", "low", "create-table", 15),
    ("same-run-not-null", "CREATE TABLE n (a int); ALTER TABLE n ALTER COLUMN a SET NOT NULL", "low",
     "create-table", 15),
    ("same-run-drop", "CREATE TABLE n (a int); DROP TABLE n", "low", "create-table", 15),
    # -- transactions: locks held across slow statements
    ("held-lock", "BEGIN; ALTER TABLE users ADD COLUMN x int; CREATE INDEX ix ON orders (a); COMMIT;", "high",
     "lock-held-in-transaction", 15),
    ("validate-same-transaction", "BEGIN; ALTER TABLE orders ADD CONSTRAINT ck CHECK (q > 0) NOT VALID;"
     "ALTER TABLE orders VALIDATE CONSTRAINT ck; COMMIT;", "medium", "lock-held-in-transaction", 15),
    ("validate-own-transaction", "ALTER TABLE orders ADD CONSTRAINT ck CHECK (q > 0) NOT VALID;"
     "ALTER TABLE orders VALIDATE CONSTRAINT ck;", "low", "validate-constraint", 15),
    # -- lock_timeout advice does not raise the level
    ("no-lock-timeout", "ALTER TABLE users ADD COLUMN x int", "low", "lock-timeout-missing", 15),
    # -- bookkeeping and quiet statements
    ("alembic-version", "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL);"
     "INSERT INTO alembic_version (version_num) VALUES ('0001');"
     "UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001'", "low", None, 15),
    ("select", "SELECT 1", "low", None, 15),
    ("set-lock-timeout", "SET lock_timeout = '2s'", "low", None, 15),
    ("comment-grant", "COMMENT ON TABLE users IS 'x'; GRANT SELECT ON users TO reporting", "low", None, 15),
    ("create-view", "CREATE VIEW v AS SELECT * FROM users", "low", None, 15),
]


@pytest.mark.parametrize("case_id,sql,expected,rule,version", CASES, ids=[c[0] for c in CASES])
def test_sql_case(case_id, sql, expected, rule, version):
    result = analyse_sql(sql, server_version=version).as_result()
    assert result["risk"] == expected, [(f["rule"], f["risk"]) for f in result["findings"]]
    if rule is not None:
        assert rule in [f["rule"] for f in result["findings"]]


def test_every_case_is_counted_once():
    # A case dropped or pasted twice by mistake changes the count: update it only with the cases.
    assert len(CASES) == 117
    assert len({case[0] for case in CASES}) == len(CASES)


def test_same_run_tables_give_no_finding_beyond_creation():
    result = analyse_sql("CREATE TABLE n (a int); CREATE INDEX ix_n ON n (a); ALTER TABLE n ADD COLUMN b int")
    assert [f["rule"] for f in result.as_result()["findings"]] == ["create-table"]


def test_bookkeeping_is_never_a_finding():
    sql = ("INSERT INTO alembic_version (version_num) VALUES ('0001');"
           "UPDATE alembic_version SET version_num='0002';DELETE FROM alembic_version;DROP TABLE alembic_version")
    assert analyse_sql(sql).as_result()["findings"] == []


def test_lock_timeout_set_silences_the_advice():
    result = analyse_sql("SET lock_timeout = '2s'; ALTER TABLE users ADD COLUMN x int").as_result()
    assert "lock-timeout-missing" not in [f["rule"] for f in result["findings"]]


def test_lock_timeout_zero_does_not_count():
    result = analyse_sql("SET lock_timeout = 0; ALTER TABLE users ADD COLUMN x int").as_result()
    assert "lock-timeout-missing" in [f["rule"] for f in result["findings"]]


def test_rules_are_well_formed():
    ids = [rule.id for rule in risk_rules.RULES]
    assert len(ids) == len(set(ids))
    for rule in risk_rules.RULES:
        assert rule.risk in risk_rules.LEVELS
        assert rule.lock in risk_rules.LOCK_STRENGTH
        assert rule.small_risk in (None,) + risk_rules.LEVELS and rule.large_risk in (None,) + risk_rules.LEVELS
        assert rule.message
        if risk_rules.LEVEL_INDEX[rule.risk] >= risk_rules.LEVEL_INDEX["high"]:
            assert rule.safe_alternative, rule.id


def test_quiet_statements_have_no_rules():
    # The engine consults RULES_BY_NODE first: a quiet kind with a rule would never be quiet.
    assert risk_rules.QUIET_STATEMENTS.isdisjoint(risk_rules.RULES_BY_NODE)


@pytest.mark.parametrize("old,new,expected", [
    (("varchar", (50,)), ("varchar", (100,)), True),
    (("varchar", (100,)), ("varchar", (50,)), False),
    (("varchar", (50,)), ("text", ()), True),
    (("text", ()), ("varchar", (10,)), False),
    (("numeric", (10, 2)), ("numeric", (12, 2)), True),
    (("numeric", (10, 2)), ("numeric", (12, 3)), False),
    (("int4", ()), ("int8", ()), False),
    (("cidr", ()), ("inet", ()), True),
])
def test_binary_coercible(old, new, expected):
    assert risk_rules.binary_coercible(old, new) is expected


@pytest.mark.parametrize("case_id,sql,expected,rule,version", CASES, ids=[c[0] for c in CASES])
def test_messages_and_alternatives_have_no_unfilled_placeholders(case_id, sql, expected, rule, version):
    for finding in analyse_sql(sql, server_version=version).as_result()["findings"]:
        for text in (finding["message"], finding["safe_alternative"]):
            assert "?" not in text.replace("?)", "") and "{" not in text, (finding["rule"], text)
