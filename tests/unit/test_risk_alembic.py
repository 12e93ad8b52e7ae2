"""Alembic rendering per revision (offline, env.py never runs) and the revision's Python checks."""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk.alembic_units import (
    existing_type_hints, judge_downgrade, loop_data_changes, pending_units)
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import Engine, RiskInputError

HEADER = "from alembic import op\nimport sqlalchemy as sa\n"


def project(tmp_path: Path, revisions: dict) -> str:
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text("raise RuntimeError('env.py must never run')\n")
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n"
                                          "prepend_sys_path = %(here)s\n")
    for name, body in revisions.items():
        (versions / name).write_text(HEADER + textwrap.dedent(body))
    return str(tmp_path / "alembic.ini")


def rev(rid, down, upgrade, downgrade="op.execute('SELECT 1')"):
    return textwrap.dedent('''
        revision = %r
        down_revision = %r
        def upgrade():
        %s
        def downgrade():
        %s
        ''') % (rid, down, textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
                textwrap.indent(textwrap.dedent(downgrade).strip(), "    "))


def test_each_revision_rendered_separately_with_autocommit_blocks(tmp_path):
    ini = project(tmp_path, {
        "a.py": rev("a", None, "op.add_column('users', sa.Column('n', sa.Integer))"),
        "b.py": rev("b", "a", """
            with op.get_context().autocommit_block():
                op.create_index('ix_users_n', 'users', ['n'], postgresql_concurrently=True)
            op.create_index('ix_users_m', 'users', ['m'])
            """),
    })
    path_before = list(sys.path)
    units = pending_units(ini)
    assert sys.path == path_before
    assert [u.revision for u in units] == ["a", "b"]
    assert "ADD COLUMN n INTEGER" in units[0].sql and "ix_users_n" not in units[0].sql
    analysis = Engine().analyse(units)
    by_rule = {f.rule: f for f in analysis.findings}
    # CONCURRENTLY inside autocommit_block is outside the transaction: fine. The plain index is not.
    assert "concurrent-index-in-transaction" not in by_rule
    assert by_rule["create-index"].revision == "b"
    assert [(r.revision, r.risk) for r in analysis.revisions] == [("a", "low"), ("b", "high")]


def test_concurrent_index_without_autocommit_block_fails_at_run_time(tmp_path):
    ini = project(tmp_path, {"a.py": rev("a", None, "op.create_index('ix', 'users', ['n'], "
                                                   "postgresql_concurrently=True)")})
    analysis = Engine().analyse(pending_units(ini))
    assert analysis.risk == "high" and analysis.findings[0].rule == "concurrent-index-in-transaction"


def test_range_and_unknown_revision(tmp_path):
    ini = project(tmp_path, {
        "a.py": rev("a", None, "op.add_column('users', sa.Column('n', sa.Integer))"),
        "b.py": rev("b", "a", "op.drop_column('users', 'n')"),
        "c.py": rev("c", "b", "op.execute('UPDATE users SET m = 1')"),
    })
    assert [u.revision for u in pending_units(ini, from_revision="a", to_revision="b")] == ["b"]
    assert [u.revision for u in pending_units(ini, current_revisions=["b"])] == ["c"]
    with pytest.raises(RiskInputError, match="zzz"):
        pending_units(ini, from_revision="zzz")


def test_missing_application_module_is_stood_in_and_a_broken_file_keeps_the_chain(tmp_path):
    ini = project(tmp_path, {
        "a.py": rev("a", None, "op.add_column('users', sa.Column('n', sa.Integer))"),
        "b.py": "from app_not_installed import models\n" + rev("b", "a", "op.drop_column('users', 'n')"),
        "c.py": rev("c", "b", "op.add_column('users', sa.Column('k', sa.Integer))").replace("def upgrade():",
                                                                                          "def upgrade(:"),
        "d.py": rev("d", "c", "op.add_column('users', sa.Column('j', sa.Integer))"),
    })
    units = pending_units(ini)
    assert [u.revision for u in units] == ["a", "b", "c", "d"]
    assert units[1].error is None and "DROP COLUMN n" in units[1].sql
    assert units[1].stand_ins == ["app_not_installed", "app_not_installed.models"]
    assert units[2].error == "the file does not compile: invalid syntax at line 6" and units[3].error is None
    analysis = Engine().analyse(units)
    assert [(r.revision, r.risk, r.analysed) for r in analysis.revisions] == [
        ("a", "low", True), ("b", "critical", True), ("c", "high", False), ("d", "low", True)]


@pytest.mark.parametrize("body,usable,note", [
    ("def downgrade():\n    op.drop_column('t', 'c')\n", True, ""),
    ("def downgrade():\n    pass\n", False, "pass"),
    ("def downgrade():\n    '''Nothing.'''\n", False, "pass"),
    ("def downgrade():\n    raise NotImplementedError('no way back')\n", False, "raises"),
    ("def upgrade():\n    pass\n", False, "missing"),
])
def test_downgrade_judgement(body, usable, note):
    ok, text = judge_downgrade(body)
    assert ok is usable and note in text


def test_loops_and_existing_type_hints():
    source = textwrap.dedent('''
        def upgrade():
            conn = op.get_bind()
            for start in range(0, 10 ** 6, 5000):
                conn.execute(sa.text("UPDATE orders SET x = 1 WHERE id BETWEEN :a AND :b"))
            op.alter_column("users", "name", existing_type=sa.String(length=50), type_=sa.String(100))
            op.alter_column("orders", "price", existing_type=sa.Numeric(12, 2), type_=sa.Numeric(14, 2))
        ''')
    assert loop_data_changes(source) == [5]
    assert existing_type_hints(source) == {("users", "name"): ("varchar", (50,)),
                                           ("orders", "price"): ("numeric", (12, 2))}


def test_python_loop_and_widening_from_a_revision(tmp_path):
    ini = project(tmp_path, {"a.py": rev("a", None, """
        op.alter_column('users', 'name', existing_type=sa.String(50), type_=sa.String(120))
        for batch in range(3):
            op.execute('SELECT 1')
        """)})
    analysis = Engine().analyse(pending_units(ini))
    rules = {f.rule: f for f in analysis.findings}
    assert rules["alter-column-type-coercible"].risk == "low"
    assert rules["python-data-loop"].risk == "critical"


def test_bookkeeping_never_reported_from_alembic_sql_output():
    sql = textwrap.dedent('''
        BEGIN;
        CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
        INSERT INTO alembic_version (version_num) VALUES ('a') RETURNING alembic_version.version_num;
        UPDATE alembic_version SET version_num='b' WHERE alembic_version.version_num = 'a';
        COMMIT;
        ''')
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import analyse_sql
    assert analyse_sql(sql).as_result()["findings"] == []


def test_downgrade_that_drops_data_is_noted(tmp_path):
    ini = project(tmp_path, {"a.py": rev("a", None, "op.add_column('users', sa.Column('n', sa.Integer))",
                                         "op.drop_column('users', 'n')")})
    analysis = Engine().analyse(pending_units(ini), alembic=True)
    checklist = analysis.checklist()
    assert analysis.revisions[0].downgrade_drops == ["users.n"]
    assert checklist["rollback_plan"] is True
    assert any("drops users.n" in note for note in checklist["rollback_notes"])


def test_sarif_points_at_the_revision_file(tmp_path):
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request
    ini = project(tmp_path, {"a.py": rev("a", None, "op.drop_column('users', 'n')")})
    result = run_request(RiskRequest(alembic_config=ini))
    location = result["sarif"]["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location == {"artifactLocation": {"uri": "migrations/versions/a.py"}}
    assert result["report"].startswith("# Migration risk: CRITICAL")


def test_compose_render_command_for_both_compose_clis():
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.render_elsewhere import (
        RenderSpec, compose_command, script_args)
    spec = RenderSpec(executor="compose", project_src="/srv/app", files=["docker-compose.prod.yml"],
                      project_name="shop", profiles=["migration"], service="migration", docker_bin="/usr/bin/docker")
    args = script_args("alembic.ini", spec, None, "heads", ["0003"], 15)
    argv, cwd = compose_command(spec, args)
    assert cwd == "/srv/app"
    assert argv == ["/usr/bin/docker", "compose", "--project-directory", "/srv/app", "-p", "shop",
                    "-f", "/srv/app/docker-compose.prod.yml", "--profile", "migration",
                    "run", "--rm", "-T", "--no-deps", "-e", "PYTHONDONTWRITEBYTECODE=1", "-e", "PYTHONIOENCODING=utf-8",
                    "migration", "python", "-", "--config", "alembic.ini", "--section", "alembic",
                    "--to-revision", "heads", "--server-version", "15", "--current", "0003"]
    spec.standalone, spec.docker_bin, spec.project_name = True, "/usr/bin/docker-compose", None
    argv, _cwd = compose_command(spec, args)
    assert argv[:4] == ["/usr/bin/docker-compose", "--project-directory", "/srv/app", "-p"] and argv[4] == "app"
    assert argv[argv.index("--no-deps") + 5:argv.index("--no-deps") + 9] == ["--", "migration", "python", "-"]
    # A relative project folder is made absolute once: compose runs in it and resolves files from it.
    spec.project_src = "examples/shop"
    argv, cwd = compose_command(spec, args)
    assert cwd == os.path.abspath("examples/shop") and argv[2] == cwd and "%s/docker-compose.prod.yml" % cwd in argv


def test_only_secret_looking_env_values_are_masked_in_render_errors(monkeypatch):
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.render_elsewhere import RenderSpec
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request

    def runner(argv, env, stdin, cwd):
        return 1, "", "image shop-app:1.2.0 failed; password hunter22 rejected"
    spec = RenderSpec(executor="compose", project_src="/srv/shop", docker_bin="docker",
                      env={"APP_IMAGE": "shop-app", "APP_VERSION": "1.2.0", "POSTGRES_PASSWORD": "hunter22"})
    with pytest.raises(RiskInputError) as failure:
        run_request(RiskRequest(render=spec, render_runner=runner))
    assert "image shop-app:1.2.0 failed; password ******** rejected" in str(failure.value)


def test_render_payload_errors_name_the_cause():
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.render import JSON_MARKER
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.render_elsewhere import parse_payload
    with pytest.raises(RiskInputError, match=r"exit code 125\) before it could answer: no such service: migration"):
        parse_payload(125, "", "no such service: migration\n", "the compose service migration")
    out = "banner printed by the app\n%s\n{\"failure\": \"no [alembic] section\"}\n" % JSON_MARKER
    with pytest.raises(RiskInputError, match=r"^no \[alembic\] section \(rendered with python /x\)$"):
        parse_payload(0, out, "", "python /x")
    assert parse_payload(0, "x\n%s\n{\"revisions\": [], \"heads\": []}" % JSON_MARKER, "", "w")["heads"] == []


def test_stand_ins_only_for_what_the_revision_imports(tmp_path):
    """A library's optional import (try/except ImportError) still fails as usual; the revision's own
    missing imports, at module level or inside upgrade(), are stood in for."""
    (tmp_path / "fastlib").mkdir()
    (tmp_path / "fastlib" / "__init__.py").write_text(
        "try:\n    import accelerator_not_installed\n    FAST = True\nexcept ImportError:\n    FAST = False\n")
    ini = project(tmp_path, {"a.py": "import fastlib\nfrom missing_app.types import Money\n" + rev("a", None, """
        from other_missing import thing
        op.add_column('t', sa.Column('m', Money()))
        if fastlib.FAST:
            op.drop_table('t')
        """)})
    unit = pending_units(ini)[0]
    assert unit.error is None and "ADD COLUMN m Money" in unit.sql and "DROP TABLE" not in unit.sql
    assert unit.stand_ins == ["missing_app", "missing_app.types", "missing_app.types.Money", "other_missing",
                              "other_missing.thing"]
    assert "fastlib" not in sys.modules and "accelerator_not_installed" not in sys.modules
