"""A real PostgreSQL server for tests: a private cluster on a free loopback port.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is
initialised and started as the ``postgres`` OS user. Set ``DBOPS_TEST_PG_URL``
(``postgresql://user:password@host:port/postgres``) to use an existing server instead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
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


def find_pg_bin() -> str:
    """Newest Debian PostgreSQL server binaries (15 on Debian 12)."""
    override = os.environ.get("DBOPS_PG_BIN")
    if override:
        return override
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found: run `make bootstrap` (installs Debian's postgresql)")
    return os.path.dirname(candidates[-1])


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
        self.pg_ctl("restart", "-m", "fast")


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
    """initdb + pg_ctl start on a free port; stopped and removed afterwards."""
    env_url = os.environ.get("DBOPS_TEST_PG_URL")
    if env_url:
        yield _server_from_env(env_url)
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
                   "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
                   "shared_buffers = 256MB\nmax_wal_size = 4GB\n")
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
