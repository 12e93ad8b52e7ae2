"""Broken release: it fails its health gate and the previous release serves again."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tests"))
import checks  # noqa: E402


def test_previous_release_serves(host):
    status, body = checks.get_json(host, checks.base_url(host) + "/healthz")
    assert status == 200 and body["version"] == "1.0.0" and body["revision"] == "0005"


def test_failure_report():
    failed = checks.reports("deploy-failed-*.json")[-1]
    assert failed["step"] == "deploy" and failed["app_version"] == "6.6.6"


def test_running_app_is_the_previous_image(host):
    # The rollback may put the previous image under the tag the compose file names; what
    # counts is which image the running container was created from.
    running = host.check_output("docker ps --filter label=com.docker.compose.project=%s "
                                "--filter label=com.docker.compose.service=app --format '{{.ID}}'", checks.PROJECT)
    assert running and len(running.split()) == 1
    image_id = host.check_output("docker inspect --format '{{.Image}}' %s", running)
    previous = host.check_output("docker image inspect --format '{{.Id}}' %s:1.0.0",
                                 "dbops-molecule-" + checks.SCENARIO)
    assert image_id == previous
