# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compose releases (module and action plugin ``compose_deploy``).

``plan`` is the pure logic (release plans, health verdicts, compose argv); ``v1`` drives the
standalone ``docker-compose``; ``engine`` runs on the target with the Docker SDK (which CLI,
engine facts, the wait for health); ``worker`` is the typed protocol between the action plugin
and the module (one argument spec per operation). alembic_migrate's compose executor uses
plan, v1 and engine.
"""
