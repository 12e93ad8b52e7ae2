"""pg_backup restores that never lose data silently, against a real PostgreSQL: restoring twice,
what "empty" means, database-level state, the replaced database kept aside, non-superuser
owners, large objects, the version table, leftovers of killed runs, manifest-keyed retention."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid

import pytest
from psycopg2 import sql

from tests.helpers import postgres as pgh
from tests.helpers.ansible import failure_message, run_module

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backup_archive
from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import Backup, Executor
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url

pytestmark = pytest.mark.integration

DATA = """
CREATE TABLE accounts (id int PRIMARY KEY, name text);
INSERT INTO accounts SELECT g, 'a' || g FROM generate_series(1, 200) g;
CREATE TABLE notes (id int, body text);
INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 30) g;
SELECT lo_from_bytea(0, 'first large object'), lo_from_bytea(0, 'second');
"""


def runner(argv, env):
    full = dict(os.environ)
    full.update(env)
    proc = subprocess.run(argv, env=full, capture_output=True, text=True, preexec_fn=lambda: os.umask(0o077))
    return proc.returncode, proc.stdout, proc.stderr


def engine(server, url, **extra) -> Backup:
    """The module's engine in this process (real programs, real server)."""
    executor = Executor(runner=runner, which=shutil.which, **pgh.client_options(server))
    return Backup(info=parse_db_url(url), executor=executor, **extra)


def databases(server) -> set:
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return {r[0] for r in cur.fetchall()}


def admin(server, statement, params=None, dbname="postgres"):
    with contextlib.closing(server.connect(dbname)) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else None


@pytest.fixture
def source(pg_db, tmp_path):
    """A database with data and large objects, and a verified backup of it."""
    pg_db.execute(DATA)
    made = engine(pg_db.server, pg_db.url).create(str(tmp_path / "b"), backup_archive.DumpOptions(compress=1), "list", None)
    return pg_db, made


@pytest.fixture
def target(pg_server):
    name = "live " + uuid.uuid4().hex[:8]
    yield name
    plain = backup_archive.plain_name(name)
    for db in databases(pg_server):
        if db == name or db.startswith(plain + "_replaced_") or db.startswith(plain + "_restore_"):
            pgh.drop_database(pg_server, db)


def restore_args(db, made, target, **extra):
    return dict(db.server.login_args(), state="restored", src=made["manifest_path"], target_db=target,
                **pgh.client_options(db.server), **extra)


def count(server, dbname, table="accounts"):
    return admin(server, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)), dbname=dbname)[0][0]


def test_restoring_twice_restores_again_and_keeps_what_it_replaced(source, target):
    db, made = source
    server = db.server
    first = run_module("pg_backup", restore_args(db, made, target), diff=True)
    assert not first.result.get("failed"), first.output[-3000:]
    assert first.result["changed"] and first.result["replaced_database"] is None
    admin(server, "DELETE FROM accounts WHERE id % 2 = 0", dbname=target)
    admin(server, "INSERT INTO notes VALUES (31, 'written after the backup')", dbname=target)
    assert count(server, target) == 100

    msg = failure_message(run_module("pg_backup", restore_args(db, made, target)))
    assert "not empty" in msg and "force" in msg and "table(s) (public.accounts, public.notes)" in msg
    assert count(server, target) == 100

    check = run_module("pg_backup", restore_args(db, made, target, force=True), check=True, diff=True)
    assert not check.result.get("failed") and check.result["changed"], check.output[-3000:]
    assert check.result["diff"]["after"]["replaced_database"] == check.result["replaced_database"]
    assert count(server, target) == 100 and check.result["replaced_database"] not in databases(server)

    again = run_module("pg_backup", restore_args(db, made, target, force=True), diff=True)
    assert not again.result.get("failed"), again.output[-3000:]
    res = again.result
    assert count(server, target) == 200, "the second restore must restore again"
    aside = res["replaced_database"]
    assert aside.startswith(backup_archive.plain_name(target) + "_replaced_") and aside in databases(server)
    assert count(server, aside) == 100 and count(server, aside, "notes") == 31
    assert res["row_differences"] == {
        "public.accounts": {"replaced": 100, "restored": 200, "difference": 100},
        "public.notes": {"replaced": 31, "restored": 30, "difference": -1}}
    assert res["rows_lost"] == {"public.notes": 1} and res["rows_lost_total"] == 1
    assert aside in res["msg"] and "drop_replaced=" + aside in res["msg"] and "public.notes 1" in res["msg"]
    assert not [d for d in databases(server) if "_restore_" in d]

    drop = dict(server.login_args(), state="absent", drop_replaced=aside)
    assert run_module("pg_backup", drop, check=True).result["changed"] is True
    assert aside in databases(server)
    dropped = run_module("pg_backup", drop)
    assert not dropped.result.get("failed") and dropped.result["changed"], dropped.output[-3000:]
    assert aside not in databases(server)
    assert run_module("pg_backup", drop).result["changed"] is False
    # only databases a restore set aside can be dropped that way
    msg = failure_message(run_module("pg_backup", dict(drop, drop_replaced=target)))
    assert "not set aside by a pg_backup restore" in msg and target in databases(server)


@pytest.mark.parametrize("kind,setup", [
    ("large object", "SELECT lo_from_bytea(0, 'only a large object')"),
    ("function", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
    ("procedure", "CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'"),
    ("type", "CREATE TYPE mood AS ENUM ('ok', 'sad')"),
    ("schema", "CREATE SCHEMA reports"),
    ("sequence", "CREATE SEQUENCE invoice_numbers"),
    ("view", "CREATE VIEW v AS SELECT 1 AS one"),
    ("extension", "CREATE EXTENSION IF NOT EXISTS pgcrypto"),
    ("default privileges", "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC"),
])
def test_a_database_without_tables_is_not_empty(source, target, kind, setup):
    db, made = source
    pgh.create_database(db.server, target)
    try:
        admin(db.server, setup, dbname=target)
    except Exception as exc:  # pgcrypto is part of PostgreSQL's contrib, normally installed
        pytest.skip("cannot create %s here: %s" % (kind, exc))
    restorer = engine(db.server, db.server.url("postgres"))
    with pytest.raises(backup_archive.BackupError) as err:
        restorer.restore(made["manifest_path"], target, False, 1, None, False)
    assert "not empty" in str(err.value) and kind + "(s)" in str(err.value)
    assert admin(db.server, "SELECT to_regclass('accounts')", dbname=target)[0][0] is None


def test_a_really_empty_database_is_replaced_without_force(source, target):
    db, made = source
    pgh.create_database(db.server, target)
    admin(db.server, sql.SQL("COMMENT ON DATABASE {} IS 'empty but named'").format(sql.Identifier(target)))
    result = engine(db.server, db.server.url("postgres")).restore(made["manifest_path"], target, False, 1, None, False)
    assert result["replaced_database"] is None and count(db.server, target) == 200
    assert not [d for d in databases(db.server) if "_replaced_" in d and d.startswith(backup_archive.plain_name(target))]
    assert admin(db.server, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                 (target,))[0][0] == "empty but named"


@pytest.fixture
def app_role(pg_server):
    name = "app_" + uuid.uuid4().hex[:8]
    admin(pg_server, sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
        sql.Identifier(name), sql.Literal(pgh.TEST_PASSWORD)))
    reader = name + "_reader"
    admin(pg_server, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(reader)))
    yield name, reader
    for db in databases(pg_server):
        if admin(pg_server, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (db,))[0][0] == name:
            pgh.drop_database(pg_server, db)
    for role in (reader, name):
        admin(pg_server, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        admin(pg_server, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def database_state(server, name):
    row = admin(server, """
        SELECT pg_get_userbyid(d.datdba), d.datacl::text[], shobj_description(d.oid, 'pg_database'), d.datconnlimit,
               (SELECT array_agg(coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '*') || ':' || array_to_string(s.setconfig, '|')
                       ORDER BY 1) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)
        FROM pg_database d WHERE d.datname = %s""", (name,))[0]
    return {"owner": row[0], "acl": sorted(row[1] or []), "comment": row[2], "connlimit": row[3],
            "settings": sorted(row[4] or [])}


def url_as(server, user, dbname):
    return "postgresql://%s:%s@%s:%s/%s" % (user, server.password, server.host, server.port, dbname)


def execute_as(server, user, dbname, statement):
    import psycopg2
    with contextlib.closing(psycopg2.connect(url_as(server, user, dbname))) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(statement)


@pytest.mark.parametrize("as_owner", [False, True], ids=["superuser", "non-superuser owner"])
def test_force_restore_keeps_owner_grants_settings_and_comment(pg_server, target, app_role, as_owner, tmp_path):
    server = pg_server
    owner, reader = app_role
    ident = sql.Identifier(target)
    admin(server, sql.SQL("CREATE DATABASE {} OWNER {}").format(ident, sql.Identifier(owner)))
    statements = ["REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC",
                  "GRANT CONNECT ON DATABASE {db} TO {reader}",
                  "ALTER DATABASE {db} SET search_path = app, \"My Schema\", public",
                  "ALTER DATABASE {db} SET work_mem = '12MB'",
                  "ALTER DATABASE {db} CONNECTION LIMIT 40",
                  "COMMENT ON DATABASE {db} IS 'production ledger'"]
    if not as_owner:  # a role's settings in the database need a superuser (or CREATEROLE) to copy
        statements.append("ALTER ROLE {reader} IN DATABASE {db} SET statement_timeout = '5s'")
    for statement in statements:
        admin(server, sql.SQL(statement).format(db=ident, reader=sql.Identifier(reader)))
    user = owner if as_owner else server.user
    execute_as(server, user, target, "CREATE TABLE accounts (id int PRIMARY KEY, name text);"
                                     "INSERT INTO accounts SELECT g, 'a' || g FROM generate_series(1, 200) g")
    made = engine(server, url_as(server, user, target)).create(str(tmp_path), backup_archive.DumpOptions(), "none", None)
    execute_as(server, user, target, "CREATE TABLE live_only (id int); DELETE FROM accounts WHERE id > 150")
    before = database_state(server, target)
    args = dict(server.login_args(), login_user=user, state="restored", src=made["manifest_path"], target_db=target,
                force=True, **pgh.client_options(server))
    run = run_module("pg_backup", args)
    assert not run.result.get("failed"), run.output[-3000:]
    assert database_state(server, target) == before
    assert before["owner"] == owner and before["comment"] == "production ledger" and before["connlimit"] == 40
    assert count(server, target) == 200
    assert admin(server, "SELECT to_regclass('live_only')", dbname=target)[0][0] is None
    aside = run.result["replaced_database"]
    assert admin(server, "SELECT to_regclass('live_only')", dbname=aside)[0][0] is not None
    assert run.result["rows_lost"] == {} and run.result["row_differences"]["public.accounts"]["difference"] == 50
    assert not [d for d in databases(server) if "_restore_" in d]


def test_a_role_that_cannot_create_databases_fails_before_any_change(source, target, app_role):
    db, made = source
    server = db.server
    owner, _reader = app_role
    admin(server, sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(target), sql.Identifier(owner)))
    admin(server, "CREATE TABLE precious (id int)", dbname=target)
    admin(server, sql.SQL("ALTER ROLE {} NOCREATEDB").format(sql.Identifier(owner)))
    before = databases(server)
    args = dict(server.login_args(), login_user=owner, state="restored", src=made["manifest_path"], target_db=target,
                force=True, **pgh.client_options(server))
    msg = failure_message(run_module("pg_backup", args))
    assert "may not create databases" in msg and "CREATEDB" in msg and "Nothing was changed" in msg
    assert databases(server) == before
    assert admin(server, "SELECT to_regclass('precious')", dbname=target)[0][0] is not None


def test_large_objects_are_counted_and_verified(source, tmp_path):
    db, made = source
    assert made["manifest"]["large_objects"] == 2
    assert backup_archive.toc_large_object_problems(engine(db.server, db.url).list_archive(made["path"]), 2) == []
    checked = engine(db.server, db.url).verify_existing(made["manifest_path"], "restore")
    assert checked["verified"] and checked["verification"]["restored_large_objects"] == 2
    # a manifest that counted a large object more than the archive holds fails verification
    manifest = dict(made["manifest"], large_objects=3)
    with pytest.raises(backup_archive.BackupError, match="large objects: 3 expected, 2 restored"):
        engine(db.server, db.url).verify_path(made["path"], manifest, "restore", checksum=False)


def test_version_table_option_and_a_missing_version_table(pg_db, tmp_path):
    pg_db.execute("CREATE SCHEMA meta; CREATE TABLE meta.schema_version (version_num varchar(32) PRIMARY KEY);"
                  "INSERT INTO meta.schema_version VALUES ('ab12cd34');"
                  "CREATE TABLE alembic_version (version_num varchar(32)); INSERT INTO alembic_version VALUES ('zz')")
    found = engine(pg_db.server, pg_db.url, version_table="schema_version", version_table_schema="meta").create(
        str(tmp_path / "a"), backup_archive.DumpOptions(), "none", None)["manifest"]
    assert found["alembic_revision"] == "ab12cd34" and found["alembic_version_table"] == "meta.schema_version"
    assert found["alembic_version_table_missing"] is False
    missing = run_module("pg_backup", dict(pg_db.login_args(), dest=str(tmp_path / "b"), verify="none",
                                           version_table="no_such_table", **pgh.client_options(pg_db.server)))
    assert not missing.result.get("failed"), missing.output[-3000:]
    manifest = missing.result["manifest"]
    assert manifest["alembic_revision"] is None and manifest["alembic_version_table_missing"] is True
    assert manifest["alembic_version_table"] == "no_such_table"
    default = engine(pg_db.server, pg_db.url).create(str(tmp_path / "c"), backup_archive.DumpOptions(), "none", None)["manifest"]
    assert default["alembic_revision"] == "zz" and default["alembic_version_table"] == "public.alembic_version"


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run(pg_db, tmp_path):
    server = pg_db.server
    pg_db.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    dest = tmp_path / "b"
    dest.mkdir()
    dead = dict(backup_archive.this_process(), pid=_dead_pid())
    stale = backup_archive.make_staging(str(dest), dead)
    with open(os.path.join(stale, "half.dump"), "wb") as handle:
        handle.write(b"PGDMP half written")
    live = backup_archive.make_staging(str(dest), backup_archive.this_process())
    scratch = backup_archive.derived_db_name(pg_db.name, "_verify_deadbeef")
    busy = backup_archive.derived_db_name(pg_db.name, "_verify_0badf00d")
    for name, owner in ((scratch, dead), (busy, backup_archive.this_process())):
        pgh.create_database(server, name)
        admin(server, sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(backup_archive.owner_record("scratch", owner, name=name, purpose="verify"))))
    try:
        client = pgh.client_options(server)
        check = run_module("pg_backup", dict(pg_db.login_args(), dest=str(dest), verify="none", **client), check=True)
        assert any(scratch in line and "would remove" in line for line in check.result["cleaned_up"]), check.result
        assert scratch in databases(server) and os.path.isdir(stale)
        run = run_module("pg_backup", dict(pg_db.login_args(), dest=str(dest), verify="none", **client))
        assert not run.result.get("failed"), run.output[-3000:]
        cleaned = run.result["cleaned_up"]
        assert any(scratch in line for line in cleaned) and any(stale in line for line in cleaned), cleaned
        assert scratch not in databases(server) and not os.path.exists(stale)
        # work of a run that is still alive (this test process) is left alone
        assert busy in databases(server) and os.path.isdir(live)
    finally:
        for name in (scratch, busy):
            pgh.drop_database(server, name)


def test_a_restore_killed_after_setting_the_live_database_aside_is_undone(source, target):
    db, made = source
    server = db.server
    pgh.create_database(server, target)
    admin(server, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (7)", dbname=target)
    aside = backup_archive.replaced_name(target, backup_archive.utc_now())
    scratch = backup_archive.derived_db_name(target, "_restore_deadbeef")
    dead = dict(backup_archive.this_process(), pid=_dead_pid())
    # what a run killed between "rename the live database aside" and "rename the restore in" leaves
    record = backup_archive.record_text(dict(dead, kind="replaced", database=target, name=aside, scratch=scratch,
                                 state="swapping", comment="the original comment", empty=False))
    admin(server, sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(target), sql.Literal(record)))
    admin(server, sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(target), sql.Identifier(aside)))
    pgh.create_database(server, scratch)
    admin(server, sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(scratch), sql.Literal(
        backup_archive.owner_record("scratch", dead, name=scratch, purpose="restore"))))
    assert target not in databases(server)
    result = engine(server, server.url("postgres")).restore(made["manifest_path"], target + " other", False, 1, None, False)
    try:
        assert any("renamed back to " + target in line for line in result["cleaned_up"]), result["cleaned_up"]
        assert target in databases(server) and aside not in databases(server) and scratch not in databases(server)
        assert admin(server, "SELECT id FROM precious", dbname=target) == [(7,)]
        assert admin(server, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                     (target,))[0][0] == "the original comment"
    finally:
        pgh.drop_database(server, target + " other")


def test_retention_keys_on_the_manifest_database(tmp_path):
    def fake(db, file_db, stamp):
        name = "%s_%s.dump" % (file_db, stamp)
        (tmp_path / name).write_bytes(b"PGDMP")
        (tmp_path / (name + ".manifest.json")).write_text(json.dumps({"file": name, "sha256": "x", "database": db}))
        return name
    theirs = [fake("shop_eu", "shop_eu", "2026010%dT000000Z" % i) for i in (1, 2, 3)]
    mine = [fake("shop eu", "shop_eu", "2026010%dT000001Z" % i) for i in (1, 2)]
    umlauts = [fake("shäp", "sh_p", "2026010%dT000000Z" % i) for i in (1, 2)] + [fake("shöp", "sh_p", "20260103T000000Z")]
    orphan = "shop_eu_20250101T000000Z.dump"
    (tmp_path / orphan).write_bytes(b"PGDMP without a manifest")
    run = run_module("pg_backup", {"state": "absent", "dest": str(tmp_path), "login_db": "shop eu", "keep": 1})
    assert not run.result.get("failed"), run.output[-3000:]
    assert [os.path.basename(p) for p in run.result["removed"]] == [mine[0]]
    assert [s["path"] for s in run.result["skipped"]] == [str(tmp_path / orphan)]
    left = set(os.listdir(tmp_path))
    assert set(theirs) <= left and mine[1] in left and orphan in left and set(umlauts) <= left
    run = run_module("pg_backup", {"state": "absent", "dest": str(tmp_path), "login_db": "shöp", "keep": 1})
    assert run.result["removed"] == [] and set(umlauts) <= set(os.listdir(tmp_path))
    run = run_module("pg_backup", {"state": "absent", "dest": str(tmp_path), "login_db": "shäp", "keep": 1})
    assert [os.path.basename(p) for p in run.result["removed"]] == [umlauts[0]]
    assert set(theirs) <= set(os.listdir(tmp_path))
