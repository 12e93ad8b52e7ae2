# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalogue of migration rules.

Each rule is a small unit: a stable id, the parse-tree node it looks at, a matcher, the
PostgreSQL lock it takes, what that lock blocks, whether the table is rewritten or
scanned, a risk level, a message and a safe alternative (an Alembic rewrite where one
exists).  Matchers read the JSON parse tree of ``pglast.parser.parse_sql_json`` (plain
dicts and lists), which is several times faster than building pglast node objects.

Rules are grouped by node key (``IndexStmt``, ``AlterTableCmd:AT_AddColumn``, ...); for
one node the first rule whose matcher returns details wins, so specific rules come
before general ones.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

LEVELS: Tuple[str, ...] = ("low", "medium", "high", "critical")
LEVEL_INDEX: Dict[str, int] = {name: i for i, name in enumerate(LEVELS)}

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
EXCLUSIVE = "EXCLUSIVE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE = "SHARE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
ROW_SHARE = "ROW SHARE"
ACCESS_SHARE = "ACCESS SHARE"
NO_LOCK = "none"

# Lock modes ordered by strength, and what each one blocks for the application.
LOCK_STRENGTH = {NO_LOCK: 0, ACCESS_SHARE: 1, ROW_SHARE: 2, ROW_EXCLUSIVE: 3, SHARE_UPDATE_EXCLUSIVE: 4,
                 SHARE: 5, SHARE_ROW_EXCLUSIVE: 6, EXCLUSIVE: 7, ACCESS_EXCLUSIVE: 8}
BLOCKS_FOR_LOCK = {NO_LOCK: "none", ACCESS_SHARE: "none", ROW_SHARE: "none", ROW_EXCLUSIVE: "none",
                   SHARE_UPDATE_EXCLUSIVE: "none", SHARE: "writes", SHARE_ROW_EXCLUSIVE: "writes",
                   EXCLUSIVE: "writes", ACCESS_EXCLUSIVE: "reads_and_writes"}

# How the time a lock is held grows with the table: instant (catalog only), scan (read the
# table once), build (sort and write an index), rewrite (copy the table and its indexes),
# data (touch every row with DML).
INSTANT, SCAN, BUILD, REWRITE, DATA = "instant", "scan", "build", "rewrite", "data"


def max_level(*levels: str) -> str:
    best = "low"
    for level in levels:
        if level and LEVEL_INDEX[level] > LEVEL_INDEX[best]:
            best = level
    return best


@dataclasses.dataclass(frozen=True)
class Rule:
    """One catalogue entry."""

    id: str
    node: str
    operation: str
    lock: str
    risk: str
    message: str
    safe_alternative: str
    match: Callable[[Dict[str, Any], Any], Optional[Dict[str, Any]]]
    work: str = INSTANT
    rewrites_table: bool = False
    small_risk: Optional[str] = None  # risk when the table is known to be small
    medium_risk: Optional[str] = None  # risk when the table is known to lie between small and large
    large_risk: Optional[str] = None  # risk when the table is known to be large
    drop: bool = False              # destroys data (checklist: drops)
    data: bool = False              # processes rows (checklist: large_data)

    @property
    def blocks(self) -> str:
        return BLOCKS_FOR_LOCK[self.lock]


# --------------------------------------------------------------------------- helpers

def relation_name(rel: Optional[Dict[str, Any]]) -> Optional[str]:
    if not rel:
        return None
    name = rel.get("relname")
    schema = rel.get("schemaname")
    return "%s.%s" % (schema, name) if schema and schema != "public" else name


def names_of(items: Optional[List[Dict[str, Any]]]) -> List[str]:
    return [item["String"]["sval"] for item in items or () if "String" in item]


def type_of(type_name: Optional[Dict[str, Any]]) -> Tuple[str, Tuple[int, ...], bool]:
    """(canonical name, integer modifiers, is_array) of a TypeName node."""
    if not type_name:
        return ("", (), False)
    names = names_of(type_name.get("names"))
    name = names[-1].lower() if names else ""
    mods: List[int] = []
    for mod in type_name.get("typmods") or ():
        const = mod.get("A_Const")
        if const and "ival" in const:
            mods.append(int(const["ival"].get("ival", 0)))
    name = TYPE_ALIASES.get(name, name)
    return (name, tuple(mods), bool(type_name.get("arrayBounds")))


TYPE_ALIASES = {"character varying": "varchar", "int": "int4", "integer": "int4", "bigint": "int8",
                "smallint": "int2", "character": "bpchar", "char": "bpchar", "decimal": "numeric",
                "timestamp with time zone": "timestamptz", "bool": "bool", "boolean": "bool",
                "float8": "float8", "double precision": "float8", "real": "float4"}
SERIAL_TYPES = frozenset(("serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"))

VOLATILE_FUNCTIONS = frozenset((
    "random", "clock_timestamp", "timeofday", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc",
    "uuid_generate_v4", "uuidv4", "uuidv7", "nextval", "txid_current", "pg_current_xact_id", "setseed",
    "random_normal", "gen_random_bytes", "statement_timestamp"))


def function_names(node: Any) -> List[str]:
    found: List[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            call = item.get("FuncCall")
            if call is not None:
                names = names_of(call.get("funcname"))
                found.append(".".join(names).lower())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def is_volatile_expression(expr: Any) -> bool:
    for name in function_names(expr):
        schema, _sep, func = name.rpartition(".")
        if func in VOLATILE_FUNCTIONS:
            return True
        if schema and schema != "pg_catalog":
            return True  # a user-defined function: assume volatile
    return False


def column_constraints(coldef: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [c["Constraint"] for c in coldef.get("constraints") or () if "Constraint" in c]


def constraint_types(coldef: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {c.get("contype"): c for c in column_constraints(coldef)}


def def_node(cmd: Dict[str, Any], key: str) -> Dict[str, Any]:
    return (cmd.get("def") or {}).get(key) or {}


def has_option(options: Optional[List[Dict[str, Any]]], name: str) -> bool:
    for opt in options or ():
        elem = opt.get("DefElem")
        if elem and elem.get("defname") == name:
            arg = elem.get("arg")
            if arg and "Boolean" in arg:
                return bool(arg["Boolean"].get("boolval"))
            if arg and "Integer" in arg:
                return bool(arg["Integer"].get("ival"))
            return True
    return False


def binary_coercible(old: Tuple[str, Tuple[int, ...]], new: Tuple[str, Tuple[int, ...]]) -> bool:
    """True when ALTER COLUMN ... TYPE from ``old`` to ``new`` needs no rewrite (and no scan)."""
    old_name, old_mods = old
    new_name, new_mods = new
    if old_name == new_name and old_mods == new_mods:
        return True
    text_like = ("varchar", "text")
    if old_name in text_like and new_name in text_like:
        if new_name == "text" or not new_mods:
            return True
        if old_name == "varchar" and old_mods and new_mods and new_mods[0] >= old_mods[0]:
            return True
        return False
    if old_name == "numeric" and new_name == "numeric":
        if not new_mods:
            return True
        if old_mods and len(new_mods) >= 1:
            old_scale = old_mods[1] if len(old_mods) > 1 else 0
            new_scale = new_mods[1] if len(new_mods) > 1 else 0
            return new_scale == old_scale and new_mods[0] >= old_mods[0]
        return False
    if old_name == "varbit" and new_name == "varbit":
        return not new_mods or (bool(old_mods) and new_mods[0] >= old_mods[0])
    if (old_name, new_name) == ("cidr", "inet"):
        return True
    return False


# --------------------------------------------------------------------------- safe alternatives

ALT_INDEX = ("with op.get_context().autocommit_block():\n"
             "    op.create_index('{index}', '{table}', {columns}{unique}, postgresql_concurrently=True)\n"
             "(CREATE INDEX CONCURRENTLY outside the migration's transaction; if it fails, drop the INVALID "
             "index before retrying)")
ALT_DROP_INDEX = ("with op.get_context().autocommit_block():\n"
                  "    op.drop_index('{index}', postgresql_concurrently=True)")
ALT_FK = ("op.execute({fk_not_valid_sql})\n"
          "# then, in a later revision (its own transaction):\n"
          "op.execute('ALTER TABLE {table} VALIDATE CONSTRAINT {constraint}')")
ALT_CHECK = ("op.create_check_constraint('{constraint}', '{table}', '<condition>', postgresql_not_valid=True)\n"
             "# then, in a later revision:\nop.execute('ALTER TABLE {table} VALIDATE CONSTRAINT {constraint}')")
ALT_UNIQUE = ("with op.get_context().autocommit_block():\n"
              "    op.create_index('{constraint}', '{table}', {columns}, unique=True, postgresql_concurrently=True)\n"
              "op.execute('ALTER TABLE {table} ADD CONSTRAINT {constraint} UNIQUE USING INDEX {constraint}')")
ALT_PK = ("with op.get_context().autocommit_block():\n"
          "    op.create_index('{table}_pkey_idx', '{table}', {columns}, unique=True, postgresql_concurrently=True)\n"
          "op.execute('ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY USING INDEX {table}_pkey_idx')\n"
          "(make the key columns NOT NULL first, the four-step way)")
ALT_NOT_NULL = ("Four steps, each in its own revision:\n"
                "1. op.create_check_constraint('ck_{table}_{column}_nn', '{table}', '{column} IS NOT NULL', "
                "postgresql_not_valid=True)\n"
                "2. op.execute('ALTER TABLE {table} VALIDATE CONSTRAINT ck_{table}_{column}_nn')\n"
                "3. op.alter_column('{table}', '{column}', nullable=False)  # PostgreSQL 12+ skips the scan\n"
                "4. op.drop_constraint('ck_{table}_{column}_nn', '{table}')")
ALT_BACKFILL = ("Backfill in batches outside the schema change, in its own revision:\n"
                "conn = op.get_bind()\n"
                "with op.get_context().autocommit_block():\n"
                "    while True:\n"
                "        done = conn.execute(sa.text(\n"
                "            'UPDATE {table} SET ... WHERE id IN (SELECT id FROM {table} '\n"
                "            'WHERE <not yet done> LIMIT 5000)')).rowcount\n"
                "        if not done:\n"
                "            break")
ALT_TYPE = ("Expand/contract: op.add_column('{table}', sa.Column('{column}_new', NEW_TYPE, nullable=True)); "
            "write both columns from the application; backfill in batches; switch reads; drop the old column "
            "in a later release. (varchar widening, varchar->text and numeric precision increases need no rewrite.)")
ALT_DROP_COLUMN = ("Contract step of expand/contract: first release code that no longer reads or writes "
                   "{table}.{column} (SQLAlchemy: remove it from the model or mark it deferred), deploy, then drop "
                   "it in a later revision with a verified backup.")
ALT_DROP_TABLE = ("Stop using {table} in a released version first; rename it aside or revoke access for a release "
                  "cycle; drop it later with a verified backup.")
ALT_RENAME_COLUMN = ("op.add_column('{table}', sa.Column('new_name', ...)); write both, backfill, switch reads, "
                     "drop the old column later (or keep the name and map it in SQLAlchemy: "
                     "Column('new_name', key=...)).")
ALT_RENAME_TABLE = ("Rename the table and leave a view with the old name for the running release: "
                    "op.rename_table('{table}', 'new'); op.execute('CREATE VIEW {table} AS SELECT * FROM new'); "
                    "drop the view after the release.")
ALT_SERIAL = ("op.add_column('{table}', sa.Column('{column}', sa.BigInteger, nullable=True)); create the sequence "
              "and set the default separately (op.execute('ALTER TABLE ... ALTER COLUMN ... SET DEFAULT "
              "nextval(...)')), then backfill existing rows in batches.")
ALT_VOLATILE_DEFAULT = ("Add the column without a default (or with a constant one), then "
                        "op.alter_column('{table}', '{column}', server_default=sa.text('...')) for new rows, and "
                        "backfill existing rows in batches.")
ALT_NOT_NULL_NO_DEFAULT = ("Add the column nullable (or with a constant server_default), backfill it, then apply "
                           "the four-step NOT NULL.")
ALT_TRUNCATE = "DELETE in batches, or keep the data and drop the table in a later release with a verified backup."
ALT_VACUUM_FULL = ("Use pg_repack (online) or plain VACUUM; VACUUM FULL belongs in a maintenance window, "
                   "not in a migration.")
ALT_CLUSTER = "Use pg_repack --order-by (online), or run CLUSTER in a maintenance window."
ALT_REINDEX = ("with op.get_context().autocommit_block():\n"
               "    op.execute('REINDEX {reindex_target}')  # CONCURRENTLY needs PostgreSQL 12+")
ALT_TABLESPACE = "Move the table with pg_repack --tablespace, or in a maintenance window."
ALT_CONCURRENT_TXN = ("Run it outside the transaction: with op.get_context().autocommit_block(): ... "
                      "(a plain SQL file must not wrap it in BEGIN/COMMIT)")
ALT_ENUM = ("op.execute(\"ALTER TYPE name ADD VALUE IF NOT EXISTS 'v'\") in its own revision, inside "
            "op.get_context().autocommit_block() on PostgreSQL < 12; deploy code that handles the value "
            "before writing it.")
ALT_ENUM_RENAME = "Add the new value, write it from the application, backfill, stop using the old value."
ALT_LOCK_TIMEOUT = ("op.execute(\"SET lock_timeout = '2s'\") at the start of upgrade() (and retry on lock "
                    "timeout: dbops.migrations.alembic_migrate does both)")
ALT_HOLD = ("Split the migration: one transaction per slow statement, the brief ACCESS EXCLUSIVE changes in "
            "their own short transaction (separate revisions, or op.get_context().autocommit_block()).")
ALT_DETACH = "ALTER TABLE parent DETACH PARTITION part CONCURRENTLY (PostgreSQL 14+, outside a transaction)"
ALT_REFRESH = "REFRESH MATERIALIZED VIEW CONCURRENTLY (needs a unique index on the view)"
ALT_DATA_DELETE = ("Delete in batches keyed on the primary key, outside the schema change:\n"
                   "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE ... LIMIT 5000), repeated")


# --------------------------------------------------------------------------- matchers

def _always(node, ctx):
    return {}


def _rel(node, ctx):
    return {"table": relation_name(node.get("relation"))}


def _index_table(node, ctx):
    table = relation_name(node.get("relation"))
    columns = [elem["IndexElem"].get("name") or "expr" for elem in node.get("indexParams") or ()
               if "IndexElem" in elem]
    return {"table": table, "index": node.get("idxname") or "ix_%s_%s" % (table, "_".join(columns)),
            "columns": repr(columns), "unique": ", unique=True" if node.get("unique") else ""}


def m_index_concurrent_in_txn(node, ctx):
    if node.get("concurrent") and ctx.in_transaction:
        return _index_table(node, ctx)
    return None


def m_index_concurrent_pg14_bug(node, ctx):
    num = ctx.version_num
    if node.get("concurrent") and num and 140000 <= num < 140004:
        return _index_table(node, ctx)
    return None


def m_index_concurrent_partitioned(node, ctx):
    if node.get("concurrent"):
        table = relation_name(node.get("relation"))
        if ctx.relkind(table) == "p":
            return {"table": table}
    return None


def m_index_concurrent(node, ctx):
    return _index_table(node, ctx) if node.get("concurrent") else None


def m_index(node, ctx):
    return _index_table(node, ctx)


def _drop_objects(node):
    out = []
    for obj in node.get("objects") or ():
        if "List" in obj:
            out.append(".".join(names_of(obj["List"].get("items"))))
        elif "String" in obj:
            out.append(obj["String"]["sval"])
        elif "TypeName" in obj:
            out.append(".".join(names_of(obj["TypeName"].get("names"))))
    return out


def _drop_kind(kind):
    def matcher(node, ctx):
        if node.get("removeType") != kind:
            return None
        objs = _drop_objects(node)
        return {"objects": objs, "table": objs[0] if objs else None}
    return matcher


def m_drop_index_concurrent_in_txn(node, ctx):
    if node.get("removeType") == "OBJECT_INDEX" and node.get("concurrent") and ctx.in_transaction:
        objs = _drop_objects(node)
        return {"table": ctx.index_table(objs[0]) if objs else None}
    return None


def m_drop_index(concurrent: bool):
    def matcher(node, ctx):
        if node.get("removeType") != "OBJECT_INDEX" or bool(node.get("concurrent")) != concurrent:
            return None
        objs = _drop_objects(node)
        index = objs[0] if objs else None
        table = ctx.index_table(index) if index else None
        # An index whose table stays unknown still locks that table: assume it is large and busy.
        on = table or "the table of index %s" % index
        return {"table": table, "index": index, "_lock_on": on,
                "on": on if table else on + " (unknown here: assumed large and busy)"}
    return matcher


# ---- ALTER TABLE commands.  ``node`` is the AlterTableCmd; ctx.table is the statement's table.

def _cmd(node, ctx, **extra):
    details = {"table": ctx.table}
    details.update(extra)
    return details


def m_add_column_serial(node, ctx):
    coldef = def_node(node, "ColumnDef")
    name = type_of(coldef.get("typeName"))[0]
    if name in SERIAL_TYPES:
        return _cmd(node, ctx, column=coldef.get("colname"))
    return None


def m_add_column_contype(contype):
    def matcher(node, ctx):
        coldef = def_node(node, "ColumnDef")
        con = constraint_types(coldef).get(contype)
        if con is None:
            return None
        if contype == "CONSTR_GENERATED" and not _generated_stored(con):
            return None
        return _cmd(node, ctx, column=coldef.get("colname"))
    return matcher


def _generated_stored(con):
    # PostgreSQL 18 adds VIRTUAL generated columns, which are computed on read (no rewrite).
    return not con.get("generated_kind") == "v"


def m_add_column_volatile_default(node, ctx):
    coldef = def_node(node, "ColumnDef")
    con = constraint_types(coldef).get("CONSTR_DEFAULT")
    if con is not None and is_volatile_expression(con.get("raw_expr")):
        return _cmd(node, ctx, column=coldef.get("colname"))
    return None


def m_add_column_default_pre11(node, ctx):
    if ctx.version >= 11:
        return None
    coldef = def_node(node, "ColumnDef")
    if "CONSTR_DEFAULT" in constraint_types(coldef):
        return _cmd(node, ctx, column=coldef.get("colname"))
    return None


def m_add_column_not_null_no_default(node, ctx):
    coldef = def_node(node, "ColumnDef")
    types = constraint_types(coldef)
    if "CONSTR_NOTNULL" in types and "CONSTR_DEFAULT" not in types:
        facts = ctx.table_facts(ctx.table)
        if facts is not None and facts.rows == 0:
            return None  # an empty table accepts it; a plain add column
        return _cmd(node, ctx, column=coldef.get("colname"))
    return None


def m_add_column_index(node, ctx):
    coldef = def_node(node, "ColumnDef")
    types = constraint_types(coldef)
    if "CONSTR_UNIQUE" in types or "CONSTR_PRIMARY" in types:
        column = coldef.get("colname")
        return _cmd(node, ctx, column=column, constraint="%s_%s_key" % (ctx.table, column), columns=repr([column]))
    return None


def m_add_column_check(node, ctx):
    coldef = def_node(node, "ColumnDef")
    con = constraint_types(coldef).get("CONSTR_CHECK")
    if con is not None and not con.get("skip_validation"):
        column = coldef.get("colname")
        return _cmd(node, ctx, column=column, constraint=con.get("conname") or "%s_%s_check" % (ctx.table, column))
    return None


def m_add_column(node, ctx):
    return _cmd(node, ctx, column=def_node(node, "ColumnDef").get("colname"))


def m_drop_column(node, ctx):
    return _cmd(node, ctx, column=node.get("name"))


def _new_type(node):
    coldef = def_node(node, "ColumnDef")
    name, mods, is_array = type_of(coldef.get("typeName"))
    return coldef, name, mods, is_array


def m_alter_type_coercible(node, ctx):
    coldef, name, mods, is_array = _new_type(node)
    if coldef.get("raw_default") is not None and not _using_is_plain_cast(coldef, node.get("name")):
        return None
    old = ctx.column_type(ctx.table, node.get("name"))
    if old is None or is_array:
        return None
    if binary_coercible((old[0], tuple(old[1])), (name, mods)):
        return _cmd(node, ctx, column=node.get("name"), old_type=_fmt_type(old[0], old[1]),
                    new_type=_fmt_type(name, mods))
    return None


def _using_is_plain_cast(coldef, column):
    expr = coldef.get("raw_default") or {}
    cast = expr.get("TypeCast")
    if not cast:
        return False
    ref = (cast.get("arg") or {}).get("ColumnRef")
    return bool(ref) and names_of(ref.get("fields")) == [column]


def _fmt_type(name, mods):
    return "%s(%s)" % (name, ",".join(str(m) for m in mods)) if mods else name


def m_alter_type(node, ctx):
    coldef, name, mods, _is_array = _new_type(node)
    old = ctx.column_type(ctx.table, node.get("name"))
    details = _cmd(node, ctx, column=node.get("name"), new_type=_fmt_type(name, mods))
    if old is None and name in ("text", "varchar", "numeric") and coldef.get("raw_default") is None:
        details["note"] = (" Without the current column type this cannot be decided: varchar widening, "
                           "varchar->text and numeric precision increases need no rewrite; give db_url to check.")
    elif old is not None:
        details["note"] = " Current type %s." % _fmt_type(old[0], old[1])
    return details


def m_set_not_null_proven(node, ctx):
    if ctx.version >= 12 and ctx.has_not_null_check(ctx.table, node.get("name")):
        return _cmd(node, ctx, column=node.get("name"))
    return None


def m_set_not_null_already(node, ctx):
    if ctx.column_not_null(ctx.table, node.get("name")):
        return _cmd(node, ctx, column=node.get("name"))
    return None


def m_column(node, ctx):
    return _cmd(node, ctx, column=node.get("name"))


def _constraint(node):
    return def_node(node, "Constraint")


def m_constraint(contype, not_valid=None, using_index=None):
    def matcher(node, ctx):
        con = _constraint(node)
        if con.get("contype") != contype:
            return None
        if not_valid is not None and bool(con.get("skip_validation")) != not_valid:
            return None
        if using_index is not None and bool(con.get("indexname")) != using_index:
            return None
        keys = names_of(con.get("keys")) or names_of(con.get("fk_attrs"))
        suffix = {"CONSTR_FOREIGN": "fkey", "CONSTR_UNIQUE": "key", "CONSTR_PRIMARY": "pkey"}.get(contype, "check")
        bare = (ctx.table or "").rpartition(".")[2]
        details = _cmd(node, ctx, constraint=con.get("conname") or "%s_%s_%s" % (bare, "_".join(keys), suffix),
                       columns=repr(keys or ["col"]))
        if contype == "CONSTR_FOREIGN":
            details["referenced"] = relation_name(con.get("pktable"))
            details["fk_columns"] = repr(names_of(con.get("fk_attrs")))
            details["pk_columns"] = repr(names_of(con.get("pk_attrs")) or ["id"])
            if not not_valid:
                details["fk_not_valid_sql"] = repr(fk_not_valid_sql(getattr(ctx, "relation", None), con,
                                                                    details["constraint"]))
        return details
    return matcher


FK_MATCH = {"f": " MATCH FULL", "p": " MATCH PARTIAL"}
FK_ACTION = {"r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def fk_not_valid_sql(relation: Optional[Dict[str, Any]], con: Dict[str, Any], name: str) -> str:
    """The same foreign key as written (ON DELETE/UPDATE, MATCH, DEFERRABLE kept), added NOT VALID.

    Rendered by pglast's deparser from the parse tree with only the validation switched off."""
    con = dict(con, conname=name, skip_validation=True, initially_valid=False)
    stmt = {"relation": relation, "objtype": "OBJECT_TABLE",
            "cmds": [{"AlterTableCmd": {"subtype": "AT_AddConstraint", "def": {"Constraint": con},
                                        "behavior": "DROP_RESTRICT"}}]}
    try:
        from pglast.stream import RawStream
        if not relation:
            raise ValueError("no relation")
        return RawStream()(_ast_node("AlterTableStmt", stmt))
    except Exception:  # pragma: no cover - the deparser covers every FK the parser produces
        return _fk_not_valid_fallback(relation_name(relation) or "<table>", con)


def _ast_node(kind: str, body: Dict[str, Any]):
    """pglast AST node from the parser's JSON (the deparser works on AST nodes)."""
    from pglast import ast
    cls = getattr(ast, kind)
    slots = cls.__slots__
    data: Dict[str, Any] = {"@": kind}
    for key, value in body.items():
        if key not in slots and key + "_" in slots:  # Python keywords: def -> def_
            key += "_"
        info = slots.get(key)
        if info is None:
            continue
        typed = info.c_type.rstrip("*")
        if info.c_type.endswith("*") and typed not in ("Node", "List", "char") and isinstance(value, dict) \
                and hasattr(ast, typed):
            data[key] = _ast_node(typed, value)  # a typed field (RangeVar*) is not wrapped in the JSON
        else:
            data[key] = _ast_value(value)
    return cls(data)


def _ast_value(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_ast_value(item) for item in value)
    if isinstance(value, dict) and len(value) == 1:
        (kind, inner), = value.items()
        if isinstance(inner, dict) and kind[:1].isupper():
            return _ast_node(kind, inner)
    return value


def _fk_not_valid_fallback(table: str, con: Dict[str, Any]) -> str:
    text = "ALTER TABLE %s ADD CONSTRAINT %s FOREIGN KEY (%s) REFERENCES %s" % (
        table, con["conname"], ", ".join(names_of(con.get("fk_attrs"))), relation_name(con.get("pktable")))
    pk = names_of(con.get("pk_attrs"))
    if pk:
        text += " (%s)" % ", ".join(pk)
    text += FK_MATCH.get(con.get("fk_matchtype"), "")
    for key, words in (("fk_del_action", "ON DELETE"), ("fk_upd_action", "ON UPDATE")):
        if con.get(key) in FK_ACTION:
            text += " %s %s" % (words, FK_ACTION[con[key]])
    if con.get("deferrable"):
        text += " DEFERRABLE"
    if con.get("initdeferred"):
        text += " INITIALLY DEFERRED"
    return text + " NOT VALID"


def m_detach(concurrent):
    def matcher(node, ctx):
        part = def_node(node, "PartitionCmd")
        if bool(part.get("concurrent")) != concurrent:
            return None
        return _cmd(node, ctx, partition=relation_name(part.get("name")))
    return matcher


def m_detach_concurrent_unsupported(node, ctx):
    part = def_node(node, "PartitionCmd")
    if part.get("concurrent") and (ctx.version < 14 or ctx.in_transaction):
        return _cmd(node, ctx)
    return None


def m_attach_pre12(node, ctx):
    return _cmd(node, ctx) if ctx.version < 12 else None


def m_cmd(node, ctx):
    return _cmd(node, ctx)


# ---- other statements

def m_rename(kind):
    def matcher(node, ctx):
        if node.get("renameType") != kind:
            return None
        return {"table": relation_name(node.get("relation")), "column": node.get("subname"),
                "new_name": node.get("newname")}
    return matcher


def m_rename_any(node, ctx):
    return {"table": relation_name(node.get("relation"))}


def m_truncate(node, ctx):
    rels = [relation_name(r.get("RangeVar")) for r in node.get("relations") or ()]
    return {"table": rels[0] if rels else None, "tables": rels}


def m_where(has_where):
    def matcher(node, ctx):
        if bool(node.get("whereClause")) != has_where:
            return None
        return _rel(node, ctx)
    return matcher


# ---- what an UPDATE or DELETE touches, read from its WHERE clause

MAX_KEY_VALUES = 100        # a literal list of keys up to this long is "a few rows"
MAX_BATCH_ROWS = 100000     # one batch of the batched backfill touches at most this many rows
BATCH_RULES = frozenset(("update-batch", "delete-batch"))


def where_scope(node: Dict[str, Any], ctx) -> Optional[Tuple[str, str, Optional[int]]]:
    """("key" | "batch", key column, rows or None) when the WHERE clause bounds the rows touched.

    "key": equality (or a literal list of at most MAX_KEY_VALUES) on a column that identifies one row;
    "batch": the batched-backfill shapes, ``key IN (SELECT ... LIMIT n)`` or ``key BETWEEN a AND b``
    with parameters or a range of at most MAX_BATCH_ROWS. None: anything else (unbounded).
    """
    table = relation_name(node.get("relation"))
    keys = ctx.key_columns(table) if ctx is not None else {"id"}
    best = None
    for term in _conjuncts(node.get("whereClause")):
        scope = _term_scope(term, keys)
        if scope is not None and (best is None or (scope[0] == "key" and best[0] != "key")):
            best = scope
    return best


def _conjuncts(expr: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The terms of a top-level AND (a bound on any of them bounds the whole)."""
    if not expr:
        return []
    boolean = expr.get("BoolExpr")
    if boolean and boolean.get("boolop") == "AND_EXPR":
        out: List[Dict[str, Any]] = []
        for arg in boolean.get("args") or ():
            out.extend(_conjuncts(arg))
        return out
    return [expr]


def _key_column(expr: Optional[Dict[str, Any]], keys) -> Optional[str]:
    ref = (expr or {}).get("ColumnRef")
    fields = names_of(ref.get("fields")) if ref else []
    return fields[-1] if fields and fields[-1] in keys else None


def _constant(expr: Optional[Dict[str, Any]]) -> bool:
    """A literal or a bind parameter (possibly cast): one value known before the statement runs."""
    while expr and "TypeCast" in expr:
        expr = expr["TypeCast"].get("arg")
    return bool(expr) and ("A_Const" in expr or "ParamRef" in expr)


def _int_constant(expr: Optional[Dict[str, Any]]) -> Optional[int]:
    while expr and "TypeCast" in expr:
        expr = expr["TypeCast"].get("arg")
    const = (expr or {}).get("A_Const") or {}
    if "ival" in const:
        return int(const["ival"].get("ival", 0))
    return None


def _term_scope(term: Dict[str, Any], keys) -> Optional[Tuple[str, str, Optional[int]]]:
    expr = term.get("A_Expr")
    if expr is not None:
        kind = expr.get("kind")
        operator = names_of(expr.get("name"))
        left, right = expr.get("lexpr"), expr.get("rexpr")
        if kind == "AEXPR_OP" and operator == ["="]:
            column = _key_column(left, keys) if _constant(right) else _key_column(right, keys) if _constant(left) \
                else None
            return ("key", column, 1) if column else None
        column = _key_column(left, keys)
        if column is None:
            return None
        if kind == "AEXPR_IN" and operator == ["="]:
            values = ((right or {}).get("List") or {}).get("items") or []
            if 0 < len(values) <= MAX_KEY_VALUES and all(_constant(v) for v in values):
                return ("key", column, len(values))
        elif kind == "AEXPR_OP_ANY" and operator == ["="]:
            values = ((right or {}).get("A_ArrayExpr") or {}).get("elements") or []
            if 0 < len(values) <= MAX_KEY_VALUES and all(_constant(v) for v in values):
                return ("key", column, len(values))
        elif kind == "AEXPR_BETWEEN":
            bounds = ((right or {}).get("List") or {}).get("items") or []
            if len(bounds) == 2 and all(_constant(b) for b in bounds):
                low, high = (_int_constant(b) for b in bounds)
                if low is None or high is None:
                    # Parameters: one batch of a loop over key ranges, sized by the caller.
                    return ("batch", column, None) if any("ParamRef" in b for b in bounds) else None
                if 0 <= high - low < MAX_BATCH_ROWS:
                    return ("batch", column, high - low + 1)
        return None
    link = term.get("SubLink")
    if link is not None and link.get("subLinkType") == "ANY_SUBLINK":
        column = _key_column(link.get("testexpr"), keys)
        select = (link.get("subselect") or {}).get("SelectStmt") or {}
        limit = _int_constant(select.get("limitCount"))
        if column and limit is not None and 0 < limit <= MAX_BATCH_ROWS:
            return ("batch", column, limit)
    return None


def m_scope(wanted: str):
    def matcher(node, ctx):
        scope = where_scope(node, ctx)
        if scope is None or scope[0] != wanted:
            return None
        kind, column, rows = scope
        if rows is None:
            size = "the key range between its parameters"
        elif kind == "batch":
            size = "at most %s rows" % format(rows, ",")
        else:
            size = "%s %s" % (format(rows, ","), "row" if rows == 1 else "rows")
        return {"table": relation_name(node.get("relation")), "key": column, "size": size}
    return matcher


def m_insert_select(node, ctx):
    select = (node.get("selectStmt") or {}).get("SelectStmt") or {}
    if select.get("valuesLists") and not select.get("fromClause"):
        return None
    return _rel(node, ctx)


def m_copy_from(node, ctx):
    return _rel(node, ctx) if node.get("is_from") else None


def m_vacuum_full(node, ctx):
    if not node.get("is_vacuumcmd") or not has_option(node.get("options"), "full"):
        return None
    return _vacuum_rel(node)


def m_vacuum_in_txn(node, ctx):
    return _vacuum_rel(node) if node.get("is_vacuumcmd") and ctx.in_transaction else None


def _vacuum_rel(node):
    rels = [relation_name((r.get("VacuumRelation") or {}).get("relation")) for r in node.get("rels") or ()]
    return {"table": rels[0] if rels else None}


def m_vacuum(node, ctx):
    return _vacuum_rel(node)


def m_reindex_concurrent_unsupported(node, ctx):
    if has_option(node.get("params"), "concurrently") and (ctx.version < 12 or ctx.in_transaction):
        return _reindex_table(node, ctx)
    return None


def m_reindex(concurrent):
    def matcher(node, ctx):
        if has_option(node.get("params"), "concurrently") != concurrent:
            return None
        return _reindex_table(node, ctx)
    return matcher


def _reindex_table(node, ctx):
    rel = relation_name(node.get("relation"))
    if node.get("kind") == "REINDEX_OBJECT_INDEX" and rel:
        return {"table": ctx.index_table(rel) or None, "index": rel, "reindex_target": "INDEX CONCURRENTLY " + rel}
    return {"table": rel, "reindex_target": "TABLE CONCURRENTLY %s" % rel}


def m_enum_add_pre12_txn(node, ctx):
    if node.get("oldVal") is None and ctx.version < 12 and ctx.in_transaction:
        return {"type": ".".join(names_of(node.get("typeName")))}
    return None


def m_enum_add(node, ctx):
    if node.get("oldVal") is None:
        return {"type": ".".join(names_of(node.get("typeName")))}
    return None


def m_enum_rename(node, ctx):
    if node.get("oldVal") is not None:
        return {"type": ".".join(names_of(node.get("typeName")))}
    return None


def m_refresh(concurrent):
    def matcher(node, ctx):
        if bool(node.get("concurrent")) != concurrent:
            return None
        return _rel(node, ctx)
    return matcher


def m_lock_strong(node, ctx):
    mode = node.get("mode", 8)
    if mode >= 6:
        rels = [relation_name(r.get("RangeVar")) for r in node.get("relations") or ()]
        return {"table": rels[0] if rels else None}
    return None


def m_alter_schema(node, ctx):
    if node.get("objectType") in ("OBJECT_TABLE", "OBJECT_VIEW"):
        return {"table": relation_name(node.get("relation"))}
    return None


def m_create_partition(node, ctx):
    """CREATE TABLE ... PARTITION OF locks the parent (and scans a default partition)."""
    if not node.get("partbound"):
        return None
    parents = [relation_name(r.get("RangeVar")) for r in node.get("inhRelations") or () if "RangeVar" in r]
    if not parents:
        return None
    return {"table": parents[0], "partition": relation_name(node.get("relation"))}


def m_create_table(node, ctx):
    """A new table blocks nobody; foreign keys take SHARE ROW EXCLUSIVE on the referenced tables."""
    details = {"table": relation_name(node.get("relation")), "_blocks": "none"}
    if _references_other_table(node.get("tableElts") or ()):
        details.update(_lock=SHARE_ROW_EXCLUSIVE, _blocks="writes")
    return details


def _references_other_table(elements) -> bool:
    for element in elements:
        con = element.get("Constraint")
        if con is not None:
            if con.get("contype") == "CONSTR_FOREIGN":
                return True
            continue
        coldef = element.get("ColumnDef")
        if coldef is not None:
            for item in coldef.get("constraints") or ():
                if item.get("Constraint", {}).get("contype") == "CONSTR_FOREIGN":
                    return True
    return False


def m_create_trigger(node, ctx):
    return _rel(node, ctx)


# --------------------------------------------------------------------------- the catalogue

def _r(rule_id, node, operation, lock, risk, message, alt="", match=_always, **kw) -> Rule:
    return Rule(id=rule_id, node=node, operation=operation, lock=lock, risk=risk, message=message,
                safe_alternative=alt, match=match, **kw)


ALTER_TABLE_CMD = "AlterTableCmd:"

RULES: List[Rule] = [
    # ---- tables
    _r("create-partition", "CreateStmt", "create partition", ACCESS_EXCLUSIVE, "low",
       "Creating partition {partition} takes ACCESS EXCLUSIVE on {table} briefly (and scans its default "
       "partition, if there is one, under the same lock).",
       "Set lock_timeout first; with a default partition, create the table standalone and ATTACH PARTITION it "
       "after adding a matching CHECK constraint.", m_create_partition),
    _r("create-table", "CreateStmt", "create table", ACCESS_EXCLUSIVE, "low",
       "Creates a new table; nothing else is locked except the tables its foreign keys reference (briefly).",
       match=m_create_table),
    _r("create-table-as", "CreateTableAsStmt", "create table as", ACCESS_EXCLUSIVE, "low",
       "Creates a new table from a query; the source tables are only read.", match=lambda n, c: {
           "table": relation_name((n.get("into") or {}).get("rel")), "_blocks": "none"}),
    _r("drop-table", "DropStmt", "drop table", ACCESS_EXCLUSIVE, "critical",
       "Drops table {table} and all its data; the running release fails on every query that uses it.",
       ALT_DROP_TABLE, _drop_kind("OBJECT_TABLE"), drop=True),
    _r("rename-table", "RenameStmt", "rename table", ACCESS_EXCLUSIVE, "high",
       "Renaming {table} breaks every query of the running release that uses the old name.",
       ALT_RENAME_TABLE, m_rename("OBJECT_TABLE")),
    _r("rename-column", "RenameStmt", "rename column", ACCESS_EXCLUSIVE, "high",
       "Renaming {table}.{column} breaks the running release, which still uses the old name.",
       ALT_RENAME_COLUMN, m_rename("OBJECT_COLUMN")),
    _r("rename-schema", "RenameStmt", "rename schema", ACCESS_EXCLUSIVE, "high",
       "Renaming a schema breaks every client that qualifies names with it.",
       "Create the new schema, move objects with views left behind for one release, then drop the old names.",
       m_rename("OBJECT_SCHEMA")),
    _r("rename-other", "RenameStmt", "rename", ACCESS_EXCLUSIVE, "low",
       "Renames an object that clients do not usually name (index, constraint, sequence).", match=m_rename_any),
    _r("set-schema", "AlterObjectSchemaStmt", "set schema", ACCESS_EXCLUSIVE, "medium",
       "Moving {table} to another schema breaks clients that find it through search_path.",
       "Keep a view with the old qualified name for one release.", m_alter_schema),
    _r("truncate", "TruncateStmt", "truncate", ACCESS_EXCLUSIVE, "critical",
       "TRUNCATE {table} deletes every row and takes an ACCESS EXCLUSIVE lock.", ALT_TRUNCATE, m_truncate,
       drop=True, data=True),
    # ---- columns
    _r("add-column-serial", ALTER_TABLE_CMD + "AT_AddColumn", "add serial column", ACCESS_EXCLUSIVE, "high",
       "Adding serial column {table}.{column} fills every existing row from a sequence: the table is rewritten "
       "under ACCESS EXCLUSIVE.", ALT_SERIAL, m_add_column_serial, work=REWRITE, rewrites_table=True,
       small_risk="low", large_risk="critical"),
    _r("add-column-identity", ALTER_TABLE_CMD + "AT_AddColumn", "add identity column", ACCESS_EXCLUSIVE, "high",
       "Adding identity column {table}.{column} rewrites the table under ACCESS EXCLUSIVE.", ALT_SERIAL,
       m_add_column_contype("CONSTR_IDENTITY"), work=REWRITE, rewrites_table=True, small_risk="low",
       large_risk="critical"),
    _r("add-column-generated-stored", ALTER_TABLE_CMD + "AT_AddColumn", "add stored generated column", ACCESS_EXCLUSIVE, "high",
       "Adding stored generated column {table}.{column} computes it for every row: the table is rewritten.",
       "Add a plain nullable column, fill it from a trigger or the application, backfill in batches.",
       m_add_column_contype("CONSTR_GENERATED"), work=REWRITE, rewrites_table=True, small_risk="low",
       large_risk="critical"),
    _r("add-column-volatile-default", ALTER_TABLE_CMD + "AT_AddColumn", "add column with volatile default", ACCESS_EXCLUSIVE, "high",
       "The default of {table}.{column} is volatile, so every existing row gets its own value: the table is "
       "rewritten under ACCESS EXCLUSIVE.", ALT_VOLATILE_DEFAULT, m_add_column_volatile_default,
       work=REWRITE, rewrites_table=True, small_risk="low", large_risk="critical"),
    _r("add-column-default-pre11", ALTER_TABLE_CMD + "AT_AddColumn", "add column with default", ACCESS_EXCLUSIVE, "high",
       "Before PostgreSQL 11 a column default is written into every row: the table is rewritten.",
       ALT_VOLATILE_DEFAULT, m_add_column_default_pre11, work=REWRITE, rewrites_table=True,
       small_risk="low", large_risk="critical"),
    _r("add-column-unique", ALTER_TABLE_CMD + "AT_AddColumn", "add column with unique/primary key", ACCESS_EXCLUSIVE, "high",
       "Adding {table}.{column} with UNIQUE or PRIMARY KEY builds an index under ACCESS EXCLUSIVE.",
       ALT_UNIQUE, m_add_column_index, work=BUILD, small_risk="low", large_risk="critical"),
    _r("add-column-check", ALTER_TABLE_CMD + "AT_AddColumn", "add column with check", ACCESS_EXCLUSIVE, "high",
       "A CHECK on new column {table}.{column} is validated against every row under ACCESS EXCLUSIVE.",
       ALT_CHECK, m_add_column_check, work=SCAN, small_risk="low", medium_risk="medium", large_risk="high"),
    _r("add-column-not-null", ALTER_TABLE_CMD + "AT_AddColumn", "add NOT NULL column without default", ACCESS_EXCLUSIVE, "high",
       "Adding NOT NULL column {table}.{column} without a default fails if the table has rows, and the running "
       "release does not write it.", ALT_NOT_NULL_NO_DEFAULT, m_add_column_not_null_no_default),
    _r("add-column", ALTER_TABLE_CMD + "AT_AddColumn", "add column", ACCESS_EXCLUSIVE, "low",
       "Adds column {table}.{column}: a catalog change with a brief ACCESS EXCLUSIVE lock.", match=m_add_column),
    _r("drop-column", ALTER_TABLE_CMD + "AT_DropColumn", "drop column", ACCESS_EXCLUSIVE, "critical",
       "Drops {table}.{column} and its data; the running release fails if it still reads or writes it.",
       ALT_DROP_COLUMN, m_drop_column, drop=True),
    _r("alter-column-type-coercible", ALTER_TABLE_CMD + "AT_AlterColumnType", "change column type (no rewrite)", ACCESS_EXCLUSIVE, "low",
       "{table}.{column}: {old_type} -> {new_type} is binary coercible: no rewrite, a brief ACCESS EXCLUSIVE "
       "lock.", match=m_alter_type_coercible),
    _r("alter-column-type", ALTER_TABLE_CMD + "AT_AlterColumnType", "change column type", ACCESS_EXCLUSIVE, "high",
       "Changing the type of {table}.{column} to {new_type} rewrites the table and its indexes under ACCESS "
       "EXCLUSIVE.{note}", ALT_TYPE, m_alter_type, work=REWRITE, rewrites_table=True,
       small_risk="medium", large_risk="critical"),
    _r("set-not-null-proven", ALTER_TABLE_CMD + "AT_SetNotNull", "set not null (proven by check)", ACCESS_EXCLUSIVE, "low",
       "A validated CHECK ({column} IS NOT NULL) lets PostgreSQL 12+ skip the scan.", match=m_set_not_null_proven),
    _r("set-not-null-noop", ALTER_TABLE_CMD + "AT_SetNotNull", "set not null (already)", ACCESS_EXCLUSIVE, "low",
       "{table}.{column} is already NOT NULL.", match=m_set_not_null_already),
    _r("set-not-null", ALTER_TABLE_CMD + "AT_SetNotNull", "set not null", ACCESS_EXCLUSIVE, "high",
       "SET NOT NULL on {table}.{column} scans the whole table under ACCESS EXCLUSIVE, and the running release "
       "may still write NULLs.", ALT_NOT_NULL, m_column, work=SCAN, small_risk="medium",
       large_risk="critical"),
    _r("drop-not-null", ALTER_TABLE_CMD + "AT_DropNotNull", "drop not null", ACCESS_EXCLUSIVE, "low",
       "Drops NOT NULL on {table}.{column}: catalog only.", match=m_column),
    _r("set-default", ALTER_TABLE_CMD + "AT_ColumnDefault", "set/drop default", ACCESS_EXCLUSIVE, "low",
       "Changes the default of {table}.{column}: catalog only (existing rows are not touched).", match=m_column),
    _r("set-expression", ALTER_TABLE_CMD + "AT_SetExpression", "set generated expression", ACCESS_EXCLUSIVE, "high",
       "SET EXPRESSION recomputes {table}.{column} for every row: the table is rewritten.",
       "Add a new generated column or a plain column filled in batches, then switch to it.",
       m_column, work=REWRITE, rewrites_table=True, small_risk="low", large_risk="critical"),
    # ---- constraints
    _r("add-foreign-key-not-valid", ALTER_TABLE_CMD + "AT_AddConstraint", "add foreign key NOT VALID", SHARE_ROW_EXCLUSIVE, "low",
       "Adds foreign key {constraint} without checking existing rows; brief SHARE ROW EXCLUSIVE on {table} and "
       "{referenced}.", "Validate it later: op.execute('ALTER TABLE {table} VALIDATE CONSTRAINT {constraint}')",
       m_constraint("CONSTR_FOREIGN", not_valid=True)),
    _r("add-foreign-key", ALTER_TABLE_CMD + "AT_AddConstraint", "add foreign key", SHARE_ROW_EXCLUSIVE, "high",
       "Adding foreign key {constraint} validates every row of {table} while writes to {table} and {referenced} "
       "are blocked.", ALT_FK, m_constraint("CONSTR_FOREIGN", not_valid=False), work=SCAN, small_risk="low",
       large_risk="critical"),
    _r("add-check-not-valid", ALTER_TABLE_CMD + "AT_AddConstraint", "add check NOT VALID", ACCESS_EXCLUSIVE, "low",
       "Adds CHECK {constraint} without checking existing rows (brief ACCESS EXCLUSIVE).",
       "Validate it later: op.execute('ALTER TABLE {table} VALIDATE CONSTRAINT {constraint}')",
       m_constraint("CONSTR_CHECK", not_valid=True)),
    _r("add-check", ALTER_TABLE_CMD + "AT_AddConstraint", "add check constraint", ACCESS_EXCLUSIVE, "high",
       "Adding CHECK {constraint} scans every row of {table} under ACCESS EXCLUSIVE.", ALT_CHECK,
       m_constraint("CONSTR_CHECK", not_valid=False), work=SCAN, small_risk="low", large_risk="critical"),
    _r("add-unique-using-index", ALTER_TABLE_CMD + "AT_AddConstraint", "add unique USING INDEX", ACCESS_EXCLUSIVE, "low",
       "Attaches an existing unique index as constraint {constraint}: catalog only.",
       match=m_constraint("CONSTR_UNIQUE", using_index=True)),
    _r("add-unique", ALTER_TABLE_CMD + "AT_AddConstraint", "add unique constraint", ACCESS_EXCLUSIVE, "high",
       "Adding UNIQUE {constraint} builds its index under ACCESS EXCLUSIVE: {table} is unreadable meanwhile.",
       ALT_UNIQUE, m_constraint("CONSTR_UNIQUE", using_index=False), work=BUILD, small_risk="low",
       large_risk="critical"),
    _r("add-primary-key-using-index", ALTER_TABLE_CMD + "AT_AddConstraint", "add primary key USING INDEX", ACCESS_EXCLUSIVE, "low",
       "Attaches an existing unique index as the primary key (columns must already be NOT NULL).",
       match=m_constraint("CONSTR_PRIMARY", using_index=True)),
    _r("add-primary-key", ALTER_TABLE_CMD + "AT_AddConstraint", "add primary key", ACCESS_EXCLUSIVE, "high",
       "Adding a primary key to {table} builds its index (and checks NOT NULL) under ACCESS EXCLUSIVE.",
       ALT_PK, m_constraint("CONSTR_PRIMARY", using_index=False), work=BUILD, small_risk="low",
       large_risk="critical"),
    _r("add-exclusion", ALTER_TABLE_CMD + "AT_AddConstraint", "add exclusion constraint", ACCESS_EXCLUSIVE, "high",
       "An exclusion constraint builds its index under ACCESS EXCLUSIVE and has no NOT VALID form.",
       "Create a new table with the constraint and copy the data, or use a maintenance window.",
       m_constraint("CONSTR_EXCLUSION"), work=BUILD, small_risk="low", large_risk="critical"),
    _r("add-constraint", ALTER_TABLE_CMD + "AT_AddConstraint", "add constraint", ACCESS_EXCLUSIVE, "medium",
       "Adds a constraint to {table} under ACCESS EXCLUSIVE.", match=m_cmd),
    _r("validate-constraint", ALTER_TABLE_CMD + "AT_ValidateConstraint", "validate constraint", SHARE_UPDATE_EXCLUSIVE, "low",
       "VALIDATE CONSTRAINT scans {table} under SHARE UPDATE EXCLUSIVE: reads and writes continue.",
       "Keep it in its own transaction (a separate revision).", m_cmd, work=SCAN),
    _r("drop-constraint", ALTER_TABLE_CMD + "AT_DropConstraint", "drop constraint", ACCESS_EXCLUSIVE, "low",
       "Drops a constraint of {table} (brief ACCESS EXCLUSIVE; a foreign key also locks the referenced table).",
       match=m_cmd),
    # ---- table storage and partitions
    _r("set-tablespace", ALTER_TABLE_CMD + "AT_SetTableSpace", "set tablespace", ACCESS_EXCLUSIVE, "high",
       "SET TABLESPACE copies {table} file by file under ACCESS EXCLUSIVE.", ALT_TABLESPACE, m_cmd,
       work=REWRITE, rewrites_table=True, small_risk="low", large_risk="critical"),
    _r("set-logged", ALTER_TABLE_CMD + "AT_SetLogged", "set logged", ACCESS_EXCLUSIVE, "high",
       "SET LOGGED rewrites {table} under ACCESS EXCLUSIVE.", ALT_TABLESPACE.replace("--tablespace", ""), m_cmd, work=REWRITE, rewrites_table=True,
       small_risk="low", large_risk="critical"),
    _r("set-unlogged", ALTER_TABLE_CMD + "AT_SetUnLogged", "set unlogged", ACCESS_EXCLUSIVE, "high",
       "SET UNLOGGED rewrites {table} under ACCESS EXCLUSIVE (and its data is lost on a crash).",
       "Keep the table logged; if it must change, do it in a maintenance window.", m_cmd,
       work=REWRITE, rewrites_table=True, small_risk="low", large_risk="critical"),
    _r("attach-partition-pre12", ALTER_TABLE_CMD + "AT_AttachPartition", "attach partition", ACCESS_EXCLUSIVE, "high",
       "Before PostgreSQL 12 ATTACH PARTITION takes ACCESS EXCLUSIVE on the parent and scans the partition.",
       "Add a matching CHECK ... NOT VALID and VALIDATE it on the partition first.", m_attach_pre12, work=SCAN,
       small_risk="low"),
    _r("attach-partition", ALTER_TABLE_CMD + "AT_AttachPartition", "attach partition", SHARE_UPDATE_EXCLUSIVE, "medium",
       "ATTACH PARTITION scans the new partition (unless a valid CHECK implies the bound) under ACCESS "
       "EXCLUSIVE on the partition.", "Add a matching CHECK ... NOT VALID and VALIDATE it on the partition first.",
       m_cmd, work=SCAN, small_risk="low"),
    _r("detach-partition-concurrently-unsupported", ALTER_TABLE_CMD + "AT_DetachPartition", "detach partition concurrently",
       ACCESS_EXCLUSIVE, "high", "DETACH PARTITION CONCURRENTLY needs PostgreSQL 14+ and cannot run inside a transaction.",
       ALT_CONCURRENT_TXN, m_detach_concurrent_unsupported),
    _r("detach-partition-concurrently", ALTER_TABLE_CMD + "AT_DetachPartition", "detach partition concurrently", SHARE_UPDATE_EXCLUSIVE, "low",
       "Detaches a partition without blocking queries (PostgreSQL 14+).", match=m_detach(True)),
    _r("detach-partition", ALTER_TABLE_CMD + "AT_DetachPartition", "detach partition", ACCESS_EXCLUSIVE, "medium",
       "DETACH PARTITION takes ACCESS EXCLUSIVE on {table}.", ALT_DETACH, m_detach(False)),
    _r("alter-table", ALTER_TABLE_CMD + "*", "alter table", ACCESS_EXCLUSIVE, "low",
       "Catalog change on {table} with a brief ACCESS EXCLUSIVE lock.", match=m_cmd),
    # ---- indexes
    _r("concurrent-index-in-transaction", "IndexStmt", "create index concurrently in transaction", SHARE_UPDATE_EXCLUSIVE, "high",
       "CREATE INDEX CONCURRENTLY cannot run inside a transaction block: the migration fails at run time.",
       ALT_CONCURRENT_TXN, m_index_concurrent_in_txn),
    _r("concurrent-index-pg14-bug", "IndexStmt", "create index concurrently", SHARE_UPDATE_EXCLUSIVE, "high",
       "PostgreSQL 14.0-14.3 can corrupt indexes built CONCURRENTLY; upgrade to 14.4+ first.",
       "Upgrade the server to 14.4 or later, then REINDEX the indexes built concurrently.",
       m_index_concurrent_pg14_bug),
    _r("concurrent-index-partitioned", "IndexStmt", "create index concurrently on partitioned table", SHARE_UPDATE_EXCLUSIVE, "high",
       "CONCURRENTLY is not supported on a partitioned table: the statement fails.",
       "CREATE INDEX ... ON ONLY parent, CREATE INDEX CONCURRENTLY on each partition, then ALTER INDEX ... "
       "ATTACH PARTITION.", m_index_concurrent_partitioned),
    _r("create-index-concurrently", "IndexStmt", "create index concurrently", SHARE_UPDATE_EXCLUSIVE, "low",
       "Builds the index without blocking writes (an INVALID index is left behind if it fails).",
       "Check pg_index.indisvalid after a failure and drop the INVALID index before retrying.",
       m_index_concurrent),
    _r("create-index", "IndexStmt", "create index", SHARE, "high",
       "CREATE INDEX without CONCURRENTLY blocks writes to {table} for the whole build.", ALT_INDEX, m_index,
       work=BUILD, small_risk="low", medium_risk="medium", large_risk="high"),
    _r("drop-index-concurrently-in-transaction", "DropStmt", "drop index concurrently in transaction", SHARE_UPDATE_EXCLUSIVE, "high",
       "DROP INDEX CONCURRENTLY cannot run inside a transaction block: the migration fails at run time.",
       ALT_CONCURRENT_TXN, m_drop_index_concurrent_in_txn),
    _r("drop-index-concurrently", "DropStmt", "drop index concurrently", SHARE_UPDATE_EXCLUSIVE, "low",
       "Drops the index without blocking queries.", match=m_drop_index(True)),
    _r("drop-index", "DropStmt", "drop index", ACCESS_EXCLUSIVE, "medium",
       "DROP INDEX {index} takes ACCESS EXCLUSIVE on {on}: every read and write of it waits, queued behind "
       "every open transaction on it, and inside a transaction the lock is held until commit; queries that "
       "relied on the index get slower.", ALT_DROP_INDEX, m_drop_index(False)),
    _r("reindex-concurrently-unsupported", "ReindexStmt", "reindex concurrently", SHARE_UPDATE_EXCLUSIVE, "high",
       "REINDEX CONCURRENTLY needs PostgreSQL 12+ and cannot run inside a transaction block.", ALT_CONCURRENT_TXN,
       m_reindex_concurrent_unsupported),
    _r("reindex-concurrently", "ReindexStmt", "reindex concurrently", SHARE_UPDATE_EXCLUSIVE, "low",
       "Rebuilds indexes without blocking writes.", match=m_reindex(True)),
    _r("reindex", "ReindexStmt", "reindex", SHARE, "high",
       "REINDEX blocks writes to {table} and reads that use the index while it rebuilds.", ALT_REINDEX,
       m_reindex(False), work=BUILD, small_risk="low", medium_risk="medium", large_risk="high"),
    # ---- other drops
    _r("drop-schema", "DropStmt", "drop schema", ACCESS_EXCLUSIVE, "critical",
       "Drops a schema and everything in it.", "Drop its objects one by one, each after the release that stops "
       "using it, with a verified backup.", _drop_kind("OBJECT_SCHEMA"), drop=True),
    _r("drop-view", "DropStmt", "drop view", ACCESS_EXCLUSIVE, "medium", "Drops a view the running release may query.",
       "Drop it after the release that stops using it.", _drop_kind("OBJECT_VIEW")),
    _r("drop-materialized-view", "DropStmt", "drop materialized view", ACCESS_EXCLUSIVE, "medium",
       "Drops a materialized view the running release may query.", "", _drop_kind("OBJECT_MATVIEW")),
    _r("drop-type", "DropStmt", "drop type", ACCESS_EXCLUSIVE, "high", "Drops a type that columns or code may still use.",
       "Drop it in a later release, after no column, function or released code uses it.", _drop_kind("OBJECT_TYPE")),
    _r("drop-extension", "DropStmt", "drop extension", ACCESS_EXCLUSIVE, "high",
       "Drops an extension and, with CASCADE, everything that depends on it.",
       "Drop the dependent objects explicitly first (no CASCADE), in a reviewed step.", _drop_kind("OBJECT_EXTENSION")),
    _r("drop-sequence", "DropStmt", "drop sequence", ACCESS_EXCLUSIVE, "medium",
       "Drops a sequence that defaults may still use.", "", _drop_kind("OBJECT_SEQUENCE")),
    _r("drop-other", "DropStmt", "drop", ACCESS_EXCLUSIVE, "low", "Drops an object that holds no table data.", match=_always),
    _r("drop-database", "DropdbStmt", "drop database", ACCESS_EXCLUSIVE, "critical", "Drops a whole database.",
       "Never in a migration.", _always, drop=True),
    # ---- data changes
    _r("update-all-rows", "UpdateStmt", "update without WHERE", ROW_EXCLUSIVE, "critical",
       "UPDATE {table} rewrites every row in one transaction: row locks on all rows, WAL and bloat; "
       "writers block until commit.", ALT_BACKFILL, m_where(False), work=DATA, data=True,
       small_risk="medium"),
    _r("update-by-key", "UpdateStmt", "update by key", ROW_EXCLUSIVE, "low",
       "UPDATE {table} changes {size} chosen by key column {key}: only those rows are locked, briefly.",
       match=m_scope("key")),
    _r("update-batch", "UpdateStmt", "update one batch", ROW_EXCLUSIVE, "medium",
       "UPDATE {table} changes one bounded batch ({size}, chosen by {key}): the batched backfill. "
       "Each batch must commit on its own (autocommit_block) and the loop must stop when no row changes.",
       ALT_BACKFILL, m_scope("batch")),
    _r("update", "UpdateStmt", "update", ROW_EXCLUSIVE, "critical",
       "Data transformation on {table} in the migration: rows stay locked until the migration commits.",
       ALT_BACKFILL, m_where(True), work=DATA, data=True, small_risk="medium"),
    _r("delete-by-key", "DeleteStmt", "delete by key", ROW_EXCLUSIVE, "medium",
       "DELETE removes {size} of {table} chosen by key column {key}; only a backup brings them back.",
       "Keep a backup (or copy the rows aside) before deleting; the downgrade cannot restore them.",
       m_scope("key"), drop=True),
    _r("delete-batch", "DeleteStmt", "delete one batch", ROW_EXCLUSIVE, "medium",
       "DELETE removes one bounded batch of {table} ({size}, chosen by {key}); only a backup brings "
       "them back. Each batch must commit on its own.", ALT_DATA_DELETE, m_scope("batch"), drop=True),
    _r("delete", "DeleteStmt", "delete", ROW_EXCLUSIVE, "critical",
       "DELETE from {table} in the migration removes data; rows stay locked until commit.", ALT_DATA_DELETE, _rel,
       work=DATA, data=True, drop=True, small_risk="medium"),
    _r("insert-select", "InsertStmt", "insert ... select", ROW_EXCLUSIVE, "critical",
       "INSERT ... SELECT into {table} copies data inside the migration transaction.", ALT_BACKFILL,
       m_insert_select, work=DATA, data=True, small_risk="medium"),
    _r("insert-values", "InsertStmt", "insert values", ROW_EXCLUSIVE, "low", "Inserts a few literal rows into {table}.",
       match=_rel),
    _r("copy-from", "CopyStmt", "copy from", ROW_EXCLUSIVE, "high", "COPY loads data into {table} inside the migration.",
       "Load data outside the schema migration, in batches.", m_copy_from, work=DATA, data=True,
       small_risk="medium"),
    _r("copy-to", "CopyStmt", "copy to", ACCESS_SHARE, "low", "Exports data from {table}.", match=_rel),
    _r("merge", "MergeStmt", "merge", ROW_EXCLUSIVE, "critical", "MERGE into {table} changes data inside the migration.",
       ALT_BACKFILL, _rel, work=DATA, data=True, small_risk="medium"),
    # ---- maintenance statements
    _r("vacuum-full", "VacuumStmt", "vacuum full", ACCESS_EXCLUSIVE, "high",
       "VACUUM FULL rewrites {table} under ACCESS EXCLUSIVE.", ALT_VACUUM_FULL, m_vacuum_full, work=REWRITE,
       rewrites_table=True, small_risk="low", large_risk="critical"),
    _r("vacuum-in-transaction", "VacuumStmt", "vacuum in transaction", SHARE_UPDATE_EXCLUSIVE, "high",
       "VACUUM cannot run inside a transaction block: the migration fails at run time.", ALT_CONCURRENT_TXN,
       m_vacuum_in_txn),
    _r("vacuum", "VacuumStmt", "vacuum/analyze", SHARE_UPDATE_EXCLUSIVE, "low", "VACUUM/ANALYZE does not block reads or writes.",
       match=m_vacuum),
    _r("cluster", "ClusterStmt", "cluster", ACCESS_EXCLUSIVE, "high", "CLUSTER rewrites {table} under ACCESS EXCLUSIVE.",
       ALT_CLUSTER, _rel, work=REWRITE, rewrites_table=True, small_risk="low", large_risk="critical"),
    _r("refresh-matview-concurrently", "RefreshMatViewStmt", "refresh materialized view concurrently", EXCLUSIVE,
       "low", "Refreshes {table} while reads continue.", match=m_refresh(True)),
    _r("refresh-matview", "RefreshMatViewStmt", "refresh materialized view", ACCESS_EXCLUSIVE, "high",
       "REFRESH MATERIALIZED VIEW blocks reads of {table} until it finishes.", ALT_REFRESH, m_refresh(False),
       work=REWRITE, rewrites_table=True, small_risk="low", medium_risk="medium", large_risk="high"),
    _r("lock-table", "LockStmt", "lock table", ACCESS_EXCLUSIVE, "high",
       "An explicit strong LOCK on {table} blocks the application until the migration commits.",
       "Avoid explicit locks; set lock_timeout and keep the transaction short.", m_lock_strong),
    # ---- types, extensions, procedural code
    _r("enum-add-value-in-transaction", "AlterEnumStmt", "add enum value", ACCESS_EXCLUSIVE, "high",
       "Before PostgreSQL 12 ALTER TYPE ... ADD VALUE cannot run inside a transaction block.", ALT_ENUM,
       m_enum_add_pre12_txn),
    _r("enum-add-value", "AlterEnumStmt", "add enum value", ACCESS_EXCLUSIVE, "low",
       "Adds a value to enum {type}; the running release must not receive it before it understands it.",
       ALT_ENUM, m_enum_add),
    _r("enum-rename-value", "AlterEnumStmt", "rename enum value", ACCESS_EXCLUSIVE, "high",
       "Renaming a value of enum {type} breaks the running release, which still writes the old value.",
       ALT_ENUM_RENAME, m_enum_rename),
    _r("create-extension", "CreateExtensionStmt", "create extension", ACCESS_EXCLUSIVE, "medium",
       "CREATE EXTENSION needs elevated privileges and may run install scripts; install it ahead of the "
       "migration.", "Install extensions in a separate, reviewed step by a privileged role.", _always),
    _r("do-block", "DoStmt", "DO block", ACCESS_EXCLUSIVE, "high",
       "A DO block runs procedural code that static analysis cannot see into.",
       "Write the statements out as plain SQL so they can be checked.", _always),
    _r("create-trigger", "CreateTrigStmt", "create trigger", SHARE_ROW_EXCLUSIVE, "low",
       "Creates a trigger on {table} (brief SHARE ROW EXCLUSIVE); it runs on every write from now on.",
       match=m_create_trigger),
]

# Statement kinds that change no table data and take no lock the application notices. Only kinds
# without a rule belong here: the engine looks at RULES_BY_NODE first.
QUIET_STATEMENTS = frozenset((
    "TransactionStmt", "VariableSetStmt", "VariableShowStmt", "SelectStmt", "CommentStmt", "GrantStmt",
    "GrantRoleStmt", "CreateSchemaStmt", "CreateSeqStmt", "AlterSeqStmt", "ViewStmt", "CreateFunctionStmt",
    "CreateEnumStmt", "CompositeTypeStmt", "CreateDomainStmt", "CreateRoleStmt", "AlterRoleStmt",
    "CreatedbStmt", "ExplainStmt", "DeclareCursorStmt", "PrepareStmt", "ExecuteStmt", "DeallocateStmt",
    "AlterDefaultPrivilegesStmt", "CreatePolicyStmt", "AlterFunctionStmt", "CreateRangeStmt",
    "DefineStmt", "RuleStmt", "AlterOwnerStmt", "NotifyStmt", "ListenStmt", "CheckPointStmt", "DiscardStmt",
    "CreateStatsStmt", "AlterTSConfigurationStmt", "CreateCastStmt", "CreateOpClassStmt", "CreateEventTrigStmt",
    "CreatePublicationStmt", "AlterPublicationStmt", "CreateForeignTableStmt", "CallStmt",
    "AlterTypeStmt", "AlterCollationStmt", "AlterExtensionStmt", "AlterDomainStmt", "CreateTransformStmt",
    "CreateConversionStmt", "SecLabelStmt"))

# Rules that are not tied to one node: they look at a whole migration.
MIGRATION_RULES: Dict[str, Dict[str, str]] = {
    "lock-timeout-missing": dict(
        operation="no lock_timeout", lock=ACCESS_EXCLUSIVE, risk="low",
        message="No lock_timeout is set before {locked} is locked: if the lock waits behind a long transaction, "
                "every query on it queues behind the migration.",
        safe_alternative=ALT_LOCK_TIMEOUT),
    "lock-held-in-transaction": dict(
        operation="lock held across a slow statement", lock=ACCESS_EXCLUSIVE, risk="medium",
        message="Statement {number} is slow, and locks taken earlier in this transaction are still held "
                "while it runs, until the transaction commits: {held}.",
        safe_alternative=ALT_HOLD),
    "python-data-loop": dict(
        operation="data change in a Python loop", lock=ROW_EXCLUSIVE, risk="critical",
        message="upgrade() executes statements in a loop (line {line}): a data transformation whose size "
                "offline rendering cannot show.",
        safe_alternative=ALT_BACKFILL),
    "revision-not-analysed": dict(
        operation="revision not analysed", lock=ACCESS_EXCLUSIVE, risk="high",
        message="The revision could not be rendered, so its statements are unknown: {reason}",
        safe_alternative="Fix what the message names so the revision renders (imports of the application are "
                         "stood in for; syntax errors, errors raised by upgrade() and tables reflected from the "
                         "database are not), or review it by hand."),
    "statement-unknown": dict(
        operation="statement not in the catalogue", lock=ACCESS_EXCLUSIVE, risk="medium",
        message="{kind} is not in the rule catalogue; review it by hand.", safe_alternative=""),
}

RULES_BY_NODE: Dict[str, List[Rule]] = {}
for _rule in RULES:
    RULES_BY_NODE.setdefault(_rule.node, []).append(_rule)
RULES_BY_ID: Dict[str, Rule] = {rule.id: rule for rule in RULES}
# ALTER TABLE sub-commands by subtype (AT_AddColumn, ...), looked up once per command.
RULES_BY_SUBTYPE: Dict[str, List[Rule]] = {node[len(ALTER_TABLE_CMD):]: rules for node, rules in RULES_BY_NODE.items()
                                           if node.startswith(ALTER_TABLE_CMD) and node != ALTER_TABLE_CMD + "*"}
RULES_ANY_SUBTYPE: List[Rule] = RULES_BY_NODE[ALTER_TABLE_CMD + "*"]
ALL_RULE_IDS = frozenset(list(RULES_BY_ID) + list(MIGRATION_RULES))
