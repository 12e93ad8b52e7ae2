"""The deploy role: migrate (one-off service), release, report; a broken release fails the play rolled back."""
from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers.ansible import run_playbook
from tests.helpers.stack import APP_DIR
from tests.integration.test_compose_deploy import DeployStack

# deploy.yml drives this role in every playbook story; the role on its own runs nightly.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.nightly]


def play(stack: DeployStack, tmp_path, version: str, **extra):
    report = tmp_path / ("release-%s.json" % version)
    env = {k: v for k, v in stack.env.items() if k != "APP_VERSION"}
    playbook = tmp_path / ("deploy-%s.yml" % version)
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"name": "release", "block": [{"ansible.builtin.include_role": {"name": "dbops.migrations.deploy"},
                                           "vars": {"deploy_project_src": str(APP_DIR),
                                                    "deploy_files": list(stack.files),
                                                    "deploy_project_name": stack.project,
                                                    "deploy_env": env, "deploy_app_version": version,
                                                    "deploy_health_url": stack.base_url + "/healthz",
                                                    "deploy_health_timeout": 60, "deploy_health_settle": 3,
                                                    **extra}}],
             "always": [{"ansible.builtin.copy": {"content": "{{ deploy_release | to_json }}", "dest": str(report),
                                                  "mode": "0600"}}]},
        ]}], sort_keys=False))
    run = run_playbook(playbook)
    return run, (json.loads(report.read_text()) if report.exists() else {})


def test_role_migrates_releases_and_reports(releases, tmp_path):
    stack = DeployStack(releases, "1")
    try:
        run, release = play(stack, tmp_path, "1", deploy_skip_migrate=False)
        assert run.rc == 0, run.output[-3000:]
        assert release["failed"] is False and release["changed"] is True
        assert str(release["migration_rc"]) == "0"
        assert release["images"]["app"] == releases.repo + ":1"
        assert stack.get("/healthz")[1]["revision"] == "0005"

        releases.build("never", "9.0.0-unhealthy", "unhealthy")
        run, release = play(stack, tmp_path, "never", deploy_health_timeout=25)
        assert run.rc != 0
        assert release["failed"] is True and release["rolled_back"] is True
        assert release["failed_check"] == "container"
        assert "FAILED and rolled back" in run.output
        assert stack.served_version() == "1.0.0"
    finally:
        stack.down()
