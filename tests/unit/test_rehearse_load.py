"""The synthetic load of a rehearsal: its queries, its per-revision latencies, and its stop."""
from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import load as rehearse_load

pytestmark = pytest.mark.unit


def test_queries_quote_names_and_write_nothing_new():
    read, write = rehearse_load.load_queries("sales", 'odd "t"', "Qty")
    assert read == 'SELECT 1 FROM "sales"."odd ""t""" LIMIT 1'
    assert write == ('UPDATE "sales"."odd ""t""" SET "Qty" = "Qty" WHERE ctid = '
                     '(SELECT ctid FROM "sales"."odd ""t""" LIMIT 1)')
    assert rehearse_load.load_queries("public", "t", None) == ('SELECT 1 FROM "public"."t" LIMIT 1', None)


def test_latency_summary_counts_slow_queries_and_errors():
    log = rehearse_load.LatencyLog()
    for seconds, ok in ((0.01, True), (0.02, True), (2.5, True), (1.0, False)):
        log.add(seconds, ok)
    assert log.summary() == {"queries": 4, "errors": 1, "median_s": 0.51, "max_s": 2.5, "slow": 2}
    assert rehearse_load.LatencyLog().summary() == {"queries": 0, "errors": 0, "median_s": None, "max_s": None,
                                                   "slow": 0}


def test_touched_tables_come_from_the_findings_once_each():
    estimates = {"0002": {"findings": [{"table": "orders"}, {"table": None}, {"table": "orders"}]},
                 "0003": {"findings": [{"table": "sales.items"}]}, "0004": {}}
    assert rehearse_load.touched_tables(estimates) == ["orders", "sales.items"]


class FakeCursor:
    def __init__(self, server):
        self.server = server

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, query, params=None):
        if query.startswith("SELECT n.nspname"):
            self.row = ("public", params[0], "id") if params[0] in self.server.tables else None
            return
        if query.startswith("SET"):
            return
        self.server.executed.append(query)
        # a query waits while the "migration" holds its lock, and fails when cancelled
        cancelled = self.server.cancel.wait(self.server.hold) if self.server.hold else False
        if cancelled:
            raise RuntimeError("canceling statement due to user request")

    def fetchone(self):
        return self.row


class FakeConn:
    def __init__(self, server):
        self.server = server
        self.closed = 0
        self.autocommit = False

    def cursor(self):
        return FakeCursor(self.server)

    def cancel(self):
        self.server.cancel.set()

    def close(self):
        self.closed = 1


class FakeServer:
    def __init__(self, tables):
        self.tables = tables
        self.executed = []
        self.hold = 0.0
        self.cancel = threading.Event()

    def connect(self):
        return FakeConn(self)


def test_latencies_go_to_the_revision_they_started_in_and_stop_cancels_a_waiting_query():
    server = FakeServer({"orders"})
    load = rehearse_load.SyntheticLoad(server.connect, rate=100).start(["orders", "created_later"])
    try:
        assert load.tables == ["orders"] and load.skipped == ["created_later"]
        load.swap(begin=True)
        time.sleep(0.2)
        first = load.swap(begin=False)["orders"]
        assert first["queries"] >= 5 and first["errors"] == 0 and first["slow"] == 0
        assert any(q.startswith("UPDATE") for q in server.executed)
        assert any(q.startswith("SELECT 1") for q in server.executed)
        server.hold = 30  # every query now waits behind a lock, until the load stops
        load.swap(begin=True)
        time.sleep(0.1)
    finally:
        started = time.monotonic()
        load.stop()
    assert time.monotonic() - started < 2  # the waiting query was cancelled, not waited out
    assert all(not thread.is_alive() for thread in load._threads)
