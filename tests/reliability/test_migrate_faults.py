"""Faults injected while alembic_migrate runs: what must hold afterwards, and that the next run recovers."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import (
    MigrateError, MigrateRequest, Migrator)
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url
from tests.conftest import DbHandle
from tests.helpers import postgres as pg
from tests.helpers.migrate_project import (
    Holder, Writers, add_revision, columns, find_processes, make_project, revision_of, run_in_thread)
from tests.helpers.postgres import TEST_PASSWORD

pytestmark = pytest.mark.integration

ALEMBIC = str(Path(sys.executable).parent / "alembic")
SLOW = ('    op.execute("INSERT INTO accounts (name) VALUES (\'from-0005\')")\n'
        '    op.add_column("orders", sa.Column("slow_note", sa.Text(), nullable=True))\n'
        '    op.execute("SELECT pg_sleep(4)")')


def subprocess_runner(argv, env, cwd):
    full = dict(os.environ)
    full.update(env)
    proc = subprocess.run(argv, env=full, cwd=cwd, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def migrate(db, config: Path, **options) -> dict:
    request = MigrateRequest(config=str(config), alembic_bin=ALEMBIC, lock_timeout=options.pop("lock_timeout", "300ms"),
                             retries=options.pop("retries", 2), retry_delay=options.pop("retry_delay", 0.2),
                             lock_wait=options.pop("lock_wait", 30), **options)
    migrator = Migrator(request, parse_db_url(db.url), subprocess_runner)
    try:
        return migrator.run()
    except MigrateError as exc:
        result = migrator.fail_result(exc)
        result.update(failed=True, msg=exc.msg)
        return result


def prepared(db, tmp_path) -> Path:
    """A database at 0004 with data, and a pending slow revision 0005."""
    config = make_project(tmp_path / "proj")
    env = dict(os.environ, DATABASE_URL=db.url)
    subprocess.run([ALEMBIC, "-c", str(config), "upgrade", "0004"], cwd=config.parent, env=env, check=True,
                   capture_output=True, timeout=120)
    db.execute("INSERT INTO accounts (name) SELECT 'a' || g FROM generate_series(1, 100) g")
    db.execute("INSERT INTO orders (account_id, quantity) SELECT g, g FROM generate_series(1, 1000) g")
    add_revision(config, "0005", "0004", SLOW, downgrade='    op.drop_column("orders", "slow_note")')
    return config


def assert_consistent_at_0004(db):
    assert revision_of(db) == "0004"
    assert "slow_note" not in columns(db, "orders")
    assert db.scalar("SELECT count(*) FROM orders") == 1000
    assert db.scalar("SELECT count(*) FROM accounts") == 100
    assert db.scalar("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                     " WHERE a.application_name LIKE 'dbops-migrate-%%' AND a.datname = current_database()") == 0


def assert_recovered(db, config):
    result = migrate(db, config)
    assert not result.get("failed"), result.get("msg")
    assert revision_of(db) == "0005"
    assert db.scalar("SELECT count(*) FROM orders") == 1000
    assert db.scalar("SELECT count(*) FROM accounts WHERE name = 'from-0005'") == 1


def wait_for_sleep(db, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = db.scalar("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(4)%%'"
                        " AND application_name LIKE 'dbops-migrate-%%'")
        if pid:
            return pid
        time.sleep(0.05)
    raise AssertionError("the revision never reached its slow statement")


@pytest.mark.fault("SIGKILL of the alembic process mid-revision",
                   holds="revision and data unchanged, orphan backend ended, clear message, next run recovers")
def test_sigkill_of_alembic_mid_revision(pg_db, tmp_path):
    config = prepared(pg_db, tmp_path)
    thread, box = run_in_thread(migrate, pg_db, config)
    wait_for_sleep(pg_db)
    killed = 0
    for pid in find_processes(str(config)):
        if pid != os.getpid():
            os.kill(pid, signal.SIGKILL)
            killed += 1
    assert killed
    thread.join(60)
    result = box["result"]
    assert result["failed"]
    assert "alembic was killed while applying revision 0005" in result["msg"]
    assert "stays at revision 0004" in result["msg"]
    assert_consistent_at_0004(pg_db)
    assert_recovered(pg_db, config)


@pytest.mark.fault("PostgreSQL restarted during a migration",
                   holds="the run reconnects, retakes the runner lock and finishes; data intact")
def test_postgres_restart_during_migration(tmp_path):
    with pg.private_cluster() as server:
        name = "r_" + uuid.uuid4().hex[:8]
        pg.create_database(server, name)
        db = DbHandle(server, name)
        config = prepared(db, tmp_path)
        thread, box = run_in_thread(migrate, db, config, retries=3, retry_delay=1)
        wait_for_sleep(db)
        server.restart()
        thread.join(120)
        result = box["result"]
        assert not result.get("failed"), result.get("msg")
        assert result["applied"][0]["attempts"] >= 2
        assert revision_of(db) == "0005"
        assert db.scalar("SELECT count(*) FROM orders") == 1000
        assert db.scalar("SELECT count(*) FROM accounts WHERE name = 'from-0005'") == 1


@pytest.mark.fault("migration session terminated server-side (pg_terminate_backend)",
                   holds="revision unchanged and retried, or a clear failure; next run recovers")
def test_backend_terminated_mid_revision(pg_db, tmp_path):
    config = prepared(pg_db, tmp_path)
    thread, box = run_in_thread(migrate, pg_db, config, retries=0)
    pid = wait_for_sleep(pg_db)
    pg_db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    thread.join(60)
    result = box["result"]
    assert result["failed"]
    assert "connection to PostgreSQL was lost while applying revision 0005" in result["msg"]
    assert_consistent_at_0004(pg_db)

    # With a retry the same fault is absorbed within the run.
    thread, box = run_in_thread(migrate, pg_db, config, retries=2)
    pid = wait_for_sleep(pg_db)
    pg_db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    thread.join(60)
    assert not box["result"].get("failed"), box["result"].get("msg")
    assert box["result"]["applied"][0]["attempts"] == 2
    assert revision_of(pg_db) == "0005"
    assert pg_db.scalar("SELECT count(*) FROM accounts WHERE name = 'from-0005'") == 1


@pytest.mark.fault("lock-queue trap: a report holds ACCESS SHARE for longer than the retry budget",
                   holds="writers never stall past the lock_timeout, run fails naming the blocker, revision "
                         "unchanged, next run recovers")
def test_lock_queue_trap(pg_db, tmp_path):
    config = prepared(pg_db, tmp_path)
    pg_db.execute("DELETE FROM orders WHERE id > 1000")
    with Writers(pg_db) as writers:
        with Holder(pg_db, "BEGIN; SELECT count(*) FROM orders", application_name="quarterly-report") as reader:
            result = migrate(pg_db, config, lock_timeout="200ms", retries=3, retry_delay=0.3)
        time.sleep(0.2)
    assert result["failed"]
    assert "pid %d" % reader.pid in result["msg"] and "quarterly-report" in result["msg"]
    assert "ACCESS EXCLUSIVE lock on relation orders" in result["msg"]
    assert result["attempts"] == 4
    assert writers.longest_gap() < 1.5 and not writers.errors
    assert writers.count() > 50
    pg_db.execute("DELETE FROM orders WHERE id > 1000")
    assert_consistent_at_0004(pg_db)
    assert_recovered(pg_db, config)


@pytest.mark.fault("statement_timeout exceeded by a slow revision",
                   holds="rolled back without retry, revision and data unchanged, message names the limit")
def test_statement_timeout_exceeded(pg_db, tmp_path):
    config = prepared(pg_db, tmp_path)
    result = migrate(pg_db, config, statement_timeout="1s", retries=3)
    assert result["failed"]
    assert "ran longer than statement_timeout=1000ms" in result["msg"]
    assert result["attempts"] == 1
    assert_consistent_at_0004(pg_db)
    assert_recovered(pg_db, config)


@pytest.mark.fault("two runners start at once",
                   holds="the revision is applied exactly once; the second runner finds nothing to do")
def test_two_runners(pg_db, tmp_path):
    config = prepared(pg_db, tmp_path)
    threads = [run_in_thread(migrate, pg_db, config) for _ in range(2)]
    results = []
    for thread, box in threads:
        thread.join(120)
        results.append(box["result"])
    assert all(not r.get("failed") for r in results), [r.get("msg") for r in results]
    assert sorted(r["changed"] for r in results) == [False, True]
    assert pg_db.scalar("SELECT count(*) FROM accounts WHERE name = 'from-0005'") == 1
    assert revision_of(pg_db) == "0005"


@pytest.mark.fault("database password in the URL and in alembic's error output", kind="secret",
                   holds="the password appears in no message or result")
def test_password_never_in_messages(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    add_revision(config, "0005", "0004",
                 '    raise RuntimeError("cannot connect to %s" % __import__("os").environ["DATABASE_URL"])')
    result = migrate(pg_db, config)
    assert result["failed"]
    assert "cannot connect to postgresql://" in result["msg"]
    assert TEST_PASSWORD not in repr(result)


@pytest.mark.fault("a second runner with no patience", kind="bad_input",
                   holds="fails at once naming the runner that holds the lock; nothing migrated twice")
def test_second_runner_without_patience(pg_db, tmp_path):
    config = prepared(pg_db, tmp_path)
    thread, box = run_in_thread(migrate, pg_db, config)
    wait_for_sleep(pg_db)
    second = migrate(pg_db, config, lock_wait=0)
    thread.join(60)
    assert second["failed"] and "another migration runner holds the migration lock" in second["msg"]
    assert not box["result"].get("failed")
    assert pg_db.scalar("SELECT count(*) FROM accounts WHERE name = 'from-0005'") == 1


# A parent that starts the runner and then waits: the test kills it, as a terminal or a CI job would.
PARENT_SCRIPT = r'''
import subprocess, sys, time
subprocess.Popen([sys.executable] + sys.argv[1:])
time.sleep(600)
'''

RUNNER_SCRIPT = r'''
import os, subprocess, sys
sys.path.insert(0, os.environ["DBOPS_COLLECTIONS"])
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import MigrateError, MigrateRequest, Migrator
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url

def runner(argv, env, cwd):
    full = dict(os.environ)
    full.update(env)
    proc = subprocess.run(argv, env=full, cwd=cwd, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr

config, alembic, report = sys.argv[1:4]
request = MigrateRequest(config=config, alembic_bin=alembic, lock_timeout="5s", retries=0)
try:
    Migrator(request, parse_db_url(os.environ["DBOPS_TEST_DB_URL"]), runner).run()
    open(report, "w").write("finished")
except MigrateError as exc:
    open(report, "w").write(exc.msg)
'''


@pytest.mark.fault("SIGKILL of the process that started the runner (outside Ansible) mid-revision",
                   kind="interrupt", holds="the runner stops alembic within seconds, ends its backends, releases the "
                   "migration lock and says why; revision and data unchanged; the next run recovers")
def test_parent_death_stops_the_runner(pg_db, tmp_path):
    config = prepared(pg_db, tmp_path)
    add_revision(config, "0005", "0004", SLOW.replace("pg_sleep(4)", "pg_sleep(120)"),
                 downgrade='    op.drop_column("orders", "slow_note")')
    (tmp_path / "parent.py").write_text(PARENT_SCRIPT)
    (tmp_path / "runner.py").write_text(RUNNER_SCRIPT)
    report = tmp_path / "report.txt"
    env = dict(os.environ, DBOPS_TEST_DB_URL=pg_db.url,
               DBOPS_COLLECTIONS=str(Path(__file__).resolve().parents[2] / ".collections"))
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(tmp_path / "runner.py"), str(config),
                               ALEMBIC, str(report)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not pg_db.scalar("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%%'"
                               " AND application_name LIKE 'dbops-migrate-%%'"):
            assert time.monotonic() < deadline, "the revision never reached its slow statement"
            time.sleep(0.1)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert report.exists(), "the runner did not stop within 10 s of its parent's death"
        assert "the process that started this migration (pid %d) is gone" % parent.pid in report.read_text()
        assert "revision 0004" in report.read_text()
        deadline = time.monotonic() + 5  # the runner itself exits right after its report
        while list(find_processes(str(config))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not list(find_processes(str(config))), "alembic or the runner outlived the parent"
        assert_consistent_at_0004(pg_db)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
    (Path(config).parent / "migrations" / "versions" / "0005_rev.py").unlink()
    add_revision(config, "0005", "0004", SLOW, downgrade='    op.drop_column("orders", "slow_note")')
    assert_recovered(pg_db, config)
