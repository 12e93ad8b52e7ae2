# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render pending Alembic revisions to SQL, one revision at a time, without the project's env.py.

env.py usually imports the whole application (settings, secrets, the Flask or FastAPI
app), so it is never executed here.  The revision scripts are loaded with Alembic's
``ScriptDirectory``; a script that cannot be imported is kept as a placeholder (its ids
read from the file with ``ast``) and reported as not analysed.  Each ``upgrade()`` runs
against an offline ``MigrationContext`` for the PostgreSQL dialect (``as_sql=True``)
whose output is captured per revision, so every finding names its revision.

The revision's Python is also read for what rendering cannot show: statements executed
in loops (batched data changes), a ``downgrade()`` that is missing, ``pass`` or raises,
and ``# migration-risk: ignore`` comments.
"""
from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils import _risk_rules as R
from ansible_collections.dbops.migrations.plugins.module_utils._risk_engine import (
    MigrationUnit, RiskInputError, parse_statements, suppressions_in_python)

try:
    from alembic.config import Config
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import Script, ScriptDirectory
    from alembic.script.revision import RevisionError, RevisionMap
    from alembic.util import CommandError
    HAS_ALEMBIC = True
    ALEMBIC_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported through missing_required_lib
    HAS_ALEMBIC = False
    ALEMBIC_IMPORT_ERROR = exc

LOAD_ERROR_ATTR = "__migration_risk_load_error__"


def _ids_from_source(path: Path) -> Dict[str, Any]:
    """revision / down_revision / branch_labels / depends_on read statically from a script."""
    found: Dict[str, Any] = {"revision": None, "down_revision": None, "branch_labels": None, "depends_on": None}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return found
    try:
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError):
        return _ids_by_pattern(text, found)
    for node in tree.body:
        targets: List[ast.expr] = []
        value = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and target.id in found:
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    pass
    return found


_ID_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=]+)?=\s*(.+?)\s*(?:#.*)?$", re.MULTILINE)


def _ids_by_pattern(text: str, found: Dict[str, Any]) -> Dict[str, Any]:
    """A script that does not even parse: read its ids line by line, as Alembic's templates write them."""
    for name, value in _ID_LINE.findall(text):
        try:
            found[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    return found


if HAS_ALEMBIC:
    class TolerantScriptDirectory(ScriptDirectory):
        """A ScriptDirectory that keeps going when one revision script cannot be imported."""

        def _load_revisions(self) -> Iterator[Script]:
            paths = [vers for vers in self._version_locations if vers.exists()]
            seen = set()
            for vers in paths:
                for file_path in Script._list_py_dir(self, vers):
                    real_path = file_path.resolve()
                    if real_path in seen:
                        continue
                    seen.add(real_path)
                    try:
                        script = Script._from_path(self, real_path)
                    except Exception as exc:  # the script imports code that is not installed, or is broken
                        script = _placeholder_script(real_path, exc)
                    if script is not None:
                        yield script

    def _placeholder_script(path: Path, exc: Exception) -> Optional["Script"]:
        ids = _ids_from_source(path)
        if not ids["revision"]:
            raise RiskInputError("revision script %s cannot be loaded (%s: %s) and its revision id cannot be read: "
                                 "fix the file" % (path, type(exc).__name__, exc))
        module = types.ModuleType("migration_risk_unloadable_%s" % ids["revision"])
        for key, value in ids.items():
            setattr(module, key, value)
        setattr(module, LOAD_ERROR_ATTR, "%s: %s" % (type(exc).__name__, exc))
        return Script(module, ids["revision"], path)


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


EXECUTING_CALLS = frozenset(("execute", "bulk_insert", "exec_driver_sql"))


def loop_data_changes(source: str) -> List[int]:
    """Lines of statements executed inside a for/while loop in upgrade()."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    func = _function(tree, "upgrade")
    if func is None:
        return []
    lines: List[int] = []
    for node in ast.walk(func):
        if isinstance(node, (ast.For, ast.While, ast.AsyncFor)):
            for inner in ast.walk(node):
                if (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute)
                        and inner.func.attr in EXECUTING_CALLS):
                    lines.append(inner.lineno)
                    break
    return lines


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


# --------------------------------------------------------------------------- rendering

@contextlib.contextmanager
def _restored_sys_path():
    """ScriptDirectory.from_config prepends the project's prepend_sys_path for good; undo it afterwards."""
    saved = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = saved


def _tolerant_scripts(cfg: "Config") -> "ScriptDirectory":
    scripts = ScriptDirectory.from_config(cfg)
    scripts.__class__ = TolerantScriptDirectory
    scripts.revision_map = RevisionMap(scripts._load_revisions)
    return scripts


def _config(alembic_config: str) -> "Config":
    path = Path(alembic_config)
    if not path.is_file():
        raise RiskInputError("alembic_config %s does not exist: give the path of the project's alembic.ini"
                             % alembic_config)
    try:
        cfg = Config(str(path))
        location = cfg.get_main_option("script_location")
    except Exception as exc:
        raise RiskInputError("alembic_config %s cannot be read (%s): check the file" % (alembic_config, exc))
    if not location:
        raise RiskInputError("alembic_config %s has no script_location in [alembic]: is it an alembic.ini?"
                             % alembic_config)
    return cfg


def render_revision(script: "Script", direction: str = "upgrade") -> str:
    """Offline SQL of one revision's upgrade() (or downgrade()), BEGIN/COMMIT and autocommit blocks included."""
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True,
              "transactional_ddl": True},
    )
    with Operations.context(context):
        with context.begin_transaction():
            getattr(script.module, direction)()
    return buffer.getvalue()


def downgrade_drops(sql: str) -> List[str]:
    """Tables and columns a downgrade drops: rolling back loses what was written to them since the upgrade."""
    drops: List[str] = []
    for stmt in parse_statements(sql, "downgrade()"):
        node = stmt.node
        if stmt.node_type == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
            drops.extend(name for name in R._drop_objects(node) if name != "alembic_version")
        elif stmt.node_type == "AlterTableStmt":
            table = R.relation_name(node.get("relation"))
            for item in node.get("cmds") or ():
                cmd = item.get("AlterTableCmd") or {}
                if cmd.get("subtype") == "AT_DropColumn":
                    drops.append("%s.%s" % (table, cmd.get("name")))
        elif stmt.node_type == "TruncateStmt":
            drops.extend(R.relation_name(rel.get("RangeVar")) for rel in node.get("relations") or ())
    return drops


def pending_units(alembic_config: str, from_revision: Optional[str] = None, to_revision: Optional[str] = None,
                  current_revisions: Optional[List[str]] = None) -> List[MigrationUnit]:
    """One MigrationUnit per pending revision, oldest first."""
    cfg = _config(alembic_config)
    with _restored_sys_path():
        try:
            scripts = _tolerant_scripts(cfg)
            lower = from_revision
            if lower is None:
                lower = ",".join(current_revisions) if current_revisions else "base"
            upper = to_revision or "heads"
            revs = list(_iterate(scripts, upper, lower))
        except RiskInputError:
            raise
        except (CommandError, RevisionError) as exc:
            if from_revision is None and current_revisions:
                raise RiskInputError(
                    "the database is at revision %s, which alembic project %s does not know (%s): is the code "
                    "older than the database? Check out the release that matches, or give from_revision"
                    % (", ".join(current_revisions), alembic_config, exc))
            raise RiskInputError("alembic project %s: %s -- check from_revision/to_revision against "
                                 "`alembic history`" % (alembic_config, exc))
        except Exception as exc:
            raise RiskInputError("alembic project %s cannot be read: %s: %s"
                                 % (alembic_config, type(exc).__name__, exc))
        base = os.path.dirname(os.path.abspath(alembic_config))
        units = []
        for script in reversed(revs):
            units.append(_unit_for(script, base))
    return units


def _iterate(scripts: "ScriptDirectory", upper: str, lower: str):
    lowers = [part for part in lower.split(",") if part]
    if len(lowers) <= 1:
        return scripts.iterate_revisions(upper, lowers[0] if lowers else "base")
    seen, out = set(), []
    for item in lowers:
        for rev in scripts.iterate_revisions(upper, item):
            if rev.revision not in seen:
                seen.add(rev.revision)
                out.append(rev)
    return out


def _unit_for(script: "Script", base: str) -> MigrationUnit:
    path = Path(script.path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError:
        source = ""
    usable, note = judge_downgrade(source)
    unit = MigrationUnit(sql="", revision=script.revision, source=os.path.relpath(str(script.path), base),
                         has_downgrade=usable, downgrade_note=note, suppressions=suppressions_in_python(source))
    load_error = getattr(script.module, LOAD_ERROR_ATTR, None)
    if load_error:
        unit.error = "cannot be imported without the application: %s" % load_error
        return unit
    if not hasattr(script.module, "upgrade"):
        unit.error = "the script has no upgrade() function"
        return unit
    try:
        unit.sql = render_revision(script)
    except Exception as exc:  # upgrade() needs a live connection or application code
        unit.error = "upgrade() cannot be rendered offline: %s: %s" % (type(exc).__name__, str(exc)[:300])
        return unit
    if usable:
        try:
            unit.downgrade_drops = downgrade_drops(render_revision(script, "downgrade"))
        except Exception as exc:  # the downgrade needs a live connection: judged from its source only
            unit.downgrade_note = "downgrade() cannot be rendered offline (%s); review it by hand" % type(exc).__name__
    unit.column_hints = existing_type_hints(source)
    for line in loop_data_changes(source):
        unit.extra_findings.append({"rule": "python-data-loop", "details": {"line": line},
                                    "statement": "upgrade() line %d" % line})
    return unit
