# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r'''
options:
  db_url:
    description:
      - Connection URL of the database, C(postgresql://user:password@host:port/dbname).
      - Mutually exclusive with the O(login_host), O(login_user), O(login_password) and O(login_db) options.
      - Never logged; masked in every message and result.
    type: str
  login_host:
    description: Host of the PostgreSQL server (a name, an address or a Unix socket directory).
    type: str
  login_port:
    description: Port of the PostgreSQL server.
    type: int
    default: 5432
  login_user:
    description: Role to connect as.
    type: str
  login_password:
    description: Password of O(login_user). Passed to child processes through the environment only.
    type: str
  login_db:
    description: Database to connect to.
    type: str
  connect_timeout:
    description: Seconds to wait for a connection before failing.
    type: int
    default: 10
requirements:
  - psycopg2 >= 2.8
'''
