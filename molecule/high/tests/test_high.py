"""High path: maintenance, verified backup, migration alone, verification, maintenance off."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tests"))
import checks  # noqa: E402


def test_migrated_and_healthy(host):
    status, body = checks.get_json(host, checks.base_url(host) + "/healthz")
    assert status == 200 and body["revision"] == "0005"


def test_maintenance_is_off_again(host):
    status, stats = checks.get_json(host, checks.base_url(host) + "/api/stats")
    assert status == 200 and stats == {"users": 3, "accounts": 3, "orders": 3}


def test_backup_verified_at_the_old_revision(host):
    manifests = checks.manifests()
    assert len(manifests) == 1
    manifest = json.loads(host.file(manifests[0]).content_string)
    assert manifest["alembic_revision"] == "0004" and manifest["tables"]["public.orders"] == 3


def test_summary_records_the_path():
    summary = checks.reports()[-1]
    assert summary["path"] == "high" and summary["risk"] == "critical"
    assert summary["revisions_applied"] == ["0005"]
    assert summary["maintenance"] == "was on, now off"
    assert "no rows lost; 2 verification queries passed" in summary["verification"]
