"""Pure logic of pg_backup: names, retention, version gates, options, manifests, TOC parsing, files."""
from __future__ import annotations

import datetime
import gzip
import json
import os
import re
import stat

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backup_archive

WHEN = datetime.datetime(2026, 11, 26, 12, 30, 5, tzinfo=datetime.timezone.utc)


def test_backup_name_is_dated_and_never_collides():
    assert backup_archive.backup_name("app", "custom", WHEN) == "app_20261126T123005Z.dump"
    assert backup_archive.backup_name("app", "directory", WHEN) == "app_20261126T123005Z.dir"
    assert backup_archive.backup_name("my db/x", "plain", WHEN) == "my_db_x_20261126T123005Z.sql"
    taken = ["app_20261126T123005Z.dump", "app_20261126T123005Z-1.dump.manifest.json"]
    assert backup_archive.backup_name("app", "custom", WHEN, taken) == "app_20261126T123005Z-2.dump"


@pytest.mark.parametrize("name,parsed", [
    ("app_20261126T123005Z.dump", ("app", "20261126T123005Z")),
    ("my_app_db_20261126T123005Z-3.dir", ("my_app_db", "20261126T123005Z-3")),
    ("app_20261126T123005Z.dump.manifest.json", None),
    ("app.sql", None),
    (".pg_backup-abc", None),
])
def test_parse_backup_name(name, parsed):
    assert backup_archive.parse_backup_name(name) == parsed


def _entries(*stamps, db="app"):
    return [backup_archive.BackupEntry("%s_%s.dump" % (db, s), db, s, True) for s in stamps]


def test_retention_keeps_newest_and_protected():
    entries = _entries("20260101T000000Z", "20260102T000000Z", "20260103T000000Z", "20260104T000000Z")
    kept, removed = backup_archive.plan_retention(entries, 2)
    assert [e.stamp for e in kept] == ["20260104T000000Z", "20260103T000000Z"]
    assert [e.stamp for e in removed] == ["20260102T000000Z", "20260101T000000Z"]
    # a protected (just made) backup is kept even when it is not among the newest
    kept, removed = backup_archive.plan_retention(entries, 1, protect=["app_20260101T000000Z.dump"])
    assert [e.stamp for e in kept] == ["20260101T000000Z"]
    assert len(removed) == 3


@pytest.mark.parametrize("keep", [0, -1])
def test_retention_refuses_to_remove_everything(keep):
    with pytest.raises(backup_archive.BackupError, match="at least 1"):
        backup_archive.plan_retention(_entries("20260101T000000Z"), keep)


def test_list_backups_filters_by_the_manifests_database(tmp_path):
    def manifest(name, db):
        (tmp_path / (name + ".manifest.json")).write_text(json.dumps({"file": name, "sha256": "x", "database": db}))
    for name in ("app_20260101T000000Z.dump", "app_20260102T000000Z.dir", "other_20260103T000000Z.sql",
                 "app_20260104T000000Z.dump", "notes.txt"):
        (tmp_path / name).write_text("x")
    manifest("app_20260101T000000Z.dump", "app")
    manifest("app_20260102T000000Z.dir", "app")
    manifest("other_20260103T000000Z.sql", "other")
    found = backup_archive.list_backups(str(tmp_path), "app")
    assert [e.name for e in found] == ["app_20260102T000000Z.dir", "app_20260101T000000Z.dump"]
    assert len(backup_archive.list_backups(str(tmp_path))) == 3
    assert [s["path"] for s in backup_archive.scan_backups(str(tmp_path))[1]] == [str(tmp_path / "app_20260104T000000Z.dump")]
    assert backup_archive.list_backups(str(tmp_path / "missing")) == []


@pytest.mark.parametrize("text,version", [
    ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", (15, 18)),
    ("pg_restore (PostgreSQL) 16.4", (16, 4)),
    ("pg_dump (PostgreSQL) 9.6.24", (9, 6)),
    ("psql (PostgreSQL) 17beta1", (17, 0)),
])
def test_parse_tool_version(text, version):
    assert backup_archive.parse_tool_version(text) == version


def test_parse_tool_version_rejects_garbage():
    with pytest.raises(backup_archive.BackupError, match="cannot read a PostgreSQL version"):
        backup_archive.parse_tool_version("bash: pg_dump: command not found")


def test_client_older_than_server_is_refused_with_advice():
    backup_archive.check_client_version("pg_dump", (15, 18), 150004, "this host")
    backup_archive.check_client_version("pg_dump", (16, 1), 150004, "this host")
    with pytest.raises(backup_archive.BackupError) as err:
        backup_archive.check_client_version("pg_dump", (14, 9), 150004, "this host")
    message = str(err.value)
    assert "older than the server (PostgreSQL 15.4)" in message
    assert "postgresql-client-15" in message and "bin_dir" in message and "container" in message


def test_restore_tool_must_read_the_archive():
    backup_archive.check_restore_version((16, 0), (15, 3))
    with pytest.raises(backup_archive.BackupError, match="pg_restore 15.2 is older"):
        backup_archive.check_restore_version((15, 2), (16, 1))


@pytest.mark.parametrize("num,text", [(150018, "15.18"), (90624, "9.6.24"), (160000, "16.0")])
def test_server_version_text(num, text):
    assert backup_archive.server_version_text(num) == text


@pytest.mark.parametrize("kwargs,match", [
    (dict(fmt="tar"), "format must be one of"),
    (dict(fmt="custom", jobs=2), "jobs > 1 needs format: directory"),
    (dict(fmt="custom", jobs=0), "at least 1"),
    (dict(fmt="custom", compress=10), "gzip level from 0 to 9"),
    (dict(fmt="plain", compress=5), "format: plain"),
])
def test_dump_options_bad_input(kwargs, match):
    with pytest.raises(backup_archive.BackupError, match=match):
        backup_archive.DumpOptions(**kwargs).validate()


def test_dump_args_never_carry_secrets_and_use_snapshot():
    opts = backup_archive.DumpOptions(fmt="directory", jobs=2, compress=1, lock_wait_timeout="30s")
    opts.validate()
    args = opts.pg_dump_args("/b/x.dir", "00000003-0000001B-1")
    assert args == ["--format=d", "--no-password", "--file=/b/x.dir", "--compress=1", "--jobs=2",
                    "--snapshot=00000003-0000001B-1", "--lock-wait-timeout=30s"]
    assert backup_archive.restore_jobs("plain", 4) == 1 and backup_archive.restore_jobs("custom", 4) == 4


TOC = """;
; Archive created at 2026-11-26 12:30:05 UTC
;     dbname: app
3350; 0 16390 TABLE DATA public users dbops
3351; 0 16400 TABLE DATA audit events dbops
3353; 0 16410 TABLE DATA public odd "table" name dbops
3354; 0 16420 TABLE DATA my.schema t.1 dbops
3355; 0 16430 TABLE DATA public ownerless
3352; 0 0 SEQUENCE SET public users_id_seq dbops
3199; 2606 16396 CONSTRAINT public users users_pkey dbops
"""


def test_toc_tables_and_problems():
    assert backup_archive.toc_data_entries(TOC)[:2] == ["public users dbops", "audit events dbops"]
    assert backup_archive.toc_problems(TOC, ["public.users", "audit.events", 'public.odd "table" name', "my.schema.t.1",
                                 "public.ownerless"]) == []
    assert backup_archive.toc_problems(TOC, ['public.odd "table"', "public.users_id_seq"]) == [
        'public.odd "table": no TABLE DATA entry in the archive',
        "public.users_id_seq: no TABLE DATA entry in the archive"]
    assert backup_archive.toc_problems(TOC, ["public.users", "public.orders"]) == ["public.orders: no TABLE DATA entry in the archive"]


def test_compare_counts_names_every_difference():
    problems = backup_archive.compare_counts({"a.t": 3, "a.u": 1, "a.v": 2}, {"a.t": 3, "a.u": 0, "a.w": 1})
    assert problems == ["a.u: 1 rows expected, 0 restored", "a.v: missing after restore (expected 2 rows)",
                        "a.w: present after restore but not in the manifest"]


def test_manifest_has_no_password_and_totals():
    opts = backup_archive.DumpOptions()
    manifest = backup_archive.build_manifest(database="app", file_name="app_x.dump", options=opts, server_version_num=150018,
                                 alembic_revision="0004", tables={"public.b": 2, "public.a": 3}, sha256="ab",
                                 size_bytes=10, started=WHEN, finished=WHEN + datetime.timedelta(seconds=2.5),
                                 tools={"pg_dump": "pg_dump (PostgreSQL) 15.18"},
                                 source={"host": "h", "port": 5432, "user": "u"}, snapshot="snap")
    assert list(manifest["tables"]) == ["public.a", "public.b"]
    assert manifest["row_count_total"] == 5 and manifest["duration_s"] == 2.5
    assert manifest["server_version"] == "15.18" and manifest["alembic_revision"] == "0004"
    assert "password" not in json.dumps(manifest).lower()


def test_sha256_of_file_and_directory(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert backup_archive.sha256_path(str(tmp_path / "f")) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 3)
    archive = tmp_path / "d"
    archive.mkdir()
    (archive / "toc.dat").write_bytes(b"abc")
    (archive / "3350.dat.gz").write_bytes(b"")
    digest, size = backup_archive.sha256_path(str(archive))
    assert size == 3
    (archive / "3350.dat.gz").write_bytes(b"x")
    assert backup_archive.sha256_path(str(archive))[0] != digest


def test_detect_format_reads_content_not_names(tmp_path):
    custom = tmp_path / "backup.sql"
    custom.write_bytes(b"PGDMP\x01\x0e\x00")
    assert backup_archive.detect_format(str(custom)) == "custom"
    plain = tmp_path / "backup.dump"
    plain.write_text("--\n-- PostgreSQL database dump\n--\n")
    assert backup_archive.detect_format(str(plain)) == "plain"
    directory = tmp_path / "x"
    directory.mkdir()
    (directory / "toc.dat").write_bytes(b"PGDMP")
    assert backup_archive.detect_format(str(directory)) == "directory"
    gz = tmp_path / "a.gz"
    gz.write_bytes(gzip.compress(b"--\n-- PostgreSQL database dump\n"))
    with pytest.raises(backup_archive.BackupError, match="gzip"):
        backup_archive.detect_format(str(gz))
    junk = tmp_path / "junk"
    junk.write_text("hello")
    with pytest.raises(backup_archive.BackupError, match="neither a pg_dump archive"):
        backup_archive.detect_format(str(junk))


def test_plain_dump_complete(tmp_path):
    path = tmp_path / "d.sql"
    path.write_bytes(b"--\n-- PostgreSQL database dump\n" + b"x" * 10000 + b"\n--\n-- PostgreSQL database dump complete\n--\n")
    assert backup_archive.plain_dump_complete(str(path))
    path.write_bytes(path.read_bytes()[:5000])
    assert not backup_archive.plain_dump_complete(str(path))


def test_ensure_dest_creates_private_folder(tmp_path):
    dest = tmp_path / "a" / "b"
    assert backup_archive.ensure_dest(str(dest), check_mode=True) is True and not dest.exists()
    assert backup_archive.ensure_dest(str(dest)) is True
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700
    assert backup_archive.ensure_dest(str(dest)) is False
    (tmp_path / "file").write_text("x")
    with pytest.raises(backup_archive.BackupError, match="not a directory"):
        backup_archive.ensure_dest(str(tmp_path / "file"))


def test_publish_and_manifest_file(tmp_path):
    staging = backup_archive.make_staging(str(tmp_path))
    assert os.path.basename(staging).startswith(backup_archive.STAGING_PREFIX)
    (open(os.path.join(staging, "app_1.dump"), "wb")).close()
    backup_archive.write_json_file(os.path.join(staging, "app_1.dump.manifest.json"), {"file": "app_1.dump", "sha256": "x"})
    backup_archive.publish(staging, ["app_1.dump", "app_1.dump.manifest.json"], str(tmp_path))
    assert stat.S_IMODE(os.stat(tmp_path / "app_1.dump.manifest.json").st_mode) == 0o600
    dump, manifest = backup_archive.resolve_src(str(tmp_path / "app_1.dump.manifest.json"))
    assert dump == str(tmp_path / "app_1.dump") and manifest.endswith(".manifest.json")
    assert backup_archive.resolve_src(str(tmp_path / "app_1.dump"))[1] == manifest
    with pytest.raises(backup_archive.BackupError, match="does not exist"):
        backup_archive.resolve_src(str(tmp_path / "nope.dump"))
    (tmp_path / "bad.manifest.json").write_text("{not json")
    with pytest.raises(backup_archive.BackupError, match="not valid JSON"):
        backup_archive.read_manifest(str(tmp_path / "bad.manifest.json"))


@pytest.mark.parametrize("err,match", [(28, "is full"), (30, "read-only"), (13, "not writable")])
def test_os_errors_say_what_to_do(err, match):
    assert match in backup_archive.describe_os_error(OSError(err, os.strerror(err)), "/b")


@pytest.mark.parametrize("base", ["trade", "O'Brien \"db\" $(x)=y", "ü" * 60, "'''"])
def test_scratch_names_are_plain_and_fit_postgresql(base):
    from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import scratch_name
    name = scratch_name(base, "verify")
    assert re.fullmatch(r"[a-z0-9_]+_verify_[0-9a-f]{8}", name), name
    assert len(name.encode()) <= 63
    assert scratch_name(base, "verify") != name
