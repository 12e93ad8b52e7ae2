"""The ledger example's migrations (Flask-Migrate layout: migrations/alembic.ini without
script_location, hash revision ids, version table ledger_schema_version) on a real database,
and migration_risk's verdict on each of them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request
from tests.helpers.ansible import run_module
from tests.helpers.ledger import APP_DIR, MIGRATIONS_INI, VERSION_TABLE, release_heads, revision_chain

pytestmark = pytest.mark.integration

FLASK = str(Path(sys.executable).parent / "flask")
CHAIN = revision_chain()
# The guide's levels without a database (every table assumed large).
OFFLINE = {
    "3f2a9c1d7b44": "low",       # create tables
    "8b1e6f0a2c57": "low",       # nullable column
    "c41d7e93a0f8": "low",       # CHECK ... NOT VALID
    "5e0b2a8f6d13": "low",       # VALIDATE CONSTRAINT, index built concurrently
    "a97c3d5e1b20": "critical",  # backfill UPDATE of a table assumed large
    "d2f8b4c6e915": "high",      # integer -> bigint rewrites the table
    "e6a0c9f3b8d1": "critical",  # backfill + DROP COLUMN
}


def flask_db(db, *args: str) -> subprocess.CompletedProcess:
    """The app's own migration command (what the compose `migrate` service runs)."""
    env = dict(os.environ, LEDGER_DB_URL=db.sqlalchemy_url)
    proc = subprocess.run([FLASK, "--app", "ledger.app", "db", *args], env=env, cwd=APP_DIR, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def alembic(db, monkeypatch, direction: str, target: str) -> None:
    """In-process alembic, configured as `flask db` configures it (fast enough to walk every revision)."""
    from alembic import command
    from alembic.config import Config
    monkeypatch.setenv("LEDGER_DB_URL", db.sqlalchemy_url)
    cfg = Config(str(MIGRATIONS_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS_INI.parent))
    getattr(command, direction)(cfg, target)


def revision(db) -> str | None:
    if not db.scalar("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)):
        return None
    return db.scalar(f"SELECT version_num FROM {VERSION_TABLE}")


def verdicts(result: dict) -> dict[str, str]:
    return {r["revision"]: r["risk"] for r in result["revisions"]}


def test_the_releases_ship_prefixes_of_one_chain():
    assert CHAIN == list(OFFLINE)
    heads = release_heads()
    assert heads == {"1.0.0": CHAIN[1], "1.1.0": CHAIN[4], "1.2.0": CHAIN[6], "broken": CHAIN[4]}


def test_every_revision_up_and_down_in_the_custom_version_table(pg_db, monkeypatch):
    for rev in CHAIN:
        alembic(pg_db, monkeypatch, "upgrade", rev)
        assert revision(pg_db) == rev
    assert pg_db.scalar("SELECT to_regclass('alembic_version')") is None
    for rev in reversed(CHAIN[:-1]):
        alembic(pg_db, monkeypatch, "downgrade", rev)
        assert revision(pg_db) == rev
    alembic(pg_db, monkeypatch, "downgrade", "base")
    assert revision(pg_db) is None
    assert pg_db.scalar("SELECT to_regclass('entries')") is None


def test_backfills_keep_the_data_through_the_apps_own_command(pg_db):
    flask_db(pg_db, "upgrade", release_heads()["1.0.0"])
    pg_db.execute("INSERT INTO accounts (name) VALUES ('cash'), ('bank')")
    pg_db.execute("UPDATE accounts SET currency = 'USD' WHERE name = 'bank'")
    pg_db.execute("INSERT INTO entries (account_id, amount_cents, legacy_ref) "
                  "SELECT a.id, 100 * g, 'OLD-' || g FROM accounts a, generate_series(1, 3) g")
    flask_db(pg_db, "upgrade", "head")
    assert dict(pg_db.execute("SELECT name, currency FROM accounts")) == {"cash": "EUR", "bank": "USD"}
    assert pg_db.scalar("SELECT data_type FROM information_schema.columns "
                        "WHERE table_name = 'entries' AND column_name = 'amount_cents'") == "bigint"
    assert pg_db.scalar("SELECT count(*) FROM entries WHERE reference LIKE 'OLD-%'") == 6
    assert pg_db.scalar("SELECT sum(amount_cents) FROM entries") == 1200


def test_risk_per_revision_without_a_database():
    """The ini names no script_location: the revisions are found beside it, as Flask-Migrate does."""
    result = run_request(RiskRequest(alembic_config=str(MIGRATIONS_INI)))
    assert verdicts(result) == OFFLINE
    assert result["risk"] == "critical" and result["backup"] == "required"
    assert result["checklist"]["drops"] == ["DROP COLUMN entries.legacy_ref in revision e6a0c9f3b8d1"]
    rules = {(f["revision"], f["rule"]) for f in result["findings"]}
    assert ("5e0b2a8f6d13", "create-index-concurrently") in rules
    assert ("5e0b2a8f6d13", "validate-constraint") in rules
    assert ("d2f8b4c6e915", "alter-column-type") in rules
    assert not any(f["table"] in ("alembic_version", VERSION_TABLE) for f in result["findings"])


def test_risk_per_release_with_live_facts(pg_db, monkeypatch):
    """With the database the small tables turn the backfill and the type change into medium; the drop stays."""
    heads = release_heads()
    alembic(pg_db, monkeypatch, "upgrade", heads["1.0.0"])
    pg_db.execute("INSERT INTO accounts (name) SELECT 'a' || g FROM generate_series(1, 20) g")
    pg_db.execute("INSERT INTO entries (account_id, amount_cents) SELECT id, 5 FROM accounts")
    pg_db.execute("ANALYZE accounts; ANALYZE entries")
    # from_revision: the database keeps its revision in ledger_schema_version, not alembic_version.
    to_1_1 = run_request(RiskRequest(alembic_config=str(MIGRATIONS_INI), from_revision=heads["1.0.0"],
                                     to_revision=heads["1.1.0"], connection_params={"db_url": pg_db.url}))
    assert verdicts(to_1_1) == {"c41d7e93a0f8": "low", "5e0b2a8f6d13": "low", "a97c3d5e1b20": "medium"}
    assert to_1_1["risk"] == "medium" and to_1_1["recommended_path"] == "review"

    alembic(pg_db, monkeypatch, "upgrade", heads["1.1.0"])
    to_1_2 = run_request(RiskRequest(alembic_config=str(MIGRATIONS_INI), from_revision=heads["1.1.0"],
                                     connection_params={"db_url": pg_db.url}))
    assert verdicts(to_1_2) == {"d2f8b4c6e915": "medium", "e6a0c9f3b8d1": "critical"}
    assert to_1_2["risk"] == "critical" and to_1_2["recommended_path"] == "manual"


def test_module_reads_the_flask_migrate_layout():
    run = run_module("migration_risk", {"alembic_config": str(MIGRATIONS_INI)}, check=True)
    assert run.rc == 0, run.output
    assert run.result.get("failed") is not True, run.result.get("msg")
    assert [r["revision"] for r in run.result["revisions"]] == CHAIN
    assert run.result["risk"] == "critical" and run.result["changed"] is False


def test_an_older_release_image_keeps_only_its_revisions(tmp_path):
    """tools/keep_revisions.py, as the Dockerfile runs it for ledger-api:1.1.0."""
    import shutil
    versions = tmp_path / "versions"
    shutil.copytree(APP_DIR / "migrations" / "versions", versions, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, str(APP_DIR / "tools" / "keep_revisions.py"), str(versions),
                           release_heads()["1.1.0"]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    kept = sorted(p.name.split("_")[0] for p in versions.glob("*.py"))
    assert kept == sorted(CHAIN[:5])
    assert proc.stdout.count("not in this release") == 2
    unknown = subprocess.run([sys.executable, str(APP_DIR / "tools" / "keep_revisions.py"), str(versions), "ffffffffffff"],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode != 0 and "unknown head revision ffffffffffff" in unknown.stderr
