"""pg_backup across PostgreSQL versions: which client may dump and restore which server and archive.

pg_dump dumps servers of its own major version or older; pg_restore reads archives of its own
pg_dump or older; lz4 and zstd need 16 or newer. Each test needs a given relation between the
host's client (15 on Debian 12) and the server under test (make test-pg-matrix runs 13 and 17),
and says so when it does not hold.
"""
from __future__ import annotations

import contextlib
import json

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.backup import catalog
from tests.helpers import postgres as pgh
from tests.helpers.ansible import failure_message, run_module

pytestmark = pytest.mark.integration

DATA = ("CREATE TABLE accounts (id int PRIMARY KEY, name text);"
        "INSERT INTO accounts SELECT g, 'a' || g FROM generate_series(1, 500) g;"
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); INSERT INTO alembic_version VALUES ('0007')")


def majors(server):
    return pgh.host_client_major(), server.version_num // 10000


@pytest.fixture
def data_db(pg_db):
    pg_db.execute(DATA)
    return pg_db


def databases(server) -> set:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return {r[0] for r in cur.fetchall()}


def test_the_host_client_dumps_and_restores_an_older_or_equal_server(data_db, tmp_path):
    client, server = majors(data_db.server)
    if server > client:
        pytest.skip("PostgreSQL %d is newer than the host's pg_dump %d" % (server, client))
    made = run_module("pg_backup", dict(data_db.login_args(), dest=str(tmp_path), verify="restore"))
    assert not made.result.get("failed"), made.output[-3000:]
    manifest = made.result["manifest"]
    assert manifest["server_version"].startswith("%d." % server)
    assert manifest["tools"]["pg_dump"].startswith("pg_dump (PostgreSQL) %d." % client)
    assert manifest["source"]["executor"] == "this host"
    assert manifest["tables"] == {"public.accounts": 500, "public.alembic_version": 1}
    target = data_db.name + "_copy"
    restored = run_module("pg_backup", dict(data_db.server.login_args(), state="restored",
                                            src=made.result["manifest_path"], target_db=target))
    try:
        assert not restored.result.get("failed"), restored.output[-3000:]
        assert restored.result["restored_tables"]["public.accounts"] == 500
    finally:
        pgh.drop_database(data_db.server, target)


def test_a_server_newer_than_the_host_client_is_refused_before_dumping(data_db, tmp_path):
    client, server = majors(data_db.server)
    if server <= client:
        pytest.skip("the host's pg_dump %d dumps PostgreSQL %d: the refusal shows with a newer server "
                    "(DBOPS_TEST_PG_VERSION=17)" % (client, server))
    dest = tmp_path / "b"
    msg = failure_message(run_module("pg_backup", dict(data_db.login_args(), dest=str(dest))))
    assert "pg_dump %d." % client in msg and "older than the server (PostgreSQL %d." % server in msg, msg
    assert "postgresql-client-%d" % server in msg and "container option" in msg
    assert not dest.exists() or not list(dest.iterdir())


@pytest.fixture
def newer_container_server(data_db):
    """A server whose own container has a client newer than the host's (17 against 15)."""
    client, server = majors(data_db.server)
    if not data_db.server.container or server <= client:
        pytest.skip("needs a server in a container newer than the host's pg_dump %d (DBOPS_TEST_PG_VERSION=17); "
                    "this one is PostgreSQL %d%s" % (client, server, "" if data_db.server.container else " on the host"))
    return data_db


def test_zstd_archive_in_the_servers_container_verified_and_restored(newer_container_server, tmp_path):
    db = newer_container_server
    container = db.server.container
    made = run_module("pg_backup", dict(db.login_args(), dest=str(tmp_path), container=container,
                                        compress_method="zstd", compress=3, verify="restore"))
    assert not made.result.get("failed"), made.output[-3000:]
    manifest = made.result["manifest"]
    assert manifest["compress_method"] == "zstd" and made.result["verified"] is True
    assert manifest["tools"]["pg_dump"].startswith("pg_dump (PostgreSQL) %d." % (db.server.version_num // 10000))
    assert manifest["source"]["executor"] == "container " + container
    target = db.name + "_zstd"
    restored = run_module("pg_backup", dict(db.server.login_args(), state="restored", container=container,
                                            src=made.result["manifest_path"], target_db=target))
    try:
        assert not restored.result.get("failed"), restored.output[-3000:]
        assert restored.result["restored_tables"] == {"public.accounts": 500, "public.alembic_version": 1}
    finally:
        pgh.drop_database(db.server, target)
    assert pgh.TEST_PASSWORD not in made.output + restored.output + json.dumps(manifest)


def test_an_archive_of_a_newer_pg_dump_is_refused_by_the_host_pg_restore(newer_container_server, tmp_path):
    db = newer_container_server
    client, server = majors(db.server)
    made = run_module("pg_backup", dict(db.login_args(), dest=str(tmp_path), container=db.server.container,
                                        verify="none"))
    assert not made.result.get("failed"), made.output[-3000:]
    target = db.name + "_old_restore"
    msg = failure_message(run_module("pg_backup", dict(db.server.login_args(), state="restored",
                                                       src=made.result["manifest_path"], target_db=target)))
    assert "pg_restore %d." % client in msg and "pg_dump %d." % server in msg, msg
    assert "use pg_restore %d or newer" % server in msg and "container" in msg
    assert target not in databases(db.server)


def test_what_a_database_holds_is_read_on_every_version(pg_db):
    """The catalog inventory behind "refuses to restore over a non-empty database": a range type is one
    type on every version (its multirange, PostgreSQL 14+, comes with it; pg_range has no
    rngmultitypid before 14)."""
    pg_db.execute("CREATE TYPE span AS RANGE (subtype = int); CREATE TYPE mood AS ENUM ('ok', 'sad')")
    with contextlib.closing(pg_db.connect()) as conn, conn.cursor() as cur:
        objects = catalog.user_objects(cur)
    assert objects["type"] == (2, ["public.mood", "public.span"])
