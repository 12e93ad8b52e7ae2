#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
---
module: release_verify
short_description: Count every table and check that a migration lost no rows and answers verification queries
version_added: 0.1.0
author: dbops developers (@dbops)
description:
  - Counts the rows of every user table of every schema (the same tables M(dbops.migrations.pg_backup) counts for
    its manifest; tables of extensions are left out). Tables of C(public) are named bare (C(orders)), others
    C(schema.table).
  - With O(before), compares the counts with those; a protected table (O(protected_tables), every table counted
    before when empty) that is gone or has fewer rows fails the task.
  - Runs each of O(queries) and compares the first column of its first row with C(expect); numbers compare as
    numbers. A query that fails or answers something else fails the task, naming it.
  - Everything runs in one read-only transaction, so neither counting nor a verification query can change data.
extends_documentation_fragment:
  - dbops.migrations.postgres
  - dbops.migrations.attributes
attributes:
  check_mode:
    support: full
    details: Reads only; runs the same counts and queries as outside check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never changes anything.
options:
  before:
    description: Row counts taken before the migration (RV(rows) of an earlier call). Without it, the task only counts.
    type: dict
  protected_tables:
    description: Tables that must not lose rows; empty means every table counted in O(before).
    type: list
    elements: str
    default: []
  queries:
    description: Verification queries, each with C(name), C(query) and C(expect).
    type: list
    elements: dict
    default: []
  exclude_tables:
    description: Tables left out of the counts, such as the Alembic version table.
    type: list
    elements: str
    default: []
'''

EXAMPLES = r'''
- name: Count the rows before the migration
  dbops.migrations.release_verify:
    db_url: "{{ db_url }}"
    exclude_tables: [alembic_version]
  register: rows_before

- name: Verify the data after it
  dbops.migrations.release_verify:
    db_url: "{{ db_url }}"
    exclude_tables: [alembic_version]
    before: "{{ rows_before.rows }}"
    protected_tables: [orders, customers]
    queries:
      - name: no order without a customer
        query: SELECT count(*) FROM orders WHERE customer_id IS NULL
        expect: 0
'''

RETURN = r'''
rows:
  description: Row count of every table, by name.
  returned: success and when verification failed
  type: dict
  sample: {orders: 1200, customers: 300, audit.events: 51}
lost:
  description: One line per protected table that is gone or lost rows.
  returned: with O(before)
  type: list
  elements: str
mismatches:
  description: One line per verification query that failed or answered something else.
  returned: always
  type: list
  elements: str
rows_line:
  description: The counts before and after, in one line (with O(before)).
  returned: with O(before)
  type: str
msg:
  description: What was verified, or why verification failed.
  returned: always
  type: str
'''

import traceback  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402

from ansible_collections.dbops.migrations.plugins.module_utils.pg import (  # noqa: E402
    CONNECTION_MUTUALLY_EXCLUSIVE, ConnectionOptionsError, connection_argument_spec, conninfo_from_params,
    mask_secrets)
from ansible_collections.dbops.migrations.plugins.module_utils.release import verify  # noqa: E402

try:
    import psycopg2  # noqa: F401  pylint: disable=unused-import
    HAS_PSYCOPG2, PSYCOPG2_IMPORT_ERROR = True, None
except ImportError:
    HAS_PSYCOPG2, PSYCOPG2_IMPORT_ERROR = False, traceback.format_exc()


def main() -> None:
    spec = connection_argument_spec()
    spec.update(before=dict(type="dict"), protected_tables=dict(type="list", elements="str", default=[]),
                queries=dict(type="list", elements="dict", default=[]),
                exclude_tables=dict(type="list", elements="str", default=[]))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, mutually_exclusive=CONNECTION_MUTUALLY_EXCLUSIVE)
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)
    params = module.params
    problems = verify.query_problems(params["queries"])
    if problems:
        module.fail_json(msg="; ".join(problems) + ". Nothing was run.")
    secrets = [params.get("login_password")]
    try:
        info = conninfo_from_params(params)
        secrets.append(info.password)
        read = verify.read_database(info, params["queries"])
    except ConnectionOptionsError as exc:
        module.fail_json(msg=mask_secrets(exc, *secrets))
    except Exception as exc:  # psycopg2.Error and OSError: the database could not be read
        module.fail_json(msg="cannot count the rows: %s" % mask_secrets(str(exc).strip(), *secrets))
    rows = verify.release_counts(read["counts"], params["exclude_tables"])
    mismatches = verify.query_mismatches(params["queries"], read["answers"])
    result = dict(changed=False, rows=rows, mismatches=mismatches)
    if params["before"] is not None:
        result["lost"] = verify.lost_rows(params["before"], rows, params["protected_tables"])
        result["rows_line"] = verify.rows_line(params["before"], rows)
        if result["lost"]:
            module.fail_json(msg="Data verification failed, rows were lost: %s. %s"
                                 % ("; ".join(result["lost"]), result["rows_line"]), **result)
    if mismatches:
        module.fail_json(msg="Data verification failed: %s" % "; ".join(mismatches), **result)
    result["msg"] = (verify.verified_line(len(rows), len(params["queries"]), module.check_mode)
                     if params["before"] is not None else "%d table(s) counted" % len(rows))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
