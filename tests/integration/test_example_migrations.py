"""The example app's migrations move up and down through every revision on a real database."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[2] / "examples" / "auto_trader"
REVISIONS = ["0001", "0002", "0003", "0004", "0005"]


def alembic(db, *args: str) -> str:
    env = dict(os.environ, DATABASE_URL=db.url)
    proc = subprocess.run([sys.executable, "-m", "alembic", "-c", str(APP / "alembic.ini"), *args],
                          env=env, capture_output=True, text=True, cwd=APP, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def current(db) -> str | None:
    if not db.scalar("SELECT to_regclass('alembic_version') IS NOT NULL"):
        return None
    return db.scalar("SELECT version_num FROM alembic_version")


def seed(db, users=200, orders=2000):
    env = dict(os.environ, DATABASE_URL=db.url, PYTHONPATH=str(APP))
    subprocess.run([sys.executable, "-m", "auto_trader.seed", "--users", str(users), "--orders", str(orders)],
                   env=env, check=True, capture_output=True, timeout=120)


def test_upgrade_and_downgrade_through_every_revision(pg_db):
    for revision in REVISIONS:
        alembic(pg_db, "upgrade", revision)
        assert current(pg_db) == revision
    for revision in reversed(REVISIONS[:-1]):
        alembic(pg_db, "downgrade", "-1")
        assert current(pg_db) == revision
    alembic(pg_db, "downgrade", "base")
    assert current(pg_db) is None
    assert pg_db.scalar("SELECT to_regclass('orders')") is None


def test_data_survives_the_round_trip_and_backfill_is_computed(pg_db):
    alembic(pg_db, "upgrade", "0004")
    seed(pg_db)
    orders = pg_db.scalar("SELECT count(*) FROM orders")
    assert orders == 2000
    alembic(pg_db, "upgrade", "head")
    assert pg_db.scalar("SELECT count(*) FROM orders WHERE notional IS DISTINCT FROM quantity * price") == 0
    assert pg_db.scalar("SELECT data_type FROM information_schema.columns "
                        "WHERE table_name = 'orders' AND column_name = 'quantity'") == "bigint"
    alembic(pg_db, "downgrade", "0003")
    assert pg_db.scalar("SELECT count(*) FROM orders") == orders
    assert pg_db.scalar("SELECT data_type FROM information_schema.columns "
                        "WHERE table_name = 'orders' AND column_name = 'quantity'") == "integer"


def test_head_matches_the_models(pg_db):
    """The models describe the head schema: autogenerate finds nothing to do."""
    alembic(pg_db, "upgrade", "head")
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine
    sys.path.insert(0, str(APP))
    from auto_trader.models import metadata
    engine = create_engine(pg_db.sqlalchemy_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []
