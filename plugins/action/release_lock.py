# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for dbops.migrations.release_lock.

The controller knows who this run is (boot id, PID namespace, host, ansible-playbook PID) and
whether a recorded run still lives; the target holds the lock directory. So the waiting and the
takeover decision happen here, each ``mkdir`` and removal in the module on the target, and the
question "does a migration runner still hold the database's migration lock" goes to
alembic_migrate's ``state=lock_status``. Decisions live in module_utils/release/lock.py.
"""
from __future__ import annotations

import datetime
import getpass
import time
from typing import Any, Dict, Optional

from ansible.plugins.action import ActionBase

from ansible_collections.dbops.migrations.plugins.module_utils.release import lock as release_lock

MODULE = "dbops.migrations.release_lock"


class LockRefused(Exception):
    """The lock could not be taken; the message says who holds it and what to do."""


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def _target(self, **args: Any) -> Dict[str, Any]:
        result = self._execute_module(module_name=MODULE, module_args=args, task_vars=self._task_vars)
        result.pop("invocation", None)
        if result.get("failed"):
            raise LockRefused(result.get("msg") or "release_lock failed on the target")
        return result

    def _runner_holding_migration_lock(self) -> Optional[Dict[str, Any]]:
        """The migration runner session that still holds the database's migration lock, if any.

        An unreachable database runs no migration: only a clear answer keeps the lock.
        """
        login = self.params["migration_lock"]
        if not login:
            return None
        args = dict(login, state="lock_status")
        result = self._execute_module(module_name="dbops.migrations.alembic_migrate", module_args=args,
                                      task_vars=self._task_vars)
        if result.get("failed") or not result.get("lock_held"):
            return None
        return result.get("lock_holder") or {"pid": result.get("lock_holder_pid")}

    def _take_over(self, holder: Dict[str, Any], holder_digest: str, deadline: float) -> Dict[str, Any]:
        """Remove a killed run's lock once no runner of that run holds the migration lock."""
        path, wait = self.params["path"], self.params["wait"]
        runner = self._runner_holding_migration_lock()
        while runner and time.monotonic() < deadline:
            time.sleep(min(release_lock.POLL_SECONDS, max(deadline - time.monotonic(), 0)))
            runner = self._runner_holding_migration_lock()
        if runner:
            raise LockRefused(release_lock.runner_message(path, holder, runner, wait))
        self._target(path=path, state="absent", owner_digest=holder_digest)
        return holder

    def _acquire(self, result: Dict[str, Any]) -> Dict[str, Any]:
        path, wait = self.params["path"], self.params["wait"]
        controller = release_lock.controller_identity()
        record = release_lock.owner_record(
            controller, release_lock.run_pid(), datetime.datetime.now(datetime.timezone.utc).isoformat(),
            getpass.getuser(), self.params["details"])
        text = release_lock.owner_text(record)
        started = time.monotonic()
        deadline = started + max(wait, 0)
        taken_over: Optional[Dict[str, Any]] = None
        waited_for = ""
        while True:
            answer = self._target(path=path, state="present", _owner_text=text)
            if self._task.check_mode:
                holder_text = answer.get("holder_text") or ""
                state = "free" if answer["free"] else "held: %s" % (holder_text or "owner unknown")
                result.update(changed=answer["free"], held=False, holder=release_lock.parse_owner(holder_text) or None,
                              msg="the lock %s is %s" % (path, state))
                return result
            if answer["acquired"]:
                break
            holder_text = answer.get("holder_text") or ""
            holder = release_lock.parse_owner(holder_text)
            if taken_over is None and release_lock.holder_is_stale(holder, controller, release_lock.is_ansible_process):
                taken_over = self._take_over(holder, answer["holder_digest"], deadline)
                continue
            if time.monotonic() >= deadline:
                raise LockRefused(release_lock.held_message(self.params["project"], path, holder_text, wait))
            waited_for = holder_text
            time.sleep(min(release_lock.POLL_SECONDS, max(deadline - time.monotonic(), 0)))
        result.update(changed=True, held=True, owner=record, owner_digest=release_lock.digest(text),
                      taken_over=taken_over, waited_s=round(time.monotonic() - started, 1))
        if taken_over:
            result["msg"] = release_lock.takeover_message(path, taken_over)
        elif waited_for:
            result["msg"] = release_lock.waited_message(path, waited_for, result["waited_s"])
        else:
            result["msg"] = "took the release lock %s" % path
        return result

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        result = super().run(tmp, task_vars)
        del tmp
        self._task_vars = task_vars or {}
        validation, params = self.validate_argument_spec(argument_spec=release_lock.ARGUMENT_SPEC,
                                                         required_if=[("state", "absent", ["owner_digest"])])
        del validation
        self.params = dict(params)
        try:
            if self.params["state"] == "present":
                return self._acquire(result)
            answer = self._target(path=self.params["path"], state="absent", owner_digest=self.params["owner_digest"])
            result.update(changed=answer["changed"], held=False)
            if answer.get("reason") == "another owner":
                self._display.warning("%s now belongs to another run (%s); it was left in place."
                                      % (self.params["path"], answer.get("holder_text") or "owner unknown"))
            return result
        except LockRefused as exc:
            result.update(failed=True, held=False, msg=str(exc))
            return result
