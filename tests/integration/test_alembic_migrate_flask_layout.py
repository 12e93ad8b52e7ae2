"""alembic_migrate on a Flask-Migrate layout: migrations/alembic.ini names no script_location; env.py
and versions/ sit beside it (``flask db`` hands alembic that folder, the alembic CLI does not)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.ansible import failure_message, run_module
from tests.helpers.postgres import TEST_PASSWORD

from tests.helpers.migrate_project import (
    alembic_env, columns, make_project, module_args, revision_of)

pytestmark = pytest.mark.integration

ALEMBIC = str(Path(sys.executable).parent / "alembic")


@pytest.fixture
def flask_ini(tmp_path):
    """The project of make_project, rearranged the way Flask-Migrate writes it."""
    ini = make_project(tmp_path / "proj")
    folder = ini.parent / "migrations"
    text = "\n".join(line for line in ini.read_text().splitlines() if not line.startswith("script_location"))
    (folder / "alembic.ini").write_text(text + "\n")
    ini.unlink()
    return folder / "alembic.ini"


def test_flask_migrate_layout_migrates_up_with_the_ini_folder_as_script_location(pg_db, flask_ini):
    # The bare alembic command line cannot read this project: the reason the launcher exists.
    plain = subprocess.run([ALEMBIC, "-c", str(flask_ini), "history"], capture_output=True, text=True,
                           env=alembic_env(pg_db), cwd=str(flask_ini.parent))
    assert plain.returncode != 0 and "script_location" in plain.stdout + plain.stderr

    check = run_module("alembic_migrate", module_args(pg_db, flask_ini), check=True)
    assert not check.result.get("failed"), check.output
    pending = [p["revision"] for p in check.result["pending"]]
    assert pending == ["0001", "0002", "0003", "0004"] and revision_of(pg_db) is None

    run = run_module("alembic_migrate", module_args(pg_db, flask_ini))
    assert not run.result.get("failed"), run.output
    assert [a["revision"] for a in run.result["applied"]] == pending
    assert revision_of(pg_db) == pending[-1]
    assert columns(pg_db, "orders")
    assert TEST_PASSWORD not in run.output and TEST_PASSWORD not in json.dumps(run.result)

    again = run_module("alembic_migrate", module_args(pg_db, flask_ini))
    assert not again.result.get("failed") and again.result["changed"] is False


def test_launcher_alembic_on_a_flask_migrate_ini_shows_alembic_own_error(pg_db, flask_ini):
    run = run_module("alembic_migrate", module_args(pg_db, flask_ini, launcher="alembic"))
    message = failure_message(run)
    assert "FAILED: No 'script_location' key found in configuration" in message, message
    assert revision_of(pg_db) is None
