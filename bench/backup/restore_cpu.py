#!/usr/bin/env python3
"""Where a restore's time goes: CPU used by the client programs and by the server.

    nice -n -10 .venv/bin/python bench/backup/restore_cpu.py [--rows 1500000] [--repeat 3]

The restore goal (time to restore <= 0.5x plain `psql <`) asks a parallel restore to do in half the
time what psql does. That is possible only if psql leaves at least half of the machine's CPU idle,
or if the parallel restore does less work. This benchmark measures both, on the data set of
``run.py`` (4 tables x 1.5 M rows, 1.2 GB, a private PostgreSQL 15 cluster with fsync on):

- for each way of restoring (plain SQL through psql; pg_backup's default archive, a directory with
  gzip level 1, through pg_restore with 1, 2 and 4 jobs; the same archive uncompressed with 2 jobs),
  the wall time into a new database, the CPU seconds of the client programs (psql or pg_restore and
  its workers) and of the server (the postmaster and every backend and helper process);
- the CPU floor: the fewest seconds any restore doing psql's work can take on this machine, psql's
  CPU seconds divided by the number of cores, against psql's own time.

Cells run ``--repeat`` times in a shuffled order, each into a new database after a CHECKPOINT; every
restore's row counts are compared with the source (not timed). A run during which processes other
than the benchmark's own used more than BUSY_OTHER_CORES of CPU in a cell is marked busy and its
report goes to ``results/RESTORE_CPU.busy.md``. Writes ``bench/backup/RESTORE_CPU.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from tests.helpers import postgres as pgh  # noqa: E402
from machine import (BUSY_OTHER_CORES, TICKS_PER_SECOND, OtherCpu, commit_measured,  # noqa: E402
                     postmaster_pid, ticks_since, tree_ticks)

_spec = importlib.util.spec_from_file_location("backup_bench", str(HERE / "run.py"))
backup_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(backup_bench)  # the data set and the cluster settings of the main benchmark


def client_cpu_seconds() -> float:
    """User + system seconds of this process's reaped children (psql, pg_restore and its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def restore_cell(server, argv: list, expected: dict) -> dict:
    """Restore with ``argv`` (``{db}`` replaced) into a new database; time and CPU of client and server."""
    target = "cpu_%d" % random.randint(0, 10**9)
    pgh.create_database(server, target)
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute("CHECKPOINT")
    postmaster = postmaster_pid(server.data_dir)
    env = {**os.environ, **server.libpq_env(target)}
    with OtherCpu(lambda: [os.getpid(), postmaster]) as other:
        server_before, client_before = tree_ticks([postmaster]), client_cpu_seconds()
        started = time.monotonic()
        proc = subprocess.run([part.replace("{db}", target) for part in argv], env=env, capture_output=True,
                              text=True)
        wall = time.monotonic() - started
        client = client_cpu_seconds() - client_before
        server_s = ticks_since(server_before, tree_ticks([postmaster])) / TICKS_PER_SECOND
    if proc.returncode:
        raise RuntimeError("%s failed: %s" % (argv[0], proc.stderr[-2000:]))
    got = backup_bench.counts(server, target)
    if got != expected:
        raise RuntimeError("restore with %s lost rows: %s != %s" % (argv[0], got, expected))
    pgh.drop_database(server, target)
    return {"wall_s": round(wall, 2), "client_cpu_s": round(client, 2), "server_cpu_s": round(server_s, 2),
            "other_cores": other.cores, "other_top": other.top, "load1": round(os.getloadavg()[0], 2)}


def median(values):
    return statistics.median(values) if values else None


def cell_cpu(cell: dict) -> float:
    return median([r["client_cpu_s"] + r["server_cpu_s"] for r in cell["runs"]])


def report(results: dict) -> str:
    cells, nproc = results["cells"], results["host"]["nproc"]
    psql = cells["psql"]
    psql_wall = median([r["wall_s"] for r in psql["runs"]])
    psql_cpu = cell_cpu(psql)
    lines = ["# Restore: where the time goes", ""]
    if is_busy(results):
        lines += ["**BUSY MACHINE**: processes other than the benchmark's used up to %s cores during a cell; these "
                  "numbers measure the machine as much as the restore." % results["other_cores_max"], ""]
    lines += [
        "Reproduce: `nice -n -10 .venv/bin/python bench/backup/restore_cpu.py` (about %d min). Commit measured: %s. "
        "Run started %s on %d cores (kernel %s, %s); 1-minute load average %s-%s during the cells, most of it the "
        "restores' own; CPU used by other processes during a cell: at most %s cores (busy above %s)." % (
            max(1, round(results["total_s"] / 60)), results["commit"], results["started"], nproc, results["host"]["kernel"],
            results["host"]["pg_restore"], min(results["loads"]), max(results["loads"]), results["other_cores_max"],
            BUSY_OTHER_CORES),
        "",
        "Data: the data set of `bench/backup/run.py` (%d tables x %s rows, %.2f GB on disk), a private PostgreSQL 15 "
        "cluster with fsync on, `shared_buffers=2GB`, `max_wal_size=8GB`. Each restore goes into a new database "
        "after a CHECKPOINT; its row counts are then compared with the source (not timed). Median (min-max) of %d "
        "run(s) per cell, shuffled. *Client CPU*: psql or pg_restore and its workers; *server CPU*: the postmaster and "
        "all its processes (backends, WAL writer, checkpointer). *Cores busy*: (client + server CPU) / wall." % (
            4, format(results["rows"], ","), results["db_bytes"] / 1e9, results["repeat"]),
        "",
        "| restore | wall s | vs psql | client CPU s | server CPU s | cores busy |",
        "|---|---|---|---|---|---|",
    ]
    for name, cell in cells.items():
        runs = cell["runs"]
        walls = [r["wall_s"] for r in runs]
        cpu = [r["client_cpu_s"] + r["server_cpu_s"] for r in runs]
        lines.append("| %s | %.1f (%.1f-%.1f) | %.2fx | %.1f | %.1f | %.2f |" % (
            cell["label"], median(walls), min(walls), max(walls), median(walls) / psql_wall,
            median([r["client_cpu_s"] for r in runs]), median([r["server_cpu_s"] for r in runs]),
            median([c / w for c, w in zip(cpu, walls)])))
    floor = psql_cpu / nproc
    fastest = min(((median([r["wall_s"] for r in c["runs"]]), c["label"]) for n, c in cells.items() if n != "psql"))
    lines += [
        "",
        "## The CPU floor",
        "",
        "psql's restore used %.1f CPU seconds in %.1f s: %.2f of the %d cores were busy on average, not one. "
        "A restore that does the same work cannot finish faster than %.1f CPU s / %d cores = **%.1f s, %.2fx "
        "psql's time** on this machine, however it is spread. A restore in 0.5x psql's time is possible here only "
        "when psql keeps at most %.2f cores busy (half the machine), or when the restore does less work than "
        "psql." % (psql_cpu, psql_wall, psql_cpu / psql_wall, nproc, psql_cpu, nproc, floor, floor / psql_wall,
                   nproc / 2.0),
        "",
        "The fastest parallel restore here, %s, took %.1f s (%.2fx psql), %.0f%% above that floor." % (
            fastest[1], fastest[0], fastest[0] / psql_wall, 100 * (fastest[0] / floor - 1)),
        "",
        "Beyond psql's work, the parallel restore decompresses the archive: with 2 jobs the gzip 1 archive took "
        "%.1f s and %.1f CPU s, the uncompressed one %.1f s and %.1f CPU s." % (
            median([r["wall_s"] for r in cells["j2"]["runs"]]), cell_cpu(cells["j2"]),
            median([r["wall_s"] for r in cells["j2_plain"]["runs"]]), cell_cpu(cells["j2_plain"])),
        "What psql's work itself costs does not shrink with more connections: the server parses every row,",
        "writes it and every index page to WAL (at `wal_level` replica or logical; only `wal_level=minimal`, a",
        "server restart that rules out replicas and point-in-time recovery, lets COPY into a new table skip",
        "WAL), and sorts every index. On this machine the restore goal needs more cores, not another setting.",
    ]
    return "\n".join(lines) + "\n"


def is_busy(results: dict) -> bool:
    return results["other_cores_max"] > BUSY_OTHER_CORES


def report_path(results: dict) -> Path:
    """A quick or busy run's report never replaces the committed one."""
    if results.get("quick"):
        return HERE / "results" / "RESTORE_CPU.quick.md"
    if is_busy(results):
        return HERE / "results" / "RESTORE_CPU.busy.md"
    return HERE / "RESTORE_CPU.md"


CELLS = {
    "psql": ("plain SQL, `psql -f`", ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-d", "{db}",
                                       "-f", "{work}/plain.sql"]),
    "j1": ("directory gzip 1, `pg_restore -j 1`", ["pg_restore", "-j", "1", "-d", "{db}", "{work}/gzip1"]),
    "j2": ("directory gzip 1, `pg_restore -j 2`", ["pg_restore", "-j", "2", "-d", "{db}", "{work}/gzip1"]),
    "j4": ("directory gzip 1, `pg_restore -j 4`", ["pg_restore", "-j", "4", "-d", "{db}", "{work}/gzip1"]),
    "j2_plain": ("directory uncompressed, `pg_restore -j 2`", ["pg_restore", "-j", "2", "-d", "{db}", "{work}/gzip0"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_500_000, help="rows per table (4 tables)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", default="/var/tmp/dbops-bench-restore-cpu")
    parser.add_argument("--quick", action="store_true",
                        help="4 x 150,000 rows, one run per cell: checks the script, writes results/ only")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from results/restore_cpu.json")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((HERE / "results" / "restore_cpu.json").read_text())
        report_path(results).write_text(report(results))
        return 0
    if args.quick:
        args.rows, args.repeat = min(args.rows, 150_000), 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    work = backup_bench.fresh_work_dir(args.work)
    clock = time.monotonic()
    results = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "commit": commit_measured(str(REPO), ("plugins", "bench/backup")), "rows": args.rows,
               "repeat": args.repeat, "quick": args.quick, "loads": [], "other_cores_max": 0.0,
               "host": {"nproc": os.cpu_count(), "kernel": platform.release(),
                        "pg_restore": backup_bench.sh(["pg_restore", "--version"]).strip()},
               "cells": {name: {"label": label, "runs": []} for name, (label, _argv) in CELLS.items()}}
    try:
        with pgh.private_cluster() as server:
            backup_bench.configure(server)
            results["db_bytes"] = backup_bench.generate(server, "bench", args.rows)
            expected = backup_bench.counts(server, "bench")
            env = server.libpq_env("bench")
            backup_bench.sh(["pg_dump", "-Fp", "-f", str(work / "plain.sql")], env)
            backup_bench.sh(["pg_dump", "-Fd", "-j", "2", "-Z", "1", "-f", str(work / "gzip1")], env)
            backup_bench.sh(["pg_dump", "-Fd", "-j", "2", "-Z", "0", "-f", str(work / "gzip0")], env)
            order = [name for name in CELLS for _ in range(args.repeat)]
            random.shuffle(order)
            for name in order:
                argv = [part.replace("{work}", str(work)) for part in CELLS[name][1]]
                run = restore_cell(server, argv, expected)
                results["cells"][name]["runs"].append(run)
                results["loads"].append(run["load1"])
                results["other_cores_max"] = max(results["other_cores_max"], run["other_cores"])
                print(name, json.dumps(run), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = round(time.monotonic() - clock)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "restore_cpu.json").write_text(json.dumps(results, indent=1))
    path = report_path(results)
    path.write_text(report(results))
    print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
