"""Small, real Alembic projects that alembic_migrate runs, and the load and faults its tests put on them.

The project's env.py reads DATABASE_URL like the example application's does, supports offline mode
and runs each revision in its own transaction. (tests/helpers/alembic_project.py writes projects that
are only read, never run: its env.py raises.)
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

import psycopg2
import yaml

from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import migration_lock_status
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url
from tests.helpers.ansible import ansible_env

ENV_PY = '''
import os
from alembic import context
from sqlalchemy import create_engine, pool

url = os.environ["DATABASE_URL"]
if url.startswith("postgresql://"):
    url = "postgresql+psycopg2://" + url[len("postgresql://"):]


def run_migrations_offline():
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
'''

INI = '''[alembic]
script_location = %(here)s/migrations
prepend_sys_path = .

[loggers]
keys = root,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
'''

REVISION = '''"""{doc}

Revision ID: {rev}
Revises: {down}
"""
from alembic import op
import sqlalchemy as sa

revision = {rev!r}
down_revision = {down_repr}
branch_labels = None
depends_on = None


def upgrade():
{upgrade}


def downgrade():
{downgrade}
'''

# (revision, doc, upgrade body, downgrade body); bodies are indented Python.
DEFAULT_REVISIONS = [
    ("0001", "baseline",
     '    op.execute("CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL)")\n'
     '    op.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, account_id int NOT NULL, '
     'quantity int NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")',
     '    op.execute("DROP TABLE orders")\n    op.execute("DROP TABLE accounts")'),
    ("0002", "add orders.note",
     '    op.add_column("orders", sa.Column("note", sa.Text(), nullable=True))',
     '    op.drop_column("orders", "note")'),
    ("0003", "index orders.created_at concurrently",
     '    with op.get_context().autocommit_block():\n'
     '        op.create_index("ix_orders_created_at", "orders", ["created_at"], postgresql_concurrently=True)',
     '    with op.get_context().autocommit_block():\n'
     '        op.drop_index("ix_orders_created_at", table_name="orders", postgresql_concurrently=True)'),
    ("0004", "add accounts.tier",
     '    op.add_column("accounts", sa.Column("tier", sa.Text(), nullable=True))',
     '    op.drop_column("accounts", "tier")'),
]


def make_project(root: Path, revisions: Sequence[tuple] = tuple(DEFAULT_REVISIONS),
                 parents: dict | None = None) -> Path:
    """Write alembic.ini, env.py and the revisions; returns the path of alembic.ini."""
    root.mkdir(parents=True, exist_ok=True)
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    (root / "migrations" / "script.py.mako").write_text("")
    (root / "alembic.ini").write_text(INI)
    previous = None
    for rev, doc, up, down in revisions:
        parent = (parents or {}).get(rev, previous)
        if isinstance(parent, tuple):
            down_repr = repr(parent)
        else:
            down_repr = repr(parent) if parent else "None"
        (versions / f"{rev}_rev.py").write_text(REVISION.format(
            doc=doc, rev=rev, down=parent, down_repr=down_repr, upgrade=up, downgrade=down))
        previous = rev
    return root / "alembic.ini"


def add_revision(config: Path, rev: str, down: str | None, upgrade: str, downgrade: str = "    pass",
                 doc: str = "extra") -> None:
    versions = config.parent / "migrations" / "versions"
    (versions / f"{rev}_rev.py").write_text(REVISION.format(
        doc=doc, rev=rev, down=down, down_repr=repr(down) if down else "None", upgrade=upgrade,
        downgrade=downgrade))


def revision_of(db) -> str | None:
    if db.scalar("SELECT to_regclass('alembic_version')") is None:
        return None
    return db.scalar("SELECT version_num FROM alembic_version")


def columns(db, table: str) -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
        (table,))]


def module_args(db, config_path: Path, **extra) -> dict:
    args = {"db_url": db.url, "config": str(config_path), "lock_timeout": "300ms", "retries": 2,
            "retry_delay": 0.2, "lock_wait": 30}
    args.update(extra)
    return args


class Holder:
    """A session that keeps a transaction open (holding what its statement locked) in a thread.

    The transaction ends after ``hold_s`` seconds, on ``release()``, or when the block exits.
    """

    def __init__(self, db, sql: str, hold_s: float = 120, application_name: str = "long-report"):
        self.conn = psycopg2.connect(db.url, application_name=application_name)
        self.sql = sql
        self.hold_s = hold_s
        self.started = threading.Event()
        self.released = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.pid = None

    def _run(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            self.pid = cur.fetchone()[0]
            cur.execute(self.sql)
            self.started.set()
            self.released.wait(self.hold_s)
        self.conn.rollback()
        self.ended = time.monotonic()

    def release(self, after: float = 0.0) -> None:
        threading.Timer(after, self.released.set).start()

    def __enter__(self) -> "Holder":
        self.thread.start()
        assert self.started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.thread.join(30)
        with contextlib.suppress(Exception):
            self.conn.close()


class Writers:
    """Clients inserting into orders in a loop; records every commit time."""

    def __init__(self, db, clients: int = 3):
        self.db = db
        self.clients = clients
        self.stop = threading.Event()
        self.commits: list[list[float]] = [[] for _ in range(clients)]
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        conn = psycopg2.connect(self.db.url, application_name="writer-%d" % index)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    try:
                        cur.execute("INSERT INTO orders (account_id, quantity) VALUES (1, 1)")
                        self.commits[index].append(time.monotonic())
                    except Exception as exc:  # counted; the test asserts none happen
                        self.errors.append(str(exc))
                    time.sleep(0.01)
        finally:
            conn.close()

    def __enter__(self) -> "Writers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def longest_gap(self, since: float = 0.0) -> float:
        gaps = [0.0]
        for times in self.commits:
            times = [t for t in times if t >= since]
            gaps += [b - a for a, b in zip(times, times[1:])]
        return max(gaps)

    def count(self) -> int:
        return sum(len(c) for c in self.commits)


def wait_for_migration_lock_wait(db, timeout: float = 60.0, pattern: str = "dbops-migrate-%") -> None:
    """Until a backend of alembic_migrate (or ``pattern``) is seen waiting for a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s"
                     " AND application_name NOT IN ('dbops-migrate-control', 'dbops-migrate-monitor')"
                     " AND wait_event_type = 'Lock'", (pattern,)):
            return
        time.sleep(0.05)
    raise AssertionError("the migration never waited for a lock")


def run_in_thread(func, *args, **kwargs) -> tuple[threading.Thread, dict]:
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", func(*args, **kwargs)), daemon=True)
    thread.start()
    return thread, box


def alembic_env(db) -> dict:
    env = dict(os.environ)
    env["DATABASE_URL"] = db.url
    return env


def find_processes(needle: str) -> Iterable[int]:
    """PIDs whose command line contains ``needle`` (for fault injection)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if needle in cmdline:
                yield int(entry)


# ------------------------------------------------------------------ the alembic CLI, as an operator runs it

ALEMBIC = str(Path(sys.executable).parent / "alembic")


def alembic(db, config: Path, *args: str) -> None:
    subprocess.run([ALEMBIC, "-c", str(config), *args], cwd=config.parent, env=dict(os.environ, DATABASE_URL=db.url),
                   check=True, capture_output=True, timeout=120)


# ------------------------------------------------------------------ a controller that dies mid-migration

SLEEPER = ('    op.execute("INSERT INTO accounts (name) VALUES (\'from-0002\')")\n'
           '    op.add_column("orders", sa.Column("never", sa.Text(), nullable=True))\n'
           '    op.execute("SELECT pg_sleep(120)")')
SLEEPY_HISTORY = [
    ("0001", "baseline", '    op.execute("CREATE TABLE accounts (id serial PRIMARY KEY, name text)")\n'
                         '    op.execute("CREATE TABLE orders (id serial PRIMARY KEY, note text)")', "    pass"),
    ("0002", "slow", SLEEPER, "    pass"),
]


def start_playbook(tmp_path: Path, args: dict) -> subprocess.Popen:
    """ansible-playbook running alembic_migrate in its own session (so the test can kill it)."""
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "migrate", "dbops.migrations.alembic_migrate": args}]}]
    tmp_path.mkdir(parents=True, exist_ok=True)
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play))
    playbook.chmod(0o600)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    return subprocess.Popen([str(Path(sys.executable).parent / "ansible-playbook"), str(playbook), "-i", str(inventory)],
                            env=ansible_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def wait_for_sleeping_migration(db, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ansible-playbook ended before the migration slept"
        if db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbops-migrate-%%'"
                     " AND query LIKE '%%pg_sleep%%' AND state = 'active'"):
            return
        time.sleep(0.2)
    raise AssertionError("the migration never reached pg_sleep")


def migration_backends(db) -> int:
    return db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbops-migrate-%%'"
                     " AND datname = current_database()")


def assert_stopped_and_rolled_back(db, still_running, budget: float = 10.0) -> float:
    """Within ``budget`` seconds: nothing of the migration runs, its lock is free, nothing was committed."""
    started = time.monotonic()
    while time.monotonic() - started < budget:
        if not still_running() and not migration_backends(db) \
                and not migration_lock_status(parse_db_url(db.url))["lock_held"]:
            break
        time.sleep(0.2)
    took = time.monotonic() - started
    assert not still_running(), "alembic still runs %.1f s after its controller died" % took
    assert migration_backends(db) == 0
    assert migration_lock_status(parse_db_url(db.url))["lock_held"] is False
    assert revision_of(db) == "0001"
    assert "never" not in columns(db, "orders")
    assert db.scalar("SELECT count(*) FROM accounts WHERE name = 'from-0002'") == 0
    return took


def kill_session(proc: subprocess.Popen) -> None:
    """Clean up what is left of the killed run (its orphaned worker): only the group this test started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)
