"""A real PostgreSQL server for tests: a private cluster on a free loopback port.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is
initialised and started as the ``postgres`` OS user. Set ``DBOPS_TEST_PG_URL``
(``postgresql://user:password@host:port/postgres``) to use an existing server instead.

``DBOPS_TEST_PG_VERSION=13`` (or 15, 17) runs the server in a container of the local image
``dbops/postgres:13`` instead (``make images-pg-matrix`` builds it; ``DBOPS_TEST_PG_IMAGE``
names another image of that major), published on a free loopback port. Client programs stay
the host's (PostgreSQL 15 on Debian 12): ``client_options`` and ``host_client_cannot_dump``
tell the tests when those are too old for the server and the one in its container must do.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Iterator
from urllib.parse import quote, urlsplit

import psycopg2
from psycopg2 import sql

# A recognisable password: tests assert it never leaks into results, logs or argv.
TEST_PASSWORD = "Sup3r-S3cret-pw-7731"
TEST_USER = "dbops"
# Server settings of every test server: fast and throw-away, room for parallel tests.
SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                   "max_connections": "200", "shared_buffers": "256MB", "max_wal_size": "4GB"}
PG_VERSION_ENV = "DBOPS_TEST_PG_VERSION"


def requested_version() -> int | None:
    """The PostgreSQL major the tests were asked to run against in a container (None: the host's cluster)."""
    value = os.environ.get(PG_VERSION_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise RuntimeError(f"{PG_VERSION_ENV}={value!r}: give a PostgreSQL major version such as 13, 15 or 17")
    return int(value)


def server_image(major: int) -> str:
    return os.environ.get("DBOPS_TEST_PG_IMAGE") or f"dbops/postgres:{major}"


def find_pg_bin() -> str:
    """Newest Debian PostgreSQL server binaries (15 on Debian 12)."""
    override = os.environ.get("DBOPS_PG_BIN")
    if override:
        return override
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found: run `make bootstrap` (installs Debian's postgresql)")
    return os.path.dirname(candidates[-1])


@functools.lru_cache(maxsize=None)
def host_client_major() -> int:
    """Major version of the host's pg_dump, the one pg_backup and the lock trace find on PATH."""
    found = shutil.which("pg_dump") or os.path.join(find_pg_bin(), "pg_dump")
    out = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise RuntimeError(f"cannot read pg_dump's version from {out!r}")
    return int(match.group(1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str
    bin_dir: str = ""
    data_dir: str = ""
    run_as: str | None = None
    container: str = ""  # the docker container running this server, if any

    @property
    def version_num(self) -> int:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version_num")
            return int(cur.fetchone()[0])

    def url(self, dbname: str = "postgres", *, driver: str = "") -> str:
        scheme = "postgresql+" + driver if driver else "postgresql"
        return f"{scheme}://{quote(self.user)}:{quote(self.password, safe='')}@{self.host}:{self.port}/{dbname}"

    def login_args(self, dbname: str = "postgres") -> dict:
        """The community.postgresql style connection options."""
        return {
            "login_host": self.host,
            "login_port": self.port,
            "login_user": self.user,
            "login_password": self.password,
            "login_db": dbname,
        }

    def connect(self, dbname: str = "postgres", autocommit: bool = True):
        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=dbname)
        conn.autocommit = autocommit
        return conn

    def libpq_env(self, dbname: str = "postgres") -> dict:
        """Environment for libpq tools (psql, pg_dump): the password never goes to argv."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
                "PGPASSWORD": self.password, "PGDATABASE": dbname}

    # Fault injection helpers (only for a cluster these tests started).
    def pg_ctl(self, *args: str) -> None:
        if not self.data_dir:
            raise RuntimeError("pg_ctl needs a cluster started by the tests")
        _run_as(self.run_as, [os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data_dir, "-w", "-t", "60",
                              "-l", os.path.join(self.data_dir, "server.log"), *args])

    def restart(self) -> None:
        if self.container:  # the server is the container's main process; its data is in a volume
            _docker("restart", "-t", "60", self.container)
            _wait_ready(self, timeout=60)
            return
        self.pg_ctl("restart", "-m", "fast")


def client_options(server: PgServer) -> dict:
    """pg_backup options that reach ``server`` with a client at least as new as it: none when the
    host's client is (pg_dump refuses newer servers), else the server's own container."""
    if host_client_cannot_dump(server):
        return {"container": server.container}
    return {}


def host_client_cannot_dump(server: PgServer) -> str:
    """Why the host's pg_dump cannot dump ``server`` (empty when it can): a skip reason."""
    server_major = server.version_num // 10000
    client = host_client_major()
    if server_major <= client:
        return ""
    return (f"the host's pg_dump {client} refuses a PostgreSQL {server_major} server (pg_dump dumps only servers "
            f"of its own version or older)")


def _run_as(user: str | None, argv: list[str]) -> None:
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)


def _server_from_env(url: str) -> PgServer:
    parts = urlsplit(url)
    return PgServer(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                    user=parts.username or "postgres", password=parts.password or "")


@contextlib.contextmanager
def private_cluster() -> Iterator[PgServer]:
    """initdb + pg_ctl start on a free port; stopped and removed afterwards. With
    DBOPS_TEST_PG_VERSION, a container of that version instead."""
    env_url = os.environ.get("DBOPS_TEST_PG_URL")
    if env_url:
        yield _server_from_env(env_url)
        return
    major = requested_version()
    if major is not None:
        with container_cluster(major) as server:
            yield server
        return
    bin_dir = find_pg_bin()
    run_as = "postgres" if os.geteuid() == 0 else None
    base = tempfile.mkdtemp(prefix="dbops-pg-")
    data_dir = os.path.join(base, "data")
    pwfile = os.path.join(base, "pw")
    with open(pwfile, "w", encoding="utf-8") as handle:
        handle.write(TEST_PASSWORD)
    if run_as:
        shutil.chown(base, run_as)
        shutil.chown(pwfile, run_as)
    os.chmod(pwfile, 0o600)
    _run_as(run_as, [os.path.join(bin_dir, "initdb"), "-D", data_dir, "-U", TEST_USER, "--pwfile", pwfile,
                     "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
    os.unlink(pwfile)
    port = free_port()
    with open(os.path.join(data_dir, "postgresql.auto.conf"), "a", encoding="utf-8") as conf:
        conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
                   + "".join(f"{key} = {value}\n" for key, value in SERVER_SETTINGS.items()))
    server = PgServer(host="127.0.0.1", port=port, user=TEST_USER, password=TEST_PASSWORD,
                      bin_dir=bin_dir, data_dir=data_dir, run_as=run_as)
    server.pg_ctl("start")
    try:
        _wait_ready(server)
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(base, ignore_errors=True)


def _docker(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f"docker {args[0]} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout.strip()


def _process_started(pid: int) -> str:
    """Start time of a process (field 22 of /proc/PID/stat), or "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _remove_orphaned_servers() -> None:
    """Containers of test runs that were killed before their teardown (their process is gone)."""
    listed = _docker("ps", "-a", "--filter", "label=dbops.test=pg-server",
                     "--format", '{{.ID}} {{.Label "dbops.test.pid"}} {{.Label "dbops.test.started"}}')
    for line in listed.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and _process_started(int(parts[1])) != parts[2]:
            with contextlib.suppress(RuntimeError):
                _docker("rm", "-f", "-v", parts[0])


@contextlib.contextmanager
def container_cluster(major: int) -> Iterator[PgServer]:
    """A server of the image dbops/postgres:MAJOR on a free loopback port; removed with its data afterwards."""
    image = server_image(major)
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        raise RuntimeError(f"image {image} not found: build it with `PG_VERSIONS={major} scripts/build-images` "
                           f"(make images-pg-matrix)")
    _remove_orphaned_servers()
    name = f"dbops-test-pg{major}-{os.getpid()}-{os.urandom(3).hex()}"
    port = free_port()
    settings = [arg for key, value in SERVER_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
    # POSTGRES_PASSWORD reaches the container from docker's environment, not its argv.
    _docker("run", "-d", "--name", name, "--label", "dbops.test=pg-server", "--label", f"dbops.test.pid={os.getpid()}",
            "--label", f"dbops.test.started={_process_started(os.getpid())}", "--shm-size", "256m",
            "-e", f"POSTGRES_USER={TEST_USER}", "-e", "POSTGRES_PASSWORD", "-e", "POSTGRES_DB=postgres",
            "-e", "POSTGRES_INITDB_ARGS=--no-sync",
            "-p", f"127.0.0.1:{port}:5432", image, "postgres", *settings,
            env={"POSTGRES_PASSWORD": TEST_PASSWORD})
    server = PgServer(host="127.0.0.1", port=port, user=TEST_USER, password=TEST_PASSWORD,
                      container=name)
    try:
        _wait_ready(server, timeout=90)
        actual = server.version_num // 10000
        if actual != major:
            raise RuntimeError(f"image {image} runs PostgreSQL {actual}, not {major}")
        yield server
    finally:
        with contextlib.suppress(Exception):
            _docker("rm", "-f", "-v", name)


def _wait_ready(server: PgServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.connect().close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def create_database(server: PgServer, name: str) -> None:
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server: PgServer, name: str) -> None:
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
