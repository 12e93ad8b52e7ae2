"""compose_deploy driving docker-compose v1 (the Python 1.x command) against the real engine.

The example stack runs under ``dbops-v1-*`` project names on fixed ports below the
ephemeral range (no other test uses them) with release images tagged by
tests/helpers/release.py; everything is removed afterwards.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers.ansible import run_module
from tests.helpers.containers import project_containers
from tests.helpers.release import new_release
from tests.helpers.stack import APP_DIR, COMPOSE_FILE, ComposeStack

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

MAIN_PORTS = (28431, 28432)   # nginx, db
AUTO_PORTS = (28433, 28434)


def brief(result: dict) -> str:
    keys = ("msg", "compose_command", "failed_check", "failed_service", "logs", "timeline", "rollback_error",
            "plan")
    return json.dumps({k: result.get(k) for k in keys if k in result}, indent=1)[:4000]


class V1Stack(ComposeStack):
    """The example stack deployed through compose_deploy with compose_command=standalone."""

    def __init__(self, image: str, version: str, ports: tuple[int, int]):
        super().__init__(app_version=version, name="dbops-v1-" + uuid.uuid4().hex[:8])
        self.nginx_port, self.db_port = ports
        self.env.update(NGINX_PORT=str(ports[0]), DB_PORT=str(ports[1]), APP_IMAGE=image)
        self.image = image

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        argv = ["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        proc = subprocess.run(argv, cwd=APP_DIR, env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def args(self, **extra) -> dict:
        args = {"project_src": str(APP_DIR), "files": [COMPOSE_FILE.name], "project_name": self.project,
                "env": dict(self.env), "compose_command": "standalone",
                "health": {"url": self.base_url + "/healthz", "timeout": 120, "interval": 0.5, "settle": 3}}
        args["health"].update(extra.pop("health", {}))
        args.update(extra)
        return args

    def deploy(self, version: str | None = None, *, check: bool = False, diff: bool = False, env=None, **extra):
        if version is not None:
            self.env["APP_VERSION"] = version
        return run_module("compose_deploy", self.args(**extra), check=check, diff=diff, env=env)

    def served_version(self) -> str:
        status, body = self.get("/version")
        assert status == 200, body
        return body["version"]

    def containers(self, client, service: str | None = None):
        return project_containers(client, self.project, service)

    def remove(self, client) -> None:
        """docker-compose down, then whatever of this project is left (only its own objects)."""
        self.compose("--profile", "migration", "down", "-v", "--remove-orphans", "-t", "5", check=False)
        label = {"label": "com.docker.compose.project=%s" % self.project}
        for container in client.containers.list(all=True, filters=label):
            container.remove(force=True)
        for network in client.networks.list(filters=label):
            network.remove()
        for volume in client.volumes.list(filters=label):
            volume.remove(force=True)


@pytest.fixture(scope="module")
def release(docker_client, tmp_path_factory):
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose (v1) is not installed: run scripts/bootstrap (apt-get install docker-compose)")
    rel = new_release(docker_client, tmp_path_factory.mktemp("v1"), app_version="1.0.0")
    rel.build_variant("2.0.0")
    rel.build_variant("3.0.0-crash", "crash")
    yield rel
    rel.remove_images()


@pytest.fixture(scope="module")
def stack(release, docker_client):
    deployed = V1Stack(release.image, "1.0.0", MAIN_PORTS)
    yield deployed
    deployed.remove(docker_client)


def image_id(client, ref: str) -> str:
    return client.images.get(ref).id


def test_check_mode_plans_a_fresh_project(stack, docker_client):
    run = stack.deploy("1.0.0", check=True, diff=True)
    assert run.rc == 0 and not run.result.get("failed"), run.output[-3000:] + brief(run.result)
    assert run.result["compose_command"].startswith("docker-compose 1."), brief(run.result)
    assert run.result["changed"] is True
    assert {p["service"]: p["action"] for p in run.result["plan"]} == {"db": "create", "app": "create",
                                                                        "nginx": "create"}
    assert stack.containers(docker_client) == []


def test_first_deploy_serves_and_second_is_not_changed(stack, docker_client):
    run = stack.deploy("1.0.0")
    assert run.rc == 0 and not run.result.get("failed"), run.output[-3000:] + brief(run.result)
    assert run.result["changed"] is True and run.result["rolled_back"] is False, brief(run.result)
    assert run.result["images"]["app"] == stack.image + ":1.0.0"
    assert stack.served_version() == "1.0.0"
    # v1 made them: PROJECT_SERVICE_N names
    assert sorted(c.name for c in stack.containers(docker_client)) == [
        "%s_%s_1" % (stack.project, s) for s in ("app", "db", "nginx")]
    again = stack.deploy("1.0.0")
    assert again.rc == 0 and not again.result.get("failed"), again.output[-3000:] + brief(again.result)
    assert again.result["changed"] is False, brief(again.result)


@pytest.mark.nightly
def test_upgrade_is_planned_then_released_with_a_backup_tag(stack, docker_client):
    old_id = image_id(docker_client, stack.image + ":1.0.0")
    check = stack.deploy("2.0.0", check=True, diff=True)
    assert check.rc == 0 and not check.result.get("failed"), check.output[-3000:] + brief(check.result)
    plan = {p["service"]: (p["action"], p["strategy"]) for p in check.result["plan"]}
    assert plan == {"db": ("unchanged", "compose"), "app": ("recreate", "surge"), "nginx": ("unchanged", "compose")}
    assert "app: %s:2.0.0" % stack.image in check.result["diff"]["after"]
    assert stack.served_version() == "1.0.0"

    run = stack.deploy("2.0.0")
    assert run.rc == 0 and not run.result.get("failed"), run.output[-3000:] + brief(run.result)
    assert run.result["changed"] is True and run.result["rolled_back"] is False, brief(run.result)
    assert stack.served_version() == "2.0.0"
    backup = "%s:dbops-rollback-%s.1.0.0" % (stack.image, run.result["project"])
    assert run.result["backups"] == [backup]
    assert image_id(docker_client, backup) == old_id == image_id(docker_client, stack.image + ":1.0.0")
    assert [c.status for c in stack.containers(docker_client, "app")] == ["running"]
    assert stack.deploy("2.0.0").result["changed"] is False


@pytest.mark.nightly
def test_manual_rollback_redeploys_the_backup(stack, docker_client):
    good_2 = image_id(docker_client, stack.image + ":2.0.0")
    run = stack.deploy("2.0.0", rollback=True)
    assert run.rc == 0 and not run.result.get("failed"), run.output[-3000:] + brief(run.result)
    backup = "%s:dbops-rollback-%s.1.0.0" % (stack.image, run.result["project"])
    assert run.result["changed"] is True and run.result["restored_images"] == [backup]
    assert stack.served_version() == "1.0.0"
    assert image_id(docker_client, stack.image + ":2.0.0") == good_2     # the release tag never moves
    assert run.result["images"]["app"] == stack.image + ":1.0.0"


@pytest.mark.nightly
def test_crashing_release_is_rolled_back(stack, docker_client):
    crash_id = image_id(docker_client, stack.image + ":3.0.0-crash")
    running_id = image_id(docker_client, stack.image + ":1.0.0")
    # In place (no surge): docker-compose up recreates the app with the crashing release, whose
    # gunicorn workers die on import, so it never turns healthy; the backup tag brings back the
    # release that ran before (release 1, after the manual rollback above).
    run = stack.deploy("3.0.0-crash", zero_downtime=False, health={"timeout": 25})
    result = run.result
    assert result["failed"] is True and result["rolled_back"] is True, run.output[-3000:] + brief(result)
    assert result["failed_check"] in ("container", "exited") and result["failed_service"] == "app", brief(result)
    assert any("APP_FAULT=crash" in line for line in result["logs"]), brief(result)
    assert "rollback_error" not in result, brief(result)
    backup = "%s:dbops-rollback-%s.1.0.0" % (stack.image, result["project"])
    assert result["restored_images"] == [backup]
    assert stack.served_version() == "1.0.0"
    # the failed release keeps its own tag; the backup holds what ran before it
    assert image_id(docker_client, stack.image + ":3.0.0-crash") == crash_id
    assert image_id(docker_client, backup) == running_id
    back = stack.deploy("2.0.0", zero_downtime=False)
    assert not back.result.get("failed") and back.result["changed"] is True, brief(back.result)
    assert stack.served_version() == "2.0.0"


def test_run_migration_profile_returns_exit_code_and_logs(stack):
    run = run_module("compose_deploy", stack.args(run="migration"))
    assert run.rc == 0 and not run.result.get("failed"), run.output[-3000:] + brief(run.result)
    assert run.result["rc"] == 0 and run.result["changed"] is True
    assert any("Running upgrade" in line for line in run.result["run"]["logs"]), run.result["run"]
    assert stack.get("/healthz")[1]["revision"] == "0005"
    failing = run_module("compose_deploy", stack.args(run="migration", run_command=["alembic", "upgrade", "nope"]))
    assert failing.result["failed"] is True and failing.result["rc"] not in (0, None), brief(failing.result)
    assert "exited with" in failing.result["msg"]


@pytest.mark.nightly
def test_restarted_waits_for_health(stack):
    run = stack.deploy(state="restarted", services=["app"])
    assert run.rc == 0 and not run.result.get("failed"), run.output[-3000:] + brief(run.result)
    assert run.result["changed"] is True
    assert stack.served_version() == "2.0.0"


def test_absent_removes_the_stack_and_is_idempotent(stack, docker_client):
    check = stack.deploy(state="absent", check=True)
    assert check.result["changed"] is True and stack.containers(docker_client), brief(check.result)
    run = stack.deploy(state="absent")
    assert not run.result.get("failed") and run.result["changed"] is True, brief(run.result)
    assert {"container", "network"} <= {a["what"] for a in run.result["actions"]}, brief(run.result)
    assert stack.containers(docker_client) == []
    assert docker_client.networks.list(filters={"label": "com.docker.compose.project=%s" % stack.project}) == []
    again = stack.deploy(state="absent")
    assert not again.result.get("failed") and again.result["changed"] is False, brief(again.result)


@pytest.fixture
def no_compose_plugin(tmp_path):
    """A PATH whose `docker` knows no `compose` subcommand (the v2 plugin is not installed)."""
    real = shutil.which("docker")
    assert real, "docker CLI missing"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "docker"
    wrapper.write_text("#!/bin/sh\nif [ \"$1\" = compose ]; then\n"
                       "  echo \"docker: 'compose' is not a docker command.\" >&2\n  exit 1\nfi\n"
                       "exec %s \"$@\"\n" % real)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {"PATH": path}


def test_auto_falls_back_to_v1_without_the_plugin(release, docker_client, no_compose_plugin):
    stack = V1Stack(release.image, "1.0.0", AUTO_PORTS)
    try:
        run = stack.deploy(check=True, compose_command="auto", env=no_compose_plugin)
        assert run.rc == 0 and not run.result.get("failed"), run.output[-3000:] + brief(run.result)
        assert run.result["compose_command"].startswith("docker-compose 1."), brief(run.result)
        assert run.result["changed"] is True
        assert {p["action"] for p in run.result["plan"]} == {"create"}
        plugin_only = stack.deploy(check=True, compose_command="plugin", env=no_compose_plugin)
        assert plugin_only.result["failed"] is True
        assert "docker compose v2 is not available" in plugin_only.result["msg"]
        assert "compose_command=standalone" in plugin_only.result["msg"]
        policy = stack.deploy(check=True, pull="policy")
        assert policy.result["failed"] is True and "pull_policy" in policy.result["msg"], brief(policy.result)
        assert stack.containers(docker_client) == []
    finally:
        stack.remove(docker_client)


@pytest.mark.nightly
def test_deploy_playbook_runs_end_to_end_on_docker_compose_v1(docker_client, tmp_path):
    """deploy.yml with dbops_compose_command=standalone: the database, the migration (compose
    executor) and the release all go through docker-compose v1."""
    from tests.helpers.release import compose_ps
    rel = new_release(docker_client, tmp_path / "deploy")
    try:
        run = rel.deploy(risk="auto", dbops_compose_command="standalone")
        assert run.rc == 0, run.output[-4000:] + compose_ps(rel)
        assert rel.revision() == "0005"
        summary = rel.reports()[-1]
        assert summary["revisions_applied"] == ["0001", "0002", "0003", "0004", "0005"], summary
        names = sorted(c.name for c in docker_client.containers.list(
            all=True, filters={"label": "com.docker.compose.project=%s" % rel.project}))
        # v1 names containers PROJECT_SERVICE_N (v2 would use dashes); the migration's run was removed
        assert names == ["%s_%s_1" % (rel.project, s) for s in ("app", "db", "nginx")], names

        stop = rel.play("emergency_stop", {"dbops_compose_command": "standalone"})
        assert stop.rc == 0, stop.output[-4000:] + compose_ps(rel)
        assert "Application: stopped (%s_app_1)" % rel.project in stop.output
        assert docker_client.containers.get("%s_app_1" % rel.project).status == "exited"
        [folder] = list(rel.report_dir.glob("emergency-*"))
        assert "db_1" in (folder / "compose-logs.txt").read_text()
        assert json.loads((folder / "alembic_version.json").read_text()) == [{"version_num": "0005"}]
    finally:
        rel.close()
