"""Interrupt ansible-playbook at a task boundary, the way operators and crashes do.

``Ctrl-C`` is SIGINT to the whole foreground process group (the terminal sends it to every
process of the job, modules included). A controller that dies is SIGKILL to the
ansible-playbook process alone: with an SSH connection the module on the managed host lives
on, and with the local connection its worker and module are left behind the same way.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.helpers.ansible import REPO_ROOT, ansible_env

TASK_LINE = re.compile(r"^(TASK|RUNNING HANDLER) \[(?P<name>.*)\]")


@dataclasses.dataclass
class Interruption:
    signal: str          # "SIGINT" (Ctrl-C) or "SIGKILL" (the controller dies)
    at_task: int | str   # the signal goes out when this task starts (number or name fragment)
    task_name: str       # the task that had just started ("" when the run ended first)
    rc: int | None
    output: str

    @property
    def happened(self) -> bool:
        return bool(self.task_name)


def playbook_argv(playbook: str, inventory: Path, extra_vars_file: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "ansible-playbook"), str(REPO_ROOT / "playbooks" / f"{playbook}.yml"),
            "-i", str(inventory), "-e", f"@{extra_vars_file}"]


def write_vars(folder: Path, extra: dict[str, Any]) -> Path:
    path = folder / f"vars-{os.getpid()}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(extra))
    path.chmod(0o600)
    return path


def task_names(output: str) -> list[str]:
    """The tasks a run started, in order."""
    return [m.group("name") for m in map(TASK_LINE.match, output.splitlines()) if m]


def run_and_interrupt(argv: list[str], at_task: int | str, sig: str, *, settle: float = 0.5,
                      timeout: float = 900) -> Interruption:
    """Start the playbook; when the task ``at_task`` starts (its 1-based number, or the first task
    whose name contains that text), wait ``settle`` seconds and send the signal. Returns once
    ansible-playbook has exited (SIGINT) or was killed (SIGKILL)."""
    proc = subprocess.Popen(argv, env=ansible_env(), cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    lines: list[str] = []
    seen = 0
    started = ""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        match = TASK_LINE.match(line)
        if not match:
            continue
        seen += 1
        if seen == at_task or (isinstance(at_task, str) and at_task in match.group("name")):
            started = match.group("name")
            time.sleep(settle)
            if sig == "SIGINT":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.kill()
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the playbook did not reach task %r within %ss" % (at_task, timeout))
    # SIGINT: ansible-playbook cleans up and exits; read what it still prints.
    try:
        rest, _ = proc.communicate(timeout=120)
        lines.append(rest or "")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
        lines.append("\n[harness] ansible-playbook ignored SIGINT for 120 s and was killed\n" + (rest or ""))
    return Interruption(sig, at_task, started, proc.returncode, "".join(lines))


def wait_for_orphans(marker: str, timeout: float = 120) -> list[str]:
    """Wait until no process whose command line contains ``marker`` is left; returns those still
    alive at the deadline. A killed controller's modules may still be finishing."""
    deadline = time.monotonic() + timeout
    alive: list[str] = []
    while time.monotonic() < deadline:
        alive = processes_matching(marker)
        if not alive:
            return []
        time.sleep(1)
    return alive


def processes_matching(marker: str) -> list[str]:
    found = []
    me = os.getpid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == me:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{pid} {cmdline[:200]}")
    return found


def temp_roots() -> list[str]:
    """Where Ansible leaves module payloads on this controller (local and 'remote' temp)."""
    roots = [os.path.join(tempfile.gettempdir(), "dbops-ansible-local"), os.path.expanduser("~/.ansible/tmp")]
    return [r for r in roots if os.path.isdir(r)]
