# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one revision did to the data, from plain values (no database here).

* :class:`Snapshot`: the user relations of a database (oid, relfilenode, sizes) and the WAL
  position; two of them around a revision give the rewrites and the size changes;
* :class:`LockLedger`: samples of the strong locks and the statements of the migration's
  sessions (taken about every 50 ms by ``rehearsal.Sampler``), turned into how long each
  strong lock was held and how long each statement ran.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

# Lock modes that block writes (and ACCESS EXCLUSIVE: reads too): what a migration must keep short.
STRONG_MODES = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
MODE_NAMES = {
    "ShareLock": "SHARE", "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE", "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}
BLOCKS = {"ShareLock": "writes", "ShareRowExclusiveLock": "writes", "ExclusiveLock": "writes",
          "AccessExclusiveLock": "reads_and_writes"}
TABLE_KINDS = ("r", "p", "m")
STATEMENT_EXCERPT = 300


def table_name(schema: str, name: str) -> str:
    """How migration_risk names a table: bare in ``public``, ``schema.name`` elsewhere."""
    return name if schema == "public" else "%s.%s" % (schema, name)


@dataclasses.dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    kind: str                 # pg_class.relkind
    relfilenode: int
    table: str                # the table it belongs to (itself for a table)
    size_bytes: int           # pg_relation_size (main fork) for indexes, pg_table_size for tables
    rows: int = 0             # reltuples (tables)

    @property
    def is_table(self) -> bool:
        return self.kind in TABLE_KINDS


@dataclasses.dataclass
class Snapshot:
    relations: Dict[int, Relation]
    wal_lsn_bytes: Optional[int]    # pg_current_wal_lsn() - '0/0'
    at: float                       # the server's clock (epoch seconds)

    def tables(self) -> Dict[str, Relation]:
        return {r.table: r for r in self.relations.values() if r.is_table}

    def index_bytes(self) -> Dict[str, int]:
        sizes: Dict[str, int] = {}
        for rel in self.relations.values():
            if not rel.is_table:
                sizes[rel.table] = sizes.get(rel.table, 0) + rel.size_bytes
        return sizes


def compare(before: Snapshot, after: Snapshot) -> Dict[str, Any]:
    """Rewrites, new and dropped relations, size changes and WAL between two snapshots."""
    rewritten_tables: List[str] = []
    rebuilt_indexes: List[str] = []
    for oid, old in sorted(before.relations.items(), key=lambda item: (item[1].table, item[1].name)):
        new = after.relations.get(oid)
        if new is None or not old.relfilenode or new.relfilenode == old.relfilenode:
            continue
        if old.is_table:
            rewritten_tables.append(old.table)
        else:
            rebuilt_indexes.append(table_name(old.schema, old.name))
    created = sorted(_label(r) for oid, r in after.relations.items() if oid not in before.relations)
    dropped = sorted(_label(r) for oid, r in before.relations.items() if oid not in after.relations)
    return {
        "rewritten_tables": rewritten_tables,
        "rebuilt_indexes": rebuilt_indexes,
        "created": created,
        "dropped": dropped,
        "size_changes": size_changes(before, after),
        "wal_bytes": wal_bytes(before.wal_lsn_bytes, after.wal_lsn_bytes),
    }


def _label(rel: Relation) -> str:
    return "%s %s" % ("table" if rel.is_table else "index", table_name(rel.schema, rel.name))


def size_changes(before: Snapshot, after: Snapshot) -> List[Dict[str, Any]]:
    """Per table whose heap or indexes changed size: bytes before and after, and the change."""
    tables_before, tables_after = before.tables(), after.tables()
    indexes_before, indexes_after = before.index_bytes(), after.index_bytes()
    changes = []
    for table in sorted(set(tables_before) | set(tables_after)):
        t0 = tables_before[table].size_bytes if table in tables_before else None
        t1 = tables_after[table].size_bytes if table in tables_after else None
        i0 = indexes_before.get(table, 0) if table in tables_before else None
        i1 = indexes_after.get(table, 0) if table in tables_after else None
        if t0 == t1 and i0 == i1:
            continue
        changes.append({"table": table, "table_bytes_before": t0, "table_bytes_after": t1,
                        "table_bytes_change": _delta(t0, t1), "index_bytes_before": i0,
                        "index_bytes_after": i1, "index_bytes_change": _delta(i0, i1)})
    return changes


def _delta(old: Optional[int], new: Optional[int]) -> int:
    return (new or 0) - (old or 0)


def wal_bytes(before: Optional[int], after: Optional[int]) -> Optional[int]:
    if before is None or after is None:
        return None
    return max(0, after - before)


def lsn_to_int(lsn: Optional[str]) -> Optional[int]:
    """``16/B374D848`` -> bytes since ``0/0``."""
    if not lsn or "/" not in lsn:
        return None
    high, low = lsn.split("/", 1)
    return (int(high, 16) << 32) + int(low, 16)


# ---------------------------------------------------------------- locks and statements

@dataclasses.dataclass
class LockSample:
    """One strong lock granted to a migration session at one sampling time (server clock)."""
    at: float
    pid: int
    mode: str
    table: str
    query: str


@dataclasses.dataclass
class StatementSample:
    """An active statement of a migration session at one sampling time (server clock)."""
    at: float
    pid: int
    query_start: float
    query: str


@dataclasses.dataclass
class _Hold:
    table: str
    mode: str
    first: float
    last: float
    statement: str
    samples: int = 1


class LockLedger:
    """Samples of one revision, turned into strong-lock holds and statement durations.

    A hold lasts from the first to the last sample that saw it, plus one sampling interval (the
    lock was taken up to one interval before it was first seen): accurate to about one interval.
    """

    def __init__(self, interval: float):
        self.interval = interval
        self.samples = 0
        self._holds: Dict[Tuple[int, str, str], _Hold] = {}
        self._statements: Dict[Tuple[int, float], Dict[str, Any]] = {}

    def add(self, at: float, locks: Iterable[LockSample], statements: Iterable[StatementSample]) -> None:
        self.samples += 1
        for lock in locks:
            key = (lock.pid, lock.table, lock.mode)
            hold = self._holds.get(key)
            if hold is None:
                self._holds[key] = _Hold(lock.table, lock.mode, lock.at, lock.at, lock.query[:STATEMENT_EXCERPT])
            else:
                hold.last = max(hold.last, lock.at)
                hold.samples += 1
        for stmt in statements:
            key = (stmt.pid, round(stmt.query_start, 6))
            entry = self._statements.setdefault(key, {"statement": stmt.query[:STATEMENT_EXCERPT],
                                                      "started": stmt.query_start, "last": stmt.at})
            entry["last"] = max(entry["last"], stmt.at)

    def locks(self) -> List[Dict[str, Any]]:
        """Strong locks by table and mode, longest first: ``held_s`` and the statement that took it."""
        merged: Dict[Tuple[str, str], Dict[str, Any]] = {}
        for hold in self._holds.values():
            held = hold.last - hold.first + self.interval
            entry = merged.get((hold.table, hold.mode))
            if entry is None or held > entry["held_s"]:
                merged[(hold.table, hold.mode)] = {
                    "table": hold.table, "lock": MODE_NAMES.get(hold.mode, hold.mode),
                    "blocks": BLOCKS.get(hold.mode, "writes"), "held_s": round(held, 3),
                    "taken_by": hold.statement, "first_seen": hold.first}
        ordered = sorted(merged.values(), key=lambda e: (-e["held_s"], e["table"], e["lock"]))
        return [{k: v for k, v in e.items() if k != "first_seen"} for e in ordered]

    def lock_seconds(self) -> float:
        """How long the revision held any strong lock: the union of its holds."""
        spans = sorted((h.first - self.interval, h.last) for h in self._holds.values())
        return round(union_length(spans), 3)

    def table_lock_seconds(self) -> Dict[str, float]:
        """Per table, how long any strong lock on it was held (union of its holds)."""
        by_table: Dict[str, List[Tuple[float, float]]] = {}
        for hold in self._holds.values():
            by_table.setdefault(hold.table, []).append((hold.first - self.interval, hold.last))
        return {table: round(union_length(sorted(spans)), 3) for table, spans in sorted(by_table.items())}

    def statements(self) -> List[Dict[str, Any]]:
        """Statements seen running, in order: ``duration_s`` from their start to the last sample that saw
        them active (statements shorter than one interval may not be seen at all)."""
        ordered = sorted(self._statements.values(), key=lambda e: e["started"])
        return [{"statement": e["statement"], "duration_s": round(max(0.0, e["last"] - e["started"]), 3)}
                for e in ordered]


def union_length(spans: Sequence[Tuple[float, float]]) -> float:
    """Total length covered by ``spans`` (sorted by start), overlaps counted once."""
    total = 0.0
    current: Optional[List[float]] = None
    for start, end in spans:
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = [start, end]
        else:
            current[1] = max(current[1], end)
    if current is not None:
        total += current[1] - current[0]
    return total
