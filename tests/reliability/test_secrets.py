"""A recognisable password goes through every module and must appear nowhere:
not in results, warnings, verbose logs, the process list, manifests or reports."""
from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from tests.helpers.ansible import run_module
from tests.helpers.postgres import TEST_PASSWORD, drop_database
from tests.helpers.secrets import ArgvWatcher, files_containing, find_secret
from tests.helpers.stack import APP_DIR, COMPOSE_FILE, ComposeStack

ALEMBIC_INI = str(APP_DIR / "alembic.ini")
VERBOSE = {"ANSIBLE_VERBOSITY": "3"}


def assert_no_leak(run, watcher: ArgvWatcher, *extra_texts) -> None:
    assert watcher.samples > 5, "the process list was not sampled while the module ran"
    assert watcher.leaks == [], f"password in a process's argv: {watcher.leaks[:2]}"
    assert find_secret(TEST_PASSWORD, json.dumps(run.result), run.stdout, run.stderr, *extra_texts) == []


def run_watched(module: str, args: dict, **kwargs):
    with ArgvWatcher(TEST_PASSWORD) as watcher:
        run = run_module(module, args, env=VERBOSE, **kwargs)
    return run, watcher


@pytest.mark.integration
@pytest.mark.fault("migration_risk with db_url and trace", holds="password in no result, log or argv", kind="secret")
def test_migration_risk_keeps_the_password(pg_db):
    run, watcher = run_watched("migration_risk", {"alembic_config": ALEMBIC_INI, "db_url": pg_db.url, "trace": True})
    assert run.result.get("failed") is not True, run.result.get("msg")
    assert_no_leak(run, watcher, run.result.get("report", ""))


@pytest.mark.integration
@pytest.mark.fault("migration_risk with a wrong password", holds="error names the database, not the password",
                   kind="secret")
def test_connection_errors_keep_the_password(pg_db):
    args = pg_db.login_args() | {"login_password": TEST_PASSWORD + "-wrong", "sql": "SELECT 1"}
    run, watcher = run_watched("migration_risk", args)
    assert run.result["failed"] is True
    assert_no_leak(run, watcher)
    assert TEST_PASSWORD + "-wrong" not in run.output + json.dumps(run.result)


@pytest.mark.integration
@pytest.mark.fault("alembic_migrate upgrade and check mode", holds="password in no result, log, argv or timeline",
                   kind="secret")
def test_alembic_migrate_keeps_the_password(pg_db, tmp_path):
    timeline = tmp_path / "timeline.json"
    check, watcher = run_watched("alembic_migrate", {"config": ALEMBIC_INI, "db_url": pg_db.url}, check=True)
    assert check.result.get("failed") is not True, check.result.get("msg")
    assert_no_leak(check, watcher)
    run, watcher = run_watched("alembic_migrate", {"config": ALEMBIC_INI, "db_url": pg_db.url,
                                                   "timeline_file": str(timeline)})
    assert run.result.get("failed") is not True, run.result.get("msg")
    assert_no_leak(run, watcher)
    assert files_containing(TEST_PASSWORD, str(tmp_path)) == []


@pytest.mark.integration
@pytest.mark.fault("pg_backup backup, verify and restore", holds="password in no result, argv or manifest; "
                   "backup files 0600 (a directory archive 0700), folder not world-readable", kind="secret")
def test_pg_backup_keeps_the_password(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE t (id int primary key, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 500) g")
    dest = tmp_path / "backups"
    run, watcher = run_watched("pg_backup", {"db_url": pg_db.url, "dest": str(dest), "verify": "restore"})
    assert run.result.get("failed") is not True, run.result.get("msg")
    assert_no_leak(run, watcher)
    assert files_containing(TEST_PASSWORD, str(dest)) == []
    archive = run.result["path"]
    if os.path.isdir(archive):
        assert stat.S_IMODE(os.stat(archive).st_mode) == 0o700
        inside = [os.path.join(archive, name) for name in os.listdir(archive)]
        assert inside and all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in inside), \
            {f: oct(stat.S_IMODE(os.stat(f).st_mode)) for f in inside}
    else:
        assert stat.S_IMODE(os.stat(archive).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(dest).st_mode) & 0o007 == 0
    target = "r_" + uuid.uuid4().hex[:8]
    restore, watcher = run_watched("pg_backup", {"db_url": pg_db.url, "state": "restored",
                                                 "src": run.result["path"], "target_db": target})
    assert restore.result.get("failed") is not True, restore.result.get("msg")
    assert_no_leak(restore, watcher)
    drop_database(pg_db.server, target)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.fault("compose_deploy with the database password in env", holds="password in no result, log or argv",
                   kind="secret")
def test_compose_deploy_keeps_the_password(docker_client):
    repo = "dbops-secret-%s/auto_trader" % uuid.uuid4().hex[:8]
    docker_client.images.get("auto_trader:1.0.0").tag(repo, "1")
    stack = ComposeStack(app_version="1")
    stack.env["APP_IMAGE"] = repo
    args = {"project_src": str(APP_DIR), "files": [COMPOSE_FILE.name], "project_name": stack.project,
            "env": dict(stack.env), "health": {"url": stack.base_url + "/healthz", "timeout": 60}}
    try:
        run, watcher = run_watched("compose_deploy", args)
        assert run.result.get("failed") is not True, run.result.get("msg")
        assert_no_leak(run, watcher)
    finally:
        stack.down()
        for image in docker_client.images.list(name=repo):
            for tag in image.tags:
                if tag.startswith(repo + ":"):
                    docker_client.images.remove(tag)
