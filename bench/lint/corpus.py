"""Deterministic corpus of migration files for the lint benchmark (about 9 statements per file)."""
from __future__ import annotations

import random
from pathlib import Path

TYPES = ["integer", "bigint", "text", "varchar(80)", "numeric(12, 2)", "timestamptz", "boolean", "uuid"]


def _statements(rng: random.Random, n: int) -> list:
    table = "t%04d" % rng.randrange(10000)
    other = "t%04d" % rng.randrange(10000)
    new = "n%04d_%d" % (n, rng.randrange(100))
    col = "c%d" % rng.randrange(50)
    typ = rng.choice(TYPES)
    pool = [
        "SET lock_timeout = '2s'",
        "SET statement_timeout = '5s'",
        "CREATE TABLE IF NOT EXISTS %s (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, %s %s, "
        "created_at timestamptz NOT NULL DEFAULT now())" % (new, col, typ),
        "CREATE INDEX IF NOT EXISTS ix_%s_%s ON %s (%s)" % (new, col, new, col),
        "ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s" % (table, col, typ),
        "ALTER TABLE %s ADD COLUMN IF NOT EXISTS flag_%s boolean DEFAULT false" % (table, col),
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_%s_%s ON %s (%s)" % (table, col, table, col),
        "CREATE INDEX ix2_%s_%s ON %s (%s, id)" % (table, col, table, col),
        "ALTER TABLE %s ALTER COLUMN %s TYPE %s" % (table, col, typ),
        "ALTER TABLE %s ALTER COLUMN %s SET NOT NULL" % (table, col),
        "ALTER TABLE %s ADD CONSTRAINT fk_%s_%s FOREIGN KEY (%s) REFERENCES %s (id) NOT VALID" % (
            table, table, col, col, other),
        "ALTER TABLE %s VALIDATE CONSTRAINT fk_%s_%s" % (table, table, col),
        "ALTER TABLE %s ADD CONSTRAINT ck_%s CHECK (%s IS NOT NULL)" % (table, col, col),
        "UPDATE %s SET %s = DEFAULT WHERE %s IS NULL" % (table, col, col),
        "ALTER TABLE %s DROP COLUMN IF EXISTS old_%s" % (table, col),
        "COMMENT ON TABLE %s IS 'migration %d'" % (table, n),
        "INSERT INTO %s (%s) SELECT %s FROM %s WHERE id < 1000" % (new, col, col, other),
        "ALTER TABLE %s RENAME COLUMN %s TO %s_v2" % (table, col, col),
        "DROP INDEX CONCURRENTLY IF EXISTS ix_old_%s" % table,
        "ALTER TABLE %s ADD COLUMN IF NOT EXISTS ref_%s uuid DEFAULT gen_random_uuid()" % (table, col),
    ]
    chosen = pool[:1] + rng.sample(pool[2:], 8)
    return chosen


def generate(directory: Path, files: int = 2000, seed: int = 20261126) -> dict:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    statements = 0
    for n in range(files):
        stmts = _statements(rng, n)
        statements += len(stmts)
        (directory / ("%04d_migration.sql" % n)).write_text(";\n".join(stmts) + ";\n")
    return {"files": files, "statements": statements}
