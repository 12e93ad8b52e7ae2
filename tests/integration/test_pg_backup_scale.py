"""pg_backup past thousands of tables: dump, verification restore and restore must not need a
lock per object in one transaction (PostgreSQL's lock table is finite)."""
from __future__ import annotations

import contextlib
import os

import pytest

from tests.helpers import postgres as pgh
from tests.helpers.ansible import run_module

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.nightly]

TABLES = 3000


@pytest.fixture(scope="module")
def small_lock_table():
    """A server of its own whose lock table holds fewer locks than a restore of every table and its
    three indexes in one transaction needs (12,000), but more than pg_dump's one per table."""
    if os.environ.get("DBOPS_TEST_PG_URL"):
        pytest.skip("needs a cluster of the tests' own to change max_locks_per_transaction")
    with pgh.private_cluster() as server:
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET max_locks_per_transaction = 20")
        server.restart()
        yield server


def test_three_thousand_tables_dump_verify_and_restore(small_lock_table, tmp_path):
    server = small_lock_table
    pgh.create_database(server, "many")
    with contextlib.closing(server.connect("many")) as conn, conn.cursor() as cur:
        for start in range(0, TABLES, 250):  # one transaction per batch: creating them needs locks too
            cur.execute(";".join("CREATE TABLE t%d (id int PRIMARY KEY, a int UNIQUE, b int UNIQUE)" % i for i in range(start, start + 250)))
        cur.execute("INSERT INTO t1 VALUES (1, 1, 1), (2, 2, 2)")
        cur.execute("SHOW max_locks_per_transaction")
        assert cur.fetchone()[0] == "20"
    made = run_module("pg_backup", dict(server.login_args("many"), dest=str(tmp_path), format="custom",
                                        verify="restore"))
    assert not made.result.get("failed"), made.result.get("msg") or made.output[-3000:]
    assert made.result["verified"] and made.result["manifest"]["table_count"] == TABLES
    restored = run_module("pg_backup", dict(server.login_args(), state="restored", src=made.result["manifest_path"],
                                            target_db="many_restored", jobs=1))
    assert not restored.result.get("failed"), restored.result.get("msg") or restored.output[-3000:]
    assert len(restored.result["restored_tables"]) == TABLES and restored.result["restored_tables"]["public.t1"] == 2
