#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
---
module: release_lock
short_description: One release of a project at a time, with takeover of a killed run's lock
version_added: 0.1.0
author: dbops developers (@dbops)
description:
  - Takes or releases the release lock of a project, a directory made with an atomic C(mkdir) on the
    target (the first app host). C(owner.json) inside names the controller run that holds it, by the
    controller's boot id, PID namespace and host name, the C(ansible-playbook) PID, the user and O(details).
  - While another run holds the lock, the task waits up to O(wait) seconds, then fails naming the holder.
  - A lock left by a run that was killed on this same controller (same boot, PID namespace and host, and its
    C(ansible-playbook) PID no longer runs) is taken over, unless a migration runner started by that run still
    holds the database's migration lock (O(migration_lock)), because a killed C(ansible-playbook) does not stop a module
    it started; the task waits for that runner and fails if it outlives O(wait).
  - A lock held from another controller (AWX, another laptop) is never broken.
  - O(state=absent) removes the lock only while it still holds the owner record this run wrote (O(owner_digest)),
    so a run never removes a lock that another run has taken over.
  - Runs as an action plugin on the controller (which knows the controller's identity and processes) and a
    module on the target (which makes and removes the directory).
extends_documentation_fragment:
  - dbops.migrations.attributes
attributes:
  check_mode:
    support: full
    details: Reports whether the lock is free and who holds it; makes and removes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Taking the lock changes state every time (a second take by the same run waits for the first);
      releasing a lock that is already gone changes nothing.
options:
  path:
    description: The lock directory. Its parent is created (mode C(0750)) when missing.
    type: path
    required: true
  state:
    description: V(present) takes the lock, V(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  wait:
    description: Seconds to wait for another run's lock (and for a killed run's migration runner) before failing.
    type: int
    default: 600
  project:
    description: The project's name, for messages.
    type: str
    default: this project
  details:
    description: Extra fields for C(owner.json), such as the version being released and the risk asked.
    type: dict
    default: {}
  migration_lock:
    description:
      - How to ask the database whether a migration runner holds its migration lock, before taking over a killed
        run's lock. The connection options of M(dbops.migrations.alembic_migrate) (C(db_url) or C(login_*)) plus
        C(version_table) and C(version_table_schema); asked with O(dbops.migrations.alembic_migrate#module:state=lock_status).
      - Without it, a killed run's lock is taken over without that check.
    type: dict
  owner_digest:
    description: With O(state=absent), the RV(owner_digest) returned when the lock was taken.
    type: str
  _owner_text:
    description:
      - Internal. The owner record the action plugin computed on the controller for O(state=present). A task
        that sets it is refused.
    type: str
notes:
  - The identity of the run is the parent of the worker process that runs the action plugin, which is the
    C(ansible-playbook) process itself.
'''

EXAMPLES = r'''
- name: Take the release lock
  dbops.migrations.release_lock:
    path: /srv/app/reports/deploy.lock
    project: shop
    details: {app_version: "1.4.0", risk: auto}
    migration_lock: "{{ db_login | combine({'version_table': 'alembic_version'}) }}"
    wait: 600
  register: release_lock
  run_once: true

- name: Release it
  dbops.migrations.release_lock:
    path: /srv/app/reports/deploy.lock
    state: absent
    owner_digest: "{{ release_lock.owner_digest }}"
  run_once: true
'''

RETURN = r'''
held:
  description: Whether this run holds the lock after the task.
  returned: always
  type: bool
owner:
  description: The owner record this run wrote (O(state=present)).
  returned: when the lock was taken
  type: dict
owner_digest:
  description: Fingerprint of that record; give it to O(state=absent).
  returned: when the lock was taken
  type: str
taken_over:
  description: The owner record of a killed run whose lock was taken over, or null.
  returned: with O(state=present)
  type: dict
holder:
  description: The owner record of the run that holds the lock when this one could not take it (or, in check mode, holds it now).
  returned: when another run holds the lock
  type: dict
waited_s:
  description: Seconds spent waiting for another run.
  returned: with O(state=present)
  type: float
'''

import os  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.dbops.migrations.plugins.module_utils.release import lock as release_lock  # noqa: E402


def read_owner(path: str) -> str:
    try:
        with open(os.path.join(path, release_lock.OWNER_FILE), encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def write_owner(path: str, text: str) -> None:
    """owner.json appears whole or not at all (temporary file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=".owner.", dir=path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.rename(tmp, os.path.join(path, release_lock.OWNER_FILE))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_lock(path: str) -> None:
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)


def acquire(module: AnsibleModule, path: str, owner_text: str) -> dict:
    parent = os.path.dirname(path.rstrip("/")) or "/"
    if module.check_mode:
        held_by = read_owner(path) if os.path.isdir(path) else None
        return {"changed": held_by is None, "acquired": False, "free": held_by is None, "holder_text": held_by or ""}
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o750)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        text = read_owner(path)
        return {"changed": False, "acquired": False, "free": False, "holder_text": text,
                "holder_digest": release_lock.digest(text)}
    try:
        write_owner(path, owner_text)
    except BaseException:
        # A lock without its owner would stop every later run: take it back.
        remove_lock(path)
        raise
    return {"changed": True, "acquired": True, "free": True}


def release(module: AnsibleModule, path: str, owner_digest: str) -> dict:
    if not os.path.isdir(path):
        return {"changed": False, "removed": False, "reason": "absent"}
    text = read_owner(path)
    if release_lock.digest(text) != owner_digest:
        return {"changed": False, "removed": False, "reason": "another owner", "holder_text": text}
    if not module.check_mode:
        remove_lock(path)
    return {"changed": True, "removed": True}


def main() -> None:
    module = AnsibleModule(
        # The task's options (validated by the action plugin) and the owner record it sends.
        argument_spec=dict(release_lock.ARGUMENT_SPEC, _owner_text=dict(type="str")),
        required_if=[("state", "absent", ["owner_digest"])],
        supports_check_mode=True,
    )
    path = module.params["path"]
    try:
        if module.params["state"] == "present":
            if not module.params["_owner_text"]:
                module.fail_json(msg="release_lock runs through its action plugin: use dbops.migrations.release_lock "
                                     "as a task, not as a module of another action")
            result = acquire(module, path, module.params["_owner_text"])
        else:
            result = release(module, path, module.params["owner_digest"])
    except OSError as exc:
        module.fail_json(msg="cannot use the release lock %s: %s. Nothing was changed; check the folder's owner "
                             "and permissions." % (path, exc))
    module.exit_json(path=path, **result)


if __name__ == "__main__":
    main()
