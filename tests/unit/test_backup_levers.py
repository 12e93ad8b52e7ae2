"""Defaults chosen from the host (format, jobs, compression by pg_dump version) and the restore plan."""
from __future__ import annotations

import os

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backup_archive

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("cpus, jobs", [(0, 1), (1, 1), (2, 2), (8, 8), (64, 8)])
def test_auto_jobs_is_one_per_core_within_bounds(cpus, jobs):
    assert backup_archive.auto_jobs(cpus) == jobs


def test_usable_cpus_is_at_least_one():
    assert backup_archive.usable_cpus() >= 1


@pytest.mark.parametrize("given, client, cpus, expected", [
    ({}, (15, 18), 2, ("directory", 2, 1, "gzip")),
    ({}, (15, 18), 1, ("directory", 1, 1, "gzip")),
    ({}, (16, 4), 4, ("directory", 4, None, "zstd")),
    ({}, (17, 0), 2, ("directory", 2, None, "zstd")),
    (dict(fmt="custom"), (15, 18), 4, ("custom", 1, 1, "gzip")),
    (dict(fmt="custom"), (16, 0), 4, ("custom", 1, None, "zstd")),
    (dict(fmt="plain"), (16, 0), 4, ("plain", 1, None, None)),
    (dict(compress=6), (16, 0), 2, ("directory", 2, 6, "gzip")),        # a level alone means gzip
    (dict(compress_method="lz4"), (16, 0), 2, ("directory", 2, None, "lz4")),
    (dict(jobs=3, compress=0), (15, 18), 2, ("directory", 3, 0, "gzip")),
])
def test_default_dump_options(given, client, cpus, expected):
    options = backup_archive.default_dump_options(
        fmt=given.get("fmt"), jobs=given.get("jobs"), compress=given.get("compress"),
        compress_method=given.get("compress_method"), client=client, cpus=cpus)
    assert (options.fmt, options.jobs, options.compress, options.compress_method) == expected
    options.validate()
    options.check_client(client, "here")


def test_default_zstd_is_written_as_pg_dump_16_wants_it():
    options = backup_archive.default_dump_options(fmt=None, jobs=None, compress=None, compress_method=None,
                                                  client=(16, 2), cpus=2)
    args = options.pg_dump_args("/b/x.dir", "00000003-1")
    assert "--compress=zstd" in args and "--format=d" in args and "--jobs=2" in args


@pytest.mark.parametrize("stderr, unsupported", [
    ('pg_dump: error: invalid compression specification: this build does not support compression with ZSTD', True),
    ("pg_dump: error: connection to server failed", False),
    ("", False),
])
def test_unsupported_compression_is_recognised(stderr, unsupported):
    assert backup_archive.unsupported_compression(stderr) is unsupported


def test_restore_pgoptions_keep_the_callers_options_first():
    assert backup_archive.restore_pgoptions(None) == "-c maintenance_work_mem=256MB -c synchronous_commit=off"
    assert backup_archive.restore_pgoptions("-c search_path=app", (("work_mem", "64MB"),)) == \
        "-c search_path=app -c work_mem=64MB"
    assert backup_archive.restore_pgoptions("", ()) == ""


def test_restore_phases_split_sections_and_share_the_options():
    phases = backup_archive.pg_restore_phases("/d/a.dump", "dbname='x'", jobs=2, no_owner=True)
    common = ["--exit-on-error", "--no-password", "--dbname=dbname='x'", "--no-owner", "--no-privileges", "--jobs=2"]
    assert phases == [common + ["--section=pre-data", "--section=data", "/d/a.dump"],
                      common + ["--section=post-data", "/d/a.dump"]]
    assert "--single-transaction" not in sum(phases, [])


def test_restore_in_one_run_and_without_jobs():
    assert backup_archive.pg_restore_phases("/d/a.dump", "dbname=x", jobs=1, no_owner=False, split=False) == [
        ["--exit-on-error", "--no-password", "--dbname=dbname=x", "/d/a.dump"]]


@pytest.mark.parametrize("threads", [1, 3])
def test_sha256_and_sync_equals_sha256_path(tmp_path, threads):
    archive = tmp_path / "a.dir"
    archive.mkdir()
    for index, size in enumerate((0, 10, 5 * 1024 * 1024 + 7, 1234)):
        (archive / ("%d.dat.gz" % index)).write_bytes(os.urandom(size))
    (archive / "toc.dat").write_bytes(b"PGDMP toc")
    assert backup_archive.sha256_and_sync(str(archive), threads) == backup_archive.sha256_path(str(archive))
    single = tmp_path / "a.dump"
    single.write_bytes(os.urandom(3 * 1024 * 1024))
    assert backup_archive.sha256_and_sync(str(single), threads) == backup_archive.sha256_path(str(single))
