#!/usr/bin/env python3
"""migration_risk over every .sql file of a directory: the whole-process side of the lint benchmark.

    .venv/bin/python bench/lint/analyse.py DIRECTORY [--jobs N]

Prints the number of files per risk level as JSON. ``--jobs`` shares the files among N processes
(0: one per CPU); the counts are the same for every N. Only what the analysis needs is imported, so a
whole-process timing measures interpreter start-up, the engine's imports and the analysis.
"""
from __future__ import annotations

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _import_path() -> None:
    """The repository as ansible_collections.dbops.migrations (the link `make bootstrap` makes)."""
    collections = os.path.join(REPO, ".collections")
    link = os.path.join(collections, "ansible_collections", "dbops", "migrations")
    if not os.path.exists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO, link, target_is_directory=True)
    if collections not in sys.path:
        sys.path.insert(0, collections)


def sql_files(directory) -> list:
    directory = str(directory)
    return sorted(os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".sql"))


def _risk(_path: str, analysis) -> str:
    return analysis.risk


def analyse_directory(directory, jobs: int = 1, server_version: int = 15) -> dict:
    """Files per risk level, each file analysed by itself (as the module's sql_file is)."""
    _import_path()
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import analyse_files
    counts: dict = {}
    for risk in analyse_files(sql_files(directory), server_version, jobs=jobs, summary=_risk):
        counts[risk] = counts.get(risk, 0) + 1
    return counts


def main(argv: list) -> int:
    jobs = 1
    args = list(argv)
    if "--jobs" in args:
        at = args.index("--jobs")
        jobs = int(args[at + 1])
        del args[at:at + 2]
    if len(args) != 1:
        sys.stderr.write(__doc__)
        return 2
    print(json.dumps(analyse_directory(args[0], jobs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
