"""migration_risk on bad input: a clear error naming the file, revision or statement; never a silent "low"."""
from __future__ import annotations

import socket

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import RiskInputError
from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request
from tests.helpers.alembic_project import REVISION_HEADER, write_alembic_project
from tests.helpers.ansible import run_module

pytestmark = pytest.mark.integration



TWO_REVISIONS = {
    "r1.py": '''
        revision = "r1"
        down_revision = None
        def upgrade():
            op.add_column("users", sa.Column("x", sa.Integer))
        def downgrade():
            op.drop_column("users", "x")
        ''',
    "r2.py": '''
        revision = "r2"
        down_revision = "r1"
        def upgrade():
            op.execute("UPDATE users SET x = 1 WHERE x IS NULL")
        def downgrade():
            pass
        ''',
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.fault("migration_risk: SQL that does not parse", kind="bad_input",
                   holds="module fails naming the line and the statement; no verdict is returned")
def test_sql_that_does_not_parse(tmp_path):
    sql_file = tmp_path / "m.sql"
    sql_file.write_text("ALTER TABLE users ADD COLUMN a int;\nALTER TABLE users ALTR COLUMN a TYPE bigint;\n")
    run = run_module("migration_risk", {"sql_file": str(sql_file)})
    assert run.result.get("failed") is True
    msg = run.result["msg"]
    assert str(sql_file) in msg and "line 2" in msg and "ALTR COLUMN" in msg
    assert "risk" not in run.result


@pytest.mark.fault("migration_risk: alembic.ini missing", kind="bad_input",
                   holds="error names the path and says what to give instead")
def test_missing_alembic_ini(tmp_path):
    run = run_module("migration_risk", {"alembic_config": str(tmp_path / "nope" / "alembic.ini")})
    assert run.result.get("failed") is True
    assert "alembic.ini" in run.result["msg"] and "does not exist" in run.result["msg"]


@pytest.mark.fault("migration_risk: unknown revision", kind="bad_input",
                   holds="error names the revision and points at alembic history")
def test_unknown_revision(tmp_path):
    ini = write_alembic_project(tmp_path, TWO_REVISIONS, header=REVISION_HEADER)
    with pytest.raises(RiskInputError) as err:
        run_request(RiskRequest(alembic_config=str(ini), from_revision="deadbeef"))
    assert "deadbeef" in str(err.value) and "alembic history" in str(err.value)


@pytest.mark.fault("migration_risk: unreachable database", kind="bad_input",
                   holds="error names the masked URL, never the password; no verdict")
def test_unreachable_database():
    url = "postgresql://app:s3cr3t-pw@127.0.0.1:%d/app" % _free_port()
    run = run_module("migration_risk", {"sql": "SELECT 1", "db_url": url, "connect_timeout": 3})
    assert run.result.get("failed") is True
    assert "cannot connect" in run.result["msg"] and "127.0.0.1" in run.result["msg"]
    assert "s3cr3t-pw" not in run.output and "s3cr3t-pw" not in str(run.result)


@pytest.mark.fault("migration_risk: revision importing application code", kind="bad_input",
                   holds="the import is stood in for and named in stand_ins; the revision's own statements are judged")
def test_revision_importing_the_app_is_analysed_with_a_stand_in(tmp_path):
    revisions = dict(TWO_REVISIONS)
    revisions["r3.py"] = '''
        from myapp.models import something_not_installed
        revision = "r3"
        down_revision = "r2"
        def upgrade():
            op.add_column("users", sa.Column("y", sa.Integer))
        def downgrade():
            op.drop_column("users", "y")
        '''
    ini = write_alembic_project(tmp_path, revisions, header=REVISION_HEADER)
    result = run_request(RiskRequest(alembic_config=str(ini), from_revision="r2"))
    assert [r["revision"] for r in result["revisions"]] == ["r3"]
    rev = result["revisions"][0]
    assert rev["analysed"] is True and rev["error"] is None
    assert rev["stand_ins"] == ["myapp", "myapp.models", "myapp.models.something_not_installed"]
    assert result["stand_ins"] == rev["stand_ins"] and result["rendered_by"] == "controller"
    assert [(f["rule"], f["statement"]) for f in result["findings"]] == [
        ("add-column", "ALTER TABLE users ADD COLUMN y INTEGER"),
        ("lock-timeout-missing", "ALTER TABLE users ADD COLUMN y INTEGER")]
    assert rev["risk"] == "low" and rev["downgrade_drops"] == ["users.y"]


@pytest.mark.fault("migration_risk: upgrade() reads rows through the connection", kind="bad_input",
                   holds="rendered against a stand-in connection; the loop of data changes is critical, with its line")
def test_revision_that_reads_results_offline(tmp_path):
    revisions = {"r1.py": '''
        revision = "r1"
        down_revision = None
        def upgrade():
            rows = op.get_bind().execute(sa.text("SELECT id FROM users")).fetchall()
            for row in rows:
                op.execute("UPDATE users SET x = 1 WHERE id = %d" % row[0])
        def downgrade():
            pass
        '''}
    ini = write_alembic_project(tmp_path, revisions, header=REVISION_HEADER)
    result = run_request(RiskRequest(alembic_config=str(ini)))
    rev = result["revisions"][0]
    assert rev["analysed"] is True and rev["error"] is None and rev["risk"] == "critical"
    assert result["risk"] == "critical"
    [loop] = result["findings"]
    assert loop["rule"] == "python-data-loop" and loop["risk"] == "critical"
    # Line 9 of the written file: two header lines, a blank line, then the revision body.
    assert loop["statement"] == "upgrade() line 9"
    assert loop["message"].startswith("upgrade() executes statements in a loop (line 9): ")


@pytest.mark.fault("migration_risk: missing sql_file", kind="bad_input", holds="error names the file")
def test_missing_sql_file(tmp_path):
    with pytest.raises(RiskInputError) as err:
        run_request(RiskRequest(sql_file=str(tmp_path / "missing.sql")))
    assert "missing.sql" in str(err.value)


@pytest.mark.fault("migration_risk: invalid config file", kind="bad_input",
                   holds="unknown rule ids and keys are refused with the allowed values")
def test_bad_config_file(tmp_path):
    config = tmp_path / "risk.yml"
    config.write_text("disabled_rules: [no-such-rule]\n")
    with pytest.raises(RiskInputError) as err:
        run_request(RiskRequest(sql="SELECT 1", config_file=str(config)))
    assert "no-such-rule" in str(err.value)
    config.write_text("thresholds: {small_rows: 5}\n")
    with pytest.raises(RiskInputError) as err:
        run_request(RiskRequest(sql="SELECT 1", config_file=str(config)))
    assert "small_table_rows" in str(err.value)


@pytest.mark.fault("migration_risk: no input", kind="bad_input", holds="module refuses with the input options")
def test_no_input_at_all():
    run = run_module("migration_risk", {})
    assert run.result.get("failed") is True
    assert "sql" in run.result["msg"] and "alembic_config" in run.result["msg"]


@pytest.mark.fault("migration_risk: server_version out of range", kind="bad_input",
                   holds="module refuses with the accepted range")
def test_server_version_out_of_range():
    run = run_module("migration_risk", {"sql": "SELECT 1", "server_version": 7})
    assert run.result.get("failed") is True and "between 10 and 18" in run.result["msg"]


@pytest.mark.fault("migration_risk: trace without a database", kind="bad_input",
                   holds="module refuses and says which options to set")
def test_trace_without_database():
    run = run_module("migration_risk", {"sql": "SELECT 1", "trace": True})
    assert run.result.get("failed") is True and "db_url" in run.result["msg"]


@pytest.mark.fault("migration_risk: revision file with a Python syntax error", kind="bad_input",
                   holds="reported as not analysed (high) naming the line, the other revisions still analysed")
def test_revision_with_syntax_error(tmp_path):
    revisions = dict(TWO_REVISIONS)
    revisions["r3.py"] = 'revision = "r3"\ndown_revision = "r2"\ndef upgrade(:\n    pass\n'
    ini = write_alembic_project(tmp_path, revisions, header=REVISION_HEADER)
    result = run_request(RiskRequest(alembic_config=str(ini)))
    verdicts = {r["revision"]: (r["risk"], r["analysed"]) for r in result["revisions"]}
    assert verdicts == {"r1": ("low", True), "r2": ("critical", True), "r3": ("high", False)}
    r3 = [r for r in result["revisions"] if r["revision"] == "r3"][0]
    # Line 5: the two header lines come first, then "def upgrade(:" is the third line of the body.
    assert r3["error"] == "the file does not compile: invalid syntax at line 5"
    not_analysed = [f for f in result["findings"] if f["rule"] == "revision-not-analysed"]
    assert [(f["revision"], f["risk"]) for f in not_analysed] == [("r3", "high")]
    assert not_analysed[0]["message"].endswith(r3["error"])


@pytest.mark.fault("migration_risk: trace tools missing", kind="bad_input",
                   holds="clear error naming the tool; no scratch database is left behind")
def test_trace_with_missing_client_tools(pg_db, tmp_path):
    with pytest.raises(RiskInputError, match="pg_dump not found"):
        run_request(RiskRequest(sql="ALTER TABLE t ADD COLUMN x int", connection_params={"db_url": pg_db.url},
                                trace=True, trace_bin_dir=str(tmp_path)))
    assert pg_db.scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbops_trace_%'") == 0


@pytest.mark.fault("migration_risk: database at a revision the project does not know", kind="bad_input",
                   holds="error names the database revision and what to do; nothing is judged low")
def test_database_ahead_of_the_code(pg_db, tmp_path):
    pg_db.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    pg_db.execute("INSERT INTO alembic_version VALUES ('f00dcafe')")
    ini = write_alembic_project(tmp_path, TWO_REVISIONS, header=REVISION_HEADER)
    with pytest.raises(RiskInputError) as err:
        run_request(RiskRequest(alembic_config=str(ini), connection_params={"db_url": pg_db.url}))
    assert "f00dcafe" in str(err.value) and "database" in str(err.value)
