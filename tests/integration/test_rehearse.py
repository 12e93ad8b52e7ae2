"""migration_rehearsal against the real PostgreSQL: a 1,000,000-row table and a revision that rewrites it.

The rehearsal restores a verified pg_backup archive into a scratch database, migrates it with the real
runner while sampling its locks, and drops it again: also when interrupted, and, after a kill -9, on
the next run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import calibrate, scratch
from tests.conftest import DbHandle
from tests.helpers import postgres as pg
from tests.helpers import rehearsal as rehearsal_helpers
from tests.helpers.ansible import run_module
from tests.helpers.migrate_project import alembic, make_project
from tests.helpers.rehearsal import SLOW_REVISIONS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 1_000_000
REVISIONS = [
    ("0001", "orders",
     '    op.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, account_id int NOT NULL, '
     'quantity int NOT NULL, note text)")',
     '    op.execute("DROP TABLE orders")'),
    ("0002", "quantity becomes bigint (rewrites orders)",
     '    op.execute("ALTER TABLE orders ALTER COLUMN quantity TYPE bigint")',
     '    op.execute("ALTER TABLE orders ALTER COLUMN quantity TYPE int")'),
]
def take_backup(db: DbHandle, dest: Path) -> str:
    return rehearsal_helpers.take_backup(db.url, str(dest), db.server.bin_dir or None)


def scratch_databases(server) -> list[str]:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbops\\_rehearsal\\_%%'")
        return sorted(r[0] for r in cur.fetchall())


@pytest.fixture(scope="module")
def big(pg_server, tmp_path_factory):
    """A database at 0001 with 1,000,000 orders, its verified backup, and the project whose 0002 rewrites it."""
    root = tmp_path_factory.mktemp("rehearse-big")
    name = "r_" + uuid.uuid4().hex[:10]
    pg.create_database(pg_server, name)
    db = DbHandle(pg_server, name)
    config = make_project(root / "project", REVISIONS)
    alembic(db, config, "upgrade", "0001")
    db.execute("INSERT INTO orders (account_id, quantity, note) SELECT g %% 1000, g %% 97, 'n' || g"
               " FROM generate_series(1, %s) g", (ROWS,))
    db.execute("ANALYZE orders")
    backups = root / "backups"
    take_backup(db, backups)
    yield db, config, backups, root
    pg.drop_database(pg_server, name)


def module_args(db: DbHandle, config: Path, backups: Path, **extra) -> dict:
    args = dict(db.login_args(), backup_dir=str(backups), allow_production_server=True, config=str(config),
                lock_timeout="2s", retries=1, retry_delay=0.2, bin_dir=db.server.bin_dir or None)
    args.update(extra)
    return {k: v for k, v in args.items() if v is not None}


def test_rehearsal_measures_the_rewrite_and_drops_the_copy(big, tmp_path):
    db, config, backups, _root = big
    records = tmp_path / "rehearsals"
    run = run_module("migration_rehearsal", module_args(db, config, backups, record_dir=str(records)))
    result = run.result
    assert result.get("passed") is True, run.output[-4000:]
    assert result["revisions"] == ["0002"]
    [rev] = result["measurements"]
    assert rev["revision"] == "0002" and rev["applied"]
    assert rev["rewritten_tables"] == ["orders"]
    assert "orders_pkey" in rev["rebuilt_indexes"]
    assert rev["wal_bytes"] > 10_000_000
    orders_lock = [lock for lock in rev["locks"] if lock["table"] == "orders"][0]
    assert orders_lock["lock"] == "ACCESS EXCLUSIVE" and orders_lock["blocks"] == "reads_and_writes"
    assert "ALTER TABLE orders" in orders_lock["taken_by"]
    assert orders_lock["held_s"] > 0.2 and rev["lock_s"] >= orders_lock["held_s"] * 0.9
    assert rev["duration_s"] >= rev["lock_s"] * 0.8
    assert any("ALTER TABLE orders" in s["statement"] for s in rev["statements"])
    change = [c for c in rev["size_changes"] if c["table"] == "orders"][0]
    assert change["table_bytes_before"] > 30_000_000
    # calibration: the estimate beside the measurement, per revision and per table
    rows = {(r["revision"], r["table"]): r for r in result["calibration"]["rows"]}
    assert rows[("0002", None)]["measured_lock_s"] == rev["lock_s"]
    assert rows[("0002", None)]["estimated_lock_s"] is not None
    # the verdict follows from the two numbers (a busy machine may rightly measure "underestimated")
    table_row = rows[("0002", "orders")]
    assert 0.5 < table_row["estimated_lock_s"] < 2.0  # ~75 MB of relations rewritten at 60 MB/s
    assert table_row["ratio"] == round(table_row["measured_lock_s"] / table_row["estimated_lock_s"], 2)
    assert table_row["verdict"] == calibrate.verdict(table_row["measured_lock_s"], table_row["estimated_lock_s"])["verdict"]
    assert rev["estimate"]["risk"] in ("high", "critical")
    # the copy is gone, production untouched, the record written without secrets
    assert result["scratch_dropped"] is True and scratch_databases(db.server) == []
    assert db.scalar("SELECT version_num FROM alembic_version") == "0001"
    assert db.scalar("SELECT data_type FROM information_schema.columns WHERE table_name = 'orders'"
                     " AND column_name = 'quantity'") == "integer"
    record = json.loads((records / "last.json").read_text())
    assert record["passed"] and record["revisions"] == ["0002"]
    assert pg.TEST_PASSWORD not in run.output and pg.TEST_PASSWORD not in json.dumps(result)
    assert pg.TEST_PASSWORD not in (records / "last.json").read_text()


def test_a_synthetic_load_waits_behind_the_rewrite(big):
    db, config, backups, _root = big
    run = run_module("migration_rehearsal", module_args(db, config, backups, load_rate=20))
    result = run.result
    assert result.get("passed") is True, run.output[-4000:]
    assert result["load"] == {"rate_per_table": 20.0, "tables": ["orders"], "not_there_yet": []}
    [rev] = result["measurements"]
    orders_lock = [lock for lock in rev["locks"] if lock["table"] == "orders"][0]
    load = rev["load"]["orders"]
    # reads and writes ran the whole revision long; one that came during the rewrite waited for its end
    assert load["queries"] >= 5 and load["errors"] == 0
    assert load["max_s"] >= orders_lock["held_s"] * 0.5 and load["max_s"] > 0.1
    assert load["median_s"] < load["max_s"]
    assert result["scratch_dropped"] is True and scratch_databases(db.server) == []


def test_check_mode_changes_nothing(big):
    db, config, backups, _root = big
    run = run_module("migration_rehearsal", module_args(db, config, backups), check=True)
    assert run.result.get("failed") is not True, run.output[-3000:]
    assert "would restore" in run.result["msg"] and run.result["scratch_db"].startswith("dbops_rehearsal_")
    assert scratch_databases(db.server) == []


def test_without_allow_production_server_nothing_happens(big):
    db, config, backups, _root = big
    run = run_module("migration_rehearsal", module_args(db, config, backups, allow_production_server=False))
    assert run.result.get("failed") is True
    assert "allow_production_server: true" in run.result["msg"]
    assert scratch_databases(db.server) == []


# ---------------------------------------------------------------- interruptions

SCRIPT = textwrap.dedent('''
    import json, os, subprocess, sys
    sys.path[:0] = json.loads(os.environ["REHEARSE_PATHS"])
    from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import MigrateRequest
    from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url
    from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.rehearsal import (
        Rehearsal, RehearsalRequest)

    def runner(argv, env, cwd=None):
        full = dict(os.environ); full.update(env)
        proc = subprocess.run(argv, env=full, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return proc.returncode, proc.stdout, proc.stderr

    args = json.loads(os.environ["REHEARSE_ARGS"])
    request = RehearsalRequest(migrate=MigrateRequest(config=args["config"], lock_timeout="2s", retries=0,
                               alembic_bin=args["alembic"], watch_controller=False),
                               backup_dir=args["backups"], allow_production_server=True, estimate=False,
                               bin_dir=args["bin_dir"])
    Rehearsal(request, parse_db_url(os.environ["REHEARSE_URL"]), runner).run()
''')


@pytest.fixture(scope="module")
def slow(pg_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearse-slow")
    name = "r_" + uuid.uuid4().hex[:10]
    pg.create_database(pg_server, name)
    db = DbHandle(pg_server, name)
    config = make_project(root / "project", SLOW_REVISIONS)
    alembic(db, config, "upgrade", "0001")
    db.execute("INSERT INTO orders (quantity) SELECT g FROM generate_series(1, 1000) g")
    backups = root / "backups"
    take_backup(db, backups)
    yield db, config, backups
    pg.drop_database(pg_server, name)


def start_rehearsal(db: DbHandle, config: Path, backups: Path) -> subprocess.Popen:
    env = dict(os.environ, REHEARSE_URL=db.url, REHEARSE_PATHS=json.dumps(sys.path), REHEARSE_ARGS=json.dumps({
        "config": str(config), "backups": str(backups), "bin_dir": db.server.bin_dir or None,
        "alembic": str(Path(sys.executable).parent / "alembic")}))
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def wait_for_sleeping_rehearsal(db: DbHandle, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the rehearsal ended early: %s" % (proc.stderr.read()[-2000:],)
        if db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'dbops\\_rehearsal\\_%%'"
                     " AND query LIKE '%%pg_sleep%%' AND state = 'active'"):
            return
        time.sleep(0.2)
    raise AssertionError("the rehearsal never reached the slow revision")


def test_sigterm_mid_migration_drops_the_copy(slow):
    db, config, backups = slow
    proc = start_rehearsal(db, config, backups)
    try:
        wait_for_sleeping_rehearsal(db, proc)
        assert len(scratch_databases(db.server)) == 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert scratch_databases(db.server) == []


def test_kill_9_leaves_the_copy_and_the_next_run_drops_it(slow):
    db, config, backups = slow
    proc = start_rehearsal(db, config, backups)
    try:
        wait_for_sleeping_rehearsal(db, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    [left] = scratch_databases(db.server)
    with db.server.connect() as conn, conn.cursor() as cur:
        [(comment,)] = cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database"
                                   " WHERE datname = %s", (left,)) or cur.fetchall()
    assert scratch.parse_comment(comment)["pid"] == proc.pid
    # the next run (check mode already says so) drops it before it restores
    run = run_module("migration_rehearsal", module_args(db, config, backups, estimate=False), check=True)
    assert any(left in entry for entry in run.result["cleaned_up"]), run.output[-3000:]
    assert scratch_databases(db.server) == [left]
    run = run_module("migration_rehearsal", module_args(db, config, backups, estimate=False,
                                                        target="0001"))
    assert run.result.get("passed") is True, run.output[-3000:]
    assert any(left in entry for entry in run.result["cleaned_up"])
    assert scratch_databases(db.server) == []
