# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What deploy.yml says at the end of a release: the summary, and the failure report with the way back.

``playbooks/tasks/summary.yml`` and ``playbooks/tasks/failed.yml`` call these through the filters
of ``plugins/filter/release.py``; every input is passed explicitly, one dict per call. The texts
are a contract: operators, AWX and the integration tests read them word for word, so they only
change together with those readers.

A variable the playbook may not have set is passed as ``x | default(none)``, so ``None`` means
"not set" and gets the value the playbook's ``default(...)`` gave it; each function says which
inputs that is. Where the playbook looked at a key of a registered result (``ansible_failed_result``,
the health check, the maintenance record), the whole result is passed, because a key that is
absent and a key that holds ``null`` were told apart there and still are here.

Conversions follow Ansible's filters of the same name: ``_to_bool`` is ``| bool``, ``_to_int`` is
``| int``, ``_to_float`` is ``| float``, ``_join`` is ``| join``, ``_truncate`` is ``| truncate``,
and string concatenation (Jinja's ``~``) is ``str()`` of each part.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

# Words Ansible's ``bool`` filter knows (compared in lower case).
_TRUE_WORDS = frozenset(("yes", "on", "true", "1"))
_FALSE_WORDS = frozenset(("no", "off", "false", "0"))
# Jinja's ``truncate``: a text up to LENGTH + LEEWAY characters is kept whole.
_TRUNCATE_LEEWAY = 5
_TRUNCATE_END = "..."
# How much of the database's error the failure message quotes.
_DB_ERROR_LENGTH = 200

_ROLLBACK_PLAYBOOK = "ansible-playbook dbops.migrations.rollback "
_MAINTENANCE_PLAYBOOK = "ansible-playbook dbops.migrations.maintenance "


# ------------------------------------------------------------------ the conversions the playbooks used

def _to_bool(value: Any) -> bool:
    """``value | bool``: the words Ansible knows; anything else is true only when it equals 1."""
    if isinstance(value, str):
        word: Any = value.lower()
    elif isinstance(value, int):  # bool is an int too: True -> 'true'
        word = str(value).lower()
    else:
        word = value
    try:
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        return bool(word == 1)
    except TypeError:  # unhashable: a list or a dict
        return False


def _flag(value: Any) -> bool:
    """``value | default(false) | bool``, with None standing for a variable that was never set."""
    return False if value is None else _to_bool(value)


def _to_int(value: Any) -> int:
    """``value | int``: '42.7' and 42.7 give 42, anything unreadable gives 0."""
    try:
        if isinstance(value, str):
            return int(value, 10)
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return 0


def _to_float(value: Any) -> float:
    """``value | float``: anything unreadable gives 0.0."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _join(items: Optional[Sequence[Any]]) -> str:
    """``items | join(', ')``."""
    return ", ".join(str(item) for item in items or [])


def _truncate(text: str, length: int) -> str:
    """``text | truncate(length)``: cut at the last space before the limit and end with '...'.

    Like Jinja, a text at most 5 characters over the limit is kept whole, and a text without a
    space is cut in the middle of its word.
    """
    if len(text) <= length + _TRUNCATE_LEEWAY:
        return text
    return text[:length - len(_TRUNCATE_END)].rsplit(" ", 1)[0] + _TRUNCATE_END


def _key(result: Any, key: str, default: Any) -> Any:
    """``(result | default({})).key | default(default)``: a key that holds None is kept as None.

    A result that is not a dict (a JSON body that is a list or a string, say) has no keys.
    """
    if isinstance(result, Mapping) and key in result:
        return result[key]
    return default


def _selected(items: Sequence[str]) -> List[str]:
    """``items | select | list``: the lines and commands that apply are the non-empty ones."""
    return [item for item in items if item]


def _record_path(report_dir: Any, release_id: Any) -> str:
    return str(report_dir) + "/releases/" + str(release_id) + ".json"


# ------------------------------------------------------------------ the summary of a release that ended

def release_summary(inputs: Mapping[str, Any]) -> Dict[str, Any]:
    """The summary of a finished release: the report deploy-<release_id>.json, set_stats and the last lines.

    Inputs (``None`` where noted means the playbook never set that variable):

    - path, risk, risk_asked, app_version: copied as they are.
    - check_mode: whether this is a check-mode run (nothing was changed).
    - applied: the revisions the migration applied. would_apply: what it would apply in check mode
      (None: the migration never ran, nothing).
    - from_revision, to_revision: the migration's revisions before and after (None: unknown).
    - health_check: whether the release was gated on health; health_url: its URL ('' when there is none);
      health_result: the registered result of reading it (a skipped read has no status and no json).
    - backup_path, backup_manifest: '' when no backup was taken.
    - blocked: sessions the migration blocked (None: 0). verified: the verification message (None: 'not run').
    - maintenance_left_on, maintenance_left_by: maintenance mode found on from an interrupted release, and
      its record; maintenance_used, maintenance_would_use: this release turned it on, or would have in
      check mode (None: false).
    - started, now: epoch seconds of the start of the release and of now.
    """
    check_mode = inputs.get("check_mode")
    return {
        "result": "ok",
        "path": inputs.get("path"),
        "risk": inputs.get("risk"),
        "risk_asked": inputs.get("risk_asked"),
        "app_version": inputs.get("app_version"),
        "check_mode": check_mode,
        "revisions_applied": inputs.get("applied"),
        "revisions_would_apply": _would_apply(inputs) if check_mode else [],
        "revision": _revision_now(inputs),
        "backup": ("would be taken (check mode)" if check_mode and inputs.get("backup_path")
                   else inputs.get("backup_path")) or "none",
        "backup_manifest": "none" if check_mode else (inputs.get("backup_manifest") or "none"),
        "blocked_sessions": _to_int(0 if inputs.get("blocked") is None else inputs.get("blocked")),
        "verification": str("not run" if inputs.get("verified") is None else inputs.get("verified")).strip(),
        "health": _health(inputs),
        "maintenance": _maintenance(inputs),
        "duration_s": round(_to_float(inputs.get("now")) - _to_float(inputs.get("started")), 1),
    }


def _would_apply(inputs: Mapping[str, Any]) -> Any:
    would_apply = inputs.get("would_apply")
    return [] if would_apply is None else would_apply


def _revision_now(inputs: Mapping[str, Any]) -> Any:
    """Where the database is: check mode changed nothing, so the revision it started at; otherwise
    what the running application reports (``revision`` of its health JSON), else the migration's target.
    """
    if inputs.get("check_mode"):
        return inputs.get("from_revision")
    health_json = _key(inputs.get("health_result"), "json", {})
    return _key(health_json, "revision", inputs.get("to_revision"))


def _health(inputs: Mapping[str, Any]) -> str:
    checked = inputs.get("health_check")
    result = inputs.get("health_result")
    if checked and _key(result, "status", 0) == 200:
        return "ok (" + str(inputs.get("health_url")) + " " + str(_key(result, "status", "?")) + ")"
    if not checked:
        return "not checked"
    return "FAILING (" + str(_key(result, "status", "no answer")) + ")"


def _maintenance(inputs: Mapping[str, Any]) -> str:
    if _flag(inputs.get("maintenance_left_on")):
        left_by = _key(inputs.get("maintenance_left_by"), "release_id", "?")
        return "left on by the interrupted release " + str(left_by) + ", now off"
    if _flag(inputs.get("maintenance_used")):
        return "was on, now off"
    if _flag(inputs.get("maintenance_would_use")):
        return "would be on during the migration (check mode)"
    return "not used"


def summary_lines(summary: Mapping[str, Any]) -> List[str]:
    """The lines the release prints last, from ``release_summary``'s result (the padding aligns the values)."""
    return [
        "path:              " + str(summary["path"]) + " (risk " + str(summary["risk"]) + ", asked "
        + str(summary["risk_asked"]) + ")",
        "release:           " + str(summary["app_version"]),
        _revisions_line(summary),
        "backup:            " + str(summary["backup"]),
        "blocked sessions:  " + str(summary["blocked_sessions"]),
        "verification:      " + str(summary["verification"]),
        "health:            " + str(summary["health"]),
        "maintenance:       " + str(summary["maintenance"]),
        "duration:          " + str(summary["duration_s"]) + " s",
    ]


def _revisions_line(summary: Mapping[str, Any]) -> str:
    if summary["check_mode"]:
        return ("check mode, nothing changed: would apply " + (_join(summary["revisions_would_apply"]) or "nothing")
                + " (the database stays at " + str(summary["revision"] or "no revision") + ")")
    return ("revisions applied: " + (_join(summary["revisions_applied"]) or "none")
            + " (now at " + str(summary["revision"]) + ")")


# ------------------------------------------------------------------ a release step that failed

def failure_facts(inputs: Mapping[str, Any]) -> Dict[str, Any]:
    """What a failed step changed, judged right after it failed, before anything is switched back.

    The database changed when the migration applied something, or when the revision read now
    differs from the one before the release. A revision that could not be read is no evidence: then
    only the applied revisions count. Check mode changed nothing. The application changed when the
    deploy step failed and was not brought back automatically.

    Inputs: failed_result (the failed task's result, ``ansible_failed_result``), step (migration |
    deploy), check_mode, applied (None: []), revisions_before (the release record's; None: no record,
    then the migration's from_revision), migrate_from_revision (None: unknown), revision_read
    (tasks/revision.yml's ``release_revision_read``: revisions, error), maintenance_on (None: false).

    Result: message, rolled_back, revisions_before, revision_before (None unless exactly one),
    revisions_now, db_changed, maintenance_was_on, app_changed.
    """
    failed = inputs.get("failed_result")
    check_mode = inputs.get("check_mode")
    read = inputs.get("revision_read") or {}
    before = _revisions_before(inputs)
    applied = inputs.get("applied") or []
    read_ok = len(read.get("error") or "") == 0
    return {
        "message": _key(failed, "msg", "failed"),
        "rolled_back": _to_bool(_key(failed, "rolled_back", False)),
        "revisions_before": before,
        "revision_before": before[0] if len(before) == 1 else None,
        "revisions_now": read.get("revisions"),
        "db_changed": not check_mode and (len(applied) > 0 or (read_ok and read.get("revisions") != before)),
        "maintenance_was_on": _flag(inputs.get("maintenance_on")),
        # the raw value, not ``| bool``: the playbook tested it as it came
        "app_changed": (not check_mode and inputs.get("step") == "deploy"
                        and not _key(failed, "rolled_back", False)),
    }


def _revisions_before(inputs: Mapping[str, Any]) -> Sequence[Any]:
    """The revisions before the release: the release record's, else the one the migration started from."""
    recorded = inputs.get("revisions_before")
    if recorded is not None:
        return recorded
    started_from = inputs.get("migrate_from_revision")
    return [started_from] if started_from else []


def failure_after_maintenance(inputs: Mapping[str, Any]) -> Dict[str, Any]:
    """The failure facts once maintenance mode may have been turned off again (nothing had changed).

    Inputs: failure (``failure_facts``' result), maintenance_on (the state now; None: false).
    Adds maintenance_off_again: it was on when the step failed and is off now.
    """
    facts = dict(inputs.get("failure") or {})
    facts["maintenance_off_again"] = (_to_bool(facts.get("maintenance_was_on"))
                                      and not _flag(inputs.get("maintenance_on")))
    return facts


def rollback_commands(inputs: Mapping[str, Any]) -> List[str]:
    """The commands that take back what changed, and only those.

    The application goes back when it changed; the database is downgraded to the revision before
    (only when there was exactly one to name), or, last resort, restored from the backup; maintenance
    mode is turned off after that when it is still on. Commands name the release (its record) except
    in check mode, where no record was written.

    Inputs: failure (facts: app_changed, db_changed, revision_before), check_mode, recorded (a release
    record exists), release_id, app_version, inventory_args (the -i options of this run),
    backup_manifest (None: ''), maintenance_on (None: false).
    """
    facts = inputs.get("failure") or {}
    playbook = _ROLLBACK_PLAYBOOK + str(inputs.get("inventory_args"))
    manifest = "" if inputs.get("backup_manifest") is None else inputs.get("backup_manifest")
    manifest_arg = (" -e manifest=" + str(manifest)) if manifest else ""
    release_arg = ((" -e release=" + str(inputs.get("release_id")))
                   if inputs.get("recorded") and not inputs.get("check_mode") else "")
    db_changed = _to_bool(facts.get("db_changed"))
    before = facts.get("revision_before")
    return _selected([
        ("application: " + playbook + " -e rollback=app" + release_arg) if _to_bool(facts.get("app_changed")) else "",
        ("database: " + playbook + " -e rollback=database" + manifest_arg + " -e migration_target=" + str(before)
         + " -e app_version=" + str(inputs.get("app_version")) + release_arg) if db_changed and before else "",
        ("last resort, restore the backup: " + playbook + " -e rollback=restore -e manifest=" + str(manifest)
         + " -e confirm=true") if db_changed and manifest else "",
        ("then maintenance off: " + _MAINTENANCE_PLAYBOOK + str(inputs.get("inventory_args")) + " -e state=off")
        if _flag(inputs.get("maintenance_on")) else "",
    ])


def failure_report(inputs: Mapping[str, Any]) -> Dict[str, Any]:
    """deploy-failed-<release_id>.json: what failed, what changed, and the rollback commands.

    Inputs: step, path (None: 'unknown'), app_version, failure (facts), applied (None: []),
    backup_path and backup_manifest (None: ''), maintenance_on (None: false), recorded, report_dir,
    release_id, rollback (``rollback_commands``' result).
    """
    facts = inputs.get("failure") or {}
    return {
        "result": "failed",
        "step": inputs.get("step"),
        "path": _or_default(inputs.get("path"), "unknown"),
        "app_version": inputs.get("app_version"),
        "message": facts.get("message"),
        "revisions_applied": _or_default(inputs.get("applied"), []),
        "revision_before": facts.get("revision_before"),
        "revision_now": _join(facts.get("revisions_now")) or None,
        "database_changed": _to_bool(facts.get("db_changed")),
        "backup": _or_default(inputs.get("backup_path"), ""),
        "backup_manifest": _or_default(inputs.get("backup_manifest"), ""),
        "maintenance": "on" if _flag(inputs.get("maintenance_on")) else "off",
        "release_record": (_record_path(inputs.get("report_dir"), inputs.get("release_id"))
                           if inputs.get("recorded") else None),
        "rollback": inputs.get("rollback"),
    }


def _or_default(value: Any, default: Any) -> Any:
    return default if value is None else value


def failure_lines(inputs: Mapping[str, Any]) -> List[str]:
    """The message a failed release stops with: what failed, what changed, where things stand, the way back.

    Inputs: step, path (None: 'unknown'), failure (facts, with maintenance_off_again), check_mode,
    applied (None: []), revision_read (``release_revision_read`` now: table, present, error),
    maintenance_on (None: false), backup_manifest (None: ''), recorded, report_dir, release_id,
    rollback (``rollback_commands``' result; empty: '(nothing to roll back)').
    """
    facts = inputs.get("failure") or {}
    check_mode = inputs.get("check_mode")
    applied = _or_default(inputs.get("applied"), [])
    db_changed = _to_bool(facts.get("db_changed"))
    before = facts.get("revision_before")
    manifest = _or_default(inputs.get("backup_manifest"), "")
    recorded_now = inputs.get("recorded") and not check_mode
    lines = _selected([
        "The " + str(inputs.get("step")) + " step of the " + str(_or_default(inputs.get("path"), "unknown"))
        + " path failed: " + str(facts.get("message")),
        "Check mode: nothing was changed, so there is nothing to roll back." if check_mode else "",
        "The previous release was brought back automatically." if facts.get("rolled_back") else "",
        _database_line(inputs, facts, applied),
        ("The database had no revision before this release, so there is no revision to go back to: restore the "
         "backup or downgrade by hand.") if db_changed and not before else "",
        _maintenance_line(inputs, facts),
        ("Backup: " + str(manifest)) if manifest and not check_mode else "",
        ("Release record: " + _record_path(inputs.get("report_dir"), inputs.get("release_id")))
        if recorded_now else "",
        "Roll back with:",
    ])
    return lines + list(inputs.get("rollback") or ["(nothing to roll back)"])


def _database_line(inputs: Mapping[str, Any], facts: Mapping[str, Any], applied: Sequence[Any]) -> str:
    read = inputs.get("revision_read") or {}
    if _to_bool(facts.get("db_changed")):
        return ("The database changed: it was at " + str(facts.get("revision_before") or "no revision")
                + " and is now at " + _database_now(read, facts)
                + (("; applied " + _join(applied)) if len(applied) > 0 else "") + ".")
    if not inputs.get("check_mode"):
        return "The database did not change: it stays at " + _database_now(read, facts) + "."
    return ""


def _database_now(read: Mapping[str, Any], facts: Mapping[str, Any]) -> str:
    """Where the database is now; a database that did not answer is named as such, never as 'no revision'."""
    error = read.get("error") or ""
    if len(error) > 0:
        return "unknown (the database did not answer: " + _truncate(error, _DB_ERROR_LENGTH) + ")"
    missing = "no revision (" + str(read.get("table")) + " is missing)"
    return _join(facts.get("revisions_now")) or (missing if not _to_bool(read.get("present")) else "no revision")


def _maintenance_line(inputs: Mapping[str, Any], facts: Mapping[str, Any]) -> str:
    if _flag(inputs.get("maintenance_on")):
        return "Maintenance mode stays ON (the maintenance page is served) until you turn it off."
    if _flag(facts.get("maintenance_off_again")):
        return "Maintenance mode was turned off again: nothing had changed."
    return "Maintenance mode is off."
