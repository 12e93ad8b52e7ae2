"""Run collection modules and playbooks through real ansible-playbook.

Arguments go into a 0600 playbook file, never onto the command line, so that tests
can assert secrets stay out of the process list.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS_PATH = REPO_ROOT / ".collections"


def ensure_collection_link() -> None:
    """Make the working tree importable as ansible_collections.dbops.migrations."""
    link = COLLECTIONS_PATH / "ansible_collections" / "dbops" / "migrations"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(REPO_ROOT, target_is_directory=True)
        except FileExistsError:
            pass


@dataclasses.dataclass
class RunResult:
    rc: int
    stdout: str
    stderr: str
    result: dict[str, Any]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def failure_message(run: RunResult) -> str:
    """The module's failure message; fails the test when the task did not fail."""
    assert run.result.get("failed") is True, "expected a failure:\n" + run.output[-3000:]
    return run.result["msg"]


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    ensure_collection_link()
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_PATH),
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_HOST_KEY_CHECKING": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_LOCAL_TEMP": os.path.join(tempfile.gettempdir(), "dbops-ansible-local"),
        "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
    })
    env.update(extra or {})
    return env


def _inventory_file(tmp: Path) -> Path:
    inventory = tmp / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    return inventory


def run_playbook(playbook: str | Path, extra_vars: dict[str, Any] | None = None, *,
                 check: bool = False, diff: bool = False, inventory: str | Path | None = None,
                 env: dict[str, str] | None = None, timeout: float = 900, tags: str | None = None,
                 cwd: str | Path | None = None) -> RunResult:
    """ansible-playbook with extra vars from a 0600 file; returns rc and output."""
    with tempfile.TemporaryDirectory(prefix="dbops-play-") as tmpdir:
        tmp = Path(tmpdir)
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook),
                "-i", str(inventory or _inventory_file(tmp))]
        if extra_vars:
            vars_file = tmp / "vars.json"
            vars_file.write_text(json.dumps(extra_vars))
            vars_file.chmod(0o600)
            argv += ["-e", f"@{vars_file}"]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if tags:
            argv += ["--tags", tags]
        proc = subprocess.run(argv, env=ansible_env(env), capture_output=True, text=True,
                              timeout=timeout, cwd=str(cwd or REPO_ROOT), stdin=subprocess.DEVNULL)
        return RunResult(proc.returncode, proc.stdout, proc.stderr, {})


def run_module(module: str, args: dict[str, Any], *, check: bool = False, diff: bool = False,
               env: dict[str, str] | None = None, timeout: float = 900,
               task_env: dict[str, str] | None = None) -> RunResult:
    """Run one module task on localhost; ``result`` is the registered result."""
    name = module if "." in module else f"dbops.migrations.{module}"
    with tempfile.TemporaryDirectory(prefix="dbops-mod-") as tmpdir:
        tmp = Path(tmpdir)
        result_file = tmp / "result.json"
        task: dict[str, Any] = {"name": "module under test", name: args, "register": "r", "ignore_errors": True}
        if task_env:
            task["environment"] = task_env
        play = [{
            "hosts": "localhost", "gather_facts": False,
            "tasks": [
                task,
                {"name": "save result", "ansible.builtin.copy": {
                    "content": "{{ r | to_json }}", "dest": str(result_file), "mode": "0600"},
                 "check_mode": False, "diff": False},
            ],
        }]
        playbook = tmp / "play.yml"
        playbook.write_text(yaml.safe_dump(play, sort_keys=False))
        playbook.chmod(0o600)
        run = run_playbook(playbook, check=check, diff=diff, env=env, timeout=timeout)
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        return RunResult(run.rc, run.stdout, run.stderr, result)
