"""The release lock's decisions (module_utils/release/lock.py) and the target side of the module."""
from __future__ import annotations

import json
import os
import types

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.release import lock as release_lock
from ansible_collections.dbops.migrations.plugins.modules import release_lock as lock_module

ME = {"boot_id": "b-1", "pid_ns": "pid:[4026531836]", "host": "controller-1"}


def fake_proc(root, pid=None, cmdline=""):
    (root / "sys" / "kernel" / "random").mkdir(parents=True)
    (root / "sys" / "kernel" / "random" / "boot_id").write_text("b-1\n")
    (root / "sys" / "kernel" / "hostname").write_text("controller-1\n")
    (root / "self" / "ns").mkdir(parents=True)
    os.symlink("pid:[4026531836]", root / "self" / "ns" / "pid")
    if pid:
        (root / str(pid)).mkdir()
        (root / str(pid) / "cmdline").write_text(cmdline)
    return str(root)


def test_controller_identity_reads_boot_namespace_and_host(tmp_path):
    assert release_lock.controller_identity(fake_proc(tmp_path)) == ME


def test_an_ansible_run_is_recognised_by_its_command_line(tmp_path):
    proc = fake_proc(tmp_path, pid=4242, cmdline="/usr/bin/python3\0/usr/bin/ansible-playbook\0deploy.yml\0")
    assert release_lock.is_ansible_process(4242, proc)
    assert not release_lock.is_ansible_process(4243, proc)
    assert not release_lock.is_ansible_process(0, proc)


@pytest.mark.parametrize("holder, alive, stale", [
    ({"pid": 77, "controller": ME}, False, True),                        # killed run of this controller
    ({"pid": 77, "controller": ME}, True, False),                        # live run of this controller
    ({"pid": 77, "controller": dict(ME, host="awx-1")}, False, False),   # another controller
    ({"pid": 77, "controller": dict(ME, boot_id="b-0")}, False, False),  # this host before a reboot
    ({"pid": 77}, False, False),                                         # a record without its controller
    ({"pid": 0, "controller": ME}, False, False),                        # no PID recorded
    ({"pid": "x", "controller": ME}, False, False),                      # a PID that is not a number
    ({}, False, False),                                                  # owner.json missing or unreadable
])
def test_only_a_killed_run_of_this_controller_is_stale(holder, alive, stale):
    assert release_lock.holder_is_stale(holder, ME, lambda pid: alive) is stale


def test_a_controller_that_cannot_name_itself_takes_over_nothing():
    holder = {"pid": 77, "controller": {"boot_id": "", "pid_ns": "", "host": ""}}
    assert release_lock.holder_is_stale(holder, {"boot_id": "", "pid_ns": "", "host": ""}, lambda pid: False) is False


def test_owner_record_keeps_the_fields_the_messages_and_tools_read():
    record = release_lock.owner_record(ME, 123, "2026-12-02T10:00:00+00:00", "alice",
                                       {"app_version": "2.0.0", "risk": "auto"})
    assert record == {"started": "2026-12-02T10:00:00+00:00", "user": "alice", "app_version": "2.0.0",
                      "risk": "auto", "pid": 123, "controller": ME}
    # Details cannot overwrite who holds the lock.
    forged = release_lock.owner_record(ME, 123, "t", "alice", {"pid": 1, "controller": {}})
    assert (forged["pid"], forged["controller"]) == (123, ME)


@pytest.mark.parametrize("text, parsed", [
    ('{"pid": 5}', {"pid": 5}), ("", {}), ("not json", {}), ("[1, 2]", {}), ("  ", {})])
def test_parse_owner_never_raises(text, parsed):
    assert release_lock.parse_owner(text) == parsed


@pytest.mark.parametrize("wait, tries", [(0, 0), (-3, 0), (1, 1), (5, 1), (6, 2), (600, 120)])
def test_attempts_cover_the_whole_wait(wait, tries):
    assert release_lock.attempts(wait) == tries


def test_messages_name_the_holder_and_the_next_step():
    held = release_lock.held_message("shop", "/r/deploy.lock", '{"user": "alice"}', 30)
    assert held.startswith("Another deploy of shop holds /r/deploy.lock ({\"user\": \"alice\"})")
    assert "within 30 s. Nothing was changed." in held
    assert "owner unknown" in release_lock.held_message("shop", "/r/deploy.lock", "", 0)
    taken = release_lock.takeover_message("/r/deploy.lock", {"pid": 9, "started": "2026-01-01T00:00:00+00:00"})
    assert "PID 9 on this controller (started 2026-01-01T00:00:00+00:00), which no longer runs: taking it over" in taken
    waited = release_lock.waited_message("/r/deploy.lock", '{"user": "alice"}', 41.6)
    assert waited == 'took the release lock /r/deploy.lock after waiting 42 s for the run that held it ({"user": "alice"})'
    runner = release_lock.runner_message("/r/deploy.lock", {"pid": 9},
                                         {"pid": 321, "application_name": "dbops-migrate-x", "client": "local",
                                          "connected_s": 12}, 0)
    assert "a migration from that killed run is still running (database session 321 (dbops-migrate-x" in runner


def target(check_mode=False):
    return types.SimpleNamespace(check_mode=check_mode)


def test_the_first_run_takes_the_lock_and_writes_its_owner_whole(tmp_path):
    path = str(tmp_path / "reports" / "deploy.lock")
    text = release_lock.owner_text({"pid": 1, "user": "alice"})
    assert lock_module.acquire(target(), path, text) == {"changed": True, "acquired": True, "free": True}
    assert oct(os.stat(path).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.join(path, "owner.json")).st_mode & 0o777) == "0o600"
    assert sorted(os.listdir(path)) == ["owner.json"]
    second = lock_module.acquire(target(), path, release_lock.owner_text({"pid": 2}))
    assert (second["acquired"], second["changed"], json.loads(second["holder_text"])["pid"]) == (False, False, 1)
    assert second["holder_digest"] == release_lock.digest(text)


def test_check_mode_says_whether_the_lock_is_free_and_makes_nothing(tmp_path):
    path = str(tmp_path / "deploy.lock")
    assert lock_module.acquire(target(check_mode=True), path, "{}")["free"] is True
    assert not os.path.exists(path)
    lock_module.acquire(target(), path, '{"pid": 1}')
    answer = lock_module.acquire(target(check_mode=True), path, "{}")
    assert (answer["free"], answer["holder_text"]) == (False, '{"pid": 1}')


def test_a_run_removes_only_the_lock_it_still_owns(tmp_path):
    path = str(tmp_path / "deploy.lock")
    mine = release_lock.owner_text({"pid": 1})
    lock_module.acquire(target(), path, mine)
    # Another run took it over meanwhile: its record is in place, so it stays.
    with open(os.path.join(path, "owner.json"), "w") as handle:
        handle.write(release_lock.owner_text({"pid": 2}))
    kept = lock_module.release(target(), path, release_lock.digest(mine))
    assert (kept["removed"], kept["reason"], os.path.isdir(path)) == (False, "another owner", True)
    theirs = release_lock.digest(release_lock.owner_text({"pid": 2}))
    assert lock_module.release(target(check_mode=True), path, theirs)["changed"] is True and os.path.isdir(path)
    assert lock_module.release(target(), path, theirs) == {"changed": True, "removed": True}
    assert not os.path.exists(path)
    assert lock_module.release(target(), path, theirs) == {"changed": False, "removed": False, "reason": "absent"}


def test_a_lock_is_not_left_without_its_owner(tmp_path, monkeypatch):
    path = str(tmp_path / "deploy.lock")

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(lock_module, "write_owner", disk_full)
    with pytest.raises(OSError):
        lock_module.acquire(target(), path, '{"pid": 1}')
    assert not os.path.exists(path)
