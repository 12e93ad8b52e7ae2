"""Medium path: a verified backup before the approved migration."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tests"))
import checks  # noqa: E402


def test_migrated_to_0003(host):
    status, body = checks.get_json(host, checks.base_url(host) + "/healthz")
    assert status == 200 and body["revision"] == "0003"


def test_backup_taken_at_0002_before_the_migration(host):
    manifests = checks.manifests()
    assert len(manifests) == 1
    manifest = json.loads(host.file(manifests[0]).content_string)
    assert manifest["alembic_revision"] == "0002" and manifest["verification"]
    assert host.file(manifests[0]).mode == 0o600


def test_summary():
    summary = checks.reports()[-1]
    assert summary["path"] == "medium" and summary["revisions_applied"] == ["0003"]
    assert summary["backup_manifest"] == checks.manifests()[0]
