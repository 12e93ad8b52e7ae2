"""Risk gate: asking for the low path on a critical migration changes nothing."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tests"))
import checks  # noqa: E402


def test_database_untouched(host):
    status, body = checks.get_json(host, checks.base_url(host) + "/healthz")
    assert status == 200 and body["revision"] == "0004"


def test_no_backup_no_maintenance(host):
    assert checks.manifests() == []
    status, _ = checks.get_json(host, checks.base_url(host) + "/api/stats")
    assert status == 200


def test_refusal_names_the_path():
    log = checks.expected_failure_log()
    assert "CRITICAL risk and need the high path" in log
    assert "-e risk=high" in log and "Nothing was changed" in log


def test_no_lock_left(host):
    assert not host.file(os.path.join(checks.WORK, "reports", "deploy.lock")).exists
