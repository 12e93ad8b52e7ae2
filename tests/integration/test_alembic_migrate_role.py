"""The migrate role through real ansible-playbook: run_once, set_stats, failure of the play."""
from __future__ import annotations

import yaml

import pytest

from tests.helpers.ansible import run_playbook
from tests.helpers.migrate_project import Holder, make_project, revision_of
from tests.helpers.postgres import TEST_PASSWORD

pytestmark = pytest.mark.integration


def write_play(tmp_path, **role_vars):
    play = [{"hosts": "all", "gather_facts": False,
             "roles": [{"role": "dbops.migrations.migrate", "vars": role_vars}]}]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    inventory = tmp_path / "hosts.yml"
    import sys
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        "app1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "app2": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    return path, inventory


def test_role_migrates_once_and_publishes_stats(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    play, inventory = write_play(tmp_path, migrate_config=str(config), migrate_db_url=pg_db.url,
                                 migrate_lock_timeout="1s", migrate_retries=1)
    run = run_playbook(play, inventory=inventory, env={"ANSIBLE_SHOW_CUSTOM_STATS": "1"})
    assert run.rc == 0, run.output
    assert revision_of(pg_db) == "0004"
    assert "CUSTOM STATS" in run.stdout and "0004" in run.stdout
    assert "applied 0001, 0002, 0003, 0004 in 4 attempt(s)" in run.stdout
    assert TEST_PASSWORD not in run.output
    # Two hosts, one migration: the second host did not run it again.
    assert run.stdout.count("Migrate the database to head") == 1

    again = run_playbook(play, inventory=inventory)
    assert again.rc == 0, again.output
    assert "applied nothing in 0 attempt(s)" in again.stdout


def test_role_fails_the_play_when_retries_run_out(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    play, inventory = write_play(tmp_path, migrate_config=str(config), migrate_db_url=pg_db.url,
                                 migrate_target="0001")
    assert run_playbook(play, inventory=inventory).rc == 0
    play, inventory = write_play(tmp_path, migrate_config=str(config), migrate_db_url=pg_db.url,
                                 migrate_lock_timeout="200ms", migrate_retries=1, migrate_retry_delay=0.2)
    with Holder(pg_db, "BEGIN; SELECT count(*) FROM orders", application_name="nightly-report") as reader:
        run = run_playbook(play, inventory=inventory)
    assert run.rc != 0
    assert "could not get its lock within lock_timeout=200ms" in run.output
    assert "pid %d" % reader.pid in run.output and "nightly-report" in run.output
    assert revision_of(pg_db) == "0001"
    assert TEST_PASSWORD not in run.output


def test_role_rejects_missing_settings(tmp_path):
    play, inventory = write_play(tmp_path, migrate_db_url="postgresql://x@127.0.0.1:1/x")
    run = run_playbook(play, inventory=inventory)
    assert run.rc != 0
    assert "migrate needs migrate_config" in run.output


def test_role_downgrades_only_when_allowed_and_calls_it_a_downgrade(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    play, inventory = write_play(tmp_path, migrate_config=str(config), migrate_db_url=pg_db.url)
    assert run_playbook(play, inventory=inventory).rc == 0
    play, inventory = write_play(tmp_path, migrate_config=str(config), migrate_db_url=pg_db.url, migrate_target="0003")
    refused = run_playbook(play, inventory=inventory)
    assert refused.rc != 0 and "set allow_downgrade: true" in refused.output
    assert revision_of(pg_db) == "0004"
    play, inventory = write_play(tmp_path, migrate_config=str(config), migrate_db_url=pg_db.url, migrate_target="0003",
                                 migrate_allow_downgrade=True)
    down = run_playbook(play, inventory=inventory)
    assert down.rc == 0, down.output
    assert "downgrade: reverted 0004" in down.stdout and "applied 0004" not in down.stdout
    assert revision_of(pg_db) == "0003"


def test_role_in_check_mode_says_what_it_would_apply(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    play, inventory = write_play(tmp_path, migrate_config=str(config), migrate_db_url=pg_db.url)
    run = run_playbook(play, inventory=inventory, check=True)
    assert run.rc == 0, run.output
    shown = " ".join(run.stdout.split())
    assert "Check mode, nothing changed: the database stays at base; would apply 0001, 0002, 0003, 0004." in shown
    assert revision_of(pg_db) is None
