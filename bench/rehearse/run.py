#!/usr/bin/env python3
"""migration_risk's estimated lock time against the lock time a rehearsal measures, per strong-lock operation.

For each table size (rows) a private PostgreSQL cluster gets a database with an ``orders`` table of that
many rows, a verified pg_backup archive of it, and one Alembic revision per operation; each revision is
rehearsed alone (restore, VACUUM ANALYZE, migrate, drop) with the real runner, and the rehearsal's
calibration row of the revision gives measured and estimated seconds and their ratio.

    .venv/bin/python bench/rehearse/run.py                    # 100k, 1M and 5M rows (about 15 minutes)
    .venv/bin/python bench/rehearse/run.py --rows 100000      # a short run

Results: bench/rehearse/results.json (and a table on stdout): per operation and size the measured and
estimated lock seconds, and the calibration: the rates (bytes per second of strong lock per kind of
work) fitted on the run, each row's ratio with the engine's rates (before) and the fitted ones (after),
and the largest table's ratio with rates fitted on the smaller tables only (held out).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.helpers.ansible import COLLECTIONS_PATH, ensure_collection_link  # noqa: E402

ensure_collection_link()
sys.path.insert(0, str(COLLECTIONS_PATH))

from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import MigrateRequest  # noqa: E402
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url  # noqa: E402
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.rehearsal import (  # noqa: E402
    Rehearsal, RehearsalRequest)
from tests.helpers import postgres as pg  # noqa: E402
from tests.helpers.migrate_project import alembic, make_project  # noqa: E402
from tests.helpers.rehearsal import subprocess_runner, take_backup  # noqa: E402

BASE = ("0001", "orders",
        '    op.execute("CREATE TABLE accounts (id int PRIMARY KEY)")\n'
        '    op.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, account_id int NOT NULL, '
        'quantity int NOT NULL, note text)")', "    pass")
# (name, the engine's kind of work, upgrade body)
OPERATIONS = [
    ("alter column type (rewrite)", "rewrite", '    op.execute("ALTER TABLE orders ALTER COLUMN quantity TYPE bigint")'),
    ("create index (build, SHARE)", "build", '    op.execute("CREATE INDEX ix_orders_account ON orders (account_id)")'),
    ("add check constraint (scan)", "scan",
     '    op.execute("ALTER TABLE orders ADD CONSTRAINT ck_quantity CHECK (quantity >= 0)")'),
    ("set not null (scan)", "scan", '    op.execute("ALTER TABLE orders ALTER COLUMN note SET NOT NULL")'),
    ("add column, volatile default (rewrite)", "rewrite",
     '    op.execute("ALTER TABLE orders ADD COLUMN token float8 NOT NULL DEFAULT random()")'),
    ("add unique constraint (build)", "build", '    op.execute("ALTER TABLE orders ADD CONSTRAINT uq_orders_note UNIQUE (note)")'),
    ("add foreign key (scan)", "scan",
     '    op.execute("ALTER TABLE orders ADD CONSTRAINT fk_orders_account FOREIGN KEY (account_id) REFERENCES accounts (id)")'),
    ("add exclusion constraint (build)", "exclusion",
     '    op.execute("ALTER TABLE orders ADD CONSTRAINT ex_orders_id EXCLUDE USING btree (id WITH =)")'),
    ("add column with check (scan)", "scan",
     '    op.execute("ALTER TABLE orders ADD COLUMN flag int CHECK (flag > 0)")'),
    ("add column unique (build)", "build", '    op.execute("ALTER TABLE orders ADD COLUMN code int UNIQUE")'),
    ("add column bigserial (rewrite)", "rewrite", '    op.execute("ALTER TABLE orders ADD COLUMN seq bigserial")'),
    ("set unlogged (rewrite)", "rewrite", '    op.execute("ALTER TABLE orders SET UNLOGGED")'),
    ("reindex table (build)", "build", '    op.execute("REINDEX TABLE orders")'),
    ("cluster (rewrite)", "rewrite", '    op.execute("CLUSTER orders USING orders_pkey")'),
    ("vacuum full (rewrite)", "rewrite",
     '    with op.get_context().autocommit_block():\n        op.execute("VACUUM FULL orders")'),
]
# Rows below this measured lock time say more about the machine's noise than about a rate.
FIT_FLOOR_S = 0.3


def one_size(server, rows: int, work: Path) -> list:
    name = "bench_" + uuid.uuid4().hex[:8]
    pg.create_database(server, name)
    db = parse_db_url(server.url(name))
    results = []
    try:
        class Db:  # what tests.helpers.migrate_project.alembic needs
            url = server.url(name)
        config = make_project(work / name, [BASE])
        alembic(Db, config, "upgrade", "0001")
        with server.connect(name) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO accounts SELECT g FROM generate_series(0, 999) g")
            cur.execute("INSERT INTO orders (account_id, quantity, note) SELECT g %% 1000, g %% 97, 'n' || g"
                        " FROM generate_series(1, %s) g", (rows,))
            cur.execute("ANALYZE orders")
            # what migration_risk's live facts read as the table's size (indexes and TOAST included)
            cur.execute("SELECT pg_total_relation_size('orders')")
            relation_bytes = cur.fetchone()[0]
        take_backup(server.url(name), str(work / (name + "-backups")), server.bin_dir or None)
        versions = config.parent / "migrations" / "versions"
        for index, (label, kind, body) in enumerate(OPERATIONS, start=2):
            for old in versions.glob("0002_*.py"):
                old.unlink()
            (versions / "0002_rev.py").write_text(
                '"""%s"""\nfrom alembic import op\n\nrevision = "0002"\ndown_revision = "0001"\nbranch_labels = None\n'
                'depends_on = None\n\n\ndef upgrade():\n%s\n\n\ndef downgrade():\n    pass\n' % (label, body))
            request = RehearsalRequest(
                migrate=MigrateRequest(config=str(config), lock_timeout="5s", retries=0, watch_controller=False,
                                       alembic_bin=str(Path(sys.executable).parent / "alembic")),
                backup_dir=str(work / (name + "-backups")), allow_production_server=True,
                bin_dir=server.bin_dir or None)
            began = time.monotonic()
            result = Rehearsal(request, db, subprocess_runner).run()
            row = next(r for r in result["calibration"]["rows"] if r["table"] is None)
            [measured] = result["measurements"]
            results.append({"rows": rows, "operation": label, "work": kind,
                            "measured_lock_s": row["measured_lock_s"], "estimated_lock_s": row["estimated_lock_s"],
                            "ratio": row["ratio"], "verdict": row["verdict"], "duration_s": measured["duration_s"],
                            "table_bytes": next((c["table_bytes_before"] for c in measured["size_changes"]
                                                 if c["table"] == "orders"), None),
                            "wal_bytes": measured.get("wal_bytes"), "relation_bytes": relation_bytes,
                            "rehearsal_s": round(time.monotonic() - began, 1)})
            print("%9d  %-30s measured %6.2f s  estimated %6s s  ratio %s" % (
                rows, label, row["measured_lock_s"] or 0.0,
                "-" if row["estimated_lock_s"] is None else "%.2f" % row["estimated_lock_s"], row["ratio"]), flush=True)
    finally:
        pg.drop_database(server, name)
    return results


def engine_bytes(row: dict, rates: dict) -> float:
    """The size the engine's estimate is made from: pg_total_relation_size, as its live facts read it
    (the estimate itself is rounded to 0.1 s, too coarse to divide back on small tables)."""
    return row["relation_bytes"]


def fit_rates(rows: list, rates: dict) -> dict:
    """Bytes per second of strong lock per kind of work: all bytes over all seconds of the rows measured
    above FIT_FLOOR_S (large tables weigh most, as they should: they are where a wrong estimate hurts)."""
    fitted = {}
    for work in sorted({r["work"] for r in rows}):
        usable = [r for r in rows if r["work"] == work and r["estimated_lock_s"] is not None
                  and (r["measured_lock_s"] or 0) >= FIT_FLOOR_S]
        if usable:
            fitted[work] = sum(engine_bytes(r, rates) for r in usable) / sum(r["measured_lock_s"] for r in usable)
    return fitted


def ratio(measured, estimate):
    return None if not measured or not estimate else round(measured / estimate, 2)


def calibration_table(results: list, rates: dict) -> dict:
    """Each row's ratio measured/estimated with the engine's rates (before) and with rates fitted on
    every row (after, in sample); and on the largest table with rates fitted on the smaller ones only
    (held out: what a rehearsal of smaller copies would have predicted)."""
    fitted = fit_rates(results, rates)
    largest = max(r["rows"] for r in results)
    smaller = fit_rates([r for r in results if r["rows"] < largest], rates)
    table = []
    for r in results:
        size = engine_bytes(r, rates) if r["estimated_lock_s"] is not None else None
        after = size / fitted[r["work"]] if size and r["work"] in fitted else None
        held = size / smaller[r["work"]] if size and r["rows"] == largest and r["work"] in smaller else None
        table.append(dict(r, after_estimated_lock_s=None if after is None else round(after, 2),
                          ratio_before=ratio(r["measured_lock_s"], r["estimated_lock_s"]),
                          ratio_after=ratio(r["measured_lock_s"], after), ratio_held_out=ratio(r["measured_lock_s"], held)))
    return {"rates_before": {k: rates[k] for k in fitted}, "rates_after": fitted, "rates_from_smaller": smaller,
            "rows": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import RATE_BYTES, RULE_RATE_BYTES
    results, loads = [], [list(os.getloadavg())]
    with pg.private_cluster() as server, tempfile.TemporaryDirectory(prefix="dbops-bench-rehearse-") as tmp:
        for rows in args.rows:
            results += one_size(server, rows, Path(tmp))
            loads.append(list(os.getloadavg()))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    # an exclusion constraint has a rate of its own in the engine, so it is fitted apart from index builds
    calibration = calibration_table(results, dict(RATE_BYTES, exclusion=RULE_RATE_BYTES["add-exclusion"]))
    Path(args.out).write_text(json.dumps({"commit": commit, "load_averages": loads, "cpus": os.cpu_count(),
                                          "results": results, "calibration": calibration}, indent=1) + "\n")
    for r in calibration["rows"]:
        print("%9d  %-40s ratio before %-6s after %-6s held out %s" % (
            r["rows"], r["operation"], r["ratio_before"], r["ratio_after"], r["ratio_held_out"]))
    print("rates (MB/s) before %s after %s" % (
        {k: round(v / 1e6, 1) for k, v in calibration["rates_before"].items()},
        {k: round(v / 1e6, 1) for k, v in calibration["rates_after"].items()}))
    print("results in", args.out)


if __name__ == "__main__":
    main()
