"""The example stack comes up healthy from the local images and serves through nginx."""
from __future__ import annotations

import pytest

from tests.helpers.stack import ComposeStack

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def stack(docker_client):
    stack = ComposeStack()
    yield stack
    stack.down()


def test_stack_comes_up_migrates_and_serves(stack):
    stack.up()
    status, body = stack.get("/healthz")
    assert status == 200 and body["database"] == "ok" and body["revision"] is None
    stack.migrate()
    body = stack.wait_for("/healthz")
    assert body["revision"] == "0005" and body["version"] == "1.0.0"
    status, created = stack.get("/api/users")
    assert status == 200 and created == {"users": []}
    status, stats = stack.get("/api/stats")
    assert status == 200 and stats == {"users": 0, "accounts": 0, "orders": 0}


def test_migration_profile_reports_failure_exit_code(stack):
    stack.up("db")
    proc = stack.compose("--profile", "migration", "run", "--rm", "migration", "alembic", "upgrade", "nope",
                         check=False)
    assert proc.returncode != 0
    assert "nope" in proc.stderr + proc.stdout
