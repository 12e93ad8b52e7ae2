"""The way back on the second example app, whose Alembic revision lives in ledger_schema_version
and whose compose file takes the release through IMAGE_TAG: the custom version table goes through
the release record, the backup manifest and rollback.yml, and is never taken as `base`.

One stack for the module; the tests run in order.
"""
from __future__ import annotations

import json

import pytest

from tests.helpers.ledger import VERSION_TABLE, release_heads, started_ledger

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.nightly]

HEADS = release_heads()


@pytest.fixture(scope="module")
def ledger(docker_client, tmp_path_factory):
    with started_ledger(docker_client, tmp_path_factory.mktemp("ledger-rollback")) as stack:
        yield stack


class TestCustomVersionTable:
    def test_release_1_0_0_records_its_start(self, ledger):
        run = ledger.deploy("1.0.0", risk="auto")
        assert run.rc == 0, ledger.explain(run)
        assert ledger.revision() == HEADS["1.0.0"]
        record = json.loads((ledger.report_dir / "last-release.json").read_text())
        assert record["version_table"] == VERSION_TABLE and record["version_table_present"] is False
        assert record["revision_before"] is None
        status, body = ledger.post("/api/accounts", {"name": "cash", "currency": None})
        assert status == 201, body

    def test_backup_manifest_and_record_read_the_custom_table(self, ledger):
        run = ledger.deploy("1.1.0", risk="auto", approve=True)
        assert run.rc == 0, ledger.explain(run)
        assert ledger.revision() == HEADS["1.1.0"]
        record = json.loads((ledger.report_dir / "last-release.json").read_text())
        assert record["revision_before"] == HEADS["1.0.0"] and record["version_table"] == VERSION_TABLE
        assert record["images_before"]["api"]["image"] == "ledger-api:1.0.0"
        manifest = json.loads(ledger.backups()[-1].read_text())
        assert manifest["alembic_revision"] == HEADS["1.0.0"]
        assert record["backup_manifest"] == str(ledger.backups()[-1])

    def test_database_rollback_from_the_manifest_uses_the_custom_table(self, ledger):
        manifest = ledger.backups()[-1]
        run = ledger.play("rollback", {"rollback": "database", "manifest": str(manifest), "app_version": "1.1.0"})
        assert run.rc == 0, ledger.explain(run)
        assert ledger.revision() == HEADS["1.0.0"], ledger.explain(run)
        assert ledger.scalar("SELECT to_regclass('alembic_version')") is None
        assert f"Rolled back database: the database is at revision {HEADS['1.0.0']}" in run.output

    def test_emergency_stop_reads_the_custom_table(self, ledger):
        run = ledger.play("emergency_stop", {"stop_app": False})
        assert run.rc == 0, ledger.explain(run)
        assert f"Revision: {HEADS['1.0.0']} (version table {VERSION_TABLE})" in run.output
        assert "--profile migration" not in run.output
