"""The Docker engine restarted in the middle of a compose_deploy release.

The engine stops every container when it shuts down (no live-restore), so the release
being deployed, the old release and the database all go away at once and come back by
their restart policy. What must hold: the task ends (finished, or failed with a message
that says what happened), the database keeps every row, and the next identical run
releases the new version cleanly.
"""
from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest

from tests.integration.test_compose_deploy import DeployStack, brief

# Restarting the engine stops every container on the machine: never beside other tests.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.exclusive, pytest.mark.timeout(1200)]

DOCKERD_LOG = Path("/var/log/dockerd.log")


def _docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


class LocalEngine:
    """A dockerd on this machine that this test may stop and start again."""

    def __init__(self, pid: int, argv: list[str], systemd: bool):
        self.pid = pid
        self.argv = argv
        self.systemd = systemd

    @classmethod
    def find(cls) -> "LocalEngine | None":
        if os.geteuid() != 0 or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock") not in (
                "unix:///var/run/docker.sock", "unix:///run/docker.sock"):
            return None
        pids = [int(p.name) for p in Path("/proc").iterdir()
                if p.name.isdigit() and _read(p / "comm").strip() == "dockerd"]
        if len(pids) != 1:
            return None
        argv = [a for a in _read(Path("/proc/%d/cmdline" % pids[0])).split("\0") if a]
        systemd = _read(Path("/proc/1/comm")).strip() == "systemd" and subprocess.run(
            ["systemctl", "is-active", "--quiet", "docker"], capture_output=True).returncode == 0
        return cls(pids[0], argv, systemd)

    def restart(self) -> float:
        """Stop the engine (it stops every container) and start it again; returns seconds down."""
        started = time.monotonic()
        if self.systemd:
            subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=180)
        else:
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 120
            while Path("/proc/%d" % self.pid).exists() and time.monotonic() < deadline:
                if _read(Path("/proc/%d/stat" % self.pid)).split(") ")[-1][:1] == "Z":
                    break  # exited, waiting for its parent to reap it
                time.sleep(0.2)
            self._start()
        self._wait_answering()
        return time.monotonic() - started

    def ensure_running(self) -> None:
        if not _docker_answers():
            self._start()
            self._wait_answering()

    def _start(self) -> None:
        with DOCKERD_LOG.open("ab") as log:
            proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        self.pid = proc.pid

    @staticmethod
    def _wait_answering(timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _docker_answers():
                return
            time.sleep(0.5)
        raise AssertionError("the Docker engine did not answer within %.0f s after the restart; see %s"
                             % (timeout, DOCKERD_LOG))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@pytest.fixture
def engine(docker_client):
    found = LocalEngine.find()
    if found is None:
        pytest.skip("no local dockerd this test may restart (needs root, the default socket and one dockerd)")
    yield found
    found.ensure_running()


def _table_digest(db_url: str) -> tuple[int, str]:
    with psycopg2.connect(db_url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), md5(string_agg(id::text || ':' || note, ',' ORDER BY id)) FROM restart_probe")
        count, digest = cur.fetchone()
    conn.close()
    return count, digest


def _wait_for_db(db_url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(db_url, connect_timeout=3).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _wait_for_surge(docker_client, stack: DeployStack, image: str, timeout: float = 180) -> None:
    """Until a container of the new release exists, so the restart lands mid-release."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c.attrs["Config"]["Image"] == image for c in stack.containers(docker_client, "app")):
            return
        time.sleep(0.2)
    raise AssertionError("no container of %s appeared within %.0f s" % (image, timeout))


@pytest.mark.fault("Docker engine restarted during a release",
                   holds="the task ends with a clear outcome; the stack comes back; every database row kept; "
                         "the next run releases the new version with one app container")
def test_engine_restart_during_release(engine, releases, docker_client):
    releases.build("2", "2.0.0")
    stack = DeployStack(releases, "1")
    try:
        first = stack.deploy("1").result
        assert not first.get("failed"), brief(first)
        with psycopg2.connect(stack.db_url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE restart_probe (id int PRIMARY KEY, note text NOT NULL)")
            cur.execute("INSERT INTO restart_probe SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
        conn.close()
        before = _table_digest(stack.db_url)

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            deploying = pool.submit(stack.deploy, "2")
            _wait_for_surge(docker_client, stack, releases.repo + ":2")
            down_s = engine.restart()
            result = deploying.result(timeout=900).result

        # The task ended. Losing the engine is reported as such, with what to run next; an
        # engine that was back before the next check shows up as a failed health gate instead.
        assert "MODULE FAILURE" not in result.get("msg", "") and "Traceback" not in result.get("msg", ""), \
            brief(result)
        if result.get("engine_lost"):
            assert result["failed"] is True and result["failed_check"] == "engine", brief(result)
            assert "stopped answering" in result["msg"] and "run this task again" in result["msg"], brief(result)
        elif result.get("failed"):
            assert result["rolled_back"] is True, brief(result)

        # The database comes back by its restart policy with every row.
        _wait_for_db(stack.db_url)
        assert _table_digest(stack.db_url) == before

        # The next identical run releases 2.0.0 cleanly.
        again = stack.deploy("2").result
        assert not again.get("failed"), brief(again)
        stack.wait_for("/healthz", timeout=120)
        assert stack.served_version() == "2.0.0"
        running = [c for c in stack.containers(docker_client, "app") if c.status == "running"]
        assert len(running) == 1, [(c.name, c.status) for c in stack.containers(docker_client, "app")]
        assert _table_digest(stack.db_url) == before
        print("engine down and back in %.1f s; first run: %s" % (down_s, result.get("msg", "finished")))
    finally:
        engine.ensure_running()
        stack.down()
