"""The order in which compose_deploy's action retires containers behind a caching proxy.

The worker calls are recorded, not run: which operations go to the target host, in which
order, and what the timeline and warnings say when a step does not work."""
from __future__ import annotations

import time

import pytest

from ansible_collections.dbops.migrations.plugins.action import compose_deploy as action_plugin
from ansible_collections.dbops.migrations.plugins.module_utils.compose import plan as compose_plan

NEW = compose_plan.Container(id="n" * 64, name="p-app-2", service="app", number=2, image="", image_id="",
                             state="running", health="healthy")
OLD = compose_plan.Container(id="o" * 64, name="p-app-1", service="app", number=1, image="", image_id="",
                             state="running", health="healthy")


class Recorder:
    def __init__(self, answers=None, fail=None):
        self.calls: list[tuple[str, dict]] = []
        self.answers = answers or {}
        self.fail = fail or {}

    def __call__(self, op, **fields):
        self.calls.append((op, fields))
        if op in self.fail:
            raise action_plugin.DeployFailed(self.fail[op])
        answer = self.answers.get(op, {})
        if op == "proxy_pin":
            key = "pin" if fields["keep_ids"] else "unpin"
            answer = self.answers.get(key, {})
        return answer

    def ops(self):
        return [op if op != "proxy_pin" else ("pin" if f["keep_ids"] else "unpin") for op, f in self.calls]


def caching_action(recorder, monkeypatch, mode="caching"):
    action = object.__new__(action_plugin.ActionModule)
    action.proxy = {"service": "nginx", "mode": mode, "upstreams": ["app"], "drain": 0.0,
                    "reload_command": ["nginx", "-s", "reload"], "resolver_valid_s": None}
    action.params = {"drain_seconds": 0.0, "stop_timeout": 1}
    action.project, action.timeline, action.warnings, action.t0 = "p", [], [], time.monotonic()
    action._worker = recorder
    action._remove_container = lambda container, graceful=True: recorder.calls.append(("remove", {"id": container.id}))
    monkeypatch.setattr(action_plugin.time, "sleep", lambda _s: None)
    return action


def steps(action):
    return [step for step, _t in action.timeline]


PINNED = {"pin": {"pinned": ["172.18.0.7"], "container": "p-nginx-1"},
          "unpin": {"removed": ["172.18.0.7\tapp\t%s" % compose_plan.HOSTS_PIN_MARK], "container": "p-nginx-1"}}


def test_the_proxy_is_pinned_to_the_new_container_and_reloaded_before_the_old_one_leaves_the_name(monkeypatch):
    recorder = Recorder(PINNED)
    action = caching_action(recorder, monkeypatch)
    action._retire("app", [OLD], "old", keep=[NEW])
    assert recorder.ops() == ["pin", "proxy_exec", "hide", "unpin", "remove"]
    pin = recorder.calls[0][1]
    assert pin["keep_ids"] == [NEW.id] and pin["upstream"] == "app" and pin["service"] == "nginx"
    assert recorder.calls[2][1]["ids"] == [OLD.id]
    assert steps(action)[:4] == ["pinned app to 172.18.0.7 in nginx", "reloaded nginx (old app pinned out)",
                                 "hid old app", "unpinned app in nginx (old app hidden)"]
    assert action.warnings == []


def test_a_new_container_that_failed_after_joining_is_retired_with_the_old_one_pinned(monkeypatch):
    recorder = Recorder(PINNED)
    action = caching_action(recorder, monkeypatch)
    action._retire("app", [NEW], "new", keep=[OLD])
    assert recorder.calls[0][1]["keep_ids"] == [OLD.id] and recorder.calls[2][1]["ids"] == [NEW.id]


def test_without_a_pin_the_proxy_is_reloaded_after_the_old_container_left_the_name(monkeypatch):
    recorder = Recorder({"pin": {"pinned": [], "error": "writing /etc/hosts exited 2: Read-only file system"}})
    action = caching_action(recorder, monkeypatch)
    action._retire("app", [OLD], "old", keep=[NEW])
    assert recorder.ops() == ["pin", "hide", "proxy_exec", "remove"]
    assert steps(action)[0] == ("not pinned app in nginx (writing /etc/hosts exited 2: Read-only file system): "
                                "it sends to the old container while it leaves the name")
    assert "reloaded nginx (old app hidden)" in steps(action) and action.warnings == []


def test_a_failed_hide_still_removes_the_pin(monkeypatch):
    recorder = Recorder(PINNED, fail={"hide": "could not take container out of the service name"})
    action = caching_action(recorder, monkeypatch)
    with pytest.raises(action_plugin.DeployFailed):
        action._retire("app", [OLD], "old", keep=[NEW])
    assert recorder.ops() == ["pin", "proxy_exec", "hide", "unpin"]


def test_a_pin_that_cannot_be_removed_is_a_warning_that_says_how(monkeypatch):
    recorder = Recorder(dict(PINNED, unpin={"removed": [], "error": "exec failed", "container": "p-nginx-1"}))
    action = caching_action(recorder, monkeypatch)
    action._retire("app", [OLD], "old", keep=[NEW])
    [warning] = action.warnings
    assert "p-nginx-1" in warning and compose_plan.HOSTS_PIN_MARK in warning and "restart the proxy" in warning
    assert not any(s.startswith("unpinned") for s in steps(action))


def test_a_proxy_whose_hosts_file_cannot_be_read_held_no_pin_and_gets_no_warning(monkeypatch):
    recorder = Recorder({"unpin": {"removed": [], "error": "cat /etc/hosts exited 127: not found"}})
    action = caching_action(recorder, monkeypatch)
    action._unpin_proxy("app", "left by a release that never finished")
    assert recorder.ops() == ["unpin"] and action.warnings == [] and action.timeline == []


@pytest.mark.parametrize("mode", ["resolving", "none"])
def test_a_proxy_that_does_not_cache_is_never_pinned(monkeypatch, mode):
    recorder = Recorder(PINNED)
    action = caching_action(recorder, monkeypatch, mode=mode)
    action._unpin_proxy("app", "left by a release that never finished")
    action._retire("app", [OLD], "old", keep=[NEW])
    assert recorder.ops() == ["hide", "remove"]
