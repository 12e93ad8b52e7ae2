"""The ledger example (examples/ledger) under a private compose project, free ports and its own
inventory, derived from inventories/ledger so that the shipped inventory is what the tests run.

The release images (ledger-api:1.0.0, 1.1.0, 1.2.0, broken) are built by scripts/build-images
and shared: a test never retags them; it only removes the backup tags its own project left.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.ansible import REPO_ROOT, RunResult, run_playbook
from tests.helpers.containers import project_containers
from tests.helpers.postgres import TEST_PASSWORD, free_port

APP_DIR = REPO_ROOT / "examples" / "ledger"
COMPOSE_FILE = APP_DIR / "compose.prod.yaml"
INVENTORY_DIR = REPO_ROOT / "inventories" / "ledger"
MIGRATIONS_INI = APP_DIR / "migrations" / "alembic.ini"
REPOSITORY = "ledger-api"
VERSION_TABLE = "ledger_schema_version"
FLAG_PATH = "/var/run/ledger/maintenance"


def release_heads() -> dict[str, str]:
    """tag -> the newest revision its image ships (examples/ledger/releases)."""
    heads = {}
    for line in (APP_DIR / "releases").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            tag, head, _fault = line.split()
            heads[tag] = head
    return heads


def revision_chain() -> list[str]:
    """Every revision id of the example, oldest first (from the revision scripts)."""
    import ast
    down_of: dict[str, str | None] = {}
    for path in (APP_DIR / "migrations" / "versions").glob("*.py"):
        found = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                found[node.targets[0].id] = getattr(node.value, "value", None)
        down_of[found["revision"]] = found["down_revision"]
    chain = [rev for rev, down in down_of.items() if down is None]
    while len(chain) < len(down_of):
        chain.append(next(rev for rev, down in down_of.items() if down == chain[-1]))
    return chain


class LedgerStack:
    def __init__(self, docker_client, tmp: Path, password: str = TEST_PASSWORD):
        self.client = docker_client
        self.tmp = tmp
        self.password = password
        self.project = "tl" + uuid.uuid4().hex[:10]
        self.http_port = free_port()
        self.db_port = free_port()
        self.inventory = tmp / "inventory"
        self.report_dir = tmp / "reports"
        self.backup_dir = tmp / "backups"
        self.tags_before = self.repository_tags()
        self.failed_step = ""

    @contextlib.contextmanager
    def step(self, name: str):
        """One release of the sequence: a later one starts from the state this one leaves, so
        after a failure the rest are skipped instead of failing for the same reason."""
        import pytest
        if self.failed_step:
            pytest.skip(f"{name} starts from the state {self.failed_step} leaves, and {self.failed_step} failed")
        try:
            yield
        except BaseException:
            self.failed_step = name
            raise

    # ------------------------------------------------------------ compose
    def env(self, tag: str) -> dict[str, str]:
        return {"IMAGE_TAG": tag, "DB_PASSWORD": self.password, "LEDGER_HTTP_PORT": str(self.http_port),
                "LEDGER_DB_PORT": str(self.db_port)}

    def compose(self, *args: str, tag: str = "1.0.0", check: bool = True, timeout: float = 300):
        argv = ["docker", "compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        proc = subprocess.run(argv, cwd=APP_DIR, env={**os.environ, **self.env(tag)}, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def up(self, tag: str = "1.0.0") -> None:
        """The whole stack as an operator starts it before handing it to the playbooks: no schema yet."""
        self.compose("up", "-d", "--wait", tag=tag)

    def down(self) -> None:
        self.compose("--profile", "tools", "down", "-v", "--remove-orphans", "-t", "5", check=False)

    def ps(self) -> str:
        return subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
                               "--format", "{{.Names}} {{.Status}} {{.Image}}"], capture_output=True, text=True).stdout

    def containers(self, service: str, running: bool = True) -> list:
        return project_containers(self.client, self.project, service, all=not running)

    def flag_present(self) -> bool:
        """The maintenance flag, seen from inside the running api container(s)."""
        for container in self.containers("api"):
            code, _ = container.exec_run(["test", "-e", FLAG_PATH])
            if code == 0:
                return True
        return False

    # ------------------------------------------------------------ images
    def repository_tags(self) -> dict[str, str]:
        """Every ledger-api tag -> image id."""
        tags = {}
        for image in self.client.images.list(name=REPOSITORY):
            for tag in image.tags:
                if tag.startswith(REPOSITORY + ":"):
                    tags[tag] = image.id
        return tags

    def release_image_ids(self) -> dict[str, str]:
        tags = self.repository_tags()
        return {tag: tags.get(f"{REPOSITORY}:{tag}", "missing") for tag in release_heads()}

    def remove_new_tags(self) -> None:
        """Backup tags this project left; release tags (present before) are never touched."""
        for tag in set(self.repository_tags()) - set(self.tags_before):
            if self.project in tag:
                try:
                    self.client.images.remove(tag, noprune=True)
                except Exception:
                    pass

    # ------------------------------------------------------------ HTTP
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 5) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: dict) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def health(self) -> dict:
        status, body = self.get("/health")
        assert status == 200, (status, body)
        return body

    # ------------------------------------------------------------ database
    def connect(self):
        import psycopg2
        return psycopg2.connect(host="127.0.0.1", port=self.db_port, dbname="ledger", user="ledger_app",
                                password=self.password, connect_timeout=5)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def scalar(self, sql: str, params: tuple = ()):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def revision(self) -> str | None:
        if not self.scalar("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)):
            return None
        return self.scalar(f"SELECT version_num FROM {VERSION_TABLE}")

    def column_type(self, table: str, column: str) -> str | None:
        return self.scalar("SELECT data_type FROM information_schema.columns WHERE table_name = %s "
                           "AND column_name = %s", (table, column))

    # ------------------------------------------------------------ playbooks
    def group_vars(self) -> dict[str, Any]:
        """inventories/ledger/group_vars/all.yml with this stack's project, ports, secrets and folders."""
        shipped = yaml.safe_load((INVENTORY_DIR / "group_vars" / "all.yml").read_text())
        shipped.update({
            "dbops_project_src": str(APP_DIR),
            "dbops_compose_project": self.project,
            "ledger_http_port": self.http_port,
            "dbops_db_port": self.db_port,
            "dbops_db_password": self.password,
            "dbops_backup_dest": str(self.backup_dir),
            "dbops_report_dir": str(self.report_dir),
            "dbops_health_timeout": 120,
        })
        return shipped

    def write_inventory(self) -> None:
        (self.inventory / "group_vars").mkdir(parents=True, exist_ok=True)
        hosts = yaml.safe_load((INVENTORY_DIR / "hosts.yml").read_text())
        hosts["all"]["vars"]["ansible_python_interpreter"] = sys.executable
        (self.inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
        (self.inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(self.group_vars()))

    def play(self, name: str, extra: dict[str, Any] | None = None, timeout: float = 900) -> RunResult:
        return run_playbook(REPO_ROOT / "playbooks" / f"{name}.yml", extra or {}, inventory=self.inventory,
                            timeout=timeout)

    def deploy(self, tag: str, **extra: Any) -> RunResult:
        """Release ``tag``: what is pending is what its image ships (no migration_target needed)."""
        return self.play("deploy", {"app_version": tag, **extra})

    def reports(self) -> list[dict]:
        if not self.report_dir.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.report_dir.glob("deploy-2*.json"))]

    def backups(self) -> list[Path]:
        return sorted(self.backup_dir.glob("*.manifest.json")) if self.backup_dir.exists() else []

    def explain(self, run: RunResult) -> str:
        return f"rc={run.rc}\n{run.stdout[-8000:]}\n{run.stderr[-3000:]}\n{self.ps()}"


class Probe:
    """Requests through the proxy every ``interval`` seconds while a release runs: what users saw."""

    def __init__(self, stack: LedgerStack, path: str = "/api/accounts", interval: float = 0.2):
        self.stack = stack
        self.path = path
        self.interval = interval
        self.results: list[tuple[int | None, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.results.append(self.stack.request("GET", self.path, timeout=5))
            except OSError as exc:  # connection refused or reset: a failed request
                self.results.append((None, str(exc)))
            self._stop.wait(self.interval)

    def __enter__(self) -> "Probe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def statuses(self) -> list[int | None]:
        return [status for status, _ in self.results]

    def failures(self, allowed: tuple[int, ...] = (200,)) -> list[tuple[int | None, Any]]:
        return [(status, body) for status, body in self.results if status not in allowed]


def wait_until(predicate, timeout: float = 60, interval: float = 0.5, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s")


@contextlib.contextmanager
def started_ledger(docker_client, folder: Path):
    """A private ledger stack at release 1.0.0 with its inventory; the release tags it finds are
    remembered so a test can prove none of them moved, and tags the tests add are removed after."""
    stack = LedgerStack(docker_client, folder)
    missing = [tag for tag, image_id in stack.release_image_ids().items() if image_id == "missing"]
    if missing:
        raise AssertionError(f"ledger-api images missing ({', '.join(missing)}): run scripts/build-images")
    stack.write_inventory()
    stack.release_ids_before = stack.release_image_ids()
    try:
        stack.up("1.0.0")
        yield stack
    finally:
        stack.down()
        stack.remove_new_tags()
