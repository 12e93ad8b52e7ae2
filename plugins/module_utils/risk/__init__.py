# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Risk of pending migrations (module migration_risk).

Public entry: :func:`service.run_request` takes a :class:`service.RiskRequest` and returns the
pinned result. Behind it: ``alembic_units`` (pending revisions as units), ``render`` and
``render_elsewhere`` (offline SQL where the project's code lives), ``engine`` (parse, match,
score, path), ``rules`` (the catalogue), ``live_facts`` (catalog reads), ``trace`` (lock
trace on a schema copy), ``reports`` (Markdown, SARIF).
"""
