"""alembic_migrate on real PostgreSQL: no silent downgrade, merges and branches, half-applied
autocommit blocks, the URL form env.py receives, custom version tables, the lock status, and a
migration that stops when the ansible-playbook that started it is killed."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg2
import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import lock_key, migration_lock_status
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url
from tests.helpers.ansible import failure_message, run_module
from tests.helpers.migrate_project import (
    ENV_PY, SLEEPY_HISTORY, Holder, alembic, assert_stopped_and_rolled_back, columns, find_processes, kill_session,
    make_project, module_args, revision_of, start_playbook, wait_for_sleeping_migration)
from tests.helpers.postgres import TEST_PASSWORD

pytestmark = pytest.mark.integration


def heads_of(db, table: str = "alembic_version") -> list[str]:
    if db.scalar("SELECT to_regclass(%s)", (table,)) is None:
        return []
    return sorted(r[0] for r in db.execute("SELECT version_num FROM %s" % table))


# ------------------------------------------------------------------ downgrades

@pytest.mark.fault("alembic_migrate: target behind the database (a downgrade) without allow_downgrade",
                   kind="bad_input", holds="refused before any change, naming both revisions and allow_downgrade")
def test_downgrade_needs_allow_downgrade_and_is_reported_as_reverted(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    alembic(pg_db, config, "upgrade", "head")
    pg_db.execute("INSERT INTO accounts (name) SELECT 'a' || g FROM generate_series(1, 500) g")
    for check in (True, False):
        refused = run_module("alembic_migrate", module_args(pg_db, config, target="0002"), check=check)
        message = failure_message(refused)
        assert "0004" in message and "0002" in message and "allow_downgrade" in message and "downgrade" in message
        assert refused.result["applied"] == [] and refused.result["reverted"] == []
    assert revision_of(pg_db) == "0004" and "tier" in columns(pg_db, "accounts")

    check = run_module("alembic_migrate", module_args(pg_db, config, target="0002", allow_downgrade=True), check=True)
    assert not check.result.get("failed"), check.output
    assert [p["direction"] for p in check.result["pending"]] == ["downgrade", "downgrade"]
    assert revision_of(pg_db) == "0004"

    down = run_module("alembic_migrate", module_args(pg_db, config, target="0002", allow_downgrade=True))
    assert not down.result.get("failed"), down.output
    assert down.result["direction"] == "downgrade" and down.result["changed"] is True
    assert down.result["applied"] == []
    assert [r["revision"] for r in down.result["reverted"]] == ["0004", "0003"]
    assert revision_of(pg_db) == "0002" and "tier" not in columns(pg_db, "accounts")

    up = run_module("alembic_migrate", module_args(pg_db, config))
    assert up.result["direction"] == "upgrade" and up.result["reverted"] == []
    assert [a["revision"] for a in up.result["applied"]] == ["0003", "0004"]


# ------------------------------------------------------------------ merges and branches

MERGE_HISTORY = [
    ("r1", "base", '    op.execute("CREATE TABLE items (id serial PRIMARY KEY, name text)")', '    op.execute("DROP TABLE items")'),
    ("r2a", "branch a", '    op.add_column("items", sa.Column("a_note", sa.Text()))', '    op.drop_column("items", "a_note")'),
    ("r2b", "branch b", '    op.execute("CREATE TABLE b_side (id int)")', '    op.execute("DROP TABLE b_side")'),
    ("r3", "merge", "    pass", "    pass"),
]
MERGE_PARENTS = {"r2a": "r1", "r2b": "r1", "r3": ("r2a", "r2b")}


@pytest.mark.fault("alembic_migrate: merge revision r3 of branches r2a and r2b", kind="bad_input",
                   holds="head applies both branches and the merge; applied lists every revision")
def test_merge_history_migrates_like_alembic(pg_db, tmp_path):
    config = make_project(tmp_path / "proj", MERGE_HISTORY, MERGE_PARENTS)
    check = run_module("alembic_migrate", module_args(pg_db, config, target="head"), check=True)
    assert [p["revision"] for p in check.result["pending"]] == ["r1", "r2a", "r2b", "r3"], check.output
    run = run_module("alembic_migrate", module_args(pg_db, config, target="head"))
    assert not run.result.get("failed"), run.output
    assert [a["revision"] for a in run.result["applied"]] == ["r1", "r2a", "r2b", "r3"]
    assert run.result["to_revision"] == "r3" and heads_of(pg_db) == ["r3"]
    assert "a_note" in columns(pg_db, "items") and pg_db.scalar("SELECT to_regclass('b_side')") is not None
    again = run_module("alembic_migrate", module_args(pg_db, config, target="heads"))
    assert again.result["changed"] is False and again.result["applied"] == []


def test_database_on_one_branch_or_at_several_heads_is_upgraded(pg_db, tmp_path):
    config = make_project(tmp_path / "proj", MERGE_HISTORY, MERGE_PARENTS)
    alembic(pg_db, config, "upgrade", "r2a")
    run = run_module("alembic_migrate", module_args(pg_db, config, target="heads"))
    assert not run.result.get("failed"), run.output
    assert [a["revision"] for a in run.result["applied"]] == ["r2b", "r3"]
    assert heads_of(pg_db) == ["r3"]

    alembic(pg_db, config, "downgrade", "r1")
    alembic(pg_db, config, "upgrade", "r2a")
    alembic(pg_db, config, "upgrade", "r2b")
    assert heads_of(pg_db) == ["r2a", "r2b"]
    run = run_module("alembic_migrate", module_args(pg_db, config, target="head"), diff=True)
    assert not run.result.get("failed"), run.output
    assert run.result["from_revision"] == "r2a,r2b" and run.result["to_revision"] == "r3"
    assert [a["revision"] for a in run.result["applied"]] == ["r3"]
    assert heads_of(pg_db) == ["r3"]


# ------------------------------------------------------------------ half-applied autocommit blocks

AUTOCOMMIT_BASE = ("r1", "orders with duplicate accounts",
                   '    op.execute("CREATE TABLE orders (id serial PRIMARY KEY, account int)")\n'
                   '    op.execute("INSERT INTO orders (account) VALUES (1), (1), (2)")',
                   '    op.execute("DROP TABLE orders")')
ADD_THEN_UNIQUE = ("r2", "sku and a unique index",
                   '    op.add_column("orders", sa.Column("sku", sa.Text(), nullable=True))\n'
                   '    with op.get_context().autocommit_block():\n'
                   '        op.create_index("ix_orders_account", "orders", ["account"], unique=True,\n'
                   '                        postgresql_concurrently=True)',
                   "    pass")
UNIQUE_ONLY = ("r2", "a unique index",
               '    with op.get_context().autocommit_block():\n'
               '        op.create_index("ix_orders_account", "orders", ["account"], unique=True,\n'
               '                        postgresql_concurrently=True)',
               "    pass")


@pytest.mark.fault("alembic_migrate: add_column then CREATE UNIQUE INDEX CONCURRENTLY on duplicates",
                   kind="fault", holds="says the column was added and the revision not recorded, names the "
                   "duplicate key, no retries, names the dropped INVALID index; the next run explains DuplicateColumn")
def test_failed_autocommit_block_is_reported_truthfully(pg_db, tmp_path):
    config = make_project(tmp_path / "proj", [AUTOCOMMIT_BASE, ADD_THEN_UNIQUE])
    run = run_module("alembic_migrate", module_args(pg_db, config, retries=5, retry_delay=0.5))
    message = failure_message(run)
    assert "Upgrade of revision r2 failed: UniqueViolation" in message
    assert "is duplicated" in message
    assert "not recorded" in message and "column public.orders.sku added" in message
    assert "INVALID index public.ix_orders_account, which was dropped" in message
    assert "index ," not in message and "index  " not in message
    assert run.result["attempts"] == 2  # r1 once, r2 once: a duplicate key is not retried
    assert run.result["failure"]["cause"].startswith("UniqueViolation")
    assert run.result["failure"]["partially_applied"] == ["column public.orders.sku added"]
    assert [(e["index"], e["dropped"]) for e in run.result["invalid_indexes"]] == [("ix_orders_account", True)]
    assert revision_of(pg_db) == "r1" and "sku" in columns(pg_db, "orders")
    assert pg_db.scalar("SELECT to_regclass('ix_orders_account')") is None

    later = run_module("alembic_migrate", module_args(pg_db, config))
    message = failure_message(later)
    assert "DuplicateColumn" in message and "earlier attempt of r2" in message
    assert later.result["attempts"] == 1 and revision_of(pg_db) == "r1"


FIRST_REVISION_NOT_VALID = ("r1", "a check constraint the safe way, as the history's first revision",
                            '    with op.get_context().autocommit_block():\n'
                            '        op.execute("ALTER TABLE accounts ADD CONSTRAINT ck_balance CHECK (balance >= 0) '
                            'NOT VALID")\n'
                            '        op.execute("ALTER TABLE accounts VALIDATE CONSTRAINT ck_balance")',
                            '    op.execute("ALTER TABLE accounts DROP CONSTRAINT ck_balance")')


def test_the_version_table_an_autocommit_block_commits_is_not_a_half_applied_revision(pg_db, tmp_path):
    """From base, Alembic creates its version table (and its primary key index) in the transaction an
    autocommit_block commits: a lock timeout after that is retried like any other."""
    pg_db.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
    config = make_project(tmp_path / "proj", [FIRST_REVISION_NOT_VALID])
    with Holder(pg_db, "SELECT count(*) FROM accounts", hold_s=5.0):  # outlasts ansible's start-up
        run = run_module("alembic_migrate", module_args(pg_db, config, lock_timeout="100ms", retries=10,
                                                        retry_delay=0.5))
    assert not run.result.get("failed"), run.output
    assert run.result["applied"][0]["attempts"] >= 2 and revision_of(pg_db) == "r1", run.result
    assert pg_db.scalar("SELECT convalidated FROM pg_constraint WHERE conname = 'ck_balance'") is True


def test_failed_concurrent_unique_index_alone_is_not_retried(pg_db, tmp_path):
    config = make_project(tmp_path / "proj", [AUTOCOMMIT_BASE, UNIQUE_ONLY])
    started = time.monotonic()
    run = run_module("alembic_migrate", module_args(pg_db, config, retries=5, retry_delay=2))
    message = failure_message(run)
    assert run.result["attempts"] == 2 and time.monotonic() - started < 60
    assert "UniqueViolation" in message and "Key (account)=(1) is duplicated" in message
    assert "INVALID index public.ix_orders_account, which was dropped" in message
    assert "The database stays at revision r1" in message and "partially_applied" not in run.result["failure"]
    assert pg_db.scalar("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0


# ------------------------------------------------------------------ the URL form and the version table

PSYCOPG2_ONLY_ENV = ENV_PY.replace(
    'url = os.environ["DATABASE_URL"]\nif url.startswith("postgresql://"):\n'
    '    url = "postgresql+psycopg2://" + url[len("postgresql://"):]\n',
    'url = os.environ["APP_DB_URL"]\nassert url.startswith("postgresql+psycopg2://"), "wrong URL form"\n')


def test_url_variable_and_scheme_reach_env_py(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    (config.parent / "migrations" / "env.py").write_text(PSYCOPG2_ONLY_ENV)
    wrong = run_module("alembic_migrate", module_args(pg_db, config, target="0001"))
    assert "KeyError: 'APP_DB_URL'" in failure_message(wrong), failure_message(wrong)
    run = run_module("alembic_migrate", module_args(pg_db, config, target="0001", db_url_var="APP_DB_URL",
                                                    db_url_scheme="postgresql+psycopg2"))
    assert not run.result.get("failed"), run.output
    assert revision_of(pg_db) == "0001"
    assert TEST_PASSWORD not in run.output
    bad = run_module("alembic_migrate", module_args(pg_db, config, db_url_scheme="mysql"))
    assert "postgresql+psycopg2" in failure_message(bad)


CUSTOM_TABLE_ENV = ENV_PY.replace(
    "context.configure(connection=connection, transaction_per_migration=True)",
    "context.configure(connection=connection, transaction_per_migration=True, version_table='schema_rev',"
    " version_table_schema='meta')").replace(
    'dialect_opts={"paramstyle": "named"},',
    'dialect_opts={"paramstyle": "named"}, version_table="schema_rev", version_table_schema="meta",')


def test_custom_version_table_is_read_everywhere(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    (config.parent / "migrations" / "env.py").write_text(CUSTOM_TABLE_ENV)
    pg_db.execute("CREATE SCHEMA meta")
    args = module_args(pg_db, config, version_table="schema_rev", version_table_schema="meta")
    run = run_module("alembic_migrate", dict(args, target="0002"))
    assert not run.result.get("failed"), run.output
    assert pg_db.scalar("SELECT version_num FROM meta.schema_rev") == "0002"
    assert pg_db.scalar("SELECT to_regclass('public.alembic_version')") is None
    check = run_module("alembic_migrate", args, check=True)
    assert check.result["from_revision"] == "0002"
    assert [p["revision"] for p in check.result["pending"]] == ["0003", "0004"]
    refused = run_module("alembic_migrate", dict(args, target="0001"))
    assert "behind the database's revision 0002" in failure_message(refused)


# ------------------------------------------------------------------ lock status

def test_lock_status_sees_only_this_databases_runner_lock(pg_db):
    args = dict(pg_db.login_args(), state="lock_status")
    free = run_module("alembic_migrate", args)
    assert not free.result.get("failed"), free.output
    assert free.result["lock_held"] is False and free.result["lock_holder_pid"] is None
    assert free.result["changed"] is False
    key = lock_key("alembic_version", None)
    # The same key in another database of the cluster is another project's lock.
    other = psycopg2.connect(pg_db.url.rsplit("/", 1)[0] + "/postgres")
    other.autocommit = True
    holder = psycopg2.connect(pg_db.url)
    holder.autocommit = True
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", key)
        assert migration_lock_status(parse_db_url(pg_db.url))["lock_held"] is False
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s), pg_backend_pid()", key)
            pid = cur.fetchone()[1]
        held = run_module("alembic_migrate", args)
        assert held.result["lock_held"] is True and held.result["lock_holder_pid"] == pid
        # Another version table is another lock.
        custom = run_module("alembic_migrate", dict(args, version_table="schema_rev"))
        assert custom.result["lock_held"] is False
    finally:
        holder.close()
        other.close()
    assert migration_lock_status(parse_db_url(pg_db.url))["lock_held"] is False


# ------------------------------------------------------------------ the controller dies

@pytest.mark.fault("alembic_migrate: SIGKILL of ansible-playbook while a revision runs (local executor)",
                   kind="interrupt", holds="alembic is stopped within seconds, its transaction rolled back, the "
                   "migration lock released; the revision is unchanged and the next run applies it")
def test_killing_ansible_playbook_stops_a_local_migration(pg_db, tmp_path):
    config = make_project(tmp_path / "proj", SLEEPY_HISTORY)
    alembic(pg_db, config, "upgrade", "0001")
    proc = start_playbook(tmp_path, module_args(pg_db, config, lock_timeout="5s"))
    try:
        wait_for_sleeping_migration(pg_db, proc)
        assert migration_lock_status(parse_db_url(pg_db.url))["lock_held"] is True
        os.kill(proc.pid, signal.SIGKILL)  # the ansible-playbook process only, as `kill -9` would
        took = assert_stopped_and_rolled_back(pg_db, lambda: any(
            "upgrade" in " ".join(_cmdline(pid)) for pid in find_processes(str(config))))
        assert took < 8
    finally:
        kill_session(proc)
    # Nothing stands in the way of the next run (which would now sleep for real: just plan it).
    check = run_module("alembic_migrate", module_args(pg_db, config), check=True)
    assert [p["revision"] for p in check.result["pending"]] == ["0002"]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []

