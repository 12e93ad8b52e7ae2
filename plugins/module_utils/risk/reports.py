# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reports of a migration_risk result: Markdown, JSON and SARIF 2.1.0."""
from __future__ import annotations

import json
from typing import Any, Dict, List

from ansible_collections.dbops.migrations.plugins.module_utils.risk import rules as risk_rules

SARIF_LEVEL = {"low": "note", "medium": "warning", "high": "error", "critical": "error"}
TOOL_NAME = "dbops.migrations.migration_risk"


def _cell(text: Any, limit: int = 160) -> str:
    value = "" if text is None else str(text)
    value = " ".join(value.split())
    if len(value) > limit:
        value = value[:limit - 3] + "..."
    return value.replace("|", "\\|")


def markdown(result: Dict[str, Any]) -> str:
    """A Markdown report: verdict, per-revision table, findings, checklist, trace."""
    lines: List[str] = []
    risk = result["risk"]
    lines += ["# Migration risk: %s" % risk.upper(), "",
              "- recommended path: **%s**" % result["recommended_path"],
              "- backup: **%s**" % result["backup"],
              "- PostgreSQL version assumed: %s" % result.get("server_version", "?"), ""]
    revisions = result.get("revisions") or []
    if revisions:
        lines += ["## Revisions", "", "| revision | risk | downgrade | analysed |", "|---|---|---|---|"]
        for rev in revisions:
            analysed = "yes" if rev.get("analysed", True) else "no: %s" % _cell(rev.get("error"), 120)
            downgrade = "yes" if rev["has_downgrade"] else "no"
            if rev["has_downgrade"] and rev.get("downgrade_drops"):
                downgrade += " (drops %s)" % _cell(", ".join(rev["downgrade_drops"]), 80)
            lines.append("| %s | %s | %s | %s |" % (rev["revision"], rev["risk"], downgrade, analysed))
        lines.append("")
    findings = result.get("findings") or []
    lines += ["## Findings (%d)" % len(findings), ""]
    if findings:
        lines += ["| revision | risk | rule | statement | lock | blocks | table | rows |",
                  "|---|---|---|---|---|---|---|---|"]
        for f in sorted(findings, key=lambda f: -risk_rules.LEVEL_INDEX[f["risk"]]):
            lines.append("| %s | %s | `%s` | `%s` | %s | %s | %s | %s |" % (
                f["revision"] or "-", f["risk"], f["rule"], _cell(f["statement"], 90), f["lock"], f["blocks"],
                f["table"] or "-", "?" if f["rows_estimate"] is None else format(f["rows_estimate"], ",")))
        lines.append("")
        for f in findings:
            if risk_rules.LEVEL_INDEX[f["risk"]] == 0 or not f["safe_alternative"]:
                continue
            lines += ["### %s `%s` (%s%s)" % (f["risk"], f["rule"], f["table"] or "-",
                                              ", revision %s" % f["revision"] if f["revision"] else ""),
                      "", f["message"], "", "Safe alternative:", "", "```python",
                      f["safe_alternative"], "```", ""]
    else:
        lines += ["No findings.", ""]
    checklist = result.get("checklist") or {}
    seconds = checklist.get("estimated_lock_seconds")
    lines += ["## Checklist", "",
              "- drops: %s" % ("; ".join(checklist.get("drops") or []) or "none"),
              "- large data changes: %s" % ("; ".join(checklist.get("large_data") or []) or "none"),
              "- estimated lock time: %s" % ("unknown (no database facts for the tables involved)"
                                             if seconds is None else "%.1f s" % seconds),
              "- rollback plan: %s" % ("yes, every revision that changes something has a downgrade()"
                                       if checklist.get("rollback_plan") else "NO"), ""]
    for note in checklist.get("rollback_notes") or []:
        lines.append("  - %s" % note)
    lines += _revision_sql(revisions)
    suppressed = result.get("suppressed") or []
    if suppressed:
        lines += ["", "## Suppressed (%d)" % len(suppressed), ""]
        for f in suppressed:
            lines.append("- `%s` on %s: %s" % (f["rule"], f["table"] or "-", f.get("reason") or ""))
    trace = result.get("trace")
    if trace:
        lines += ["", "## Lock trace", "", trace.get("summary", ""), ""]
        if trace.get("statements"):
            lines += ["| revision | statement | locks taken | rewrote | ms |", "|---|---|---|---|---|"]
            for item in trace["statements"]:
                locks = ", ".join("%s %s" % (lock["table"], lock["mode"]) for lock in item.get("locks", []))
                lines.append("| %s | `%s` | %s | %s | %s |" % (
                    item.get("revision") or "-", _cell(item["statement"], 80), _cell(locks, 120) or "-",
                    ", ".join(item.get("rewrote") or []) or "-",
                    item.get("duration_ms") if item.get("error") is None else "error: %s" % _cell(item["error"], 60)))
        if trace.get("disagreements"):
            lines += ["", "Trace and static analysis disagree:", ""]
            lines += ["- %s" % d for d in trace["disagreements"]]
    return "\n".join(lines).rstrip() + "\n"


SQL_SHOWN_PER_REVISION = 20000  # characters; the full list is in the result's revisions[].sql


def _revision_sql(revisions: List[Dict[str, Any]]) -> List[str]:
    """The statements each revision was judged on, folded, so a reviewer can check the verdict."""
    shown = [rev for rev in revisions if rev.get("sql")]
    if not shown:
        return []
    lines = ["", "## SQL judged", ""]
    for rev in shown:
        statements = rev["sql"]
        text, count = "", 0
        for statement in statements:
            if len(text) + len(statement) > SQL_SHOWN_PER_REVISION:
                break
            text += statement.replace("```", "` ` `") + ";\n"
            count += 1
        more = "" if count == len(statements) else "\n-- ... %d more statements in revisions[].sql\n" % (
            len(statements) - count)
        lines += ["<details><summary>revision %s: %d statements</summary>" % (rev["revision"], len(statements)),
                  "", "```sql", text.rstrip("\n") + more.rstrip("\n"), "```", "", "</details>", ""]
    return lines


def to_json(result: Dict[str, Any]) -> str:
    keep = {k: v for k, v in result.items() if k not in ("report", "invocation", "changed", "failed")}
    return json.dumps(keep, indent=2, sort_keys=True, default=str) + "\n"


def sarif(result: Dict[str, Any], uri_for_revision: Dict[str, str] = None) -> Dict[str, Any]:
    """SARIF 2.1.0: one run, the catalogue as rules, one result per finding."""
    uri_for_revision = uri_for_revision or {}
    used = sorted({f["rule"] for f in result.get("findings") or []})
    rules = []
    for rule_id in used:
        rule = risk_rules.RULES_BY_ID.get(rule_id)
        text = rule.operation if rule else risk_rules.MIGRATION_RULES.get(rule_id, {}).get("operation", rule_id)
        rules.append({"id": rule_id, "name": rule_id, "shortDescription": {"text": text},
                      "helpUri": "docs/migration_risk.md#%s" % rule_id})
    results = []
    for f in result.get("findings") or []:
        entry = {
            "ruleId": f["rule"], "level": SARIF_LEVEL[f["risk"]],
            "message": {"text": "%s [%s; lock %s, blocks %s]%s" % (
                f["message"], f["risk"], f["lock"], f["blocks"],
                ("\nSafe alternative:\n" + f["safe_alternative"]) if f["safe_alternative"] else "")},
            "properties": {"risk": f["risk"], "revision": f["revision"], "table": f["table"],
                           "statement": f["statement"]},
        }
        uri = uri_for_revision.get(f["revision"] or "") or uri_for_revision.get("")
        if uri:
            location = {"physicalLocation": {"artifactLocation": {"uri": uri}}}
            if f.get("line"):
                location["physicalLocation"]["region"] = {"startLine": f["line"]}
            entry["locations"] = [location]
        results.append(entry)
    return {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
            "runs": [{"tool": {"driver": {"name": TOOL_NAME, "informationUri": "docs/migration_risk.md",
                                          "rules": rules}},
                      "results": results,
                      "properties": {"risk": result["risk"], "recommended_path": result["recommended_path"]}}]}
