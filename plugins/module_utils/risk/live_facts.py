# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live database facts for migration_risk: version, table sizes, columns, indexes, constraints.

Read in a few catalog queries (pg_class, pg_attribute, pg_index, pg_constraint) inside a
read-only transaction; nothing is written.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Optional, Set, Tuple


@dataclasses.dataclass
class ColumnFacts:
    type_name: str
    type_mods: Tuple[int, ...]
    not_null: bool


@dataclasses.dataclass
class TableFacts:
    name: str
    rows: Optional[int]
    size_bytes: Optional[int]
    relkind: str = "r"
    columns: Dict[str, ColumnFacts] = dataclasses.field(default_factory=dict)
    not_null_checks: Set[str] = dataclasses.field(default_factory=set)  # columns of validated CHECK (c IS NOT NULL)
    # constraint name -> column of a CHECK (column IS NOT NULL) NOT VALID: its VALIDATE proves a later SET NOT NULL
    unvalidated_not_null_checks: Dict[str, str] = dataclasses.field(default_factory=dict)
    # Columns that alone identify one row (primary key, valid non-partial unique index on the bare column).
    # None: not read from a database, so the engine keeps the conventional ``id``.
    unique_columns: Optional[Set[str]] = None
    indexes: Set[str] = dataclasses.field(default_factory=set)
    constraints: Dict[str, bool] = dataclasses.field(default_factory=dict)  # name -> validated


@dataclasses.dataclass
class DbFacts:
    """What the engine may know about the target database."""

    version_num: int
    tables: Dict[str, TableFacts] = dataclasses.field(default_factory=dict)
    index_tables: Dict[str, str] = dataclasses.field(default_factory=dict)
    alembic_revisions: Optional[List[str]] = None  # None: no version table (no revision applied yet)
    version_table: Optional[str] = None  # the version table read (schema.table), or looked for
    version_table_found: bool = False

    @property
    def version(self) -> int:
        return self.version_num // 10000

    def table(self, name: Optional[str]) -> Optional[TableFacts]:
        if not name:
            return None
        found = self.tables.get(name)
        if found is None and "." in name:
            schema, _sep, bare = name.partition(".")
            if schema == "public":
                found = self.tables.get(bare)
        return found


_TABLES_SQL = """
SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       c.relkind, c.reltuples::bigint, pg_total_relation_size(c.oid), c.oid
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
"""
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, t.typname, a.atttypmod, a.attnotnull
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""
# The last column: the column that alone forms a unique key on the whole table, or NULL.  A partial or
# expression index, or one still invalid (a failed CREATE UNIQUE INDEX CONCURRENTLY), proves nothing.
# {key_columns}: indnkeyatts (PostgreSQL 11+, INCLUDE columns are not keys) or indnatts.
_INDEXES_SQL = """
SELECT i.indrelid, CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       CASE WHEN i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
             AND i.{key_columns} = 1 THEN a.attname END
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
 WHERE i.indrelid = ANY(%s)
"""
_CONSTRAINTS_SQL = """
SELECT conrelid, conname, contype, convalidated, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE conrelid = ANY(%s)
"""
_NOT_NULL_CHECK = re.compile(r'^CHECK \(\(?"?([^"()\s]+)"? IS NOT NULL\)?\)( NOT VALID)?$', re.IGNORECASE)


def type_modifiers(type_name: str, typmod: int) -> Tuple[int, ...]:
    """Decode atttypmod into the modifiers written in SQL (varchar(n), numeric(p,s))."""
    if typmod is None or typmod < 0:
        return ()
    if type_name in ("varchar", "bpchar"):
        return (typmod - 4,)
    if type_name == "numeric":
        value = typmod - 4
        return ((value >> 16) & 0xFFFF, value & 0xFFFF)
    if type_name in ("varbit", "bit", "timestamp", "timestamptz", "time", "timetz", "interval"):
        return (typmod,)
    return ()


class VersionTableError(Exception):
    """The version table exists but cannot be read, or sits where the options do not look."""


def read_facts(conn, version_table: str = "alembic_version", version_table_schema: Optional[str] = None,
               read_version: bool = True) -> DbFacts:
    """Read the facts from an open psycopg2 connection (read-only, then rolled back)."""
    previous_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute("SHOW server_version_num")
            facts = DbFacts(version_num=int(cur.fetchone()[0]))
            cur.execute(_TABLES_SQL)
            by_oid: Dict[int, TableFacts] = {}
            for name, relkind, rows, size, oid in cur.fetchall():
                rows = None if rows is None or rows < 0 else int(rows)  # -1: never analysed
                table = TableFacts(name=name, rows=rows, size_bytes=int(size), relkind=relkind)
                facts.tables[name] = table
                by_oid[oid] = table
            oids = list(by_oid)
            if oids:
                cur.execute(_COLUMNS_SQL, (oids,))
                for oid, col, typname, typmod, notnull in cur.fetchall():
                    by_oid[oid].columns[col] = ColumnFacts(typname, type_modifiers(typname, typmod), bool(notnull))
                for table in by_oid.values():
                    table.unique_columns = set()
                key_columns = "indnkeyatts" if facts.version_num >= 110000 else "indnatts"
                cur.execute(_INDEXES_SQL.format(key_columns=key_columns), (oids,))
                for oid, index, unique_column in cur.fetchall():
                    by_oid[oid].indexes.add(index)
                    facts.index_tables[index] = by_oid[oid].name
                    if unique_column:
                        by_oid[oid].unique_columns.add(unique_column)
                cur.execute(_CONSTRAINTS_SQL, (oids,))
                for oid, name, contype, validated, definition in cur.fetchall():
                    table = by_oid[oid]
                    table.constraints[name] = bool(validated)
                    match = _NOT_NULL_CHECK.match(definition or "")
                    if contype == "c" and match:
                        if validated:
                            table.not_null_checks.add(match.group(1))
                        else:
                            table.unvalidated_not_null_checks[name] = match.group(1)
            _fill_missing_row_estimates(cur, facts)
            if read_version:
                _read_version_table(cur, facts, version_table, version_table_schema)
        conn.rollback()
        return facts
    except Exception:
        conn.rollback()  # autocommit cannot be restored inside the failed transaction
        raise
    finally:
        conn.autocommit = previous_autocommit


def _fill_missing_row_estimates(cur, facts: DbFacts) -> None:
    """Tables never analysed report -1 rows: estimate from pages, as the planner does."""
    for table in facts.tables.values():
        if table.rows is None and table.relkind in ("r", "m"):
            # Bounded: a table never analysed is counted up to 100,001 rows; beyond that its size decides.
            cur.execute("SELECT count(*) FROM (SELECT 1 FROM %s LIMIT 100001) s" % _qualified(table.name))
            count = int(cur.fetchone()[0])
            if count <= 100000:
                table.rows = count


def _qualified(name: str) -> str:
    return ".".join('"%s"' % part.replace('"', '""') for part in name.split(".", 1))


def _ident(name: str) -> str:
    return '"%s"' % name.replace('"', '""')


def _read_version_table(cur, facts: DbFacts, table: str, schema: Optional[str]) -> None:
    """The applied revisions.  "No revision applied yet" only when the table truly does not exist:
    a table that exists but cannot be read, or that lives in a schema the options do not name, is
    an error that says so."""
    wanted = "%s.%s" % (_ident(schema), _ident(table)) if schema else _ident(table)
    cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(%s)", (wanted,))
    row = cur.fetchone()
    if row is None:
        cur.execute("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relname = %s AND c.relkind IN ('r', 'p', 'v') ORDER BY 1", (table,))
        elsewhere = [r[0] for r in cur.fetchall()]
        if schema and schema in elsewhere:
            raise VersionTableError("the version table %s.%s exists but this user cannot see it (no USAGE on schema "
                                    "%s?): grant it, or give from_revision" % (schema, table, schema))
        if elsewhere and not schema:
            raise VersionTableError("the version table %s is not on the search_path, but exists in schema %s: set "
                                    "version_table_schema" % (table, ", ".join(elsewhere)))
        facts.version_table = "%s.%s" % (schema, table) if schema else table
        facts.version_table_found = False
        facts.alembic_revisions = None
        return
    facts.version_table = "%s.%s" % (row[0], row[1])
    facts.version_table_found = True
    cur.execute("SAVEPOINT dbops_version")
    try:
        cur.execute("SELECT version_num FROM %s.%s" % (_ident(row[0]), _ident(row[1])))
        facts.alembic_revisions = sorted(str(r[0]) for r in cur.fetchall())
    except Exception as exc:
        cur.execute("ROLLBACK TO SAVEPOINT dbops_version")
        raise VersionTableError("the version table %s cannot be read (%s): grant SELECT on it, or give from_revision"
                                % (facts.version_table, str(exc).strip().splitlines()[0] if str(exc).strip()
                                   else type(exc).__name__))
