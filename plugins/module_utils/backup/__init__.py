# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verified, restorable backups (module ``pg_backup``).

Public entry: :class:`operations.Backup` (dump, verify, restore, prune against a server).
Behind it: ``archive`` (pure: names, manifests, retention, version gates, hashing, atomic
files) and ``catalog`` (catalog reads and writes around a restore).
"""
