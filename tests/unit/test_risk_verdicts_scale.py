"""migration_risk stays linear in the size of its input (line numbers, suppressions, findings)."""
from __future__ import annotations

import time

from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import analyse_sql

# Every statement gives findings (so each needs its line number), with a suppression comment now and then.
BLOCK = ("ALTER TABLE t%d ADD COLUMN c int;\n"
         "-- migration-risk: ignore drop-column because t%d.c is unused\n"
         "ALTER TABLE t%d DROP COLUMN old;\n"
         "UPDATE t%d SET c = 1;\n"
         "SELECT 'a string with -- migration-risk: ignore all inside';\n")


def corpus(statements: int) -> str:
    return "".join(BLOCK % (i, i, i, i) for i in range(statements // 4))


def best_of(runs: int, sql: str) -> float:
    """Best CPU time of the analysis (CPU time, so a busy machine does not make the test flaky)."""
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        analysis = analyse_sql(sql)
        result = analysis.as_result()
        lines = [finding.line for finding in analysis.findings]
        best = min(best, time.process_time() - start)
    assert result["findings"] and all(lines)  # the work was done, line numbers included
    return best


def test_analysis_time_grows_linearly():
    small, large = corpus(2000), corpus(20000)
    small_time = best_of(3, small)
    large_time = best_of(2, large)
    # Ten times the input takes about ten times as long; counting newlines from the start for every
    # finding (the quadratic way) took about thirty times as long on this corpus.
    assert large_time < 20 * small_time, (small_time, large_time)
    assert large_time < 20.0


def test_line_numbers_and_suppressions_are_right_at_scale():
    analysis = analyse_sql(corpus(20000))
    drops = [f for f in analysis.suppressed if f.rule == "drop-column"]
    assert len(drops) == 5000 and not [f for f in analysis.findings if f.rule == "drop-column"]
    assert drops[-1].line == 5 * 4999 + 3 and drops[-1].suppressed_reason == "t4999.c is unused"
    updates = [f for f in analysis.findings if f.rule == "update-all-rows"]
    assert len(updates) == 5000 and updates[1234].line == 5 * 1234 + 4
