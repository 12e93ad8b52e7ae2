"""migration_rehearsal on a throw-away PostgreSQL container (scratch_container): a 20,000-row table and a
revision that rewrites it, rehearsed in a container of the local image dbops/postgres:<the archive's major>.

The container is removed at the end, also when the image runs another major (refused), on SIGTERM, and,
after a kill -9, by the next run. The server the archive came from is never touched, and the container's
password appears in no result, record, output or command line.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backups
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import container as box
from tests.conftest import DbHandle
from tests.helpers import postgres as pg
from tests.helpers import rehearsal as rehearsal_helpers
from tests.helpers.ansible import run_module
from tests.helpers.containers import labelled_containers
from tests.helpers.migrate_project import alembic, find_processes, make_project
from tests.helpers.rehearsal import SLOW_REVISIONS

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

ROWS = 20_000
# 0002 rewrites orders and holds the lock a second longer, so the sampled lock time is well above one interval.
REVISIONS = [
    ("0001", "orders",
     '    op.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, account_id int NOT NULL, '
     'quantity int NOT NULL, note text)")',
     '    op.execute("DROP TABLE orders")'),
    ("0002", "quantity becomes bigint (rewrites orders)",
     '    op.execute("ALTER TABLE orders ALTER COLUMN quantity TYPE bigint")\n'
     '    op.execute("SELECT pg_sleep(1)")',
     '    op.execute("ALTER TABLE orders ALTER COLUMN quantity TYPE int")'),
]
def take_backup(db: DbHandle, dest: Path) -> str:
    return rehearsal_helpers.take_backup(db.url, str(dest), db.server.bin_dir or None)


def image_present(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def archive_major(manifest_path: str) -> int:
    return backups.server_major(backups.read_manifest(manifest_path)["server_version_num"])


def scratch_containers(client, database: str) -> list:
    """This database's scratch containers (the name says the database; other tests' are never looked at)."""
    prefix = box.NAME_PREFIX + backups.plain_name(database) + "-"
    return [c for c in labelled_containers(client, "%s=1" % box.LABEL) if c.name.startswith(prefix)]


def scratch_databases(server) -> list[str]:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbops\\_rehearsal\\_%%'")
        return sorted(r[0] for r in cur.fetchall())


def container_password(container) -> str:
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    return env["POSTGRES_PASSWORD"]


def source_database(pg_server, root: Path, revisions, fill: str):
    """A database at 0001 filled by ``fill``, and its verified backup (the host's pg_dump takes it)."""
    if pg.host_client_cannot_dump(pg_server):
        pytest.skip(pg.host_client_cannot_dump(pg_server))
    name = "rc_" + uuid.uuid4().hex[:10]
    pg.create_database(pg_server, name)
    db = DbHandle(pg_server, name)
    config = make_project(root / "project", revisions)
    alembic(db, config, "upgrade", "0001")
    db.execute(fill)
    manifest = take_backup(db, root / "backups")
    return db, config, manifest


@pytest.fixture(scope="module")
def orders(pg_server, docker_client, tmp_path_factory):
    """A database at 0001 with 20,000 orders, its verified backup, the project whose 0002 rewrites it, and the
    image of the backup's major."""
    root = tmp_path_factory.mktemp("rehearse-container")
    db, config, manifest = source_database(
        pg_server, root, REVISIONS, "INSERT INTO orders (account_id, quantity, note) SELECT g %% 1000, g %% 97, 'n' || g"
                                    " FROM generate_series(1, %d) g" % ROWS)
    image = "dbops/postgres:%d" % archive_major(manifest)
    if not image_present(image):
        pytest.skip("image %s not found: build it with make images (or make images-pg-matrix)" % image)
    yield db, config, manifest, image
    for left in scratch_containers(docker_client, db.name):
        left.remove(force=True, v=True)
    pg.drop_database(pg_server, db.name)


def module_args(config: Path, manifest: str, image: str, **extra) -> dict:
    """No connection options: the archive names the database, and the container is the only server used."""
    args = dict(archive=manifest, scratch_container={"image": image, "start_timeout": 180}, config=str(config),
                lock_timeout="2s", retries=1, retry_delay=0.2, bin_dir=pg.find_pg_bin())
    args.update(extra)
    return args


def watch_containers(client, database: str, future) -> dict:
    """While the module runs: its container's name, password and volumes, and whether the password ever showed
    up in a command line."""
    seen: dict = {"volumes": set(), "in_argv": []}
    while not future.done():
        for found in scratch_containers(client, database):
            try:
                found.reload()
                seen.setdefault("name", found.name)
                seen.setdefault("password", container_password(found))
                seen["volumes"] |= {m["Name"] for m in found.attrs.get("Mounts") or [] if m.get("Type") == "volume"}
            except Exception:  # removed between the list and the inspect
                continue
        if seen.get("password"):
            seen["in_argv"] += list(find_processes(seen["password"]))
        time.sleep(0.2)
    return seen


def test_the_rehearsal_runs_in_a_container_and_removes_it(orders, docker_client, tmp_path):
    db, config, manifest, image = orders
    records = tmp_path / "rehearsals"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_module, "migration_rehearsal",
                             module_args(config, manifest, image, record_dir=str(records), sample_interval_ms=20))
        seen = watch_containers(docker_client, db.name, future)
        run = future.result()
    result = run.result
    assert result.get("passed") is True, run.output[-4000:]
    # where it ran
    major = archive_major(manifest)
    scratch = result["scratch"]
    assert scratch["kind"] == "container" and scratch["image"] == image and scratch["removed"] is True
    assert scratch["server_version"].split(".")[0] == str(major) and scratch["container"] == seen["name"]
    assert result["scratch_dropped"] is True
    # what it measured
    assert result["revisions"] == ["0002"]
    [rev] = result["measurements"]
    assert rev["applied"] and rev["rewritten_tables"] == ["orders"]
    orders_lock = [lock for lock in rev["locks"] if lock["table"] == "orders"][0]
    assert orders_lock["lock"] == "ACCESS EXCLUSIVE" and orders_lock["blocks"] == "reads_and_writes"
    assert orders_lock["held_s"] > 0.5 and rev["lock_s"] >= orders_lock["held_s"] * 0.9
    assert result["restore"]["rows"] >= ROWS  # and alembic_version's row
    # the record and the approval line say where
    record = json.loads((records / "last.json").read_text())
    assert record["passed"] and record["revisions"] == ["0002"] and record["database"] == db.name
    assert record["scratch"] == {"kind": "container", "image": image, "server_version": scratch["server_version"]}
    assert "in a container of %s (PostgreSQL %s)" % (image, scratch["server_version"]) in result["summary"]
    # gone with its volume; the source server untouched
    assert scratch_containers(docker_client, db.name) == []
    assert seen["volumes"] and not [v for v in seen["volumes"] if docker_client.volumes.list(filters={"name": v})]
    assert scratch_databases(db.server) == []
    assert db.scalar("SELECT version_num FROM alembic_version") == "0001"
    # the password: in the container's environment only
    password = seen["password"]
    assert len(password) >= 32 and seen["in_argv"] == []
    assert password not in run.output and password not in json.dumps(result)
    assert password not in (records / "last.json").read_text()


def test_an_image_of_another_major_is_refused_and_removed(orders, docker_client):
    db, config, manifest, _image = orders
    major = archive_major(manifest)
    other = "dbops/postgres:%d" % (17 if major != 17 else 15)
    if not image_present(other):
        pytest.skip("image %s not found (docker image inspect %s failed): build it with make images-pg-matrix"
                    % (other, other))
    run = run_module("migration_rehearsal", module_args(config, manifest, other))
    assert run.result.get("failed") is True, run.output[-3000:]
    other_major = other.rsplit(":", 1)[1]
    assert ("the image %s runs PostgreSQL %s, the archive comes from PostgreSQL %d" % (other, other_major, major)
            in run.result["msg"])
    assert "use an image of PostgreSQL %d" % major in run.result["msg"]
    assert run.result["scratch"]["removed"] is True
    assert scratch_containers(docker_client, db.name) == []


# ---------------------------------------------------------------- interruptions

SCRIPT = textwrap.dedent('''
    import json, os, subprocess, sys
    sys.path[:0] = json.loads(os.environ["REHEARSE_PATHS"])
    from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import MigrateRequest
    from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url
    from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.container import ContainerSpec
    from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.rehearsal import (
        Rehearsal, RehearsalRequest)

    def runner(argv, env, cwd=None):
        full = dict(os.environ); full.update(env)
        proc = subprocess.run(argv, env=full, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return proc.returncode, proc.stdout, proc.stderr

    args = json.loads(os.environ["REHEARSE_ARGS"])
    request = RehearsalRequest(migrate=MigrateRequest(config=args["config"], lock_timeout="2s", retries=0,
                               alembic_bin=args["alembic"], watch_controller=False),
                               archive=args["archive"], estimate=False, bin_dir=args["bin_dir"],
                               container=ContainerSpec(image=args["image"], start_timeout=180))
    print(json.dumps(Rehearsal(request, parse_db_url(os.environ["REHEARSE_URL"]), runner).run(), default=str))
''')


@pytest.fixture(scope="module")
def slow(pg_server, docker_client, tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearse-container-slow")
    db, config, manifest = source_database(
        pg_server, root, SLOW_REVISIONS, "INSERT INTO orders (quantity) SELECT g FROM generate_series(1, 1000) g")
    image = "dbops/postgres:%d" % archive_major(manifest)
    if not image_present(image):
        pytest.skip("image %s not found: build it with make images (or make images-pg-matrix)" % image)
    yield db, config, manifest, image
    for left in scratch_containers(docker_client, db.name):
        left.remove(force=True, v=True)
    pg.drop_database(pg_server, db.name)


def start_rehearsal(db: DbHandle, config: Path, manifest: str, image: str) -> subprocess.Popen:
    """The rehearsal in a process of its own; the connection options name the source server, which it never uses."""
    env = dict(os.environ, REHEARSE_URL=db.url, REHEARSE_PATHS=json.dumps(sys.path), REHEARSE_ARGS=json.dumps({
        "config": str(config), "archive": manifest, "bin_dir": pg.find_pg_bin(), "image": image,
        "alembic": str(Path(sys.executable).parent / "alembic")}))
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def wait_for_sleeping_rehearsal(client, db: DbHandle, proc: subprocess.Popen, timeout: float = 240):
    """The container once the slow revision sleeps in it (asked with psql inside, over its local socket)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the rehearsal ended early: %s" % (proc.stderr.read()[-3000:],)
        for found in scratch_containers(client, db.name):
            code, out = found.exec_run(["psql", "-U", pg.TEST_USER, "-d", "postgres", "-Atc",
                                        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%'"
                                        " AND state = 'active' AND pid <> pg_backend_pid()"])
            if code == 0 and out.decode().strip() not in ("", "0"):
                found.reload()
                return found
        time.sleep(0.5)
    raise AssertionError("the rehearsal never reached the slow revision")


def owner_pid(container) -> int:
    return backups.parse_owner_record(container.labels[box.OWNER_LABEL])["pid"]


def test_sigterm_mid_migration_removes_the_container(slow, docker_client):
    db, config, manifest, image = slow
    proc = start_rehearsal(db, config, manifest, image)
    try:
        found = wait_for_sleeping_rehearsal(docker_client, db, proc)
        assert owner_pid(found) == proc.pid
        password = container_password(found)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # the runner stops Alembic and reports the interruption as the migration's failure; the rehearsal ends normally
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["passed"] is False and "interrupted" in result["failure"]
    assert result["scratch"]["removed"] is True and result["scratch_dropped"] is True
    assert scratch_containers(docker_client, db.name) == []
    assert password not in out + err
    assert scratch_databases(db.server) == []


def test_kill_9_leaves_the_container_and_the_next_run_removes_it(slow, docker_client):
    db, config, manifest, image = slow
    proc = start_rehearsal(db, config, manifest, image)
    try:
        found = wait_for_sleeping_rehearsal(docker_client, db, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    [left] = scratch_containers(docker_client, db.name)
    assert left.name == found.name and owner_pid(left) == proc.pid
    # check mode says it would go, and leaves it
    args = module_args(config, manifest, image, estimate=False, target="0001")
    run = run_module("migration_rehearsal", args, check=True)
    assert run.result.get("failed") is not True, run.output[-3000:]
    assert any(left.name in entry for entry in run.result["cleaned_up"]), run.output[-3000:]
    assert [c.name for c in scratch_containers(docker_client, db.name)] == [left.name]
    # the next run removes it before it starts its own, and its own too
    run = run_module("migration_rehearsal", args)
    assert run.result.get("passed") is True, run.output[-3000:]
    assert any(left.name in entry and "which is gone" in entry for entry in run.result["cleaned_up"])
    assert run.result["scratch"]["removed"] is True
    assert scratch_containers(docker_client, db.name) == []
    assert scratch_databases(db.server) == []


def test_leftover_cleanup_does_not_fail_while_another_rehearsal_removes_its_container(docker_client):
    """Two rehearsals on one host: one removes its scratch container while the other looks for leftovers."""
    image = pg.server_image(15)
    owner = backups.this_process()
    names = ["%sconcurrent-%s-%d" % (box.NAME_PREFIX, uuid.uuid4().hex[:8], i) for i in range(12)]
    created = [docker_client.containers.create(image, name=name, labels=box.owner_labels(owner, name))
               for name in names]
    scratch = box.ScratchContainer(box.ContainerSpec(image=image), owner, "concurrent", None,
                                   client_factory=lambda: docker_client)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            removing = pool.submit(lambda: [c.remove(force=True, v=True) for c in created])
            rounds = 0
            while not removing.done() or rounds == 0:
                out = scratch.clean_leftovers(owner, check_mode=True)  # a live owner's containers are kept
                assert out["dropped"] == [], out
                rounds += 1
            removing.result()
        assert rounds > 1
    finally:
        for container in created:
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
