# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migrations that do not stall traffic (module ``alembic_migrate``).

Public entry: :class:`runner.Migrator` with a :class:`runner.MigrateRequest`. Behind it:
``alembic_cli`` (alembic's command line: plans, offline SQL, errors) and ``monitor`` (who
waited on the migration, and on whom it waited).
"""
