"""Pure logic of alembic_migrate: history parsing, plans, offline SQL, failures, durations."""
from __future__ import annotations

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.migrate.alembic_cli import (
    AlembicPlanError, CONNECTION_LOST, ERROR, KILLED, LOCK_TIMEOUT, STATEMENT_TIMEOUT, RevisionGraph,
    classify_failure, duration_ms, error_name, error_tail, executor_problem, failing_statement, offline_range,
    parse_history, pgoptions, root_cause, split_offline_sql)

# Recorded from `alembic history --verbose` (alembic 1.20) on a linear project.
LINEAR_HISTORY = """Rev: 0003 (head)
Parent: 0002
Path: /srv/app/migrations/versions/0003_index.py

    index orders.created_at

    Revision ID: 0003
    Revises: 0002

Rev: 0002
Parent: 0001
Path: /srv/app/migrations/versions/0002_note.py

    add orders.note

    Revision ID: 0002
    Revises: 0001

Rev: 0001
Parent: <base>
Path: /srv/app/migrations/versions/0001_baseline.py

    baseline

    Revision ID: 0001
    Revises:
"""

# Two branches from 0001 merged again by m1, plus a labelled branch head.
BRANCHED_HISTORY = """Rev: m1 (head) (mergepoint)
Merges: a2, b2
Path: /p/m1.py

    merge

Rev: b2
Parent: 0001
Path: /p/b2.py

    b side

Rev: a2
Parent: 0001
Path: /p/a2.py

    a side

Rev: 0001 (branchpoint)
Parent: <base>
Branches into: a2, b2
Path: /p/0001.py

    baseline
"""

TWO_HEADS_HISTORY = """Rev: x2 (head)
Parent: 0001
Branch names: feature
Path: /p/x2.py

    feature head

Rev: y2 (head)
Parent: 0001
Path: /p/y2.py

    other head

Rev: 0001 (branchpoint)
Parent: <base>
Branches into: x2, y2
Path: /p/0001.py

    baseline
"""


def linear() -> RevisionGraph:
    return RevisionGraph.from_history(LINEAR_HISTORY)


def test_parse_history_reads_parents_and_docs():
    revs = parse_history(LINEAR_HISTORY)
    assert sorted(revs) == ["0001", "0002", "0003"]
    assert revs["0001"].down_revisions == ()
    assert revs["0003"].down_revisions == ("0002",)
    assert revs["0002"].doc == "add orders.note"
    assert revs["0003"].path.endswith("0003_index.py")


def test_parse_history_merges_and_labels():
    revs = parse_history(BRANCHED_HISTORY)
    assert revs["m1"].down_revisions == ("a2", "b2")
    labelled = parse_history(TWO_HEADS_HISTORY)
    assert labelled["x2"].branch_labels == ("feature",)


@pytest.mark.parametrize("current,target,expected", [
    (None, "head", [("upgrade", "0001", None, "0001"), ("upgrade", "0002", "0001", "0002"),
                    ("upgrade", "0003", "0002", "0003")]),
    ("0001", "+1", [("upgrade", "0002", "0001", "0002")]),
    ("0003", "-2", [("downgrade", "0003", "0003", "0002"), ("downgrade", "0002", "0002", "0001")]),
    ("0002", "base", [("downgrade", "0002", "0002", "0001"), ("downgrade", "0001", "0001", None)]),
    ("0003", "head", []),
    ("0001", "0003", [("upgrade", "0002", "0001", "0002"), ("upgrade", "0003", "0002", "0003")]),
    ("0003", "00", None),  # ambiguous prefix
])
def test_linear_plans(current, target, expected):
    graph = linear()
    if expected is None:
        with pytest.raises(AlembicPlanError, match="ambiguous"):
            graph.plan(current, graph.resolve_target(target, current))
        return
    steps = graph.plan(current, graph.resolve_target(target, current))
    assert [(s.direction, s.revision, s.from_rev, s.to_rev) for s in steps] == expected


def test_step_alembic_target_is_base_for_the_last_downgrade():
    graph = linear()
    steps = graph.plan("0001", None)
    assert steps[0].alembic_target == "base"


def test_unknown_revision_lists_known_ones():
    with pytest.raises(AlembicPlanError, match=r"unknown revision 'zz'.*0001, 0002, 0003"):
        linear().resolve_target("zz", None)


def test_relative_targets_out_of_range():
    graph = linear()
    with pytest.raises(AlembicPlanError, match="past the head"):
        graph.resolve_target("+5", "0001")
    with pytest.raises(AlembicPlanError, match="below base"):
        graph.resolve_target("-2", "0001")


def test_database_at_unknown_revision_is_explained():
    with pytest.raises(AlembicPlanError, match="does not know"):
        linear().plan("ffff", "0003")


def test_multiple_heads_refuse_head_but_allow_a_revision():
    graph = RevisionGraph.from_history(TWO_HEADS_HISTORY)
    with pytest.raises(AlembicPlanError, match="2 heads .*x2, y2.*alembic merge heads"):
        graph.resolve_target("head", "0001")
    assert graph.resolve_target("feature", "0001") == "x2"
    steps = graph.plan("0001", graph.resolve_target("y2", "0001"))
    assert [s.revision for s in steps] == ["y2"]
    with pytest.raises(AlembicPlanError, match="ambiguous.*branches into"):
        graph.resolve_target("+1", "0001")
    with pytest.raises(AlembicPlanError, match="another branch"):
        graph.plan("x2", "y2")


def test_merge_upgrade_applies_both_sides_then_the_merge():
    graph = RevisionGraph.from_history(BRANCHED_HISTORY)
    steps = graph.plan("0001", graph.resolve_target("head", "0001"))
    assert [s.revision for s in steps] == ["a2", "b2", "m1"]
    with pytest.raises(AlembicPlanError, match="merge revision m1"):
        graph.plan("m1", "0001")
    with pytest.raises(AlembicPlanError, match="ambiguous.*merges"):
        graph.resolve_target("-1", "m1")


def test_missing_parent_is_reported():
    broken = LINEAR_HISTORY.replace("Parent: 0001", "Parent: 0000")
    with pytest.raises(AlembicPlanError, match="parent 0000 that does not exist"):
        RevisionGraph.from_history(broken)


OFFLINE = """BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL
);

-- Running upgrade  -> 0001

CREATE TABLE accounts (id serial PRIMARY KEY);

INSERT INTO alembic_version (version_num) VALUES ('0001') RETURNING alembic_version.version_num;

COMMIT;

BEGIN;

-- Running upgrade 0001 -> 0002

ALTER TABLE orders ADD COLUMN note TEXT;

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

COMMIT;
"""


def test_split_offline_sql_per_revision():
    chunks = split_offline_sql(OFFLINE)
    assert [c["revision"] for c in chunks] == ["0001", "0002"]
    assert "CREATE TABLE alembic_version" in chunks[0]["sql"]
    assert "CREATE TABLE accounts" in chunks[0]["sql"]
    assert "ALTER TABLE orders ADD COLUMN note" in chunks[1]["sql"]
    assert "COMMIT;" not in chunks[1]["sql"]


def test_split_offline_downgrade():
    text = "BEGIN;\n\n-- Running downgrade 0002 -> 0001\n\nALTER TABLE orders DROP COLUMN note;\n\nCOMMIT;\n"
    chunks = split_offline_sql(text)
    assert chunks == [{"direction": "downgrade", "revision": "0002",
                       "sql": "BEGIN;\n\n\nALTER TABLE orders DROP COLUMN note;"}]


def test_offline_range():
    assert offline_range(None, "0003", "upgrade") == "0003"
    assert offline_range("0001", "0003", "upgrade") == "0001:0003"
    assert offline_range("0003", None, "downgrade") == "0003:base"


LOCK_STDERR = """INFO  [alembic.runtime.migration] Running upgrade 0001 -> 0002, add orders.note
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/sqlalchemy/engine/base.py", line 1967, in _exec_single_context
    self.dialect.do_execute(
psycopg2.errors.LockNotAvailable: canceling statement due to lock timeout

The above exception was the direct cause of the following exception:

sqlalchemy.exc.OperationalError: (psycopg2.errors.LockNotAvailable) canceling statement due to lock timeout

[SQL: ALTER TABLE orders ADD COLUMN note TEXT]
(Background on this error at: https://sqlalche.me/e/21/e3q8)
"""


@pytest.mark.parametrize("rc,stderr,kind", [
    (1, LOCK_STDERR, LOCK_TIMEOUT),
    (1, "psycopg2.errors.QueryCanceled: canceling statement due to statement timeout", STATEMENT_TIMEOUT),
    (1, "psycopg2.OperationalError: server closed the connection unexpectedly", CONNECTION_LOST),
    (1, "FATAL:  terminating connection due to administrator command", CONNECTION_LOST),
    (-9, "", KILLED),
    (137, "", KILLED),
    (1, 'psycopg2.errors.UndefinedTable: relation "nope" does not exist', ERROR),
])
def test_classify_failure(rc, stderr, kind):
    assert classify_failure(rc, stderr) == kind


def test_failing_statement_and_tail():
    assert failing_statement(LOCK_STDERR) == "ALTER TABLE orders ADD COLUMN note TEXT"
    tail = error_tail(LOCK_STDERR)
    assert "LockNotAvailable" in tail
    assert "Running upgrade" not in tail
    assert "self.dialect.do_execute" not in tail
    assert failing_statement("no sql here") is None


@pytest.mark.parametrize("value,ms", [
    ("200ms", 200), ("2s", 2000), ("1min", 60000), (1500, 1500), ("750", 750), ("0", 0), ("1.5s", 1500),
    ("500us", 1),
])
def test_duration_ms(value, ms):
    assert duration_ms(value, "lock_timeout") == ms


@pytest.mark.parametrize("value", ["fast", "2 seconds", "-1s", True, "1s; DROP TABLE x"])
def test_duration_rejects_garbage(value):
    with pytest.raises(AlembicPlanError, match="lock_timeout"):
        duration_ms(value, "lock_timeout")


def test_pgoptions_appends_and_escapes():
    assert pgoptions([("lock_timeout", "200ms")]) == "-c lock_timeout=200ms"
    assert pgoptions([("lock_timeout", "200ms"), ("statement_timeout", "2000ms")], "-c search_path=app") == \
        "-c search_path=app -c lock_timeout=200ms -c statement_timeout=2000ms"
    assert pgoptions([("application_name", "a b")]) == "-c application_name=a\\ b"


def test_merge_from_one_branch_applies_the_other_branch_and_the_merge():
    graph = RevisionGraph.from_history(BRANCHED_HISTORY)
    steps = graph.plan("a2", graph.resolve_target("head", "a2"))
    assert [(s.revision, s.heads_before, s.heads_after) for s in steps] == [
        ("b2", ("a2",), ("a2", "b2")), ("m1", ("a2", "b2"), ("m1",))]
    assert [s.alembic_target for s in steps] == ["b2", "m1"]
    assert steps[0].from_rev == "a2" and steps[0].to_rev == "a2,b2"


def test_database_at_several_heads_is_upgraded_not_refused():
    graph = RevisionGraph.from_history(BRANCHED_HISTORY)
    for target in ("head", "heads", "m1"):
        steps = graph.plan(("a2", "b2"), graph.resolve_target(target, ("a2", "b2")))
        assert [s.revision for s in steps] == ["m1"]
    assert graph.plan(("a2", "b2"), ("a2", "b2")) == []
    with pytest.raises(AlembicPlanError, match="several heads"):
        graph.resolve_target("+1", ("a2", "b2"))
    with pytest.raises(AlembicPlanError, match="several heads"):
        graph.plan(("a2", "b2"), "0001")


def test_heads_target_of_unmerged_branches_applies_both():
    graph = RevisionGraph.from_history(TWO_HEADS_HISTORY)
    target = graph.resolve_target("heads", None)
    assert target == ("x2", "y2")
    steps = graph.plan(None, target)
    assert [s.revision for s in steps] == ["0001", "x2", "y2"]
    assert steps[-1].heads_after == ("x2", "y2")


UNIQUE_STDERR = """INFO  [alembic.runtime.migration] Running upgrade r1 -> r2, sku
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/sqlalchemy/engine/base.py", line 1967, in _exec_single_context
psycopg2.errors.UniqueViolation: could not create unique index "ix_orders_sku"
DETAIL:  Key (sku)=(dup) is duplicated.


The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/venv/bin/alembic", line 8, in <module>
sqlalchemy.exc.IntegrityError: (psycopg2.errors.UniqueViolation) could not create unique index "ix_orders_sku"
DETAIL:  Key (sku)=(dup) is duplicated.

[SQL: CREATE UNIQUE INDEX CONCURRENTLY ix_orders_sku ON orders (sku)]
(Background on this error at: https://sqlalche.me/e/21/gkpj)
"""


def test_root_cause_names_the_driver_error_and_its_detail():
    assert root_cause(UNIQUE_STDERR) == ('UniqueViolation: could not create unique index "ix_orders_sku" '
                                         'DETAIL: Key (sku)=(dup) is duplicated.')
    assert error_name(UNIQUE_STDERR) == "UniqueViolation"
    dup = 'sqlalchemy.exc.ProgrammingError: (psycopg2.errors.DuplicateColumn) column "sku" of relation "orders" already exists'
    assert error_name(dup) == "DuplicateColumn"
    assert root_cause("FAILED: Can't locate revision identified by 'zz'") == "FAILED: Can't locate revision identified by 'zz'"
    assert root_cause("") is None


@pytest.mark.parametrize("stderr,expected", [
    ("no such service: migrate", "compose has no service migrate (set dbops_compose_migration_service"),
    ("ERROR: No such service: migration", "compose has no service migration"),
    (" migration Pulling \n Error response from daemon: pull access denied for ledger-api, repository does not "
     "exist or may require 'docker login'", "the image ledger-api of compose service migration could not be found"),
    ("Unable to find image 'auto_trader:9.9' locally", "the image auto_trader:9.9 of compose service migration"),
    ('exec: "alembic": executable file not found in $PATH', "no alembic executable"),
    ("sqlalchemy.exc.OperationalError: boom", None),
])
def test_executor_problems_get_their_own_lead(stderr, expected):
    lead = executor_problem(stderr, "migration")
    if expected is None:
        assert lead is None
    else:
        assert expected in lead
        if "image" in expected:
            assert "tag variable" in lead


def test_image_pull_without_registry_is_an_image_problem():
    stderr = (' migration Pulling \n migration Error Get "https://registry-1.docker.io/v2/": dial tcp: lookup '
              'registry-1.docker.io on 10.255.255.53:53: no such host\nError response from daemon: Get '
              '"https://registry-1.docker.io/v2/": dial tcp: no such host')
    lead = executor_problem(stderr, "migration")
    assert "the image (unknown) of compose service migration could not be found or pulled" in lead


# ---------------------------------------------------------------- launcher

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from ansible_collections.dbops.migrations.plugins.module_utils.migrate.alembic_cli import (  # noqa: E402
    LAUNCHER_SCRIPT, choose_launcher, ini_names_script_location, launcher_argv, strip_compose_progress)
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import (  # noqa: E402
    AlembicCommand, ComposeSpec, MigrateRequest)
from ansible_collections.dbops.migrations.plugins.module_utils.pg import ConnInfo  # noqa: E402

SECRET_DB = ConnInfo(host="db", user="app", password="s3cret-pw", dbname="app")


def flask_migrate_project(root: Path) -> Path:
    """migrations/alembic.ini without script_location, env.py and versions beside it."""
    folder = root / "migrations"
    (folder / "versions").mkdir(parents=True)
    (folder / "alembic.ini").write_text("[alembic]\n")
    (folder / "env.py").write_text("raise SystemExit('env.py is not needed by history')\n")
    (folder / "versions" / "a1_first.py").write_text(
        '"""first"""\nrevision = "a1"\ndown_revision = None\nbranch_labels = None\ndepends_on = None\n')
    return folder / "alembic.ini"


def test_launcher_argv_keeps_alembic_arguments_after_the_script():
    argv = launcher_argv("/venv/bin/python", "migrations/alembic.ini", ["upgrade", "a1"])
    assert argv == ["/venv/bin/python", "-c", LAUNCHER_SCRIPT, "-c", "migrations/alembic.ini", "upgrade", "a1"]
    assert launcher_argv("python3", None, ["current"]) == ["python3", "-c", LAUNCHER_SCRIPT, "current"]


def test_compose_python_launcher_argv_has_no_secret_and_runs_in_the_service():
    request = MigrateRequest(config="migrations/alembic.ini", executor="compose", launcher="python",
                             python_bin="/opt/venv/bin/python3", compose=ComposeSpec(project_src="/srv/app"))
    command = AlembicCommand(request, SECRET_DB, "dbops-migrate-abc")
    argv, cwd = command.argv("history", "--verbose")
    service = len(argv) - 1 - argv[::-1].index("migration")  # the service, after --profile migration
    assert argv[service + 1:] == ["/opt/venv/bin/python3", "-c", LAUNCHER_SCRIPT, "-c", "migrations/alembic.ini",
                                  "history", "--verbose"]
    assert cwd == "/srv/app"
    assert not any("s3cret-pw" in part for part in argv)
    assert "s3cret-pw" in command.environment()["DATABASE_URL"]


def test_local_python_launcher_argv_uses_the_absolute_ini(tmp_path):
    ini = flask_migrate_project(tmp_path)
    request = MigrateRequest(config=str(ini), launcher="python", python_bin="/venv/bin/python")
    argv, cwd = AlembicCommand(request, SECRET_DB, "dbops-migrate-abc").argv("current")
    assert argv == ["/venv/bin/python", "-c", LAUNCHER_SCRIPT, "-c", str(ini), "current"]
    assert cwd == str(ini.parent)
    plain = MigrateRequest(config=str(ini), alembic_bin="/venv/bin/alembic")
    assert AlembicCommand(plain, SECRET_DB, "x").argv("current")[0][:3] == ["/venv/bin/alembic", "-c", str(ini)]


def test_launcher_reads_an_ini_without_script_location_where_alembic_cannot(tmp_path):
    ini = flask_migrate_project(tmp_path)
    alembic = str(Path(sys.executable).parent / "alembic")
    plain = subprocess.run([alembic, "-c", str(ini), "history", "--verbose"], capture_output=True, text=True)
    # alembic 1.20 prints its FAILED line on stdout
    assert plain.returncode != 0 and "script_location" in plain.stdout + plain.stderr
    launched = subprocess.run(launcher_argv(sys.executable, str(ini), ["history", "--verbose"]),
                              capture_output=True, text=True, cwd=str(tmp_path))
    assert launched.returncode == 0, launched.stderr
    assert RevisionGraph.from_history(launched.stdout).heads == ["a1"]


def test_launcher_keeps_alembic_errors_and_script_location_of_the_ini(tmp_path):
    ini = flask_migrate_project(tmp_path)
    ini.write_text("[alembic]\nscript_location = %s\n" % (tmp_path / "elsewhere"))
    run = subprocess.run(launcher_argv(sys.executable, str(ini), ["history"]), capture_output=True, text=True)
    assert run.returncode == 255
    said = run.stdout + run.stderr
    assert "FAILED:" in said and "elsewhere" in said  # the ini's own script_location is kept
    missing = subprocess.run(launcher_argv(sys.executable, str(tmp_path / "none.ini"), ["history"]),
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "FAILED:" in missing.stdout + missing.stderr


def test_auto_launcher_is_python_in_images_and_for_inis_without_script_location(tmp_path):
    ini = flask_migrate_project(tmp_path)
    assert not ini_names_script_location(str(ini))
    assert choose_launcher("auto", "local", str(ini)) == "python"
    assert choose_launcher("auto", "compose", "alembic.ini") == "python"
    assert choose_launcher("alembic", "compose", None) == "alembic"
    named = tmp_path / "alembic.ini"
    named.write_text("[alembic]\nscript_location = migrations\n")
    assert ini_names_script_location(str(named))
    assert choose_launcher("auto", "local", str(named)) == "alembic"


def test_compose_progress_lines_give_way_to_alembic_error():
    stderr = (" Container app-db-1  Running\n[+] Running 1/1\n \u2714 Container app-db-1  Healthy\n"
              " Network app_default  Created\n"
              "FAILED: No 'script_location' key found in configuration.\n")
    cleaned = strip_compose_progress(stderr)
    assert cleaned == "FAILED: No 'script_location' key found in configuration."
    assert error_tail(cleaned) == cleaned
    pulling = " api Pulling\nError response from daemon: pull access denied for ledger-api\n"
    assert strip_compose_progress(pulling) == pulling.rstrip("\n")


def test_missing_python_in_the_image_is_an_executor_problem():
    lead = executor_problem('exec: "python3": executable file not found in $PATH', "migrate")
    assert "python" in lead and "launcher=alembic" in lead
    gone = executor_problem("FAILED: alembic is not installed for /usr/bin/python3 and no alembic executable "
                            "is on PATH", "migrate")
    assert "no alembic executable" in gone
