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

import dataclasses
import json
import re
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils import _risk_rules as R
from ansible_collections.dbops.migrations.plugins.module_utils._risk_dbfacts import DbFacts, TableFacts

try:
    from pglast import parser as _pglast_parser
    HAS_PGLAST = True
    PGLAST_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module through missing_required_lib
    HAS_PGLAST = False
    PGLAST_IMPORT_ERROR = exc

DEFAULT_SERVER_VERSION = 15
BOOKKEEPING_TABLES = frozenset(("alembic_version",))
PATH_FOR_RISK = {"low": "auto", "medium": "review", "high": "manual", "critical": "manual"}
BACKUP_FOR_RISK = {"low": "optional", "medium": "recommended", "high": "required", "critical": "required"}
STATEMENT_EXCERPT = 400

# Statements that fail at run time whatever the table: reported even on tables created in the run.
RUNTIME_FAILURES = frozenset((
    "concurrent-index-in-transaction", "drop-index-concurrently-in-transaction", "vacuum-in-transaction",
    "reindex-concurrently-unsupported", "detach-partition-concurrently-unsupported",
    "enum-add-value-in-transaction", "concurrent-index-pg14-bug"))
CREATE_RULES = frozenset(("create-table", "create-table-as"))
REMEMBERED_KINDS = frozenset(("CreateStmt", "CreateTableAsStmt", "IndexStmt", "DropStmt"))
WRITE_BLOCKING_LOCKS = frozenset((R.SHARE, R.SHARE_ROW_EXCLUSIVE, R.EXCLUSIVE, R.ACCESS_EXCLUSIVE))

# Throughput assumptions for lock-time estimates (bytes or rows per second, conservative).
RATE_BYTES = {R.REWRITE: 60e6, R.BUILD: 80e6, R.SCAN: 250e6}
RATE_ROWS_DATA = 20000.0
BRIEF_LOCK_SECONDS = 0.0

SUPPRESS_RE = re.compile(r"migration-risk:\s*ignore\s+([a-z0-9][a-z0-9_,\s-]*?)\s*(?:(?:because|reason:?)\s+(.+?))?\s*$",
                         re.IGNORECASE | re.MULTILINE)


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
    work: str = R.INSTANT
    line: int = 0
    source: str = ""
    suppressed_reason: Optional[str] = None
    size_class: str = "unknown"

    PINNED = ("revision", "statement", "operation", "rule", "risk", "lock", "blocks", "rewrites_table", "table",
              "rows_estimate", "message", "safe_alternative")

    def as_dict(self) -> Dict[str, Any]:
        return {key: getattr(self, key) for key in self.PINNED}


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


@dataclasses.dataclass
class Analysis:
    findings: List[Finding]
    suppressed: List[Finding]
    revisions: List[RevisionVerdict]
    server_version: int
    facts_used: bool
    trace: Optional[Dict[str, Any]] = None
    alembic: bool = False

    @property
    def risk(self) -> str:
        return R.max_level(*(f.risk for f in self.findings), *(r.risk for r in self.revisions))

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
            has_plan = all(rev.has_downgrade for rev in self.revisions)
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
            "recommended_path": PATH_FOR_RISK[risk],
            "backup": BACKUP_FOR_RISK[risk],
            "findings": [f.as_dict() for f in self.findings],
            "revisions": [{"revision": r.revision, "risk": r.risk, "has_downgrade": r.has_downgrade,
                           "analysed": r.analysed, "error": r.error, "downgrade_drops": r.downgrade_drops}
                          for r in self.revisions],
            "checklist": self.checklist(),
            "suppressed": [dict(f.as_dict(), reason=f.suppressed_reason) for f in self.suppressed],
            "server_version": self.server_version,
        }


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

    __slots__ = ("version", "version_num", "facts", "run", "in_transaction", "table")

    def __init__(self, version: int, version_num: Optional[int], facts: Optional[DbFacts], run: "RunState"):
        self.version = version
        self.version_num = version_num
        self.facts = facts
        self.run = run
        self.in_transaction = False
        self.table: Optional[str] = None

    def table_facts(self, table: Optional[str]) -> Optional[TableFacts]:
        return self.facts.table(table) if self.facts is not None else None

    def relkind(self, table: Optional[str]) -> Optional[str]:
        facts = self.table_facts(table)
        return facts.relkind if facts else None

    def index_table(self, index: Optional[str]) -> Optional[str]:
        if not index:
            return None
        if index in self.run.new_indexes:
            return self.run.new_indexes[index]
        if self.facts is not None:
            return self.facts.index_tables.get(index) or self.facts.index_tables.get(index.split(".")[-1])
        return None

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
        if (table, column) in self.run.validated_not_null_checks:
            return True
        facts = self.table_facts(table)
        return bool(facts and column in facts.not_null_checks)


@dataclasses.dataclass
class RunState:
    new_tables: Set[str] = dataclasses.field(default_factory=set)
    new_indexes: Dict[str, str] = dataclasses.field(default_factory=dict)
    column_hints: Dict[Tuple[Optional[str], Optional[str]], Tuple[str, Tuple[int, ...]]] = \
        dataclasses.field(default_factory=dict)
    validated_not_null_checks: Set[Tuple[str, str]] = dataclasses.field(default_factory=set)
    pending_not_null_checks: Dict[Tuple[Optional[str], Optional[str]], str] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- parsing

class Statement:
    """One parsed statement; its line number is computed only when a finding needs it."""

    __slots__ = ("node_type", "node", "text", "offset", "suppress", "_raw")

    def __init__(self, node_type: str, node: Dict[str, Any], text: str, offset: int, suppress: Dict[str, str],
                 raw: bytes):
        self.node_type = node_type
        self.node = node
        self.text = text
        self.offset = offset
        self.suppress = suppress
        self._raw = raw

    @property
    def line(self) -> int:
        return self._raw.count(b"\n", 0, self.offset) + 1


def parse_statements(sql: str, where: str) -> List[Statement]:
    """Parse SQL into statements (with their text, line and inline suppressions)."""
    try:
        tree = json.loads(_pglast_parser.parse_sql_json(sql))
    except Exception as exc:  # pglast.parser.ParseError
        raise RiskInputError(_parse_error_message(sql, where, exc)) from None
    raw = sql.encode("utf-8")
    ascii_only = len(raw) == len(sql)
    has_suppressions = "migration-risk" in sql
    out: List[Statement] = []
    previous_end = 0
    stmts = tree.get("stmts") or []
    for item in stmts:
        start = item.get("stmt_location", 0)
        length = item.get("stmt_len", 0)
        end = start + length if length else len(raw)
        if ascii_only:
            text = sql[start:end]
        else:
            text = raw[start:end].decode("utf-8", "replace")
        stmt = item["stmt"]
        node_type = next(iter(stmt))
        suppress: Dict[str, str] = {}
        if has_suppressions:
            gap = raw[previous_end:start].decode("utf-8", "replace")
            leading = _leading_comments(gap) if out else gap
            suppress = _suppressions(leading + "\n" + _inner_comments(text))
            if out:
                trailing = gap.split("\n", 1)[0]
                out[-1].suppress.update(_suppressions(trailing))
        out.append(Statement(node_type, stmt[node_type], text.strip(), start, suppress, raw))
        previous_end = end
    if has_suppressions and out:
        tail = raw[previous_end:].decode("utf-8", "replace").split("\n", 1)[0]
        out[-1].suppress.update(_suppressions(tail))
    return out


def _leading_comments(gap: str) -> str:
    # The first line of the gap ends the previous statement's line: it belongs to that statement.
    return gap.split("\n", 1)[1] if "\n" in gap else ""


def _inner_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "--" in line)


def _suppressions(text: str) -> Dict[str, str]:
    found: Dict[str, str] = {}
    for match in SUPPRESS_RE.finditer(text):
        reason = (match.group(2) or "").strip()
        for rule in re.split(r"[\s,]+", match.group(1).strip()):
            if rule:
                found[rule.lower()] = reason
    return found


def suppressions_in_python(source: str) -> Dict[str, str]:
    """``# migration-risk: ignore RULE because REASON`` comments in a revision file."""
    comments = "\n".join(line.split("#", 1)[1] for line in source.splitlines() if "#" in line)
    return _suppressions(comments)


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


# --------------------------------------------------------------------------- the analysis

class Engine:
    def __init__(self, server_version: Optional[int] = None, facts: Optional[DbFacts] = None,
                 config: Optional[RiskConfig] = None):
        self.facts = facts
        if facts is not None:
            self.version_num: Optional[int] = facts.version_num
            self.version = facts.version
        else:
            self.version = int(server_version or DEFAULT_SERVER_VERSION)
            self.version_num = None
        self.config = config or RiskConfig()
        self.run = RunState()
        # With a database the pending revisions run together from its current revision, so a table
        # created by one of them is still new (and empty) for the next ones.
        self.carry_run_state = facts is not None

    # -- public
    def analyse(self, units: Iterable[MigrationUnit], alembic: bool = False) -> Analysis:
        findings: List[Finding] = []
        suppressed: List[Finding] = []
        revisions: List[RevisionVerdict] = []
        for unit in units:
            if not self.carry_run_state:
                # Without a database the revisions are not known to run together: a table created by an
                # older revision may have been in production for months (and large) by now.
                self.run = RunState()
            unit_findings = self.analyse_unit(unit)
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
                risk = R.max_level(*(f.risk for f in kept))
                if unit.error:
                    risk = R.max_level(risk, "high")
                revisions.append(RevisionVerdict(unit.revision, risk, unit.has_downgrade, unit.error is None,
                                                 unit.error, unit.downgrade_note, unit.source,
                                                 downgrade_drops=list(unit.downgrade_drops)))
        alembic = alembic or bool(revisions)
        return Analysis(findings, suppressed, revisions, self.version, self.facts is not None, alembic=alembic)

    def analyse_unit(self, unit: MigrationUnit) -> List[Finding]:
        where = ("revision %s (%s)" % (unit.revision, unit.source)) if unit.revision else unit.source
        out: List[Finding] = []
        if unit.error:
            out.append(self._migration_finding("revision-not-analysed", unit, None, "", reason=unit.error))
            return out
        for extra in unit.extra_findings:
            finding = self._migration_finding(extra["rule"], unit, extra.get("table"), extra.get("statement", ""),
                                              **extra.get("details", {}))
            out.append(finding)
        statements = parse_statements(unit.sql, where) if unit.sql.strip() else []
        for key, hint in unit.column_hints.items():
            # A declared existing_type is a hint; live facts, when present, win.
            if self.facts is None or self.facts.table(key[0]) is None:
                self.run.column_hints[key] = hint
        ctx = StatementContext(self.version, self.version_num, self.facts, self.run)
        lock_timeout_session = unit.lock_timeout_set
        lock_timeout_local = False
        held: List[Tuple[str, str]] = []        # (table, lock) held in the current transaction
        held_reported = False
        timeout_reported = False
        bookkeeping_possible = "alembic_version" in unit.sql
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
            if bookkeeping_possible and _is_bookkeeping(kind, node):
                continue
            stmt_findings = self._statement_findings(kind, node, stmt, unit, ctx)
            for finding in stmt_findings:
                creates = finding.rule in CREATE_RULES
                is_new = creates or finding.table in self.run.new_tables
                if is_new and not creates and finding.rule not in RUNTIME_FAILURES:
                    continue
                out.append(finding)
                existing = finding.table is not None and not is_new
                slow = finding.work != R.INSTANT and finding.size_class != "small"
                if ctx.in_transaction and slow and held and not held_reported:
                    held_tables = ", ".join(sorted({held_table for held_table, _mode in held}))
                    strongest = max((lock for _table, lock in held), key=lambda m: R.LOCK_STRENGTH[m])
                    out.append(self._migration_finding("lock-held-in-transaction", unit, finding.table,
                                                       stmt.text, held=held_tables, lock=strongest,
                                                       line=stmt.line, supp=stmt.suppress))
                    held_reported = True
                if existing and finding.lock in WRITE_BLOCKING_LOCKS:
                    if ctx.in_transaction:
                        held.append((finding.table, finding.lock))
                    if (self.config.require_lock_timeout and not timeout_reported
                            and not (lock_timeout_session or lock_timeout_local)):
                        out.append(self._migration_finding("lock-timeout-missing", unit, finding.table, stmt.text,
                                                           line=stmt.line, supp=stmt.suppress, lock=finding.lock))
                        timeout_reported = True
            if kind in REMEMBERED_KINDS:
                self._remember(kind, node, ctx)
        return out

    # -- helpers
    def _statement_findings(self, kind, node, stmt: Statement, unit: MigrationUnit,
                            ctx: StatementContext) -> List[Finding]:
        if kind == "AlterTableStmt":
            table = R.relation_name(node.get("relation"))
            if table in BOOKKEEPING_TABLES:
                return []
            ctx.table = table
            found = []
            for cmd_item in node.get("cmds") or ():
                cmd = cmd_item.get("AlterTableCmd")
                if cmd is None:
                    continue
                rules = R.RULES_BY_NODE.get(R.ATC + cmd.get("subtype", "")) or R.RULES_BY_NODE[R.ATC + "*"]
                hit = _first_match(rules, cmd, ctx)
                if hit is not None:
                    found.append(self._finding(hit[0], hit[1], stmt, unit))
                self._remember_cmd(table, cmd)
            return found
        rules = R.RULES_BY_NODE.get(kind)
        if rules is None:
            if kind in R.QUIET_STATEMENTS:
                return []
            return [self._migration_finding("statement-unknown", unit, None, stmt.text, kind=kind,
                                            line=stmt.line, supp=stmt.suppress)]
        hit = _first_match(rules, node, ctx)
        if hit is None:
            return []
        return [self._finding(hit[0], hit[1], stmt, unit)]

    def _finding(self, rule: R.Rule, details: Dict[str, Any], stmt: Statement, unit: MigrationUnit) -> Finding:
        table = details.get("table")
        facts = self.facts.table(table) if self.facts is not None else None
        risk = rule.risk
        rows = size = None
        size_class = "unknown"
        if facts is not None:
            rows, size = facts.rows, facts.size_bytes
            if rule.work != R.INSTANT:
                size_class = self._size_class(rows, size)
                if size_class == "small" and rule.small_risk:
                    risk = rule.small_risk
                elif size_class == "large" and rule.large_risk:
                    risk = rule.large_risk
        if self.config.risk_overrides:
            risk = self.config.risk_overrides.get(rule.id, risk)
        values = _SafeDict(details)
        if table is None:
            values["table"] = "its table"
        message = rule.message.format_map(values)
        if facts is not None and rule.work != R.INSTANT:
            message += " %s has about %s rows (%s)." % (table, "?" if rows is None else format(rows, ","),
                                                        _human_bytes(size))
        alternative = rule.safe_alternative
        if "{" in alternative:
            alternative = alternative.format_map(values)
        finding = Finding(
            unit.revision, _excerpt(stmt.text), rule.operation, rule.id, risk, details.get("_lock", rule.lock),
            details.get("_blocks", rule.blocks), rule.rewrites_table, table, rows, message, alternative,
            _target(details, table), _lock_seconds(rule, rows, size, facts is not None), rule.drop, rule.data,
            rule.work, stmt.line, unit.source)
        finding.size_class = size_class
        if stmt.suppress or unit.suppressions:
            finding.suppressed_reason = _suppression_for(rule.id, stmt.suppress, unit.suppressions)
        return finding

    def _migration_finding(self, rule_id: str, unit: MigrationUnit, table: Optional[str], statement: str,
                           line: int = 0, supp: Optional[Dict[str, str]] = None, **details) -> Finding:
        spec = R.MIGRATION_RULES[rule_id]
        facts = self.facts.table(table) if (self.facts is not None and table) else None
        values = _SafeDict(details)
        values.setdefault("table", table or "?")
        values.setdefault("lock", spec["lock"])
        lock = details.get("lock", spec["lock"])
        finding = Finding(
            revision=unit.revision, statement=_excerpt(statement), operation=spec["operation"], rule=rule_id,
            risk=self.config.risk_overrides.get(rule_id, spec["risk"]), lock=lock, blocks=R.BLOCKS_FOR_LOCK[lock],
            rewrites_table=False, table=table, rows_estimate=facts.rows if facts else None,
            message=spec["message"].format_map(values), safe_alternative=spec["safe_alternative"].format_map(values),
            lock_seconds=0.0, data=rule_id == "python-data-loop", line=line, source=unit.source)
        if rule_id in ("lock-held-in-transaction",):
            finding.lock_seconds = 0.0
        finding.suppressed_reason = _suppression_for(rule_id, supp or {}, unit.suppressions)
        return finding

    def _size_class(self, rows: Optional[int], size: Optional[int]) -> str:
        t = self.config.thresholds
        if (rows is not None and rows >= t.large_table_rows) or (size is not None and size >= t.large_table_bytes):
            return "large"
        if (rows is None or rows <= t.small_table_rows) and (size is None or size <= t.small_table_bytes):
            return "small" if rows is not None or size is not None else "unknown"
        return "medium"

    def _remember(self, kind: str, node: Dict[str, Any], ctx: StatementContext) -> None:
        """Track objects created in this run: later statements on them are not risky."""
        if kind == "CreateStmt":
            name = R.relation_name(node.get("relation"))
            if name and not (self.facts is not None and self.facts.table(name) is not None
                             and node.get("if_not_exists")):
                self.run.new_tables.add(name)
        elif kind == "CreateTableAsStmt":
            name = R.relation_name((node.get("into") or {}).get("rel"))
            if name:
                self.run.new_tables.add(name)
        elif kind == "IndexStmt" and node.get("idxname"):
            self.run.new_indexes[node["idxname"]] = R.relation_name(node.get("relation"))
        elif kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
            for name in R._drop_objects(node):
                self.run.new_tables.discard(name)

    def _remember_cmd(self, table: Optional[str], cmd: Dict[str, Any]) -> None:
        """Remember CHECK (col IS NOT NULL) constraints: once validated they prove a later SET NOT NULL."""
        subtype = cmd.get("subtype")
        if subtype == "AT_ValidateConstraint":
            column = self.run.pending_not_null_checks.pop((table, cmd.get("name")), None)
            if column:
                self.run.validated_not_null_checks.add((table, column))
            return
        con = R.def_node(cmd, "Constraint")
        if subtype != "AT_AddConstraint" or con.get("contype") != "CONSTR_CHECK":
            return
        column = _is_not_null_check(con.get("raw_expr"))
        if not column:
            return
        if con.get("skip_validation"):
            self.run.pending_not_null_checks[(table, con.get("conname"))] = column
        else:
            self.run.validated_not_null_checks.add((table, column))


def _is_not_null_check(expr: Optional[Dict[str, Any]]) -> Optional[str]:
    test = (expr or {}).get("NullTest")
    if not test or test.get("nulltesttype") != "IS_NOT_NULL":
        return None
    ref = (test.get("arg") or {}).get("ColumnRef")
    fields = R.names_of(ref.get("fields")) if ref else []
    return fields[-1] if fields else None


def _first_match(rules: List[R.Rule], node: Dict[str, Any], ctx: StatementContext):
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


def _is_bookkeeping(kind: str, node: Dict[str, Any]) -> bool:
    """Alembic's own statements on alembic_version are never findings."""
    if kind in ("CreateStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "AlterTableStmt"):
        return R.relation_name(node.get("relation")) in BOOKKEEPING_TABLES
    if kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
        return all(name in BOOKKEEPING_TABLES for name in R._drop_objects(node))
    return False


def _lock_seconds(rule: R.Rule, rows: Optional[int], size: Optional[int], have_facts: bool) -> Optional[float]:
    if rule.work == R.INSTANT:
        return BRIEF_LOCK_SECONDS
    if not have_facts:
        return None
    if rule.work == R.DATA:
        if rows is None:
            return None
        return rows / RATE_ROWS_DATA
    if size is None:
        return None
    return size / RATE_BYTES[rule.work]


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


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    if "assword" in text or "ASSWORD" in text or "://" in text:
        # Imported here: _pg loads psycopg2, which plain SQL analysis does not need.
        from ansible_collections.dbops.migrations.plugins.module_utils._pg import mask_secrets
        text = mask_secrets(_PASSWORD_LITERAL.sub(r"\1'********'", text))
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
        if rule not in R.ALL_RULE_IDS:
            raise RiskInputError("config_file %s: unknown rule id %r in disabled_rules (see docs/migration_risk.md)"
                                 % (path, rule))
        config.disabled_rules.add(rule)
    for rule, level in (data.get("risk_overrides") or {}).items():
        if rule not in R.ALL_RULE_IDS:
            raise RiskInputError("config_file %s: unknown rule id %r in risk_overrides" % (path, rule))
        if level not in R.LEVELS:
            raise RiskInputError("config_file %s: risk for %s must be one of %s" % (path, rule, ", ".join(R.LEVELS)))
        config.risk_overrides[rule] = level
    if "require_lock_timeout" in data:
        config.require_lock_timeout = bool(data["require_lock_timeout"])
    return config
