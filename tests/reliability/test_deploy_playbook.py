"""deploy.yml under bad input, concurrent runs, and with a recognisable secret."""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.helpers.release import compose_ps, new_release
from tests.helpers.secrets import ArgvWatcher, files_containing, find_secret

# Every case builds a private image of the example app, so all of them need the Docker engine.
pytestmark = [pytest.mark.docker]


@pytest.fixture
def idle_release(docker_client, tmp_path):
    """An inventory for a stack that is never started: anything that touches it would fail differently."""
    rel = new_release(docker_client, tmp_path)
    yield rel
    if rel.container_ids("db") or rel.container_ids("app"):
        rel.stack.down()  # a case that failed by starting the stack after all
    rel.remove_images()


def assert_nothing_started(rel):
    assert not rel.lock_held()
    assert not rel.report_dir.exists()
    assert rel.container_ids("db") == [] and rel.container_ids("app") == []


BAD_RISKS = [
    ("extreme", "extreme"),
    ("LOW", "LOW"),
    ("", ""),
    (5, "5"),
    (["low"], "['low']"),
    ("low; rm -rf /", "low; rm -rf /"),
]


@pytest.mark.parametrize("risk,shown", BAD_RISKS, ids=[str(r[1]) or "empty" for r in BAD_RISKS])
@pytest.mark.fault("deploy.yml with risk outside low|medium|high|auto", kind="bad_input",
                   holds="fails first with the accepted values; no lock, no container, no report")
def test_risk_outside_the_list_fails_before_anything(idle_release, risk, shown):
    run = idle_release.deploy(risk=risk)
    assert run.rc != 0
    assert "risk must be one of low, medium, high or auto" in run.output
    assert f"(got {shown})" in run.output
    assert "Run again with -e risk=auto" in run.output
    assert "TASK [Take the release lock" not in run.stdout
    assert_nothing_started(idle_release)


WRONG_TYPES = [
    ({"approve": "maybe"}, "approve"),
    ({"skip_migrate": "sometimes"}, "skip_migrate"),
    ({"verify_queries": "SELECT 1"}, "verify_queries"),
    ({"verify_queries": [{"name": "no query"}]}, "query"),
    ({"protected_tables": {"users": 1}}, "protected_tables"),
    ({"deploy_lock_wait": "soon"}, "deploy_lock_wait"),
]


@pytest.mark.parametrize("extra,named", WRONG_TYPES, ids=[w[1] + "-" + type(list(w[0].values())[0]).__name__
                                                          for w in WRONG_TYPES])
@pytest.mark.fault("deploy.yml with a variable of the wrong type", kind="bad_input",
                   holds="fails naming the variable before the lock; nothing started")
def test_wrong_types_fail_naming_the_variable(idle_release, extra, named):
    run = idle_release.deploy(risk="auto", **extra)
    assert run.rc != 0
    assert "Validate the other deploy variables" in run.stdout
    assert named in run.output
    assert_nothing_started(idle_release)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.fault("two deploy.yml runs started at once on a fresh stack", kind="fault",
                   holds="one migrates, the other waits for the lock and finds nothing to do; migrations run once")
def test_two_deploys_at_once_migrate_once(docker_client, tmp_path):
    rel = new_release(docker_client, tmp_path)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            runs = list(pool.map(lambda _i: rel.deploy(risk="auto"), range(2)))
        outputs = "\n=====\n".join(r.output[-4000:] for r in runs)
        assert all(r.rc == 0 for r in runs), outputs + compose_ps(rel)
        summaries = rel.reports()
        applied = sorted(tuple(s["revisions_applied"]) for s in summaries)
        assert applied == [(), ("0001", "0002", "0003", "0004", "0005")], summaries
        assert sum("after waiting" in r.stdout and "for the run that held it" in r.stdout for r in runs) == 1
        assert rel.revision() == "0005"
        assert not rel.lock_held()
    finally:
        rel.close()


@pytest.mark.fault("a second deploy while the lock is held and deploy_lock_wait=0", kind="fault",
                   holds="fails at once naming the holder and what to do; the other run's lock stays")
def test_held_lock_fails_clearly(idle_release):
    lock = idle_release.report_dir / "deploy.lock"
    lock.mkdir(parents=True)
    (lock / "owner.json").write_text('{"user": "alice", "app_version": "9.9.9"}')
    run = idle_release.deploy(risk="auto", deploy_lock_wait=0)
    assert run.rc != 0
    assert "Another deploy of" in run.output and "alice" in run.output and "Nothing was changed" in run.output
    assert lock.exists() and (lock / "owner.json").exists()
    assert idle_release.container_ids("db") == []


def this_controller() -> dict:
    """What deploy.yml records of the controller it runs on (the tests run it on this machine)."""
    def read(path):
        with open(path) as handle:
            return handle.read().strip()
    return {"boot_id": read("/proc/sys/kernel/random/boot_id"), "pid_ns": os.readlink("/proc/self/ns/pid"),
            "host": read("/proc/sys/kernel/hostname")}


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_owner(lock, **owner):
    lock.mkdir(parents=True)
    (lock / "owner.json").write_text(json.dumps(dict({"user": "alice", "app_version": "9.9.9"}, **owner)))


@pytest.mark.fault("a live deploy of this controller holds the lock and deploy_lock_wait=0", kind="fault",
                   holds="the lock is not taken over; fails naming the holder; nothing started")
def test_lock_of_a_live_run_is_kept(idle_release):
    lock = idle_release.report_dir / "deploy.lock"
    # A live process whose command line reads like a run of ansible-playbook.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "ansible-playbook"])
    try:
        write_owner(lock, pid=holder.pid, controller=this_controller())
        run = idle_release.deploy(risk="auto", deploy_lock_wait=0)
    finally:
        holder.kill()
        holder.wait()
    assert run.rc != 0
    assert "Another deploy of" in run.output and "alice" in run.output and "taking it over" not in run.output
    assert lock.exists() and json.loads((lock / "owner.json").read_text())["pid"] == holder.pid
    assert idle_release.container_ids("db") == []


@pytest.mark.fault("the lock left by a deploy killed with SIGKILL on this controller", kind="fault",
                   holds="the next deploy says so, takes the lock over and frees it when it ends; "
                         "a lock from another controller is not taken over")
def test_lock_of_a_killed_run_is_taken_over(idle_release, tmp_path):
    lock = idle_release.report_dir / "deploy.lock"
    # The run after the takeover stops at its first step (no compose project there), which is
    # enough to see it held the lock and released it on the way out.
    missing = {"dbops_project_src": str(tmp_path / "no-project-here")}
    other = dict(this_controller(), host="another-controller")
    write_owner(lock, pid=dead_pid(), controller=other)
    refused = idle_release.deploy(risk="auto", deploy_lock_wait=0, **missing)
    assert refused.rc != 0 and "Another deploy of" in refused.output and "taking it over" not in refused.output
    for entry in lock.iterdir():
        entry.unlink()
    lock.rmdir()
    write_owner(lock, pid=dead_pid(), controller=this_controller(), started="2026-01-01T00:00:00+00:00")
    run = idle_release.deploy(risk="auto", deploy_lock_wait=0, **missing)
    assert "which no longer runs: taking it over" in run.output and "2026-01-01T00:00:00" in run.output
    assert "TASK [Start the database first" in run.stdout and "no-project-here" in run.output
    assert run.rc != 0 and not idle_release.lock_held()
    assert idle_release.container_ids("db") == []


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.fault("a recognisable database password through a low and a failing high deploy", kind="secret",
                   holds="the password is in no output, report, backup manifest or process argv")
def test_password_never_leaks(docker_client, tmp_path):
    secret = "Dbops-Secret-" + uuid.uuid4().hex[:12]
    rel = new_release(docker_client, tmp_path, password=secret)
    try:
        with ArgvWatcher(secret) as watcher:
            first = rel.deploy(risk="auto", migration_target="0004")
            assert first.rc == 0, first.output[-4000:] + compose_ps(rel)
            rel.seed(2)
            # The high path passes the password to the backup, the migration and the verification.
            failed = rel.deploy(risk="high", approve=True,
                                verify_queries=[{"name": "wrong", "query": "SELECT 1", "expect": 2}])
        assert failed.rc != 0 and "Data verification failed" in failed.output
        assert watcher.samples > 10
        assert watcher.leaks == []
        assert find_secret(secret, first.output, failed.output) == []
        assert files_containing(secret, str(rel.report_dir), str(rel.backup_dir)) == []
        assert rel.backups() and rel.reports()
    finally:
        rel.close()


def leftover(root, pid: int, module: str, age_s: float = 3600) -> "os.PathLike":
    """A remote temp folder as ansible-playbook leaves it when its worker is killed mid-task."""
    import pathlib
    import time
    folder = pathlib.Path(root) / ("ansible-tmp-%.2f-%d-%d" % (time.time() - age_s, pid, 4242 + pid))
    folder.mkdir(parents=True)
    (folder / ("AnsiballZ_%s.py" % module)).write_text("# module arguments, password included\n")
    stamp = time.time() - age_s
    for path in (folder / ("AnsiballZ_%s.py" % module), folder):
        os.utime(path, (stamp, stamp))
    return folder


@pytest.mark.fault("module files of a killed run left in the controller's ~/.ansible/tmp", kind="fault",
                   holds="the next deploy removes the collection's files of dead runs only: a live run's "
                         "folder, another collection's module and a folder newer than the run stay")
def test_module_files_of_killed_runs_are_removed(idle_release, tmp_path):
    import pathlib
    root = pathlib.Path(os.path.expanduser("~/.ansible/tmp"))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    made = []
    try:
        dead_ours = leftover(root, dead_pid(), "alembic_migrate")
        dead_backup = leftover(root, dead_pid(), "pg_backup")
        dead_query = leftover(root, dead_pid(), "postgresql_query")  # verification queries log in too
        live_ours = leftover(root, live.pid, "alembic_migrate")
        dead_other = leftover(root, dead_pid(), "command")
        dead_new = leftover(root, dead_pid(), "compose_deploy", age_s=-3600)  # written after the run started
        made = [dead_ours, dead_backup, dead_query, live_ours, dead_other, dead_new]
        # The run stops at its first step (no compose project there): the cleanup comes before it.
        run = idle_release.deploy(risk="auto", dbops_project_src=str(tmp_path / "no-project-here"))
        assert "TASK [Remove the module files of killed runs]" in run.stdout, run.output[-3000:]
        assert not dead_ours.exists() and not dead_backup.exists() and not dead_query.exists()
        assert live_ours.exists() and dead_other.exists() and dead_new.exists()
    finally:
        live.kill()
        live.wait()
        for folder in made:
            for entry in folder.glob("*") if folder.exists() else []:
                entry.unlink()
            if folder.exists():
                folder.rmdir()


@pytest.mark.fault("the lock of a killed run while the migration it started still runs", kind="fault",
                   holds="the lock is not taken over while a migration runner holds the database's migration "
                         "lock; the run stops saying so; once the runner ends, the lock is taken over")
def test_lock_of_a_killed_run_is_kept_while_its_migration_runs(idle_release, pg_db, tmp_path):
    from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import APP_NAME_PREFIX, lock_key
    lock = idle_release.report_dir / "deploy.lock"
    write_owner(lock, pid=dead_pid(), controller=this_controller())
    login = pg_db.login_args()
    database = {"dbops_db_host": login["login_host"], "dbops_db_port": login["login_port"],
                "dbops_db_user": login["login_user"], "dbops_db_password": login["login_password"],
                "dbops_db_name": login["login_db"], "dbops_project_src": str(tmp_path / "no-project-here")}
    # The orphaned module: its control session holds the advisory lock, named as alembic_migrate names it.
    runner = pg_db.connect()
    runner.cursor().execute("SET application_name = %s", (APP_NAME_PREFIX + "orphan12345",))
    runner.cursor().execute("SELECT pg_advisory_lock(%s, %s)", lock_key("alembic_version", None))
    try:
        kept = idle_release.deploy(risk="auto", deploy_lock_wait=0, **database)
    finally:
        runner.close()
    assert kept.rc != 0
    assert "a migration from that killed run is still running" in " ".join(kept.output.split())
    assert APP_NAME_PREFIX + "orphan12345" in kept.output and "taking it over" not in kept.output
    assert lock.exists() and (lock / "owner.json").exists()
    taken = idle_release.deploy(risk="auto", deploy_lock_wait=0, **database)
    assert "which no longer runs: taking it over" in taken.output, taken.output[-3000:]
    assert taken.rc != 0 and "no-project-here" in taken.output and not idle_release.lock_held()
