"""Runtime settings from the environment."""
from __future__ import annotations

import os


def database_url() -> str:
    """DATABASE_URL for SQLAlchemy with psycopg2 (a bare postgresql:// would select psycopg 3)."""
    url = os.environ.get("DATABASE_URL", "postgresql://auto_trader@localhost:5432/auto_trader")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


APP_VERSION = os.environ.get("APP_VERSION", "dev")
# Deliberate faults for testing deploys: none | crash | unhealthy | http500 | crash_after
APP_FAULT = os.environ.get("APP_FAULT", "none")
