"""A light synthetic read/write load on the tables a rehearsed migration touches.

Each table gets one session of its own that alternates a one-row read and a one-row write that changes
nothing (``UPDATE t SET c = c`` on one row), ``rate`` queries per second. The write takes the lock an
application's writes take (ROW EXCLUSIVE and a row lock), so it queues behind the migration's strong locks
exactly as production traffic would, and it also holds the migration up as traffic would. Every query's
latency is kept per revision: the rehearsal reports how long the application would have waited.

It runs only on the scratch copy; its sessions are cancelled and closed when it stops.
"""
from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# A query that took longer than this waited for a lock: what users notice.
SLOW_QUERY_SECONDS = 1.0
# Load sessions wait as long as the migration makes them (that is the measurement), but never forever.
LOAD_STATEMENT_TIMEOUT_MS = 600000

RESOLVE_SQL = (
    "SELECT n.nspname, c.relname,"
    " (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    "  AND a.attgenerated = '' AND a.attidentity <> 'a' ORDER BY a.attnum LIMIT 1)"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')")


class LatencyLog:
    """The latencies of one table's queries during one revision."""

    def __init__(self) -> None:
        self.latencies: List[float] = []
        self.errors = 0

    def add(self, seconds: float, ok: bool) -> None:
        self.latencies.append(seconds)
        if not ok:
            self.errors += 1

    def summary(self) -> Dict[str, Any]:
        waits = self.latencies
        return {"queries": len(waits), "errors": self.errors,
                "median_s": round(statistics.median(waits), 4) if waits else None,
                "max_s": round(max(waits), 3) if waits else None,
                "slow": sum(1 for w in waits if w >= SLOW_QUERY_SECONDS)}


def quote_ident(name: str) -> str:
    return '"%s"' % name.replace('"', '""')


def load_queries(schema: str, table: str, column: Optional[str]) -> Tuple[str, Optional[str]]:
    """(read, write) for one table; no write for a table without a plain column to set to itself."""
    relation = "%s.%s" % (quote_ident(schema), quote_ident(table))
    read = "SELECT 1 FROM %s LIMIT 1" % relation
    if column is None:
        return read, None
    col = quote_ident(column)
    write = "UPDATE %s SET %s = %s WHERE ctid = (SELECT ctid FROM %s LIMIT 1)" % (relation, col, col, relation)
    return read, write


class SyntheticLoad:
    """``start(tables)`` then ``swap()`` around each revision, ``stop()`` at the end (always)."""

    def __init__(self, connect_fn: Callable[[], Any], rate: float, clock: Callable[[], float] = time.monotonic):
        self.connect_fn = connect_fn
        self.rate = rate
        self.clock = clock
        self.tables: List[str] = []
        self.skipped: List[str] = []
        self._logs: Optional[Dict[str, LatencyLog]] = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: List[threading.Thread] = []
        self._conns: List[Any] = []

    def start(self, tables: Sequence[str]) -> "SyntheticLoad":
        """One session per table that exists on the copy (a table the migration creates gets none)."""
        conn = self.connect_fn()
        try:
            with conn.cursor() as cur:
                for table in tables:
                    cur.execute(RESOLVE_SQL, (table,))
                    row = cur.fetchone()
                    if row is None:
                        self.skipped.append(table)
                        continue
                    self.tables.append(table)
                    read, write = load_queries(row[0], row[1], row[2])
                    thread = threading.Thread(target=self._run, args=(table, read, write),
                                              name="dbops-rehearsal-load", daemon=True)
                    self._threads.append(thread)
        finally:
            conn.close()
        for thread in self._threads:
            thread.start()
        return self

    def swap(self, begin: bool) -> Dict[str, Dict[str, Any]]:
        """Start a new revision's logs (``begin``) or end the current one's; returns what ended."""
        with self._lock:
            ended, self._logs = self._logs, ({} if begin else None)
        return {table: log.summary() for table, log in sorted((ended or {}).items())}

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # a query waiting behind a lock ends now
            try:
                conn.cancel()
            except Exception:
                pass
        for thread in self._threads:
            thread.join(timeout=5)

    # -- one table's session
    def _run(self, table: str, read: str, write: Optional[str]) -> None:
        period = 1.0 / self.rate
        conn = None
        turn = 0
        next_at = self.clock()
        while not self._stopping.is_set():
            if conn is None:
                conn = self._open()
                if conn is None:
                    self._stopping.wait(0.2)
                    continue
            query = write if (write is not None and turn % 2) else read
            turn += 1
            with self._lock:
                log = None if self._logs is None else self._logs.setdefault(table, LatencyLog())
            began = self.clock()
            ok = True
            try:
                with conn.cursor() as cur:
                    cur.execute(query)
            except Exception:
                ok = False
                if self._stopping.is_set():
                    break
                if getattr(conn, "closed", 0):  # the session broke (server restart): open another
                    self._forget(conn)
                    conn = None
            if log is not None:
                log.add(self.clock() - began, ok)
            next_at = max(next_at + period, self.clock())
            self._stopping.wait(max(0.0, next_at - self.clock()))
        if conn is not None:
            self._forget(conn)

    def _open(self) -> Any:
        try:
            conn = self.connect_fn()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = %d" % LOAD_STATEMENT_TIMEOUT_MS)
        except Exception:
            return None
        with self._lock:
            self._conns.append(conn)
        return conn

    def _forget(self, conn: Any) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        try:
            conn.close()
        except Exception:
            pass


def touched_tables(estimates: Dict[str, Dict[str, Any]]) -> List[str]:
    """The tables migration_risk's findings name for the pending revisions."""
    return sorted({f["table"] for estimate in estimates.values() for f in estimate.get("findings") or []
                   if f.get("table")})
