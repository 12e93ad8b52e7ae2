# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who waits on the migration, and on whom the migration waits.

A background thread samples ``pg_stat_activity`` and ``pg_locks`` on its own connection
(about every 100 ms) while alembic runs. The migration's backends are recognised by their
``application_name``, which the runner sets to a token unique to the run. The pure part,
:class:`BlockedTracker`, turns samples into the ``blocked`` result and a timeline.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

SAMPLE_SQL = """
SELECT a.pid,
       coalesce(a.application_name, ''),
       coalesce(a.state, ''),
       coalesce(a.wait_event_type, ''),
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8,
       left(coalesce(a.query, ''), 400),
       pg_blocking_pids(a.pid),
       w.waited,
       w.waitstart,
       w.lock
  FROM pg_stat_activity a
  LEFT JOIN LATERAL (
       SELECT extract(epoch FROM clock_timestamp() - {wait_start})::float8 AS waited,
              extract(epoch FROM {wait_start})::float8 AS waitstart,
              l.mode || ' ' || l.locktype
                || coalesce(' ' || l.relation::regclass::text, '')
                || CASE WHEN l.locktype = 'transactionid' THEN ' ' || l.transactionid::text ELSE '' END AS lock
         FROM pg_locks l
        WHERE l.pid = a.pid AND NOT l.granted
        LIMIT 1) w ON true
 WHERE a.datname = current_database()
   AND a.pid <> pg_backend_pid()
   AND a.backend_type = 'client backend'
"""


def sample_sql(version_num: int) -> str:
    """The sampling query for a server: pg_locks.waitstart (PostgreSQL 14+) says when a wait began;
    before 14 the waiting statement's start stands in for it (an upper bound of the wait)."""
    return SAMPLE_SQL.format(wait_start="l.waitstart" if version_num >= 140000 else "a.query_start")


_MODE_NAMES = {
    "AccessShareLock": "ACCESS SHARE", "RowShareLock": "ROW SHARE", "RowExclusiveLock": "ROW EXCLUSIVE",
    "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE", "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE", "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}


def describe_lock(raw: Optional[str]) -> Optional[str]:
    """``AccessExclusiveLock relation orders`` -> ``ACCESS EXCLUSIVE lock on relation orders``."""
    if not raw:
        return None
    parts = raw.split(" ", 2)
    mode = _MODE_NAMES.get(parts[0], parts[0])
    rest = " ".join(parts[1:])
    return "%s lock on %s" % (mode, rest) if rest else "%s lock" % mode


@dataclasses.dataclass
class Row:
    pid: int
    application_name: str
    state: str
    wait_event_type: str
    xact_age: Optional[float]
    query: str
    blocking: Tuple[int, ...]
    waited: Optional[float]
    waitstart: Optional[float]
    lock: Optional[str]

    @classmethod
    def from_tuple(cls, row: Sequence[Any]) -> "Row":
        return cls(pid=int(row[0]), application_name=row[1] or "", state=row[2] or "",
                   wait_event_type=row[3] or "", xact_age=row[4], query=row[5] or "",
                   blocking=tuple(int(p) for p in (row[6] or ())), waited=row[7], waitstart=row[8],
                   lock=row[9])


class BlockedTracker:
    """Accumulates samples into episodes of waiting, keyed by (pid, wait start)."""

    def __init__(self, app_name: str, mask: Callable[[str], str] = lambda s: s, interval: float = 0.1,
                 keep_timeline: bool = False):
        self.app_name = app_name
        self.mask = mask
        self.interval = interval
        self.keep_timeline = keep_timeline
        self.samples = 0
        self.started = time.monotonic()
        self.blocked: Dict[Tuple[int, float], Dict[str, Any]] = {}
        self.own_waits: Dict[Tuple[int, float], Dict[str, Any]] = {}
        self.timeline: List[Dict[str, Any]] = []
        self.errors = 0
        self.lock = threading.Lock()
        self.migration_pids_seen: set = set()

    def _session(self, row: Optional[Row], pid: int) -> Dict[str, Any]:
        if row is None:
            return {"pid": pid}
        return {"pid": row.pid, "application_name": row.application_name, "state": row.state,
                "query": self.mask(row.query)[:300],
                "xact_age_s": round(row.xact_age, 3) if row.xact_age is not None else None}

    def add(self, rows: Sequence[Row], now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        by_pid = {row.pid: row for row in rows}
        migration = {row.pid for row in rows if row.application_name == self.app_name}
        with self.lock:
            self.samples += 1
            self.migration_pids_seen |= migration
            blocked_now = 0
            longest_now = 0.0
            for row in rows:
                if row.pid in migration:
                    if row.lock and row.waitstart is not None:
                        key = (row.pid, round(row.waitstart, 3))
                        entry = self.own_waits.setdefault(key, {
                            "pid": row.pid, "lock": describe_lock(row.lock), "waited_s": 0.0,
                            "statement": self.mask(row.query)[:300], "blocked_by": {}})
                        entry["waited_s"] = max(entry["waited_s"], round(row.waited or 0.0, 3))
                        for pid in row.blocking:
                            entry["blocked_by"][pid] = self._session(by_pid.get(pid), pid)
                    continue
                if not migration.intersection(row.blocking) or row.waitstart is None:
                    continue
                blocked_now += 1
                longest_now = max(longest_now, row.waited or 0.0)
                key = (row.pid, round(row.waitstart, 3))
                entry = self.blocked.setdefault(key, {"pid": row.pid, "waited_s": 0.0,
                                                      "query": self.mask(row.query)[:200],
                                                      "lock": describe_lock(row.lock)})
                entry["waited_s"] = max(entry["waited_s"], round(row.waited or 0.0, 3))
            if self.keep_timeline:
                self.timeline.append({
                    "t": round(now - self.started, 3),
                    "migration_sessions": len(migration),
                    "migration_waiting": any(by_pid[p].lock for p in migration),
                    "blocked_sessions": blocked_now,
                    "longest_wait_s": round(longest_now, 3),
                    "lock_waiters": sum(1 for row in rows if row.lock),
                })

    def summary(self) -> Dict[str, Any]:
        with self.lock:
            waits = [entry["waited_s"] for entry in self.blocked.values()]
            own = [_public_wait(entry) for entry in self.own_waits.values()]
            return {
                "sessions": len({entry["pid"] for entry in self.blocked.values()}),
                "waits": len(waits),
                "longest_wait_s": round(max(waits), 3) if waits else 0.0,
                "total_wait_s": round(sum(waits), 3),
                "migration_waits": own,
                "migration_wait_s": round(sum(w["waited_s"] for w in own), 3),
                "samples": self.samples,
                "interval_ms": int(self.interval * 1000),
            }


def _public_wait(entry: Dict[str, Any]) -> Dict[str, Any]:
    return {"lock": entry["lock"], "waited_s": entry["waited_s"], "statement": entry["statement"],
            "blocked_by": list(entry["blocked_by"].values())}


class SamplingThread:
    """Calls sample() on its own connection every interval, in a daemon thread until stopped. A sample that
    fails (the server restarting, a dropped connection) is counted and the next one reconnects."""

    thread_name = "dbops-sampler"
    retry_wait = 0.5

    def __init__(self, connect: Callable[[], Any]):
        self.connect = connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._conn = None

    @property
    def interval(self) -> float:
        raise NotImplementedError

    def count_error(self) -> None:
        raise NotImplementedError

    def on_connect(self, conn: Any) -> None:
        """Called once per new connection, before its first sample."""

    def sample(self, conn: Any) -> None:
        raise NotImplementedError

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._close()

    def sample_once(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
            self.on_connect(self._conn)
        self.sample(self._conn)

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()
        self._conn = None

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.sample_once()
            except Exception:  # reconnect on the next sample
                self.count_error()
                self._close()
                self._stop.wait(self.retry_wait)
                continue
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))


class Monitor(SamplingThread):
    """Samples who waits on whom into the tracker."""

    thread_name = "dbops-migrate-monitor"

    def __init__(self, connect: Callable[[], Any], tracker: BlockedTracker):
        self.tracker = tracker
        self._sql = ""
        super().__init__(connect)

    @property
    def interval(self) -> float:
        return self.tracker.interval

    def count_error(self) -> None:
        self.tracker.errors += 1

    def on_connect(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version_num")
            self._sql = sample_sql(int(cur.fetchone()[0]))

    def sample(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(self._sql)
            rows = [Row.from_tuple(r) for r in cur.fetchall()]
        self.tracker.add(rows)


def write_timeline(path: str, tracker: BlockedTracker, extra: Optional[Dict[str, Any]] = None) -> None:
    """Write the sampled timeline as JSON, atomically, mode 0600."""
    payload = {"interval_ms": int(tracker.interval * 1000), "summary": tracker.summary(),
               "samples": tracker.timeline}
    payload.update(extra or {})
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".timeline-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except Exception:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------- the controller

def process_state(pid: int) -> Optional[Tuple[str, int, str]]:
    """(state, parent pid, start time) of a process from /proc, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), fields[19]


def process_argv(pid: int) -> List[str]:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def _is_ansible(argv: Sequence[str]) -> bool:
    names = [os.path.basename(arg) for arg in argv[:2]]
    return any(name.startswith("ansible") for name in names) or any("AnsiballZ_" in arg for arg in argv)


def controller_chain(pid: Optional[int] = None) -> List[Tuple[int, str]]:
    """The processes whose death means nobody waits for this run any more, as (pid, start time).

    Under Ansible that is every ancestor up to the top ``ansible-playbook`` process: when it is
    killed, its forked worker and the shell that started the module live on, so the direct parent
    alone would never notice. Outside Ansible it is the direct parent.
    """
    chain: List[Tuple[int, str, bool]] = []
    current = os.getppid() if pid is None else pid
    while current > 1 and len(chain) < 64:
        state = process_state(current)
        if state is None:
            break
        chain.append((current, state[2], _is_ansible(process_argv(current))))
        current = state[1]
    topmost = max((index for index, (_pid, _start, ansible) in enumerate(chain) if ansible), default=0)
    return [(item[0], item[1]) for item in chain[:topmost + 1]]


def gone_process(chain: Sequence[Tuple[int, str]]) -> Optional[int]:
    """The first process of ``chain`` that exited (or became a zombie, or whose pid was reused)."""
    for pid, started in chain:
        state = process_state(pid)
        if state is None or state[0] in ("Z", "X") or state[2] != started:
            return pid
    return None


def descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (children first), read from /proc."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            state = process_state(int(entry))
            if state is not None:
                children.setdefault(state[1], []).append(int(entry))
    found: List[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop(0)
        found.append(child)
        stack.extend(children.get(child, []))
    return found


class ControllerWatch:
    """Calls ``on_gone(pid)`` once, from its own thread, when a process of the controller chain dies
    (or this process is re-parented)."""

    def __init__(self, on_gone: Callable[[int], None], interval: float = 0.25,
                 chain: Optional[Sequence[Tuple[int, str]]] = None):
        self.on_gone = on_gone
        self.interval = interval
        self.parent = os.getppid()
        self.chain = list(chain) if chain is not None else controller_chain()
        self.gone: Optional[int] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbops-controller-watch", daemon=True)

    def start(self) -> "ControllerWatch":
        if self.chain:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            gone = self.parent if os.getppid() != self.parent else gone_process(self.chain)
            if gone is not None:
                self.gone = gone
                with contextlib.suppress(Exception):
                    self.on_gone(gone)
                return
