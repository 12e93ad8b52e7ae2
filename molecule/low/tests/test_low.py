"""Low path: every revision applied in one run, the app healthy behind nginx."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tests"))
import checks  # noqa: E402


def test_app_serves_the_newest_revision(host):
    status, body = checks.get_json(host, checks.base_url(host) + "/healthz")
    assert status == 200 and body["revision"] == "0005" and body["version"] == "1.0.0"


def test_summary_says_low_path_and_lists_the_revisions():
    summary = checks.reports()[-1]
    assert summary["path"] == "low" and summary["risk_asked"] == "auto"
    assert summary["revisions_applied"] == ["0001", "0002", "0003", "0004", "0005"]
    assert summary["backup"] == "none" and summary["health"].startswith("ok")


def test_containers_run(host):
    for service in ("db", "app", "nginx"):
        out = host.check_output("docker ps --filter label=com.docker.compose.project=%s "
                                "--filter label=com.docker.compose.service=%s --format '{{.Status}}'",
                                checks.PROJECT, service)
        assert out.startswith("Up"), (service, out)


def test_no_lock_left(host):
    assert not host.file(os.path.join(checks.WORK, "reports", "deploy.lock")).exists
