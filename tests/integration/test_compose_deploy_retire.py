"""The order in which compose_deploy retires the old container, behind both kinds of proxy.

A proxy must never hold the address of a container that is gone: a request sent there waits
out the proxy's connect timeout (500 ms in the example's nginx, 60 s in an ordinary one). So the
old container leaves the service name first (same address, still serving), keeps serving while
DNS caches and requests in flight run out, and only then gets SIGTERM. Behind a re-resolving
nginx (``resolver 127.0.0.11 valid=1s``, the example) nothing else is needed; behind an ordinary
nginx that resolves the name once (tests/fixtures/nginx-caching.conf) the proxy is reloaded
after the new container joined the name, and again, with the name pinned to the new container in
its /etc/hosts, before the old one leaves the name (the reconnect that takes it out of the name
then reaches no proxy).
"""
from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.compose import plan as compose_plan
from bench.deploy.probe import Prober, latency_phases, summarize
from tests.integration.test_compose_deploy import DeployStack, brief
from tests.integration.test_compose_deploy import releases  # noqa: F401  (module fixture)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nginx-caching.conf"
CACHING_NGINX = """services:
  nginx:
    volumes:
      - %s:/etc/nginx/conf.d/default.conf:ro
""" % FIXTURE

# What a request sent to a vanished address waits: the example nginx's proxy_connect_timeout (500 ms),
# and for an ordinary nginx (60 s connect timeout) the kernel's first SYN retransmission (1 s). A
# slower answer below that is the machine's load, not a connect wait.
CONNECT_WAIT_S = {"resolving": 0.5, "caching": 0.95}
PROBE_RATE = 10.0  # modest: the machine may be shared
# The reconnect (disconnect + connect) ends when the watcher sees the alias gone; it starts up to
# this long before on a loaded engine.
RECONNECT_WINDOW_S = 1.0
PROBE_TIMEOUT = 5.0


class NameWatch:
    """Polls containers through the Docker API: (seconds, running, under the service name)."""

    def __init__(self, client, ids: list[str], service: str, period: float = 0.05):
        self.client, self.ids, self.service, self.period = client, ids, service, period
        self.seen: dict[str, list[tuple[float, bool, bool]]] = {i: [] for i in ids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            for container_id in self.ids:
                try:
                    info = self.client.api.inspect_container(container_id)
                except Exception:  # removed
                    self.seen[container_id].append((time.monotonic() - self.t0, False, False))
                    continue
                networks = info["NetworkSettings"]["Networks"] or {}
                named = any(self.service in (cfg.get("Aliases") or []) for cfg in networks.values())
                self.seen[container_id].append((time.monotonic() - self.t0, bool(info["State"]["Running"]), named))
            self._stop.wait(self.period)

    def __enter__(self) -> "NameWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


# The re-resolving proxy's retire is a nightly story here: every release of the example app in the
# suite goes through it (test_compose_deploy.py counts the failed requests of one); the caching
# proxy, pinned and reloaded, runs on every run.
@pytest.fixture(scope="module", params=[pytest.param("resolving", marks=pytest.mark.nightly), "caching"])
def proxied_stack(request, releases):  # noqa: F811
    stack = DeployStack(releases, "1")
    if request.param == "caching":
        override = Path(tempfile.mkdtemp(prefix="dbops-ci-")) / "caching-nginx.yml"
        override.write_text(CACHING_NGINX)
        stack.files.append(str(override))
    stack.kind = request.param
    # the resolving proxy is released without a proxy option (the default path), the caching one with it
    stack.proxy_args = {"proxy": {"service": "nginx"}} if request.param == "caching" else {}
    first = stack.deploy("1", health={"timeout": 300}, **stack.proxy_args)
    assert not first.result.get("failed"), first.output[-3000:] + brief(first.result)
    yield stack
    stack.down()


def test_old_container_leaves_the_name_before_it_stops_and_no_request_waits(proxied_stack, releases, docker_client):
    stack = proxied_stack
    old = [c.id for c in stack.containers(docker_client, "app") if c.status == "running"]
    assert len(old) == 1
    version = "2" if stack.served_version() == "1.0.0" else "1"
    with NameWatch(docker_client, old, "app") as watch, \
            Prober(stack.base_url + "/version", rate=PROBE_RATE, timeout=PROBE_TIMEOUT) as prober:
        started = time.monotonic()
        run = stack.deploy(version, health={"timeout": 300}, **stack.proxy_args)
        ended = time.monotonic()
        time.sleep(1)
    samples = prober.samples
    summary = summarize(samples)
    phases = latency_phases(samples, started, ended)
    assert run.rc == 0 and not run.result.get("failed"), run.output[-3000:] + brief(run.result)
    assert stack.served_version() == ("2.0.0" if version == "2" else "1.0.0")

    steps = [s["step"] for s in run.result["timeline"]]

    def at(prefix: str) -> int:
        found = [i for i, s in enumerate(steps) if s.startswith(prefix)]
        assert found, (prefix, steps)
        return found[0]
    assert at("exposed new app") < at("hid old app") < at("drained old app") < at("stopped old app"), steps
    if stack.kind == "caching":
        assert run.result["proxy"]["mode"] == "caching", brief(run.result)
        assert at("exposed new app") < at("reloaded nginx (new app healthy)") < at("pinned app to"), steps
        assert at("pinned app to") < at("reloaded nginx (old app pinned out)") < at("hid old app"), steps
        assert at("hid old app") < at("unpinned app in nginx (old app hidden)") < at("stopped old app"), steps
        assert not any(s.startswith("reloaded nginx (old app hidden") for s in steps), steps
        assert pin_lines(docker_client, stack) == []
    assert not any(s.startswith("address of old") for s in steps), steps  # it kept its address

    # seen from the engine: the old container ran outside the name before it stopped, never stopped in it
    seen = watch.seen[old[0]]
    assert any(running and not named for _t, running, named in seen), seen
    assert not any(named and not running for _t, running, named in seen), seen
    left = next(t for t, running, named in seen if not named)
    stopped = next(t for t, running, named in seen if not running)
    assert stopped - left >= 1.5, (left, stopped)  # drain_seconds (2 s) minus the polling period

    detail = json.dumps({"summary": summary, "phases": phases, "timeline": run.result["timeline"]})
    assert summary["failed"] == 0 and summary["total"] > 0, detail
    assert set(summary["versions"]) == {"1.0.0", "2.0.0"}, detail
    # No request was sent to an address that is gone: none waited the connect timeout after the old
    # container stopped. The one moment its address does not answer is the reconnect that takes it
    # out of the name (Docker cannot drop an alias otherwise; 0.05-0.3 s, it keeps its address): a
    # connection a re-resolving proxy opens exactly then waits for TCP's second SYN. At this rate
    # that is one request now and then, never more than a couple, and only there. A caching proxy
    # no longer sends to the old container by then: no request waits at all.
    slow = [{"latency_s": round(s.latency, 3), "sent_after_old_left_name_s": round(s.t - watch.t0 - left, 3)}
            for s in samples if started <= s.t <= ended and s.latency >= CONNECT_WAIT_S[stack.kind]]
    outside_reconnect = [s for s in slow if not -RECONNECT_WINDOW_S <= s["sent_after_old_left_name_s"] <= 0.5]
    assert not outside_reconnect and len(slow) <= (0 if stack.kind == "caching" else 2), json.dumps(slow) + detail


def pin_lines(client, stack) -> list[str]:
    [proxy] = [c for c in stack.containers(client, "nginx") if c.status == "running"]
    rc, out = proxy.exec_run(["cat", "/etc/hosts"])
    assert rc == 0, out
    return [line for line in out.decode().splitlines() if compose_plan.HOSTS_PIN_MARK in line]


def test_a_pin_left_by_a_run_that_died_is_removed_by_the_next_release(proxied_stack, docker_client):
    """A run killed between pinning and unpinning leaves the proxy's name pinned to an address;
    the next release removes the line before it starts, and says so."""
    stack = proxied_stack
    if stack.kind != "caching":
        pytest.skip("only a caching proxy is pinned")
    [proxy] = [c for c in stack.containers(docker_client, "nginx") if c.status == "running"]
    stale = "10.254.254.254\tapp\t%s\n" % compose_plan.HOSTS_PIN_MARK
    rc, out = proxy.exec_run(["sh", "-c", 'printf "%s" "$LINE" >> /etc/hosts'], environment={"LINE": stale})
    assert rc == 0 and pin_lines(docker_client, stack) == [stale.rstrip("\n")], out
    version = "2" if stack.served_version() == "1.0.0" else "1"
    run = stack.deploy(version, health={"timeout": 300}, **stack.proxy_args)
    assert run.rc == 0 and not run.result.get("failed"), run.output[-3000:] + brief(run.result)
    steps = [s["step"] for s in run.result["timeline"]]
    first_unpin = next(i for i, s in enumerate(steps) if s.startswith("unpinned app in nginx"))
    assert steps[first_unpin] == "unpinned app in nginx (left by a release that never finished)", steps
    assert first_unpin < steps.index("surge app"), steps
    assert pin_lines(docker_client, stack) == [] and "warnings" not in run.result, brief(run.result)
    assert stack.served_version() == ("2.0.0" if version == "2" else "1.0.0")
