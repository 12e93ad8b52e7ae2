# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rehearse pending migrations on a restored copy of the data (module ``migration_rehearsal``).

Public entry: :class:`rehearsal.Rehearsal` with a :class:`rehearsal.RehearsalRequest`.
Behind it: ``measure`` (pure: what a revision did, from catalog snapshots and lock samples),
``calibrate`` (pure: measured lock time beside migration_risk's estimate), ``records``
(archive choice, rehearsal records and their freshness), ``scratch`` (scratch database
names and the leftovers of killed runs) and ``container`` (a throw-away PostgreSQL container as
the scratch server, and the containers killed runs left).
"""
