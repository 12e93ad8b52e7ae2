"""docs/RELIABILITY.md: rows from outcomes, skipped rows not counted as survivors, appended steps merged."""
from __future__ import annotations

import json

from tests.helpers import reliability_report as report


def _row(name, outcome, kind="fault"):
    return {"kind": kind, "name": name, "holds": "a | b", "outcome": outcome, "seconds": 1.5}


def test_skipped_cases_are_neither_survivors_nor_failures(tmp_path):
    target = tmp_path / "RELIABILITY.md"
    report._write(target, {"a": _row("engine gone", "passed"), "b": _row("disk full", "failed"),
                           "c": _row("long story", "skipped"), "d": _row("bad risk", "passed", kind="bad_input")})
    text = target.read_text()
    assert "## Faults (1 of 2 survived; 1 more run nightly, not in this run)" in text
    assert "## Bad input (1 of 1 survived)" in text
    assert "| engine gone | a \\| b | passed | 1.5 |" in text
    assert "## Secrets" not in text


def test_the_second_step_appends_to_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "OUTCOMES_FILE", tmp_path / "outcomes.json")
    monkeypatch.setattr(report, "_outcomes", {"t::parallel": _row("first step", "passed"),
                                              "t::engine": _row("engine restart", "skipped")})
    monkeypatch.delenv("DBOPS_RELIABILITY_APPEND", raising=False)
    assert set(report._outcomes_of_the_whole_run()) == {"t::parallel", "t::engine"}

    monkeypatch.setattr(report, "_outcomes", {"t::engine": _row("engine restart", "passed")})
    monkeypatch.setenv("DBOPS_RELIABILITY_APPEND", "1")
    merged = report._outcomes_of_the_whole_run()
    assert {key: row["outcome"] for key, row in merged.items()} == {"t::parallel": "passed", "t::engine": "passed"}
    assert json.loads((tmp_path / "outcomes.json").read_text()) == merged

    monkeypatch.delenv("DBOPS_RELIABILITY_APPEND")
    assert set(report._outcomes_of_the_whole_run()) == {"t::engine"}  # a fresh run starts over
