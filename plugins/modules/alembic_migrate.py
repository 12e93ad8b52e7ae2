#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
---
module: alembic_migrate
short_description: Run Alembic migrations without stalling live traffic
version_added: 0.1.0
author: dbops developers (@dbops)
description:
  - Upgrades or downgrades a PostgreSQL database with Alembic to O(target), one revision per
    Alembic invocation, so that a failure rolls back only the revision being applied and a retry
    resumes from there.
  - Alembic runs on this host (O(executor=local)) or inside the application's image through the
    docker compose C(migration) service (O(executor=compose)). The database URL reaches Alembic as
    the E(DATABASE_URL) environment variable (O(db_url_var), in the form O(db_url_scheme)), never on the
    command line.
  - A O(target) behind the database's revision is a downgrade; it runs only with O(allow_downgrade=true),
    otherwise the task fails before anything changes, naming both revisions. Results list reverted
    revisions under RV(reverted), never under RV(applied).
  - Branches and merges migrate as Alembic does; O(target=head) (or V(heads)) applies every branch and the
    merge revisions, and a database at several heads is upgraded, not refused.
  - When the process that started the module dies (Ctrl-C or C(kill -9) of C(ansible-playbook)), the module
    stops Alembic at once (its processes, or for O(executor=compose) the named one-off container), ends its
    database sessions so PostgreSQL rolls the open transaction back, and releases the migration lock; an
    orphaned run never goes on migrating behind a new deployment.
  - O(state=lock_status) only reports whether a runner holds the migration lock of the database
    (RV(lock_held), RV(lock_holder_pid)), e.g. before a release lock is declared stale.
  - O(lock_timeout) and O(statement_timeout) reach every session Alembic opens through E(PGOPTIONS).
    A revision that cannot get its lock in time is rolled back by PostgreSQL and retried after
    O(retry_delay) seconds (growing by O(retry_backoff)); when O(retries) run out the task fails,
    naming the lock it waited for and the session that held it, with the revision unchanged. It never
    falls back to an unbounded wait.
  - Only one runner migrates a database at a time; the module holds a PostgreSQL advisory lock on its
    own connection for the whole run. A second runner waits up to O(lock_wait) seconds, then plans
    again and finds nothing left to do, or fails clearly.
  - While Alembic runs, a separate connection samples C(pg_stat_activity) and C(pg_locks) about every
    O(monitor_interval_ms) milliseconds; RV(blocked) reports the sessions that waited on the migration
    and the migration's own waits.
  - An INVALID index left by a failed C(CREATE INDEX CONCURRENTLY) of the run is reported and dropped
    (C(DROP INDEX CONCURRENTLY)) before the revision is retried. Backends of a killed Alembic process
    are terminated so that their locks go away.
  - The revision graph is read with C(alembic history --verbose) and the current revision from the
    version table, so the same logic serves both executors.
extends_documentation_fragment:
  - dbops.migrations.postgres
  - dbops.migrations.attributes
options:
  state:
    description:
      - V(migrated) runs the migration to O(target).
      - V(lock_status) is read-only; it reports whether a runner (of any host) holds this database's migration
        advisory lock for O(version_table) right now, and changes nothing. Needs only the connection options.
    type: str
    choices: [migrated, lock_status]
    default: migrated
  allow_downgrade:
    description:
      - Allow a O(target) behind the database's revision (a downgrade, which can drop columns and data). Without
        it such a target fails before anything changes.
    type: bool
    default: false
  db_url_var:
    description:
      - The environment variable the project's C(env.py) reads the database URL from.
    type: str
    default: DATABASE_URL
  db_url_scheme:
    description:
      - The scheme of that URL. SQLAlchemy 2.1 maps a bare V(postgresql) URL to psycopg 3; an application that
        uses psycopg2 with SQLAlchemy 2 needs V(postgresql+psycopg2).
    type: str
    default: postgresql
  watch_controller:
    description:
      - Stop Alembic and roll its transaction back when the process that started the module dies (for Ansible,
        any process up to C(ansible-playbook)). Leave it on unless the module is started by a process that exits
        on purpose while the migration goes on.
    type: bool
    default: true
  config:
    description:
      - Path of the project's C(alembic.ini). With O(executor=local) it must exist on the target host;
        Alembic runs in its directory (so C(script_location) and C(prepend_sys_path) resolve as they do
        for C(alembic) run by hand).
      - With O(executor=compose), a path inside the image; when omitted Alembic uses C(alembic.ini) in
        the image's working directory.
    type: path
  target:
    description:
      - C(head), C(base), a revision id (or a unique prefix), C(+N) or C(-N) relative to the database's
        current revision.
    type: str
    default: head
  executor:
    description:
      - V(local) runs O(alembic_bin) on the target host.
      - V(compose) runs C(docker compose run --rm) of O(compose_service) (profile O(compose_profiles))
        from O(project_src) and O(compose_files).
    type: str
    choices: [local, compose]
    default: local
  alembic_bin:
    description:
      - The C(alembic) executable for O(executor=local). Defaults to C(alembic) on E(PATH) or beside the
        Python that runs the module.
    type: path
  launcher:
    description:
      - How Alembic is started.
      - V(alembic) runs the C(alembic) executable (O(alembic_bin), or C(alembic) in the image).
      - V(python) runs O(python) with a short script that is Alembic's own command line, except that an
        ini naming no C(script_location) gets the ini's folder, as Flask-Migrate does (its
        C(migrations/alembic.ini) names none). Without Alembic importable it falls back to the C(alembic)
        executable.
      - V(auto) is V(python) for O(executor=compose) (the ini inside the image cannot be read from here),
        and for O(executor=local) V(python) only when O(config) names no C(script_location).
    type: str
    choices: [auto, alembic, python]
    default: auto
  python:
    description:
      - The Python interpreter of O(launcher=python), the one that has Alembic (and the application) installed.
      - With O(executor=compose) a command inside the image; defaults to C(python3).
      - With O(executor=local) defaults to the interpreter O(alembic_bin) was installed for (its C(#!) line).
    type: str
  lock_timeout:
    description:
      - How long each statement of the migration may wait for a lock. A PostgreSQL duration such as
        V(200ms) or V(2s), or integer milliseconds. V(0) disables the limit (not recommended).
      - While a statement waits for its lock, every later query on that table queues behind it, so this is
        also the longest stall one attempt can cause. On hot tables with short transactions, V(50ms) with
        more O(retries) keeps each stall below what clients notice (C(bench/downtime/REPORT.md)); raise it
        when the application's own transactions are longer and attempts keep timing out.
    type: raw
    default: 500ms
  statement_timeout:
    description:
      - Longest a statement of the migration may run, same forms as O(lock_timeout). Not set by default,
        because data backfills and concurrent index builds legitimately run long. A statement that runs
        out of time fails the task without retry.
    type: raw
  retries:
    description: How many times a revision is retried after a lock timeout or a lost connection.
    type: int
    default: 5
  retry_delay:
    description: Seconds to wait before the first retry.
    type: float
    default: 2
  retry_backoff:
    description: Factor by which the wait grows after each retry.
    type: float
    default: 2
  retry_delay_max:
    description: Longest wait between two retries, in seconds.
    type: float
    default: 60
  lock_wait:
    description:
      - Seconds to wait for another runner's migration lock before failing. V(0) fails at once.
    type: float
    default: 120
  monitor:
    description: Sample blocked sessions while Alembic runs (RV(blocked)).
    type: bool
    default: true
  monitor_interval_ms:
    description: Sampling interval of the monitor.
    type: int
    default: 100
  timeline_file:
    description: Write the sampled timeline as JSON to this path (mode 0600).
    type: path
  version_table:
    description: Alembic's version table, as configured in the project's C(env.py).
    type: str
    default: alembic_version
  version_table_schema:
    description: Schema of O(version_table) when it is not on the search path.
    type: str
  show_sql:
    description: In check mode, render each pending revision's SQL offline (C(alembic upgrade --sql)).
    type: bool
    default: true
  drop_invalid_indexes:
    description:
      - Drop INVALID indexes that a failed revision of this run left behind before retrying it. When
        false they are only reported.
    type: bool
    default: true
  env:
    description:
      - Extra environment variables for Alembic (for example settings the project's C(env.py) reads).
        E(DATABASE_URL), E(PGOPTIONS) and E(PGAPPNAME) are set by the module; a E(PGOPTIONS) given here is
        kept and the timeouts are appended.
    type: dict
    default: {}
  executor_db_url:
    description:
      - The URL Alembic itself should use when it differs from O(db_url), typically the compose network
        name of the database (C(postgresql://app:pw@db:5432/app)) while the module reaches it through a
        published port. Defaults to the connection options.
    type: str
  project_src:
    description: Directory of the compose project for O(executor=compose).
    type: path
  compose_files:
    description: Compose files (relative to O(project_src) or absolute) for O(executor=compose).
    type: list
    elements: path
    default: []
  compose_service:
    description: The one-off service that runs Alembic.
    type: str
    default: migration
  compose_profiles:
    description: Compose profiles to enable for O(compose_service).
    type: list
    elements: str
    default: [migration]
  compose_project_name:
    description: Compose project name (C(-p)).
    type: str
  compose_command:
    description:
      - Which compose CLI runs O(compose_service) for O(executor=compose).
      - V(auto) takes the C(docker compose) v2 plugin (2.18 or newer) and falls back to the standalone
        C(docker-compose) v1 (1.28 or newer); V(plugin) and V(standalone) insist on one.
    type: str
    choices: [auto, plugin, standalone]
    default: auto
notes:
  - E(PGOPTIONS) and E(PGAPPNAME) are honoured by libpq-based drivers (psycopg2, psycopg); the project's
    C(env.py) must connect with one of them and must not override C(application_name).
  - Each revision runs in its own Alembic process and transaction; revisions using
    C(autocommit_block) (for C(CREATE INDEX CONCURRENTLY)) are supported. Such a revision commits what ran before
    the block, so it can fail half-applied; the failure message then lists what the failed attempt left in the
    database (C(failure.partially_applied)) and names the real cause. Only lock timeouts and lost connections
    are retried.
  - Secrets reach Alembic only through environment variables, never its command line. With O(executor=compose)
    the one-off container receives them as C(-e NAME) (the value comes from the docker CLI's environment), but
    C(docker inspect) of a running container shows its environment, passwords included, to anyone allowed to use
    the Docker daemon. Restrict access to the Docker socket, and where the application allows it, point
    O(db_url_var) at nothing secret and let C(env.py) read the password from a file (compose C(secrets:) or an
    C(env_file) with mode 0600).
  - O(executor=compose) names each one-off container C(dbops-migrate-PROJECT-RUNID-N), so that it can be removed
    when the controller dies (the C(compose run) client dying does not stop its container).
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Lists the pending revisions with their SQL rendered offline; changes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Shows the revision before and after.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: full
    details: At the target revision nothing runs and the result is not changed.
'''

EXAMPLES = r'''
- name: Migrate to the newest revision, never queueing live traffic for more than 500 ms
  dbops.migrations.alembic_migrate:
    config: /srv/auto_trader/alembic.ini
    db_url: "{{ vault_database_url }}"
    lock_timeout: 500ms
    statement_timeout: 15s
    retries: 8
    retry_delay: 2
    timeline_file: /var/log/dbops/migration-timeline.json
  register: migration

- name: Roll the last revision back
  dbops.migrations.alembic_migrate:
    config: /srv/auto_trader/alembic.ini
    login_host: db.internal
    login_user: app
    login_password: "{{ vault_db_password }}"
    login_db: auto_trader
    target: "-1"

- name: Migrate with the application's image, as the compose migration profile does
  dbops.migrations.alembic_migrate:
    executor: compose
    project_src: /srv/auto_trader
    compose_files: [docker-compose.prod.yml]
    db_url: postgresql://app:{{ vault_db_password }}@127.0.0.1:5432/auto_trader
    executor_db_url: postgresql://app:{{ vault_db_password }}@db:5432/auto_trader
    target: head

- name: Revert the last release's revision on purpose
  dbops.migrations.alembic_migrate:
    config: /srv/auto_trader/alembic.ini
    db_url: "{{ vault_database_url }}"
    target: "0004"
    allow_downgrade: true

- name: A SQLAlchemy 2 application that uses psycopg2 and reads APP_DB_URL
  dbops.migrations.alembic_migrate:
    config: /srv/ledger/alembic.ini
    db_url: "{{ vault_database_url }}"
    db_url_var: APP_DB_URL
    db_url_scheme: postgresql+psycopg2

- name: Does a migration runner hold the lock of this database?
  dbops.migrations.alembic_migrate:
    state: lock_status
    db_url: "{{ vault_database_url }}"
  register: migration_lock

- name: Show what would run, with its SQL
  dbops.migrations.alembic_migrate:
    config: /srv/auto_trader/alembic.ini
    db_url: "{{ vault_database_url }}"
  check_mode: true
  diff: true
'''

RETURN = r'''
from_revision:
  description: The database's revision before the run (null means base; C(a,b) while several branches are unmerged).
  returned: always
  type: str
  sample: "0002"
to_revision:
  description: The revision after the run; in check mode the revision it would reach.
  returned: always
  type: str
  sample: "0005"
target_revision:
  description: The revision O(target) resolved to (null means base).
  returned: success
  type: str
  sample: "0005"
pending:
  description: The single-revision steps planned; in check mode each carries its SQL.
  returned: success
  type: list
  elements: dict
  sample: [{"direction": "upgrade", "revision": "0003", "from_revision": "0002", "to_revision": "0003",
            "sql": "CREATE INDEX ix_orders_created_at ON orders (created_at);"}]
direction:
  description: V(upgrade), V(downgrade) or V(none) (already at the target).
  returned: success
  type: str
  sample: upgrade
reverted:
  description: The revisions a downgrade reverted, with their attempts and duration (empty for upgrades).
  returned: always
  type: list
  elements: dict
  sample: [{"direction": "downgrade", "revision": "0005", "from_revision": "0005", "to_revision": "0004",
            "attempts": 1, "duration_s": 0.8}]
lock_held:
  description: With O(state=lock_status), whether a runner holds the migration lock of the database now.
  returned: when state is lock_status
  type: bool
  sample: false
lock_holder_pid:
  description: With O(state=lock_status), the PostgreSQL backend pid of the session holding the lock (or null).
  returned: when state is lock_status
  type: int
  sample: 4242
lock_holder:
  description: With O(state=lock_status), that session's C(pid), C(application_name), C(client) and C(connected_s).
  returned: when state is lock_status
  type: dict
  sample: {"pid": 4242, "application_name": "dbops-migrate-control", "client": "local", "connected_s": 12.5}
applied:
  description:
    - The revisions applied (upgrades only), with their attempts and duration; every revision of every branch
      and the merges. Reverted revisions are in RV(reverted).
  returned: always
  type: list
  elements: dict
  sample: [{"direction": "upgrade", "revision": "0003", "from_revision": "0002", "to_revision": "0003",
            "attempts": 2, "duration_s": 3.1}]
attempts:
  description: Alembic invocations of the run, retries included.
  returned: always
  type: int
  sample: 4
duration_s:
  description: Wall time of the run.
  returned: always
  type: float
  sample: 6.52
blocked:
  description:
    - What waited while the migration ran (null in check mode or with O(monitor=false)).
    - C(sessions) distinct sessions that waited on the migration, C(waits) their waiting episodes,
      C(longest_wait_s) and C(total_wait_s); C(migration_waits) the migration's own lock waits, each
      with C(lock), C(waited_s), C(statement) and C(blocked_by) (pid, application_name, state, masked
      query, transaction age); C(samples), C(interval_ms), C(timeline_file).
  returned: always
  type: dict
  sample: {"sessions": 3, "waits": 5, "longest_wait_s": 0.21, "total_wait_s": 0.9, "migration_waits": [],
           "migration_wait_s": 0.8, "samples": 61, "interval_ms": 100}
invalid_indexes:
  description: INVALID indexes found; those left by a failed revision of this run are dropped.
  returned: always
  type: list
  elements: dict
  sample: [{"schema": "public", "index": "ix_orders_created_at", "table": "orders", "revision": "0003",
            "dropped": true}]
failure:
  description:
    - On failure, what failed; C(kind) is lock_timeout, statement_timeout, connection_lost, killed,
      invalid_index, controller_gone or error. C(cause) is the error Alembic died of (for example
      C(UniqueViolation ... DETAIL ... is duplicated)); C(partially_applied) lists what a failed attempt committed
      although the revision was not recorded (an C(autocommit_block) commits what ran before it).
      For lock timeouts C(lock) and C(blockers) name the lock and the sessions that held it.
  returned: failure
  type: dict
  sample: {"revision": "0004", "direction": "upgrade", "kind": "lock_timeout",
           "lock": "ACCESS EXCLUSIVE lock on relation orders",
           "blockers": [{"pid": 4242, "state": "idle in transaction", "xact_age_s": 31.2, "query": "SELECT ..."}]}
warnings_list:
  description: Non-fatal observations (pre-existing INVALID indexes, SQL that could not be rendered).
  returned: always
  type: list
  elements: str
  sample: []
'''

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dbops.migrations.plugins.module_utils.migrate.alembic_cli import (
    LAUNCHERS, AlembicPlanError, choose_launcher, duration_ms)
from ansible_collections.dbops.migrations.plugins.module_utils.pg import (
    CONNECTION_MUTUALLY_EXCLUSIVE, HAS_PSYCOPG2, PSYCOPG2_IMPORT_ERROR, ConnectionOptionsError,
    connection_argument_spec, conninfo_from_params, mask_secrets, parse_db_url)
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.executor import executor_from_params
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import (
    MigrateError, MigrateRequest, Migrator, migration_lock_status, validate_url_form)


def argument_spec():
    spec = connection_argument_spec()
    spec.update(
        state=dict(type="str", choices=["migrated", "lock_status"], default="migrated"),
        allow_downgrade=dict(type="bool", default=False),
        db_url_var=dict(type="str", default="DATABASE_URL"),
        db_url_scheme=dict(type="str", default="postgresql"),
        watch_controller=dict(type="bool", default=True),
        config=dict(type="path"),
        target=dict(type="str", default="head"),
        executor=dict(type="str", choices=["local", "compose"], default="local"),
        alembic_bin=dict(type="path"),
        launcher=dict(type="str", choices=list(LAUNCHERS), default="auto"),
        python=dict(type="str"),
        lock_timeout=dict(type="raw", default="500ms"),
        statement_timeout=dict(type="raw"),
        retries=dict(type="int", default=5),
        retry_delay=dict(type="float", default=2),
        retry_backoff=dict(type="float", default=2),
        retry_delay_max=dict(type="float", default=60),
        lock_wait=dict(type="float", default=120),
        monitor=dict(type="bool", default=True),
        monitor_interval_ms=dict(type="int", default=100),
        timeline_file=dict(type="path"),
        version_table=dict(type="str", default="alembic_version"),
        version_table_schema=dict(type="str"),
        show_sql=dict(type="bool", default=True),
        drop_invalid_indexes=dict(type="bool", default=True),
        env=dict(type="dict", default={}, no_log=True),
        executor_db_url=dict(type="str", no_log=True),
        project_src=dict(type="path"),
        compose_files=dict(type="list", elements="path", default=[]),
        compose_service=dict(type="str", default="migration"),
        compose_profiles=dict(type="list", elements="str", default=["migration"]),
        compose_project_name=dict(type="str"),
        compose_command=dict(type="str", choices=["auto", "plugin", "standalone"], default="auto"),
    )
    return spec


def interpreter_of(alembic_bin):
    """The Python an ``alembic`` console script was installed for (its ``#!`` line)."""
    try:
        with open(alembic_bin, "rb") as handle:
            first = handle.readline(4096).decode("utf-8", "replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!"):
        command = first[2:].split()
        if command and os.path.basename(command[0]) == "env" and len(command) > 1:
            return command[1]
        if command and os.path.isfile(command[0]) and os.access(command[0], os.X_OK):
            return command[0]
    for name in ("python3", "python"):
        beside = os.path.join(os.path.dirname(alembic_bin), name)
        if os.path.isfile(beside) and os.access(beside, os.X_OK):
            return beside
    raise AlembicPlanError("cannot tell which Python %s belongs to; set python to the interpreter that has "
                           "alembic installed (e.g. /srv/app/.venv/bin/python)" % alembic_bin)


def build_request(module, params):
    if params["retries"] < 0 or params["retry_delay"] < 0 or params["lock_wait"] < 0:
        raise AlembicPlanError("retries, retry_delay and lock_wait must not be negative")
    if params["monitor_interval_ms"] < 10:
        raise AlembicPlanError("monitor_interval_ms must be at least 10")
    for name in ("lock_timeout", "statement_timeout"):
        if params[name] not in (None, ""):
            duration_ms(params[name], name)
    validate_url_form(params["db_url_var"], params["db_url_scheme"])
    compose, alembic_bin = executor_from_params(module, params)
    launcher = choose_launcher(params["launcher"], params["executor"], params["config"])
    python_bin = params["python"] or "python3"
    if launcher == "python" and params["executor"] == "local":
        python_bin = params["python"] or interpreter_of(alembic_bin)
    alembic_db = None
    if params["executor_db_url"]:
        alembic_db = parse_db_url(params["executor_db_url"], params["connect_timeout"] or 10)
    return MigrateRequest(
        config=params["config"], target=str(params["target"]), executor=params["executor"],
        alembic_bin=alembic_bin, launcher=launcher, python_bin=python_bin, lock_timeout=params["lock_timeout"],
        statement_timeout=params["statement_timeout"], retries=params["retries"],
        retry_delay=params["retry_delay"], retry_backoff=params["retry_backoff"],
        retry_delay_max=params["retry_delay_max"], lock_wait=params["lock_wait"],
        monitor=params["monitor"], monitor_interval=params["monitor_interval_ms"] / 1000.0,
        timeline_file=params["timeline_file"], version_table=params["version_table"],
        version_table_schema=params["version_table_schema"],
        extra_env={str(k): str(v) for k, v in (params["env"] or {}).items()},
        compose=compose, alembic_db=alembic_db, check=module.check_mode,
        show_sql=params["show_sql"], drop_invalid_indexes=params["drop_invalid_indexes"],
        allow_downgrade=params["allow_downgrade"], db_url_var=params["db_url_var"],
        db_url_scheme=params["db_url_scheme"], watch_controller=params["watch_controller"])


def lock_status(module, db, params, secrets):
    """state=lock_status: read-only, no alembic needed."""
    try:
        status = migration_lock_status(db, params["version_table"], params["version_table_schema"])
    except Exception as exc:
        module.fail_json(msg="cannot read the migration lock of %s: %s" % (db.masked_url(), mask_secrets(exc, *secrets)),
                         changed=False)
    module.exit_json(changed=False, **status)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=CONNECTION_MUTUALLY_EXCLUSIVE)
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=str(PSYCOPG2_IMPORT_ERROR))
    params = module.params
    secrets = [params.get("login_password")]
    try:
        db = conninfo_from_params(params)
        secrets.append(db.password)
        if params["state"] == "lock_status":
            lock_status(module, db, params, secrets)
        request = build_request(module, params)
        if request.alembic_db is not None:
            secrets.append(request.alembic_db.password)
    except (ConnectionOptionsError, AlembicPlanError, ValueError) as exc:
        module.fail_json(msg=mask_secrets(exc, *secrets), changed=False)

    def runner(argv, env, cwd):
        return module.run_command(argv, environ_update=env, cwd=cwd, check_rc=False)

    migrator = Migrator(request, db, runner)
    try:
        result = migrator.run()
    except MigrateError as exc:
        result = migrator.fail_result(exc)
        result.pop("diff", None)
        warnings = result.pop("warnings", [])
        module.fail_json(msg=mask_secrets(exc.msg, *secrets), warnings_list=warnings,
                         **{k: v for k, v in result.items() if k != "changed"},
                         changed=bool(result.get("applied") or result.get("reverted")
                                      or (result.get("failure") or {}).get("partially_applied")))
    warnings = result.pop("warnings", [])
    for warning in warnings:
        module.warn(warning)
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(warnings_list=warnings, **result)


if __name__ == "__main__":
    main()
