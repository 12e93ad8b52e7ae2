"""The end of a release (module_utils/release/summary.py): the summary, and what a failed step prints and reports."""
from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.dbops.migrations.plugins.filter import release as release_filters
from ansible_collections.dbops.migrations.plugins.module_utils.release import summary

RB = "ansible-playbook dbops.migrations.rollback -i inventories/prod"
MANIFEST = "/backups/db-0003.manifest.json"


def summary_inputs(**changes):
    """A high-path release that applied 0005 and whose health check answered 200."""
    inputs = {
        "path": "high", "risk": "critical", "risk_asked": "auto", "app_version": "2.0.0", "check_mode": False,
        "applied": ["0005"], "would_apply": ["0005"], "from_revision": "0004", "to_revision": "0005",
        "health_check": True, "health_url": "http://app/healthz",
        "health_result": {"status": 200, "json": {"revision": "0005", "version": "2.0.0"}},
        "backup_path": "/backups/db-0004", "backup_manifest": "/backups/db-0004.manifest.json",
        "blocked": 2, "verified": "2 verification queries passed\n", "maintenance_left_on": False,
        "maintenance_left_by": {}, "maintenance_used": True, "maintenance_would_use": False,
        "started": 1000.0, "now": 1012.34,
    }
    inputs.update(changes)
    return inputs


# ------------------------------------------------------------------ the summary

def test_summary_of_an_applied_release():
    assert summary.release_summary(summary_inputs()) == {
        "result": "ok", "path": "high", "risk": "critical", "risk_asked": "auto", "app_version": "2.0.0",
        "check_mode": False, "revisions_applied": ["0005"], "revisions_would_apply": [], "revision": "0005",
        "backup": "/backups/db-0004", "backup_manifest": "/backups/db-0004.manifest.json", "blocked_sessions": 2,
        "verification": "2 verification queries passed", "health": "ok (http://app/healthz 200)",
        "maintenance": "was on, now off", "duration_s": 12.3,
    }


def test_check_mode_says_what_would_happen_and_where_the_database_stays():
    result = summary.release_summary(summary_inputs(check_mode=True, applied=[], maintenance_used=False,
                                                    maintenance_would_use=True))
    assert result["revisions_would_apply"] == ["0005"]
    assert result["revision"] == "0004"  # the revision it started at, not what the application reports
    assert result["backup"] == "would be taken (check mode)" and result["backup_manifest"] == "none"
    assert result["maintenance"] == "would be on during the migration (check mode)"


def test_check_mode_without_a_migration_would_apply_nothing():
    result = summary.release_summary(summary_inputs(check_mode=True, would_apply=None, from_revision=None,
                                                    backup_path=""))
    assert result["revisions_would_apply"] == [] and result["revision"] is None and result["backup"] == "none"


@pytest.mark.parametrize("health_result, to_revision, revision", [
    ({"status": 200, "json": {"revision": "0006"}}, "0005", "0006"),   # what the application runs against
    ({"status": 200, "json": {"revision": None}}, "0005", None),       # it says it has none: kept
    ({"status": 200, "json": {"version": "2"}}, "0005", "0005"),       # it does not say: the migration's target
    ({"status": 200, "json": ["0006"]}, "0005", "0005"),
    ({"status": 200, "json": None}, "0005", "0005"),
    ({"status": 503}, "0005", "0005"),                                 # no JSON body
    ({"changed": False, "skipped": True}, "0005", "0005"),             # no health URL: nothing was read
    ({"changed": False, "skipped": True}, None, None),                 # skip_migrate: no migration either
])
def test_the_revision_now_comes_from_the_application_then_the_migration(health_result, to_revision, revision):
    result = summary.release_summary(summary_inputs(health_result=health_result, to_revision=to_revision))
    assert result["revision"] == revision


@pytest.mark.parametrize("health_check, health_result, health", [
    (True, {"status": 200}, "ok (http://app/healthz 200)"),
    (True, {"status": 503, "json": {}}, "FAILING (503)"),
    (True, {"status": -1, "msg": "connection refused"}, "FAILING (-1)"),
    (True, {"changed": False, "skipped": True}, "FAILING (no answer)"),
    (True, None, "FAILING (no answer)"),
    (False, {"status": 200}, "not checked"),
    (False, {"status": 503}, "not checked"),
])
def test_health(health_check, health_result, health):
    result = summary.release_summary(summary_inputs(health_check=health_check, health_result=health_result))
    assert result["health"] == health


@pytest.mark.parametrize("changes, maintenance", [
    ({"maintenance_left_on": True, "maintenance_left_by": {"release_id": "20260101T000000Z-abc123"}},
     "left on by the interrupted release 20260101T000000Z-abc123, now off"),
    ({"maintenance_left_on": True, "maintenance_left_by": {"release_id": ""}},
     "left on by the interrupted release , now off"),
    ({"maintenance_left_on": True, "maintenance_left_by": {}}, "left on by the interrupted release ?, now off"),
    ({"maintenance_left_on": True, "maintenance_left_by": None}, "left on by the interrupted release ?, now off"),
    ({"maintenance_left_on": "yes", "maintenance_left_by": ["not", "a", "record"]},
     "left on by the interrupted release ?, now off"),
    ({"maintenance_left_on": None}, "was on, now off"),
    ({"maintenance_used": False}, "not used"),
    ({"maintenance_used": None, "maintenance_would_use": None}, "not used"),
    ({"maintenance_used": "false", "maintenance_would_use": "true"}, "would be on during the migration (check mode)"),
])
def test_maintenance(changes, maintenance):
    assert summary.release_summary(summary_inputs(**changes))["maintenance"] == maintenance


@pytest.mark.parametrize("blocked, sessions", [(None, 0), (3, 3), ("4", 4), ("4.7", 4), ("many", 0), (2.9, 2)])
def test_blocked_sessions_are_a_whole_number(blocked, sessions):
    assert summary.release_summary(summary_inputs(blocked=blocked))["blocked_sessions"] == sessions


@pytest.mark.parametrize("verified, verification", [(None, "not run"), ("  passed (check mode)\n", "passed (check mode)")])
def test_verification(verified, verification):
    assert summary.release_summary(summary_inputs(verified=verified))["verification"] == verification


@pytest.mark.parametrize("started, now, duration", [(1000.0, 1012.34, 12.3), ("1000.5", 1001.66, 1.2), (None, 3.0, 3.0)])
def test_duration_is_rounded_to_a_tenth(started, now, duration):
    assert summary.release_summary(summary_inputs(started=started, now=now))["duration_s"] == duration


def test_summary_lines_of_an_applied_release():
    assert summary.summary_lines(summary.release_summary(summary_inputs())) == [
        "path:              high (risk critical, asked auto)",
        "release:           2.0.0",
        "revisions applied: 0005 (now at 0005)",
        "backup:            /backups/db-0004",
        "blocked sessions:  2",
        "verification:      2 verification queries passed",
        "health:            ok (http://app/healthz 200)",
        "maintenance:       was on, now off",
        "duration:          12.3 s",
    ]


@pytest.mark.parametrize("changes, line", [
    ({"check_mode": True, "would_apply": ["0005", "0006"]},
     "check mode, nothing changed: would apply 0005, 0006 (the database stays at 0004)"),
    ({"check_mode": True, "would_apply": [], "from_revision": None},
     "check mode, nothing changed: would apply nothing (the database stays at no revision)"),
    ({"applied": [], "path": "skip", "to_revision": None, "health_result": {"skipped": True}},
     "revisions applied: none (now at None)"),
])
def test_the_revisions_line(changes, line):
    assert summary.summary_lines(summary.release_summary(summary_inputs(**changes)))[2] == line


# ------------------------------------------------------------------ a failed step: what changed

def read(revisions=("0004",), error="", present=True, table="alembic_version"):
    return {"table": table, "present": present, "revision": revisions[0] if len(revisions) == 1 else None,
            "revisions": list(revisions), "error": error}


def facts_inputs(**changes):
    """The migration step failed after applying 0004 (the release record says 0003 before)."""
    inputs = {"failed_result": {"failed": True, "msg": "lock timeout on users"}, "step": "migration",
              "check_mode": False, "applied": ["0004"], "revisions_before": ["0003"], "migrate_from_revision": "0003",
              "revision_read": read(), "maintenance_on": True}
    inputs.update(changes)
    return inputs


def test_facts_of_a_migration_that_applied_a_revision():
    assert summary.failure_facts(facts_inputs()) == {
        "message": "lock timeout on users", "rolled_back": False, "revisions_before": ["0003"],
        "revision_before": "0003", "revisions_now": ["0004"], "db_changed": True, "maintenance_was_on": True,
        "app_changed": False,
    }


@pytest.mark.parametrize("changes, db_changed", [
    ({"applied": [], "revision_read": read(["0003"])}, False),
    ({"applied": [], "revision_read": read(["0004"])}, True),         # committed, then the module failed
    ({"applied": [], "revision_read": read([], error="could not connect to server")}, False),  # no evidence
    ({"revision_read": read([], error="could not connect to server")}, True),  # it applied 0004
    ({"applied": None, "revision_read": read(["0003"])}, False),
    ({"check_mode": True}, False),
    ({"applied": [], "revisions_before": [], "revision_read": read([], present=False)}, False),
])
def test_the_database_changed_when_revisions_were_applied_or_it_moved(changes, db_changed):
    assert summary.failure_facts(facts_inputs(**changes))["db_changed"] is db_changed


@pytest.mark.parametrize("changes, before, revision_before", [
    ({}, ["0003"], "0003"),
    ({"revisions_before": []}, [], None),                               # the database had no revision
    ({"revisions_before": ["0003a", "0003b"]}, ["0003a", "0003b"], None),  # two heads: no one revision to name
    ({"revisions_before": None}, ["0003"], "0003"),                      # no release record: the migration's start
    ({"revisions_before": None, "migrate_from_revision": None}, [], None),
    ({"revisions_before": None, "migrate_from_revision": ""}, [], None),
])
def test_the_revision_before(changes, before, revision_before):
    facts = summary.failure_facts(facts_inputs(**changes))
    assert facts["revisions_before"] == before and facts["revision_before"] == revision_before


@pytest.mark.parametrize("failed_result, message, rolled_back, app_changed", [
    ({"msg": "unhealthy", "rolled_back": True}, "unhealthy", True, False),
    ({"msg": "unhealthy", "rolled_back": False}, "unhealthy", False, True),
    ({"msg": "unhealthy", "rolled_back": "yes"}, "unhealthy", True, False),
    ({"msg": None}, None, False, True),      # a message that is null stays null
    ({}, "failed", False, True),
    (None, "failed", False, True),
])
def test_a_failed_deploy_changed_the_application_unless_it_was_brought_back(failed_result, message, rolled_back,
                                                                              app_changed):
    facts = summary.failure_facts(facts_inputs(step="deploy", failed_result=failed_result))
    assert (facts["message"], facts["rolled_back"], facts["app_changed"]) == (message, rolled_back, app_changed)


def test_check_mode_and_the_migration_step_change_no_application():
    assert summary.failure_facts(facts_inputs(step="deploy", check_mode=True))["app_changed"] is False
    assert summary.failure_facts(facts_inputs(step="migration"))["app_changed"] is False


@pytest.mark.parametrize("was_on, on_now, off_again", [(True, False, True), (True, None, True), (True, True, False),
                                                      (False, False, False)])
def test_maintenance_turned_off_again(was_on, on_now, off_again):
    facts = summary.failure_facts(facts_inputs(maintenance_on=was_on))
    after = summary.failure_after_maintenance({"failure": facts, "maintenance_on": on_now})
    assert after["maintenance_off_again"] is off_again
    assert {k: v for k, v in after.items() if k != "maintenance_off_again"} == facts


# ------------------------------------------------------------------ the rollback commands

def rollback_inputs(facts_changes=None, **changes):
    inputs = {"failure": summary.failure_facts(facts_inputs(**(facts_changes or {}))), "check_mode": False,
              "recorded": True, "release_id": "20260102T030405Z-0a1b2c", "app_version": "2.0.0",
              "inventory_args": "-i inventories/prod", "backup_manifest": MANIFEST, "maintenance_on": True}
    inputs.update(changes)
    return inputs


def test_rollback_of_a_changed_database_under_maintenance():
    assert summary.rollback_commands(rollback_inputs()) == [
        f"database: {RB} -e rollback=database -e manifest={MANIFEST} -e migration_target=0003 -e app_version=2.0.0"
        " -e release=20260102T030405Z-0a1b2c",
        f"last resort, restore the backup: {RB} -e rollback=restore -e manifest={MANIFEST} -e confirm=true",
        "then maintenance off: ansible-playbook dbops.migrations.maintenance -i inventories/prod -e state=off",
    ]


def test_rollback_without_a_backup_or_maintenance():
    assert summary.rollback_commands(rollback_inputs(backup_manifest=None, maintenance_on=None)) == [
        f"database: {RB} -e rollback=database -e migration_target=0003 -e app_version=2.0.0"
        " -e release=20260102T030405Z-0a1b2c",
    ]


def test_rollback_of_a_database_that_had_no_revision_is_the_restore_only():
    inputs = rollback_inputs({"revisions_before": []}, maintenance_on=False)
    assert summary.rollback_commands(inputs) == [
        f"last resort, restore the backup: {RB} -e rollback=restore -e manifest={MANIFEST} -e confirm=true"]
    assert summary.rollback_commands(rollback_inputs({"revisions_before": []}, maintenance_on=False,
                                                     backup_manifest="")) == []


def test_rollback_of_a_failed_deploy_is_the_application():
    inputs = rollback_inputs({"step": "deploy", "applied": [], "revision_read": read(["0003"]),
                              "failed_result": {"msg": "unhealthy", "rolled_back": False}}, maintenance_on=False)
    assert summary.rollback_commands(inputs) == [f"application: {RB} -e rollback=app -e release=20260102T030405Z-0a1b2c"]


def test_rollback_names_no_release_without_a_record_and_keeps_the_spacing_of_empty_inventory_args():
    inputs = rollback_inputs({"step": "deploy", "applied": [], "revision_read": read(["0003"])}, recorded=False,
                             maintenance_on=False, inventory_args="")
    assert summary.rollback_commands(inputs) == [
        "application: ansible-playbook dbops.migrations.rollback  -e rollback=app"]


def test_nothing_to_roll_back_when_nothing_changed_or_in_check_mode():
    unchanged = rollback_inputs({"applied": [], "revision_read": read(["0003"])}, maintenance_on=False)
    assert summary.rollback_commands(unchanged) == []
    check = rollback_inputs({"check_mode": True, "step": "deploy"}, check_mode=True, maintenance_on=False)
    assert summary.rollback_commands(check) == []


# ------------------------------------------------------------------ the failure report and message

def report_inputs(**changes):
    failure = summary.failure_facts(facts_inputs())
    inputs = {"step": "migration", "path": "high", "app_version": "2.0.0", "failure": failure, "applied": ["0004"],
              "backup_path": "/backups/db-0003", "backup_manifest": MANIFEST, "maintenance_on": True, "recorded": True,
              "report_dir": "/srv/reports", "release_id": "20260102T030405Z-0a1b2c",
              "rollback": summary.rollback_commands(rollback_inputs())}
    inputs.update(changes)
    return inputs


def test_failure_report():
    inputs = report_inputs()
    assert summary.failure_report(inputs) == {
        "result": "failed", "step": "migration", "path": "high", "app_version": "2.0.0",
        "message": "lock timeout on users", "revisions_applied": ["0004"], "revision_before": "0003",
        "revision_now": "0004", "database_changed": True, "backup": "/backups/db-0003", "backup_manifest": MANIFEST,
        "maintenance": "on", "release_record": "/srv/reports/releases/20260102T030405Z-0a1b2c.json",
        "rollback": inputs["rollback"],
    }


def test_failure_report_of_a_release_without_path_record_or_revision():
    failure = summary.failure_facts(facts_inputs(applied=[], revisions_before=[], revision_read=read([], present=False)))
    report = summary.failure_report(report_inputs(failure=failure, path=None, applied=None, backup_path=None,
                                                  backup_manifest=None, maintenance_on=None, recorded=False,
                                                  rollback=[]))
    assert report["path"] == "unknown" and report["revisions_applied"] == []
    assert report["revision_before"] is None and report["revision_now"] is None
    assert report["database_changed"] is False and report["maintenance"] == "off"
    assert report["backup"] == "" and report["backup_manifest"] == "" and report["release_record"] is None


def lines_inputs(facts_changes=None, on_now=True, **changes):
    failure = summary.failure_after_maintenance({"failure": summary.failure_facts(facts_inputs(**(facts_changes or {}))),
                                                 "maintenance_on": on_now})
    inputs = {"step": "migration", "path": "high", "failure": failure, "check_mode": False,
              "applied": (facts_changes or {}).get("applied", ["0004"]),
              "revision_read": (facts_changes or {}).get("revision_read", read()), "maintenance_on": on_now,
              "backup_manifest": MANIFEST, "recorded": True, "report_dir": "/srv/reports",
              "release_id": "20260102T030405Z-0a1b2c", "rollback": ["database: ...", "then maintenance off: ..."]}
    inputs.update(changes)
    return inputs


def test_failure_lines_when_the_database_changed():
    assert summary.failure_lines(lines_inputs()) == [
        "The migration step of the high path failed: lock timeout on users",
        "The database changed: it was at 0003 and is now at 0004; applied 0004.",
        "Maintenance mode stays ON (the maintenance page is served) until you turn it off.",
        f"Backup: {MANIFEST}",
        "Release record: /srv/reports/releases/20260102T030405Z-0a1b2c.json",
        "Roll back with:",
        "database: ...",
        "then maintenance off: ...",
    ]


def test_failure_lines_when_nothing_changed_and_maintenance_went_off_again():
    inputs = lines_inputs({"applied": [], "revision_read": read(["0003"])}, on_now=False, rollback=[])
    assert summary.failure_lines(inputs) == [
        "The migration step of the high path failed: lock timeout on users",
        "The database did not change: it stays at 0003.",
        "Maintenance mode was turned off again: nothing had changed.",
        f"Backup: {MANIFEST}",
        "Release record: /srv/reports/releases/20260102T030405Z-0a1b2c.json",
        "Roll back with:",
        "(nothing to roll back)",
    ]


def test_failure_lines_of_a_deploy_brought_back_automatically():
    inputs = lines_inputs({"step": "deploy", "applied": [], "revision_read": read(["0003"]), "maintenance_on": False,
                           "failed_result": {"msg": "unhealthy", "rolled_back": True}},
                          on_now=False, step="deploy", path=None, backup_manifest="", recorded=False, rollback=[])
    assert summary.failure_lines(inputs) == [
        "The deploy step of the unknown path failed: unhealthy",
        "The previous release was brought back automatically.",
        "The database did not change: it stays at 0003.",
        "Maintenance mode is off.",
        "Roll back with:",
        "(nothing to roll back)",
    ]


def test_failure_lines_in_check_mode():
    inputs = lines_inputs({"check_mode": True, "maintenance_on": False}, on_now=False, check_mode=True, rollback=[])
    assert summary.failure_lines(inputs) == [
        "The migration step of the high path failed: lock timeout on users",
        "Check mode: nothing was changed, so there is nothing to roll back.",
        "Maintenance mode is off.",
        "Roll back with:",
        "(nothing to roll back)",
    ]


def test_failure_lines_when_the_database_had_no_revision_before():
    inputs = lines_inputs({"revisions_before": [], "applied": ["0001"], "revision_read": read(["0001"])},
                          applied=["0001"])
    lines = summary.failure_lines(inputs)
    assert lines[1] == "The database changed: it was at no revision and is now at 0001; applied 0001."
    assert lines[2] == ("The database had no revision before this release, so there is no revision to go back to: "
                        "restore the backup or downgrade by hand.")


@pytest.mark.parametrize("revision_read, now", [
    (read([], present=False, table="audit.alembic_version"), "no revision (audit.alembic_version is missing)"),
    (read([]), "no revision"),
    (read(["0003a", "0003b"]), "0003a, 0003b"),
    (read([], error="could not connect to server: Connection refused"),
     "unknown (the database did not answer: could not connect to server: Connection refused)"),
])
def test_where_the_database_is_now(revision_read, now):
    same = {"applied": [], "revisions_before": revision_read["revisions"], "revision_read": revision_read}
    inputs = lines_inputs(same, on_now=False, applied=[], revision_read=revision_read)
    assert summary.failure_lines(inputs)[1] == f"The database did not change: it stays at {now}."


def test_a_long_database_error_is_cut_at_a_word():
    error = "connection to server at 10.0.0.5 failed: " + "timeout expired " * 20
    inputs = lines_inputs({"revision_read": read([], error=error)}, revision_read=read([], error=error))
    expected = ("connection to server at 10.0.0.5 failed: " + "timeout expired " * 9 + "timeout...")
    assert len(expected) <= 200
    assert summary.failure_lines(inputs)[1] == (f"The database changed: it was at 0003 and is now at unknown "
                                                f"(the database did not answer: {expected}); applied 0004.")


@pytest.mark.parametrize("text, cut", [
    ("a" * 205, "a" * 205),                     # up to 5 characters over the limit are kept
    ("a" * 206, "a" * 197 + "..."),             # one long word is cut inside it
    ("word " * 41 + "x", "word " * 38 + "word..."),  # cut at the last space before 197
    ("", ""),
])
def test_truncate_follows_jinja(text, cut):
    assert summary._truncate(text, 200) == cut


@pytest.mark.parametrize("value, result", [
    (True, True), (False, False), ("yes", True), ("On", True), ("TRUE", True), ("1", True), (1, True),
    ("no", False), ("off", False), ("0", False), (0, False), ("", False), ("maybe", False), (None, False),
    (1.0, True), (2, False), ([1], False),
])
def test_to_bool_follows_the_bool_filter(value, result):
    assert summary._to_bool(value) is result


# ------------------------------------------------------------------ the filters

def test_the_filters_call_the_functions():
    filters = release_filters.FilterModule().filters()
    assert sorted(filters) == sorted(release_filters.FILTERS)
    assert filters["release_summary"](summary_inputs()) == summary.release_summary(summary_inputs())
    with pytest.raises(AnsibleFilterError, match="release_failure_lines expects a dict of inputs, got list"):
        filters["release_failure_lines"](["not", "a", "dict"])

