"""pg_backup with pg_dump/pg_restore inside the database container (docker exec, docker cp)."""
from __future__ import annotations

import json
import os
import stat
import time
import uuid

import psycopg2
import pytest

from tests.helpers import postgres as pgh
from tests.helpers.ansible import run_module

pytestmark = [pytest.mark.integration, pytest.mark.docker]
# The database container of the version under test (make test-pg-matrix), 15 by default.
IMAGE = pgh.server_image(pgh.requested_version() or 15)


@pytest.fixture
def db_container(docker_client):
    try:
        docker_client.images.get(IMAGE)
    except Exception:
        pytest.skip("image %s not built; run `make images`" % IMAGE)
    port = pgh.free_port()
    container = docker_client.containers.run(
        IMAGE, name="dbops-backup-" + uuid.uuid4().hex[:8], detach=True,
        environment={"POSTGRES_USER": "dbops", "POSTGRES_PASSWORD": pgh.TEST_PASSWORD, "POSTGRES_DB": "app",
                     "POSTGRES_INITDB_ARGS": "--no-sync"},
        ports={"5432/tcp": ("127.0.0.1", port)})
    server = pgh.PgServer(host="127.0.0.1", port=port, user="dbops", password=pgh.TEST_PASSWORD)
    try:
        deadline = time.monotonic() + 120  # initdb on a busy 2-core machine
        while True:
            try:
                server.connect("app").close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield container, server
    finally:
        container.remove(force=True)


def test_dump_verify_and_restore_inside_the_container(db_container, tmp_path):
    container, server = db_container
    with server.connect("app") as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE a (id serial PRIMARY KEY, v text); INSERT INTO a (v) SELECT md5(g::text) FROM generate_series(1, 5000) g;"
                    "CREATE TABLE b (a_id int REFERENCES a(id)); INSERT INTO b SELECT generate_series(1, 100);"
                    "CREATE TABLE alembic_version (version_num text); INSERT INTO alembic_version VALUES ('0005')")
    args = dict(server.login_args("app"), dest=str(tmp_path / "b"), container=container.name, verify="restore",
                format="directory", jobs=2)
    made = run_module("pg_backup", args)
    assert not made.result.get("failed"), made.output[-3000:]
    manifest = json.loads(open(made.result["manifest_path"]).read())
    assert manifest["tables"] == {"public.a": 5000, "public.alembic_version": 1, "public.b": 100}
    assert manifest["alembic_revision"] == "0005"
    assert manifest["source"]["executor"] == "container " + container.name
    assert stat.S_IMODE(os.stat(made.result["path"]).st_mode) == 0o700
    assert pgh.TEST_PASSWORD not in made.output + json.dumps(made.result)
    # nothing left inside the container
    assert container.exec_run(["sh", "-c", "ls -d /tmp/dbops-pg-backup-* 2>/dev/null | wc -l"]).output.strip() == b"0"

    restored = run_module("pg_backup", dict(server.login_args("app"), state="restored", container=container.name,
                                            src=made.result["manifest_path"], target_db="app_copy", jobs=2))
    assert not restored.result.get("failed"), restored.output[-3000:]
    with server.connect("app_copy") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM a")
        copy = cur.fetchone()
    with server.connect("app") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM a")
        assert cur.fetchone() == copy
