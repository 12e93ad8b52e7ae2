"""`flask --app ledger.app db upgrade|downgrade|current`, the way Flask-Migrate drives Alembic.

migrations/alembic.ini names no script_location: like Flask-Migrate, the command line supplies
the migrations folder itself.
"""
from __future__ import annotations

import click
from alembic import command
from alembic.config import Config

from . import config


def alembic_config() -> Config:
    cfg = Config(str(config.MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(config.MIGRATIONS_DIR))
    return cfg


@click.group("db")
def db_commands() -> None:
    """Database migrations."""


@db_commands.command("upgrade")
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    command.upgrade(alembic_config(), revision)


@db_commands.command("downgrade")
@click.argument("revision", default="-1")
def downgrade(revision: str) -> None:
    command.downgrade(alembic_config(), revision)


@db_commands.command("current")
def current() -> None:
    command.current(alembic_config())
