# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The high path's data verification: row counts kept, verification queries answered as expected.

Counting uses pg_backup's counter (every user table of every schema, extension tables left out),
so a release and a backup manifest agree on what "every table" means. Tables of ``public`` are
named bare (``orders``), others ``schema.table``, as operators write them in ``protected_tables``.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def display_name(qualified: str) -> str:
    """``public.orders`` -> ``orders``; other schemas keep their prefix."""
    schema, _dot, table = qualified.partition(".")
    return table if schema == "public" else qualified


def release_counts(counts: Mapping[str, int], excluded: Iterable[str] = ()) -> Dict[str, int]:
    """Counts under display names, without the version table and other ``excluded`` names."""
    skip = {display_name(name) if "." in name else name for name in excluded}
    shown = {display_name(name): rows for name, rows in counts.items()}
    return {name: shown[name] for name in sorted(shown) if name not in skip}


def lost_rows(before: Mapping[str, Any], after: Mapping[str, Any], protected: Sequence[str] = ()) -> List[str]:
    """One line per protected table that is gone or has fewer rows (every table counted before, when
    ``protected`` is empty). A table that did not exist before cannot lose rows."""
    lost = []
    for table in (list(protected) or list(before)):
        if table not in after:
            lost.append("%s: table is gone (had %s rows)" % (table, before.get(table, "?")))
        elif table in before and int(after[table]) < int(before[table]):
            lost.append("%s: %s -> %s rows" % (table, before[table], after[table]))
    return lost


def answers_match(expected: Any, got: Any) -> bool:
    """Numbers compare as numbers (``3`` matches ``3.0`` and ``Decimal('3')``), everything else as text."""
    if isinstance(expected, (int, float)) and not isinstance(expected, bool) and got is not None \
            and _NUMBER.match(str(got)):
        return float(got) == float(expected)
    return str(got) == str(expected) if got is not None else expected is None


def query_mismatches(queries: Sequence[Mapping[str, Any]], answers: Sequence[Optional[Any]]) -> List[str]:
    """One line per verification query whose first column of the first row is not ``expect``."""
    return ["%s: expected %s, got %s" % (query["name"], query["expect"], got)
            for query, got in zip(queries, answers) if not answers_match(query["expect"], got)]


def rows_line(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    return "Rows before -> after: " + "; ".join(
        "%s %s -> %s" % (table, before.get(table, "new"), after[table]) for table in sorted(after))


def verified_line(tables: int, queries: int, check_mode: bool) -> str:
    return "%d table(s) counted, no rows lost; %d verification quer%s passed%s" % (
        tables, queries, "y" if queries == 1 else "ies",
        " (check mode: no migration ran between the two counts)" if check_mode else "")


def query_problems(queries: Sequence[Any]) -> List[str]:
    """Malformed verification queries, before anything runs."""
    problems = []
    for index, query in enumerate(queries):
        if not isinstance(query, Mapping) or not {"name", "query", "expect"} <= set(query):
            problems.append("verify_queries[%d] needs name, query and expect (got %r)" % (index, query))
    return problems


def read_database(info: Any, queries: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Exact row counts of every user table and the first value of each verification query.

    All in one read-only transaction: a verification query cannot change data, and one that fails
    is reported as its answer instead of hiding the others' (each runs under its own savepoint).
    """
    from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import count_rows, list_tables
    from ansible_collections.dbops.migrations.plugins.module_utils.pg import connect

    conn = connect(info, autocommit=False, application_name="dbops.migrations.release_verify")
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            counts = count_rows(cur, list_tables(cur))
            answers: List[Optional[Any]] = []
            for query in queries:
                cur.execute("SAVEPOINT verify_query")
                try:
                    cur.execute(query["query"])
                    row = cur.fetchone() if cur.description else None
                    answers.append(row[0] if row else None)
                except Exception as exc:  # psycopg2.Error: the query's own fault, reported as its answer
                    cur.execute("ROLLBACK TO SAVEPOINT verify_query")
                    answers.append("error: %s" % str(exc).strip().splitlines()[0])
        conn.rollback()
    finally:
        conn.close()
    return {"counts": counts, "answers": answers}
