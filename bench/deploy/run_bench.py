"""Requests dropped during a release: plain `docker compose up -d` against compose_deploy.

    .venv/bin/python bench/deploy/run_bench.py [--runs 10] [--report bench/deploy/REPORT.md]

Needs the Docker engine, `docker compose` and the local images (`make images`). It starts
the example stack under a private project name, a free nginx port and a private image
repository, and probes `GET /version` through nginx at 50 requests/s (open loop, 1 s
timeout) while it releases alternately 1.0.0 and 2.0.0:

- S0: `docker compose up -d` with the new APP_VERSION (what the guide's deploy script does);
- S2: `dbops.migrations.compose_deploy` (surge, hidden start, health gate, graceful retire).

Then two broken releases through compose_deploy: one never healthy, one that crashes 5 s
after start. Everything it creates is removed at the end.

``--proxy caching`` puts an ordinary nginx in front instead (``proxy_pass http://app:8000;``,
no resolver: the address is resolved once, tests/fixtures/nginx-caching.conf) and gives
compose_deploy ``proxy: {service: nginx}``; every row also reports p50/p99/max latency
before, during and after the release.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / ".collections"))

import docker  # noqa: E402

from bench.deploy.probe import Prober, latency_phases, summarize  # noqa: E402
from tests.helpers.ansible import ensure_collection_link, run_module  # noqa: E402
from tests.integration.test_compose_deploy import DeployStack, Releases  # noqa: E402

RATE = 50.0
TIMEOUT = 1.0
HEALTH_TIMEOUT = 30          # broken releases: the gate that must trip
RELEASE_TIMEOUT = 90         # healthy releases: room for a slow boot on a busy machine
VERSIONS = {"a": "1.0.0", "b": "2.0.0"}


def probe_during(stack: DeployStack, action, expect_version: str, tail_max: float = 30.0):
    """Probe from 2 s before ``action`` until the expected version served 2 s in a row."""
    prober = Prober(stack.base_url + "/version", rate=RATE, timeout=TIMEOUT).start()
    time.sleep(2)
    started = time.monotonic()
    outcome = action()
    ended = time.monotonic()
    duration = ended - started
    deadline = time.monotonic() + tail_max
    while time.monotonic() < deadline:
        recent = [s for s in list(prober.samples)[-100:] if s.t > time.monotonic() - 2.5]
        if len(recent) > 80 and all(s.ok and s.version == expect_version for s in recent):
            break
        time.sleep(0.5)
    samples = prober.stop()
    return dict(summarize(samples), phases=latency_phases(samples, started, ended)), duration, outcome, samples


def baseline_p99(stack: DeployStack, seconds: float = 10) -> float | None:
    prober = Prober(stack.base_url + "/version", rate=RATE, timeout=TIMEOUT).start()
    time.sleep(seconds)
    return summarize(prober.stop())["p99_ms"]


def plain_up(stack: DeployStack, tag: str):
    stack.env["APP_VERSION"] = tag
    return lambda: stack.compose("up", "-d")


PROXY: dict = {}  # compose_deploy's proxy option (--proxy caching)
CACHING_NGINX = """services:
  nginx:
    volumes:
      - %s:/etc/nginx/conf.d/default.conf:ro
""" % (ROOT / "tests" / "fixtures" / "nginx-caching.conf")


def with_module(stack: DeployStack, tag: str, timeout: int = RELEASE_TIMEOUT, **health):
    def action():
        stack.env["APP_VERSION"] = tag
        extra = {"proxy": PROXY} if PROXY else {}
        return run_module("compose_deploy", stack.args(health={"timeout": timeout, **health}, **extra))
    return action


def use_caching_proxy(stack: DeployStack) -> None:
    """An ordinary nginx (the upstream resolved once) instead of the example's re-resolving one."""
    override = Path(tempfile.mkdtemp(prefix="dbops-ci-")) / "caching-nginx.yml"
    override.write_text(CACHING_NGINX)
    stack.files.append(str(override))
    PROXY.update(service="nginx")


def environment() -> dict:
    def out(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception as exc:
            return "unavailable (%s)" % exc
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "kernel": platform.release(),
        "docker": out(["docker", "version", "--format", "{{.Server.Version}}"]),
        "compose": out(["docker", "compose", "version", "--short"]),
        "commit": out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }


def fmt(values, digits=1):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return "%s (min %s, max %s)" % (round(statistics.median(values), digits), round(min(values), digits),
                                    round(max(values), digits))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--report", default=str(Path(__file__).with_name("REPORT.md")))
    parser.add_argument("--json", default=str(Path(__file__).with_name("results.json")))
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from --json, measure nothing")
    parser.add_argument("--proxy", choices=["resolving", "caching"], default="resolving",
                        help="the example's re-resolving nginx, or an ordinary one that resolves the app once")
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads(Path(args.json).read_text()), Path(args.report), args.runs)
        return 0
    # SIGTERM cleans up like Ctrl-C: the stack and the private images are removed
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ensure_collection_link()
    client = docker.from_env()
    releases = Releases(client)
    releases.tag_base("a")
    releases.build("b", VERSIONS["b"])
    releases.build("unhealthy", "9.0.0-unhealthy", "unhealthy")
    releases.build("crash_after", "9.0.0-crash-after", "crash_after")
    stack = DeployStack(releases, "a", relaxed_healthcheck=False)
    if args.proxy == "caching":
        use_caching_proxy(stack)
    results: dict = {"env": environment(), "proxy": args.proxy, "runs": [], "faults": []}
    try:
        first = with_module(stack, "a")()
        assert not first.result.get("failed"), first.result.get("msg")
        results["baseline_p99_ms"] = baseline_p99(stack)
        results["baseline_load1"] = float(open("/proc/loadavg").read().split()[0])
        current = "a"
        for index in range(args.runs):
            for strategy in ("S0", "S2"):
                nxt = "b" if current == "a" else "a"
                action = plain_up(stack, nxt) if strategy == "S0" else with_module(stack, nxt)
                summary, duration, outcome, _ = probe_during(stack, action, VERSIONS[nxt])
                failed_task = bool(getattr(outcome, "result", {}).get("failed"))
                row = {"strategy": strategy, "run": index + 1, "to": VERSIONS[nxt], "duration_s": round(duration, 2),
                       "task_failed": failed_task, "load1": float(open("/proc/loadavg").read().split()[0]),
                       **summary}
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
                save(results, args)  # a stopped run still leaves the rows it measured
                current = nxt
                time.sleep(2)
        for fault, health in (("unhealthy", {}), ("crash_after", {"settle": 8})):
            before = VERSIONS[current]
            summary, duration, outcome, _ = probe_during(stack, with_module(stack, fault, HEALTH_TIMEOUT, **health),
                                                         before)
            result = outcome.result
            timeline = {step["step"]: step["t"] for step in result.get("timeline", [])}
            surge = next((t for s, t in timeline.items() if s.startswith("surge")), None)
            removed = next((t for s, t in timeline.items() if s.startswith("removed new")), None)
            row = {"fault": fault, "rolled_back": result.get("rolled_back"), "failed_check": result.get("failed_check"),
                   "task_s": round(duration, 2),
                   "detect_and_rollback_s": round(removed - surge, 2) if surge is not None and removed else None,
                   "version_after": summary["last_version"], "expected": before, **summary}
            results["faults"].append(row)
            print(json.dumps(row), flush=True)
            save(results, args)
            stack.env["APP_VERSION"] = current
    finally:
        stack.down()
        releases.cleanup()
    results["complete"] = True
    save(results, args)
    return 0


def save(results: dict, args) -> None:
    Path(args.json).write_text(json.dumps(results, indent=1))
    write_report(results, Path(args.report), args.runs)


def write_report(results: dict, path: Path, planned: int) -> None:
    env = results["env"]
    rows = results["runs"]
    lines = [
        "# Benchmark: requests dropped during a release",
        "",
        "Reproduce: `make images && .venv/bin/python bench/deploy/run_bench.py` (writes this file and",
        "`results.json`). Measured %s on %s cores, kernel %s, Docker %s, compose %s, commit %s; load average"
        % (env["date"], env["nproc"], env["kernel"], env["docker"], env["compose"], env["commit"]),
        "at start %s%s." % (" ".join(env["loadavg"]), " (other work shared the machine, so latencies are noisy)"
                             if float(env["loadavg"][0]) > int(env["nproc"]) / 2 else ""),
        "",
        "Setup: the example stack (PostgreSQL, auto_trader under gunicorn with 2 workers, nginx 1.22 with",
        "`resolver 127.0.0.11 valid=1s`, a variable `proxy_pass`, `proxy_connect_timeout 500ms` and",
        "`proxy_next_upstream error timeout`). An open-loop prober sends `GET /version` through nginx at",
        "%d requests/s with a %.0f s timeout, from 2 s before the release until the new version has served" % (RATE, TIMEOUT),
        "2 s in a row; any non-200 or timeout is a failed request. Releases alternate 1.0.0 and 2.0.0.",
        "",
        "- **S0**: `docker compose up -d` with the new `APP_VERSION` (recreate in place).",
        "- **S2**: `dbops.migrations.compose_deploy` through `ansible-playbook` (health timeout %d s): a"
        " second app container" % RELEASE_TIMEOUT,
        "  starts hidden from the `app` DNS name, must be healthy and stay so for 5 s, then joins the",
        "  name, the health URL must answer 200 three times, and the old container is stopped with",
        "  SIGTERM (gunicorn finishes in-flight requests) and removed.",
        "",
        "Baseline p99 latency without a release: %s ms (10 s of probing; load average %s)." % (
            results.get("baseline_p99_ms"), results.get("baseline_load1")),
        "",
        "## Healthy releases (%d runs each)" % max([r["run"] for r in rows] or [0]),
        "",
        *([] if results.get("complete") else [
            "**Incomplete**: the benchmark was stopped after %d of %d planned runs per strategy (and %d of 2"
            % (max([r["run"] for r in rows] or [0]), planned, len(results["faults"])),
            "broken releases); the rows below are all that was measured.", ""]),
        "| strategy | runs with 0 failed | runs with 0 error answers or broken connections | failed requests, "
        "median (min, max) | of which errors (not timeouts) | longest failure window s | p99 ms | deploy duration s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for strategy in ("S0", "S2"):
        sel = [r for r in rows if r["strategy"] == strategy]
        if not sel:
            continue
        zero = sum(1 for r in sel if r["failed"] == 0 and not r["task_failed"])
        hard = [sum(v for k, v in r.get("errors", {}).items() if k != "TimeoutError") for r in sel]
        lines.append("| %s | %d / %d | %d / %d | %s | %s | %s | %s | %s |" % (
            strategy, zero, len(sel), sum(1 for h in hard if h == 0), len(sel),
            fmt([r["failed"] for r in sel], 0), fmt(hard, 0),
            fmt([r["longest_failure_s"] for r in sel], 2), fmt([r["p99_ms"] for r in sel]),
            fmt([r["duration_s"] for r in sel])))
    lines += ["", "Every run (load1: the machine's 1-minute load average when the run ended; errors by kind):", "",
              "| strategy | run | to | failed / total | errors | longest failure s | p99 ms | duration s | load1 |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %d | %s | %d / %d | %s | %s | %s | %s | %s |" % (
            r["strategy"], r["run"], r["to"], r["failed"], r["total"],
            ", ".join("%s %d" % kv for kv in sorted(r.get("errors", {}).items())) or "-",
            r["longest_failure_s"], r["p99_ms"], r["duration_s"], r.get("load1")))
    phased = [r for r in rows if r.get("phases")]
    if phased:
        lines += ["", "Latency per phase (good answers; ms p50 / p99 / max) against the baseline p99 of %s ms, proxy: %s:"
                  % (results.get("baseline_p99_ms"), results.get("proxy", "resolving")), "",
                  "| strategy | run | before | during | after | failed during |", "|---|---|---|---|---|---|"]
        for r in phased:
            cells = ["%s / %s / %s" % (p["p50_ms"], p["p99_ms"], p["max_ms"])
                     for p in (r["phases"]["before"], r["phases"]["during"], r["phases"]["after"])]
            lines.append("| %s | %d | %s | %s | %s | %d |" % (r["strategy"], r["run"], *cells,
                                                               r["phases"]["during"]["failed"]))
    # hand-written reading of the committed run; a report under another name stands alone
    notes = path.with_name("NOTES.md") if path.name == "REPORT.md" else path.with_name("-")
    lines += ["", "## Broken releases through compose_deploy", "",
              "Health timeout %d s; the crash-after-5-s release is judged with `settle: 8`." % HEALTH_TIMEOUT, "",
              "| release | rolled back | failed check | new container start to removal s | task s | "
              "failed / total | version served after |", "|---|---|---|---|---|---|---|"]
    for f in results["faults"]:
        lines.append("| %s | %s | %s | %s | %s | %d / %d | %s (before: %s) |" % (
            f["fault"], f["rolled_back"], f["failed_check"], f["detect_and_rollback_s"], f["task_s"], f["failed"],
            f["total"], f["version_after"], f["expected"]))
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
