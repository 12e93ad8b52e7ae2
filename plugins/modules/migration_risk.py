#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
---
module: migration_risk
short_description: Classify pending PostgreSQL migrations by risk, with locks, live table facts and safe rewrites
version_added: 0.1.0
author: dbops developers (@dbops)
description:
  - Answers "how risky is this migration?" before a deploy. Every statement is parsed with pglast
    (PostgreSQL's own parser) and checked against a catalogue of rules, each with the lock it takes, what the lock
    blocks, whether the table is rewritten or scanned, whether the running release breaks, and a concrete
    safe alternative (an Alembic rewrite where one exists). See C(docs/migration_risk.md) for the catalogue.
  - The input is raw SQL (O(sql) or O(sql_file)) or an Alembic project (O(alembic_config), or the release
    image with O(executor=compose)). Alembic revisions are rendered one by one to offline SQL (PostgreSQL
    dialect) without running the project's C(env.py), so every finding names its revision.
  - "Render where the code lives: O(executor=controller) renders here; modules the revisions import that
    cannot be imported here (the application, libraries such as C(sqlalchemy_utils)) become stand-ins (a
    stand-in column type renders as a named type; RV(stand_ins) lists them), and C(op.get_bind()) answers like
    PostgreSQL (dialect, C(engine.url), empty results with C(rowcount) 0). O(executor=python) runs the same
    renderer in the application's interpreter (O(python)); O(executor=compose) runs it in a one-off container
    of the compose migration service (the release image), so the revisions judged are the ones that image
    applies. The analysis always runs here."
  - A revision is not analysed only when its file does not compile or its C(upgrade()) fails while rendering;
    the finding says why, and it counts as V(high).
  - The revision's Python is read too, for statements executed in loops (batched data changes) and for the
    rollback plan (a C(downgrade()) that is missing, only C(pass), or raises is no plan).
  - With a database (O(db_url) or the C(login_*) options) the server version, table sizes and row estimates,
    column types, indexes and constraints are read and change the verdict (an index on a 10-row table is
    V(low); on a 2 M-row table it is V(high)), and lock times are estimated from table sizes. Without a database
    unknown tables are assumed large and O(server_version) is used.
  - Tables created earlier in the same run are not risky. Alembic's bookkeeping on its version table
    (O(version_table), in O(version_table_schema)) is never a finding.
  - With a database, an UPDATE or DELETE whose WHERE is an equality on a column that alone forms the primary key
    or a valid, non-partial unique index is graded as touching one row; a C(VALIDATE CONSTRAINT) of a
    C(CHECK (col IS NOT NULL) NOT VALID) already in the database proves a later C(SET NOT NULL).
  - O(trace=true) (needs a database) confirms the static verdict on a throw-away copy of the schema
    (schema-only dump restored into a scratch database). The pending migration runs in a transaction that
    records the locks each statement takes, table rewrites and durations, then is rolled back and the copy
    dropped. Disagreements between trace and static analysis are reported.
  - "Findings can be suppressed with a reason by a comment C(-- migration-risk: ignore RULE because REASON) on
    or before the statement, or C(# migration-risk: ignore RULE because REASON) in a revision file."
  - Read-only; C(changed) is always false.
extends_documentation_fragment:
  - dbops.migrations.postgres
  - dbops.migrations.attributes
options:
  sql:
    description: SQL text of the migration. Mutually exclusive with O(sql_file) and O(alembic_config).
    type: str
  sql_file:
    description: Path of a SQL file to analyse (for example the output of C(alembic upgrade --sql)).
    type: path
  alembic_config:
    description:
      - Path of the project's C(alembic.ini) on the host that runs the module (O(executor=controller) or
        O(executor=python)).
      - Relative C(script_location), C(prepend_sys_path) and C(version_locations) resolve from the ini's folder;
        an ini without C(script_location) (Flask-Migrate's C(migrations/alembic.ini)) uses its own folder.
    type: path
  ini_section:
    description: Section of the alembic.ini to read (C(alembic --name)).
    type: str
    default: alembic
  script_location:
    description: Folder of C(env.py) and C(versions/), overriding the ini's C(script_location) (relative to the ini's folder).
    type: str
  executor:
    description:
      - Where the revisions are rendered to SQL. V(controller) here; V(python) in the interpreter O(python)
        (the application's virtualenv, so its imports work); V(compose) in a one-off container of
        O(compose_service) (C(docker compose run --rm -T --no-deps SERVICE python -)), the release image.
      - The analysis (pglast, rules, database facts) runs where the module runs, whatever the executor.
    type: str
    choices: [controller, python, compose]
    default: controller
  python:
    description:
      - O(executor=python) the interpreter to render with (required), e.g. C(/srv/app/.venv/bin/python).
      - O(executor=compose) the interpreter inside the image.
    type: str
  alembic_config_in_image:
    description: O(executor=compose) path of the alembic.ini inside the image (relative to its working directory).
    type: str
    default: alembic.ini
  project_src:
    description: O(executor=compose) folder of the compose project.
    type: path
  compose_files:
    description: O(executor=compose) compose files (relative to O(project_src) or absolute).
    type: list
    elements: path
    default: []
    aliases: [files]
  compose_project_name:
    description: O(executor=compose) compose project name (C(-p)).
    type: str
    aliases: [project_name]
  compose_profiles:
    description: O(executor=compose) compose profiles that enable O(compose_service).
    type: list
    elements: str
    default: [migration]
    aliases: [profiles]
  compose_service:
    description: O(executor=compose) the one-off service of the release image (the one that runs Alembic).
    type: str
    default: migration
    aliases: [service]
  compose_command:
    description:
      - O(executor=compose) which compose CLI to run. V(auto) takes the C(docker compose) v2 plugin and falls
        back to C(docker-compose) v1; V(plugin) (also V(docker compose)) and V(standalone) (also V(docker-compose))
        insist on one.
    type: str
    choices: [auto, plugin, standalone, docker compose, docker-compose]
    default: auto
  env:
    description: O(executor=compose) variables for compose interpolation (for example the image tag); never logged.
    type: dict
    default: {}
  version_table:
    description:
      - Alembic's version table, read for the database's current revision.
      - Statements that write it (C(alembic upgrade --sql) output, for example) are Alembic's bookkeeping, not
        findings.
    type: str
    default: alembic_version
  version_table_schema:
    description: Schema of O(version_table). Default is the search_path.
    type: str
  from_revision:
    description:
      - First revision that is already applied (exclusive lower bound).
      - Default is the database's current revision when a database is given, else C(base).
    type: str
  to_revision:
    description: Last revision to analyse (inclusive upper bound).
    type: str
    default: heads
  server_version:
    description:
      - PostgreSQL major version to judge against when no database is given (10 to 18).
      - With a database the server's own version is used.
    type: int
    default: 15
  config_file:
    description:
      - YAML file with C(thresholds) (C(small_table_rows), C(small_table_bytes), C(large_table_rows),
        C(large_table_bytes)), C(disabled_rules), C(risk_overrides) (rule id to level) and C(require_lock_timeout).
    type: path
  trace:
    description:
      - Run the pending migration against a throw-away copy of the schema and record locks, rewrites and
        durations. Needs a database and the C(pg_dump), C(pg_restore) client tools.
    type: bool
    default: false
  trace_bin_dir:
    description: Folder holding C(pg_dump) and C(pg_restore) for O(trace). Default is to search C(PATH) and
      C(/usr/lib/postgresql/*/bin).
    type: path
  jobs:
    description:
      - Processes that parse the migrations' SQL ahead of the analysis, for long histories of revisions.
      - V(1) parses in the module's own process; V(0) uses one process per CPU when there are at least 200
        revisions, and one otherwise.
      - The verdict, findings and their order are the same for every value.
    type: int
    default: 1
attributes:
  check_mode:
    support: full
    details: The module only reads; it behaves the same in check mode.
  diff_mode:
    support: none
    details: Nothing is changed, so there is no diff.
  idempotent:
    support: full
    details: Read-only; C(changed) is always false.
requirements:
  - pglast >= 6
  - orjson (optional; decodes the parse trees faster)
  - alembic >= 1.11 (for O(alembic_config))
  - psycopg2 (with a database)
seealso:
  - module: dbops.migrations.alembic_migrate
  - module: dbops.migrations.pg_backup
'''

EXAMPLES = r'''
- name: How risky are the pending migrations of the app?
  dbops.migrations.migration_risk:
    alembic_config: /srv/auto_trader/alembic.ini
    db_url: "{{ vault_database_url }}"
  register: risk

- name: Stop when the migration needs more than the automatic path
  ansible.builtin.assert:
    that: risk.risk == 'low'
    fail_msg: "Migration risk is {{ risk.risk }}: deploy with -e risk={{ risk.path }}"

- name: Judge the revisions the release image will apply (rendered inside it)
  dbops.migrations.migration_risk:
    executor: compose
    project_src: /srv/auto_trader
    compose_files: [docker-compose.prod.yml]
    env:
      APP_VERSION: "1.4.0"
      POSTGRES_PASSWORD: "{{ vault_pg_password }}"
    db_url: "{{ vault_database_url }}"

- name: Render with the application's own virtualenv (a Flask-Migrate project)
  dbops.migrations.migration_risk:
    executor: python
    python: /srv/app/.venv/bin/python
    alembic_config: /srv/app/migrations/alembic.ini
    version_table_schema: app

- name: Check a SQL file against PostgreSQL 12 rules, without a database
  dbops.migrations.migration_risk:
    sql_file: migrations/2024_add_index.sql
    server_version: 12

- name: Confirm the static verdict with a lock trace on a scratch copy of the schema
  dbops.migrations.migration_risk:
    alembic_config: alembic.ini
    login_host: db.internal
    login_user: migrator
    login_password: "{{ vault_pg_password }}"
    login_db: auto_trader
    trace: true
'''

RETURN = r'''
risk:
  description: Highest risk of the migration (V(low) < V(medium) < V(high) < V(critical)).
  returned: success
  type: str
  sample: critical
path:
  description:
    - The release path the migration needs, as C(playbooks/deploy.yml) names it (C(-e risk=...)).
    - V(low) for low, V(medium) for medium, V(high) for high and critical.
  returned: success
  type: str
  choices: [low, medium, high]
  sample: high
recommended_path:
  description:
    - The same path under its older names, kept for compatibility; RV(path) is the one C(playbooks/deploy.yml) takes.
    - V(auto) for low, V(review) for medium, V(manual) for high and critical.
  returned: success
  type: str
  sample: manual
backup:
  description: V(optional) for low, V(recommended) for medium, V(required) for high and critical.
  returned: success
  type: str
  sample: required
findings:
  description: One entry per risky operation, and advisory entries at V(low).
  returned: success
  type: list
  elements: dict
  contains:
    revision:
      description: Alembic revision (null for plain SQL).
      type: str
      sample: '0005'
    statement:
      description: The statement (shortened).
      type: str
      sample: UPDATE orders SET notional = quantity * price
    operation:
      description: What the statement does.
      type: str
      sample: update without WHERE
    rule:
      description: Stable rule id (see docs/migration_risk.md).
      type: str
      sample: update-all-rows
    risk:
      description: Risk of this finding.
      type: str
      sample: critical
    lock:
      description: PostgreSQL lock mode taken on the table.
      type: str
      sample: ACCESS EXCLUSIVE
    blocks:
      description: What the lock blocks, V(none), V(writes) or V(reads_and_writes).
      type: str
      sample: writes
    rewrites_table:
      description: Whether the table is rewritten.
      type: bool
      sample: false
    table:
      description: Table concerned (null when unknown).
      type: str
      sample: orders
    rows_estimate:
      description: Row estimate from pg_class; null when unknown or without a database.
      type: int
      sample: 2000000
    message:
      description: Why it is risky.
      type: str
      sample: UPDATE orders rewrites every row in one transaction.
    safe_alternative:
      description: How to do it safely (an Alembic rewrite where one exists).
      type: str
      sample: "with op.get_context().autocommit_block(): ..."
revisions:
  description: Pending Alembic revisions, oldest first (empty for plain SQL).
  returned: success
  type: list
  elements: dict
  contains:
    revision:
      description: Revision id.
      type: str
      sample: '0004'
    risk:
      description: Highest risk of the revision.
      type: str
      sample: high
    has_downgrade:
      description: Whether downgrade() really reverts (it is not missing, only pass, or raising).
      type: bool
      sample: true
    analysed:
      description: False when the revision could not be rendered (it then counts as high).
      type: bool
      sample: true
    error:
      description: Why the revision was not analysed.
      type: str
      sample: null
    downgrade_drops:
      description: Tables and columns the revision's downgrade() drops (data written after the upgrade is lost on rollback).
      type: list
      elements: str
      sample: [orders.notional]
    source:
      description: The revision file, relative to the alembic.ini's folder.
      type: str
      sample: migrations/versions/0004_orders_quantity_bigint.py
    source_sha256:
      description: SHA-256 of the revision file as rendered (compare it with what the image applies).
      type: str
      sample: 9f2c0c1e0a3d4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9011223344
    stand_ins:
      description: Names the revision imports that could not be imported where it was rendered.
      type: list
      elements: str
      sample: [myapp.types.Money]
    down_revisions:
      description: The revision's parents (two or more for a merge).
      type: list
      elements: str
      sample: ['0003']
    sql:
      description: The statements the revision was judged on, as rendered (password literals masked).
      type: list
      elements: str
      sample: ["ALTER TABLE orders ADD COLUMN notional NUMERIC(18, 4)"]
rendered_by:
  description: Where the revisions were rendered, V(controller), V(python) or V(compose).
  returned: with an Alembic project
  type: str
  sample: compose
heads:
  description: The project's head revisions.
  returned: with an Alembic project
  type: list
  elements: str
  sample: ['0005']
stand_ins:
  description: Every stand-in used while rendering (modules and names that could not be imported).
  returned: with an Alembic project
  type: list
  elements: str
  sample: [myapp.types, myapp.types.Money]
render:
  description: Where the revisions were found (C(script_location), C(version_locations), C(ini_section)) and, for
    O(executor=python) and O(executor=compose), the versions of Python, alembic and SQLAlchemy that rendered them.
  returned: with an Alembic project
  type: dict
version_table:
  description: The version table read for the current revision (C(table)), whether it exists (C(found)), and the
    revisions it holds (C(revisions)); a missing table means no revision is applied yet.
  returned: with an Alembic project and a database
  type: dict
  sample: {table: public.alembic_version, found: true, revisions: ['0003']}
checklist:
  description: The guide's questions before migrating.
  returned: success
  type: dict
  contains:
    drops:
      description: Drops of tables, columns or data.
      type: list
      elements: str
      sample: [DROP COLUMN users.legacy_status in revision 0005]
    large_data:
      description: Statements that process table data.
      type: list
      elements: str
      sample: [UPDATE WITHOUT WHERE orders in revision 0005]
    estimated_lock_seconds:
      description: Estimated seconds the application is blocked; null when table sizes are unknown.
      type: float
      sample: 12.5
    rollback_plan:
      description: True when every pending revision has a usable downgrade().
      type: bool
      sample: true
    rollback_notes:
      description: Revisions without a usable downgrade, each with the reason.
      type: list
      elements: str
      sample: ["0006: downgrade() raises instead of reverting"]
report:
  description: The verdict as a Markdown report.
  returned: success
  type: str
sarif:
  description: The findings as a SARIF 2.1.0 document, for code-scanning tools.
  returned: success
  type: dict
suppressed:
  description: Findings suppressed by a comment, each with its C(reason).
  returned: success
  type: list
  elements: dict
server_version:
  description: PostgreSQL major version the verdict applies to.
  returned: success
  type: int
  sample: 15
trace:
  description:
    - Lock trace (only with O(trace=true)).
    - Statements with the locks they took, rewrites and durations, statements not traced, and disagreements
      with the static analysis.
  returned: when trace is true
  type: dict
'''

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dbops.migrations.plugins.module_utils.pg import (
    CONNECTION_MUTUALLY_EXCLUSIVE, ConnectionOptionsError, connection_argument_spec, has_connection_params,
    mask_secrets)

try:
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import (
        RiskRequest, run_request)
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import (
        HAS_PGLAST, PGLAST_IMPORT_ERROR, RiskInputError)
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.render_elsewhere import RenderSpec
    from ansible_collections.dbops.migrations.plugins.module_utils.compose.plan import ComposeError
    from ansible_collections.dbops.migrations.plugins.module_utils.compose.engine import choose_compose_cli
    from ansible_collections.dbops.migrations.plugins.module_utils.compose.v1 import STANDALONE
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover
    IMPORT_ERROR = traceback.format_exc()
    HAS_PGLAST = False


COMPOSE_COMMANDS = {"docker compose": "plugin", "docker-compose": "standalone"}


def render_spec(module, params):
    """Where to render (None: here), with the compose CLI chosen as alembic_migrate chooses it."""
    executor = params["executor"]
    if executor == "controller":
        if params["python"]:
            raise RiskInputError("python is only used with executor=python or executor=compose")
        return None
    spec = RenderSpec(executor=executor, python=params["python"], ini_section=params["ini_section"],
                      script_location=params["script_location"])
    if executor == "python":
        if not params["python"]:
            raise RiskInputError("executor=python needs python: the interpreter of the application's virtualenv "
                                 "(e.g. /srv/app/.venv/bin/python)")
        if not params["alembic_config"]:
            raise RiskInputError("executor=python needs alembic_config: the project's alembic.ini on this host")
        return spec
    if not params["project_src"]:
        raise RiskInputError("executor=compose needs project_src: the folder of the compose project")
    if params["alembic_config"]:
        raise RiskInputError("executor=compose reads the alembic.ini inside the image: give its path there as "
                             "alembic_config_in_image instead of alembic_config")
    requested = COMPOSE_COMMANDS.get(params["compose_command"], params["compose_command"])
    choice, compose_bin = choose_compose_cli(module, requested)
    spec.project_src = params["project_src"]
    spec.files = list(params["compose_files"] or [])
    spec.project_name = params["compose_project_name"]
    spec.profiles = list(params["compose_profiles"] or [])
    spec.service = params["compose_service"]
    spec.env = {str(k): "" if v is None else str(v) for k, v in (params["env"] or {}).items()}
    spec.docker_bin = compose_bin
    spec.standalone = choice.kind == STANDALONE
    spec.config_in_image = params["alembic_config_in_image"] or "alembic.ini"
    return spec


def main() -> None:
    spec = connection_argument_spec()
    spec.update(
        sql=dict(type="str"),
        sql_file=dict(type="path"),
        alembic_config=dict(type="path"),
        from_revision=dict(type="str"),
        to_revision=dict(type="str", default="heads"),
        server_version=dict(type="int", default=15),
        config_file=dict(type="path"),
        trace=dict(type="bool", default=False),
        trace_bin_dir=dict(type="path"),
        ini_section=dict(type="str", default="alembic"),
        script_location=dict(type="str"),
        executor=dict(type="str", default="controller", choices=["controller", "python", "compose"]),
        python=dict(type="str"),
        alembic_config_in_image=dict(type="str", default="alembic.ini"),
        project_src=dict(type="path"),
        compose_files=dict(type="list", elements="path", default=[], aliases=["files"]),
        compose_project_name=dict(type="str", aliases=["project_name"]),
        compose_profiles=dict(type="list", elements="str", default=["migration"], aliases=["profiles"]),
        compose_service=dict(type="str", default="migration", aliases=["service"]),
        compose_command=dict(type="str", default="auto",
                             choices=["auto", "plugin", "standalone", "docker compose", "docker-compose"]),
        env=dict(type="dict", default={}, no_log=True),
        version_table=dict(type="str", default="alembic_version"),
        version_table_schema=dict(type="str"),
        jobs=dict(type="int", default=1),
    )
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=CONNECTION_MUTUALLY_EXCLUSIVE + [["sql", "sql_file", "alembic_config"]],
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(msg="migration_risk cannot load its engine", exception=IMPORT_ERROR)
    if not HAS_PGLAST:
        module.fail_json(msg=missing_required_lib("pglast"), exception=str(PGLAST_IMPORT_ERROR))
    params = module.params
    secrets = (params.get("login_password"), params.get("db_url"))
    if params["jobs"] < 0:
        module.fail_json(msg="jobs must be 0 (one process per CPU) or a positive number of processes "
                             "(got %s)" % params["jobs"], changed=False)
    if params["server_version"] is not None and not 10 <= params["server_version"] <= 18:
        module.fail_json(msg="server_version must be a PostgreSQL major version between 10 and 18 "
                             "(got %s)" % params["server_version"], changed=False)
    secrets += tuple(str(v) for v in (params["env"] or {}).values() if v)
    executor = params["executor"]
    if not (params["sql"] or params["sql_file"] or params["alembic_config"]) and executor != "compose":
        module.fail_json(msg="give one of sql, sql_file or alembic_config (or executor=compose to judge the "
                             "revisions of the release image)", changed=False)
    if (params["sql"] is not None or params["sql_file"]) and executor != "controller":
        module.fail_json(msg="executor=%s renders Alembic revisions; sql and sql_file are analysed as they are: "
                             "drop executor, or give alembic_config" % executor, changed=False)
    try:
        render = render_spec(module, params)
    except (RiskInputError, ComposeError) as exc:
        module.fail_json(msg=mask_secrets(str(exc), *secrets), changed=False)
    request = RiskRequest(
        sql=params["sql"], sql_file=params["sql_file"], alembic_config=params["alembic_config"],
        from_revision=params["from_revision"], to_revision=params["to_revision"],
        server_version=params["server_version"], config_file=params["config_file"], trace=params["trace"],
        trace_bin_dir=params["trace_bin_dir"], connection_params=params if has_connection_params(params) else None,
        runner=lambda argv, env: module.run_command(argv, environ_update=env),
        render=render,
        render_runner=lambda argv, env, stdin, cwd: module.run_command(argv, environ_update=env, data=stdin,
                                                                       cwd=cwd),
        ini_section=params["ini_section"], script_location=params["script_location"],
        version_table=params["version_table"], version_table_schema=params["version_table_schema"],
        jobs=params["jobs"])
    try:
        result = run_request(request)
    except (RiskInputError, ConnectionOptionsError) as exc:
        module.fail_json(msg=mask_secrets(str(exc), *secrets), changed=False)
    except Exception as exc:  # database errors and the like: reported without secrets
        module.fail_json(msg=mask_secrets("migration_risk failed: %s: %s" % (type(exc).__name__, exc), *secrets),
                         changed=False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
