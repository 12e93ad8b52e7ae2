"""Pure parts of the migration runner: commands, environment, retry schedule, blocked tracker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.migrate.alembic_cli import AlembicPlanError
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import (
    AlembicCommand, ComposeSpec, MigrateRequest, lock_key, retry_delays, runner_lock_holder, url_with_scheme,
    validate_url_form)
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.monitor import (
    BlockedTracker, ControllerWatch, Row, controller_chain, describe_lock, descendants, gone_process,
    sample_sql, write_timeline)
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url

PASSWORD = "Sup3r-S3cret-pw-7731"
DB = parse_db_url("postgresql://app:%s@127.0.0.1:5432/shop" % PASSWORD)


def test_local_command_runs_in_the_config_directory(tmp_path):
    config = tmp_path / "alembic.ini"
    cmd = AlembicCommand(MigrateRequest(config=str(config), alembic_bin="/venv/bin/alembic"), DB, "dbops-migrate-x")
    argv, cwd = cmd.argv("upgrade", "0002")
    assert argv == ["/venv/bin/alembic", "-c", str(config), "upgrade", "0002"]
    assert cwd == str(tmp_path)
    assert all(PASSWORD not in part for part in argv)


def test_environment_carries_url_timeouts_and_application_name():
    cmd = AlembicCommand(MigrateRequest(config="a.ini", lock_timeout="2s", statement_timeout=15000,
                                        extra_env={"PGOPTIONS": "-c search_path=app", "APP_ENV": "prod"}),
                         DB, "dbops-migrate-x")
    env = cmd.environment()
    assert env["DATABASE_URL"] == "postgresql://app:%s@127.0.0.1:5432/shop" % PASSWORD
    assert env["PGOPTIONS"] == "-c search_path=app -c lock_timeout=2000ms -c statement_timeout=15000ms"
    assert env["PGAPPNAME"] == "dbops-migrate-x"
    assert env["APP_ENV"] == "prod"


def test_zero_lock_timeout_is_passed_and_none_is_omitted():
    env = AlembicCommand(MigrateRequest(config="a.ini", lock_timeout=0), DB, "x").environment()
    assert env["PGOPTIONS"] == "-c lock_timeout=0ms"
    env = AlembicCommand(MigrateRequest(config="a.ini", lock_timeout=None), DB, "x").environment()
    assert env["PGOPTIONS"] == ""


def test_compose_command_passes_secrets_by_name_only():
    request = MigrateRequest(config="/app/alembic.ini", executor="compose",
                             compose=ComposeSpec(project_src="/srv/app", files=["docker-compose.prod.yml"],
                                                 docker_bin="/usr/bin/docker", project_name="shop"),
                             alembic_db=parse_db_url("postgresql://app:%s@db:5432/shop" % PASSWORD))
    cmd = AlembicCommand(request, DB, "dbops-migrate-x")
    argv, cwd = cmd.argv("downgrade", "0001")
    assert argv == ["/usr/bin/docker", "compose", "--project-directory", "/srv/app", "-p", "shop",
                    "-f", "/srv/app/docker-compose.prod.yml", "--profile", "migration", "run", "--rm", "-T",
                    "--name", "dbops-migrate-shop-x-1",
                    "-e", "DATABASE_URL", "-e", "PGAPPNAME", "-e", "PGOPTIONS", "-e", "PGPASSWORD",
                    "migration", "alembic", "-c", "/app/alembic.ini", "downgrade", "0001"]
    assert cwd == "/srv/app"
    assert cmd.environment()["DATABASE_URL"].endswith("@db:5432/shop")
    assert all(PASSWORD not in part for part in argv)


def test_compose_v1_takes_the_same_arguments_without_the_subcommand():
    request = MigrateRequest(config="/app/alembic.ini", executor="compose",
                             compose=ComposeSpec(project_src="/srv/app", files=["docker-compose.prod.yml"],
                                                 docker_bin="/usr/bin/docker-compose", standalone=True))
    argv, cwd = AlembicCommand(request, DB, "dbops-migrate-x").argv("upgrade", "0002")
    assert argv[:6] == ["/usr/bin/docker-compose", "--project-directory", "/srv/app",
                        "-f", "/srv/app/docker-compose.prod.yml", "--profile"]
    assert argv[-5:] == ["alembic", "-c", "/app/alembic.ini", "upgrade", "0002"] and cwd == "/srv/app"


def test_retry_schedule_backs_off_and_caps():
    assert retry_delays(5, 1, 2, 10) == [1, 2, 4, 8, 10]
    assert retry_delays(0, 1, 2, 10) == []
    assert retry_delays(3, 0.5, 1, 60) == [0.5, 0.5, 0.5]


def test_lock_key_is_stable_and_fits_int4():
    a = lock_key("alembic_version", None)
    assert a == lock_key("alembic_version", None)
    assert a != lock_key("alembic_version", "billing")
    assert -(1 << 31) <= a[1] < (1 << 31)


def test_describe_lock():
    assert describe_lock("AccessExclusiveLock relation orders") == "ACCESS EXCLUSIVE lock on relation orders"
    assert describe_lock("ShareLock transactionid 812") == "SHARE lock on transactionid 812"
    assert describe_lock(None) is None


def test_sample_query_dates_waits_with_what_the_server_has():
    """pg_locks.waitstart exists from PostgreSQL 14; before, the waiting statement's start dates the wait."""
    for version_num in (140000, 150004, 170002):
        assert "l.waitstart" in sample_sql(version_num) and "{" not in sample_sql(version_num)
    for version_num in (120010, 130016):
        assert "waitstart)" not in sample_sql(version_num) and "l.waitstart" not in sample_sql(version_num)
        assert "clock_timestamp() - a.query_start" in sample_sql(version_num)


def row(pid, app="", state="active", blocking=(), waited=None, waitstart=None, lock=None, query="", xact_age=1.0):
    return Row(pid=pid, application_name=app, state=state, wait_event_type="Lock" if lock else "",
               xact_age=xact_age, query=query, blocking=tuple(blocking), waited=waited, waitstart=waitstart,
               lock=lock)


def test_tracker_counts_sessions_queued_behind_the_migration():
    tracker = BlockedTracker("mig", mask=lambda s: s.replace("secret", "***"), keep_timeline=True)
    reader = row(10, app="report", state="idle in transaction", query="SELECT secret FROM orders", xact_age=30)
    # The migration waits on the reader; two writers queue behind the migration.
    tracker.add([reader,
                 row(20, app="mig", blocking=[10], waited=0.1, waitstart=100.0,
                     lock="AccessExclusiveLock relation orders", query="ALTER TABLE orders ADD note text"),
                 row(30, blocking=[20], waited=0.05, waitstart=100.05, lock="RowExclusiveLock relation orders"),
                 row(31, blocking=[20], waited=0.02, waitstart=100.08, lock="RowExclusiveLock relation orders")],
                now=1.0)
    tracker.add([reader,
                 row(20, app="mig", blocking=[10], waited=0.2, waitstart=100.0,
                     lock="AccessExclusiveLock relation orders"),
                 row(30, blocking=[20], waited=0.15, waitstart=100.05, lock="RowExclusiveLock relation orders"),
                 row(31, blocking=[10], waited=0.5, waitstart=99.0, lock="RowExclusiveLock relation orders")],
                now=1.1)
    # Later the same writer waits again: a second episode.
    tracker.add([row(20, app="mig", blocking=[10], waited=0.1, waitstart=200.0,
                     lock="AccessExclusiveLock relation orders"),
                 row(30, blocking=[20], waited=0.08, waitstart=200.01, lock="RowExclusiveLock relation orders")],
                now=2.0)
    summary = tracker.summary()
    assert summary["sessions"] == 2
    assert summary["waits"] == 3  # pid 31's second wait was behind the reader, not the migration
    assert summary["longest_wait_s"] == 0.15
    assert summary["total_wait_s"] == pytest.approx(0.15 + 0.02 + 0.08)
    assert len(summary["migration_waits"]) == 2
    first = summary["migration_waits"][0]
    assert first["lock"] == "ACCESS EXCLUSIVE lock on relation orders"
    assert first["waited_s"] == 0.2
    assert first["blocked_by"] == [{"pid": 10, "application_name": "report", "state": "idle in transaction",
                                    "query": "SELECT *** FROM orders", "xact_age_s": 30.0}]
    assert summary["migration_wait_s"] == pytest.approx(0.3)
    assert [s["blocked_sessions"] for s in tracker.timeline] == [2, 1, 1]
    assert tracker.timeline[0]["migration_waiting"] is True


def test_tracker_ignores_waits_unrelated_to_the_migration():
    tracker = BlockedTracker("mig")
    tracker.add([row(1, app="other", blocking=[2], waited=3.0, waitstart=5.0, lock="ShareLock transactionid 9"),
                 row(2), row(3, app="mig")])
    summary = tracker.summary()
    assert summary["sessions"] == 0 and summary["migration_waits"] == []
    assert summary["samples"] == 1


def test_timeline_file_is_private_json(tmp_path):
    tracker = BlockedTracker("mig", keep_timeline=True)
    tracker.add([row(3, app="mig")], now=tracker.started + 0.5)
    path = tmp_path / "sub" / "timeline.json"
    write_timeline(str(path), tracker, {"to_revision": "0002"})
    data = json.loads(path.read_text())
    assert data["to_revision"] == "0002" and data["samples"][0]["t"] == 0.5
    assert path.stat().st_mode & 0o777 == 0o600


def test_url_variable_and_scheme_choose_the_driver():
    request = MigrateRequest(config="a.ini", db_url_var="APP_DB_URL", db_url_scheme="postgresql+psycopg2")
    env = AlembicCommand(request, DB, "x").environment()
    assert env["APP_DB_URL"] == "postgresql+psycopg2://app:%s@127.0.0.1:5432/shop" % PASSWORD
    assert "DATABASE_URL" not in env


@pytest.mark.parametrize("var,scheme,expected", [
    ("DATABASE URL", "postgresql", "db_url_var"),
    ("PGPASSWORD", "postgresql", "db_url_var"),
    ("DATABASE_URL", "mysql", "postgresql\\+psycopg2"),
    ("DATABASE_URL", "postgresql+psycopg2; rm -rf /", "not a PostgreSQL URL scheme"),
])
def test_bad_url_forms_are_refused(var, scheme, expected):
    with pytest.raises(AlembicPlanError, match=expected):
        validate_url_form(var, scheme)


def test_url_forms_accepted():
    for scheme in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg", "postgresql+asyncpg"):
        validate_url_form("DATABASE_URL", scheme)
    assert url_with_scheme("postgresql://u@h/d", "postgresql+psycopg2") == "postgresql+psycopg2://u@h/d"


def test_compose_containers_get_unique_names_without_secrets():
    request = MigrateRequest(executor="compose", compose=ComposeSpec(project_src="/srv/My App", docker_bin="docker"),
                             alembic_db=parse_db_url("postgresql://app:%s@db:5432/shop" % PASSWORD))
    cmd = AlembicCommand(request, DB, "dbops-migrate-abc")
    first = cmd.argv("upgrade", "1")[0]
    second = cmd.argv("upgrade", "2")[0]
    assert first[first.index("--name") + 1] == "dbops-migrate-myapp-abc-1"
    assert second[second.index("--name") + 1] == "dbops-migrate-myapp-abc-2"
    assert cmd.container == "dbops-migrate-myapp-abc-2"
    assert all(PASSWORD not in part for part in first + second)


def test_lock_holder_query_is_scoped_to_the_database_and_key():
    seen = []

    def query(sql, params):
        seen.append((sql, params))
        return [(4242, "dbops-migrate-control", "local", 12.34)]

    key = lock_key("alembic_version", None)
    holder = runner_lock_holder(query, key)
    assert holder == {"pid": 4242, "application_name": "dbops-migrate-control", "client": "local",
                      "connected_s": 12.3}
    sql, params = seen[0]
    assert "current_database()" in sql and "objsubid = 2" in sql
    assert params == (key[0], key[1] % (1 << 32))
    assert runner_lock_holder(lambda sql, params: [], key) is None


def test_controller_chain_and_death_are_read_from_proc():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        chain = controller_chain(child.pid)
        assert chain[0][0] == child.pid
        assert gone_process(chain[:1]) is None
        assert child.pid in descendants(os.getpid())
        child.kill()
        child.wait(10)
        assert gone_process(chain[:1]) == child.pid
        # A reused pid is a different process: its start time differs.
        assert gone_process([(os.getpid(), "0")]) == os.getpid()
    finally:
        child.kill()
        child.wait(10)


def test_controller_watch_calls_back_once_when_the_watched_process_dies():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    calls = []
    watch = ControllerWatch(calls.append, interval=0.05, chain=controller_chain(child.pid)[:1]).start()
    try:
        time.sleep(0.3)
        assert calls == []
        child.kill()
        child.wait(10)
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls == [child.pid]
    finally:
        watch.stop()
        child.kill()
        child.wait(10)
