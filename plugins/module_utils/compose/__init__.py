# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compose releases (module and action plugin ``compose_deploy``).

``plan`` is the pure logic (release plans, health verdicts, compose argv); ``v1`` drives the
standalone ``docker-compose``; ``engine`` runs on the target with the Docker SDK (which CLI,
engine facts, the wait for health). alembic_migrate's compose executor uses the same three.
"""
