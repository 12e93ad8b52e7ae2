# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pending Alembic revisions as MigrationUnits: rendered SQL plus what the revision's Python shows.

The SQL comes from :mod:`risk.render` (offline, env.py never runs, stand-ins for modules that
cannot be imported, a bind that answers like PostgreSQL), run here or in the application's own
interpreter or image.  Its JSON payload is turned into units here, on the side that analyses:
the revision's Python is read for what rendering cannot show (statements executed in loops,
ORM objects changed in loops, a ``downgrade()`` that is missing, ``pass`` or raises, and
``# migration-risk: ignore`` comments).
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Any, Dict, List, Optional, Set, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.risk import rules as risk_rules
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import (
    MigrationUnit, RiskInputError, parse_statements, suppressions_in_python)

try:
    from ansible_collections.dbops.migrations.plugins.module_utils.risk import render
    HAS_ALEMBIC = render.HAS_RENDER_LIBS
    ALEMBIC_IMPORT_ERROR = render.RENDER_IMPORT_ERROR
except ImportError as exc:  # pragma: no cover - reported through missing_required_lib
    HAS_ALEMBIC = False
    ALEMBIC_IMPORT_ERROR = exc


@dataclasses.dataclass
class RenderedUnit(MigrationUnit):
    """A MigrationUnit with where its SQL came from."""

    source_sha256: str = ""
    stand_ins: List[str] = dataclasses.field(default_factory=list)
    down_revisions: List[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- Python source checks

def _function(tree: ast.Module, name: str) -> Optional[ast.FunctionDef]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def judge_downgrade(source: str) -> Tuple[bool, str]:
    """(usable, note): a downgrade() that is missing, only ``pass``/docstring, or raises is no plan."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return False, "the revision file does not parse (%s)" % exc.msg
    func = _function(tree, "downgrade")
    if func is None:
        return False, "downgrade() is missing"
    body = [stmt for stmt in func.body
            if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))]
    if not body or all(isinstance(stmt, ast.Pass) for stmt in body):
        return False, "downgrade() does nothing (pass)"
    if any(isinstance(stmt, ast.Raise) for stmt in body):
        return False, "downgrade() raises instead of reverting"
    return True, ""


EXECUTING_CALLS = frozenset(("execute", "bulk_insert", "exec_driver_sql", "executemany"))
ORM_WRITES = frozenset(("add", "add_all", "merge", "delete", "bulk_save_objects", "bulk_insert_mappings",
                        "bulk_update_mappings"))


def _module_functions(tree: ast.Module) -> Dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _reachable(tree: ast.Module, entry: str) -> List[ast.FunctionDef]:
    """``entry`` and the module's functions it calls, directly or not (data helpers live there)."""
    functions = _module_functions(tree)
    todo, seen, out = [entry], set(), []
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        out.append(functions[name])
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                todo.append(node.func.id)
    return out


def _literal_names(tree: ast.Module) -> Set[str]:
    """Module-level names bound to literal collections (``TABLES = ["a", "b"]``)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and _is_literal(node.value):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _is_literal(node: ast.expr) -> bool:
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_literal(elt) for elt in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is None or _is_literal(k) for k in node.keys) and all(_is_literal(v) for v in node.values)
    return isinstance(node, ast.Constant)


def _text(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - Python < 3.9
        return ""


def _session_like(receiver: ast.expr, sessions: Set[str]) -> bool:
    text = _text(receiver)
    return "session" in text.lower() or (isinstance(receiver, ast.Name) and receiver.id in sessions)


def _session_names(func: ast.FunctionDef) -> Set[str]:
    """Local names bound to an ORM session (``s = Session(bind=...)``, ``sessionmaker(...)()``)."""
    names = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and "session" in _text(
                node.value.func).lower():
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.withitem) and isinstance(node.context_expr, ast.Call) and "session" in _text(
                node.context_expr.func).lower() and isinstance(node.optional_vars, ast.Name):
            names.add(node.optional_vars.id)
    return names


def _loop_targets(loop: ast.AST) -> Set[str]:
    target = getattr(loop, "target", None)
    if target is None:
        return set()
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _data_change_in(loop: ast.AST, sessions: Set[str]) -> Optional[Tuple[int, str]]:
    """(line, how) of the first data change inside a loop body, if any."""
    targets = _loop_targets(loop)
    reads_rows = isinstance(loop, (ast.For, ast.AsyncFor)) and any(
        isinstance(n, ast.Call) for n in ast.walk(loop.iter))
    parts = list(loop.body) + list(loop.orelse) + ([loop.test] if isinstance(loop, ast.While) else [])
    for inner in (node for part in parts for node in ast.walk(part)):
        if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute):
            if inner.func.attr in EXECUTING_CALLS:
                return inner.lineno, "execute"
            if inner.func.attr in ORM_WRITES and _session_like(inner.func.value, sessions):
                return inner.lineno, "orm"
        if reads_rows and isinstance(inner, (ast.Assign, ast.AugAssign)):
            for target in (inner.targets if isinstance(inner, ast.Assign) else [inner.target]):
                if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                        and target.value.id in targets):
                    return inner.lineno, "orm"  # rows read from the database, changed one by one
    return None


def _statically_bounded(loop: ast.AST, literals: Set[str]) -> bool:
    """A loop over a literal collection renders every iteration: its statements are all in the SQL."""
    if not isinstance(loop, (ast.For, ast.AsyncFor)):
        return False
    iterable = loop.iter
    if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute) and iterable.func.attr in ("items", "keys", "values"):
        iterable = iterable.func.value
    return _is_literal(iterable) or (isinstance(iterable, ast.Name) and iterable.id in literals)


def python_data_changes(source: str) -> List[Dict[str, Any]]:
    """Data changes the rendered SQL cannot size: statements executed, or ORM objects changed, in a
    loop of upgrade() or of a function it calls.  Each: line, loop (for/while), via (execute/orm),
    batched (a while loop that stops on rowcount, or a loop inside an autocommit block)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    literals = _literal_names(tree)
    found: List[Dict[str, Any]] = []
    seen_lines: Set[int] = set()
    for func in _reachable(tree, "upgrade"):
        sessions = _session_names(func)
        autocommit = [n for n in ast.walk(func) if isinstance(n, ast.With) and "autocommit_block" in _text(n)]
        for node in ast.walk(func):
            if not isinstance(node, (ast.For, ast.While, ast.AsyncFor)) or _statically_bounded(node, literals):
                continue
            change = _data_change_in(node, sessions)
            if change is None or change[0] in seen_lines:
                continue
            line, via = change
            seen_lines.add(line)
            in_block = any(node in list(ast.walk(block)) for block in autocommit)
            batched = in_block or (isinstance(node, ast.While) and "rowcount" in _text(node))
            found.append({"line": line, "loop": "while" if isinstance(node, ast.While) else "for", "via": via,
                          "batched": batched})
    return sorted(found, key=lambda item: item["line"])


def loop_data_changes(source: str) -> List[int]:
    """Lines of data changes inside a for/while loop in upgrade() (and the functions it calls)."""
    return [item["line"] for item in python_data_changes(source)]


SA_TYPES = {"string": "varchar", "varchar": "varchar", "unicode": "varchar", "text": "text", "unicodetext": "text",
            "numeric": "numeric", "decimal": "numeric", "integer": "int4", "int": "int4", "biginteger": "int8",
            "bigint": "int8", "smallinteger": "int2", "smallint": "int2", "boolean": "bool", "date": "date",
            "float": "float8", "cidr": "cidr", "inet": "inet"}


def _sa_type(node: ast.expr) -> Optional[Tuple[str, Tuple[int, ...]]]:
    """sa.String(50) / sa.Numeric(12, 2) / sa.Text() / sa.Integer -> (pg type name, modifiers)."""
    call_args: List[ast.expr] = []
    if isinstance(node, ast.Call):
        call_args = list(node.args) + [kw.value for kw in node.keywords if kw.arg in ("length", "precision", "scale")]
        node = node.func
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
    if not name or name.lower() not in SA_TYPES:
        return None
    mods: List[int] = []
    for arg in call_args:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, int):
            mods.append(arg.value)
    return SA_TYPES[name.lower()], tuple(mods)


def existing_type_hints(source: str) -> Dict[Tuple[str, str], Tuple[str, Tuple[int, ...]]]:
    """The current column types that op.alter_column(..., existing_type=...) declares."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    func = _function(tree, "upgrade")
    hints: Dict[Tuple[str, str], Tuple[str, Tuple[int, ...]]] = {}
    if func is None:
        return hints
    for node in ast.walk(func):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "alter_column" and len(node.args) >= 2):
            continue
        table, column = node.args[0], node.args[1]
        if not (isinstance(table, ast.Constant) and isinstance(column, ast.Constant)):
            continue
        for kw in node.keywords:
            if kw.arg == "existing_type":
                found = _sa_type(kw.value)
                if found:
                    hints[(str(table.value), str(column.value))] = found
    return hints


# --------------------------------------------------------------------------- rendered payload -> units


def downgrade_drops(sql: str) -> List[str]:
    """Tables and columns a downgrade drops: rolling back loses what was written to them since the upgrade."""
    drops: List[str] = []
    for stmt in parse_statements(sql, "downgrade()"):
        node = stmt.node
        if stmt.node_type == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
            drops.extend(name for name in risk_rules._drop_objects(node) if name != "alembic_version")
        elif stmt.node_type == "AlterTableStmt":
            table = risk_rules.relation_name(node.get("relation"))
            for item in node.get("cmds") or ():
                cmd = item.get("AlterTableCmd") or {}
                if cmd.get("subtype") == "AT_DropColumn":
                    drops.append("%s.%s" % (table, cmd.get("name")))
        elif stmt.node_type == "TruncateStmt":
            drops.extend(risk_rules.relation_name(rel.get("RangeVar")) for rel in node.get("relations") or ())
    return drops


def _renders_nothing(sql: str) -> bool:
    try:
        return all(stmt.node_type == "TransactionStmt" for stmt in parse_statements(sql, "upgrade()"))
    except RiskInputError:
        return False


def unit_from_entry(entry: Dict[str, Any]) -> RenderedUnit:
    """One rendered revision (an entry of the render payload) as a MigrationUnit."""
    source = entry.get("source") or ""
    usable, note = judge_downgrade(source)
    unit = RenderedUnit(sql="", revision=entry["revision"], source=entry.get("path") or "",
                        has_downgrade=usable, downgrade_note=note, suppressions=suppressions_in_python(source),
                        source_sha256=entry.get("source_sha256") or "", stand_ins=list(entry.get("stand_ins") or []),
                        down_revisions=list(entry.get("down_revision") or []))
    if entry.get("error"):
        unit.error = entry["error"]
        return unit
    unit.sql = entry.get("upgrade_sql") or ""
    changes = python_data_changes(source)
    if not usable and not changes and _renders_nothing(unit.sql):
        # A merge point or an empty revision: there is nothing to undo, so no plan is missing.
        unit.has_downgrade, unit.downgrade_note = True, ""
    elif usable:
        if entry.get("downgrade_error"):
            unit.downgrade_note = "%s; review it by hand" % entry["downgrade_error"]
        else:
            try:
                unit.downgrade_drops = downgrade_drops(entry.get("downgrade_sql") or "")
            except RiskInputError as exc:
                unit.downgrade_note = "downgrade() SQL cannot be parsed (%s); review it by hand" % exc
    unit.column_hints = existing_type_hints(source)
    for change in changes:
        unit.extra_findings.append({"rule": "python-data-loop", "details": dict(change),
                                    "statement": "upgrade() line %d" % change["line"]})
    for item in entry.get("unrendered") or ():
        # A statement built from stand-ins (the application's models): its data change is unknown.
        details = {"line": item.get("line") or 0, "loop": None, "via": "stand-in", "batched": False}
        unit.extra_findings.append({"rule": "python-data-loop", "details": details,
                                    "statement": "upgrade() line %s: %s" % (item.get("line"), item.get("what"))})
    return unit


def units_from_payload(payload: Dict[str, Any]) -> List[RenderedUnit]:
    return [unit_from_entry(entry) for entry in payload.get("revisions") or ()]


def render_here(alembic_config: str, from_revision: Optional[str] = None, to_revision: Optional[str] = None,
                current_revisions: Optional[List[str]] = None, ini_section: str = "alembic",
                script_location: Optional[str] = None, server_version: Optional[int] = 15) -> Dict[str, Any]:
    """The render payload, produced in this interpreter (the controller executor)."""
    if not HAS_ALEMBIC:
        raise RiskInputError("alembic is not installed on the managed host: pip install alembic")
    try:
        return render.render_project(alembic_config, ini_section, script_location, from_revision,
                                     to_revision or "heads", current_revisions, server_version or 15)
    except render.RenderError as exc:
        raise RiskInputError(str(exc))


def pending_units(alembic_config: str, from_revision: Optional[str] = None, to_revision: Optional[str] = None,
                  current_revisions: Optional[List[str]] = None, ini_section: str = "alembic",
                  script_location: Optional[str] = None, server_version: Optional[int] = 15) -> List[MigrationUnit]:
    """One MigrationUnit per pending revision, oldest first, rendered here."""
    payload = render_here(alembic_config, from_revision, to_revision, current_revisions, ini_section,
                          script_location, server_version)
    return list(units_from_payload(payload))
