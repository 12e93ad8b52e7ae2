#!/usr/bin/env python3
"""Lint benchmark: migration_risk against squawk (PyPI squawk-cli) on the same SQL.

    .venv/bin/python bench/lint/run.py [--files 2000] [--repeat 7] [--jobs N] [--work /var/tmp/dbops-bench-lint] [--allow-busy]

1. Cases: every SQL case of tests/unit/test_risk_rules.py (each with the risk it must get) is written
   to its own file and given to both tools (squawk with the case's --pg-version). A case is
   dangerous when its expected risk is above low. migration_risk catches a case when its risk is
   above low; squawk when it reports anything (all default rules), and, in a second view, when it
   reports anything other than its style/robustness/timeout rules (its "lock rules").
2. Speed: a deterministic corpus of ``--files`` migration files (bench/lint/corpus.py) is analysed
   ``--repeat`` times by each tool, interleaved: migration_risk in one Python process (timed inside
   the process), as a whole process including interpreter start-up and imports (bench/lint/analyse.py)
   with one process and with ``--jobs`` processes (default: every CPU), and squawk as one process over
   all files.  Medians are reported, with the load average sampled before every round and the commit
   measured; on a machine busier than its CPU count (before or during the rounds) the benchmark
   refuses to write the report unless --allow-busy, and then marks the report as busy.

Writes bench/lint/REPORT.md and bench/lint/results.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# Only what the analysis needs is imported up front, so the whole-process timing measures the engine.
_LINK = REPO / ".collections" / "ansible_collections" / "dbops" / "migrations"
if not _LINK.exists():
    _LINK.parent.mkdir(parents=True, exist_ok=True)
    _LINK.symlink_to(REPO, target_is_directory=True)
sys.path.insert(0, str(REPO / ".collections"))
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import analyse_sql  # noqa: E402
from analyse import analyse_directory  # noqa: E402,F401  (bench/lint/analyse.py: the whole-process entry)

ANALYSE = str(HERE / "analyse.py")

SQUAWK = str(Path(sys.executable).parent / "squawk")
# squawk rules about style, re-runnability and timeouts rather than locks, rewrites or data.
SQUAWK_STYLE_RULES = frozenset((
    "prefer-robust-stmts", "prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-identity",
    "prefer-text-field", "prefer-timestamptz", "ban-char-field", "require-lock-timeout", "require-statement-timeout",
    "require-timeout-settings", "prefer-timestamp-tz", "require-table-schema"))


def squawk_json(files, version: int) -> dict:
    proc = subprocess.run([SQUAWK, "--reporter", "json", "--pg-version", "%d.0" % version] + [str(f) for f in files],
                          capture_output=True, text=True)
    by_file: dict = {str(f): [] for f in files}
    try:
        violations = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        violations = []
    for item in violations:
        by_file.setdefault(item["file"], []).append(item.get("rule_name") or item.get("level"))
    return by_file


def run_cases(work: Path) -> list:
    from tests.unit.test_risk_rules import CASES
    case_dir = work / "cases"
    shutil.rmtree(case_dir, ignore_errors=True)
    case_dir.mkdir(parents=True)
    rows = []
    by_version: dict = {}
    for case_id, sql, expected, _rule, version in CASES:
        path = case_dir / ("%s.sql" % case_id)
        path.write_text(sql.rstrip().rstrip(";") + ";\n")
        by_version.setdefault(version, []).append(path)
        result = analyse_sql(sql, server_version=version).as_result()
        rows.append({"id": case_id, "version": version, "expected": expected, "ours": result["risk"],
                     "ours_rules": sorted({f["rule"] for f in result["findings"] if f["risk"] != "low"}),
                     "path": str(path)})
    squawk: dict = {}
    for version, files in by_version.items():
        squawk.update(squawk_json(files, version))
    for row in rows:
        rules = squawk.get(row["path"], [])
        row["squawk_rules"] = sorted(set(rules))
        row["squawk_lock_rules"] = sorted(set(rules) - SQUAWK_STYLE_RULES)
    return rows


def run_alembic_example() -> list:
    """The example app's pending revisions: squawk on `alembic upgrade --sql`, migration_risk per revision."""
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request
    ini = REPO / "examples" / "auto_trader" / "alembic.ini"
    if not ini.exists():
        return []
    rows = []
    env = dict(os.environ, DATABASE_URL="postgresql://offline@localhost/offline")
    for lower in ("0002", "base"):
        proc = subprocess.run([str(Path(sys.executable).parent / "alembic"), "-c", str(ini), "upgrade",
                               "%s:head" % lower, "--sql"], env=env, capture_output=True, text=True)
        sql_path = Path("/tmp") / ("dbops-bench-alembic-%s.sql" % lower)
        sql_path.write_text(proc.stdout)
        squawk = squawk_json([sql_path], 15).get(str(sql_path), [])
        result = run_request(RiskRequest(alembic_config=str(ini), from_revision=None if lower == "base" else lower))
        ours = ["%s %s (%s)" % (r["revision"], r["risk"], ", ".join(sorted(
            {f["rule"] for f in result["findings"] if f["revision"] == r["revision"] and f["risk"] != "low"})) or "-")
            for r in result["revisions"]]
        rows.append({"range": "%s:head" % lower, "squawk_rules": sorted(set(squawk) - SQUAWK_STYLE_RULES),
                     "squawk_style_rules": sorted(set(squawk) & SQUAWK_STYLE_RULES), "ours": ours,
                     "ours_risk": result["risk"]})
    return rows


def _alembic_notes(alembic_rows) -> list:
    """Sentences that follow from the measured rows (nothing claimed that this run did not show)."""
    notes = []
    by_range = {r["range"]: r for r in alembic_rows}
    pending, full = by_range.get("0002:head"), by_range.get("base:head")
    if pending and not any("update" in rule for rule in pending["squawk_rules"]) and \
            any("update-all-rows" in entry for entry in pending["ours"]):
        notes.append("- squawk reports nothing for the UPDATE backfill of 0005; migration_risk rates it critical.")
    if pending and full and "require-concurrent-index-creation" in pending["squawk_rules"] and \
            "require-concurrent-index-creation" not in full["squawk_rules"]:
        notes.append("- Over the whole history (`base:head`) squawk drops its index finding for 0003, because "
                     "`orders` is created earlier in the same file; migration_risk keeps revisions apart unless "
                     "a database shows they run together.")
    return notes


def timed(argv, cpu: list = None) -> float:
    """Wall seconds of one process; its CPU seconds (user + system, every thread) go to ``cpu``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def compile_engine() -> None:
    """Write the engine's bytecode, as an installed collection has it after its first run: timing a
    process that compiles its sources first (PYTHONDONTWRITEBYTECODE) measures the compiler."""
    import compileall
    if not compileall.compile_dir(str(REPO / "plugins" / "module_utils"), quiet=1):
        sys.exit("bench/lint: plugins/module_utils does not compile")


def _counts_of_process(corpus_dir: Path, jobs: int) -> dict:
    proc = subprocess.run([sys.executable, ANALYSE, str(corpus_dir), "--jobs", str(jobs)], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout)


def run_speed(work: Path, files: int, repeat: int, jobs: int) -> dict:
    import corpus
    corpus_dir = work / "corpus"
    shutil.rmtree(corpus_dir, ignore_errors=True)
    info = corpus.generate(corpus_dir, files=files)
    paths = sorted(str(p) for p in corpus_dir.glob("*.sql"))
    counts = analyse_directory(corpus_dir)
    # The whole-process runs must give the in-process verdicts, with one process as with several.
    for n in (1, jobs):
        if _counts_of_process(corpus_dir, n) != counts:
            sys.exit("bench/lint: analyse.py --jobs %d gives other verdicts than the in-process analysis" % n)
    compile_engine()
    ours_in, ours_proc, ours_proc_jobs, squawk = [], [], [], []
    cpu = {"ours_process": [], "ours_process_jobs": [], "squawk_process": []}
    load = []
    for _ in range(repeat):
        load.append(os.getloadavg()[0])
        started = time.perf_counter()
        counts = analyse_directory(corpus_dir)
        ours_in.append(time.perf_counter() - started)
        ours_proc.append(timed([sys.executable, ANALYSE, str(corpus_dir), "--jobs", "1"], cpu["ours_process"]))
        ours_proc_jobs.append(timed([sys.executable, ANALYSE, str(corpus_dir), "--jobs", str(jobs)],
                                    cpu["ours_process_jobs"]))
        squawk.append(timed([SQUAWK, "--reporter", "gcc"] + paths, cpu["squawk_process"]))
    proc = subprocess.run([SQUAWK, "--reporter", "json"] + paths, capture_output=True, text=True)
    flagged = {item["file"] for item in json.loads(proc.stdout or "[]")}
    flagged_lock = {item["file"] for item in json.loads(proc.stdout or "[]")
                    if item.get("rule_name") not in SQUAWK_STYLE_RULES}
    load.append(os.getloadavg()[0])
    return {"files": info["files"], "statements": info["statements"], "repeat": repeat, "load_1min": load,
            "commit": _commit(), "jobs": jobs, "ours_in_process_s": ours_in, "ours_process_s": ours_proc,
            "ours_process_jobs_s": ours_proc_jobs, "squawk_process_s": squawk,
            "cpu_s": cpu, "json_decoder": _json_decoder(),
            "ours_risk_counts": counts, "squawk_files_flagged": len(flagged),
            "squawk_files_flagged_lock_rules": len(flagged_lock)}


def _json_decoder() -> str:
    """The engine decodes pglast's parse trees with orjson when it is installed, else with json."""
    try:
        import orjson
    except ImportError:
        return "json (standard library)"
    return "orjson %s" % orjson.__version__


def _version(argv) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def _cpu(speed: dict, key: str) -> str:
    samples = (speed.get("cpu_s") or {}).get(key)
    return "%.3f" % statistics.median(samples) if samples else "-"


def busy(load: float) -> bool:
    """Timings on a machine busier than its CPU count are not comparable with other runs."""
    return load > (os.cpu_count() or 1)


def _load_verdict(samples: list) -> str:
    if samples and busy(max(samples)):
        return "**the machine was busy: these timings are not comparable with other runs**"
    return "a quiet machine"


def _commit() -> str:
    return _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "?"


def write_report(rows: list, speed: dict, alembic_rows: list = ()) -> str:
    dangerous = [r for r in rows if r["expected"] != "low"]
    safe = [r for r in rows if r["expected"] == "low"]
    ours_catch = [r for r in dangerous if r["ours"] != "low"]
    sq_catch = [r for r in dangerous if r["squawk_rules"]]
    sq_lock_catch = [r for r in dangerous if r["squawk_lock_rules"]]
    ours_false = [r for r in safe if r["ours"] != "low"]
    sq_false = [r for r in safe if r["squawk_rules"]]
    sq_lock_false = [r for r in safe if r["squawk_lock_rules"]]
    squawk_only = [r for r in sq_lock_catch if r["ours"] == "low"]
    ours_only = [r for r in ours_catch if not r["squawk_lock_rules"]]
    exact = [r for r in rows if r["ours"] == r["expected"]]
    med = {k: statistics.median(speed[k]) for k in ("ours_in_process_s", "ours_process_s", "ours_process_jobs_s",
                                                     "squawk_process_s")}
    import pglast
    lines = [
        "# Lint benchmark: migration_risk vs squawk",
        "",
        "Generated by `.venv/bin/python bench/lint/run.py` on %s (%s, %d CPUs, Python %s, pglast %s, %s)."
        % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), platform.machine(),
           os.cpu_count() or 0, platform.python_version(), pglast.__version__, _version([SQUAWK, "--version"])),
        "All numbers below come from that one run of commit %s (1-minute load average during the timed "
        "rounds: %s; %s)." % (speed.get("commit") or _commit(), " ".join("%.1f" % v for v in speed.get("load_1min", [])),
                               _load_verdict(speed.get("load_1min", []))),
        "",
        "## Catches and false alarms on the %d SQL cases" % len(rows),
        "",
        "The cases are the parametrized unit tests of `tests/unit/test_risk_rules.py`, each with the risk level it",
        "must get: %d dangerous (expected medium or above), %d safe (expected low, including statements on tables"
        % (len(dangerous), len(safe)),
        "created in the same migration). squawk ran with each case's `--pg-version`. \"squawk (lock rules)\" ignores",
        "squawk's style, re-runnability and timeout rules (%s)." % ", ".join(sorted(SQUAWK_STYLE_RULES)),
        "",
        "| | migration_risk | squawk (all rules) | squawk (lock rules) |",
        "|---|---|---|---|",
        "| dangerous cases caught | %d / %d | %d / %d | %d / %d |" % (len(ours_catch), len(dangerous), len(sq_catch),
                                                                  len(dangerous), len(sq_lock_catch), len(dangerous)),
        "| false alarms on safe cases | %d / %d | %d / %d | %d / %d |" % (len(ours_false), len(safe), len(sq_false),
                                                                       len(safe), len(sq_lock_false), len(safe)),
        "| exact expected level | %d / %d | n/a (no levels) | n/a |" % (len(exact), len(rows)),
        "",
        "The expected levels are this project's own judgement (they are its unit tests), so the \"exact expected",
        "level\" row shows that migration_risk does what its tests say, not an outside score. Catches and false",
        "alarms are comparable across tools: both see the same file, and a case counts as caught when the tool",
        "reports anything about it (squawk has no levels).",
        "",
        "Dangerous cases squawk misses even with all rules (%d): %s." % (
            len(dangerous) - len(sq_catch), ", ".join("`%s`" % r["id"] for r in dangerous if not r["squawk_rules"])),
        "",
        "Dangerous cases squawk's lock rules catch and migration_risk does not: %s."
        % (", ".join("`%s`" % r["id"] for r in squawk_only) or "none"),
        "",
        "Dangerous cases only migration_risk catches (%d): %s." % (len(ours_only),
                                                                  ", ".join("`%s`" % r["id"] for r in ours_only)),
        "",
        "Safe cases squawk (lock rules) flags: %s." % (", ".join("`%s` (%s)" % (r["id"], ", ".join(r["squawk_lock_rules"]))
                                                             for r in sq_lock_false) or "none"),
        "",
        "Safe cases migration_risk flags: %s." % (", ".join("`%s`" % r["id"] for r in ours_false) or "none"),
        "",
        "## Speed on a generated corpus",
        "",
        "%d migration files, %d statements (`bench/lint/corpus.py`, fixed seed), %d interleaved runs, median. "
        "Whole processes run `bench/lint/analyse.py CORPUS --jobs N`, which imports only the engine; with N "
        "processes each file is still analysed by itself and the verdicts are checked equal to one process's. "
        "The engine's bytecode is written before the runs (as an installed collection's is after its first "
        "run); parse trees are decoded with %s. *CPU s* is the median of user + system seconds over all of a "
        "process's threads and children."
        % (speed["files"], speed["statements"], speed["repeat"], speed.get("json_decoder", "json")),
        "",
        "| tool | median seconds | CPU s | all runs |",
        "|---|---|---|---|",
        "| migration_risk, analysis inside one process | %.3f | | %s |" % (
            med["ours_in_process_s"], ", ".join("%.3f" % v for v in speed["ours_in_process_s"])),
        "| migration_risk, whole process (Python start-up + imports + analysis), 1 process | %.3f | %s | %s |" % (
            med["ours_process_s"], _cpu(speed, "ours_process"), ", ".join("%.3f" % v for v in speed["ours_process_s"])),
        "| migration_risk, whole process, `--jobs %d` (%d processes) | %.3f | %s | %s |" % (
            speed["jobs"], speed["jobs"], med["ours_process_jobs_s"], _cpu(speed, "ours_process_jobs"),
            ", ".join("%.3f" % v for v in speed["ours_process_jobs_s"])),
        "| squawk, whole process (`--reporter gcc`) | %.3f | %s | %s |" % (
            med["squawk_process_s"], _cpu(speed, "squawk_process"),
            ", ".join("%.3f" % v for v in speed["squawk_process_s"])),
        "",
        "Single squawk runs took %.3f-%.3f s and single in-process migration_risk runs %.3f-%.3f s in this "
        "run. Runs are interleaved so both tools see the same load."
        % (min(speed["squawk_process_s"]), max(speed["squawk_process_s"]), min(speed["ours_in_process_s"]),
           max(speed["ours_in_process_s"])),
        "",
        "Ratio migration_risk / squawk: %.2fx (analysis in process), %.2fx (whole process, 1 process), %.2fx "
        "(whole process, %d processes). Goal: at most 1.0x as whole processes."
        % (med["ours_in_process_s"] / med["squawk_process_s"], med["ours_process_s"] / med["squawk_process_s"],
           med["ours_process_jobs_s"] / med["squawk_process_s"], speed["jobs"]),
        "",
        "Verdicts on the corpus: migration_risk %s; squawk flagged %d files (%d with lock rules)." % (
            ", ".join("%s %d" % (k, v) for k, v in sorted(speed["ours_risk_counts"].items())),
            speed["squawk_files_flagged"], speed["squawk_files_flagged_lock_rules"]),
        "",
        "## The example app's Alembic revisions",
        "",
        "squawk reads `alembic upgrade RANGE --sql` (one file, no revision names); migration_risk renders each",
        "pending revision by itself without env.py (no database given).",
        "",
        "| range | squawk lock rules | squawk style rules | migration_risk per revision (rules above low) |",
        "|---|---|---|---|",
    ] + ["| `%s` | %s | %s | %s |" % (r["range"], ", ".join(r["squawk_rules"]) or "-",
                                     ", ".join(r["squawk_style_rules"]) or "-", "; ".join(r["ours"]))
         for r in alembic_rows] + [
        "",
    ] + _alembic_notes(alembic_rows) + [
        "",
        "## Every case",
        "",
        "| case | pg | expected | migration_risk | migration_risk rules above low | squawk rules |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| `%s` | %d | %s | %s | %s | %s |" % (
            r["id"], r["version"], r["expected"], r["ours"], ", ".join(r["ours_rules"]) or "-",
            ", ".join(r["squawk_rules"]) or "-"))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=0,
                        help="processes of the parallel whole-process run (default 0: one per CPU)")
    parser.add_argument("--allow-busy", action="store_true",
                        help="write the report even when the load average exceeds the CPU count (marked as busy)")
    parser.add_argument("--work", default="/var/tmp/dbops-bench-lint")
    parser.add_argument("--analyse", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.analyse:
        print(json.dumps(analyse_directory(Path(args.analyse), args.jobs or 1)))
        return
    load = os.getloadavg()[0]
    if busy(load) and not args.allow_busy:
        sys.exit("bench/lint: the 1-minute load average is %.1f on %d CPUs; timings would not be comparable. "
                 "Run it on a quiet machine, or pass --allow-busy to write a report marked as busy."
                 % (load, os.cpu_count() or 1))
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = run_cases(work)
    jobs = args.jobs or os.cpu_count() or 1
    speed = run_speed(work, args.files, args.repeat, jobs)
    if busy(max(speed["load_1min"])) and not args.allow_busy:
        sys.exit("bench/lint: the 1-minute load average reached %.1f on %d CPUs during the rounds (%s); timings "
                 "would not be comparable, so no report was written. Run it on a quiet machine, or pass "
                 "--allow-busy to write a report marked as busy."
                 % (max(speed["load_1min"]), os.cpu_count() or 1, " ".join("%.1f" % v for v in speed["load_1min"])))
    alembic_rows = run_alembic_example()
    (HERE / "results.json").write_text(json.dumps({"cases": rows, "speed": speed, "alembic": alembic_rows},
                                                  indent=1, default=str) + "\n")
    report = write_report(rows, speed, alembic_rows)
    (HERE / "REPORT.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
