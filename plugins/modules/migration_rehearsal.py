#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
---
module: migration_rehearsal
short_description: Rehearse pending migrations on a restored copy of the data and measure them
version_added: 0.1.0
author: dbops developers (@dbops)
description:
  - Restores the newest verified M(dbops.migrations.pg_backup) archive of O(login_db) (no older than
    O(max_archive_age_hours)), or O(archive), into a scratch database C(dbops_rehearsal_<db>_<random>) on the
    same server, or with O(scratch_container) on a throw-away PostgreSQL container, runs C(VACUUM (ANALYZE))
    there, and migrates it to O(target) with the runner of M(dbops.migrations.alembic_migrate) (same
    O(lock_timeout), O(retries), one revision per Alembic invocation), its E(DATABASE_URL) pointing at the
    scratch database.
  - Per revision it records the wall time, the strong locks (C(SHARE) and stronger, which block writes) the
    migration held and for how long (C(pg_locks) sampled every O(sample_interval_ms)), the statements that ran,
    the tables rewritten (C(relfilenode) before and after) and indexes rebuilt, the WAL written
    (C(pg_current_wal_lsn) before and after; on a shared server it includes the other databases' WAL), and the
    size change of every table and its indexes.
  - It runs M(dbops.migrations.migration_risk) on the same revisions against the restored copy, before migrating,
    and puts the measured lock time beside C(estimated_lock_seconds) per revision and per table
    (RV(calibration)); rows where one is more than O(factor) times the other are its C(disagreements).
  - The scratch database (or container) is always removed, also on failure, SIGINT, SIGTERM and when
    C(ansible-playbook) dies. A run killed with C(kill -9) leaves it behind; every run first removes the scratch
    databases (or containers) of runs on this host that are gone (RV(cleaned_up)) and reports those of other
    hosts (RV(leftovers)).
  - Restoring on the production server costs disk (the database's size again), CPU, I/O and WAL, so it runs
    only with O(allow_production_server=true). With O(scratch_container) the module never connects to the server
    of the connection options; the load is the container's, on the host where the module runs.
  - RV(scratch) says where the rehearsal ran; the record says it too, and so does RV(summary) for a container.
  - With O(record_dir) it writes a rehearsal record (C(<id>.json) and C(last.json)), which the release gate of
    C(playbooks/deploy.yml) reads with O(state=checked).
  - O(state=checked) is read-only; it looks in O(record_dir) for a passing rehearsal of exactly O(revisions) no
    older than O(max_age_days).
extends_documentation_fragment:
  - dbops.migrations.postgres
  - dbops.migrations.attributes
options:
  state:
    description:
      - V(rehearsed) runs a rehearsal.
      - V(checked) only reads the records in O(record_dir) and reports RV(passed) and RV(reason).
    type: str
    choices: [rehearsed, checked]
    default: rehearsed
  archive:
    description: A pg_backup dump or its C(.manifest.json) to restore; its manifest must say it was verified.
    type: path
  backup_dir:
    description: The folder of pg_backup's O(dbops.migrations.pg_backup#module:dest); the newest fit archive is used.
    type: path
  max_archive_age_hours:
    description: The oldest archive of O(backup_dir) the rehearsal accepts.
    type: float
    default: 24
  allow_production_server:
    description:
      - Restore and migrate the copy on the server of the connection options. Required without
        O(scratch_container); without either the module fails before anything changes.
      - Not needed, and ignored, with O(scratch_container).
    type: bool
    default: false
  scratch_container:
    description:
      - Rehearse on a throw-away PostgreSQL container on the host where the module runs (its Docker engine)
        instead of the server of the connection options, which is then never connected to. The connection options
        only name the database (whose archives O(backup_dir) holds, and which the record names); with O(archive)
        they may be left out, and the database is the one the archive's manifest names.
      - The container is started detached with a random password in its environment (never in argv, results or
        logs), the labels C(dbops.migrations.rehearsal=1) and the owner record of this run, port 5432 published on
        a random port of 127.0.0.1, and a superuser named like O(login_user) (C(postgres) without one). It must run
        the same PostgreSQL major version as the server the archive was taken from, otherwise the module refuses.
      - The archive is restored with C(pg_restore) of this host (O(bin_dir)) through the published port.
      - The container is removed with its anonymous volumes at the end, also on failure, SIGINT, SIGTERM and when
        C(ansible-playbook) dies; the containers of runs of this host killed with C(kill -9) are removed by the
        next run.
      - Roles other than the superuser do not exist in the container; a migration that grants to them fails there.
    type: dict
    suboptions:
      image:
        description:
          - A PostgreSQL image whose entrypoint honours E(POSTGRES_USER) and E(POSTGRES_PASSWORD) like the official
            C(postgres) image (C(dbops/postgres:15) of C(make images) does), ideally the release's database image.
          - Pulled first when it is not on the host.
        type: str
        required: true
      network:
        description:
          - A user-defined Docker network the container joins under an alias (its name), so that the migration
            container of O(executor=compose) reaches it; then Alembic connects to that alias on port 5432 and
            O(executor_login_host) and O(executor_login_port) are ignored. Required with O(executor=compose),
            usually the compose project's C(<project>_default).
        type: str
      start_timeout:
        description: Seconds the container has to accept connections (the image's first start runs C(initdb)).
        type: float
        default: 120
  config:
    description:
      - The project's C(alembic.ini); with O(executor=local) on this host, with O(executor=compose) inside the image.
    type: path
  target:
    description: The Alembic target to rehearse.
    type: str
    default: head
  executor:
    description: Where Alembic runs, as in M(dbops.migrations.alembic_migrate).
    type: str
    choices: [local, compose]
    default: local
  alembic_bin:
    description: The C(alembic) executable for O(executor=local); default C(alembic) on E(PATH) or beside this Python.
    type: path
  python:
    description: The Python of the python launcher (see M(dbops.migrations.alembic_migrate)).
    type: str
  lock_timeout:
    description: As in M(dbops.migrations.alembic_migrate); rehearse with the release's value.
    type: raw
    default: 500ms
  statement_timeout:
    description: As in M(dbops.migrations.alembic_migrate).
    type: raw
  retries:
    description: As in M(dbops.migrations.alembic_migrate).
    type: int
    default: 5
  retry_delay:
    description: As in M(dbops.migrations.alembic_migrate).
    type: float
    default: 2
  version_table:
    description: Alembic's version table.
    type: str
    default: alembic_version
  version_table_schema:
    description: The schema of O(version_table).
    type: str
  db_url_var:
    description: The environment variable the project's C(env.py) reads the database URL from.
    type: str
    default: DATABASE_URL
  db_url_scheme:
    description: The scheme of that URL (V(postgresql+psycopg2) for psycopg2 with SQLAlchemy 2).
    type: str
    default: postgresql
  env:
    description: More environment variables for Alembic (and compose interpolation).
    type: dict
    default: {}
  project_src:
    description: The compose project directory (O(executor=compose)).
    type: path
  compose_files:
    description: Compose files (O(executor=compose)).
    type: list
    elements: path
    default: []
  compose_service:
    description: The one-off service that runs Alembic in the release image.
    type: str
    default: migration
  compose_profiles:
    description: Profiles that enable O(compose_service).
    type: list
    elements: str
    default: [migration]
  compose_project_name:
    description: The compose project name.
    type: str
  compose_command:
    description: V(auto), V(plugin) (C(docker compose)) or V(standalone) (C(docker-compose) v1).
    type: str
    choices: [auto, plugin, standalone]
    default: auto
  executor_login_host:
    description:
      - How Alembic in the container reaches the server (O(executor=compose)), e.g. V(db).
      - Ignored with O(scratch_container) (its O(scratch_container.network) alias is used).
    type: str
  executor_login_port:
    description: The server's port as the container sees it (ignored with O(scratch_container)).
    type: int
  sample_interval_ms:
    description: How often the migration's locks and statements are sampled; lock times are accurate to about this.
    type: int
    default: 50
  load_rate:
    description:
      - Queries per second of a light synthetic load on each table migration_risk names for the pending revisions,
        on the copy, while the migration runs; V(0) runs none.
      - Each table gets one session that alternates a one-row read and a one-row write that changes nothing, so
        its queries queue behind the migration's locks as the application's would (and hold it up as they would).
        Every query's latency is reported per revision in RV(measurements) (C(load)).
      - Needs O(estimate=true) (the tables come from migration_risk). At most V(200).
    type: float
    default: 0
  factor:
    description: A measured and an estimated lock time disagree when one is more than this many times the other.
    type: float
    default: 3
  min_seconds:
    description: Lock times below this (both measured and estimated) always agree.
    type: float
    default: 1
  estimate:
    description: Run migration_risk on the same revisions for the calibration.
    type: bool
    default: true
  vacuum_analyze:
    description: C(VACUUM (ANALYZE)) the restored copy first (hint bits and statistics, as a live database has).
    type: bool
    default: true
  jobs:
    description: Parallel jobs of C(pg_restore).
    type: int
    default: 1
  bin_dir:
    description: Folder of the PostgreSQL client programs (C(pg_restore)) when they are not on E(PATH).
    type: path
  record_dir:
    description: Folder of the rehearsal records (written by O(state=rehearsed), read by O(state=checked)).
    type: path
  label:
    description: A name for the rehearsal in its record, e.g. the release.
    type: str
  revisions:
    description: O(state=checked) - the revisions the release will apply.
    type: list
    elements: str
    default: []
  max_age_days:
    description: O(state=checked) - the oldest record that counts.
    type: float
    default: 7
attributes:
  check_mode:
    support: full
    details: Says which archive it would restore into which scratch database (and where); drops, removes, starts
      and restores nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run rehearses again (the data may have changed); the only lasting change is the record.
requirements:
  - psycopg2
  - The PostgreSQL client programs (C(pg_restore)) where the module runs.
  - With O(scratch_container), the Docker SDK for Python (C(pip install docker)) and a Docker engine where the
    module runs.
seealso:
  - module: dbops.migrations.migration_risk
  - module: dbops.migrations.alembic_migrate
  - module: dbops.migrations.pg_backup
'''

EXAMPLES = r'''
- name: Rehearse the pending migrations on last night's backup
  dbops.migrations.migration_rehearsal:
    login_host: db.example.com
    login_user: app
    login_password: "{{ vault_db_password }}"
    login_db: auto_trader_prod
    backup_dir: /var/backups/postgres
    allow_production_server: true
    config: /srv/auto_trader/alembic.ini
    lock_timeout: 500ms
    record_dir: /var/lib/dbops/reports/rehearsals
  register: rehearsal

- name: Rehearse on a throw-away container of the release's database image; production is not touched
  dbops.migrations.migration_rehearsal:
    login_db: auto_trader_prod
    backup_dir: /var/backups/postgres
    scratch_container:
      image: postgres:15
    config: /srv/auto_trader/alembic.ini
    record_dir: /var/lib/dbops/reports/rehearsals
  register: rehearsal

- name: The same with the compose executor (Alembic runs in the release image, on the project's network)
  dbops.migrations.migration_rehearsal:
    archive: /var/backups/postgres/auto_trader_prod_20261209T020000Z.dir.manifest.json
    scratch_container:
      image: postgres:15
      network: auto_trader_default
    executor: compose
    project_src: /srv/auto_trader
    config: alembic.ini
    record_dir: /var/lib/dbops/reports/rehearsals

- name: Is there a passing rehearsal of what the release applies?
  dbops.migrations.migration_rehearsal:
    state: checked
    record_dir: /var/lib/dbops/reports/rehearsals
    revisions: [a1b2c3d4e5f6]
    max_age_days: 7
  register: rehearsed
'''

RETURN = r'''
passed:
  description: The migration applied every pending revision on the copy (O(state=checked) - a fitting record exists).
  returned: always
  type: bool
reason:
  description: O(state=checked) - why no record fits.
  returned: when state is checked
  type: str
record:
  description: The rehearsal record (written to O(record_dir) when given; with O(state=checked) the record found).
  returned: success
  type: dict
record_path:
  description: Where the record was written.
  returned: when record_dir is given
  type: str
summary:
  description: The rehearsal's numbers in one line (for approval messages).
  returned: success
  type: str
archive:
  description: The manifest of the archive restored.
  returned: when state is rehearsed
  type: str
archive_finished_at:
  description: When that archive was taken.
  returned: when state is rehearsed
  type: str
archives_passed_over:
  description: Newer archives of O(backup_dir) that were not used, with the reason (unverified, too old).
  returned: when state is rehearsed
  type: list
  elements: dict
scratch_db:
  description: The scratch database (dropped at the end; in check mode the name it would have).
  returned: when state is rehearsed
  type: str
scratch_dropped:
  description:
    - Whether the scratch database was dropped (false only when the server refused; see warnings).
    - With O(scratch_container), whether its container was removed.
  returned: when a scratch database was made
  type: bool
scratch:
  description:
    - Where the rehearsal ran (also in the record, as C(kind), C(image), C(server), C(server_version)).
    - C(kind) V(database) (a scratch database on C(server), C(host:port)) or V(container); for a container
      C(image), C(container) (its name), C(network), C(alias), C(server_version) and C(removed).
    - C(server_version) is the PostgreSQL version that ran the migration (null in check mode with a container).
  returned: when state is rehearsed
  type: dict
  sample: {kind: container, image: "postgres:15", container: dbops-rehearsal-shop-1a2b3c4d, network: null,
           alias: null, server_version: "15.8", removed: true}
revisions:
  description: The revisions the rehearsal applied (or planned to).
  returned: when state is rehearsed
  type: list
  elements: str
measurements:
  description:
    - Per revision - C(revision), C(applied), C(duration_s) (wall), C(lock_s) (time any strong lock was held),
      C(table_lock_s) ({table - seconds}), C(locks) (C(table), C(lock), C(blocks), C(held_s), C(taken_by)),
      C(statements) (C(statement), C(duration_s) for statements seen running), C(rewritten_tables),
      C(rebuilt_indexes), C(created), C(dropped), C(size_changes) (per table bytes before, after and the change,
      for the table and its indexes), C(wal_bytes), C(samples), C(estimate) (migration_risk's C(risk),
      C(estimated_lock_s), C(table_estimates), C(findings)).
    - With O(load_rate), C(load) per table - C(queries), C(errors), C(median_s), C(max_s) (the longest a query of
      the synthetic load waited) and C(slow) (queries that took a second or more).
  returned: when state is rehearsed
  type: list
  elements: dict
calibration:
  description:
    - C(rows) (per revision, C(table) null, and per table - C(measured_lock_s), C(estimated_lock_s), C(ratio),
      C(verdict) ok | underestimated | overestimated | unknown), C(disagreements) (the rows beyond O(factor)),
      C(notes) (one line per disagreement), C(agrees), C(factor), C(min_seconds).
  returned: when state is rehearsed and something ran
  type: dict
migration:
  description: The runner's result on the copy (C(applied), C(attempts), C(duration_s), C(failure)).
  returned: when the migration ran
  type: dict
failure:
  description: Why the migration failed on the copy.
  returned: when passed is false
  type: str
load:
  description: With O(load_rate) - C(rate_per_table), C(tables) (the tables that got load) and C(not_there_yet)
    (tables named by migration_risk that the copy does not have before the migration, e.g. created by it).
  returned: when load_rate is above 0 and the migration ran
  type: dict
restore:
  description: C(duration_s) and C(rows) of the restore.
  returned: when the restore ran
  type: dict
cleaned_up:
  description:
    - Scratch databases of dead runs that were dropped (in check mode - would be).
    - With O(scratch_container), the scratch containers of dead runs that were removed (C(container NAME (why))).
  returned: when state is rehearsed
  type: list
  elements: str
leftovers:
  description:
    - Scratch databases of runs on other hosts, left alone (C(database), C(reason)).
    - With O(scratch_container), the labelled containers of runs on other hosts or without an owner record
      (C(container), C(reason)).
  returned: when state is rehearsed
  type: list
  elements: dict
duration_s:
  description: Seconds for the whole rehearsal.
  returned: when state is rehearsed and not check mode
  type: float
'''

import sys
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dbops.migrations.plugins.module_utils.pg import (
    CONNECTION_MUTUALLY_EXCLUSIVE, HAS_PSYCOPG2, PSYCOPG2_IMPORT_ERROR, ConnectionOptionsError, ConnInfo,
    connection_argument_spec, conninfo_from_params, has_connection_params, mask_secrets)

try:
    from ansible_collections.dbops.migrations.plugins.module_utils.backup.archive import BackupError
    from ansible_collections.dbops.migrations.plugins.module_utils.migrate.alembic_cli import (
        AlembicPlanError, choose_launcher, duration_ms)
    from ansible_collections.dbops.migrations.plugins.module_utils.migrate.executor import executor_from_params
    from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import (
        MigrateRequest, validate_url_form)
    from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.container import (
        check_executor, container_spec)
    from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.records import (
        RehearsalError, find_record, summary_line)
    from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.rehearsal import (
        Rehearsal, RehearsalRequest)
    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - psycopg2 missing is reported first
    IMPORT_ERROR = exc


def argument_spec():
    spec = connection_argument_spec()
    spec.update(
        state=dict(type="str", choices=["rehearsed", "checked"], default="rehearsed"),
        archive=dict(type="path"),
        backup_dir=dict(type="path"),
        max_archive_age_hours=dict(type="float", default=24),
        allow_production_server=dict(type="bool", default=False),
        scratch_container=dict(type="dict", options=dict(
            image=dict(type="str", required=True),
            network=dict(type="str"),
            start_timeout=dict(type="float", default=120),
        )),
        config=dict(type="path"),
        target=dict(type="str", default="head"),
        executor=dict(type="str", choices=["local", "compose"], default="local"),
        alembic_bin=dict(type="path"),
        python=dict(type="str"),
        lock_timeout=dict(type="raw", default="500ms"),
        statement_timeout=dict(type="raw"),
        retries=dict(type="int", default=5),
        retry_delay=dict(type="float", default=2),
        version_table=dict(type="str", default="alembic_version"),
        version_table_schema=dict(type="str"),
        db_url_var=dict(type="str", default="DATABASE_URL"),
        db_url_scheme=dict(type="str", default="postgresql"),
        env=dict(type="dict", default={}, no_log=True),
        project_src=dict(type="path"),
        compose_files=dict(type="list", elements="path", default=[]),
        compose_service=dict(type="str", default="migration"),
        compose_profiles=dict(type="list", elements="str", default=["migration"]),
        compose_project_name=dict(type="str"),
        compose_command=dict(type="str", choices=["auto", "plugin", "standalone"], default="auto"),
        executor_login_host=dict(type="str"),
        executor_login_port=dict(type="int"),
        sample_interval_ms=dict(type="int", default=50),
        load_rate=dict(type="float", default=0.0),
        factor=dict(type="float", default=3),
        min_seconds=dict(type="float", default=1),
        estimate=dict(type="bool", default=True),
        vacuum_analyze=dict(type="bool", default=True),
        jobs=dict(type="int", default=1),
        bin_dir=dict(type="path"),
        record_dir=dict(type="path"),
        label=dict(type="str"),
        revisions=dict(type="list", elements="str", default=[]),
        max_age_days=dict(type="float", default=7),
    )
    return spec


def migrate_request(module, params):
    """The runner's request, as alembic_migrate builds it."""
    for name in ("lock_timeout", "statement_timeout"):
        if params[name] not in (None, ""):
            duration_ms(params[name], name)
    if params["retries"] < 0 or params["retry_delay"] < 0:
        raise AlembicPlanError("retries and retry_delay must not be negative")
    validate_url_form(params["db_url_var"], params["db_url_scheme"])
    compose, alembic_bin = executor_from_params(module, params, config_must_exist=True)
    launcher = choose_launcher("auto", params["executor"], params["config"])
    python_bin = params["python"] or ("python3" if params["executor"] == "compose" else sys.executable)
    return MigrateRequest(
        config=params["config"], target=str(params["target"]), executor=params["executor"],
        alembic_bin=alembic_bin, launcher=launcher, python_bin=python_bin, lock_timeout=params["lock_timeout"],
        statement_timeout=params["statement_timeout"], retries=params["retries"],
        retry_delay=params["retry_delay"], version_table=params["version_table"],
        version_table_schema=params["version_table_schema"],
        extra_env={str(k): str(v) for k, v in (params["env"] or {}).items()}, compose=compose,
        db_url_var=params["db_url_var"], db_url_scheme=params["db_url_scheme"])


def render_spec(params, request):
    """Where migration_risk renders the revisions for the compose executor (the release image)."""
    if params["executor"] != "compose":
        return None
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.render_elsewhere import RenderSpec
    spec = request.compose
    return RenderSpec(executor="compose", project_src=spec.project_src, files=spec.files,
                      project_name=spec.project_name, profiles=spec.profiles, service=spec.service,
                      env=dict(request.extra_env), docker_bin=spec.docker_bin, standalone=spec.standalone,
                      config_in_image=params["config"] or "alembic.ini")


def source_server(params, container):
    """The server of the connection options; with a scratch container they only name the database and
    may be absent (the archive's manifest names it then)."""
    if container is not None and not has_connection_params(params):
        return ConnInfo(connect_timeout=params["connect_timeout"] or 10)
    return conninfo_from_params(params)


def checked(module):
    params = module.params
    if not params["record_dir"]:
        module.fail_json(msg="state=checked needs record_dir (the folder of the rehearsal records)")
    found = find_record(params["record_dir"], params["revisions"], params["max_age_days"],
                        database=params.get("login_db") or None)
    result = dict(changed=False, passed=found["passed"], reason=found["reason"], record=found["record"])
    if found["record"]:
        result["summary"] = summary_line(found["record"])
    module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=CONNECTION_MUTUALLY_EXCLUSIVE + [["archive", "backup_dir"]])
    params = module.params
    if IMPORT_ERROR is not None or not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=str(PSYCOPG2_IMPORT_ERROR or IMPORT_ERROR))
    if params["state"] == "checked":
        checked(module)
    secrets = [params.get("login_password")]
    try:
        container = container_spec(params["scratch_container"])
        check_executor(container, params["executor"])
        server = source_server(params, container)
        secrets.append(server.password)
        migrate = migrate_request(module, params)
        if params["sample_interval_ms"] < 10:
            raise AlembicPlanError("sample_interval_ms must be at least 10")
        if not 0 <= params["load_rate"] <= 200:
            raise AlembicPlanError("load_rate must be between 0 (no load) and 200 queries per second per table, "
                                   "got %s" % params["load_rate"])
        request = RehearsalRequest(
            migrate=migrate, archive=params["archive"], backup_dir=params["backup_dir"],
            max_archive_age_hours=params["max_archive_age_hours"],
            allow_production_server=params["allow_production_server"],
            executor_host=params["executor_login_host"], executor_port=params["executor_login_port"],
            sample_interval=params["sample_interval_ms"] / 1000.0, factor=params["factor"],
            min_seconds=params["min_seconds"], estimate=params["estimate"], render=render_spec(params, migrate),
            vacuum_analyze=params["vacuum_analyze"], jobs=params["jobs"], bin_dir=params["bin_dir"],
            record_dir=params["record_dir"],
            label=params["label"], check=module.check_mode, container=container, load_rate=params["load_rate"])

        def runner(argv, env, cwd):
            return module.run_command(argv, environ_update=env, cwd=cwd, check_rc=False)

        rehearsal = Rehearsal(request, server, runner)
    except (ConnectionOptionsError, AlembicPlanError, RehearsalError, ValueError) as exc:
        module.fail_json(msg=mask_secrets(exc, *secrets), changed=False)

    try:
        result = rehearsal.run()
    except (RehearsalError, BackupError) as exc:
        module.fail_json(msg=mask_secrets(exc, *secrets, *rehearsal.secrets()), **_partial(rehearsal))
    except BaseException as exc:  # interrupted, or unexpected: the scratch database (or container) is already gone
        every = secrets + rehearsal.secrets()
        module.fail_json(msg="the rehearsal stopped (%s): %s; its scratch %s"
                         % (type(exc).__name__, mask_secrets(exc, *every),
                            "container was removed" if rehearsal.container else "database was dropped"),
                         exception=mask_secrets(traceback.format_exc(), *every), **_partial(rehearsal))
    secrets += rehearsal.secrets()
    warnings = result.pop("warnings", [])
    for warning in warnings:
        module.warn(mask_secrets(warning, *secrets))
    if result.get("passed") is False and not module.check_mode:
        module.fail_json(msg="the rehearsal failed on the restored copy: %s" % mask_secrets(result.get("failure"), *secrets),
                         **{k: v for k, v in result.items() if k not in ("failure",)})
    module.exit_json(**result)


def _partial(rehearsal):
    keep = ("scratch_db", "scratch_dropped", "scratch", "archive", "cleaned_up", "leftovers", "changed")
    return {k: v for k, v in rehearsal.result.items() if k in keep}


if __name__ == "__main__":
    main()
