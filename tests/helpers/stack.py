"""The example compose stack, started under a private project name and free ports."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.helpers.postgres import TEST_PASSWORD, free_port

APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "auto_trader"
COMPOSE_FILE = APP_DIR / "docker-compose.prod.yml"


class ComposeStack:
    def __init__(self, app_version: str = "1.0.0", name: str | None = None):
        self.project = name or "t" + uuid.uuid4().hex[:10]
        self.nginx_port = free_port()
        self.db_port = free_port()
        self.env = {
            "POSTGRES_PASSWORD": TEST_PASSWORD,
            "NGINX_PORT": str(self.nginx_port),
            "DB_PORT": str(self.db_port),
            "APP_VERSION": app_version,
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    @property
    def db_url(self) -> str:
        return f"postgresql://auto_trader:{TEST_PASSWORD}@127.0.0.1:{self.db_port}/auto_trader"

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        argv = ["docker", "compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        proc = subprocess.run(argv, cwd=APP_DIR, env={**os.environ, **self.env}, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def up(self, *services: str) -> None:
        self.compose("up", "-d", "--wait", *services)

    def migrate(self, target: str = "head") -> subprocess.CompletedProcess:
        return self.compose("--profile", "migration", "run", "--rm", "-e", f"MIGRATION_TARGET={target}",
                            "migration", "alembic", "upgrade", target)

    def down(self) -> None:
        self.compose("--profile", "migration", "down", "-v", "--remove-orphans", "-t", "5", check=False)

    def get(self, path: str, timeout: float = 5) -> tuple[int, dict | str]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=timeout) as resp:
                body = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read().decode(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def wait_for(self, path: str = "/healthz", status: int = 200, timeout: float = 60) -> dict | str:
        deadline = time.monotonic() + timeout
        last: tuple = (None, None)
        while time.monotonic() < deadline:
            try:
                last = self.get(path)
                if last[0] == status:
                    return last[1]
            except OSError as exc:
                last = (None, str(exc))
            time.sleep(0.5)
        raise AssertionError(f"{path} did not answer {status} within {timeout}s; last: {last}")
