#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_backup
short_description: Verified, atomic PostgreSQL backups with a manifest; restore and retention
version_added: 0.1.0
author: dbops developers (@dbops)
description:
  - Dumps a PostgreSQL database with C(pg_dump) into a dated file under O(dest), atomically
    (temporary name inside O(dest), fsync, rename), with mode C(0600), and writes a JSON manifest
    beside it (C(<dump>.manifest.json)) holding the database, server version, Alembic revision at
    dump time, sha256, size, per-table row counts, duration and tool versions. It never holds a password.
  - Row counts are taken in the dump's own snapshot. The module opens a C(REPEATABLE READ) transaction,
    exports its snapshot with C(pg_export_snapshot), counts every table in it and hands the snapshot
    to C(pg_dump --snapshot), so the counts describe exactly the data in the dump.
  - Verifies the dump (O(verify)). V(list) checks the archive's table of contents with C(pg_restore --list)
    (every counted table has a data entry). V(restore) also restores it into a scratch database and compares
    row counts with the manifest, then drops the scratch database. A failed verification fails the task
    and leaves no dump behind.
  - Restores a dump or its manifest into O(target_db) (O(state=restored)). The restore goes into a new
    database first. It replaces O(target_db) only when the restore succeeded and the row and large object
    counts match the manifest. It refuses a non-empty O(target_db) unless O(force=true). Empty means no user
    objects of any kind (tables, views, sequences, functions, procedures, types, schemas other than
    C(public), large objects, extensions other than C(plpgsql), operators, default privileges, ...); the
    refusal names what it found.
  - A replaced database is never dropped. It is renamed aside to C(<target>_replaced_<UTC timestamp>)
    (RV(replaced_database)), and the result says per table how many rows differ between it and the restored
    one (RV(row_differences), RV(rows_lost)). Drop it later with O(state=absent) and O(drop_replaced).
    The restored database gets the replaced one's owner, database privileges, C(ALTER DATABASE ... SET)
    and C(ALTER ROLE ... IN DATABASE ... SET) settings, connection limit, comment, encoding, locale and
    tablespace. Whether the login role may do all of that is checked before anything changes.
  - Every run restores again. Running the same restore twice is not a no-op, because the database may
    have changed since. The second run needs O(force=true), as the target is no longer empty.
  - Scratch databases and staging folders carry a record of the run that made them (database comment,
    C(owner.json)). A later run on the same host removes those whose process is gone, finishes or undoes a
    restore that died while swapping databases, and reports it in RV(cleaned_up).
  - Prunes O(dest) to the newest O(keep) backups of the database (O(state=absent)); with O(state=present)
    and O(keep), the backup just made is never removed.
  - C(pg_dump) runs on the managed host, optionally as another OS user (O(run_as)), or inside the database
    container (O(container)) when the host has no PostgreSQL client. The client must not be older than the
    server; the module checks it and says what to install when it is.
  - Passwords reach C(pg_dump), C(pg_restore) and C(psql) through the environment (C(PGPASSWORD)),
    never through argv, messages or results.
extends_documentation_fragment:
  - dbops.migrations.postgres
  - dbops.migrations.attributes
options:
  state:
    description:
      - V(present) makes a new backup in O(dest).
      - V(restored) restores O(src) into O(target_db).
      - V(absent) removes all but the newest O(keep) backups of the database from O(dest), and/or drops
        the database O(drop_replaced) that a restore set aside.
      - V(verified) checks an existing backup O(src) against its manifest (V(list) or V(restore) per O(verify)).
    type: str
    choices: [present, restored, absent, verified]
    default: present
  dest:
    description:
      - Folder for backups; created with mode C(0700) when missing. Required for V(present) and V(absent).
      - Backups are named C(<database>_<UTC YYYYmmddTHHMMSSZ>.dir) (directory, the default), C(.dump) (custom) or
        C(.sql) (plain).
    type: path
  src:
    description:
      - Backup to restore or verify. Either the dump (file or directory archive) or its C(.manifest.json).
      - The format is read from the manifest or the archive's own header, never from the file name.
    type: path
  target_db:
    description: Database to restore into (O(state=restored)); created when absent.
    type: str
  force:
    description:
      - Replace a non-empty O(target_db). The old database is renamed aside (never dropped) once the new restore
        succeeded and matched its manifest; see RV(replaced_database).
    type: bool
    default: false
  keep:
    description:
      - Number of newest backups of the database to keep in O(dest). Required with O(dest) for O(state=absent), at least 1.
      - Backups belong to the database their manifest names (exactly), not to the file name, which is a cleaned-up
        form (C(shop eu) and C(shop_eu) share one). Files without a readable manifest are never removed; they are
        listed in RV(skipped).
      - With O(state=present), older backups are pruned after the new one succeeded; the new one always counts as kept.
    type: int
  drop_replaced:
    description:
      - With O(state=absent), drop this database, which a restore set aside (its RV(replaced_database)).
      - Only databases that carry a restore's record are dropped, and only when the database they replaced exists.
    type: str
  version_table:
    description:
      - The Alembic version table whose revision the manifest records (C(alembic_revision)).
      - When the table does not exist the manifest says C(alembic_revision=null) and
        C(alembic_version_table_missing=true). That is not base; tools reading the manifest must not treat it as base.
    type: str
    default: alembic_version
  version_table_schema:
    description: Schema of O(version_table). Default is the search path, then C(public), then any schema holding it.
    type: str
  format:
    description:
      - Archive format. V(directory) (a folder of compressed files, dumped and restored in parallel with
        O(jobs)), V(custom) (one compressed file, dumped by one worker, restored in parallel) or V(plain)
        (SQL for psql, uncompressed).
      - Default V(directory) for O(state=present). On two cores it dumps in 80% of the time of V(custom), because
        C(pg_dump) compresses on one core per worker (see C(bench/backup/REPORT.md)). Choose V(custom) for a single
        file, or for a dump that must not abort when another session asks for an exclusive lock (see O(jobs)).
      - For O(state=restored) the format comes from the manifest or the archive.
    type: str
    choices: [custom, directory, plain]
  jobs:
    description:
      - Parallel workers. For dumps only with O(format=directory) (one table per worker); for restores of custom and
        directory archives, and for the scratch restore of O(verify=restore).
      - Default one per CPU core of the managed host (at most 8) for directory dumps and for restores; 1 for
        custom and plain dumps.
      - A parallel dump aborts when another session asks for an exclusive lock while it runs (for example a migration);
        set O(jobs=1) or O(format=custom) where that must not happen.
    type: int
  compress:
    description:
      - Compression level of custom and directory archives, for O(compress_method) (gzip 0-9, lz4 1-12, zstd 1-22).
      - Default gzip level V(1). On two cores C(pg_dump) is CPU-bound. Its own default
        level (6) took 2.4 times as long for a file 9% smaller (see C(bench/backup/REPORT.md)).
    type: int
  compress_method:
    description:
      - Compression of custom and directory archives. V(gzip) (O(compress) is its level 0-9) works with
        every pg_dump. V(lz4) (levels 1-12) and V(zstd) (levels 1-22) need C(pg_dump) and C(pg_restore) 16 or newer
        (O(bin_dir) or O(container)); the module refuses them with an older client before writing anything.
      - Default V(zstd) at its own level when C(pg_dump) is 16 or newer and neither this nor O(compress) is given
        (gzip when that C(pg_dump) was built without zstd), else V(gzip). Restoring such a backup needs
        C(pg_restore) 16 or newer.
      - zstd at a low level compresses about as well as gzip level 6 in a fraction of the CPU time, which is what
        limits C(pg_dump) on few cores; lz4 is faster still, with larger files.
    type: str
    choices: [gzip, lz4, zstd, none]
  verify:
    description:
      - V(none) skips verification; V(list) checks the table of contents (and the sha256 of an existing backup);
        V(restore) restores into a scratch database and compares per-table row counts with the manifest.
      - The scratch database is named C(<database>_verify_<random>) and always dropped.
    type: str
    choices: [none, list, restore]
    default: list
  lock_wait_timeout:
    description: Passed to C(pg_dump --lock-wait-timeout) (for example V(30s)) so a dump fails instead of waiting forever for its locks.
    type: str
  no_owner:
    description: Restore without ownership and privileges (C(pg_restore --no-owner --no-privileges)), for a target server that lacks the roles.
    type: bool
    default: false
  bin_dir:
    description:
      - Folder holding C(pg_dump), C(pg_restore) and C(psql) (for example C(/usr/lib/postgresql/16/bin)).
        Default is the E(PATH) of the host (or of the container).
    type: path
  run_as:
    description:
      - OS user that runs the client programs on the host (through C(runuser); needs C(become) as root),
        like the guide's C(sudo -u postgres pg_dump). The backup, its manifest and a O(dest) the module creates
        belong to that user (files C(0600), folders C(0700)). Every parent folder of O(dest) must be searchable by it.
      - For peer authentication over the Unix socket use the task's C(become_user) instead, so the module's
        own connection (snapshot, row counts) authenticates as that user too.
    type: str
  container:
    description:
      - Name or id of a running container (normally the database service) in which the client programs run
        through C(docker exec); files move with C(docker cp).
      - Passwords are passed as C(docker exec -e NAME) (the value stays in the environment, not argv).
      - The module's own session (snapshot export, row counts) still connects from the managed host with the
        connection options; the programs in the container use O(container_login_host) and O(container_login_port).
    type: str
  container_login_host:
    description: Host the client programs inside O(container) connect to (V(localhost) for the database's own container).
    type: str
    default: localhost
  container_login_port:
    description: Port the client programs inside O(container) connect to.
    type: int
    default: 5432
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Connects and checks versions, then reports what would be written, restored or removed without writing anything.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows the new backup, the target database change, or the backups that retention removes.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: partial
    details:
      - V(present) makes a new backup on every run (always changed).
      - V(absent) changes nothing when O(dest) already holds at most O(keep) backups.
      - V(restored) restores again on every run (the data may have changed since the last restore); with an existing
        non-empty target that needs O(force=true), and the database it replaces is kept aside.
      - V(verified) is not changed, unless it removed leftovers of an interrupted run.
notes:
  - Keep backups away from the database host's only disk; O(dest) can be any mounted folder.
seealso:
  - name: pg_dump
    description: The PostgreSQL reference for pg_dump.
    link: https://www.postgresql.org/docs/current/app-pgdump.html
'''

EXAMPLES = r'''
- name: Verified backup before a high-risk migration, keep the last 7
  dbops.migrations.pg_backup:
    db_url: "{{ database_url }}"
    dest: /var/backups/postgresql
    verify: restore
    keep: 7
  register: backup

- name: Dump inside the database container (no client on the host); the module connects through 127.0.0.1:5433
  dbops.migrations.pg_backup:
    container: auto_trader-db-1
    login_host: 127.0.0.1
    login_port: 5433
    login_user: app
    login_password: "{{ db_password }}"
    login_db: auto_trader_prod
    dest: /var/backups/postgresql

- name: Parallel directory dump as the postgres OS user
  become: true
  dbops.migrations.pg_backup:
    run_as: postgres
    login_host: 127.0.0.1
    login_user: app
    login_password: "{{ db_password }}"
    login_db: auto_trader_prod
    dest: /var/backups/postgresql
    format: directory
    jobs: 2

- name: Restore the backup into a fresh database
  dbops.migrations.pg_backup:
    state: restored
    db_url: "{{ admin_url }}"
    src: "{{ backup.manifest_path }}"
    target_db: auto_trader_restored
    jobs: 2

- name: Check an existing backup by restoring it into a scratch database
  dbops.migrations.pg_backup:
    state: verified
    db_url: "{{ admin_url }}"
    src: /var/backups/postgresql/auto_trader_prod_20260101T020000Z.dump.manifest.json
    verify: restore

- name: Keep only the newest 14 backups
  dbops.migrations.pg_backup:
    state: absent
    dest: /var/backups/postgresql
    login_db: auto_trader_prod
    keep: 14

- name: Drop the database a restore set aside, once the restored one is known to be good
  dbops.migrations.pg_backup:
    state: absent
    db_url: "{{ admin_url }}"
    drop_replaced: "{{ restore_result.replaced_database }}"
  when: restore_result.replaced_database
'''

RETURN = r'''
path:
  description: The backup file (or directory archive) written, restored or verified.
  returned: when state is present, restored or verified
  type: str
  sample: /var/backups/postgresql/auto_trader_prod_20261126T120000Z.dump
manifest_path:
  description: The JSON manifest beside the backup.
  returned: when state is present, restored or verified
  type: str
  sample: /var/backups/postgresql/auto_trader_prod_20261126T120000Z.dump.manifest.json
manifest:
  description:
    - The manifest content. Keys include C(database), C(server_version), C(alembic_revision),
      C(alembic_version_table), C(alembic_version_table_missing), C(large_objects), C(file),
      C(format), C(compress), C(sha256), C(size_bytes), C(tables) (row counts per C(schema.table)),
      C(row_count_total), C(started_at), C(duration_s), C(tools) and C(verification). Never a password.
  returned: when state is present, restored or verified
  type: dict
  sample: {"database": "auto_trader_prod", "server_version": "15.18", "alembic_revision": "0004",
           "tables": {"public.orders": 120000, "public.users": 5000}, "format": "custom"}
size_bytes:
  description: Size of the backup in bytes (sum of files for a directory archive).
  returned: when state is present, restored or verified
  type: int
  sample: 340123456
sha256:
  description: sha256 of the dump file; for a directory archive, of its sorted C(sha256  name) lines.
  returned: when state is present, restored or verified
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
duration_s:
  description: Seconds the whole operation took (dump, checksums and verification; or the restore).
  returned: always
  type: float
  sample: 12.4
verified:
  description: True when the requested verification ran and passed (for a restore, when row counts matched the manifest).
  returned: when state is present, restored or verified
  type: bool
  sample: true
verification:
  description: What was checked (C(mode), C(checks), C(scratch_db), C(restored_rows), C(duration_s)).
  returned: when state is present or verified
  type: dict
  sample: {"mode": "restore", "verified": true, "checks": ["toc", "restore"], "restored_rows": 125000}
target_db:
  description: The database restored into.
  returned: when state is restored
  type: str
  sample: auto_trader_restored
restored_tables:
  description: Row counts per table in the restored database.
  returned: when state is restored and something was restored
  type: dict
  sample: {"public.users": 5000}
timings:
  description:
    - Seconds spent in the checks before the restore, in C(pg_restore) or C(psql), and in counting rows.
    - C(count_overlapped) is true when the rows were counted while C(pg_restore) built indexes and constraints
      (C(count_s) is then part of C(pg_restore_s), not added to it).
  returned: when state is restored and something was restored
  type: dict
  sample: {"checks_s": 0.6, "pg_restore_s": 11.2, "count_s": 1.1, "count_overlapped": true}
removed:
  description: Backups removed by retention (their manifests went with them).
  returned: when state is present or absent
  type: list
  elements: str
  sample: [/var/backups/postgresql/auto_trader_prod_20261101T020000Z.dump]
replaced_database:
  description:
    - The database the restore replaced, renamed aside instead of dropped (null when the target did not exist or was empty).
    - Drop it with O(state=absent) and O(drop_replaced) when it is no longer needed.
  returned: when state is restored
  type: str
  sample: auto_trader_prod_replaced_20261126t120000z
row_differences:
  description:
    - Tables whose row count differs between the replaced database and the restored one
      (C(replaced), C(restored), C(difference)); C(null) counts mean the table exists on one side only.
  returned: when state is restored and a non-empty database was replaced
  type: dict
  sample: {"public.orders": {"replaced": 1210, "restored": 1200, "difference": -10}}
rows_lost:
  description: Per table, how many more rows the replaced database held than the restored one (only tables that lost rows).
  returned: when state is restored and a non-empty database was replaced
  type: dict
  sample: {"public.orders": 10}
rows_lost_total:
  description: Sum of RV(rows_lost).
  returned: when state is restored and a non-empty database was replaced
  type: int
  sample: 10
restored_large_objects:
  description: Number of large objects in the restored database.
  returned: when state is restored and something was restored
  type: int
  sample: 0
dropped:
  description: The database O(drop_replaced) dropped (null when it did not exist).
  returned: when drop_replaced is given
  type: str
  sample: auto_trader_prod_replaced_20261126t120000z
cleaned_up:
  description:
    - Leftovers of interrupted runs on this host that this run removed or settled (scratch databases, staging
      folders, a restore that died while swapping databases). In check mode, what it would do.
  returned: always
  type: list
  elements: str
  sample: ["scratch database app_verify_1a2b3c4d of pid 4242 on ctl1 (started 2026-11-26T12:00:00+00:00)"]
leftovers:
  description: Leftovers found but not removed, with the reason (another host's, or without an owner record).
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/var/backups/postgresql/.pg_backup-x1y2", "reason": "no owner record; remove it by hand when no backup runs"}]
skipped:
  description: Backup files retention did not touch because their manifest is missing or unreadable (C(path), C(reason)).
  returned: when state is present with keep, or absent with dest
  type: list
  elements: dict
  sample: [{"path": "/var/backups/postgresql/app_20261101T020000Z.dump", "reason": "no manifest beside it"}]
kept:
  description: Backups kept by retention, newest first.
  returned: when state is absent
  type: list
  elements: str
  sample: [/var/backups/postgresql/auto_trader_prod_20261126T020000Z.dump]
'''

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dbops.migrations.plugins.module_utils.backup.archive import BackupError, DumpOptions
from ansible_collections.dbops.migrations.plugins.module_utils.pg import (
    CONNECTION_MUTUALLY_EXCLUSIVE, ConnectionOptionsError, HAS_PSYCOPG2, PSYCOPG2_IMPORT_ERROR,
    connection_argument_spec, conninfo_from_params, mask_secrets)

try:
    from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import Backup, Executor
except ImportError:  # pragma: no cover - psycopg2 missing is reported below
    Backup = Executor = None


def _runner(module: AnsibleModule):
    def run(argv, env):
        # umask 077: nothing a client program writes is ever readable by others
        return module.run_command(argv, environ_update=env, umask=0o077, check_rc=False)
    return run


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        state=dict(type="str", default="present", choices=["present", "restored", "absent", "verified"]),
        dest=dict(type="path"),
        src=dict(type="path"),
        target_db=dict(type="str"),
        force=dict(type="bool", default=False),
        keep=dict(type="int"),
        drop_replaced=dict(type="str"),
        format=dict(type="str", choices=["custom", "directory", "plain"]),
        jobs=dict(type="int"),
        compress=dict(type="int"),
        compress_method=dict(type="str", choices=["gzip", "lz4", "zstd", "none"]),
        verify=dict(type="str", default="list", choices=["none", "list", "restore"]),
        lock_wait_timeout=dict(type="str"),
        no_owner=dict(type="bool", default=False),
        version_table=dict(type="str", default="alembic_version"),
        version_table_schema=dict(type="str"),
        bin_dir=dict(type="path"),
        run_as=dict(type="str"),
        container=dict(type="str"),
        container_login_host=dict(type="str", default="localhost"),
        container_login_port=dict(type="int", default=5432),
    )
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=CONNECTION_MUTUALLY_EXCLUSIVE + [["run_as", "container"]],
        required_if=[("state", "present", ["dest"]), ("state", "restored", ["src", "target_db"]),
                     ("state", "verified", ["src"])],
        supports_check_mode=True,
    )
    params = module.params
    state = params["state"]
    secret = params.get("login_password")
    if state == "absent" and (bool(params["dest"]) != (params["keep"] is not None) or not (params["drop_replaced"] or params["dest"])):
        module.fail_json(msg="state=absent needs dest and keep together (retention), and/or drop_replaced (a database a "
                             "restore set aside); nothing was changed")
    if params["drop_replaced"] and state != "absent":
        module.fail_json(msg="drop_replaced works with state=absent only; nothing was changed")
    try:
        info = None
        if state != "absent" or params.get("db_url") or params.get("login_db") or params["drop_replaced"]:
            info = conninfo_from_params(params)
        if state == "absent":
            result = _absent(module, info)
        else:
            if not HAS_PSYCOPG2 or Backup is None:
                module.fail_json(msg=missing_required_lib("psycopg2"), exception=str(PSYCOPG2_IMPORT_ERROR))
            secret = info.password
            backup = _backup(module, info)
            if state == "present":
                # options left out (None) get the defaults for this host's pg_dump and cores
                options = DumpOptions(fmt=params["format"], jobs=params["jobs"], compress=params["compress"],
                                      lock_wait_timeout=params["lock_wait_timeout"],
                                      compress_method=params["compress_method"])
                result = backup.create(params["dest"], options, params["verify"], params["keep"])
            elif state == "restored":
                result = backup.restore(params["src"], params["target_db"], params["force"], params["jobs"],
                                        params["format"], params["no_owner"])
            else:
                result = backup.verify_existing(params["src"], params["verify"])
    except (BackupError, ConnectionOptionsError) as exc:
        module.fail_json(msg=mask_secrets(str(exc), secret))
    except Exception as exc:  # an unexpected error still must not leak the password
        module.fail_json(msg="pg_backup failed unexpectedly: %s" % mask_secrets(str(exc), secret),
                         exception=mask_secrets(traceback.format_exc(), secret))
    diff = result.pop("diff", None)
    if module._diff and diff:
        result["diff"] = diff
    module.exit_json(**result)


def _backup(module: AnsibleModule, info):
    params = module.params
    executor = Executor(runner=_runner(module), bin_dir=params["bin_dir"], run_as=params["run_as"],
                        container=params["container"], container_host=params["container_login_host"],
                        container_port=params["container_login_port"],
                        docker_bin=module.get_bin_path("docker", required=bool(params["container"])) or "docker",
                        which=module.get_bin_path)
    return Backup(info=info, executor=executor, check_mode=module.check_mode,
                  version_table=params["version_table"], version_table_schema=params["version_table_schema"])


def _absent(module: AnsibleModule, info):
    """Retention in dest, and/or dropping a database a restore set aside."""
    params = module.params
    result = {"changed": False, "removed": [], "kept": [], "skipped": [], "cleaned_up": [], "leftovers": [],
              "duration_s": 0.0}
    if params["drop_replaced"]:
        if not HAS_PSYCOPG2 or Backup is None:
            module.fail_json(msg=missing_required_lib("psycopg2"), exception=str(PSYCOPG2_IMPORT_ERROR))
        result.update(_backup(module, info).drop_replaced(params["drop_replaced"]))
    if params["dest"]:
        pruned = _prune(module, info)
        changed = result["changed"] or pruned.pop("changed")
        housekeeping = {key: result[key] + pruned.pop(key, []) for key in ("cleaned_up", "leftovers")}
        result.update(pruned, changed=changed, **housekeeping)
    return result


def _prune(module: AnsibleModule, info):
    from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import Backup as _Backup
    params = module.params
    if params["keep"] < 1:
        module.fail_json(msg="keep must be at least 1 (got %d): retention never removes every backup; "
                             "delete the folder by hand if that is what you mean" % params["keep"])
    dest = os.path.abspath(params["dest"])
    if not os.path.isdir(dest):
        module.fail_json(msg="dest %s is not a folder; nothing to prune" % dest)
    database = info.dbname if info else None
    pruner = _Backup(info=info, executor=None, check_mode=module.check_mode)
    pruner.clean_staging(dest)
    result = pruner.prune(dest, params["keep"], database=database)
    result.update(pruner.housekeeping())
    result["changed"] = result["changed"] or bool(pruner.cleaned_up)
    return result


if __name__ == "__main__":
    main()
