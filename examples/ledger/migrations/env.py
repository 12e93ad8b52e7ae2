"""Alembic environment of the ledger: the database comes from LEDGER_DB_URL and the
revision is kept in the table ledger_schema_version (not alembic_version)."""
from __future__ import annotations

import logging
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

VERSION_TABLE = "ledger_schema_version"

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")


def database_url() -> str:
    url = os.environ.get("LEDGER_DB_URL", "")
    if not url:
        raise SystemExit("LEDGER_DB_URL is not set: give the database as postgresql+psycopg2://USER:PASSWORD@HOST/DB")
    return url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=None, literal_binds=True, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # One transaction per revision: a failed revision rolls back alone.
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE,
                          transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
