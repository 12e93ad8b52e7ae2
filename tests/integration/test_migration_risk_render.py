"""Render where the code lives: the application's interpreter, the release image; version tables.

executor=python runs the renderer in another interpreter and must judge every fixture history
exactly as the controller does; executor=compose renders inside a one-off container of the
release image, so a revision the image adds (and the host checkout lacks) is judged.
"""
from __future__ import annotations

import io
import sys
import uuid
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk.render_elsewhere import RenderSpec
from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request
from tests.helpers.ansible import run_module
from tests.helpers.postgres import TEST_PASSWORD
from tests.helpers.release import base_image
from tests.helpers.stack import APP_DIR, COMPOSE_FILE
from tests.unit.test_risk_histories import CASES, HISTORIES, expectation

pytestmark = pytest.mark.integration
PYTHON = sys.executable


def verdict(result):
    return (result["risk"], [(r["revision"], r["risk"], r["analysed"], r["error"], r["source_sha256"], r["stand_ins"])
                             for r in result["revisions"]], result["heads"])


@pytest.mark.parametrize("name", CASES)
def test_python_executor_judges_as_the_controller(name):
    expect = expectation(name)
    base = dict(alembic_config=str(HISTORIES / name / expect.get("ini", "alembic.ini")),
                ini_section=expect.get("ini_section", "alembic"))
    here = run_request(RiskRequest(**base))
    there = run_request(RiskRequest(render=RenderSpec(executor="python", python=PYTHON,
                                                      ini_section=base["ini_section"]), **base))
    assert there["rendered_by"] == "python" and here["rendered_by"] == "controller"
    assert verdict(there) == verdict(here)
    assert there["render"]["python"] == "%d.%d.%d" % sys.version_info[:3]


def test_python_executor_with_a_relative_ini_path(monkeypatch):
    monkeypatch.chdir(HISTORIES)
    result = run_request(RiskRequest(alembic_config="relative_paths/deploy/alembic.ini",
                                     render=RenderSpec(executor="python", python=PYTHON)))
    assert [(r["revision"], r["analysed"], r["stand_ins"]) for r in result["revisions"]] == [("0001", True, [])]


def test_python_executor_through_the_module_names_a_bad_interpreter(tmp_path):
    ini = HISTORIES / "flask_migrate" / "migrations" / "alembic.ini"
    good = run_module("migration_risk", {"alembic_config": str(ini), "executor": "python", "python": PYTHON})
    assert good.result["rendered_by"] == "python" and good.result["risk"] == "high", good.result
    assert [r["source"] for r in good.result["revisions"]] == ["versions/3f1e2d4c5b6a_initial.py",
                                                               "versions/4a2b3c4d5e6f_email_index.py"]
    missing = run_module("migration_risk", {"alembic_config": str(ini), "executor": "python",
                                            "python": str(tmp_path / "nope" / "python")})
    assert missing.result["failed"] and "is not an executable file" in missing.result["msg"]
    no_alembic = tmp_path / "python"
    no_alembic.write_text("#!/bin/sh\nexec /usr/bin/python3 -I -S \"$@\"\n")
    no_alembic.chmod(0o755)
    bare = run_module("migration_risk", {"alembic_config": str(ini), "executor": "python", "python": str(no_alembic)})
    assert bare.result["failed"] and "has no alembic/SQLAlchemy" in bare.result["msg"], bare.result["msg"]


def test_ini_problems_name_the_real_cause(tmp_path):
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    missing = run_module("migration_risk", {"alembic_config": str(tmp_path / "alembic.ini")})
    assert missing.result["failed"]
    assert "the migrations folder %s/migrations" % tmp_path in missing.result["msg"]
    assert "from_revision" not in missing.result["msg"]
    section = run_module("migration_risk", {"alembic_config": str(HISTORIES / "multi_section" / "alembic.ini")})
    assert section.result["failed"] and "has no [alembic] section (it has: main, audit)" in section.result["msg"]
    chosen = run_module("migration_risk", {"alembic_config": str(HISTORIES / "multi_section" / "alembic.ini"),
                                           "ini_section": "main"})
    assert [r["revision"] for r in chosen.result["revisions"]] == ["m001"] and chosen.result["risk"] == "low"


def test_version_table_options_and_what_was_read(pg_db):
    ini = str(HISTORIES / "branches_merge" / "alembic.ini")
    absent = run_request(RiskRequest(alembic_config=ini, connection_params={"db_url": pg_db.url}))
    assert absent["version_table"] == {"table": "alembic_version", "found": False, "revisions": []}
    assert len(absent["revisions"]) == 5
    pg_db.execute("CREATE SCHEMA app; CREATE TABLE app.schema_revisions (version_num varchar(32) PRIMARY KEY);"
                  "INSERT INTO app.schema_revisions VALUES ('feat_a'), ('hotfix')")
    hidden = run_module("migration_risk", {"alembic_config": ini, "db_url": pg_db.url,
                                           "version_table": "schema_revisions"})
    assert hidden.result["failed"]
    assert "not on the search_path, but exists in schema app: set version_table_schema" in hidden.result["msg"]
    read = run_module("migration_risk", {"alembic_config": ini, "db_url": pg_db.url,
                                         "version_table": "schema_revisions", "version_table_schema": "app"})
    assert read.result["version_table"] == {"table": "app.schema_revisions", "found": True,
                                            "revisions": ["feat_a", "hotfix"]}
    assert sorted(r["revision"] for r in read.result["revisions"]) == ["feat_b", "merge1"]


# ----------------------------------------------------------------------------- release image

NEW_REVISION = '''"""Index orders by status: a plain CREATE INDEX, shipped only in the image."""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_orders_status", "orders", ["status"])


def downgrade():
    op.drop_index("ix_orders_status", table_name="orders")
'''


@pytest.fixture(scope="module")
def image_with_new_revision(docker_client):
    """The example app image plus revision 0006, which the host checkout does not have."""
    repo = "dbops-render-%s/auto_trader" % uuid.uuid4().hex[:8]
    context = io.BytesIO()
    import tarfile
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in (("Dockerfile", "FROM %s\nCOPY 0006_index_orders_status.py "
                                          "/app/migrations/versions/\n" % base_image(docker_client)),
                           ("0006_index_orders_status.py", NEW_REVISION)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, tag=repo + ":render-2", rm=True, pull=False)
    yield repo
    docker_client.images.remove(repo + ":render-2", force=True)


@pytest.mark.docker
def test_compose_executor_judges_what_the_image_applies(image_with_new_revision):
    assert not (APP_DIR / "migrations" / "versions" / "0006_index_orders_status.py").exists()
    project = "trender" + uuid.uuid4().hex[:8]
    common = {"from_revision": "0005"}
    host = run_module("migration_risk", dict(common, alembic_config=str(APP_DIR / "alembic.ini")))
    assert host.result["revisions"] == [] and host.result["risk"] == "low", host.result
    image = run_module("migration_risk", dict(
        common, executor="compose", project_src=str(APP_DIR), compose_files=[COMPOSE_FILE.name],
        compose_project_name=project,
        env={"APP_IMAGE": image_with_new_revision, "APP_VERSION": "render-2", "POSTGRES_PASSWORD": TEST_PASSWORD}))
    result = image.result
    assert not result.get("failed"), result.get("msg")
    assert result["rendered_by"] == "compose"
    assert [r["revision"] for r in result["revisions"]] == ["0006"]
    assert result["risk"] == "high"
    finding = next(f for f in result["findings"] if f["rule"] == "create-index")
    assert finding["table"] == "orders" and finding["revision"] == "0006"
    assert result["revisions"][0]["source"] == "migrations/versions/0006_index_orders_status.py"
    import hashlib
    assert result["revisions"][0]["source_sha256"] == hashlib.sha256(NEW_REVISION.encode()).hexdigest()
    assert TEST_PASSWORD not in str(result)
    # The one-off container is gone, and nothing else of the project was started (--no-deps).
    import docker
    leftovers = docker.from_env().containers.list(all=True, filters={"label": "com.docker.compose.project=" + project})
    assert leftovers == []
