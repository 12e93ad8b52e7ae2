"""Shared fixtures: a real PostgreSQL cluster, per-test databases, Docker availability."""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.ansible import COLLECTIONS_PATH, ensure_collection_link  # noqa: E402
from tests.helpers import postgres as pg  # noqa: E402

ensure_collection_link()
sys.path.insert(0, str(COLLECTIONS_PATH))

EXAMPLE_APP = REPO_ROOT / "examples" / "auto_trader"

# Fault-injection outcomes -> docs/RELIABILITY.md (loaded here so a distributed run's controller has it).
pytest_plugins = ["tests.helpers.reliability_report", "tests.helpers.module_times"]


NIGHTLY = os.environ.get("DBOPS_NIGHTLY") == "1"
# Set in each worker of a parallel run (pytest -n).
PARALLEL = bool(os.environ.get("PYTEST_XDIST_WORKER"))

# The longest modules start first, so that a parallel run (one module per worker at a time,
# --dist loadfile --no-loadscope-reorder) does not end with one worker alone on a long story.
LONGEST_FIRST = (
    "tests/integration/test_playbooks_deploy.py",
    "tests/integration/test_ledger.py",
    "tests/reliability/test_deploy_playbook.py",
    "tests/molecule/test_scenarios.py",
    "tests/integration/test_compose_deploy.py",
    "tests/integration/test_rehearse_gate.py",
    "tests/integration/test_rehearse.py",
    "tests/reliability/test_interrupt.py",
    "tests/integration/test_alembic_migrate.py",
    "tests/reliability/test_backup_faults.py",
    "tests/integration/test_compose_deploy_retire.py",
    "tests/integration/test_alembic_migrate_safety.py",
    "tests/integration/test_compose_deploy_v1.py",
    "tests/integration/test_compose_deploy_proxy.py",
)


def pytest_collection_modifyitems(config, items):
    """Tests under tests/unit need nothing; integration tests need PostgreSQL and maybe Docker.
    Tests marked ``nightly`` (long end-to-end stories) run only with DBOPS_NIGHTLY=1 (make test-nightly);
    tests marked ``exclusive`` never run in a parallel run, where they would stop the others' containers."""
    skip_nightly = pytest.mark.skip(reason="long end-to-end story: runs with DBOPS_NIGHTLY=1 (make test-nightly)")
    skip_exclusive = pytest.mark.skip(reason="stops the Docker engine under the other tests: runs alone "
                                             "(make test-exclusive)")
    for item in items:
        path = str(item.fspath)
        if "/tests/unit/" in path:
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("nightly") and not NIGHTLY:
            item.add_marker(skip_nightly)
        if item.get_closest_marker("exclusive") and PARALLEL:
            item.add_marker(skip_exclusive)
    items.sort(key=_start_order)


def _start_order(item) -> int:
    module = item.nodeid.split("::", 1)[0]
    return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server of the tests' own, on a free loopback port: the host's PostgreSQL 15, or
    with DBOPS_TEST_PG_VERSION=13|15|17 a container of dbops/postgres:VERSION (make test-pg-matrix)."""
    with pg.private_cluster() as server:
        yield server


@pytest.fixture
def pg_db(pg_server):
    """A fresh, empty database for one test; dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    pg.create_database(pg_server, name)
    yield DbHandle(pg_server, name)
    pg.drop_database(pg_server, name)


class DbHandle:
    """One test database: URLs, login options and connections."""

    def __init__(self, server: pg.PgServer, name: str):
        self.server = server
        self.name = name

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    @property
    def sqlalchemy_url(self) -> str:
        return self.server.url(self.name, driver="psycopg2")

    def login_args(self) -> dict:
        return self.server.login_args(self.name)

    def connect(self, autocommit: bool = True):
        return self.server.connect(self.name, autocommit=autocommit)

    def execute(self, sql: str, params=None):
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def scalar(self, sql: str, params=None):
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None


def docker_available() -> bool:
    try:
        import docker
        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_client():
    """The real Docker engine; tests marked ``docker`` fail loudly in CI when it is missing."""
    import docker
    if not docker_available():
        if os.environ.get("CI"):
            pytest.fail("Docker engine not reachable: .ci/run must start it (make bootstrap)")
        pytest.skip("Docker engine not reachable; run `make bootstrap`")
    return docker.from_env()


@pytest.fixture(scope="module")
def releases(docker_client):
    """Test images of the example app under a private repository name; tag ``1`` is the
    base release, other tags are built on demand with ``releases.build``."""
    from tests.integration.test_compose_deploy import make_releases
    rel = make_releases(docker_client)
    rel.tag_base("1")
    yield rel
    rel.cleanup()
