#!/usr/bin/env python3
"""Write-blocked time of a live pgbench workload while a risky migration runs.

For each migration (add column, add index, add check constraint, set not null, change column
type) and each blocker (none, a reader holding ACCESS SHARE for 5 s / 15 s, an idle-in-transaction
session), the same Alembic revision runs three ways against a rate-limited pgbench workload
(writers plus one reader) on pgbench_accounts (1 M rows at scale 10):

* naive: ``alembic upgrade head``, no lock_timeout (what the operations guide does);
* ours: ``dbops.migrations`` alembic_migrate logic (lock_timeout, retries with backoff, runner lock);
* ours_safe: ours, running the safe rewrite migration_risk suggests (CONCURRENTLY, NOT VALID +
  VALIDATE, CHECK-backed SET NOT NULL, expand + batched backfill).

Per case, from pgbench's per-transaction log: write-blocked time (sum of gaps > 100 ms between
consecutive write commits), the longest gap, p99 latency in the migration window against a
baseline window of equal length, failed transactions; from the runner: outcome, attempts.

Usage: .venv/bin/python bench/downtime/run.py [--quick] [--out bench/downtime]
Writes results.json, REPORT.md and timeline.png into --out.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.helpers.ansible import COLLECTIONS_PATH, ensure_collection_link  # noqa: E402
sys.path.insert(0, str(REPO / "bench"))
from machine import BUSY_OTHER_CORES, OtherCpu, postmaster_pid  # noqa: E402

ensure_collection_link()
sys.path.insert(0, str(COLLECTIONS_PATH))

from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import (  # noqa: E402
    MigrateError, MigrateRequest, Migrator)
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url  # noqa: E402
from tests.helpers import postgres as pg  # noqa: E402
from tests.helpers.migrate_project import make_project  # noqa: E402

PG_BIN = pg.find_pg_bin()
ALEMBIC = str(Path(sys.executable).parent / "alembic")
SCALE = 10  # 1,000,000 rows in pgbench_accounts
WRITE_RATE = 200  # tps, writers (about 60% of what this box sustains next to other work)
READ_RATE = 50
MIGRATION_AT = 4.2  # seconds after the workload starts
BLOCKER_AT = 4.0
GAP_S = 0.1

# Our settings: 50 ms per lock attempt (under the 100 ms gap that counts as a stall, so a
# failed attempt never stalls writers), GitLab-like growing sleeps, bounded.
OURS = dict(lock_timeout="50ms", retries=10, retry_delay=0.5, retry_backoff=1.5, retry_delay_max=3.0,
            lock_wait=60)

AUTOCOMMIT = "    with op.get_context().autocommit_block():\n"

MIGRATIONS = {
    "add_column": {
        "naive": '    op.execute("ALTER TABLE pgbench_accounts ADD COLUMN note text")',
        "safe": None,  # already metadata-only: the safety is lock_timeout + retries
        "down": '    op.execute("ALTER TABLE pgbench_accounts DROP COLUMN IF EXISTS note")',
    },
    "add_index": {
        "naive": '    op.execute("CREATE INDEX ix_acc_balance ON pgbench_accounts (abalance)")',
        "safe": AUTOCOMMIT + '        op.execute("CREATE INDEX CONCURRENTLY ix_acc_balance ON pgbench_accounts (abalance)")',
        "down": '    op.execute("DROP INDEX IF EXISTS ix_acc_balance")',
    },
    "add_check": {
        "naive": '    op.execute("ALTER TABLE pgbench_accounts ADD CONSTRAINT ck_balance CHECK (abalance > -1000000000)")',
        "safe": AUTOCOMMIT
        + '        op.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = \'ck_balance\') '
          'THEN ALTER TABLE pgbench_accounts ADD CONSTRAINT ck_balance CHECK (abalance > -1000000000) NOT VALID; '
          'END IF; END $$")\n'
        + '        op.execute("ALTER TABLE pgbench_accounts VALIDATE CONSTRAINT ck_balance")',
        "down": '    op.execute("ALTER TABLE pgbench_accounts DROP CONSTRAINT IF EXISTS ck_balance")',
    },
    "set_not_null": {
        "naive": '    op.execute("ALTER TABLE pgbench_accounts ALTER COLUMN bid SET NOT NULL")',
        "safe": AUTOCOMMIT
        + '        op.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = \'ck_bid_nn\') '
          'THEN ALTER TABLE pgbench_accounts ADD CONSTRAINT ck_bid_nn CHECK (bid IS NOT NULL) NOT VALID; '
          'END IF; END $$")\n'
        + '        op.execute("ALTER TABLE pgbench_accounts VALIDATE CONSTRAINT ck_bid_nn")\n'
        + '        op.execute("ALTER TABLE pgbench_accounts ALTER COLUMN bid SET NOT NULL")\n'
        + '        op.execute("ALTER TABLE pgbench_accounts DROP CONSTRAINT IF EXISTS ck_bid_nn")',
        "down": '    op.execute("ALTER TABLE pgbench_accounts ALTER COLUMN bid DROP NOT NULL")\n'
                '    op.execute("ALTER TABLE pgbench_accounts DROP CONSTRAINT IF EXISTS ck_bid_nn")',
    },
    "change_type": {
        "naive": '    op.execute("ALTER TABLE pgbench_accounts ALTER COLUMN abalance TYPE bigint")',
        # Expand: a new bigint column filled in 10,000-row batches, each its own transaction. The
        # contract step (switch the application, drop the old column) is a later release.
        "safe": '    op.execute("ALTER TABLE pgbench_accounts ADD COLUMN IF NOT EXISTS abalance_big bigint")\n'
                + AUTOCOMMIT
                + '        for start in range(1, 1000001, 10000):\n'
                  '            op.execute("UPDATE pgbench_accounts SET abalance_big = abalance WHERE aid >= %d AND aid < %d '
                  'AND abalance_big IS NULL" % (start, start + 10000))',
        "down": '    op.execute("ALTER TABLE pgbench_accounts DROP COLUMN IF EXISTS abalance_big")\n'
                '    op.execute("ALTER TABLE pgbench_accounts ALTER COLUMN abalance TYPE integer")',
    },
}

# name -> (seconds held or None, SQL, application_name)
BLOCKERS = {
    "none": None,
    "reader_5s": (5.0, "SELECT count(*) FROM pgbench_accounts WHERE aid < 100", "report-5s"),
    "reader_15s": (15.0, "SELECT count(*) FROM pgbench_accounts WHERE aid < 100", "report-15s"),
    "idle_in_tx_40s": (40.0, "SELECT abalance FROM pgbench_accounts WHERE aid = 1", "idle-in-tx"),
}

WRITE_SCRIPT = """\\set aid random(1, 1000000)
\\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
"""
READ_SCRIPT = """\\set aid random(1, 1000000)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
"""


def matrix(quick: bool):
    if quick:
        return [("add_column", "reader_5s", v) for v in ("naive", "ours")] + \
               [("add_index", "none", v) for v in ("naive", "ours_safe")]
    cases = [("add_column", b, v) for b in BLOCKERS for v in ("naive", "ours")]
    for mig in ("add_index", "add_check", "set_not_null", "change_type"):
        for blocker in ("none", "reader_5s"):
            for variant in ("naive", "ours", "ours_safe"):
                cases.append((mig, blocker, variant))
    return cases


class Blocker(threading.Thread):
    """BEGIN; <statement>; then stay in the transaction.

    The hold is counted from the moment the migration first asks for a lock the blocker holds,
    so that naive and ours meet exactly ``hold`` seconds of blocking whatever their start-up
    time (alembic's start-up takes longer on a loaded box). If the migration never waits, the
    blocker ends ``hold`` + 3 s after it began.
    """

    WAITING = ("SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted"
               " AND (a.application_name LIKE 'dbops-migrate-%%' OR a.application_name = 'bench-naive') LIMIT 1")

    def __init__(self, url: str, hold: float, sql: str, name: str):
        super().__init__(daemon=True)
        self.url, self.hold, self.sql, self.name = url, hold, sql, name
        self.started_at = None
        self.first_wait_at = None
        self.ended_at = None

    def run(self):
        conn = psycopg2.connect(self.url, application_name=self.name)
        watch = psycopg2.connect(self.url, application_name="bench-watch")
        watch.autocommit = True
        with conn.cursor() as cur, watch.cursor() as wcur:
            cur.execute(self.sql)
            self.started_at = time.monotonic()
            deadline = self.started_at + self.hold + 3.0
            while time.monotonic() < deadline:
                if self.first_wait_at is None:
                    wcur.execute(self.WAITING)
                    if wcur.fetchone():
                        self.first_wait_at = time.monotonic()
                        deadline = self.first_wait_at + self.hold
                time.sleep(0.02)
        conn.rollback()
        self.ended_at = time.monotonic()
        conn.close()
        watch.close()


def subprocess_runner(argv, env, cwd):
    full = dict(os.environ)
    full.update(env)
    proc = subprocess.run(argv, env=full, cwd=cwd, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def run_naive(url: str, config: Path) -> dict:
    env = dict(os.environ, DATABASE_URL=url, PGAPPNAME="bench-naive")
    env.pop("PGOPTIONS", None)
    began = time.monotonic()
    proc = subprocess.run([ALEMBIC, "-c", str(config), "upgrade", "head"], cwd=config.parent, env=env,
                          capture_output=True, text=True, timeout=600)
    return {"ok": proc.returncode == 0, "attempts": 1, "duration_s": round(time.monotonic() - began, 3),
            "message": proc.stderr.strip().splitlines()[-1] if proc.returncode else "", "began": began}


def run_ours(url: str, config: Path, timeline: Path) -> dict:
    request = MigrateRequest(config=str(config), alembic_bin=ALEMBIC, timeline_file=str(timeline), **OURS)
    migrator = Migrator(request, parse_db_url(url), subprocess_runner)
    began = time.monotonic()
    try:
        result = migrator.run()
        ok, message = True, ""
    except MigrateError as exc:
        result = migrator.fail_result(exc)
        ok, message = False, exc.msg
    return {"ok": ok, "attempts": result.get("attempts"), "duration_s": round(time.monotonic() - began, 3),
            "message": message[:2000], "blocked": result.get("blocked"), "began": began}


def parse_pgbench_logs(prefix: Path, write_script: int | None = None):
    """[(completion epoch seconds, latency ms, client)] from pgbench -l files."""
    rows = []
    for path in sorted(prefix.parent.glob(prefix.name + "*")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 6:
                continue
            if parts[2] in ("failed", "skipped"):
                rows.append((int(parts[4]) + int(parts[5]) / 1e6, None, int(parts[0])))
                continue
            rows.append((int(parts[4]) + int(parts[5]) / 1e6, int(parts[2]) / 1000.0, int(parts[0])))
    return sorted(rows)


def gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def analyse(writes, reads, t_start_epoch, mig_start_epoch, mig_end_epoch):
    ok_writes = [r for r in writes if r[1] is not None]
    times = [r[0] for r in ok_writes]
    window = [t for t in times if mig_start_epoch - 0.5 <= t <= mig_end_epoch + 1.0]
    # Gaps that overlap the migration window (the first commit after the window counts too).
    in_window = [t for t in times if t >= mig_start_epoch - 0.5]
    if in_window:
        after = [t for t in times if t > mig_end_epoch + 1.0]
        in_window = [t for t in in_window if t <= mig_end_epoch + 1.0] + after[:1]
    g = gaps(in_window)
    stall = sum(x for x in g if x > GAP_S)
    dur = max(mig_end_epoch - mig_start_epoch, 1.0)
    base_lat = [r[1] for r in ok_writes if t_start_epoch + 1.0 <= r[0] <= t_start_epoch + 1.0 + min(dur, 3.5)]
    mig_lat = [r[1] for r in ok_writes if mig_start_epoch <= r[0] <= mig_end_epoch + 1.0]
    read_ok = [r for r in reads if r[1] is not None]
    read_times = [r[0] for r in read_ok if mig_start_epoch - 0.5 <= r[0] <= mig_end_epoch + 1.0]
    return {
        "write_blocked_s": round(stall, 3),
        "longest_gap_s": round(max(g) if g else 0.0, 3),
        "read_longest_gap_s": round(max(gaps(read_times)) if len(read_times) > 1 else 0.0, 3),
        "p99_baseline_ms": round(pct(base_lat, 0.99) or 0, 2),
        "p99_migration_ms": round(pct(mig_lat, 0.99) or 0, 2),
        "max_latency_ms": round(max(mig_lat) if mig_lat else 0, 1),
        "slow_over_1s": sum(1 for x in mig_lat if x > 1000),
        "failed_tx": sum(1 for r in writes + reads if r[1] is None),
        "writes_in_window": len(window),
    }


def reset(url: str, config: Path, blocker_gone: bool = True):
    """Undo whatever the case did: downgrade, drop leftovers, VACUUM."""
    env = dict(os.environ, DATABASE_URL=url)
    env.pop("PGOPTIONS", None)
    subprocess.run([ALEMBIC, "-c", str(config), "downgrade", "base"], cwd=config.parent, env=env,
                   capture_output=True, text=True, timeout=600)
    with contextlib.closing(psycopg2.connect(url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            for sql in ("DROP TABLE IF EXISTS alembic_version", "DROP INDEX IF EXISTS ix_acc_balance",
                        "ALTER TABLE pgbench_accounts DROP COLUMN IF EXISTS note",
                        "ALTER TABLE pgbench_accounts DROP COLUMN IF EXISTS abalance_big",
                        "ALTER TABLE pgbench_accounts DROP CONSTRAINT IF EXISTS ck_balance",
                        "ALTER TABLE pgbench_accounts DROP CONSTRAINT IF EXISTS ck_bid_nn",
                        "ALTER TABLE pgbench_accounts ALTER COLUMN bid DROP NOT NULL",
                        "VACUUM ANALYZE pgbench_accounts", "CHECKPOINT"):
                cur.execute(sql)
            cur.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                        "WHERE attrelid = 'pgbench_accounts'::regclass AND attname = 'abalance'")
            if cur.fetchone()[0] != "integer":
                cur.execute("ALTER TABLE pgbench_accounts ALTER COLUMN abalance TYPE integer")


def run_case(server, url, workdir: Path, mig: str, blocker: str, variant: str) -> dict:
    spec = MIGRATIONS[mig]
    body = spec["safe"] if variant == "ours_safe" and spec["safe"] else spec["naive"]
    case_dir = workdir / ("%s-%s-%s" % (mig, blocker, variant))
    shutil.rmtree(case_dir, ignore_errors=True)
    config = make_project(case_dir / "proj", [("c1", mig, body, spec["down"])])
    hold = BLOCKERS[blocker]
    duration = int(MIGRATION_AT + (hold[0] if hold else 0) + 12 + (20 if mig == "change_type" else 0))
    logs = case_dir / "logs"
    logs.mkdir()
    (case_dir / "write.sql").write_text(WRITE_SCRIPT)
    (case_dir / "read.sql").write_text(READ_SCRIPT)
    env = dict(os.environ, **server.libpq_env("bench"))
    common = [os.path.join(PG_BIN, "pgbench"), "-n", "-T", str(duration), "-l"]
    t_start_epoch = time.time()
    t_start = time.monotonic()
    writers = subprocess.Popen(common + ["-c", "4", "-j", "1", "-R", str(WRITE_RATE), "--log-prefix",
                                         str(logs / "w"), "-f", str(case_dir / "write.sql")],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader = subprocess.Popen(common + ["-c", "1", "-j", "1", "-R", str(READ_RATE), "--log-prefix",
                                        str(logs / "r"), "-f", str(case_dir / "read.sql")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    blocker_thread = None
    time.sleep(BLOCKER_AT)
    if hold:
        blocker_thread = Blocker(url, hold[0], hold[1], hold[2])
        blocker_thread.start()
        while blocker_thread.started_at is None:
            time.sleep(0.01)
    time.sleep(max(0.0, MIGRATION_AT - (time.monotonic() - t_start)))
    mig_start_epoch = time.time()
    if variant == "naive":
        outcome = run_naive(url, config)
    else:
        outcome = run_ours(url, config, case_dir / "timeline.json")
    mig_end_epoch = time.time()
    w_out, _ = writers.communicate(timeout=duration + 120)
    r_out, _ = reader.communicate(timeout=duration + 120)
    if blocker_thread:
        blocker_thread.join(60)
    writes = parse_pgbench_logs(logs / "w")
    reads = parse_pgbench_logs(logs / "r")
    stats = analyse(writes, reads, t_start_epoch, mig_start_epoch, mig_end_epoch)
    aborted = "aborted" in (w_out + r_out) and "0 aborted" not in (w_out + r_out)
    result = {"migration": mig, "blocker": blocker, "variant": variant, "ok": outcome["ok"],
              "attempts": outcome["attempts"], "migration_s": outcome["duration_s"],
              "message": outcome["message"], "pgbench_aborted": aborted,
              "outlived_workload": mig_end_epoch > t_start_epoch + duration}
    result.update(stats)
    if outcome.get("blocked"):
        result["monitor"] = {k: outcome["blocked"][k] for k in ("sessions", "waits", "longest_wait_s",
                                                                "migration_wait_s")}
    # Commit series for the chart (relative seconds).
    result["_series"] = {"t0": t_start_epoch, "mig": [mig_start_epoch - t_start_epoch, mig_end_epoch - t_start_epoch],
                         "writes": [round(r[0] - t_start_epoch, 4) for r in writes if r[1] is not None],
                         "blocker": ([blocker_thread.started_at - t_start, blocker_thread.ended_at - t_start]
                                     if blocker_thread and blocker_thread.ended_at else None)}
    if blocker_thread:
        result["blocker_held_s"] = round(blocker_thread.ended_at - blocker_thread.started_at, 2)
        result["migration_met_blocker"] = blocker_thread.first_wait_at is not None
    reset(url, config)
    return result


def chart(results, out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = [r for r in results if r["migration"] == "add_column" and r["blocker"] == "reader_15s"] or \
        [r for r in results if r["blocker"] != "none"][:2]
    picks += [r for r in results if r["migration"] == "add_index" and r["blocker"] == "reader_5s"
              and r["variant"] in ("naive", "ours_safe")]
    fig, axes = plt.subplots(len(picks), 1, figsize=(10, 2.3 * len(picks)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], picks):
        series = r["_series"]
        times = series["writes"]
        end = max(times) if times else 1
        bins = [i * 0.1 for i in range(int(end / 0.1) + 2)]
        ax.hist(times, bins=bins, color="#3070b0", linewidth=0)
        ax.axvspan(series["mig"][0], series["mig"][1], color="#f0a030", alpha=0.25, label="migration running")
        if series["blocker"]:
            ax.axvspan(series["blocker"][0], series["blocker"][1], ymin=0.9, ymax=1.0, color="#c03030",
                       alpha=0.7, label="blocking transaction")
        ax.set_ylabel("commits\n/100 ms")
        ax.set_title("%s, %s, %s: write-blocked %.2f s, longest gap %.2f s, %s after %s attempt(s)"
                     % (r["migration"], r["blocker"], r["variant"], r["write_blocked_s"], r["longest_gap_s"],
                        "ok" if r["ok"] else "failed", r["attempts"]), fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the workload started")
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=90)


def environment_facts(server) -> dict:
    def cmd(argv):
        with contextlib.suppress(Exception):
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        return ""
    mem_kb = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")))
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(), "ram_gib": round(mem_kb / 1024 / 1024, 1), "kernel": platform.release(),
            "postgres": cmd([os.path.join(PG_BIN, "postgres"), "--version"]),
            "pgbench": cmd([os.path.join(PG_BIN, "pgbench"), "--version"]),
            "alembic": cmd([ALEMBIC, "--version"]),
            "commit": cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
            "loadavg_start": open("/proc/loadavg").read().split()[:3]}


def _quiet_line(facts) -> str:
    most = facts.get("other_cores_max")
    if most is None:
        return "CPU used by other processes not measured"
    verdict = "**a busy machine: these numbers are not comparable with other runs**" if most > BUSY_OTHER_CORES \
        else "a quiet machine"
    return "other processes used at most %.2f cores during a case (%s)" % (most, verdict)


def fmt_ratio(a, b):
    if b in (None, 0):
        return "∞" if a else "–"
    return "%.1f×" % (a / b)


def report(results, facts, out: Path, elapsed: float):
    lines = ["# Downtime benchmark: write-blocked time during risky migrations", "",
             "Reproduce: `.venv/bin/python bench/downtime/run.py` (about %d min on this box). All numbers below "
             "were measured in one run on %s." % (max(1, round(elapsed / 60)), facts["date"]), "",
             "## Setup", "",
             "- Host: %s cores, %s GiB RAM, kernel %s; load average at start %s, at the end %s; %s."
             % (facts["nproc"], facts["ram_gib"], facts["kernel"], " ".join(facts["loadavg_start"]),
                " ".join(facts.get("loadavg_end") or ["?"]), _quiet_line(facts)),
             "- %s, %s, alembic %s, collection commit %s." % (facts["postgres"], facts["pgbench"],
                                                              facts["alembic"].split()[-1], facts["commit"]),
             "- A private cluster (tests.helpers.postgres: fsync off, shared_buffers 256 MB); `pgbench -i -s %d`: "
             "pgbench_accounts has 1,000,000 rows. Warm cache." % SCALE,
             "- Workload: `pgbench -R %d -c 4` writers (UPDATE of a random account) plus one `pgbench -R %d` "
             "reader, logging every transaction. The blocker starts at t=%.1f s, the migration at t=%.1f s. A reader_Hs "
             "blocker keeps its transaction open for H seconds counted from the migration's first lock request "
             "(so every variant meets the same blocking whatever its start-up time); idle_in_tx is a session idle in "
             "a transaction that read the table."
             % (WRITE_RATE, READ_RATE, BLOCKER_AT, MIGRATION_AT),
             "- naive = `alembic upgrade head` with no lock_timeout. ours = alembic_migrate's runner with "
             "lock_timeout %s, %d retries, delay %.1f s growing ×%.1f up to %.0f s. ours_safe = ours running the "
             "safe rewrite (CREATE INDEX CONCURRENTLY; CHECK NOT VALID + VALIDATE; CHECK-backed SET NOT NULL; "
             "expand + 10,000-row batched backfill for the type change, contract left to a later release)."
             % (OURS["lock_timeout"], OURS["retries"], OURS["retry_delay"], OURS["retry_backoff"],
                OURS["retry_delay_max"]),
             "- write-blocked = sum of gaps > 100 ms between consecutive write commits (all writers) from 0.5 s "
             "before the migration to 1 s after it; p99 is write latency (pgbench, schedule lag included) in "
             "that window against the first seconds of the run (baseline); failed = failed pgbench transactions.",
             "- One run per cell (no repetitions: time budget). Treat differences under ~0.2 s as noise.", "",
             "## Results", "",
             "| migration | blocker | variant | outcome | attempts | migration s | blocker held s | write-blocked s "
             "| longest gap s | read longest gap s | p99 base ms | p99 mig ms | tx > 1 s | failed tx |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append("| %s | %s | %s | %s | %s | %.1f | %s | **%.2f** | %.2f | %.2f | %.1f | %.1f | %d | %d |" % (
            r["migration"], r["blocker"], r["variant"], "ok" if r["ok"] else "failed (retries exhausted)"
            if r["variant"] != "naive" else "failed", r["attempts"], r["migration_s"],
            "%.1f" % r["blocker_held_s"] if "blocker_held_s" in r else "–", r["write_blocked_s"],
            r["longest_gap_s"], r["read_longest_gap_s"], r["p99_baseline_ms"], r["p99_migration_ms"],
            r["slow_over_1s"], r["failed_tx"]))
    lines += ["", "## Naive against ours, same run", "",
              "| migration | blocker | naive blocked s | ours blocked s | ours_safe blocked s | naive/ours | "
              "naive longest gap s | ours longest gap s |", "|---|---|---|---|---|---|---|---|"]
    keyed = {(r["migration"], r["blocker"], r["variant"]): r for r in results}
    for mig, blocker in sorted({(r["migration"], r["blocker"]) for r in results}, key=lambda k: (
            list(MIGRATIONS).index(k[0]), list(BLOCKERS).index(k[1]))):
        naive = keyed.get((mig, blocker, "naive"))
        ours = keyed.get((mig, blocker, "ours"))
        safe = keyed.get((mig, blocker, "ours_safe"))
        if not naive or not (ours or safe):
            continue
        best = ours or safe
        lines.append("| %s | %s | %.2f | %s | %s | %s | %.2f | %s |" % (
            mig, blocker, naive["write_blocked_s"], "%.2f" % ours["write_blocked_s"] if ours else "–",
            "%.2f" % safe["write_blocked_s"] if safe else "–",
            fmt_ratio(naive["write_blocked_s"], best["write_blocked_s"]), naive["longest_gap_s"],
            "%.2f" % best["longest_gap_s"]))
    ours_all = [r for r in results if r["variant"] != "naive"]
    # What lock_timeout + retries control: waiting for a lock. A statement that holds its lock while it
    # rewrites or scans the table (naive form of change_type / set_not_null / add_index / add_check) is
    # only bounded by statement_timeout or by the safe rewrite; those rows are reported apart.
    lock_bound = [r for r in ours_all if r["variant"] == "ours_safe" or r["migration"] == "add_column"]
    held = [r for r in ours_all if r not in lock_bound]
    worst_gap = max(lock_bound, key=lambda r: r["longest_gap_s"], default=None)
    behind_15 = [r for r in ours_all if r["blocker"] in ("reader_15s", "idle_in_tx_40s")]
    worst_blocked = max(behind_15, key=lambda r: r["write_blocked_s"], default=None)
    safe_idx = [r for r in results if r["variant"] == "ours_safe" and r["migration"] in ("add_index", "add_check")]
    exhausted = [r for r in ours_all if not r["ok"]]

    def where(r):
        return "%s/%s/%s" % (r["migration"], r["blocker"], r["variant"]) if r else "–"

    lines += ["", "## Goals", "",
              "| goal | measured | met |", "|---|---|---|",
              "| no single write stall > 0.5 s while the migration waits for locks (ours on add_column, ours_safe "
              "everywhere) | longest gap %.2f s (%s) | %s |"
              % (worst_gap["longest_gap_s"] if worst_gap else 0, where(worst_gap),
                 "yes" if worst_gap and worst_gap["longest_gap_s"] <= 0.5 else "no"),
              "| ≤ 2 s write-blocked in total behind a 15 s (or longer) blocker; naive about 15 s | worst %.2f s (%s) "
              "| %s |" % (worst_blocked["write_blocked_s"] if worst_blocked else 0, where(worst_blocked),
                          "yes" if worst_blocked and worst_blocked["write_blocked_s"] <= 2.0 else "no"),
              "| 0 s for index and constraint changes done the safe way | %s | %s |"
              % (", ".join("%s/%s %.2f s" % (r["migration"], r["blocker"], r["write_blocked_s"]) for r in safe_idx)
                 or "–", "yes" if safe_idx and all(r["write_blocked_s"] == 0 for r in safe_idx) else "no"),
              "| exhausted retries fail the run, no unbounded wait | %s | %s |"
              % ("; ".join("%s/%s failed after %s attempts in %.1f s" % (r["migration"], r["blocker"], r["attempts"],
                                                                         r["migration_s"]) for r in exhausted)
                 or "no case exhausted its retries", "yes" if all(not r["ok"] for r in exhausted) else "no"),
              "",
              "Outside what lock_timeout can bound: when the statement itself holds ACCESS EXCLUSIVE or SHARE while "
              "it rewrites, scans or builds (the naive form run by ours), writers wait for as long as it works: %s. "
              "Those are the migrations migration_risk classifies medium to high; the remedy is the safe rewrite "
              "(ours_safe rows) or a statement_timeout that makes them fail instead."
              % ", ".join("%s/%s %.2f s" % (r["migration"], r["blocker"], r["longest_gap_s"]) for r in held),
              "", "## Timeline", "", "![timeline](timeline.png)", "",
              "Write commits per 100 ms. Orange: the migration is running; red bar: the blocking transaction.", "",
              "## Notes", ""]
    for r in results:
        if r["message"]:
            lines.append("- %s/%s/%s: %s" % (r["migration"], r["blocker"], r["variant"],
                                             r["message"].replace("\n", " ")[:260]))
    for r in results:
        if r["variant"] == "ours_safe" and r["write_blocked_s"] > 0 and r["blocker"] != "none":
            lines.append("- %s/%s/ours_safe: %.2f s blocked in %s attempts. The safe form still opens with a step "
                         "that needs ACCESS EXCLUSIVE for an instant (ADD ... NOT VALID, ADD COLUMN); behind the "
                         "reader every attempt queues writers for up to lock_timeout (%s), so blocked time is about "
                         "attempts × lock_timeout. A shorter lock_timeout bounds it further."
                         % (r["migration"], r["blocker"], r["write_blocked_s"], r["attempts"], OURS["lock_timeout"]))
    ct_naive, ct_ours = keyed.get(("change_type", "none", "naive")), keyed.get(("change_type", "none", "ours"))
    if ct_naive and ct_ours:
        lines.append("- change_type/none runs the same table rewrite in naive and ours (%.2f s against %.2f s "
                     "write-blocked): lock_timeout cannot shorten a rewrite; the difference is run-to-run noise "
                     "(one run per cell)." % (ct_naive["write_blocked_s"], ct_ours["write_blocked_s"]))
    lines += ["- The per-case monitor summaries (sessions that waited on the migration, the migration's own "
              "waits) and every number above are in `results.json`."]
    (out / "REPORT.md").write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 cases instead of the full matrix")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite REPORT.md from the results.json of the last run (no measurement)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        saved = json.loads((out / "results.json").read_text())
        report(saved["results"], saved["facts"], out, saved.get("elapsed_s", 0))
        return
    began = time.monotonic()
    with pg.private_cluster() as server, tempfile.TemporaryDirectory(prefix="dbops-downtime-") as tmp:
        pg.create_database(server, "bench")
        url = server.url("bench")
        env = dict(os.environ, **server.libpq_env("bench"))
        subprocess.run([os.path.join(PG_BIN, "pgbench"), "-i", "-q", "-s", str(SCALE)], env=env, check=True,
                       capture_output=True)
        facts = environment_facts(server)
        results = []
        for mig, blocker, variant in matrix(args.quick):
            print("case %-13s %-15s %-9s" % (mig, blocker, variant), end=" ", flush=True)
            with OtherCpu(lambda: [os.getpid(), postmaster_pid(server.data_dir)]) as other:
                result = run_case(server, url, Path(tmp), mig, blocker, variant)
            result["other_cores"] = other.cores
            print("ok=%s blocked=%.2fs gap=%.2fs attempts=%s" % (result["ok"], result["write_blocked_s"],
                                                                  result["longest_gap_s"], result["attempts"]),
                  flush=True)
            results.append(result)
        chart(results, out)
        facts["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        facts["other_cores_max"] = max(r["other_cores"] for r in results)
        elapsed = time.monotonic() - began
        public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
        (out / "results.json").write_text(json.dumps({"facts": facts, "settings": OURS, "elapsed_s": round(elapsed),
                                                      "results": public}, indent=1))
        report(public, facts, out, elapsed)
    print("wrote", out / "REPORT.md")


if __name__ == "__main__":
    main()
