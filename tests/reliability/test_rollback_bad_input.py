"""rollback.yml refuses requests that would make things worse, before anything changes.

No stack is needed: every refusal here happens before the database or Docker is touched (the
inventory points at a closed port), and the release lock is given back afterwards.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.ansible import REPO_ROOT, run_playbook
from tests.helpers.postgres import free_port

pytestmark = pytest.mark.integration

APP_DIR = REPO_ROOT / "examples" / "auto_trader"


@pytest.fixture
def site(tmp_path):
    reports = tmp_path / "reports"
    (tmp_path / "inventory" / "group_vars").mkdir(parents=True)
    (tmp_path / "inventory" / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "children": {"app": {"hosts": {"localhost": None}}}}}))
    (tmp_path / "inventory" / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "dbops_project_src": str(APP_DIR), "dbops_compose_files": ["docker-compose.prod.yml"],
        "dbops_compose_project": "rbbad" + tmp_path.name[-6:].lower().replace("_", ""),
        "dbops_db_host": "127.0.0.1", "dbops_db_port": free_port(), "dbops_db_name": "auto_trader",
        "dbops_db_user": "auto_trader", "dbops_db_password": "not-used-here",
        "dbops_report_dir": str(reports), "dbops_backup_dest": str(tmp_path / "backups"),
        "dbops_alembic_version_table": "custom_vt"}))
    return tmp_path


def rollback(site: Path, **extra):
    run = run_playbook(REPO_ROOT / "playbooks" / "rollback.yml", extra, inventory=site / "inventory", timeout=300)
    assert not (site / "reports" / "deploy.lock").exists(), "the release lock was not given back"
    return run


def write_record(site: Path, release_id: str, **fields) -> Path:
    record = {"release_id": release_id, "project": "x", "app_version": "2.0.0", "revision_before": None,
              "version_table": "custom_vt", "version_table_present": False, "images_before": {},
              "backup_manifest": None, "maintenance_on": False, "result": "failed", "step": "migration"}
    record.update(fields)
    path = site / "reports" / "releases" / (release_id + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("extra, expected", [
    ({"rollback": "everything"}, "rollback must be app, database, restore or drop_replaced"),
    ({"rollback": "restore", "manifest": "/tmp/x.manifest.json"}, "-e confirm=true"),
    ({"rollback": "restore", "confirm": True}, "-e manifest=PATH"),
    ({"rollback": "database", "rollback_version": "1.0.0"}, "rollback_version is for rollback=app"),
    ({"rollback": "drop_replaced", "confirm": True}, "-e replaced_database=NAME"),
    ({"rollback": "database"}, "rollback=database needs the revision to go back to"),
    ({"rollback": "database", "migration_target": "base"}, "migration_target=base would revert every revision"),
    ({"rollback": "database", "migration_target": "-1"}, "is relative"),
    ({"rollback": "database", "migration_target": "ae10+2"}, "is relative"),
    ({"rollback": "database", "migration_target": "heads"}, "is not a rollback"),
    ({"rollback": "database", "release": "20260101T000000Z-nothere"}, "There is no release record"),
])
def test_refused_before_anything_changes(site, extra, expected):
    run = rollback(site, **extra)
    assert run.rc != 0
    assert expected in run.output, run.output[-3000:]
    assert "Nothing was changed" in run.output


def test_manifest_without_revision_is_never_base(site):
    manifest = site / "db.manifest.json"
    manifest.write_text(json.dumps({"database": "auto_trader", "alembic_revision": None,
                                    "version_table": "custom_vt", "tables": {}}))
    run = rollback(site, rollback="database", manifest=str(manifest))
    assert run.rc != 0
    assert "recorded no Alembic revision: it read the version table custom_vt" in run.output
    assert "never taken as base" in run.output
    assert "downgrade base" not in run.output and "Downgrade the database to base" not in run.output


def test_record_of_a_database_without_version_table_is_never_base(site):
    write_record(site, "20260101T000000Z-aaaaaa")
    run = rollback(site, rollback="database", release="20260101T000000Z-aaaaaa")
    assert run.rc != 0
    assert "the version table custom_vt did not exist then" in run.output
    assert "There is no revision to downgrade to" in run.output and "Nothing was changed" in run.output


def test_last_release_record_is_the_default(site):
    path = write_record(site, "20260101T000000Z-bbbbbb", version_table_present=True)
    (site / "reports" / "last-release.json").write_text(path.read_text())
    run = rollback(site, rollback="database")
    assert run.rc != 0
    assert "the version table custom_vt was empty" in run.output
