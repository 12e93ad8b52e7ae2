import contextlib
import os
import subprocess

import pytest

from tests.helpers import postgres as pgh
from tests.helpers.containers import labelled_containers


def test_private_cluster_answers(pg_db):
    version = pg_db.scalar("SELECT current_setting('server_version_num')::int")
    requested = pgh.requested_version()
    if requested is None:
        assert version >= 150000
    else:
        assert version // 10000 == requested
        assert pg_db.server.container
    assert pg_db.scalar("SELECT current_database()") == pg_db.name


def test_a_private_server_restarts_with_its_data_and_settings():
    """Fault tests restart a server of their own; a container keeps its data and published port."""
    if os.environ.get("DBOPS_TEST_PG_URL"):
        pytest.skip("an existing server (DBOPS_TEST_PG_URL) is not the tests' to restart")
    with pgh.private_cluster() as server:
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)")
            cur.execute("ALTER SYSTEM SET max_locks_per_transaction = 20")
        server.restart()
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM kept")
            assert cur.fetchall() == [(7,)]
            cur.execute("SELECT current_setting('fsync'), current_setting('max_locks_per_transaction')")
            assert cur.fetchone() == ("off", "20")


def test_client_options_follow_the_host_client(pg_server):
    cannot = pgh.host_client_cannot_dump(pg_server)
    if pg_server.version_num // 10000 <= pgh.host_client_major():
        assert cannot == "" and pgh.client_options(pg_server) == {}
    else:
        assert "refuses a PostgreSQL" in cannot
        assert pgh.client_options(pg_server) == {"container": pg_server.container}


@pytest.mark.docker
def test_servers_of_killed_runs_are_removed_by_the_next_one(docker_client, tmp_path):
    """A run killed before its teardown leaves its server container; the next container server removes it."""
    image = pgh.server_image(pgh.requested_version() or 15)
    try:
        docker_client.images.get(image)
    except Exception:
        pytest.skip("image %s not built; run `make images`" % image)
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = docker_client.containers.create(image, labels={
        "dbops.test": "pg-server", "dbops.test.pid": str(dead.pid), "dbops.test.started": "0"})
    alive = docker_client.containers.create(image, labels={
        "dbops.test": "pg-server", "dbops.test.pid": str(os.getpid()),
        "dbops.test.started": pgh._process_started(os.getpid())})
    try:
        pgh._remove_orphaned_servers()
        ids = {c.id for c in labelled_containers(docker_client, "dbops.test=pg-server")}
        assert orphan.id not in ids and alive.id in ids
    finally:
        for container in (orphan, alive):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
