"""alembic_migrate with executor=compose: alembic runs in the app image's `migration` service,
through the docker compose v2 plugin and through docker-compose v1."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from tests.helpers.ansible import run_module
from tests.helpers.postgres import free_port

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

APP = Path(__file__).resolve().parents[2] / "examples" / "auto_trader"
PASSWORD = "Compose-pw-" + uuid.uuid4().hex[:8]


# compose_command -> the CLI the database is started with (the same one the migration runs on)
COMPOSE_CLIS = {"plugin": ["docker", "compose"], "standalone": ["docker-compose"]}


@pytest.fixture(params=sorted(COMPOSE_CLIS))
def compose_db(request, docker_client):
    if not (APP / "docker-compose.prod.yml").exists():
        pytest.skip("example application not present")
    images = {tag for image in docker_client.images.list() for tag in image.tags}
    if "auto_trader:latest" not in images or "dbops/postgres:15" not in images:
        pytest.skip("local images missing: run `make images`")
    if request.param == "standalone" and not shutil.which("docker-compose"):
        pytest.fail("docker-compose (v1) is not installed: run scripts/bootstrap (apt-get install docker-compose)")
    project = "dbopsmig" + uuid.uuid4().hex[:8]
    port = free_port()
    env = {"POSTGRES_PASSWORD": PASSWORD, "DB_PORT": str(port), "APP_VERSION": "latest"}
    base = COMPOSE_CLIS[request.param] + ["-f", "docker-compose.prod.yml", "-p", project]
    full_env = dict(os.environ, **env)
    subprocess.run(base + ["up", "-d", "db"], cwd=APP, env=full_env, check=True,
                   capture_output=True, timeout=180)
    url = "postgresql://auto_trader:%s@127.0.0.1:%d/auto_trader" % (PASSWORD, port)
    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg2.connect(url).close()
            break
        except psycopg2.OperationalError:
            assert time.monotonic() < deadline, "database container never accepted connections"
            time.sleep(0.5)
    try:
        yield {"project": project, "env": env, "url": url, "compose_command": request.param}
    finally:
        subprocess.run(base + ["--profile", "migration", "down", "-v", "--remove-orphans"], cwd=APP, env=full_env,
                       capture_output=True, timeout=180)


def scalar(url, sql):
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return row[0] if row else None


def test_compose_executor_upgrades_and_downgrades(compose_db):
    args = {
        "executor": "compose", "project_src": str(APP), "compose_files": ["docker-compose.prod.yml"],
        "compose_project_name": compose_db["project"], "env": compose_db["env"],
        "db_url": compose_db["url"],
        "executor_db_url": "postgresql://auto_trader:%s@db:5432/auto_trader" % PASSWORD,
        "lock_timeout": "2s", "retries": 1, "target": "0002", "compose_command": compose_db["compose_command"],
    }
    check = run_module("alembic_migrate", args, check=True)
    assert not check.result.get("failed"), check.output
    assert [p["revision"] for p in check.result["pending"]] == ["0001", "0002"]
    assert "CREATE TABLE trades" in check.result["pending"][1]["sql"]

    run = run_module("alembic_migrate", args)
    assert not run.result.get("failed"), run.output
    assert run.result["to_revision"] == "0002"
    assert [a["revision"] for a in run.result["applied"]] == ["0001", "0002"]
    assert scalar(compose_db["url"], "SELECT version_num FROM alembic_version") == "0002"
    # The timeouts reached the container's sessions through PGOPTIONS: the monitor saw them by name.
    assert run.result["blocked"]["samples"] > 0

    down = run_module("alembic_migrate", dict(args, target="-1", allow_downgrade=True))
    assert not down.result.get("failed"), down.output
    assert scalar(compose_db["url"], "SELECT version_num FROM alembic_version") == "0001"
    assert [r["revision"] for r in down.result["reverted"]] == ["0002"] and down.result["applied"] == []
    for result in (check, run, down):
        assert PASSWORD not in result.output and PASSWORD not in json.dumps(result.result)
