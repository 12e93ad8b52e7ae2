"""deploy.yml's rehearsal gate on a private copy of the example stack: with rehearsal_required=true the high
path refuses a critical migration without a passing rehearsal of the same revisions, and goes on with one
(in check mode, which changes nothing and passes the same gate), showing its numbers."""
from __future__ import annotations

import datetime

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import records
from tests.helpers.release import compose_ps, new_release

# Three runs of deploy.yml: a nightly story (the gate's decisions are unit tests in test_rehearse_logic.py).
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.nightly]


@pytest.fixture(scope="module")
def release(docker_client, tmp_path_factory):
    rel = new_release(docker_client, tmp_path_factory.mktemp("release"))
    yield rel
    rel.close()


def explain(run, rel) -> str:
    return f"rc={run.rc}\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}\n{compose_ps(rel)}"


def rehearsal_record(rel, revisions, finished: datetime.datetime, passed: bool = True) -> None:
    records.write_record(str(rel.report_dir / "rehearsals"), {
        "format_version": records.RECORD_FORMAT_VERSION, "id": finished.strftime("%Y%m%dT%H%M%SZ") + "-test",
        "database": "auto_trader", "passed": passed, "revisions": revisions, "finished_at": finished.isoformat(),
        "archive_finished_at": finished.isoformat(),
        "measurements": [{"revision": r, "duration_s": 2.5, "lock_s": 1.5, "rewritten_tables": ["orders"],
                          "wal_bytes": 3 * 1024 * 1024} for r in revisions],
        "calibration": {"disagreements": []}})


def test_setup_at_0004(release):
    run = release.deploy(risk="auto", migration_target="0004")
    assert run.rc == 0, explain(run, release)
    assert release.revision() == "0004"


def test_gate_off_keeps_the_high_path_as_it_was(release):
    run = release.play("deploy", {"risk": "auto", "approve": True}, check=True)
    assert run.rc == 0, explain(run, release)
    assert "Look for a passing rehearsal" not in run.stdout


def test_without_a_rehearsal_the_high_path_is_refused(release):
    now = datetime.datetime.now(datetime.timezone.utc)
    rehearsal_record(release, ["0005"], now - datetime.timedelta(days=9))        # too old
    rehearsal_record(release, ["0004", "0005"], now - datetime.timedelta(hours=1))  # other revisions
    run = release.deploy(risk="auto", approve=True, rehearsal_required=True)
    assert run.rc != 0
    shown = " ".join(run.output.split())
    assert "need a passing rehearsal first" in shown and "Nothing was changed" in shown, explain(run, release)
    assert "days old" in shown and "it rehearsed 0004, 0005, not 0005" in shown
    assert release.revision() == "0004" and release.backups() == []
    assert not release.lock_held()


def test_with_a_passing_rehearsal_the_high_path_goes_on_and_shows_its_numbers(release):
    rehearsal_record(release, ["0005"], datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2))
    run = release.play("deploy", {"risk": "auto", "approve": True, "rehearsal_required": True}, check=True)
    assert run.rc == 0, explain(run, release)
    shown = " ".join(run.stdout.split())
    assert "Rehearsal: rehearsed 0005" in shown and "0005 2.5 s wall, strong locks 1.5 s, rewrites orders" in shown
    assert "would apply 0005" in shown
    assert release.revision() == "0004"
