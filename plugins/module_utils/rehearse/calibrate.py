# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rehearsal's measured lock time beside migration_risk's estimate (pure).

migration_risk estimates ``estimated_lock_seconds`` from the table sizes and a rate per kind of
work (rewrite, index build, scan, data change). Per revision the rehearsal compares that estimate
with the time the revision held a strong lock; per table with the estimates of the findings on
that table. A row disagrees when the larger of the two is at least ``min_seconds`` and one is more
than ``factor`` times the other; an estimate the engine could not make (``None``) is ``unknown``.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from ansible_collections.dbops.migrations.plugins.module_utils.risk import rules as risk_rules
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import (
    BRIEF_LOCK_SECONDS, RATE_BYTES, RATE_ROWS_DATA, bytes_per_second)

DEFAULT_FACTOR = 3.0
DEFAULT_MIN_SECONDS = 1.0


def finding_seconds(rule_id: str, rows: Optional[int], size_bytes: Optional[int]) -> Optional[float]:
    """The engine's estimate for one finding, from its rule's kind of work and the table's size."""
    rule = risk_rules.RULES_BY_ID.get(rule_id)
    if rule is None:
        return 0.0 if rule_id in risk_rules.MIGRATION_RULES else None
    if rule.work == risk_rules.INSTANT:
        return BRIEF_LOCK_SECONDS
    if rule.work == risk_rules.DATA:
        return None if rows is None else rows / RATE_ROWS_DATA
    if size_bytes is None or rule.work not in RATE_BYTES:
        return None
    return size_bytes / bytes_per_second(rule)


def table_estimates(findings: Iterable[Dict[str, Any]], sizes: Dict[str, int],
                    rows: Dict[str, int]) -> Dict[str, Optional[float]]:
    """Estimated strong-lock seconds per table, summed over the findings that block something."""
    estimates: Dict[str, Optional[float]] = {}
    for finding in findings:
        if finding.get("blocks") in (None, "none") or not finding.get("table"):
            continue
        table = _bare(finding["table"])
        seconds = finding_seconds(finding.get("rule", ""), rows.get(table), sizes.get(table))
        previous = estimates.get(table, 0.0)
        estimates[table] = None if (seconds is None or previous is None) else previous + seconds
    return estimates


def _bare(table: str) -> str:
    return table[len("public."):] if table.startswith("public.") else table


def verdict(measured: Optional[float], estimated: Optional[float], factor: float = DEFAULT_FACTOR,
            min_seconds: float = DEFAULT_MIN_SECONDS) -> Dict[str, Any]:
    """``ok``, ``underestimated``, ``overestimated`` or ``unknown``, with the ratio measured/estimated."""
    if measured is None or estimated is None:
        return {"verdict": "unknown", "ratio": None}
    ratio = None if estimated <= 0 else round(measured / estimated, 2)
    if max(measured, estimated) < min_seconds:
        return {"verdict": "ok", "ratio": ratio}
    if estimated <= 0 or measured > estimated * factor:
        return {"verdict": "underestimated", "ratio": ratio}
    if measured <= 0 or estimated > measured * factor:
        return {"verdict": "overestimated", "ratio": ratio}
    return {"verdict": "ok", "ratio": ratio}


def calibrate(revisions: List[Dict[str, Any]], factor: float = DEFAULT_FACTOR,
              min_seconds: float = DEFAULT_MIN_SECONDS) -> Dict[str, Any]:
    """Rows per revision and per table, and the disagreements among them.

    Each entry of ``revisions``: ``revision``, ``measured_lock_s``, ``estimated_lock_s`` (None: the
    engine could not estimate), ``tables`` ({table: measured seconds}) and ``table_estimates``
    ({table: estimated seconds or None}).
    """
    rows: List[Dict[str, Any]] = []
    for rev in revisions:
        row = {"revision": rev["revision"], "table": None, "measured_lock_s": rev.get("measured_lock_s"),
               "estimated_lock_s": _round(rev.get("estimated_lock_s"))}
        row.update(verdict(row["measured_lock_s"], rev.get("estimated_lock_s"), factor, min_seconds))
        rows.append(row)
        measured_tables = rev.get("tables") or {}
        estimated_tables = rev.get("table_estimates") or {}
        for table in sorted(set(measured_tables) | set(estimated_tables)):
            measured = measured_tables.get(table, 0.0)
            estimated = estimated_tables.get(table, 0.0) if table in estimated_tables else 0.0
            entry = {"revision": rev["revision"], "table": table, "measured_lock_s": measured,
                     "estimated_lock_s": _round(estimated)}
            entry.update(verdict(measured, estimated, factor, min_seconds))
            rows.append(entry)
    disagreements = [r for r in rows if r["verdict"] in ("underestimated", "overestimated")]
    return {"factor": factor, "min_seconds": min_seconds, "rows": rows, "disagreements": disagreements,
            "agrees": not disagreements, "notes": [describe(r) for r in disagreements]}


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def describe(row: Dict[str, Any]) -> str:
    """One line for messages: ``0002 orders: measured 4.1 s, estimated 0.6 s (underestimated, x6.8)``."""
    where = row["revision"] + (" " + row["table"] if row.get("table") else "")
    estimated = "no estimate" if row["estimated_lock_s"] is None else "estimated %.1f s" % row["estimated_lock_s"]
    ratio = "" if row.get("ratio") is None else ", x%s" % row["ratio"]
    return "%s: measured %.1f s, %s (%s%s)" % (where, row["measured_lock_s"] or 0.0, estimated, row["verdict"], ratio)
