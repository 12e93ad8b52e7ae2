"""playbooks/migration_check.yml: per-revision table, JSON/Markdown/SARIF reports, the max_risk gate."""
from __future__ import annotations

import datetime
import json
import sys

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import records

from tests.conftest import EXAMPLE_APP, REPO_ROOT
from tests.helpers import postgres as pgh
from tests.helpers.ansible import run_playbook
from tests.helpers.postgres import TEST_PASSWORD

pytestmark = pytest.mark.integration

PLAYBOOK = REPO_ROOT / "playbooks" / "migration_check.yml"


def test_gate_fails_above_max_risk_and_writes_reports(tmp_path):
    sql = tmp_path / "m.sql"
    sql.write_text("ALTER TABLE users ADD COLUMN nickname text;\nALTER TABLE orders ALTER COLUMN qty TYPE bigint;\n")
    out = tmp_path / "reports"
    run = run_playbook(PLAYBOOK, {"migration_check_sql_file": str(sql), "migration_check_report_dir": str(out),
                                  "migration_check_max_risk": "medium"})
    assert run.rc != 0
    assert "Migration risk is high, above the allowed medium" in run.output
    assert "alter-column-type" in run.stdout and "safe:" in run.stdout
    data = json.loads((out / "risk.json").read_text())
    assert data["risk"] == "high" and "report" not in data
    assert (out / "risk.md").read_text().startswith("# Migration risk: HIGH")
    sarif = json.loads((out / "risk.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    results = sarif["runs"][0]["results"]
    assert {"alter-column-type", "add-column"} <= {r["ruleId"] for r in results}
    assert any(r["level"] == "error" for r in results)
    assert results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == str(sql)


@pytest.mark.skipif(not (EXAMPLE_APP / "alembic.ini").exists(), reason="example app not present")
def test_example_app_on_empty_database_is_low_and_passes(pg_db, tmp_path):
    out = tmp_path / "reports"
    run = run_playbook(PLAYBOOK, {"migration_check_alembic_config": str(EXAMPLE_APP / "alembic.ini"),
                                  "migration_check_db_url": pg_db.url, "migration_check_report_dir": str(out)})
    assert run.rc == 0, run.output
    for rev in ("0001", "0002", "0003", "0004", "0005"):
        assert "== revision %s:" % rev in run.stdout
    # An empty database runs every revision in one go: the tables of 0001 are new for 0002-0005.
    assert "Migration risk low is within critical" in run.stdout
    assert TEST_PASSWORD not in run.output
    assert TEST_PASSWORD not in (out / "risk.json").read_text()


@pytest.mark.skipif(not (EXAMPLE_APP / "alembic.ini").exists(), reason="example app not present")
def test_a_rehearsal_of_exactly_the_pending_revisions_is_shown_for_the_approver(pg_db, tmp_path):
    folder = tmp_path / "rehearsals"
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    base = {"format_version": records.RECORD_FORMAT_VERSION, "passed": True, "database": pg_db.name,
            "finished_at": now, "archive_finished_at": now, "calibration": {"disagreements": []}}
    records.write_record(str(folder), dict(base, id="older-plan", revisions=["0001", "0002"], measurements=[]))
    args = {"migration_check_alembic_config": str(EXAMPLE_APP / "alembic.ini"), "migration_check_db_url": pg_db.url,
            "migration_check_report_dir": str(tmp_path / "r"), "migration_check_rehearsal_dir": str(folder)}
    run = run_playbook(PLAYBOOK, args)
    assert run.rc == 0, run.output
    assert "Rehearsal: none for these revisions (no passing rehearsal of 0001, 0002, 0003, 0004, 0005" in run.stdout
    measured = {"revision": "0004", "duration_s": 3.25, "lock_s": 2.5, "rewritten_tables": ["orders"],
                "wal_bytes": 52_428_800, "load": {"orders": {"queries": 40, "max_s": 2.4}}}
    records.write_record(str(folder), dict(base, id="this-plan", revisions=["0001", "0002", "0003", "0004", "0005"],
                                           measurements=[measured]))
    run = run_playbook(PLAYBOOK, args)
    assert run.rc == 0, run.output
    shown = ("Rehearsal: rehearsed 0001, 0002, 0003, 0004, 0005 on %s (%s): 0004 3.2 s wall, strong locks 2.5 s, "
             "rewrites orders, WAL 50.0 MB, queries waited up to 2.4 s; estimate agrees" % (now, now))
    assert shown in run.stdout
    # Without the folder given: the records rehearse.yml wrote on the inventory's first app host.
    reports = tmp_path / "app-reports"
    reports.mkdir()
    folder.rename(reports / "rehearsals")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[app]\napp1 ansible_connection=local ansible_python_interpreter=%s dbops_report_dir=%s\n"
                         % (sys.executable, reports))
    del args["migration_check_rehearsal_dir"]
    run = run_playbook(PLAYBOOK, args, inventory=inventory)
    assert run.rc == 0, run.output
    assert "localhost -> app1" in run.stdout and shown in run.stdout


def test_bad_variables_fail_before_anything_runs(tmp_path):
    run = run_playbook(PLAYBOOK, {"migration_check_sql": "SELECT 1", "migration_check_max_risk": "huge",
                                  "migration_check_report_dir": str(tmp_path / "r")})
    assert run.rc != 0 and "exactly one of" in run.output
    assert not (tmp_path / "r").exists()


def test_trace_summary_and_disagreements_are_printed(pg_db, tmp_path):
    if pgh.host_client_cannot_dump(pg_db.server):
        pytest.skip("the trace runs the host's pg_dump: " + pgh.host_client_cannot_dump(pg_db.server))
    pg_db.execute("CREATE TABLE events (id int PRIMARY KEY, at timestamp)")
    run = run_playbook(PLAYBOOK, {"migration_check_sql": "SET timezone = 'UTC';\n"
                                                         "ALTER TABLE events ALTER COLUMN at TYPE timestamptz;",
                                  "migration_check_db_url": pg_db.url, "migration_check_trace": True,
                                  "migration_check_report_dir": str(tmp_path / "r")})
    assert run.rc == 0, run.output
    assert "trace: Traced 2 statement(s)" in run.stdout
    assert "disagrees: ALTER TABLE events ALTER COLUMN at TYPE timestamptz" in run.stdout
    assert "## Lock trace" in (tmp_path / "r" / "risk.md").read_text()
    assert TEST_PASSWORD not in run.output
