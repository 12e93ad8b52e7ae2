#!/usr/bin/env python3
"""migration_risk's estimated lock time against the lock time a rehearsal measures, per strong-lock operation.

For each table size (rows) a private PostgreSQL cluster gets a database with an ``orders`` table of that
many rows, a verified pg_backup archive of it, and one Alembic revision per operation; each revision is
rehearsed alone (restore, VACUUM ANALYZE, migrate, drop) with the real runner, and the rehearsal's
calibration row of the revision gives measured and estimated seconds and their ratio.

    .venv/bin/python bench/rehearse/run.py                    # 100k and 1M rows
    .venv/bin/python bench/rehearse/run.py --rows 100000      # a short run
    .venv/bin/python bench/rehearse/run.py --rows 100000 1000000 5000000

Results: bench/rehearse/results.json (and a table on stdout). The model is the engine's as it stands:
there is no "after" column until a calibration changes the rates (risk/lock_model.py would hold them).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
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

from ansible_collections.dbops.migrations.plugins.module_utils.backup.archive import DumpOptions  # noqa: E402
from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import Backup, Executor  # noqa: E402
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import MigrateRequest  # noqa: E402
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url  # noqa: E402
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.rehearsal import (  # noqa: E402
    Rehearsal, RehearsalRequest)
from tests.helpers import postgres as pg  # noqa: E402
from tests.helpers.migrate_project import alembic, make_project  # noqa: E402

BASE = ("0001", "orders",
        '    op.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, account_id int NOT NULL, '
        'quantity int NOT NULL, note text)")', "    pass")
# (name, the engine's kind of work, upgrade body)
OPERATIONS = [
    ("alter column type (rewrite)", "rewrite", '    op.execute("ALTER TABLE orders ALTER COLUMN quantity TYPE bigint")'),
    ("create index (build, SHARE)", "build", '    op.execute("CREATE INDEX ix_orders_account ON orders (account_id)")'),
    ("add check constraint (scan)", "scan",
     '    op.execute("ALTER TABLE orders ADD CONSTRAINT ck_quantity CHECK (quantity >= 0)")'),
    ("set not null (scan)", "scan", '    op.execute("ALTER TABLE orders ALTER COLUMN note SET NOT NULL")'),
]


def runner(argv, env, cwd=None):
    full = dict(os.environ)
    full.update(env)
    proc = subprocess.run(argv, env=full, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


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
            cur.execute("INSERT INTO orders (account_id, quantity, note) SELECT g %% 1000, g %% 97, 'n' || g"
                        " FROM generate_series(1, %s) g", (rows,))
            cur.execute("ANALYZE orders")
        executor = Executor(runner=lambda argv, env: runner(argv, env), which=shutil.which, bin_dir=server.bin_dir or None)
        Backup(info=db, executor=executor).create(str(work / (name + "-backups")), DumpOptions(fmt="custom"), "list", None)
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
            result = Rehearsal(request, db, runner).run()
            row = next(r for r in result["calibration"]["rows"] if r["table"] is None)
            [measured] = result["measurements"]
            results.append({"rows": rows, "operation": label, "work": kind,
                            "measured_lock_s": row["measured_lock_s"], "estimated_lock_s": row["estimated_lock_s"],
                            "ratio": row["ratio"], "verdict": row["verdict"], "duration_s": measured["duration_s"],
                            "table_bytes": next((c["table_bytes_before"] for c in measured["size_changes"]
                                                 if c["table"] == "orders"), None),
                            "wal_bytes": measured.get("wal_bytes"),
                            "rehearsal_s": round(time.monotonic() - began, 1)})
            print("%9d  %-30s measured %6.2f s  estimated %6s s  ratio %s" % (
                rows, label, row["measured_lock_s"] or 0.0,
                "-" if row["estimated_lock_s"] is None else "%.2f" % row["estimated_lock_s"], row["ratio"]), flush=True)
    finally:
        pg.drop_database(server, name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    results = []
    with pg.private_cluster() as server, tempfile.TemporaryDirectory(prefix="dbops-bench-rehearse-") as tmp:
        for rows in args.rows:
            results += one_size(server, rows, Path(tmp))
    Path(args.out).write_text(json.dumps({"load_average": os.getloadavg(), "cpus": os.cpu_count(),
                                          "results": results}, indent=1) + "\n")
    print("results in", args.out)


if __name__ == "__main__":
    main()
