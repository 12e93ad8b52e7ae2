# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""migration_risk engine: parse each migration with pglast, apply the rule catalogue, score.

Input is a list of :class:`MigrationUnit` (one per Alembic revision, or one for a SQL
text); output is an :class:`Analysis` whose ``as_result()`` is the module's pinned
return value.  Tables created earlier in the same run are not risky; with live
:class:`DbFacts` table sizes move a verdict up or down; without them unknown tables are
assumed large enough to matter (the rule's base risk).
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gc
import json
import os
import re
import sys
import types
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, Iterable, Iterator, List, Optional, Set, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.risk import rules as risk_rules

if TYPE_CHECKING:  # pragma: no cover - annotations only; live facts are read by service.py
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.live_facts import DbFacts, TableFacts


class _PglastPackage(types.ModuleType):
    """The ``pglast`` package while only its parser is loaded: the rest of the package (the deparser's
    AST classes and enums, three quarters of its import time) runs on the first attribute it lacks."""

    def __getattr__(self, name):
        if name.startswith("__") or self.__dict__.get("_loading_rest"):
            raise AttributeError(name)
        self._loading_rest = True
        try:
            self.__spec__.loader.exec_module(self)
        finally:
            del self._loading_rest
        self.__class__ = types.ModuleType
        return getattr(self, name)


def _import_pglast_parser():
    """pglast's C parser, without loading the AST and enum modules before something uses them.

    The analysis only needs ``parse_sql_json``, ``scan`` and ``split``; the compiled parser imports
    ``pglast.ast`` and ``pglast.enums`` at load time but uses them only to build AST objects, so they
    are registered as lazy modules. ``import pglast`` elsewhere (the deparser of fk_not_valid_sql)
    then completes the package as usual."""
    if "pglast" in sys.modules:
        from pglast import parser
        return parser
    import importlib.util
    spec = importlib.util.find_spec("pglast")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'pglast'")
    package = importlib.util.module_from_spec(spec)
    package.__class__ = _PglastPackage
    sys.modules["pglast"] = package
    try:
        from pglast.error import Error
        package.Error = Error
        for name in ("ast", "enums"):
            sub = importlib.util.find_spec("pglast." + name)
            sub.loader = importlib.util.LazyLoader(sub.loader)
            module = importlib.util.module_from_spec(sub)
            sys.modules[sub.name] = module
            sub.loader.exec_module(module)
            setattr(package, name, module)
        from pglast import parser
        return parser
    except Exception:
        for name in [name for name in sys.modules if name == "pglast" or name.startswith("pglast.")]:
            del sys.modules[name]
        from pglast import parser
        return parser


try:
    _pglast_parser = _import_pglast_parser()
    HAS_PGLAST = True
    PGLAST_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module through missing_required_lib
    HAS_PGLAST = False
    PGLAST_IMPORT_ERROR = exc

try:
    # The parse tree arrives as JSON; orjson decodes it in about half the time of the standard library,
    # and the answer is the same, so it is used when installed.
    from orjson import loads as _json_loads
except ImportError:
    _json_loads = json.loads

DEFAULT_SERVER_VERSION = 15
BOOKKEEPING_TABLES = frozenset(("alembic_version",))  # Alembic's default version table


def bookkeeping_tables(version_table: Optional[str] = None,
                       version_table_schema: Optional[str] = None) -> FrozenSet[str]:
    """The names under which statements write the version table: Alembic's bookkeeping there is not a
    data change of the application.  Bare (as a search_path that finds it writes it) and, in a schema
    other than public, schema-qualified (public.x is read as x)."""
    table = version_table or "alembic_version"
    names = {table}
    if version_table_schema and version_table_schema != "public":
        names.add("%s.%s" % (version_table_schema, table))
    return frozenset(names)


# What a migration of each risk level asks of the release, in one table: ``path`` is the deploy path
# (deploy.yml's -e risk=...; playbooks/vars/release.yml's release_path_for_risk is the same mapping),
# ``recommended_path`` the older name of that path, ``backup`` how much a backup matters.
RELEASE_FOR_RISK: Dict[str, Dict[str, str]] = {
    "low": {"path": "low", "recommended_path": "auto", "backup": "optional"},
    "medium": {"path": "medium", "recommended_path": "review", "backup": "recommended"},
    "high": {"path": "high", "recommended_path": "manual", "backup": "required"},
    "critical": {"path": "high", "recommended_path": "manual", "backup": "required"},
}
STATEMENT_EXCERPT = 400

# Statements that fail at run time whatever the table: reported even on tables created in the run.
RUNTIME_FAILURES = frozenset((
    "concurrent-index-in-transaction", "drop-index-concurrently-in-transaction", "vacuum-in-transaction",
    "reindex-concurrently-unsupported", "detach-partition-concurrently-unsupported",
    "enum-add-value-in-transaction", "concurrent-index-pg14-bug"))
CREATE_RULES = frozenset(("create-table", "create-table-as"))
REMEMBERED_KINDS = frozenset(("CreateStmt", "CreateTableAsStmt", "IndexStmt", "DropStmt"))
# Statements that change neither schema nor data (a revision made only of these has nothing to undo).
NO_CHANGE_STATEMENTS = frozenset(("SelectStmt", "VariableShowStmt", "ExplainStmt", "CheckPointStmt",
                                  "DiscardStmt", "NotifyStmt", "ListenStmt", "UnlistenStmt", "DeallocateStmt",
                                  "PrepareStmt", "LoadStmt"))
WRITE_BLOCKING_LOCKS = frozenset((risk_rules.SHARE, risk_rules.SHARE_ROW_EXCLUSIVE, risk_rules.EXCLUSIVE, risk_rules.ACCESS_EXCLUSIVE))

# Throughput assumptions for lock-time estimates, in bytes of the table's relations (heap, indexes,
# TOAST) per second, measured by bench/rehearse (2 cores, table in memory) and set 10-40% below what it
# measured, so an estimate errs long: rewrites that compute new values ran at 67-73 MB/s, index builds at
# 120-300 MB/s, validating scans at 500-1100 MB/s. An exclusion constraint checks every row against its
# index while building it and ran at 49 MB/s.
RATE_BYTES = {risk_rules.REWRITE: 60e6, risk_rules.BUILD: 120e6, risk_rules.SCAN: 500e6}
RULE_RATE_BYTES = {"add-exclusion": 40e6}
RATE_ROWS_DATA = 20000.0
BRIEF_LOCK_SECONDS = 0.0

SUPPRESS_RE = re.compile(r"migration-risk:\s*ignore\s+([a-z0-9][a-z0-9_,\s-]*?)\s*(?:(?:because|reason:?)\s+(.+?))?\s*$",
                         re.IGNORECASE | re.MULTILINE)
SUPPRESS_MARK = "migration-risk"


def _has_mark(text: str) -> bool:
    return SUPPRESS_MARK in text.lower()


class RiskInputError(ValueError):
    """The input cannot be analysed (SQL that does not parse, an unknown revision, ...)."""


@dataclasses.dataclass
class Thresholds:
    small_table_rows: int = 10000
    small_table_bytes: int = 64 * 1024 * 1024
    large_table_rows: int = 1000000
    large_table_bytes: int = 1024 * 1024 * 1024


@dataclasses.dataclass
class RiskConfig:
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)
    disabled_rules: Set[str] = dataclasses.field(default_factory=set)
    risk_overrides: Dict[str, str] = dataclasses.field(default_factory=dict)
    require_lock_timeout: bool = True


@dataclasses.dataclass
class MigrationUnit:
    """One migration: a revision's rendered SQL, or a SQL text."""

    sql: str
    revision: Optional[str] = None
    source: str = "sql"
    has_downgrade: Optional[bool] = None
    downgrade_note: str = ""
    error: Optional[str] = None            # not analysed, and why
    suppressions: Dict[str, str] = dataclasses.field(default_factory=dict)  # whole-unit: rule -> reason
    extra_findings: List[Dict[str, Any]] = dataclasses.field(default_factory=list)  # from the Python source
    lock_timeout_set: bool = False         # the runner sets lock_timeout for this unit
    column_hints: Dict[Tuple[str, str], Tuple[str, Tuple[int, ...]]] = dataclasses.field(default_factory=dict)
    downgrade_drops: List[str] = dataclasses.field(default_factory=list)  # what rolling back destroys


@dataclasses.dataclass
class Finding:
    revision: Optional[str]
    statement: str
    operation: str
    rule: str
    risk: str
    lock: str
    blocks: str
    rewrites_table: bool
    table: Optional[str]
    rows_estimate: Optional[int]
    message: str
    safe_alternative: str
    # not part of the pinned output
    target: Optional[str] = None
    lock_seconds: Optional[float] = None
    drop: bool = False
    data: bool = False
    work: str = risk_rules.INSTANT
    line: int = 0
    source: str = ""
    suppressed_reason: Optional[str] = None
    size_class: str = "unknown"
    lock_on: Optional[str] = None          # what the lock is taken on (the table, or "the table of index x")
    in_transaction: bool = False           # inside an explicit transaction (BEGIN ... COMMIT)

    PINNED = ("revision", "statement", "operation", "rule", "risk", "lock", "blocks", "rewrites_table", "table",
              "rows_estimate", "message", "safe_alternative")

    def as_dict(self) -> Dict[str, Any]:
        return {key: getattr(self, key) for key in self.PINNED}

    def __getstate__(self) -> Dict[str, Any]:
        """Pickled with its texts computed (a finding sent back by a worker process)."""
        state = dict(self.__dict__)
        for name in LAZY_FINDING_FIELDS:
            state["_lazy_" + name] = getattr(self, name)
        state.pop("_texts", None)
        return state


@dataclasses.dataclass
class RevisionVerdict:
    revision: Optional[str]
    risk: str
    has_downgrade: Optional[bool]
    analysed: bool = True
    error: Optional[str] = None
    downgrade_note: str = ""
    source: str = ""
    statements: int = 0
    downgrade_drops: List[str] = dataclasses.field(default_factory=list)
    sql: List[str] = dataclasses.field(default_factory=list)  # the statements it was judged on
    changes: int = 0                       # statements (and Python data changes) that change something

    @property
    def nothing_to_undo(self) -> bool:
        """A merge revision or an empty upgrade(): there is nothing a downgrade would have to undo."""
        return self.analysed and self.changes == 0


@dataclasses.dataclass
class Analysis:
    findings: List[Finding]
    suppressed: List[Finding]
    revisions: List[RevisionVerdict]
    server_version: int
    alembic: bool = False
    bookkeeping_tables: FrozenSet[str] = BOOKKEEPING_TABLES  # the version table's names

    @property
    def risk(self) -> str:
        return risk_rules.max_level(*(f.risk for f in self.findings), *(r.risk for r in self.revisions))

    def checklist(self) -> Dict[str, Any]:
        drops = ["%s%s" % (_short(f), _in_revision(f)) for f in self.findings if f.drop]
        large = ["%s%s%s" % (_short(f), _in_revision(f),
                             "" if f.rows_estimate is None else " (about %s rows)" % format(f.rows_estimate, ","))
                 for f in self.findings if f.data]
        seconds: Optional[float] = 0.0
        for finding in self.findings:
            if finding.blocks == "none" and not finding.data:
                continue
            if finding.lock_seconds is None:
                seconds = None
                break
            seconds += finding.lock_seconds
        notes = []
        for rev in self.revisions:
            if rev.nothing_to_undo:
                continue
            if not rev.has_downgrade:
                notes.append("%s: %s" % (rev.revision, rev.downgrade_note or "no usable downgrade()"))
                continue
            if rev.downgrade_drops:
                notes.append("%s: downgrade() drops %s; what was written there after the upgrade is lost on "
                             "rollback (restore the backup to keep it)" % (rev.revision, ", ".join(rev.downgrade_drops)))
            if rev.downgrade_note:
                notes.append("%s: %s" % (rev.revision, rev.downgrade_note))
        if self.alembic:
            # Nothing pending needs nothing to roll back.
            has_plan = all(rev.has_downgrade or rev.nothing_to_undo for rev in self.revisions)
        else:
            has_plan = False
            notes.append("plain SQL has no downgrade: restore the backup to roll back")
        return {"drops": drops, "large_data": large,
                "estimated_lock_seconds": None if seconds is None else round(seconds, 1),
                "rollback_plan": has_plan, "rollback_notes": notes}

    def as_result(self) -> Dict[str, Any]:
        risk = self.risk
        return {
            "changed": False,
            "risk": risk,
            **RELEASE_FOR_RISK[risk],
            "findings": [f.as_dict() for f in self.findings],
            "revisions": [{"revision": r.revision, "risk": r.risk, "has_downgrade": r.has_downgrade,
                           "analysed": r.analysed, "error": r.error, "downgrade_drops": r.downgrade_drops,
                           "sql": r.sql}
                          for r in self.revisions],
            "checklist": self.checklist(),
            "suppressed": [dict(f.as_dict(), reason=f.suppressed_reason) for f in self.suppressed],
            "server_version": self.server_version,
        }


@contextlib.contextmanager
def _gc_paused():
    """Pause Python's cyclic garbage collector while analysing.

    A parse tree is a great many small dicts without cycles: the collector would walk all of them again
    at every collection (analysis time grew with the square of the input) and free nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _RuleTexts:
    """What a rule finding's texts are made from: they are written only when read (see Finding's lazy fields)."""

    __slots__ = ("rule", "details", "stmt", "table", "rows", "size", "sized")

    def __init__(self, rule: "risk_rules.Rule", details: Dict[str, Any], stmt: "Statement", table: Optional[str],
                 rows: Optional[int], size: Optional[int], sized: bool):
        self.rule = rule
        self.details = details
        self.stmt = stmt
        self.table = table
        self.rows = rows
        self.size = size
        self.sized = sized

    def statement(self) -> str:
        return _excerpt(self.stmt.text)

    def message(self) -> str:
        return _rule_message(self.rule, self.details, self.table, self.rows, self.size, self.sized)

    def safe_alternative(self) -> str:
        return _fill(self.rule.safe_alternative, self.details, self.table)

    def line(self) -> int:
        return self.stmt.line


def _lazy_field(name: str) -> property:
    slot = "_lazy_" + name
    compute = getattr(_RuleTexts, name)

    def read(self):
        values = self.__dict__
        if slot in values:
            return values[slot]
        value = values[slot] = compute(values["_texts"])
        return value

    def write(self, value):
        self.__dict__[slot] = value

    return property(read, write)


LAZY_FINDING_FIELDS = ("statement", "message", "safe_alternative", "line")
for _name in LAZY_FINDING_FIELDS:
    setattr(Finding, _name, _lazy_field(_name))


_new_finding = object.__new__


def _values(details: Dict[str, Any], table: Optional[str]) -> "_SafeDict":
    values = _SafeDict(details)
    if table is None:
        values["table"] = "its table"
    return values


def _rule_message(rule: risk_rules.Rule, details: Dict[str, Any], table: Optional[str], rows: Optional[int],
                  size: Optional[int], sized: bool) -> str:
    message = rule.message.format_map(_values(details, table))
    if sized:
        message += " %s has about %s rows (%s)." % (table, "?" if rows is None else format(rows, ","),
                                                    _human_bytes(size))
    return message


def _fill(template: str, details: Dict[str, Any], table: Optional[str]) -> str:
    return template.format_map(_values(details, table))


def _short(f: Finding) -> str:
    return "%s %s" % (f.operation.upper(), f.target or f.table or "")


def _target(details: Dict[str, Any], table: Optional[str]) -> Optional[str]:
    column = details.get("column")
    if table and column:
        return "%s.%s" % (table, column)
    if details.get("objects"):
        return ", ".join(details["objects"])
    return table


def _in_revision(f: Finding) -> str:
    return " in revision %s" % f.revision if f.revision else ""


class _SafeDict(dict):
    def __missing__(self, key):
        return "" if key in ("note", "unique") else "?"


# --------------------------------------------------------------------------- per-statement context

class StatementContext:
    """What matchers may ask about the run so far and the database."""

    __slots__ = ("version", "version_num", "facts", "run", "history", "in_transaction", "table", "relation")

    def __init__(self, version: int, version_num: Optional[int], facts: Optional[DbFacts], run: "RunState",
                 history: Optional["History"] = None):
        self.version = version
        self.version_num = version_num
        self.facts = facts
        self.run = run
        self.history = history if history is not None else History()
        self.in_transaction = False
        self.table: Optional[str] = None
        self.relation: Optional[Dict[str, Any]] = None  # the ALTER TABLE statement's RangeVar

    def table_facts(self, table: Optional[str]) -> Optional[TableFacts]:
        return self.facts.table(table) if self.facts is not None else None

    def relkind(self, table: Optional[str]) -> Optional[str]:
        facts = self.table_facts(table)
        return facts.relkind if facts else None

    def index_table(self, index: Optional[str]) -> Optional[str]:
        """The table of an index: created earlier in this analysis, or known to the database."""
        if not index:
            return None
        for known in (self.run.new_indexes, self.history.index_tables):
            if index in known:
                return known[index]
        if self.facts is not None:
            return self.facts.index_tables.get(index) or self.facts.index_tables.get(index.split(".")[-1])
        return None

    def key_columns(self, table: Optional[str]) -> Set[str]:
        """Columns that identify one row: the database's single-column unique keys when it tells them,
        otherwise the conventional ``id``."""
        facts = self.table_facts(table)
        unique = getattr(facts, "unique_columns", None) if facts is not None else None
        if unique is not None:
            return set(unique)
        return {"id"}

    def column_type(self, table: Optional[str], column: Optional[str]) -> Optional[Tuple[str, Tuple[int, ...]]]:
        hint = self.run.column_hints.get((table, column))
        if hint is not None:
            return hint
        facts = self.table_facts(table)
        if facts and column in facts.columns:
            col = facts.columns[column]
            return (col.type_name, col.type_mods)
        return None

    def column_not_null(self, table, column) -> bool:
        facts = self.table_facts(table)
        return bool(facts and column in facts.columns and facts.columns[column].not_null)

    def has_not_null_check(self, table, column) -> bool:
        """A validated CHECK (column IS NOT NULL): from an earlier statement or revision of this analysis,
        or already in the database."""
        for (check_table, _name), check_column in self.history.validated_not_null_checks.items():
            if check_table == table and check_column == column:
                return True
        facts = self.table_facts(table)
        return bool(facts and column in facts.not_null_checks)


@dataclasses.dataclass
class RunState:
    """What one run of statements created: later statements on these objects are not risky."""

    new_tables: Set[str] = dataclasses.field(default_factory=set)
    new_indexes: Dict[str, str] = dataclasses.field(default_factory=dict)
    column_hints: Dict[Tuple[Optional[str], Optional[str]], Tuple[str, Tuple[int, ...]]] = \
        dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class History:
    """What every revision of one analysis did, in order; kept across revisions even without a database
    (an index or a validated CHECK from an earlier revision is there when a later one runs)."""

    index_tables: Dict[str, Optional[str]] = dataclasses.field(default_factory=dict)
    # (table, constraint name) -> column, for CHECK (column IS NOT NULL) constraints
    validated_not_null_checks: Dict[Tuple[Optional[str], Optional[str]], str] = \
        dataclasses.field(default_factory=dict)
    pending_not_null_checks: Dict[Tuple[Optional[str], Optional[str]], str] = \
        dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- parsing

class SourceText:
    """The SQL a migration's statements were parsed from. A statement's text and line number are cut from
    it on first use: most statements are judged on their parse tree alone."""

    __slots__ = ("_sql", "_raw", "_ascii_only", "_starts")

    def __init__(self, sql: str, raw: bytes):
        self._sql = sql
        self._raw = raw
        self._ascii_only = len(raw) == len(sql)
        self._starts: Optional[List[int]] = None

    def text(self, start: int, end: int) -> str:
        """The text between two byte offsets (the parser's statement locations count bytes)."""
        if self._ascii_only:
            return self._sql[start:end].strip()
        return self._raw[start:end].decode("utf-8", "replace").strip()

    def line(self, offset: int) -> int:
        """The 1-based line of a byte offset, from a table of line starts built once (bisect per lookup)."""
        if self._starts is None:
            starts = [0]
            find = self._raw.find
            pos = find(b"\n")
            while pos >= 0:
                starts.append(pos + 1)
                pos = find(b"\n", pos + 1)
            self._starts = starts
        return bisect.bisect_right(self._starts, offset)


_NO_SUPPRESSIONS: Dict[str, str] = {}  # shared by every statement without a suppression comment; never changed


class Statement:
    """One parsed statement; its text and line number are computed only when something reads them."""

    __slots__ = ("node_type", "node", "offset", "end", "suppress", "number", "_source", "_text")

    def __init__(self, node_type: str, node: Dict[str, Any], offset: int, end: int, number: int,
                 source: SourceText):
        self.node_type = node_type
        self.node = node
        self.offset = offset
        self.end = end
        self.number = number            # 1-based position in its migration (revisions[].sql)
        self.suppress = _NO_SUPPRESSIONS
        self._source = source
        self._text: Optional[str] = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self._source.text(self.offset, self.end)
        return self._text

    @property
    def line(self) -> int:
        return self._source.line(self.offset)


def parse_statements(sql: str, where: str) -> List[Statement]:
    """Parse SQL into statements (with their text, line and inline suppressions)."""
    try:
        tree = _json_loads(_pglast_parser.parse_sql_json(sql))
    except Exception as exc:  # pglast.parser.ParseError
        raise RiskInputError(_parse_error_message(sql, where, exc)) from None
    raw = sql.encode("utf-8")
    source = SourceText(sql, raw)
    size = len(raw)
    out: List[Statement] = []
    for number, item in enumerate(tree.get("stmts") or (), 1):
        start = item.get("stmt_location", 0)
        length = item.get("stmt_len", 0)
        stmt = item["stmt"]
        node_type = next(iter(stmt))
        out.append(Statement(node_type, stmt[node_type], start, start + length if length else size, number, source))
    if out and _has_mark(sql):
        _attach_suppressions(sql, raw, out)
    return out


def _attach_suppressions(sql: str, raw: bytes, statements: List[Statement]) -> None:
    """Give each statement the suppressions of the real SQL comments around it.

    Comments come from PostgreSQL's own scanner, so text inside string literals never counts. A
    comment inside a statement, or after it on the same line, belongs to it; a comment on its own
    line belongs to the statement that follows.
    """
    starts = [stmt.offset for stmt in statements]
    for byte_start, text in _marked_comments(sql, raw):
        found = _suppressions(text)
        if not found:
            continue
        index = bisect.bisect_right(starts, byte_start) - 1   # the last statement starting before it
        if index < 0:
            owner = statements[0]
        elif byte_start < statements[index].end or b"\n" not in raw[statements[index].end:byte_start]:
            owner = statements[index]
        elif index + 1 < len(statements):
            owner = statements[index + 1]
        else:
            continue  # a comment on its own line after the last statement suppresses nothing
        owner.suppress = {**owner.suppress, **found}


def _marked_comments(sql: str, raw: bytes) -> Iterator[Tuple[int, str]]:
    """(byte offset, text) of each SQL comment that mentions migration-risk, in order."""
    ascii_only = len(raw) == len(sql)
    char_pos = byte_pos = 0
    for token in _pglast_parser.scan(sql):
        if token.name not in ("SQL_COMMENT", "C_COMMENT"):
            continue
        text = sql[token.start:token.end + 1]  # the scanner counts characters, the parser bytes
        if not _has_mark(text):
            continue
        text = text[2:-2] if token.name == "C_COMMENT" else text[2:]  # without /* */ or --
        if ascii_only:
            yield token.start, text
            continue
        byte_pos += len(sql[char_pos:token.start].encode("utf-8"))
        char_pos = token.start
        yield byte_pos, text


def _suppressions(text: str) -> Dict[str, str]:
    found: Dict[str, str] = {}
    for match in SUPPRESS_RE.finditer(text):
        reason = (match.group(2) or "").strip()
        for rule in re.split(r"[\s,]+", match.group(1).strip()):
            if rule:
                found[rule.lower()] = reason
    return found


def suppressions_in_python(source: str) -> Dict[str, str]:
    """``# migration-risk: ignore RULE because REASON`` comments in a revision file.

    Only real comments count (Python's own tokenizer): the same words in a docstring or a string
    literal, such as SQL handed to op.execute(), suppress nothing.
    """
    if not _has_mark(source):
        return {}
    import io
    import tokenize
    comments: List[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT and _has_mark(token.string):
                comments.append(token.string[1:])
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a file that does not tokenize to the end keeps the comments read so far
    return _suppressions("\n".join(comments))


def _parse_error_message(sql: str, where: str, exc: Exception) -> str:
    location = getattr(exc, "location", None)
    if location is None and len(getattr(exc, "args", ())) > 1 and isinstance(exc.args[1], int):
        location = exc.args[1]
    detail = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
    if isinstance(location, int) and 0 <= location <= len(sql):
        line_no = sql.count("\n", 0, location) + 1
        line = sql.splitlines()[line_no - 1] if sql.splitlines() else ""
        return ("%s: SQL does not parse (%s) at line %d: %s -- fix the statement (PostgreSQL syntax) and run "
                "the check again" % (where, detail, line_no, line.strip()[:200]))
    return "%s: SQL does not parse (%s) -- fix the statement and run the check again" % (where, detail)


def _unit_where(unit: MigrationUnit) -> str:
    return ("revision %s (%s)" % (unit.revision, unit.source)) if unit.revision else unit.source


def _parse_unit(unit: MigrationUnit) -> Any:
    """The statements of a unit, or the RiskInputError that reports SQL that does not parse (raised in
    unit order by the analysis, so a parallel parse fails exactly as a serial one)."""
    if unit.error or not unit.sql.strip():
        return []
    try:
        return parse_statements(unit.sql, _unit_where(unit))
    except RiskInputError as exc:
        return exc


# --------------------------------------------------------------------------- worker processes

PARALLEL_MIN_UNITS = 200  # below this, starting workers costs more than it saves


def effective_jobs(jobs: Optional[int], items: int) -> int:
    """Processes to use for ``items`` independent pieces of work: ``jobs`` as given (1: in this process), or
    for 0/None one per CPU when there are at least PARALLEL_MIN_UNITS pieces."""
    if not jobs:
        if items < PARALLEL_MIN_UNITS:
            return 1
        jobs = _cpu_count()
    if not hasattr(os, "fork"):
        return 1
    return max(1, min(int(jobs), items))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parallel_map(function, items: List[Any], jobs: int) -> List[Any]:
    """``[function(item) for item in items]`` computed by ``jobs`` processes, in the same order.

    Workers are forked (they share the loaded code and the inputs) and send their results back
    pickled; this process computes one share itself. Items are dealt round-robin so that shares of a
    sorted list of files are alike. A worker that dies without an answer has its share computed here,
    so the result is always the serial one."""
    jobs = min(jobs, len(items))
    if jobs <= 1 or not hasattr(os, "fork"):
        return [function(item) for item in items]
    import pickle
    shares = [items[start::jobs] for start in range(jobs)]
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    workers = []
    for share in shares[1:]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker (coverage does not follow forks)
            os.close(read_fd)
            code = 0
            try:
                payload = pickle.dumps([function(item) for item in share], pickle.HIGHEST_PROTOCOL)
                with os.fdopen(write_fd, "wb") as out:
                    out.write(payload)
            except BaseException:  # the parent computes this share itself
                code = 1
            os._exit(code)
        os.close(write_fd)
        workers.append((pid, read_fd))
    results = [[function(item) for item in shares[0]]]
    for (pid, read_fd), share in zip(workers, shares[1:]):
        with os.fdopen(read_fd, "rb") as handle:
            payload = handle.read()
        _pid, status = os.waitpid(pid, 0)
        answer = None
        if status == 0 and payload:
            try:
                answer = pickle.loads(payload)
            except Exception:
                answer = None
        if answer is None or len(answer) != len(share):
            answer = [function(item) for item in share]
        results.append(answer)
    merged: List[Any] = [None] * len(items)
    for start, answer in enumerate(results):
        merged[start::jobs] = answer
    return merged


def analyse_files(paths: List[str], server_version: Optional[int] = None, facts: Optional[DbFacts] = None,
                  config: Optional[RiskConfig] = None, jobs: Optional[int] = 1,
                  summary=None) -> List[Any]:
    """Each SQL file analysed by itself (as ``sql_file`` is), in the order given.

    ``summary(path, analysis)`` picks what is kept of each analysis (default: the Analysis itself); with
    ``jobs`` other than 1 the files are shared among worker processes (0/None: one per CPU from
    PARALLEL_MIN_UNITS files on), and what ``summary`` returns must pickle. The answer is the same as
    with jobs=1; the first file (in order) that cannot be read or parsed raises RiskInputError."""
    paths = [str(path) for path in paths]
    config = config or RiskConfig()  # read-only during an analysis: one for every file

    def one(path: str) -> Any:
        try:
            with open(path, "rb") as handle:
                sql = handle.read().decode("utf-8")
            analysis = Engine(server_version, facts, config)._analyse([MigrationUnit(sql=sql, source=path)], False)
        except RiskInputError as exc:
            return exc
        except UnicodeDecodeError:
            return RiskInputError("%s is not UTF-8 text" % path)
        except OSError as exc:
            return RiskInputError("%s cannot be read: %s" % (path, exc.strerror))
        return analysis if summary is None else summary(path, analysis)

    with _gc_paused():
        answers = parallel_map(one, paths, effective_jobs(jobs, len(paths)))
    for answer in answers:
        if isinstance(answer, RiskInputError):
            raise answer
    return answers


# --------------------------------------------------------------------------- the analysis

class Engine:
    def __init__(self, server_version: Optional[int] = None, facts: Optional[DbFacts] = None,
                 config: Optional[RiskConfig] = None, version_table: Optional[str] = None,
                 version_table_schema: Optional[str] = None, jobs: int = 1):
        self.facts = facts
        self.bookkeeping_tables = bookkeeping_tables(version_table, version_table_schema)
        if facts is not None:
            self.version_num: Optional[int] = facts.version_num
            self.version = facts.version
        else:
            self.version = int(server_version or DEFAULT_SERVER_VERSION)
            self.version_num = None
        self.config = config or RiskConfig()
        self.run = RunState()
        self.history = History()
        # With a database the pending revisions run together from its current revision, so a table
        # created by one of them is still new (and empty) for the next ones.
        self.carry_run_state = facts is not None
        # Worker processes that parse the units ahead of the (ordered) analysis; 0: one per CPU when
        # there are at least PARALLEL_MIN_UNITS units.
        self.jobs = jobs

    # -- public
    def analyse(self, units: Iterable[MigrationUnit], alembic: bool = False) -> Analysis:
        with _gc_paused():
            return self._analyse(units, alembic)

    def _analyse(self, units: Iterable[MigrationUnit], alembic: bool) -> Analysis:
        units = list(units)
        jobs = effective_jobs(self.jobs, len(units))
        # Parsing is the part of a unit's analysis that depends on nothing before it.
        parsed = parallel_map(_parse_unit, units, jobs) if jobs > 1 else [None] * len(units)
        findings: List[Finding] = []
        suppressed: List[Finding] = []
        revisions: List[RevisionVerdict] = []
        for unit, statements in zip(units, parsed):
            if not self.carry_run_state:
                # Without a database the revisions are not known to run together: a table created by an
                # older revision may have been in production for months (and large) by now.
                self.run = RunState()
            unit_findings, statements, changes = self._analyse_unit(unit, statements)
            kept = []
            for finding in unit_findings:
                if finding.rule in self.config.disabled_rules:
                    continue
                if finding.suppressed_reason is not None:
                    suppressed.append(finding)
                else:
                    kept.append(finding)
            findings.extend(kept)
            if unit.revision is not None:
                risk = risk_rules.max_level(*(f.risk for f in kept))
                if unit.error:
                    risk = risk_rules.max_level(risk, "high")
                revisions.append(RevisionVerdict(unit.revision, risk, unit.has_downgrade, unit.error is None,
                                                 unit.error, unit.downgrade_note, unit.source,
                                                 statements=len(statements),
                                                 downgrade_drops=list(unit.downgrade_drops),
                                                 sql=[_masked(stmt.text) for stmt in statements],
                                                 changes=changes + len(unit.extra_findings)))
        alembic = alembic or bool(revisions)
        return Analysis(findings, suppressed, revisions, self.version, alembic=alembic,
                        bookkeeping_tables=self.bookkeeping_tables)

    def analyse_unit(self, unit: MigrationUnit) -> List[Finding]:
        return self._analyse_unit(unit)[0]

    def _analyse_unit(self, unit: MigrationUnit, parsed: Any = None) -> Tuple[List[Finding], List[Statement], int]:
        """The findings of one migration, its statements, and how many of them change the schema or data."""
        out: List[Finding] = []
        if unit.error:
            out.append(self._migration_finding("revision-not-analysed", unit, None, "", reason=unit.error))
            return out, [], 0
        for extra in unit.extra_findings:
            finding = self._migration_finding(extra["rule"], unit, extra.get("table"), extra.get("statement", ""),
                                              **extra.get("details", {}))
            out.append(finding)
        if parsed is None:
            parsed = _parse_unit(unit)
        if isinstance(parsed, RiskInputError):
            raise parsed
        statements = parsed
        for key, hint in unit.column_hints.items():
            # A declared existing_type is a hint; live facts, when present, win.
            if self.facts is None or self.facts.table(key[0]) is None:
                self.run.column_hints[key] = hint
        ctx = StatementContext(self.version, self.version_num, self.facts, self.run, self.history)
        lock_timeout_session = unit.lock_timeout_set
        lock_timeout_local = False
        held: List[Tuple[str, str, int]] = []   # (table, lock, statement number) held in the current transaction
        held_reported = False
        timeout_reported = False
        changes = 0
        bookkeeping_possible = any(name.rpartition(".")[2] in unit.sql for name in self.bookkeeping_tables)
        for stmt in statements:
            kind = stmt.node_type
            node = stmt.node
            if kind == "TransactionStmt":
                tkind = node.get("kind", "")
                if tkind in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
                    ctx.in_transaction = True
                elif tkind in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_PREPARE",
                               "TRANS_STMT_COMMIT_PREPARED"):
                    ctx.in_transaction = False
                    lock_timeout_local = False
                    held = []
                    held_reported = False
                continue
            if kind == "VariableSetStmt":
                if node.get("name") == "lock_timeout":
                    value = _set_value(node)
                    enabled = node.get("kind") == "VAR_SET_VALUE" and value not in ("0", "", "0s", "0ms")
                    if node.get("is_local"):
                        lock_timeout_local = enabled
                    else:
                        lock_timeout_session = enabled
                continue
            if bookkeeping_possible and _is_bookkeeping(kind, node, self.bookkeeping_tables):
                continue
            if kind not in NO_CHANGE_STATEMENTS:
                changes += 1
            stmt_findings = self._statement_findings(kind, node, stmt, unit, ctx)
            for finding in stmt_findings:
                creates = finding.rule in CREATE_RULES
                is_new = creates or finding.table in self.run.new_tables
                if is_new and not creates and finding.rule not in RUNTIME_FAILURES:
                    continue
                finding.in_transaction = ctx.in_transaction
                out.append(finding)
                locked = finding.lock_on if not is_new else None
                slow = finding.work != risk_rules.INSTANT and finding.size_class != "small"
                if ctx.in_transaction and slow and held and not held_reported:
                    out.append(self._held_finding(unit, finding, stmt, held))
                    held_reported = True
                if locked is not None and finding.lock in WRITE_BLOCKING_LOCKS:
                    if ctx.in_transaction:
                        held.append((locked, finding.lock, stmt.number))
                    if (self.config.require_lock_timeout and not timeout_reported
                            and not (lock_timeout_session or lock_timeout_local)):
                        out.append(self._migration_finding("lock-timeout-missing", unit, finding.table, stmt.text,
                                                           line=stmt.line, supp=stmt.suppress, lock=finding.lock,
                                                           locked=locked))
                        timeout_reported = True
            if kind in REMEMBERED_KINDS:
                self._remember(kind, node, ctx)
        self._grade_batched_loops(out)
        return out, statements, changes

    def _held_finding(self, unit: MigrationUnit, finding: Finding, stmt: Statement,
                      held: List[Tuple[str, str, int]]) -> Finding:
        """The locks earlier statements of this transaction took are still held while a slow one runs."""
        strongest = max((lock for _table, lock, _number in held), key=lambda mode: risk_rules.LOCK_STRENGTH[mode])
        described = "; ".join("%s on %s from statement %d" % (lock, table, number) for table, lock, number in held)
        return self._migration_finding("lock-held-in-transaction", unit, finding.table, stmt.text,
                                       held=described, lock=strongest, number=stmt.number,
                                       held_tables=", ".join(sorted({table for table, _lock, _n in held})),
                                       line=stmt.line, supp=stmt.suppress)

    def _grade_batched_loops(self, findings: List[Finding]) -> None:
        """A Python loop whose rendered statements are all bounded batches is the batched backfill the
        safe alternatives recommend: graded as such, not as an unbounded data change."""
        loops = [f for f in findings if f.rule == "python-data-loop" and f.suppressed_reason is None]
        if not loops:
            return
        data = [f for f in findings if (f.data or f.rule in risk_rules.BATCH_RULES) and f.rule != "python-data-loop"]
        if not data or any(f.rule not in risk_rules.BATCH_RULES for f in data):
            return
        batches = ", ".join("%s %s" % (f.operation, f.table or "") for f in data)
        for loop in loops:
            if any(f.in_transaction for f in data):
                # One transaction around every batch holds every changed row until the end: unbounded after all.
                loop.message += (" Its batches (%s) run inside the migration's transaction, so every row they "
                                 "change stays locked until it commits: run the loop in "
                                 "op.get_context().autocommit_block()." % batches)
                continue
            loop.risk = self.config.risk_overrides.get("python-data-loop", "medium")
            loop.data = False
            loop.message = ("upgrade() repeats bounded batches in a loop (line %d: %s), each committed on its own "
                            "outside the migration's transaction: the batched backfill. Watch replication lag "
                            "and bloat while it runs." % (loop.line, batches))

    # -- helpers
    def _statement_findings(self, kind, node, stmt: Statement, unit: MigrationUnit,
                            ctx: StatementContext) -> List[Finding]:
        if kind == "AlterTableStmt":
            table = risk_rules.relation_name(node.get("relation"))
            if table in self.bookkeeping_tables:
                return []
            ctx.table = table
            ctx.relation = node.get("relation")
            found = []
            for cmd_item in node.get("cmds") or ():
                cmd = cmd_item.get("AlterTableCmd")
                if cmd is None:
                    continue
                rules = risk_rules.RULES_BY_SUBTYPE.get(cmd.get("subtype", "")) or risk_rules.RULES_ANY_SUBTYPE
                hit = _first_match(rules, cmd, ctx)
                if hit is not None:
                    found.append(self._finding(hit[0], hit[1], stmt, unit))
                self._remember_cmd(table, cmd)
            return found
        rules = risk_rules.RULES_BY_NODE.get(kind)
        if rules is None:
            if kind in risk_rules.QUIET_STATEMENTS:
                return []
            return [self._migration_finding("statement-unknown", unit, None, stmt.text, kind=kind,
                                            line=stmt.line, supp=stmt.suppress)]
        hit = _first_match(rules, node, ctx)
        if hit is None:
            return []
        return [self._finding(hit[0], hit[1], stmt, unit)]

    def _finding(self, rule: risk_rules.Rule, details: Dict[str, Any], stmt: Statement, unit: MigrationUnit) -> Finding:
        table = details.get("table")
        facts = self.facts.table(table) if self.facts is not None else None
        risk = rule.risk
        rows = size = None
        size_class = "unknown"
        if facts is not None:
            rows, size = facts.rows, facts.size_bytes
            if rule.work != risk_rules.INSTANT:
                size_class = self._size_class(rows, size)
                if size_class == "small" and rule.small_risk:
                    risk = rule.small_risk
                elif size_class == "medium" and rule.medium_risk:
                    risk = rule.medium_risk
                elif size_class == "large" and rule.large_risk:
                    risk = rule.large_risk
        if self.config.risk_overrides:
            risk = self.config.risk_overrides.get(rule.id, risk)
        # The texts are built only when read: most callers need only the levels.
        sized = facts is not None and rule.work != risk_rules.INSTANT
        alternative = rule.safe_alternative
        lock = details.get("_lock", rule.lock)
        # Finding's fields set at once (its __init__ goes through a property per lazy text).
        finding = _new_finding(Finding)
        values = {
            "revision": unit.revision, "_texts": _RuleTexts(rule, details, stmt, table, rows, size, sized),
            "operation": rule.operation, "rule": rule.id, "risk": risk, "lock": lock,
            "blocks": details["_blocks"] if "_blocks" in details else risk_rules.BLOCKS_FOR_LOCK[rule.lock],
            "rewrites_table": rule.rewrites_table, "table": table, "rows_estimate": rows,
            "target": _target(details, table), "lock_seconds": _lock_seconds(rule, rows, size, facts is not None),
            "drop": rule.drop, "data": rule.data, "work": rule.work, "source": unit.source,
            "suppressed_reason": _suppression_for(rule.id, stmt.suppress, unit.suppressions)
            if stmt.suppress or unit.suppressions else None,
            "size_class": size_class, "lock_on": details.get("_lock_on", table), "in_transaction": False}
        if "{" not in alternative:
            values["_lazy_safe_alternative"] = alternative
        finding.__dict__ = values
        return finding

    def _migration_finding(self, rule_id: str, unit: MigrationUnit, table: Optional[str], statement: str,
                           line: int = 0, supp: Optional[Dict[str, str]] = None, **details) -> Finding:
        spec = risk_rules.MIGRATION_RULES[rule_id]
        facts = self.facts.table(table) if (self.facts is not None and table) else None
        values = _SafeDict(details)
        if line:
            values.setdefault("line", line)  # the keyword takes it out of details; messages still name it
        values.setdefault("table", table or "?")
        values.setdefault("lock", spec["lock"])
        values.setdefault("locked", table or "?")
        lock = details.get("lock", spec["lock"])
        finding = Finding(
            revision=unit.revision, statement=_excerpt(statement), operation=spec["operation"], rule=rule_id,
            risk=self.config.risk_overrides.get(rule_id, spec["risk"]), lock=lock, blocks=risk_rules.BLOCKS_FOR_LOCK[lock],
            rewrites_table=False, table=table, rows_estimate=facts.rows if facts else None,
            message=spec["message"].format_map(values), safe_alternative=spec["safe_alternative"].format_map(values),
            lock_seconds=0.0, data=rule_id == "python-data-loop", line=line, source=unit.source, lock_on=table)
        if rule_id in ("lock-held-in-transaction",):
            finding.lock_seconds = 0.0
        finding.suppressed_reason = _suppression_for(rule_id, supp or {}, unit.suppressions)
        return finding

    def _size_class(self, rows: Optional[int], size: Optional[int]) -> str:
        limits = self.config.thresholds
        if (rows is not None and rows >= limits.large_table_rows) or (size is not None and size >= limits.large_table_bytes):
            return "large"
        if (rows is None or rows <= limits.small_table_rows) and (size is None or size <= limits.small_table_bytes):
            return "small" if rows is not None or size is not None else "unknown"
        return "medium"

    def _remember(self, kind: str, node: Dict[str, Any], ctx: StatementContext) -> None:
        """Track objects created in this run: later statements on them are not risky."""
        if kind == "CreateStmt":
            name = risk_rules.relation_name(node.get("relation"))
            if name and not (self.facts is not None and self.facts.table(name) is not None
                             and node.get("if_not_exists")):
                self.run.new_tables.add(name)
        elif kind == "CreateTableAsStmt":
            name = risk_rules.relation_name((node.get("into") or {}).get("rel"))
            if name:
                self.run.new_tables.add(name)
        elif kind == "IndexStmt" and node.get("idxname"):
            table = risk_rules.relation_name(node.get("relation"))
            self.run.new_indexes[node["idxname"]] = table
            self.history.index_tables[node["idxname"]] = table
        elif kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
            for name in risk_rules._drop_objects(node):
                self.run.new_tables.discard(name)

    def _remember_cmd(self, table: Optional[str], cmd: Dict[str, Any]) -> None:
        """Remember CHECK (col IS NOT NULL) constraints: once validated they prove a later SET NOT NULL,
        in this revision or a later one (the four-step NOT NULL spread over revisions)."""
        subtype = cmd.get("subtype")
        history = self.history
        if subtype == "AT_ValidateConstraint":
            key = (table, cmd.get("name"))
            column = history.pending_not_null_checks.pop(key, None) or self._unvalidated_check_column(table, key[1])
            if column:
                history.validated_not_null_checks[key] = column
            return
        if subtype == "AT_DropConstraint":
            key = (table, cmd.get("name"))
            history.pending_not_null_checks.pop(key, None)
            history.validated_not_null_checks.pop(key, None)
            return
        con = risk_rules.def_node(cmd, "Constraint")
        if subtype != "AT_AddConstraint" or con.get("contype") != "CONSTR_CHECK":
            return
        column = _is_not_null_check(con.get("raw_expr"))
        if not column:
            return
        key = (table, con.get("conname"))
        if con.get("skip_validation"):
            history.pending_not_null_checks[key] = column
        else:
            history.validated_not_null_checks[key] = column

    def _unvalidated_check_column(self, table: Optional[str], name: Optional[str]) -> Optional[str]:
        """The column of a CHECK (column IS NOT NULL) NOT VALID that is already in the database."""
        facts = self.facts.table(table) if self.facts is not None else None
        unvalidated = getattr(facts, "unvalidated_not_null_checks", None) or {}  # constraint name -> column
        return unvalidated.get(name)


def _is_not_null_check(expr: Optional[Dict[str, Any]]) -> Optional[str]:
    test = (expr or {}).get("NullTest")
    if not test or test.get("nulltesttype") != "IS_NOT_NULL":
        return None
    ref = (test.get("arg") or {}).get("ColumnRef")
    fields = risk_rules.names_of(ref.get("fields")) if ref else []
    return fields[-1] if fields else None


def _first_match(rules: List[risk_rules.Rule], node: Dict[str, Any], ctx: StatementContext):
    for rule in rules:
        details = rule.match(node, ctx)
        if details is not None:
            return rule, details
    return None


def _suppression_for(rule_id: str, local: Dict[str, str], unit_wide: Dict[str, str]) -> Optional[str]:
    for table in (local, unit_wide):
        if rule_id in table:
            return table[rule_id] or "no reason given"
        if "all" in table:
            return table["all"] or "no reason given"
    return None


def _set_value(node: Dict[str, Any]) -> str:
    for arg in node.get("args") or ():
        const = arg.get("A_Const") or {}
        if "sval" in const:
            return str(const["sval"].get("sval", "")).strip()
        if "ival" in const:
            return str(const["ival"].get("ival", 0))
    return ""


def _is_bookkeeping(kind: str, node: Dict[str, Any], tables: FrozenSet[str] = BOOKKEEPING_TABLES) -> bool:
    """Alembic's own statements on its version table (``tables``: its names) are never findings."""
    if kind in ("CreateStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "AlterTableStmt"):
        return risk_rules.relation_name(node.get("relation")) in tables
    if kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
        return all(name in tables for name in risk_rules._drop_objects(node))
    return False


def _lock_seconds(rule: risk_rules.Rule, rows: Optional[int], size: Optional[int], have_facts: bool) -> Optional[float]:
    if rule.work == risk_rules.INSTANT:
        return BRIEF_LOCK_SECONDS
    if not have_facts:
        return None
    if rule.work == risk_rules.DATA:
        if rows is None:
            return None
        return rows / RATE_ROWS_DATA
    if size is None:
        return None
    return size / bytes_per_second(rule)


def bytes_per_second(rule: risk_rules.Rule) -> float:
    """How fast the rule's statement gets through a table while it holds its lock."""
    return RULE_RATE_BYTES.get(rule.id, RATE_BYTES[rule.work])


def _human_bytes(size: Optional[int]) -> str:
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return "%.0f %s" % (value, unit) if unit == "B" else "%.1f %s" % (value, unit)
        value /= 1024
    return "%d B" % size


_PASSWORD_LITERAL = re.compile(r"(password\s*(?:=\s*)?)'(?:[^']|'')*'", re.IGNORECASE)


def _masked(text: str) -> str:
    """The statement with password literals and URL credentials masked."""
    if "assword" in text or "ASSWORD" in text or "://" in text:
        # Imported here: _pg loads psycopg2, which plain SQL analysis does not need.
        from ansible_collections.dbops.migrations.plugins.module_utils.pg import mask_secrets
        text = mask_secrets(_PASSWORD_LITERAL.sub(r"\1'********'", text))
    return text


def _excerpt(text: str) -> str:
    text = _masked(" ".join(text.split()))
    return text if len(text) <= STATEMENT_EXCERPT else text[:STATEMENT_EXCERPT - 3] + "..."


def analyse_sql(sql: str, server_version: Optional[int] = None, facts: Optional[DbFacts] = None,
                config: Optional[RiskConfig] = None, source: str = "sql") -> Analysis:
    """Convenience: analyse one SQL text."""
    return Engine(server_version, facts, config).analyse([MigrationUnit(sql=sql, source=source)])


def load_config(path: str) -> RiskConfig:
    """Read the YAML (or JSON) configuration file: thresholds, disabled rules, risk overrides."""
    import yaml
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise RiskInputError("config_file %s cannot be read (%s): give the path of a YAML file" % (path, exc.strerror))
    except yaml.YAMLError as exc:
        raise RiskInputError("config_file %s is not valid YAML: %s" % (path, exc))
    if not isinstance(data, dict):
        raise RiskInputError("config_file %s must hold a mapping (thresholds, disabled_rules, risk_overrides)" % path)
    unknown = set(data) - {"thresholds", "disabled_rules", "risk_overrides", "require_lock_timeout"}
    if unknown:
        raise RiskInputError("config_file %s: unknown keys %s; allowed: thresholds, disabled_rules, "
                             "risk_overrides, require_lock_timeout" % (path, ", ".join(sorted(unknown))))
    config = RiskConfig()
    for key, value in (data.get("thresholds") or {}).items():
        if not hasattr(config.thresholds, key):
            raise RiskInputError("config_file %s: unknown threshold %r; allowed: %s" % (
                path, key, ", ".join(f.name for f in dataclasses.fields(Thresholds))))
        if not isinstance(value, int) or value < 0:
            raise RiskInputError("config_file %s: threshold %s must be a non-negative integer" % (path, key))
        setattr(config.thresholds, key, value)
    for rule in data.get("disabled_rules") or []:
        if rule not in risk_rules.ALL_RULE_IDS:
            raise RiskInputError("config_file %s: unknown rule id %r in disabled_rules (see docs/migration_risk.md)"
                                 % (path, rule))
        config.disabled_rules.add(rule)
    for rule, level in (data.get("risk_overrides") or {}).items():
        if rule not in risk_rules.ALL_RULE_IDS:
            raise RiskInputError("config_file %s: unknown rule id %r in risk_overrides" % (path, rule))
        if level not in risk_rules.LEVELS:
            raise RiskInputError("config_file %s: risk for %s must be one of %s" % (path, rule, ", ".join(risk_rules.LEVELS)))
        config.risk_overrides[rule] = level
    if "require_lock_timeout" in data:
        config.require_lock_timeout = bool(data["require_lock_timeout"])
    return config
