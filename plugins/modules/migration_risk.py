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
  - The input is raw SQL (O(sql) or O(sql_file)) or an Alembic project (O(alembic_config)). Alembic revisions
    are rendered one by one to offline SQL (PostgreSQL dialect) without running the project's C(env.py),
    so every finding names its revision. A revision that cannot be loaded (it imports application code that
    is not installed) is reported as not analysed and counts as V(high).
  - The revision's Python is read too, for statements executed in loops (batched data changes) and for the
    rollback plan (a C(downgrade()) that is missing, only C(pass), or raises is no plan).
  - With a database (O(db_url) or the C(login_*) options) the server version, table sizes and row estimates,
    column types, indexes and constraints are read and change the verdict (an index on a 10-row table is
    V(low); on a 2 M-row table it is V(high)), and lock times are estimated from table sizes. Without a database
    unknown tables are assumed large and O(server_version) is used.
  - Tables created earlier in the same run are not risky. Alembic's bookkeeping on C(alembic_version) is
    never a finding.
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
    description: Path of the project's C(alembic.ini). Its C(script_location) names the revision scripts.
    type: path
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
    fail_msg: "Migration risk is {{ risk.risk }}: use -e risk={{ risk.risk }} ({{ risk.recommended_path }} path)"

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
recommended_path:
  description: V(auto) for low, V(review) for medium, V(manual) for high and critical.
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

from ansible_collections.dbops.migrations.plugins.module_utils._pg import (
    CONNECTION_MUTUALLY_EXCLUSIVE, ConnectionOptionsError, connection_argument_spec, has_connection_params,
    mask_secrets)

try:
    from ansible_collections.dbops.migrations.plugins.module_utils._risk_service import (
        RiskRequest, run_request)
    from ansible_collections.dbops.migrations.plugins.module_utils._risk_engine import (
        HAS_PGLAST, PGLAST_IMPORT_ERROR, RiskInputError)
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover
    IMPORT_ERROR = traceback.format_exc()
    HAS_PGLAST = False


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
    )
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=CONNECTION_MUTUALLY_EXCLUSIVE + [["sql", "sql_file", "alembic_config"]],
        required_one_of=[["sql", "sql_file", "alembic_config"]],
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(msg="migration_risk cannot load its engine", exception=IMPORT_ERROR)
    if not HAS_PGLAST:
        module.fail_json(msg=missing_required_lib("pglast"), exception=str(PGLAST_IMPORT_ERROR))
    params = module.params
    secrets = (params.get("login_password"), params.get("db_url"))
    if params["trace"] and not has_connection_params(params):
        module.fail_json(msg="trace=true needs a database: set db_url or the login_* options", changed=False)
    if params["server_version"] is not None and not 10 <= params["server_version"] <= 18:
        module.fail_json(msg="server_version must be a PostgreSQL major version between 10 and 18 "
                             "(got %s)" % params["server_version"], changed=False)
    request = RiskRequest(
        sql=params["sql"], sql_file=params["sql_file"], alembic_config=params["alembic_config"],
        from_revision=params["from_revision"], to_revision=params["to_revision"],
        server_version=params["server_version"], config_file=params["config_file"], trace=params["trace"],
        trace_bin_dir=params["trace_bin_dir"], connection_params=params if has_connection_params(params) else None,
        runner=lambda argv, env: module.run_command(argv, environ_update=env))
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
