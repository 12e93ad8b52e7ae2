"""rollback.yml for the database: back to the backup's revision, data kept, app healthy."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tests"))
import checks  # noqa: E402


def test_back_at_the_manifest_revision(host):
    # The release's backup (at 0004), then the one the rollback took before its downgrade dropped data (at 0005).
    release_backup, before_downgrade = [json.loads(host.file(path).content_string) for path in checks.manifests()]
    status, body = checks.get_json(host, checks.base_url(host) + "/healthz")
    assert status == 200 and body["revision"] == release_backup["alembic_revision"] == "0004"
    assert before_downgrade["alembic_revision"] == "0005"


def test_rows_kept(host):
    status, stats = checks.get_json(host, checks.base_url(host) + "/api/stats")
    assert status == 200 and stats == {"users": 3, "accounts": 3, "orders": 3}
