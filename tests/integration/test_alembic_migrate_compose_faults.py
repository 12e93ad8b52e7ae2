"""alembic_migrate with executor=compose when things go wrong: a missing service or image gets its own
lead, and killing ansible-playbook removes the one-off container so PostgreSQL rolls back."""
from __future__ import annotations

import os
import signal
import subprocess
import uuid

import pytest
import yaml

from tests.helpers.ansible import failure_message, run_module
from tests.helpers.postgres import TEST_PASSWORD
from tests.helpers.migrate_project import (
    SLEEPY_HISTORY, alembic, assert_stopped_and_rolled_back, kill_session, make_project, revision_of,
    start_playbook, wait_for_sleeping_migration)

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def compose_project(tmp_path, docker_client):
    """A compose project whose one-off `migrate` service (profile `tools`) runs the example app's image
    with a test Alembic project mounted, on the host network (it reaches the test PostgreSQL)."""
    images = {tag for image in docker_client.images.list() for tag in image.tags}
    if "auto_trader:latest" not in images:
        pytest.skip("local images missing: run `make images`")
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump({"services": {"migrate": {
        "image": "${APP_IMAGE:-auto_trader}:${IMAGE_TAG:-latest}", "profiles": ["tools"],
        "network_mode": "host", "user": "0", "volumes": ["./proj:/proj:ro"]}}}))
    name = "dbopsmf" + uuid.uuid4().hex[:8]
    yield {"dir": tmp_path, "name": name}
    subprocess.run(["docker", "compose", "-p", name, "down", "--remove-orphans"], cwd=tmp_path,
                   capture_output=True, timeout=120)


def compose_args(db, compose_project, **extra) -> dict:
    args = {"executor": "compose", "project_src": str(compose_project["dir"]),
            "compose_files": ["docker-compose.yml"], "compose_project_name": compose_project["name"],
            "compose_service": "migrate", "compose_profiles": ["tools"], "config": "/proj/alembic.ini",
            "db_url": db.url, "lock_timeout": "5s", "retries": 1, "retry_delay": 0.2, "env": {}}
    args.update(extra)
    return args


def containers(prefix: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", "name=" + prefix, "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [line for line in out.split() if line.startswith(prefix)]


@pytest.mark.fault("alembic_migrate: compose service name or image tag wrong", kind="bad_input",
                   holds="the message names the missing service / image and the variable to set, not alembic.ini")
def test_missing_service_and_image_get_their_own_lead(pg_db, compose_project):
    make_project(compose_project["dir"] / "proj")
    missing_service = run_module("alembic_migrate", compose_args(pg_db, compose_project, compose_service="migration"))
    message = failure_message(missing_service)
    assert "compose has no service migration" in message and "dbops_compose_migration_service" in message
    assert "alembic.ini" not in message

    missing_image = run_module("alembic_migrate", compose_args(pg_db, compose_project,
                                                               env={"IMAGE_TAG": "9.9.9-missing"}))
    message = failure_message(missing_image)
    # The tag came through `env` (no_log: it may hold secrets), so Ansible masks its value in the message.
    assert "the image auto_trader:" in message and "of compose service migrate" in message
    assert "tag variable" in message
    assert "could not read the migration scripts" not in message
    assert revision_of(pg_db) is None
    assert TEST_PASSWORD not in missing_image.output + missing_service.output


@pytest.mark.fault("alembic_migrate: SIGKILL of ansible-playbook while a revision runs (compose executor)",
                   kind="interrupt", holds="the named one-off container is removed within seconds, the transaction "
                   "rolled back, the migration lock released, the revision unchanged")
def test_killing_ansible_playbook_removes_the_migration_container(pg_db, compose_project):
    config = make_project(compose_project["dir"] / "proj", SLEEPY_HISTORY)
    alembic(pg_db, config, "upgrade", "0001")
    os.chmod(compose_project["dir"], 0o755)
    proc = start_playbook(compose_project["dir"] / "play", compose_args(pg_db, compose_project))
    prefix = "dbops-migrate-" + compose_project["name"]
    try:
        wait_for_sleeping_migration(pg_db, proc)
        assert len(containers(prefix)) == 1
        os.kill(proc.pid, signal.SIGKILL)
        took = assert_stopped_and_rolled_back(pg_db, lambda: bool(containers(prefix)), budget=20)
        assert took < 15
    finally:
        kill_session(proc)
        for name in containers(prefix):
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
