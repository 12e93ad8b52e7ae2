"""Broken release: it fails its health gate and the previous release serves again."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tests"))
import checks  # noqa: E402


def test_previous_release_serves(host):
    status, body = checks.get_json(host, checks.base_url(host) + "/healthz")
    assert status == 200 and body["version"] == "1.0.0" and body["revision"] == "0005"


def test_failure_report():
    failed = checks.reports("deploy-*-failed.json")[-1]
    assert failed["step"] == "deploy" and failed["app_version"] == "6.6.6"


def test_broken_image_not_running(host):
    out = host.check_output("docker ps --filter label=com.docker.compose.project=%s --format '{{.Image}}'",
                            checks.PROJECT)
    assert ":6.6.6" not in out
