"""The deploy role at -vvv: the database password in deploy_env is printed by no task, and
the output names the compose project in clear even when it equals the database user."""
from __future__ import annotations

import uuid

import pytest
import yaml

from tests.helpers.ansible import run_playbook
from tests.helpers.secrets import find_secret
from tests.helpers.stack import APP_DIR, COMPOSE_FILE
from tests.helpers.postgres import free_port

pytestmark = [pytest.mark.docker]


def role_play(tmp_path, project: str, password: str, **extra) -> str:
    env = {"POSTGRES_PASSWORD": password, "POSTGRES_USER": project, "APP_IMAGE": "auto_trader",
           "NGINX_PORT": str(free_port()), "DB_PORT": str(free_port())}
    playbook = tmp_path / "deploy.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "dbops.migrations.deploy"},
                   "vars": {"deploy_project_src": str(APP_DIR), "deploy_files": [COMPOSE_FILE.name],
                            "deploy_project_name": project, "deploy_env": env, "deploy_app_version": "1.0.0",
                            "deploy_skip_migrate": False, **extra}}]}], sort_keys=False))
    return str(playbook)


@pytest.mark.fault("deploy role at -vvv with the password in deploy_env", holds="password in no output line; the "
                   "compose project shown unmasked", kind="secret")
@pytest.mark.parametrize("extra", [{}, {"deploy_rollback": True}], ids=["release", "rollback"])
def test_deploy_role_never_prints_the_password(tmp_path, extra):
    project = "t" + uuid.uuid4().hex[:10]
    password = "pw-" + uuid.uuid4().hex
    run = run_playbook(role_play(tmp_path, project, password, **extra), check=True,
                       env={"ANSIBLE_VERBOSITY": "3"})
    assert "Build the compose arguments" in run.output, run.output[-3000:]
    assert not find_secret(password, run.output), [line for line in run.output.splitlines() if password in line][:5]
    # the project equals the database user: it must still be readable
    assert "compose project %s" % project in run.output, run.output[-3000:]


def test_without_the_toggle_only_the_variables_task_shows_it(tmp_path):
    """The scan finds a leak when there is one: deploy_no_log=false shows the built variables,
    and no other task (compose_deploy returns no env) prints the password."""
    password = "pw-" + uuid.uuid4().hex
    run = run_playbook(role_play(tmp_path, "t" + uuid.uuid4().hex[:10], password, deploy_no_log=False), check=True,
                       env={"ANSIBLE_VERBOSITY": "3"})
    leaking, task = set(), None
    for line in run.output.splitlines():
        task = line if line.startswith("TASK [") else task
        if password in line:
            leaking.add(task.split(":", 1)[-1].split("]", 1)[0].strip())
    assert leaking == {"Build the compose arguments"}, leaking
