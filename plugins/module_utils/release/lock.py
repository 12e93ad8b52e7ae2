# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release lock: one release of a project at a time.

The lock is a directory made with an atomic ``mkdir`` on the first app host; ``owner.json`` inside
names the controller run that holds it (boot id, PID namespace and host name of the controller,
and the ansible-playbook PID). A lock left by a run that was killed on this same controller is
recognised and taken over, unless a migration runner started by that run still holds the
database's migration lock (a killed ansible-playbook does not stop a module it started). A lock
held from another controller is never broken.

Everything here is plain logic; reading ``/proc`` goes through a ``proc`` root so tests can
give their own.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional

OWNER_FILE = "owner.json"
IDENTITY_KEYS = ("boot_id", "pid_ns", "host")
# Seconds between two attempts while another run holds the lock.
POLL_SECONDS = 5


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def controller_identity(proc: str = "/proc") -> Dict[str, str]:
    """Who this controller is: a reboot, a new PID namespace (container) or another host changes it."""
    try:
        pid_ns = os.readlink(os.path.join(proc, "self", "ns", "pid"))
    except OSError:
        pid_ns = ""
    return {"boot_id": _read(os.path.join(proc, "sys", "kernel", "random", "boot_id")),
            "pid_ns": pid_ns, "host": _read(os.path.join(proc, "sys", "kernel", "hostname"))}


def run_pid() -> int:
    """The PID of this ansible-playbook run.

    Action plugins run in a worker process that ansible-playbook forks, so the worker's parent is
    the run itself: its PID lives exactly as long as the run does.
    """
    return os.getppid()


def is_ansible_process(pid: int, proc: str = "/proc") -> bool:
    """Whether ``pid`` is a live process whose command line is an Ansible run."""
    if pid <= 0:
        return False
    return "ansible" in _read(os.path.join(proc, str(pid), "cmdline")).replace("\0", " ")


def owner_record(controller: Mapping[str, str], pid: int, started: str, user: str,
                 details: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """What ``owner.json`` holds: who started the release, from where, and what it releases."""
    record: Dict[str, Any] = {"started": started, "user": user}
    record.update(details or {})
    record.update({"pid": pid, "controller": dict(controller)})
    return record


def owner_text(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def digest(text: str) -> str:
    """The fingerprint of an owner record: a lock is removed only while it still holds that record."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_owner(text: str) -> Dict[str, Any]:
    """The owner record, or {} when the file is missing, empty or not a JSON object."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def holder_pid(holder: Mapping[str, Any]) -> int:
    try:
        return int(holder.get("pid") or 0)
    except (TypeError, ValueError):
        return 0


def holder_is_stale(holder: Mapping[str, Any], controller: Mapping[str, str],
                    is_alive: Callable[[int], bool]) -> bool:
    """A lock is stale only when a run of this very controller took it and that run is gone.

    A holder from another controller (AWX, another laptop), or one whose record does not name its
    controller, is never judged stale: this controller cannot see its processes.
    """
    recorded = holder.get("controller")
    if not isinstance(recorded, Mapping) or not all(controller.get(key) for key in IDENTITY_KEYS):
        return False
    same_controller = all(recorded.get(key) == controller.get(key) for key in IDENTITY_KEYS)
    pid = holder_pid(holder)
    return same_controller and pid > 0 and not is_alive(pid)


def attempts(wait_seconds: float, poll_seconds: float = POLL_SECONDS) -> int:
    """How many more tries after the first fit in ``wait_seconds``."""
    if wait_seconds <= 0:
        return 0
    return int(-(-wait_seconds // poll_seconds))


def held_message(project: str, path: str, owner_text_read: str, wait_seconds: int) -> str:
    return ("Another deploy of %s holds %s (%s) and did not finish within %d s. Nothing was changed. "
            "Wait for it and run again; if that run died on another controller, check `docker compose ps`, "
            "then remove %s." % (project or "this project", path, owner_text_read.strip() or "owner unknown",
                                 wait_seconds, path))


def waited_message(path: str, holder_text: str, waited_s: float) -> str:
    return "took the release lock %s after waiting %.0f s for the run that held it (%s)" % (
        path, waited_s, holder_text.strip() or "owner unknown")


def takeover_message(path: str, holder: Mapping[str, Any]) -> str:
    return ("%s was left by ansible-playbook PID %d on this controller (started %s), which no longer runs: "
            "taking it over. Check `docker compose ps` and the summary below: that run may have stopped halfway."
            % (path, holder_pid(holder), holder.get("started") or "?"))


def runner_message(path: str, holder: Mapping[str, Any], runner: Mapping[str, Any], wait_seconds: int) -> str:
    sessions: List[str] = ["%s (%s, from %s, connected %s s)" % (
        runner.get("pid"), runner.get("application_name"), runner.get("client"), runner.get("connected_s"))]
    return ("%s was left by ansible-playbook PID %d, which no longer runs, but a migration from that killed run is "
            "still running (database session %s) and holds the migration lock after %d s. Nothing was changed. "
            "Wait for it to end (pg_stat_activity shows it), then run again; do not remove the lock while it runs."
            % (path, holder_pid(holder), ", ".join(sessions), wait_seconds))


# The task's options, shared by the action plugin (which validates them) and the module.
ARGUMENT_SPEC: Dict[str, Any] = {
    "path": {"type": "path", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "wait": {"type": "int", "default": 600},
    "project": {"type": "str", "default": "this project"},
    "details": {"type": "dict", "default": {}},
    "migration_lock": {"type": "dict", "no_log": True},
    "owner_digest": {"type": "str"},
}
