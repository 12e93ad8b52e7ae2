# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which archive a rehearsal restores, and the records rehearsals leave for the release gate.

* :func:`choose_archive`: the newest pg_backup archive of a database whose manifest says it was
  verified, no older than ``max_age_hours``;
* :func:`write_record` / :func:`find_record`: ``<record_dir>/<id>.json`` (and ``last.json``),
  and the newest passing record of the same revisions no older than ``max_age_days``.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backups

RECORD_FORMAT_VERSION = 1
LAST_RECORD = "last.json"


class RehearsalError(Exception):
    """The rehearsal cannot run or failed; the message says what to do next."""


def parse_time(text: Any) -> Optional[datetime.datetime]:
    """An ISO 8601 time (``Z`` or an offset); naive times are UTC. None when unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


# ---------------------------------------------------------------- archives

def archive_verdict(manifest: Dict[str, Any], now: datetime.datetime, max_age_hours: float) -> Optional[str]:
    """Why an archive is not fit to rehearse on, or None when it is."""
    verification = manifest.get("verification") or {}
    if not verification.get("verified"):
        return "not verified (its manifest has no passed verification; take backups with verify: list or restore)"
    taken = parse_time(manifest.get("finished_at"))
    if taken is None:
        return "its manifest has no finished_at time"
    age_h = (now - taken).total_seconds() / 3600.0
    if age_h > max_age_hours:
        return "%.1f hours old (max_age_hours=%s)" % (age_h, max_age_hours)
    return None


def choose_archive(folder: str, database: str, now: Optional[datetime.datetime] = None,
                   max_age_hours: float = 24.0) -> Tuple[Optional[str], List[Dict[str, str]]]:
    """(manifest path of the newest fit archive of ``database`` in ``folder`` or None, the archives
    passed over with the reason)."""
    now = now or backups.utc_now()
    passed_over: List[Dict[str, str]] = []
    for entry in backups.list_backups(folder, database):
        path = os.path.join(folder, entry.manifest)
        try:
            manifest = backups.read_manifest(path)
        except backups.BackupError as exc:
            passed_over.append({"manifest": path, "reason": str(exc)})
            continue
        reason = archive_verdict(manifest, now, max_age_hours)
        if reason is None:
            return path, passed_over
        passed_over.append({"manifest": path, "reason": reason})
    return None, passed_over


# ---------------------------------------------------------------- records

def record_name(record_id: str) -> str:
    return "%s.json" % record_id


def write_record(record_dir: str, record: Dict[str, Any]) -> str:
    """Write the record atomically with mode 0640 as ``<id>.json`` and ``last.json``; returns its path."""
    os.makedirs(record_dir, mode=0o750, exist_ok=True)
    path = os.path.join(record_dir, record_name(record["id"]))
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    for target in (path, os.path.join(record_dir, LAST_RECORD)):
        fd, tmp = tempfile.mkstemp(prefix=".rehearsal-", dir=record_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o640)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return path


def read_records(record_dir: str) -> List[Dict[str, Any]]:
    """Every readable record in ``record_dir`` (``last.json`` is a copy and is skipped), newest first."""
    try:
        names = sorted(os.listdir(record_dir))
    except FileNotFoundError:
        return []
    records = []
    for name in names:
        if not name.endswith(".json") or name == LAST_RECORD or name.startswith("."):
            continue
        try:
            with open(os.path.join(record_dir, name), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("format_version") == RECORD_FORMAT_VERSION:
            data["path"] = os.path.join(record_dir, name)
            records.append(data)
    records.sort(key=lambda r: str(r.get("finished_at") or ""), reverse=True)
    return records


def record_verdict(record: Dict[str, Any], revisions: Sequence[str], now: datetime.datetime,
                   max_age_days: float, database: Optional[str] = None) -> Optional[str]:
    """Why a record does not allow the release, or None when it does."""
    if database and record.get("database") != database:
        return "it rehearsed database %s" % record.get("database")
    rehearsed = sorted(record.get("revisions") or [])
    if rehearsed != sorted(revisions):
        return "it rehearsed %s, not %s" % (", ".join(rehearsed) or "nothing", ", ".join(sorted(revisions)) or "nothing")
    if not record.get("passed"):
        return "it failed: %s" % (record.get("failure") or "see the record")
    finished = parse_time(record.get("finished_at"))
    if finished is None:
        return "it has no finished_at time"
    age_days = (now - finished).total_seconds() / 86400.0
    if age_days > max_age_days:
        return "it is %.1f days old (max %s)" % (age_days, max_age_days)
    if age_days < -1.0 / 24:
        return "its finished_at lies in the future"
    return None


def find_record(record_dir: str, revisions: Sequence[str], max_age_days: float,
                now: Optional[datetime.datetime] = None, database: Optional[str] = None) -> Dict[str, Any]:
    """The newest record that allows a release of ``revisions``: ``passed``, ``record`` and, when
    none does, ``reason`` (why the newest records of those revisions do not)."""
    now = now or backups.utc_now()
    reasons = []
    for record in read_records(record_dir):
        why = record_verdict(record, revisions, now, max_age_days, database)
        if why is None:
            return {"passed": True, "record": record, "reason": None}
        reasons.append("%s: %s" % (os.path.basename(record["path"]), why))
    if not reasons:
        reason = "no rehearsal record in %s" % record_dir
    else:
        reason = "no passing rehearsal of %s no older than %s days in %s (%s)" % (
            ", ".join(revisions) or "nothing", max_age_days, record_dir, "; ".join(reasons[:3]))
    return {"passed": False, "record": None, "reason": reason}


def summary_line(record: Dict[str, Any]) -> str:
    """The rehearsal's numbers in one line, for the approval message."""
    parts = []
    for rev in record.get("measurements") or []:
        rewrites = ", ".join(rev.get("rewritten_tables") or []) or "none"
        part = "%s %.1f s wall, strong locks %.1f s, rewrites %s, WAL %s" % (
            rev.get("revision"), rev.get("duration_s") or 0.0, rev.get("lock_s") or 0.0, rewrites,
            human_bytes(rev.get("wal_bytes")))
        waits = [load["max_s"] for load in (rev.get("load") or {}).values() if load.get("max_s") is not None]
        if waits:  # the synthetic load (load_rate): what the application would have waited
            part += ", queries waited up to %.1f s" % max(waits)
        parts.append(part)
    calibration = record.get("calibration") or {}
    disagreements = len(calibration.get("disagreements") or [])
    return "rehearsed %s on %s (%s)%s: %s; estimate %s" % (
        ", ".join(record.get("revisions") or []) or "nothing", record.get("archive_finished_at") or "?",
        record.get("finished_at") or "?", where_line(record.get("scratch")), "; ".join(parts) or "nothing ran",
        "agrees" if disagreements == 0 else "disagrees in %d row(s)" % disagreements)


def where_line(scratch: Optional[Dict[str, Any]]) -> str:
    """`` in a container of IMAGE (PostgreSQL X)`` for a rehearsal on a scratch container; empty otherwise
    (a scratch database on the database server, and records written before containers existed)."""
    if not isinstance(scratch, dict) or scratch.get("kind") != "container":
        return ""
    version = scratch.get("server_version")
    return " in a container of %s%s" % (scratch.get("image") or "?", " (PostgreSQL %s)" % version if version else "")


def human_bytes(size: Optional[int]) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return "%d %s" % (value, unit) if unit == "B" else "%.1f %s" % (value, unit)
        value /= 1024
    return "%d B" % size
