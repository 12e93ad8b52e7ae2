"""Bad input that reaches PostgreSQL and alembic: hostile names and paths (shell metacharacters,
quotes, spaces, ``=``), ambiguous revisions, wrong credentials, a host that does not answer,
options of the wrong type.

Names travel as single argv elements, environment values or quoted identifiers, never through a
shell, so a hostile name either works or fails clearly, and nothing it spells runs. Each name
embeds ``touch`` of a unique marker file; the tests assert the marker was never created.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.helpers import postgres as pgh
from tests.helpers.ansible import failure_message, run_module
from tests.helpers.migrate_project import make_project, module_args, revision_of
from tests.helpers.postgres import TEST_PASSWORD, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def hostile(marker: str) -> str:
    """A name that runs ``touch marker`` in three ways if it ever reaches a shell."""
    return "it's \"q\" $(touch %s) `touch %s`;touch %s& a=b" % (marker, marker, marker)


@pytest.fixture
def marker(tmp_path):
    """A unique file name; after the test it must exist nowhere a stray shell could have made it."""
    name = "pwned" + uuid.uuid4().hex[:6]
    yield name
    places = [tmp_path, Path.cwd(), REPO, Path.home(), Path("/tmp"), Path("/")]
    made = [str(p) for place in places if place.is_dir()
            for p in (place.rglob(name) if place == tmp_path else [place / name]) if p.exists()]
    assert made == [], "a name was run by a shell: %s" % made


# ------------------------------------------------------------------------ hostile names and paths


@pytest.mark.fault("alembic_migrate and migration_risk with alembic.ini under a path of quotes, spaces and `$(...)`",
                   kind="bad_input", holds="both work on the project; nothing in the path runs")
def test_alembic_project_under_a_hostile_path(pg_db, tmp_path, marker):
    config = make_project(tmp_path / hostile(marker))
    run = run_module("alembic_migrate", module_args(pg_db, config, target="head"))
    assert not run.result.get("failed"), run.output[-3000:]
    assert run.result["changed"] is True and revision_of(pg_db) == "0004"
    risk = run_module("migration_risk", {"alembic_config": str(config), "from_revision": "0002",
                                         "to_revision": "head"})
    assert not risk.result.get("failed"), risk.output[-3000:]
    assert [r["revision"] for r in risk.result["revisions"]] == ["0003", "0004"]


@pytest.mark.fault("migration_risk with sql_file under a path of quotes, spaces and `$(...)`", kind="bad_input",
                   holds="the file is read and judged; nothing in the path runs")
def test_sql_file_under_a_hostile_path(tmp_path, marker):
    folder = tmp_path / hostile(marker)
    folder.mkdir()
    sql_file = folder / "drop it's.sql"
    sql_file.write_text("ALTER TABLE users DROP COLUMN nickname;\n")
    run = run_module("migration_risk", {"sql_file": str(sql_file)})
    assert not run.result.get("failed"), run.output[-3000:]
    assert run.result["risk"] == "critical"


@pytest.mark.fault("pg_backup of a database named with quotes, spaces, `=` and `$(...)` into such a folder, "
                   "restored under another such name", kind="bad_input",
                   holds="backup verified by restore, restored with equal row counts; nothing in the names runs")
def test_backup_and_restore_with_hostile_names(pg_server, tmp_path, marker):
    source = "o'brien \"db\" $(touch %s);a=b" % marker
    target = "restored 'x' `touch %s` = y" % marker
    pgh.create_database(pg_server, source)
    try:
        with pg_server.connect(source) as conn, conn.cursor() as cur:
            cur.execute('CREATE TABLE "odd ""table"" name" (id serial PRIMARY KEY, body text)')
            cur.execute("""INSERT INTO "odd ""table"" name" (body) SELECT 'row ' || g FROM generate_series(1, 250) g""")
        dest = tmp_path / hostile(marker)
        made = run_module("pg_backup", dict(pg_server.login_args(source), dest=str(dest), verify="restore"))
        assert not made.result.get("failed"), made.output[-3000:]
        assert made.result["verified"] is True
        assert made.result["manifest"]["database"] == source
        assert os.path.dirname(made.result["path"]) == str(dest)
        restored = run_module("pg_backup", dict(pg_server.login_args(), state="restored", src=made.result["path"],
                                                target_db=target))
        assert not restored.result.get("failed"), restored.output[-3000:]
        assert restored.result["restored_tables"] == {'public.odd "table" name': 250}
        with pg_server.connect(target) as conn, conn.cursor() as cur:
            cur.execute('SELECT count(*), max(body) FROM "odd ""table"" name"')
            assert cur.fetchone() == (250, "row 99")
    finally:
        pgh.drop_database(pg_server, target)
        pgh.drop_database(pg_server, source)


# ------------------------------------------------------------------------ alembic_migrate bad input


@pytest.mark.fault("alembic_migrate: a target that is a prefix of several revisions", kind="bad_input",
                   holds="fails saying it is ambiguous and to give more characters; nothing applied")
def test_ambiguous_revision_prefix(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    msg = failure_message(run_module("alembic_migrate", module_args(pg_db, config, target="000")))
    assert "'000' is ambiguous" in msg and "give more characters" in msg
    assert revision_of(pg_db) is None


@pytest.mark.fault("alembic_migrate: wrong password", kind="bad_input",
                   holds="fails naming the masked URL; neither password is shown; nothing applied")
def test_wrong_password(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    wrong = "Wr0ng-" + uuid.uuid4().hex[:8]
    url = pg_db.url.replace(":%s@" % TEST_PASSWORD, ":%s@" % wrong)
    assert wrong in url
    run = run_module("alembic_migrate", module_args(pg_db, config, db_url=url))
    msg = failure_message(run)
    assert "cannot connect to" in msg and "password authentication failed" in msg
    assert wrong not in run.output and TEST_PASSWORD not in run.output
    assert revision_of(pg_db) is None


@pytest.mark.fault("alembic_migrate: database host that does not answer", kind="bad_input",
                   holds="fails within the connect timeout naming host and port; nothing applied")
def test_unreachable_database(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    port = free_port()  # bound, then released: nobody listens there
    url = "postgresql://app:%s@127.0.0.1:%d/app" % (TEST_PASSWORD, port)
    run = run_module("alembic_migrate", module_args(pg_db, config, db_url=url))
    msg = failure_message(run)
    assert "cannot connect to" in msg and str(port) in msg
    assert TEST_PASSWORD not in run.output


@pytest.mark.parametrize("option,value", [("retries", "many"), ("retry_delay", "later"), ("lock_wait", [30])],
                         ids=["retries-str", "retry_delay-str", "lock_wait-list"])
@pytest.mark.fault("alembic_migrate: an option of the wrong type", kind="bad_input",
                   holds="refused naming the option before connecting; nothing applied")
def test_option_of_the_wrong_type(pg_db, tmp_path, option, value):
    config = make_project(tmp_path / "proj")
    msg = failure_message(run_module("alembic_migrate", module_args(pg_db, config, **{option: value})))
    assert option in msg
    assert revision_of(pg_db) is None


@pytest.mark.fault("alembic_migrate: alembic executable that does not exist", kind="bad_input",
                   holds="fails naming the path and the option to set; nothing applied")
def test_missing_alembic_executable(pg_db, tmp_path):
    config = make_project(tmp_path / "proj")
    missing = str(tmp_path / "no such venv" / "bin" / "alembic")
    assert shutil.which(missing) is None
    msg = failure_message(run_module("alembic_migrate", module_args(pg_db, config, alembic_bin=missing)))
    assert "alembic" in msg and "no such venv" in msg
    assert revision_of(pg_db) is None


# ------------------------------------------------------------------------ compose_deploy


@pytest.mark.docker
@pytest.mark.fault("compose_deploy with a project_name of quotes, spaces and `$(...)`", kind="bad_input",
                   holds="refused before compose runs, with a name compose accepts; no container; nothing runs")
def test_compose_project_name_with_shell_characters(docker_client, marker):
    from tests.helpers.stack import APP_DIR, COMPOSE_FILE
    name = hostile(marker)
    run = run_module("compose_deploy", {"project_src": str(APP_DIR), "files": [COMPOSE_FILE.name],
                                        "project_name": name})
    msg = failure_message(run)
    assert "is not a compose project name" in msg and "nothing was changed" in msg
    assert "for example 'it-s-q-touch-%s-touch-%s-touch-%s-a-b'" % (marker, marker, marker) in msg
    assert docker_client.containers.list(all=True, filters={"label": "com.docker.compose.project=%s" % name}) == []
