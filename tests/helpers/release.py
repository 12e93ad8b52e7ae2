"""A private copy of the example stack driven through the collection's playbooks.

Each ``Release`` has its own compose project, ports, image repository (tagged from the
lead's ``auto_trader`` image, so tests never retag shared images), inventory, backup and
report folders.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.ansible import REPO_ROOT, RunResult, run_playbook
from tests.helpers.containers import project_containers
from tests.helpers.postgres import TEST_PASSWORD
from tests.helpers.stack import APP_DIR, ComposeStack

BASE_IMAGES = ("auto_trader:1.0.0", "auto_trader:latest")


def base_image(client) -> str:
    import docker.errors
    for ref in BASE_IMAGES:
        try:
            client.images.get(ref)
            return ref
        except docker.errors.ImageNotFound:
            continue
    raise AssertionError("no auto_trader image: run `make images`")


class Release:
    def __init__(self, docker_client, tmp_path: Path, app_version: str = "1.0.0", password: str = TEST_PASSWORD):
        self.client = docker_client
        self.tmp = tmp_path
        self.password = password
        self.stack = ComposeStack(app_version=app_version)
        self.stack.env["POSTGRES_PASSWORD"] = password
        self.project = self.stack.project
        self.image = "dbops-play-" + self.project
        self.stack.env["APP_IMAGE"] = self.image
        self.build_variant(app_version)
        self.backup_dir = tmp_path / "backups"
        self.report_dir = tmp_path / "reports"
        self.inventory = tmp_path / "inventory"
        self.write_inventory(app_version)

    # ------------------------------------------------------------ images
    def build_variant(self, version: str, fault: str = "none") -> str:
        """Tag a release of the example app: the same code, its own version and fault setting."""
        tag = f"{self.image}:{version}"
        # A healthcheck that tolerates a slow interpreter start on a busy test machine.
        dockerfile = (f"FROM {base_image(self.client)}\nENV APP_VERSION={version} APP_FAULT={fault}\n"
                      "HEALTHCHECK --interval=3s --timeout=10s --start-period=15s --retries=5 CMD [\"python3\", "
                      "\"-c\", \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', "
                      "timeout=5)\"]\n")
        self.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, pull=False)
        return tag

    def remove_images(self) -> None:
        for image in self.client.images.list(name=self.image):
            # Only this helper's tags: the same image may also be auto_trader:1.0.0.
            for tag in (t for t in image.tags if t.startswith(self.image + ":")):
                try:
                    self.client.images.remove(tag, force=True)
                except Exception:
                    pass

    # ------------------------------------------------------------ inventory
    def group_vars(self, app_version: str) -> dict[str, Any]:
        return {
            "dbops_project_src": str(APP_DIR),
            "dbops_compose_files": ["docker-compose.prod.yml"],
            "dbops_compose_project": self.project,
            "dbops_app_image": self.image,
            "app_version": app_version,
            "dbops_db_host": "127.0.0.1",
            "dbops_db_port": self.stack.db_port,
            "dbops_db_name": "auto_trader",
            "dbops_db_user": "auto_trader",
            "dbops_db_password": self.password,
            "dbops_db_container": f"{self.project}-db-1",
            "dbops_alembic_config": str(APP_DIR / "alembic.ini"),
            "dbops_nginx_port": self.stack.nginx_port,
            "dbops_health_url": f"{self.stack.base_url}/healthz",
            "dbops_maintenance_check_url": f"{self.stack.base_url}/api/stats",
            "dbops_nginx_container": f"{self.project}-nginx-1",
            "dbops_backup_dest": str(self.backup_dir),
            "dbops_report_dir": str(self.report_dir),
            "dbops_health_timeout": 120,
        }

    def write_inventory(self, app_version: str, app_hosts: tuple[str, ...] = ("localhost",)) -> None:
        """Every host is this machine (local connection); several app hosts share the one stack."""
        (self.inventory / "group_vars").mkdir(parents=True, exist_ok=True)
        hosts = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                         "children": {"app": {"hosts": {h: None for h in app_hosts}},
                                      "db": {"hosts": {app_hosts[0]: None}}}}}
        (self.inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
        (self.inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(self.group_vars(app_version)))

    # ------------------------------------------------------------ runs
    def play(self, name: str, extra: dict[str, Any] | None = None, *, collection_form: bool = False,
             timeout: float = 900, check: bool = False) -> RunResult:
        playbook = f"dbops.migrations.{name}" if collection_form else str(REPO_ROOT / "playbooks" / f"{name}.yml")
        return run_playbook(playbook, extra or {}, inventory=self.inventory, timeout=timeout, check=check)

    def deploy(self, **extra: Any) -> RunResult:
        return self.play("deploy", extra)

    # ------------------------------------------------------------ state
    def connect(self):
        import psycopg2
        return psycopg2.connect(host="127.0.0.1", port=self.stack.db_port, dbname="auto_trader", user="auto_trader",
                                password=self.password, connect_timeout=5)

    def scalar(self, sql: str):
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
            return row[0] if row else None

    def execute(self, sql: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
            conn.commit()
        finally:
            conn.close()

    def revision(self) -> str | None:
        try:
            return self.scalar("SELECT version_num FROM alembic_version")
        except Exception as exc:  # no table yet
            if "alembic_version" in str(exc):
                return None
            raise

    def seed(self, users: int = 3) -> None:
        self.execute(
            "INSERT INTO users(email, name) SELECT 'u' || g || '@example.com', 'user ' || g "
            f"FROM generate_series(1, {users}) g;"
            "INSERT INTO accounts(user_id) SELECT id FROM users;"
            "INSERT INTO orders(account_id, symbol, side, quantity, price) "
            "SELECT id, 'ABC', 'buy', 10, 1.5 FROM accounts;")

    def container_ids(self, service: str) -> list[str]:
        return sorted(c.id for c in project_containers(self.client, self.project, service))

    def backups(self) -> list[Path]:
        return sorted(self.backup_dir.glob("*.manifest.json")) if self.backup_dir.exists() else []

    def reports(self, pattern: str = "deploy-2*.json") -> list[dict]:
        if not self.report_dir.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.report_dir.glob(pattern))]

    def lock_held(self) -> bool:
        return (self.report_dir / "deploy.lock").exists()

    def close(self) -> None:
        self.stack.down()
        self.remove_images()


def new_release(docker_client, tmp_path: Path, app_version: str = "1.0.0", password: str = TEST_PASSWORD) -> Release:
    return Release(docker_client, tmp_path / ("r" + uuid.uuid4().hex[:6]), app_version, password)


def compose_ps(release: Release) -> str:
    return subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={release.project}",
                           "--format", "{{.Names}} {{.Status}} {{.Image}}"],
                          capture_output=True, text=True).stdout
