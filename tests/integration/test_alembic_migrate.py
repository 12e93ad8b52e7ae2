"""alembic_migrate against a real PostgreSQL, through real ansible-playbook."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.ansible import failure_message, run_module
from tests.helpers.postgres import TEST_PASSWORD

from tests.helpers.migrate_project import (
    Holder, Writers, add_revision, alembic_env, columns, make_project, module_args, revision_of, run_in_thread,
    wait_for_migration_lock_wait)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_INI = REPO / "examples" / "auto_trader" / "alembic.ini"
ALEMBIC = str(Path(sys.executable).parent / "alembic")


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "proj")


def assert_no_secret(run):
    assert TEST_PASSWORD not in run.output
    assert TEST_PASSWORD not in json.dumps(run.result)


@pytest.mark.skipif(not EXAMPLE_INI.exists(), reason="example application not present")
def test_example_app_check_upgrade_idempotent_downgrade(pg_db):
    args = {"db_url": pg_db.url, "config": str(EXAMPLE_INI), "lock_timeout": "2s", "retries": 1}

    check = run_module("alembic_migrate", args, check=True, diff=True)
    assert not check.result.get("failed"), check.output
    assert check.result["changed"] is True
    assert [p["revision"] for p in check.result["pending"]] == ["0001", "0002", "0003", "0004", "0005"]
    assert "CREATE TABLE orders" in check.result["pending"][0]["sql"]
    assert "UPDATE orders SET notional" in check.result["pending"][4]["sql"]
    assert check.result["diff"] == {"before": "revision: base\n", "after": "revision: 0005\n"}
    assert revision_of(pg_db) is None
    assert pg_db.scalar("SELECT to_regclass('orders')") is None

    run = run_module("alembic_migrate", args, diff=True)
    assert not run.result.get("failed"), run.output
    assert run.result["changed"] is True
    assert (run.result["from_revision"], run.result["to_revision"]) == (None, "0005")
    assert [a["revision"] for a in run.result["applied"]] == ["0001", "0002", "0003", "0004", "0005"]
    assert run.result["attempts"] == 5
    assert run.result["blocked"]["sessions"] == 0
    assert revision_of(pg_db) == "0005"
    assert "notional" in columns(pg_db, "orders")
    assert_no_secret(run)

    again_check = run_module("alembic_migrate", args, check=True)
    assert again_check.result["changed"] is False and again_check.result["pending"] == []
    again = run_module("alembic_migrate", args)
    assert not again.result.get("failed") and again.result["changed"] is False
    assert again.result["attempts"] == 0

    refused = run_module("alembic_migrate", dict(pg_db.login_args(), config=str(EXAMPLE_INI), target="-2"))
    assert "allow_downgrade" in failure_message(refused) and revision_of(pg_db) == "0005"
    down = run_module("alembic_migrate", dict(pg_db.login_args(), config=str(EXAMPLE_INI), target="-2",
                                              allow_downgrade=True), diff=True)
    assert not down.result.get("failed"), down.output
    assert down.result["direction"] == "downgrade" and down.result["applied"] == []
    assert [a["revision"] for a in down.result["reverted"]] == ["0005", "0004"]
    assert down.result["diff"]["after"] == "revision: 0003\n"
    assert revision_of(pg_db) == "0003"
    assert "notional" not in columns(pg_db, "orders")
    assert_no_secret(down)

    base = run_module("alembic_migrate", dict(args, target="base", allow_downgrade=True))
    assert not base.result.get("failed"), base.output
    assert revision_of(pg_db) is None
    assert pg_db.scalar("SELECT to_regclass('orders')") is None


def test_tmp_project_upgrade_by_steps_and_prefix(pg_db, project):
    run = run_module("alembic_migrate", module_args(pg_db, project, target="+2"))
    assert not run.result.get("failed"), run.output
    assert revision_of(pg_db) == "0002"
    run = run_module("alembic_migrate", module_args(pg_db, project, target="0004"))
    assert not run.result.get("failed"), run.output
    assert [a["revision"] for a in run.result["applied"]] == ["0003", "0004"]
    assert pg_db.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_orders_created_at'::regclass")


def naive_upgrade(pg_db, config: Path, target: str) -> subprocess.CompletedProcess:
    env = dict(alembic_env(pg_db), PGAPPNAME="naive-alembic")
    return subprocess.run([ALEMBIC, "-c", str(config), "upgrade", target], cwd=config.parent,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_lock_queue_naive_stalls_writers_ours_gives_up_then_succeeds(pg_db, project):
    """A long reader holds ACCESS SHARE on orders; the migration needs ACCESS EXCLUSIVE."""
    assert naive_upgrade(pg_db, project, "0001").returncode == 0
    pg_db.execute("INSERT INTO orders (account_id, quantity) SELECT 1, g FROM generate_series(1, 1000) g")
    reader_sql = "BEGIN; SELECT count(*) FROM orders"

    # Naive: alembic queues for ACCESS EXCLUSIVE and every writer queues behind it.
    with Writers(pg_db) as writers:
        time.sleep(0.5)
        with Holder(pg_db, reader_sql) as reader:
            thread, box = run_in_thread(naive_upgrade, pg_db, project, "0002")
            wait_for_migration_lock_wait(pg_db, pattern="naive-alembic")
            reader.release(after=3.0)
            thread.join(60)
        time.sleep(0.3)
    naive = box["result"]
    assert naive.returncode == 0, naive.stderr
    naive_gap = writers.longest_gap()
    # Every writer queued behind the waiting ALTER for as long as the reader lived.
    assert naive_gap > 2.5, "the naive migration should have stalled writers behind the reader"

    pg_db.execute("UPDATE alembic_version SET version_num = '0001'")
    pg_db.execute("ALTER TABLE orders DROP COLUMN note")

    # Ours with a small budget: gives up, writers keep going, revision unchanged.
    with Writers(pg_db) as writers:
        time.sleep(0.5)
        with Holder(pg_db, reader_sql) as reader:
            began = time.monotonic()
            ours = run_module("alembic_migrate", module_args(pg_db, project, target="0002", lock_timeout="200ms",
                                                             retries=2, retry_delay=0.3))
            ours_s = time.monotonic() - began
            reader_pid = reader.pid
        time.sleep(0.3)
    assert ours.result.get("failed") is True
    assert ours.result["failed"] is True
    msg = ours.result["msg"]
    assert "could not get its lock within lock_timeout=200ms after 3 attempt(s)" in msg
    assert "ACCESS EXCLUSIVE lock on relation orders" in msg
    assert "pid %d" % reader_pid in msg and "long-report" in msg and "SELECT count(*) FROM orders" in msg
    assert "stays at revision 0001" in msg
    assert ours.result["attempts"] == 3
    assert ours.result["failure"]["kind"] == "lock_timeout"
    assert ours.result["failure"]["blockers"][0]["pid"] == reader_pid
    assert ours.result["blocked"]["sessions"] >= 1
    assert ours.result["blocked"]["longest_wait_s"] < 1.0
    assert ours.result["blocked"]["migration_waits"]
    # The reader would hold on for minutes; ours waited at most its lock_timeout per attempt, then gave up.
    assert ours.result["blocked"]["migration_wait_s"] < 3 * 0.3 + 0.5
    assert ours_s < 60
    # Python writer threads on a busy 2-core box: 1.5 s of slack, against the naive stall of 3 s and more.
    assert writers.longest_gap() < 1.5, "writers must keep going while ours waits"
    assert not writers.errors
    assert revision_of(pg_db) == "0001"
    assert "note" not in columns(pg_db, "orders")
    assert_no_secret(ours)

    # Ours with enough retries: succeeds once the reader ends; writers never stall long.
    timeline = project.parent / "timeline.json"
    with Writers(pg_db) as writers:
        time.sleep(0.5)
        with Holder(pg_db, reader_sql) as reader:
            thread, box = run_in_thread(run_module, "alembic_migrate", module_args(
                pg_db, project, target="0002", lock_timeout="200ms", retries=10, retry_delay=0.5, retry_backoff=1,
                timeline_file=str(timeline)))
            wait_for_migration_lock_wait(pg_db)
            reader.release(after=2.0)
            thread.join(120)
        ok = box["result"]
        time.sleep(0.3)
    assert not ok.result.get("failed"), ok.output
    assert ok.result["applied"][0]["attempts"] >= 2
    assert revision_of(pg_db) == "0002"
    assert writers.longest_gap() < 1.5
    data = json.loads(timeline.read_text())
    assert data["samples"] and any(s["migration_waiting"] for s in data["samples"])
    assert ok.result["blocked"]["timeline_file"] == str(timeline)


SLOW_REVISION = (
    '    op.execute("CREATE TABLE IF NOT EXISTS applied_log (rev text, at timestamptz DEFAULT now())")\n'
    '    op.execute("INSERT INTO applied_log (rev) VALUES (\'0005\')")\n'
    '    op.execute("SELECT pg_sleep(3)")')


@pytest.mark.slow
def test_two_runners_migrate_once(pg_db, project):
    add_revision(project, "0005", "0004", SLOW_REVISION)
    assert naive_upgrade(pg_db, project, "0004").returncode == 0
    results = {}

    def go(name):
        results[name] = run_module("alembic_migrate", module_args(pg_db, project, lock_wait=60))

    threads = [threading.Thread(target=go, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    for thread in threads:
        thread.join(120)
    assert all(not r.result.get("failed") for r in results.values()), [r.output for r in results.values()]
    changed = [r for r in results.values() if r.result["changed"]]
    assert len(changed) == 1
    assert pg_db.scalar("SELECT count(*) FROM applied_log") == 1
    assert revision_of(pg_db) == "0005"
    idle = [r for r in results.values() if not r.result["changed"]][0]
    assert idle.result["waited_for_runner_s"] > 0.5


def test_second_runner_with_no_patience_fails_clearly(pg_db, project):
    # Long enough for a second ansible-playbook to start on a busy box while the first still migrates.
    add_revision(project, "0005", "0004", SLOW_REVISION.replace("pg_sleep(3)", "pg_sleep(30)"))
    assert naive_upgrade(pg_db, project, "0004").returncode == 0
    first = {}
    thread = threading.Thread(target=lambda: first.setdefault("r", run_module(
        "alembic_migrate", module_args(pg_db, project))))
    thread.start()
    deadline = time.monotonic() + 60
    while not pg_db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%%'"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    second = run_module("alembic_migrate", module_args(pg_db, project, lock_wait=0))
    thread.join(120)
    assert second.result.get("failed") is True
    assert "another migration runner holds the migration lock" in second.result["msg"]
    assert second.result["runner_lock_holder"]
    assert not first["r"].result.get("failed")
    assert revision_of(pg_db) == "0005"
    assert pg_db.scalar("SELECT count(*) FROM applied_log") == 1


def test_failing_revision_leaves_revision_unchanged(pg_db, project):
    add_revision(project, "0005", "0004", '    op.execute("ALTER TABLE nope ADD COLUMN x int")')
    run = run_module("alembic_migrate", module_args(pg_db, project))
    assert run.result.get("failed") is True
    msg = run.result["msg"]
    assert 'Upgrade of revision 0005 failed: UndefinedTable: relation "nope" does not exist' in msg
    assert "The database stays at revision 0004" in msg
    assert run.result["to_revision"] == "0004"
    assert [a["revision"] for a in run.result["applied"]] == ["0001", "0002", "0003", "0004"]
    assert run.result["failure"]["kind"] == "error"
    assert revision_of(pg_db) == "0004"
    assert run.result["attempts"] == 5  # errors are not retried
    assert_no_secret(run)


def test_statement_timeout_is_not_retried(pg_db, project):
    add_revision(project, "0005", "0004", '    op.execute("SELECT pg_sleep(3)")')
    assert naive_upgrade(pg_db, project, "0004").returncode == 0
    run = run_module("alembic_migrate", module_args(pg_db, project, statement_timeout="500ms", retries=3))
    assert run.result.get("failed") is True
    assert "ran longer than statement_timeout=500ms" in run.result["msg"]
    assert run.result["failure"]["kind"] == "statement_timeout"
    assert run.result["applied"] == [] and run.result["attempts"] == 1
    assert revision_of(pg_db) == "0004"


def index_valid(db, name: str):
    return db.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,))


def test_invalid_index_from_concurrent_build_is_dropped_and_retried(pg_db, project):
    """CREATE INDEX CONCURRENTLY waits for an open writer; its lock_timeout leaves an INVALID index."""
    assert naive_upgrade(pg_db, project, "0002").returncode == 0
    writer_sql = "BEGIN; INSERT INTO orders (account_id, quantity) VALUES (1, 1)"

    # The writer outlives the budget: the run fails, reports the INVALID index it could not drop yet.
    with Holder(pg_db, writer_sql, application_name="open-writer"):
        failed = run_module("alembic_migrate", module_args(pg_db, project, target="0003", retries=1,
                                                           retry_delay=0.2))
        assert index_valid(pg_db, "ix_orders_created_at") is False
    assert failed.result.get("failed") is True
    assert failed.result["failure"]["kind"] == "invalid_index", (failed.result["failure"], failed.result["msg"])
    assert "ix_orders_created_at" in failed.result["msg"] and "stays at revision 0002" in failed.result["msg"]
    left = [i for i in failed.result["invalid_indexes"] if i["index"] == "ix_orders_created_at"]
    assert left and left[0]["revision"] == "0003"
    assert revision_of(pg_db) == "0002"

    # The next run finds the leftover, drops it and builds the index.
    again = run_module("alembic_migrate", module_args(pg_db, project, target="0003"))
    assert not again.result.get("failed"), again.output
    assert any(i["index"] == "ix_orders_created_at" and i["dropped"] for i in again.result["invalid_indexes"])
    assert index_valid(pg_db, "ix_orders_created_at") is True
    assert revision_of(pg_db) == "0003"

    # Within one run: the failed build is cleaned up before the retry, which succeeds once the writer ends.
    assert not run_module("alembic_migrate", module_args(pg_db, project, target="0002",
                                                         allow_downgrade=True)).result.get("failed")
    assert pg_db.scalar("SELECT to_regclass('ix_orders_created_at')") is None
    with Holder(pg_db, writer_sql, application_name="open-writer") as writer:
        thread, box = run_in_thread(run_module, "alembic_migrate", module_args(
            pg_db, project, target="0003", retries=8, retry_delay=0.5, retry_backoff=1))
        wait_for_migration_lock_wait(pg_db)
        writer.release(after=1.0)
        thread.join(120)
    ok = box["result"]
    assert not ok.result.get("failed"), ok.output
    assert ok.result["applied"][0]["attempts"] >= 2
    dropped = [i for i in ok.result["invalid_indexes"] if i["index"] == "ix_orders_created_at"]
    assert dropped and dropped[0]["dropped"] and dropped[0]["revision"] == "0003"
    assert index_valid(pg_db, "ix_orders_created_at") is True
    assert revision_of(pg_db) == "0003"


@pytest.mark.parametrize("change,expected", [
    ({"target": "zz99"}, "unknown revision 'zz99'"),
    ({"target": "+9"}, "goes past the head"),
    ({"lock_timeout": "soon"}, "not a PostgreSQL duration"),
    ({"config": "/nonexistent/alembic.ini"}, "alembic config /nonexistent/alembic.ini not found"),
])
@pytest.mark.fault("alembic_migrate: unknown target, target past the head, malformed lock_timeout, missing alembic.ini",
                   kind="bad_input", holds="fails with the reason and what to do; no revision applied; no password shown")
def test_bad_input_fails_clearly_and_changes_nothing(pg_db, project, change, expected):
    run = run_module("alembic_migrate", module_args(pg_db, project, **change))
    assert run.result.get("failed") is True
    assert expected in run.result["msg"]
    assert revision_of(pg_db) is None
    assert_no_secret(run)


@pytest.mark.fault("alembic_migrate: multiple heads and target head", kind="bad_input",
                   holds="refused naming both heads and `alembic merge heads`; an explicit head still works")
def test_multiple_heads_are_refused(pg_db, project):
    add_revision(project, "0005", "0004", "    pass")
    add_revision(project, "0006", "0004", "    pass")
    run = run_module("alembic_migrate", module_args(pg_db, project))
    assert run.result.get("failed") is True
    assert "2 heads (0005, 0006)" in run.result["msg"] and "alembic merge heads" in run.result["msg"]
    assert revision_of(pg_db) is None
    ok = run_module("alembic_migrate", module_args(pg_db, project, target="0006"), check=True)
    assert not ok.result.get("failed"), ok.output
    assert [p["revision"] for p in ok.result["pending"]] == ["0001", "0002", "0003", "0004", "0006"]
    assert revision_of(pg_db) is None


@pytest.mark.fault("alembic_migrate: target -1 on a revision whose downgrade raises", kind="bad_input",
                   holds="fails with alembic's reason; the database stays at its revision")
def test_downgrade_alembic_cannot_perform_fails_clearly(pg_db, project):
    add_revision(project, "0005", "0004", "    pass",
                 downgrade='    raise NotImplementedError("0005 cannot be reverted: data was dropped")')
    assert naive_upgrade(pg_db, project, "head").returncode == 0
    run = run_module("alembic_migrate", module_args(pg_db, project, target="-1", allow_downgrade=True))
    assert run.result.get("failed") is True
    assert "Downgrade of revision 0005 failed: NotImplementedError" in run.result["msg"]
    assert "The database stays at revision 0005" in run.result["msg"]
    assert "0005 cannot be reverted" in run.result["msg"]
    assert revision_of(pg_db) == "0005"


def test_check_mode_with_login_options_changes_nothing(pg_db, project):
    args = dict(pg_db.login_args(), config=str(project), target="head")
    run = run_module("alembic_migrate", args, check=True)
    assert not run.result.get("failed") and run.result["changed"] is True
    assert revision_of(pg_db) is None
    assert_no_secret(run)
