# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scratch databases of rehearsals: their names, their owner records, and the leftovers of killed runs.

Every scratch database is named ``dbops_rehearsal_<database>_<random>`` and carries a comment
recording the run that made it (host, boot, pid and the pid's start time). A run removes its own
database in a ``finally``; a run killed with ``kill -9`` cannot, so every run first drops the
databases with the prefix whose run is certainly gone (same host, and its pid gone or reused, or
the host rebooted), and reports those of other hosts.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backups

PREFIX = "dbops_rehearsal_"
RECORD_PREFIX = "dbops.migrations.migration_rehearsal "
DROP, KEEP, REPORT = "drop", "keep", "report"


def scratch_db_name(database: str) -> str:
    """``dbops_rehearsal_<plain database>_<8 hex>``; leaves room for pg_backup's own suffixes."""
    return "%s%s_%s" % (PREFIX, backups.plain_name(database)[:20], uuid.uuid4().hex[:8])


def is_scratch(name: str) -> bool:
    return name.startswith(PREFIX)


def owner_comment(owner: Dict[str, Any], name: str, **fields: Any) -> str:
    return RECORD_PREFIX + json.dumps(dict(owner, kind="rehearsal", name=name, **fields), sort_keys=True)


def parse_comment(text: Optional[str]) -> Optional[Dict[str, Any]]:
    """The owner record of a comment: a rehearsal's, or pg_backup's (a restore still in progress)."""
    if not text:
        return None
    if text.startswith(RECORD_PREFIX):
        try:
            record = json.loads(text[len(RECORD_PREFIX):])
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
    return backups.parse_owner_record(text)


def leftover_verdict(name: str, comment: Optional[str], sessions: int,
                     here: Dict[str, Any]) -> Tuple[str, str]:
    """(drop | keep | report, why) for a database whose name has the rehearsal prefix."""
    record = parse_comment(comment)
    if record is None:
        if sessions:
            return KEEP, "no owner record yet and %d session(s) connected: a rehearsal being set up" % sessions
        return DROP, "no owner record and nobody connected: a rehearsal killed while it restored"
    gone = backups.owner_gone(record, here)
    who = "pid %s on %s (started %s)" % (record.get("pid"), record.get("host"), record.get("started_at"))
    if gone is None:
        return REPORT, "scratch database of %s; only that host can tell whether it still runs" % who
    if gone:
        return DROP, "scratch database of %s, which is gone" % who
    return KEEP, "a rehearsal by %s is running" % who


# ---------------------------------------------------------------- against the server

def list_scratch(cur) -> List[Tuple[str, Optional[str], int]]:
    """(name, comment, connected sessions) of every database with the prefix."""
    cur.execute(
        "SELECT d.datname, shobj_description(d.oid, 'pg_database'),"
        " (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname)"
        " FROM pg_database d WHERE left(d.datname, %s) = %s ORDER BY 1", (len(PREFIX), PREFIX))
    return [(r[0], r[1], int(r[2])) for r in cur.fetchall()]


def drop(cur, name: str, server_num: int) -> None:
    """DROP DATABASE, ending its sessions first (FORCE on 13+, pg_terminate_backend before)."""
    if not is_scratch(name):
        raise ValueError("refusing to drop %s: not a rehearsal scratch database" % name)
    quoted = '"%s"' % name.replace('"', '""')
    if server_num >= 130000:
        cur.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % quoted)
        return
    cur.execute("ALTER DATABASE %s ALLOW_CONNECTIONS false" % quoted)
    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    cur.execute("DROP DATABASE IF EXISTS %s" % quoted)


def set_owner_comment(cur, name: str, comment: str) -> None:
    quoted = '"%s"' % name.replace('"', '""')
    cur.execute("COMMENT ON DATABASE %s IS %%s" % quoted, (comment,))


def clean_leftovers(cur, here: Dict[str, Any], server_num: int, check_mode: bool = False,
                    spare: Tuple[str, ...] = ()) -> Dict[str, List[Any]]:
    """Drop the scratch databases of dead runs; ``dropped`` and ``kept`` (name and reason)."""
    dropped: List[str] = []
    kept: List[Dict[str, str]] = []
    for name, comment, sessions in list_scratch(cur):
        if name in spare:
            continue
        action, why = leftover_verdict(name, comment, sessions, here)
        if action == DROP:
            if not check_mode:
                drop(cur, name, server_num)
            dropped.append("%s (%s)" % (name, why))
        elif action == REPORT:
            kept.append({"database": name, "reason": why})
    return {"dropped": dropped, "kept": kept}
