"""Faults injected into compose_deploy releases, and bad input, against the real engine.

One example stack serves release 1; every faulty release must be rolled back by itself
while release 1 keeps serving, and bad input must fail before anything changes.
"""
from __future__ import annotations

import shutil
import socket
import time

import pytest

from tests.helpers.ansible import run_module
from tests.helpers.stack import APP_DIR
from tests.integration.test_compose_deploy import DeployStack, assert_no_request_dropped, brief
from bench.deploy.probe import Prober, summarize

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HEALTH_TIMEOUT = 30


@pytest.fixture(scope="module")
def stack(releases):
    deployed = DeployStack(releases, "1")
    run = deployed.deploy("1")
    assert not run.result.get("failed"), brief(run.result)
    yield deployed
    deployed.down()


def faulty_release(stack, releases, fault: str, **health):
    releases.build(fault, "9.9.9-" + fault, fault)
    started = time.monotonic()
    with Prober(stack.base_url + "/version", rate=20, timeout=5.0) as prober:
        run = stack.deploy(fault, health={"timeout": HEALTH_TIMEOUT, **health})
    elapsed = time.monotonic() - started
    stack.env["APP_VERSION"] = "1"
    return run.result, summarize(prober.samples), elapsed


def assert_rolled_back(stack, result, summary):
    assert result["failed"] is True and result["rolled_back"] is True, brief(result)
    assert result["failed_service"] == "app", brief(result)
    assert stack.served_version() == "1.0.0"
    assert summary["last_version"] == "1.0.0", summary
    assert_no_request_dropped(summary)


@pytest.mark.fault("release crashes on start", holds="rolled back by itself; release 1 serves; no request dropped; "
                   "the crash is in the returned logs")
def test_release_that_crashes_on_start(stack, releases):
    result, summary, _ = faulty_release(stack, releases, "crash")
    assert_rolled_back(stack, result, summary)
    # exited, or (with `restart: unless-stopped`) a crash loop that never turns healthy
    assert result["failed_check"] in ("exited", "container"), brief(result)
    assert any("APP_FAULT=crash" in line for line in result["logs"]), result["logs"]


@pytest.mark.fault("release never becomes healthy", holds="rolled back within health timeout + 10 s; release 1 "
                   "serves; no request dropped")
@pytest.mark.nightly
def test_release_that_never_becomes_healthy(stack, releases):
    result, summary, elapsed = faulty_release(stack, releases, "unhealthy")
    assert_rolled_back(stack, result, summary)
    assert result["failed_check"] == "container"
    rolled = next(step["t"] for step in result["timeline"] if step["step"].startswith("removed new"))
    surge = next(step["t"] for step in result["timeline"] if step["step"].startswith("surge"))
    assert rolled - surge <= HEALTH_TIMEOUT + 10, result["timeline"]


@pytest.mark.fault("release crashes 5 s after start", holds="caught while the old release still serves; rolled "
                   "back; no request dropped")
@pytest.mark.nightly
def test_release_that_crashes_after_five_seconds(stack, releases):
    result, summary, _ = faulty_release(stack, releases, "crash_after", settle=8)
    assert_rolled_back(stack, result, summary)
    # caught while hidden (exited/restarting) or, on a slow machine, by the URL gate after exposure
    assert result["failed_check"] in ("exited", "container", "url"), brief(result)


@pytest.mark.fault("release healthy but its health URL answers 500", holds="health URL gate fails; new container "
                   "removed; release 1 serves")
@pytest.mark.nightly
def test_release_whose_health_url_fails(stack, releases):
    result, summary, _ = faulty_release(stack, releases, "http500")
    assert result["failed"] is True and result["rolled_back"] is True, brief(result)
    assert result["failed_check"] == "url" and "500" in result["msg"]
    assert stack.served_version() == "1.0.0"
    assert summary["last_version"] == "1.0.0"


def _containers(stack, docker_client):
    return sorted(c.name for c in stack.containers(docker_client))


@pytest.mark.fault("unknown service", holds="clear message naming the real services; nothing changed",
                   kind="bad_input")
def test_unknown_service(stack, docker_client):
    before = _containers(stack, docker_client)
    run = run_module("compose_deploy", stack.args(services=["web"]))
    assert run.result["failed"] is True
    assert "unknown service web" in run.result["msg"] and "nginx" in run.result["msg"]
    assert _containers(stack, docker_client) == before


@pytest.mark.fault("compose file that is not valid", holds="clear message with the parse error; nothing changed",
                   kind="bad_input")
def test_bad_compose_file(stack, docker_client, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(APP_DIR / "nginx", project / "nginx")
    (project / "docker-compose.prod.yml").write_text("services:\n  app:\n    image: [unclosed\n")
    before = _containers(stack, docker_client)
    run = run_module("compose_deploy", dict(stack.args(), project_src=str(project)))
    assert run.result["failed"] is True
    assert "not valid" in run.result["msg"] and "docker compose config" in run.result["msg"]
    assert _containers(stack, docker_client) == before


@pytest.mark.fault("host port already in use", holds="fails before anything starts, names the port; no container "
                   "left behind", kind="bad_input")
def test_port_in_use(releases, docker_client):
    fresh = DeployStack(releases, "1")
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", fresh.nginx_port))
    blocker.listen(1)
    try:
        run = fresh.deploy("1")
        assert run.result["failed"] is True
        assert "127.0.0.1:%d" % fresh.nginx_port in run.result["msg"] and "in use" in run.result["msg"]
        assert fresh.containers(docker_client) == []
    finally:
        blocker.close()
        fresh.down()


@pytest.mark.fault("Docker engine not reachable", holds="clear message saying to start the engine; nothing changed",
                   kind="bad_input")
def test_engine_not_reachable(stack, docker_client, tmp_path):
    before = _containers(stack, docker_client)
    run = run_module("compose_deploy", stack.args(), task_env={"DOCKER_HOST": "unix://%s/none.sock" % tmp_path})
    assert run.result["failed"] is True
    assert "Docker engine is not reachable" in run.result["msg"] and "start it" in run.result["msg"]
    assert _containers(stack, docker_client) == before


@pytest.mark.fault("one-off service exits non-zero", holds="task fails with the exit code and the logs; the app "
                   "keeps serving", kind="fault")
def test_one_off_failure_reports_exit_code(stack):
    run = run_module("compose_deploy", stack.args(run="migration", run_command=["python3", "-c",
                                                                                "import sys; print('boom'); sys.exit(7)"]))
    assert run.result["failed"] is True and run.result["rc"] == 7
    assert any("boom" in line for line in run.result["run"]["logs"])
    assert stack.served_version() == "1.0.0"


@pytest.mark.fault("in-place release (zero_downtime false) whose health URL fails",
                   holds="the backup tag redeployed; release 1 serves; every release keeps its own tag")
@pytest.mark.nightly
def test_in_place_release_rolls_back_through_the_backup_tag(stack, releases):
    releases.build("http500", "9.9.9-http500", "http500")
    failed_id, id_1 = releases.image_id("http500"), releases.image_id("1")
    result = stack.deploy("http500", zero_downtime=False, health={"timeout": HEALTH_TIMEOUT}).result
    stack.env["APP_VERSION"] = "1"
    assert result["failed"] is True and result["rolled_back"] is True, brief(result)
    assert result["failed_check"] == "url" and "rollback_error" not in result, brief(result)
    assert result["restored_images"] == ["%s:dbops-rollback-%s.1" % (releases.repo, stack.project)]
    assert stack.served_version() == "1.0.0"
    assert releases.image_id("http500") == failed_id and releases.image_id("1") == id_1
