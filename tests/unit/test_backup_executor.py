"""Where client programs run: argv shapes (no secrets in argv), host, run_as and container."""
from __future__ import annotations

import os

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backup_archive
from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import Executor

SECRET = "s3cr3t-value"
ENV = {"PGHOST": "db", "PGPASSWORD": SECRET, "PGUSER": "app"}


def recorder(calls, rc=0, out="", err=""):
    def run(argv, env):
        calls.append((argv, env))
        return rc, out, err
    return run


def test_container_passes_env_names_only():
    calls = []
    ex = Executor(runner=recorder(calls), container="app-db-1", docker_bin="/usr/bin/docker")
    argv = ex.argv("pg_dump", ["--format=c"], ENV)
    assert argv == ["/usr/bin/docker", "exec", "-e", "PGHOST", "-e", "PGPASSWORD", "-e", "PGUSER",
                    "app-db-1", "pg_dump", "--format=c"]
    assert SECRET not in " ".join(argv)
    ex.run("pg_dump", [], ENV)
    assert calls[0][1]["PGPASSWORD"] == SECRET  # the value travels in docker's environment
    assert ex.where() == "container app-db-1"


def test_host_program_lookup_and_missing_client():
    ex = Executor(runner=recorder([]), which=lambda name: "/usr/bin/" + name)
    assert ex.argv("pg_restore", ["--list", "x"], ENV) == ["/usr/bin/pg_restore", "--list", "x"]
    missing = Executor(runner=recorder([]), which=lambda name: None)
    with pytest.raises(backup_archive.BackupError, match="not installed on this host.*container"):
        missing.argv("pg_dump", [], ENV)
    with pytest.raises(backup_archive.BackupError, match="not found in bin_dir"):
        Executor(runner=recorder([]), bin_dir="/nonexistent").argv("pg_dump", [], ENV)


def test_run_as_goes_through_runuser():
    ex = Executor(runner=recorder([]), run_as="postgres", which=lambda name: "/usr/bin/" + name)
    if os.geteuid() == 0:
        assert ex.argv("pg_dump", ["-w"], ENV) == ["runuser", "-u", "postgres", "--", "/usr/bin/pg_dump", "-w"]
    else:
        with pytest.raises(backup_archive.BackupError, match="needs root"):
            ex.argv("pg_dump", ["-w"], ENV)


def test_version_parsing_and_failure():
    ex = Executor(runner=recorder([], out="pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
                  which=lambda name: "/usr/bin/" + name)
    assert ex.version("pg_dump") == ((15, 18), "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)")
    broken = Executor(runner=recorder([], rc=127, err="exec failed"), which=lambda name: "/usr/bin/" + name)
    with pytest.raises(backup_archive.BackupError, match="--version failed"):
        broken.version("pg_dump")
