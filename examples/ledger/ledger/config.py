"""Runtime settings, all from the environment."""
from __future__ import annotations

import os
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "ledger_schema_version"


def database_url() -> str:
    """The SQLAlchemy URL (postgresql+psycopg2://...); the app cannot start without it."""
    url = os.environ.get("LEDGER_DB_URL", "")
    if not url:
        raise SystemExit("LEDGER_DB_URL is not set: give the database as postgresql+psycopg2://USER:PASSWORD@HOST/DB")
    return url


RELEASE = os.environ.get("LEDGER_RELEASE", "dev")
# A deliberately broken release answers 500 on /health (set at image build time).
FAULT = os.environ.get("LEDGER_FAULT", "none")
# While this file exists the app answers 503 on every route except /health.
MAINTENANCE_FLAG = Path(os.environ.get("LEDGER_MAINTENANCE_FLAG", "/var/run/ledger/maintenance"))
