"""Pure logic of migration_rehearsal: measurements, calibration, archive choice, records and leftovers."""
from __future__ import annotations

import datetime
import json
import os

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backups
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import calibrate as calib
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse import measure, records, scratch

NOW = datetime.datetime(2026, 12, 10, 12, 0, tzinfo=datetime.timezone.utc)


def rel(oid, name, kind="r", filenode=None, table=None, size=1000, rows=10, schema="public"):
    return measure.Relation(oid=oid, schema=schema, name=name, kind=kind, relfilenode=filenode or oid,
                            table=table or name, size_bytes=size, rows=rows)


def snap(relations, lsn, at=0.0):
    return measure.Snapshot({r.oid: r for r in relations}, lsn, at)


# ---------------------------------------------------------------- snapshots

def test_a_changed_relfilenode_is_a_rewrite_and_sizes_are_compared():
    before = snap([rel(1, "orders", size=8000), rel(2, "orders_pkey", "i", table="orders", size=2000),
                   rel(3, "accounts")], 1000)
    after = snap([rel(1, "orders", filenode=11, size=9000), rel(2, "orders_pkey", "i", filenode=12, table="orders",
                                                                 size=2500),
                  rel(3, "accounts"), rel(4, "ix_new", "i", table="accounts", size=100)], 51000)
    diff = measure.compare(before, after)
    assert diff["rewritten_tables"] == ["orders"]
    assert diff["rebuilt_indexes"] == ["orders_pkey"]
    assert diff["created"] == ["index ix_new"] and diff["dropped"] == []
    assert diff["wal_bytes"] == 50000
    by_table = {c["table"]: c for c in diff["size_changes"]}
    assert by_table["orders"]["table_bytes_change"] == 1000 and by_table["orders"]["index_bytes_change"] == 500
    assert by_table["accounts"]["table_bytes_change"] == 0 and by_table["accounts"]["index_bytes_after"] == 100


def test_partitioned_tables_without_storage_are_never_rewritten():
    before = snap([rel(1, "events", kind="p", filenode=0)], 0)
    after = snap([rel(1, "events", kind="p", filenode=0)], 0)
    assert measure.compare(before, after)["rewritten_tables"] == []


def test_dropped_table_and_names_outside_public():
    before = snap([rel(1, "old", schema="billing", table="billing.old")], None)
    after = snap([], None)
    diff = measure.compare(before, after)
    assert diff["dropped"] == ["table billing.old"] and diff["wal_bytes"] is None
    assert diff["size_changes"][0]["table_bytes_after"] is None


@pytest.mark.parametrize("lsn, value", [("0/0", 0), ("0/10", 16), ("1/0", 1 << 32), ("16/B374D848", 0x16B374D848),
                                        (None, None), ("", None)])
def test_lsn_to_int(lsn, value):
    assert measure.lsn_to_int(lsn) == value


# ---------------------------------------------------------------- lock samples

def lock(at, table="orders", mode="AccessExclusiveLock", pid=7, query="ALTER TABLE orders ..."):
    return measure.LockSample(at=at, pid=pid, mode=mode, table=table, query=query)


def test_a_hold_lasts_from_first_to_last_sample_plus_one_interval():
    ledger = measure.LockLedger(0.05)
    for i in range(21):  # 0.0 .. 1.0 s
        ledger.add(100 + i * 0.05, [lock(100 + i * 0.05)], [])
    [held] = ledger.locks()
    assert held["table"] == "orders" and held["lock"] == "ACCESS EXCLUSIVE" and held["blocks"] == "reads_and_writes"
    assert held["held_s"] == pytest.approx(1.05)
    assert held["taken_by"].startswith("ALTER TABLE orders")
    assert ledger.lock_seconds() == pytest.approx(1.05)
    assert ledger.table_lock_seconds() == {"orders": pytest.approx(1.05)}


def test_overlapping_holds_count_once_and_tables_apart():
    ledger = measure.LockLedger(0.1)
    ledger.add(0.0, [lock(0.0), lock(0.0, table="accounts", mode="ShareLock")], [])
    ledger.add(1.0, [lock(1.0), lock(1.0, table="accounts", mode="ShareLock")], [])
    ledger.add(5.0, [lock(5.0, table="items", pid=8)], [])
    assert ledger.lock_seconds() == pytest.approx(1.1 + 0.1)
    assert ledger.table_lock_seconds() == {"accounts": pytest.approx(1.1), "items": pytest.approx(0.1),
                                           "orders": pytest.approx(1.1)}
    assert [h["table"] for h in ledger.locks()] == ["accounts", "orders", "items"]
    assert {h["lock"]: h["blocks"] for h in ledger.locks()}["SHARE"] == "writes"


def test_statements_last_from_their_start_to_the_last_active_sample():
    ledger = measure.LockLedger(0.05)
    ledger.add(10.0, [], [measure.StatementSample(10.0, 7, 9.5, "ALTER TABLE a")])
    ledger.add(12.0, [], [measure.StatementSample(12.0, 7, 9.5, "ALTER TABLE a"),
                          measure.StatementSample(12.0, 8, 11.9, "CREATE INDEX b")])
    assert ledger.statements() == [{"statement": "ALTER TABLE a", "duration_s": 2.5},
                                   {"statement": "CREATE INDEX b", "duration_s": 0.1}]
    assert ledger.samples == 2


def test_union_length():
    assert measure.union_length([]) == 0
    assert measure.union_length([(0, 1), (0.5, 2), (3, 4)]) == pytest.approx(3.0)


# ---------------------------------------------------------------- calibration

@pytest.mark.parametrize("measured, estimated, verdict", [
    (0.3, 0.0, "ok"),                 # both below min_seconds
    (4.0, 1.0, "underestimated"),     # more than 3x the estimate
    (3.0, 1.0, "ok"),                 # exactly 3x agrees
    (1.0, 5.0, "overestimated"),
    (2.0, 0.0, "underestimated"),     # a lock the model calls brief
    (2.0, None, "unknown"),
    (None, 1.0, "unknown"),
])
def test_verdict(measured, estimated, verdict):
    assert calib.verdict(measured, estimated, 3.0, 1.0)["verdict"] == verdict


def test_calibration_rows_per_revision_and_table_and_the_disagreements():
    result = calib.calibrate([
        {"revision": "0002", "measured_lock_s": 6.0, "estimated_lock_s": 1.0, "tables": {"orders": 6.0},
         "table_estimates": {"orders": 1.0}},
        {"revision": "0003", "measured_lock_s": 0.1, "estimated_lock_s": 0.0, "tables": {},
         "table_estimates": {"accounts": 0.0}},
    ])
    rows = {(r["revision"], r["table"]): r for r in result["rows"]}
    assert rows[("0002", None)]["verdict"] == "underestimated" and rows[("0002", None)]["ratio"] == 6.0
    assert rows[("0002", "orders")]["verdict"] == "underestimated"
    assert rows[("0003", "accounts")]["verdict"] == "ok" and rows[("0003", "accounts")]["measured_lock_s"] == 0.0
    assert len(result["disagreements"]) == 2 and result["agrees"] is False
    assert "0002 orders: measured 6.0 s, estimated 1.0 s (underestimated, x6.0)" == calib.describe(rows[("0002", "orders")])


def test_finding_estimates_follow_the_engine_rates():
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import RATE_BYTES
    from ansible_collections.dbops.migrations.plugins.module_utils.risk import rules
    rewrite = next(r for r in rules.RULES if r.work == rules.REWRITE)
    instant = next(r for r in rules.RULES if r.work == rules.INSTANT)
    assert calib.finding_seconds(rewrite.id, 10, 600e6) == pytest.approx(600e6 / RATE_BYTES[rules.REWRITE])
    assert calib.finding_seconds(rewrite.id, 10, None) is None
    assert calib.finding_seconds(instant.id, None, None) == 0.0
    assert calib.finding_seconds("no-such-rule", 1, 1) is None
    findings = [{"rule": rewrite.id, "table": "public.orders", "blocks": "reads_and_writes"},
                {"rule": instant.id, "table": "orders", "blocks": "reads_and_writes"},
                {"rule": rewrite.id, "table": "accounts", "blocks": "none"}]
    estimates = calib.table_estimates(findings, {"orders": int(120e6)}, {"orders": 5})
    assert estimates == {"orders": pytest.approx(120e6 / RATE_BYTES[rules.REWRITE])}


# ---------------------------------------------------------------- archives

def write_backup(folder, name, database="shop", verified=True, finished=NOW, manifest_extra=None):
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(b"PGDMP")
    manifest = {"file": name, "sha256": "x", "database": database, "finished_at": finished.isoformat(),
                "verification": {"verified": verified, "mode": "list"}}
    manifest.update(manifest_extra or {})
    (folder / backups.manifest_name(name)).write_text(json.dumps(manifest))
    return str(folder / backups.manifest_name(name))


def test_the_newest_verified_recent_archive_is_chosen(tmp_path):
    old = write_backup(tmp_path, "shop_20261209T120000Z.dump", finished=NOW - datetime.timedelta(hours=24))
    write_backup(tmp_path, "shop_20261210T100000Z.dump", verified=False, finished=NOW - datetime.timedelta(hours=2))
    good = write_backup(tmp_path, "shop_20261210T080000Z.dump", finished=NOW - datetime.timedelta(hours=4))
    write_backup(tmp_path, "other_20261210T110000Z.dump", database="other")
    path, passed_over = records.choose_archive(str(tmp_path), "shop", NOW, 12)
    assert path == good
    assert [os.path.basename(p["manifest"]) for p in passed_over] == ["shop_20261210T100000Z.dump.manifest.json"]
    assert "not verified" in passed_over[0]["reason"]
    path, passed_over = records.choose_archive(str(tmp_path), "shop", NOW + datetime.timedelta(hours=30), 12)
    assert path is None and any("hours old" in p["reason"] for p in passed_over)
    assert old not in [p["manifest"] for p in passed_over[:1]]


def test_no_archive_folder(tmp_path):
    assert records.choose_archive(str(tmp_path / "missing"), "shop", NOW) == (None, [])


# ---------------------------------------------------------------- records and their freshness

def record(**extra):
    data = {"format_version": records.RECORD_FORMAT_VERSION, "id": "r1", "database": "shop", "passed": True,
            "revisions": ["0005"], "finished_at": (NOW - datetime.timedelta(days=1)).isoformat(),
            "measurements": [{"revision": "0005", "duration_s": 4.2, "lock_s": 3.9, "rewritten_tables": ["orders"],
                              "wal_bytes": 50 * 1024 * 1024}],
            "calibration": {"disagreements": []}, "archive_finished_at": "2026-12-09T02:00:00+00:00"}
    data.update(extra)
    return data


@pytest.mark.parametrize("changes, revisions, reason", [
    ({}, ["0005"], None),
    ({}, ["0005", "0006"], "it rehearsed 0005, not 0005, 0006"),
    ({"passed": False, "failure": "lock timeout"}, ["0005"], "it failed: lock timeout"),
    ({"finished_at": (NOW - datetime.timedelta(days=8)).isoformat()}, ["0005"], "it is 8.0 days old (max 7)"),
    ({"finished_at": "yesterday"}, ["0005"], "it has no finished_at time"),
    ({"finished_at": (NOW + datetime.timedelta(days=2)).isoformat()}, ["0005"], "its finished_at lies in the future"),
    ({"database": "other"}, ["0005"], "it rehearsed database other"),
])
def test_record_verdict(changes, revisions, reason):
    assert records.record_verdict(record(**changes), revisions, NOW, 7, "shop") == reason


def test_records_are_written_atomically_and_the_newest_fitting_one_is_found(tmp_path):
    folder = tmp_path / "rehearsals"
    records.write_record(str(folder), record(id="a", finished_at=(NOW - datetime.timedelta(days=3)).isoformat()))
    records.write_record(str(folder), record(id="b", passed=False, failure="x",
                                             finished_at=(NOW - datetime.timedelta(hours=1)).isoformat()))
    assert oct(os.stat(folder / "a.json").st_mode & 0o777) == "0o640"
    assert json.loads((folder / "last.json").read_text())["id"] == "b"
    (folder / "junk.json").write_text("{not json")
    found = records.find_record(str(folder), ["0005"], 7, NOW, "shop")
    assert found["passed"] and found["record"]["id"] == "a"
    found = records.find_record(str(folder), ["0005"], 2, NOW, "shop")
    assert not found["passed"] and "b.json: it failed: x" in found["reason"] and "a.json: it is 3.0 days old" in found["reason"]
    assert records.find_record(str(tmp_path / "none"), ["0005"], 7, NOW)["reason"].startswith("no rehearsal record in")


def test_summary_line_has_the_numbers_for_the_approval_message():
    line = records.summary_line(record())
    assert "0005 4.2 s wall, strong locks 3.9 s, rewrites orders, WAL 50.0 MB" in line
    assert line.endswith("estimate agrees")
    assert "waited" not in line  # no synthetic load ran


def test_summary_line_says_how_long_the_synthetic_load_waited():
    loaded = record()
    loaded["measurements"][0]["load"] = {"orders": {"queries": 80, "max_s": 3.84}, "items": {"queries": 3, "max_s": 0.2}}
    assert "rewrites orders, WAL 50.0 MB, queries waited up to 3.8 s" in records.summary_line(loaded)


# ---------------------------------------------------------------- scratch databases and leftovers

HERE = {"host": "h1", "boot_id": "boot-1", "pid": os.getpid(), "pid_start": backups.process_start(os.getpid())}


def test_scratch_names_have_the_prefix_and_fit():
    name = scratch.scratch_db_name("Shop EU " + "x" * 80)
    assert name.startswith("dbops_rehearsal_shop_eu_") and len(name) <= 63 - len("_restore_12345678")
    assert scratch.is_scratch(name) and not scratch.is_scratch("shop")


def test_leftover_of_a_dead_run_is_dropped_a_live_one_kept_another_host_reported():
    dead = scratch.owner_comment(dict(HERE, pid=2 ** 22 + 12345, pid_start="1"), "dbops_rehearsal_x_1")
    assert scratch.leftover_verdict("dbops_rehearsal_x_1", dead, 1, HERE)[0] == scratch.DROP
    alive = scratch.owner_comment(HERE, "dbops_rehearsal_x_2")
    assert scratch.leftover_verdict("dbops_rehearsal_x_2", alive, 0, HERE)[0] == scratch.KEEP
    other = scratch.owner_comment(dict(HERE, host="h2"), "dbops_rehearsal_x_3")
    action, why = scratch.leftover_verdict("dbops_rehearsal_x_3", other, 0, HERE)
    assert action == scratch.REPORT and "only that host" in why
    rebooted = scratch.owner_comment(dict(HERE, boot_id="boot-0"), "dbops_rehearsal_x_4")
    assert scratch.leftover_verdict("dbops_rehearsal_x_4", rebooted, 0, HERE)[0] == scratch.DROP


def test_a_leftover_without_a_record_is_dropped_only_when_nobody_is_connected():
    assert scratch.leftover_verdict("dbops_rehearsal_x_5", None, 0, HERE)[0] == scratch.DROP
    assert scratch.leftover_verdict("dbops_rehearsal_x_5", None, 2, HERE)[0] == scratch.KEEP
    assert scratch.leftover_verdict("dbops_rehearsal_x_5", "a comment by hand", 0, HERE)[0] == scratch.DROP


def test_a_restore_in_progress_is_recognised_by_pg_backups_record():
    restoring = backups.owner_record("scratch", HERE, name="dbops_rehearsal_x_6_restore_ab")
    assert scratch.leftover_verdict("dbops_rehearsal_x_6_restore_ab", restoring, 1, HERE)[0] == scratch.KEEP


class FakeCursor:
    def __init__(self, rows):
        self.rows, self.sql = rows, []

    def execute(self, sql, params=None):
        self.sql.append(sql)

    def fetchall(self):
        return self.rows


def test_clean_leftovers_drops_only_dead_runs_and_not_in_check_mode():
    dead = scratch.owner_comment(dict(HERE, pid=2 ** 22 + 12345, pid_start="1"), "dbops_rehearsal_a_1")
    cur = FakeCursor([("dbops_rehearsal_a_1", dead, 0), ("dbops_rehearsal_a_2", scratch.owner_comment(HERE, "x"), 1)])
    out = scratch.clean_leftovers(cur, HERE, 150000, check_mode=True)
    assert len(out["dropped"]) == 1 and not any("DROP" in s for s in cur.sql)
    out = scratch.clean_leftovers(cur, HERE, 150000)
    assert [s for s in cur.sql if "DROP" in s] == ['DROP DATABASE IF EXISTS "dbops_rehearsal_a_1" WITH (FORCE)']
    with pytest.raises(ValueError):
        scratch.drop(cur, "production", 150000)
