"""Requests dropped and latency during a release: plain `docker compose up -d` against compose_deploy,
behind both kinds of proxy.

    .venv/bin/python bench/deploy/run_bench.py [--runs 10] [--proxy both|resolving|caching] [--skip-faults]

Needs the Docker engine, `docker compose` and the local images (`make images`). For each proxy kind
it starts the example stack under a private project name, a free nginx port and a private image
repository, then probes `GET /version` through nginx at 50 requests/s (open loop, 1 s timeout)
while it releases alternately 1.0.0 and 2.0.0, with a window without a release (BASELINE_SECONDS)
before each pair of releases; the baseline is all those windows' answers together:

- S0: `docker compose up -d` with the new APP_VERSION (what the guide's deploy script does);
- S2: `dbops.migrations.compose_deploy` (surge, hidden start, health gate; the old container
  leaves the service name, drains, then gets SIGTERM).

Proxy kinds: ``resolving`` is the example's nginx (``resolver 127.0.0.11 valid=1s``, a variable
``proxy_pass``), released without a proxy option; ``caching`` is an ordinary nginx
(``proxy_pass http://app:8000;``, resolved once at start or reload, tests/fixtures/nginx-caching.conf)
released with ``proxy: {service: nginx}``. Every row reports p50/p99/max latency before, during and
after the release against the baseline. Then (unless --skip-faults) two broken releases through
compose_deploy: one never healthy, one that crashes 5 s after start. Everything it creates is
removed at the end. The report records the commit and the load average, and calls the run busy
when processes other than the benchmark's own (this process and its children, the Docker engine and
the containers it runs) used more than BUSY_OTHER_CORES of CPU during any measured window: the
stacks alone push the load average past the core count, so the load average cannot tell.
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

from bench.machine import BUSY_OTHER_CORES, OtherCpu, commit_measured  # noqa: E402
from bench.deploy.probe import Prober, latency_phases, summarize  # noqa: E402
from tests.helpers.ansible import ensure_collection_link, run_module  # noqa: E402
from tests.integration.test_compose_deploy import DeployStack, Releases  # noqa: E402

RATE = 50.0
TIMEOUT = 1.0
HEALTH_TIMEOUT = 30          # broken releases: the gate that must trip
RELEASE_TIMEOUT = 90         # healthy releases: room for a slow boot on a busy machine
VERSIONS = {"a": "1.0.0", "b": "2.0.0"}
BASELINE_SECONDS = 6         # a window without a release before each pair of releases


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


def baseline_window(stack: DeployStack, seconds: float) -> list:
    """The prober's samples of ``seconds`` without a release."""
    prober = Prober(stack.base_url + "/version", rate=RATE, timeout=TIMEOUT).start()
    time.sleep(seconds)
    return prober.stop()


def no_release_latency(samples: list) -> dict:
    """p50/p99/max of good answers (and failures) in windows without a release."""
    return latency_phases(samples, float("inf"), float("inf"))["before"]


def load1() -> float:
    return float(open("/proc/loadavg").read().split()[0])


# The engine's processes; a container's processes descend from its containerd-shim.
ENGINE_COMMANDS = ("dockerd", "containerd", "containerd-shim", "docker-proxy")


def benchmark_roots() -> list[int]:
    """This process, the Docker engine's processes and the kernel's threads (pid 2 and its children,
    which set up the veth pairs and network namespaces of the containers a release starts and
    stops): whatever they use is the benchmark's own work."""
    pids = [os.getpid(), 2]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path("/proc", entry, "comm").read_text().strip()
        except OSError:
            continue
        if command.startswith(ENGINE_COMMANDS):
            pids.append(int(entry))
    return pids


def measured(action, results: dict):
    """Run ``action`` and return (its result, CPU cores other processes used meanwhile). The run's
    highest such use goes to ``results``, and the busiest other processes of a window above
    BUSY_OTHER_CORES with it."""
    with OtherCpu(benchmark_roots) as other:
        result = action()
    results["other_cores_max"] = max(results.get("other_cores_max", 0.0), other.cores)
    if other.cores > BUSY_OTHER_CORES:
        results["busy_windows"].append({"other_cores": other.cores, "top": other.top})
    return result, other.cores


def plain_up(stack: DeployStack, tag: str):
    """`docker compose up -d` with the stack's own compose files (the caching proxy's override too)."""
    stack.env["APP_VERSION"] = tag
    extra = [arg for name in stack.files[1:] for arg in ("-f", name)]
    return lambda: stack.compose(*extra, "up", "-d")


def serving(stack: DeployStack, version: str, timeout: float) -> bool:
    """Wait until the stack answers /version with ``version``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = stack.get("/version", timeout=5)
            if status == 200 and isinstance(body, dict) and body.get("version") == version:
                return True
        except OSError:
            pass
        time.sleep(1)
    return False


def recover(stack: DeployStack, version: str) -> bool:
    """After a release that did not end serving ``version``: give the app time to boot, and restart
    a caching proxy, which never learns the address `up -d` gave the app."""
    if not stack.proxy_args and serving(stack, version, 60):
        return True
    extra = [arg for name in stack.files[1:] for arg in ("-f", name)]
    stack.compose(*extra, "restart", "nginx", check=False)
    return serving(stack, version, 240)


CACHING_NGINX = """services:
  nginx:
    volumes:
      - %s:/etc/nginx/conf.d/default.conf:ro
""" % (ROOT / "tests" / "fixtures" / "nginx-caching.conf")


def with_module(stack: DeployStack, tag: str, timeout: int = RELEASE_TIMEOUT, **health):
    def action():
        stack.env["APP_VERSION"] = tag
        return run_module("compose_deploy", stack.args(health={"timeout": timeout, **health}, **stack.proxy_args))
    return action


def use_caching_proxy(stack: DeployStack) -> None:
    """An ordinary nginx (the upstream resolved once) instead of the example's re-resolving one."""
    override = Path(tempfile.mkdtemp(prefix="dbops-ci-")) / "caching-nginx.yml"
    override.write_text(CACHING_NGINX)
    stack.files.append(str(override))
    stack.proxy_args = {"proxy": {"service": "nginx"}}


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
        "commit": commit_measured(str(ROOT), ("plugins", "bench/deploy")),
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
    parser.add_argument("--proxy", choices=["both", "resolving", "caching"], default="both",
                        help="the example's re-resolving nginx, an ordinary one that resolves the app once, or both")
    parser.add_argument("--skip-faults", action="store_true", help="no broken releases (a short proof run)")
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads(Path(args.json).read_text()), Path(args.report), args.runs)
        return 0
    # SIGTERM cleans up like Ctrl-C: the stack and the private images are removed
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ensure_collection_link()
    client = docker.from_env()
    releases = Releases(client)
    results: dict = {"env": environment(), "kinds": {}, "max_load1": load1(), "other_cores_max": 0.0,
                     "busy_windows": []}
    kinds = ["resolving", "caching"] if args.proxy == "both" else [args.proxy]
    try:
        releases.tag_base("a")
        releases.build("b", VERSIONS["b"])
        if not args.skip_faults:
            releases.build("unhealthy", "9.0.0-unhealthy", "unhealthy")
            releases.build("crash_after", "9.0.0-crash-after", "crash_after")
        for kind in kinds:
            measure_kind(kind, releases, results, args)
    finally:
        releases.cleanup()
    results["complete"] = True
    save(results, args)
    return 0


def measure_kind(kind: str, releases: Releases, results: dict, args) -> None:
    stack = DeployStack(releases, "a", relaxed_healthcheck=False)
    stack.proxy_args = {}
    if kind == "caching":
        use_caching_proxy(stack)
    entry = results["kinds"][kind] = {"runs": [], "faults": [], "planned_runs": args.runs}
    try:
        first = with_module(stack, "a")()
        assert not first.result.get("failed"), first.result.get("msg")
        # The baseline is measured between the releases, not once: a single window's p99 (its 5th
        # slowest of 500 answers) wanders by 2x over a run, more than a release should move it.
        pooled: list = []

        def measure_baseline(seconds: float) -> None:
            samples, other = measured(lambda: baseline_window(stack, seconds), results)
            pooled.extend(samples)
            entry["baseline_windows"].append(dict(no_release_latency(samples), seconds=seconds, load1=load1(),
                                                  other_cores=other))
            entry["baseline"] = no_release_latency(pooled)
        entry["baseline_windows"] = []
        current = "a"
        for index in range(args.runs):
            measure_baseline(BASELINE_SECONDS)
            for strategy in ("S0", "S2"):
                nxt = "b" if current == "a" else "a"
                action = plain_up(stack, nxt) if strategy == "S0" else with_module(stack, nxt)
                (summary, duration, outcome, _), other = measured(
                    lambda: probe_during(stack, action, VERSIONS[nxt]), results)
                task = getattr(outcome, "result", {})
                failed_task = bool(task.get("failed"))
                row = {"strategy": strategy, "run": index + 1, "to": VERSIONS[nxt], "duration_s": round(duration, 2),
                       "task_failed": failed_task, "load1": load1(), "other_cores": other, **summary}
                if failed_task:
                    row["task_msg"] = str(task.get("msg"))[:2000]
                results["max_load1"] = max(results["max_load1"], row["load1"])
                entry["runs"].append(row)
                print(json.dumps(dict(row, proxy=kind)), flush=True)
                save(results, args)  # a stopped run still leaves the rows it measured
                served = VERSIONS[nxt] if not failed_task else VERSIONS[current]
                if summary["last_version"] != served and not recover(stack, served):
                    entry["stopped"] = "the stack did not serve %s again within 300 s after %s run %d" % (
                        served, strategy, index + 1)
                    save(results, args)
                    return
                current = nxt if not failed_task else current
                time.sleep(2)
        for fault, health in (() if args.skip_faults else (("unhealthy", {}), ("crash_after", {"settle": 8}))):
            before = VERSIONS[current]
            (summary, duration, outcome, _), other = measured(lambda: probe_during(
                stack, with_module(stack, fault, HEALTH_TIMEOUT, **health), before), results)
            result = outcome.result
            timeline = {step["step"]: step["t"] for step in result.get("timeline", [])}
            surge = next((t for s, t in timeline.items() if s.startswith("surge")), None)
            removed = next((t for s, t in timeline.items() if s.startswith("removed new")), None)
            row = {"fault": fault, "rolled_back": result.get("rolled_back"), "failed_check": result.get("failed_check"),
                   "task_s": round(duration, 2),
                   "detect_and_rollback_s": round(removed - surge, 2) if surge is not None and removed else None,
                   "version_after": summary["last_version"], "expected": before, "load1": load1(),
                   "other_cores": other, **summary}
            results["max_load1"] = max(results["max_load1"], row["load1"])
            entry["faults"].append(row)
            print(json.dumps(dict(row, proxy=kind)), flush=True)
            save(results, args)
            stack.env["APP_VERSION"] = current
    finally:
        stack.down()


def save(results: dict, args) -> None:
    Path(args.json).write_text(json.dumps(results, indent=1))
    write_report(results, Path(args.report), args.runs)


def busy(results: dict) -> bool:
    """Other processes used more than BUSY_OTHER_CORES during a measured window. Runs measured
    before that rule existed have only the load average, judged against the core count."""
    if "other_cores_max" in results:
        return results["other_cores_max"] > BUSY_OTHER_CORES
    env = results["env"]
    return max(float(env["loadavg"][0]), results.get("max_load1", 0.0)) > int(env["nproc"])


def busy_reason(results: dict) -> str:
    if "other_cores_max" in results:
        seen = list(dict.fromkeys(entry for window in results.get("busy_windows", []) for entry in window["top"]))
        return "processes other than the benchmark's used up to %s cores of CPU%s" % (
            results["other_cores_max"], " (the busiest: %s)" % ", ".join(seen[:6]) if seen else "")
    return "the 1-minute load average reached %s on %s cores" % (results.get("max_load1"), results["env"]["nproc"])


def phase_cell(phase: dict) -> str:
    return "%s / %s / %s" % (phase.get("p50_ms"), phase.get("p99_ms"), phase.get("max_ms"))


def write_report(results: dict, path: Path, planned: int) -> None:
    env = results["env"]
    is_busy = busy(results)
    lines = [
        "# Benchmark: requests dropped and latency during a release",
        "",
        *(["**BUSY MACHINE**: %s during this run; the latencies below measure the machine as much as the"
           % busy_reason(results),
           "release. Run it again on a quiet machine.", ""] if is_busy else []),
        "Reproduce: `make images && .venv/bin/python bench/deploy/run_bench.py` (writes this file and",
        "`results.json`). Measured %s on %s cores, kernel %s, Docker %s, compose %s, commit %s; load average"
        % (env["date"], env["nproc"], env["kernel"], env["docker"], env["compose"], env["commit"]),
        "at start %s, highest 1-minute load average seen %s (most of it the stacks' own work)."
        % (" ".join(env["loadavg"]), results.get("max_load1")),
        *(["CPU used by processes other than the benchmark's own (this process, the Docker engine and its",
           "containers) during a measured window: at most %s cores (a run is marked busy above %s)."
           % (results["other_cores_max"], BUSY_OTHER_CORES)] if "other_cores_max" in results else []),
        "",
        "Setup: the example stack (PostgreSQL, auto_trader under gunicorn with 2 workers) behind nginx 1.22,",
        "in two kinds:",
        "",
        "- **resolving**: the example's nginx, `resolver 127.0.0.11 valid=1s`, a variable `proxy_pass`,",
        "  `proxy_connect_timeout 500ms`, `proxy_next_upstream error timeout`; compose_deploy without a proxy option.",
        "- **caching**: an ordinary nginx, `proxy_pass http://app:8000;` resolved once at start or reload",
        "  (default timeouts); compose_deploy with `proxy: {service: nginx}` (graceful reloads).",
        "",
        "An open-loop prober sends `GET /version` through nginx at %d requests/s with a %.0f s timeout, from 2 s"
        % (RATE, TIMEOUT),
        "before the release until the new version has served 2 s in a row; any non-200 or timeout is a failed",
        "request. Releases alternate 1.0.0 and 2.0.0.",
        "",
        "- **S0**: `docker compose up -d` with the new `APP_VERSION` (recreate in place).",
        "- **S2**: `dbops.migrations.compose_deploy` through `ansible-playbook` (health timeout %d s): a second app"
        % RELEASE_TIMEOUT,
        "  container starts hidden from the `app` DNS name, must be healthy and stay so for 5 s, then joins the",
        "  name (a caching proxy is reloaded) and the health URL must answer 200 three times; the old container",
        "  then leaves the name (a caching proxy is reloaded again), keeps serving for `drain_seconds` (2 s) while",
        "  DNS caches and requests in flight run out, and only then gets SIGTERM and is removed.",
        "",
        "Latencies are of good answers, in ms; the goal is 0 failed requests and a p99 during the release of at",
        "most twice the baseline p99.",
    ]
    for kind, entry in results.get("kinds", {}).items():
        lines += kind_section(kind, entry, planned)
    notes = path.with_name("NOTES.md") if path.name == "REPORT.md" else path.with_name("-")
    if notes.exists() and not is_busy:
        lines += ["", notes.read_text().rstrip()]
    path.write_text("\n".join(lines) + "\n")


def kind_section(kind: str, entry: dict, planned: int) -> list[str]:
    rows = entry["runs"]
    base = entry.get("baseline") or {}
    done = max([r["run"] for r in rows] or [0])
    windows = entry.get("baseline_windows") or []
    if windows:
        p99s = [w["p99_ms"] for w in windows if w.get("p99_ms") is not None]
        baseline_line = ("Baseline without a release (%d windows of %s s, one before each pair of releases, their "
                         "answers together): p50 / p99 / max %s ms; the p99 of single windows ranged %s-%s ms."
                         % (len(windows), windows[0]["seconds"], phase_cell(base), min(p99s), max(p99s)))
    else:
        baseline_line = ("Baseline without a release (10 s, load average %s): p50 / p99 / max %s ms."
                         % (entry.get("baseline_load1"), phase_cell(base)))
    lines = ["", "## Proxy: %s" % kind, "", baseline_line, ""]
    if entry.get("stopped"):
        lines += ["**Stopped**: %s." % entry["stopped"], ""]
    if done < entry.get("planned_runs", planned):
        lines += ["**Incomplete**: %d of %d planned runs per strategy; the rows below are all that was measured."
                  % (done, entry.get("planned_runs", planned)), ""]
    lines += ["| strategy | runs with 0 failed | failed requests, median (min, max) | longest failure window s | "
              "p99 during ms, median (min, max) | runs with p99 during <= 2x baseline | deploy duration s |",
              "|---|---|---|---|---|---|---|"]
    limit = 2 * base["p99_ms"] if base.get("p99_ms") else None
    for strategy in ("S0", "S2"):
        sel = [r for r in rows if r["strategy"] == strategy]
        if not sel:
            continue
        zero = sum(1 for r in sel if r["failed"] == 0 and not r["task_failed"])
        during = [(r.get("phases") or {}).get("during", {}).get("p99_ms") for r in sel]
        within = sum(1 for v in during if v is not None and limit is not None and v <= limit)
        lines.append("| %s | %d / %d | %s | %s | %s | %d / %d | %s |" % (
            strategy, zero, len(sel), fmt([r["failed"] for r in sel], 0), fmt([r["longest_failure_s"] for r in sel], 2),
            fmt(during), within, len(sel), fmt([r["duration_s"] for r in sel])))
    lines += ["", "Every run (latency p50 / p99 / max ms per phase; load1: the 1-minute load average when it ended;",
              "other CPU: cores used by processes other than the benchmark's during the run):", "",
              "| strategy | run | to | failed / total | errors | before | during | after | duration s | load1 | other CPU |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        phases = r.get("phases") or {}
        lines.append("| %s | %d | %s | %d / %d | %s | %s | %s | %s | %s | %s | %s |" % (
            r["strategy"], r["run"], r["to"], r["failed"], r["total"],
            ", ".join("%s %d" % kv for kv in sorted(r.get("errors", {}).items())) or "-",
            *(phase_cell(phases.get(p) or {}) for p in ("before", "during", "after")), r["duration_s"], r.get("load1"),
            r.get("other_cores", "-")))
    failed_tasks = [r for r in rows if r.get("task_failed")]
    if failed_tasks:
        lines += ["", "Releases whose task failed:", ""]
        lines += ["- %s run %d: %s" % (r["strategy"], r["run"], " ".join(str(r.get("task_msg", "-")).split())[:400])
                  for r in failed_tasks]
    if entry["faults"]:
        lines += ["", "Broken releases through compose_deploy (health timeout %d s; the crash-after-5-s release is "
                  "judged with `settle: 8`):" % HEALTH_TIMEOUT, "",
                  "| release | rolled back | failed check | new container start to removal s | task s | "
                  "failed / total | version served after |", "|---|---|---|---|---|---|---|"]
        for f in entry["faults"]:
            lines.append("| %s | %s | %s | %s | %s | %d / %d | %s (before: %s) |" % (
                f["fault"], f["rolled_back"], f["failed_check"], f["detect_and_rollback_s"], f["task_s"], f["failed"],
                f["total"], f["version_after"], f["expected"]))
    return lines


if __name__ == "__main__":
    sys.exit(main())
