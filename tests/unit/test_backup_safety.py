"""Pure logic behind safe restores and retention: manifest-keyed retention, owner records of
scratch work, database settings, row differences, large objects in the table of contents."""
from __future__ import annotations

import datetime
import json
import os
import subprocess

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backup_archive

WHEN = datetime.datetime(2026, 11, 26, 12, 30, 5, tzinfo=datetime.timezone.utc)


def _backup(folder, file_db, stamp, manifest_db=None, manifest=True):
    name = "%s_%s.dump" % (file_db, stamp)
    (folder / name).write_bytes(b"PGDMP")
    if manifest is True:
        (folder / (name + ".manifest.json")).write_text(json.dumps({"file": name, "sha256": "x", "database": manifest_db}))
    elif manifest:
        (folder / (name + ".manifest.json")).write_text(manifest)
    return name


def test_retention_keys_on_the_manifest_database_not_the_file_name(tmp_path):
    # "shop eu" and "shop_eu" both clean up to the file name shop_eu_...; so do shöp and shäp
    mine = [_backup(tmp_path, "shop_eu", "2026010%dT000000Z" % i, "shop eu") for i in (1, 2)]
    theirs = [_backup(tmp_path, "shop_eu", "2026010%dT000001Z" % i, "shop_eu") for i in (1, 2, 3)]
    umlaut = [_backup(tmp_path, "sh_p", "2026010%dT000000Z" % i, db) for i, db in ((1, "shöp"), (2, "shäp"))]
    assert [e.name for e in backup_archive.list_backups(str(tmp_path), "shop eu")] == mine[::-1]
    assert [e.name for e in backup_archive.list_backups(str(tmp_path), "shop_eu")] == theirs[::-1]
    assert [e.name for e in backup_archive.list_backups(str(tmp_path), "shöp")] == [umlaut[0]]
    assert backup_archive.list_backups(str(tmp_path), "shop") == []


@pytest.mark.parametrize("manifest,reason", [
    (False, "no manifest beside it"),
    ("{broken", "manifest unreadable"),
    (json.dumps({"file": "other.dump", "sha256": "x", "database": "app"}), "describes another file"),
    (json.dumps({"sha256": "x", "database": "app"}), "manifest unreadable"),
])
def test_backups_without_a_readable_manifest_are_skipped_with_a_reason(tmp_path, manifest, reason):
    name = _backup(tmp_path, "app", "20260101T000000Z", "app", manifest=manifest)
    entries, skipped = backup_archive.scan_backups(str(tmp_path))
    assert entries == []
    assert skipped[0]["path"] == str(tmp_path / name) and reason in skipped[0]["reason"]


def test_manifest_records_large_objects_and_the_version_table():
    manifest = backup_archive.build_manifest(database="app", file_name="a.dump", options=backup_archive.DumpOptions(), server_version_num=150018,
                                 alembic_revision=None, tables={}, sha256="x", size_bytes=1, started=WHEN,
                                 finished=WHEN, tools={}, source={}, snapshot=None, large_objects=3,
                                 version_table="app.schema_version", version_table_missing=True)
    assert manifest["large_objects"] == 3
    assert manifest["alembic_revision"] is None and manifest["alembic_version_table_missing"] is True
    assert manifest["alembic_version_table"] == "app.schema_version"


def test_large_objects_are_compared_and_looked_up_in_the_toc():
    assert backup_archive.compare_large_objects(None, 5) == []  # manifests written before large objects were counted
    assert backup_archive.compare_large_objects(2, 2) == []
    assert backup_archive.compare_large_objects(2, 1) == ["large objects: 2 expected, 1 restored"]
    listing = "3350; 0 16390 TABLE DATA public users dbops\n"
    assert backup_archive.toc_large_object_problems(listing, 0) == []
    assert "no large object entries" in backup_archive.toc_large_object_problems(listing, 2)[0]
    assert backup_archive.toc_large_object_problems(listing + "3360; 2613 16500 BLOB - 16500 dbops\n"
                                        "3361; 0 0 BLOBS - BLOBS \n", 2) == []


def test_row_differences_and_rows_lost():
    replaced = {"public.a": 10, "public.b": 5, "public.gone": 3}
    restored = {"public.a": 10, "public.b": 8, "public.new": 1}
    differences = backup_archive.row_differences(replaced, restored)
    assert differences == {"public.b": {"replaced": 5, "restored": 8, "difference": 3},
                           "public.gone": {"replaced": 3, "restored": None, "difference": -3},
                           "public.new": {"replaced": None, "restored": 1, "difference": 1}}
    assert backup_archive.rows_lost(differences) == {"public.gone": 3}
    assert backup_archive.rows_lost(backup_archive.row_differences({"t": 7}, {"t": 4})) == {"t": 3}


def test_describe_objects_names_kinds_and_examples():
    text = backup_archive.describe_objects({"large object": (2, ["16401", "16402"]),
                                "function": (7, ["public.a", "public.b", "public.c", "public.d", "public.e"])})
    assert text == ("7 function(s) (public.a, public.b, public.c, public.d, public.e, ...), "
                    "2 large object(s) (16401, 16402)")


@pytest.mark.parametrize("entry,parsed", [
    ("work_mem=64MB", ("work_mem", ["64MB"])),
    ('search_path=app, "My Schema", public', ("search_path", ["app", "My Schema", "public"])),
    ('search_path="$user", public', ("search_path", ["$user", "public"])),
    ('search_path="a,""b"""', ("search_path", ['a,"b"'])),
    ('search_path=""', ("search_path", [""])),
    ("app.note=a, b = c", ("app.note", ["a, b = c"])),
])
def test_split_setting_like_pg_dump(entry, parsed):
    assert backup_archive.split_setting(entry) == parsed


def test_split_setting_rejects_garbage():
    with pytest.raises(backup_archive.BackupError):
        backup_archive.split_setting("novalue")
    with pytest.raises(backup_archive.BackupError):
        backup_archive.split_guc_list('"a" b')


@pytest.mark.parametrize("base", ["shop eu", "O'Brien \"db\" $(x)=y", "ü" * 70])
def test_replaced_names_are_plain_dated_and_unique(base):
    name = backup_archive.replaced_name(base, WHEN)
    assert name.endswith("_replaced_20261126t123005z") and len(name.encode()) <= 63
    assert name.replace("_", "").isalnum() and name.isascii()
    second = backup_archive.replaced_name(base, WHEN, [name])
    assert second != name and second.endswith("_replaced_20261126t123005z_1") and len(second.encode()) <= 63


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_owner_records_tell_dead_runs_from_live_ones():
    here = backup_archive.this_process()
    alive = backup_archive.parse_owner_record(backup_archive.owner_record("scratch", here, name="x"))
    assert alive["kind"] == "scratch" and alive["name"] == "x" and alive["pid"] == os.getpid()
    assert backup_archive.owner_gone(alive, here) is False
    assert backup_archive.owner_gone(dict(alive, pid=_dead_pid()), here) is True
    assert backup_archive.owner_gone(dict(alive, pid_start="1"), here) is True  # the pid was reused by another process
    assert backup_archive.owner_gone(dict(alive, boot_id="another-boot"), here) is True
    assert backup_archive.owner_gone(dict(alive, host="elsewhere"), here) is None
    assert backup_archive.parse_owner_record("a comment someone wrote") is None
    assert backup_archive.parse_owner_record(backup_archive.RECORD_PREFIX + "{not json") is None


def test_stale_staging_folders(tmp_path):
    here = backup_archive.this_process()
    live = backup_archive.make_staging(str(tmp_path), here)
    dead = backup_archive.make_staging(str(tmp_path), dict(here, pid=_dead_pid()))
    foreign = backup_archive.make_staging(str(tmp_path), dict(here, host="elsewhere"))
    unknown = tmp_path / (backup_archive.STAGING_PREFIX + "old")
    unknown.mkdir()
    stale, kept = backup_archive.stale_staging(str(tmp_path), here)
    assert stale == [dead]
    assert sorted(k["path"] for k in kept) == sorted([foreign, str(unknown)])
    assert live not in stale + [k["path"] for k in kept]


@pytest.mark.parametrize("method,level,arg", [
    ("zstd", 3, "--compress=zstd:3"),
    ("zstd", None, "--compress=zstd"),
    ("lz4", 1, "--compress=lz4:1"),
    ("gzip", 6, "--compress=6"),
    ("none", None, "--compress=0"),
    (None, 1, "--compress=1"),
])
def test_compression_methods_as_pg_dump_16_spells_them(method, level, arg):
    options = backup_archive.DumpOptions(fmt="custom", compress=level, compress_method=method)
    options.validate()
    assert arg in options.pg_dump_args("/b/x.dump", None)


@pytest.mark.parametrize("kwargs,match", [
    (dict(compress_method="zstd", compress=23), "zstd level from 1 to 22"),
    (dict(compress_method="lz4", compress=0), "lz4 level from 1 to 12"),
    (dict(compress_method="brotli"), "compress_method must be one of"),
    (dict(fmt="plain", compress_method="zstd"), "format: plain"),
])
def test_compression_methods_bad_input(kwargs, match):
    with pytest.raises(backup_archive.BackupError, match=match):
        backup_archive.DumpOptions(**kwargs).validate()


def test_lz4_and_zstd_need_a_pg_dump_16_client():
    backup_archive.DumpOptions(compress_method="zstd").check_client((16, 2), "this host")
    backup_archive.DumpOptions(compress_method="gzip").check_client((15, 18), "this host")
    with pytest.raises(backup_archive.BackupError) as err:
        backup_archive.DumpOptions(compress_method="zstd").check_client((15, 18), "this host")
    assert "needs pg_dump 16 or newer" in str(err.value) and "15.18" in str(err.value)
    assert "bin_dir" in str(err.value) and "compress_method: gzip" in str(err.value)
