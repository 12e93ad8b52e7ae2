"""Real-world Alembic patterns, each with the verdict it must get (tests/fixtures/alembic_histories).

Each fixture folder holds an alembic project reproducing one pattern seen in public projects
(application imports, third-party column types, dialect branches on ``engine.url``, rowcount
loops, ORM sessions, Flask-Migrate's layout, several ini sections, relative paths, version
locations, branches and merges) and ``expect.json`` with the exact verdict.  Rendering runs on
this interpreter, where the applications and sqlalchemy_utils are not installed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request

HISTORIES = Path(__file__).resolve().parents[1] / "fixtures" / "alembic_histories"
CASES = sorted(p.name for p in HISTORIES.iterdir() if (p / "expect.json").is_file())


def expectation(name: str) -> dict:
    return json.loads((HISTORIES / name / "expect.json").read_text())


def judge(name: str, **extra) -> dict:
    expect = expectation(name)
    request = RiskRequest(alembic_config=str(HISTORIES / name / expect.get("ini", "alembic.ini")),
                          ini_section=expect.get("ini_section", "alembic"), **extra)
    return run_request(request)


@pytest.mark.parametrize("name", CASES)
def test_history_gets_its_verdict(name):
    expect = expectation(name)
    modules_before = set(sys.modules)
    path_before = list(sys.path)
    result = judge(name)
    revisions = result["revisions"]
    analysed = [r for r in revisions if r["analysed"]]
    assert result["risk"] == expect["risk"], [(f["revision"], f["rule"], f["risk"]) for f in result["findings"]]
    assert len(analysed) == expect["analysed"], [(r["revision"], r["error"]) for r in revisions]
    assert len(revisions) - len(analysed) == expect["not_analysed"]
    assert result["rendered_by"] == "controller"
    assert all(len(r["source_sha256"]) == 64 for r in revisions)
    if "stand_ins" in expect:
        assert result["stand_ins"] == expect["stand_ins"]
    if "heads" in expect:
        assert sorted(result["heads"]) == expect["heads"]
    if "rollback_plan" in expect:
        assert result["checklist"]["rollback_plan"] is expect["rollback_plan"], result["checklist"]
    for revision, error in expect.get("errors", {}).items():
        assert [r["error"] for r in revisions if r["revision"] == revision] == [error]
        assert any(f["rule"] == "revision-not-analysed" and f["revision"] == revision and error in f["message"]
                   for f in result["findings"])
    # Rendering leaves this interpreter as it found it: no stand-ins, no application modules, same sys.path.
    leaked = [m for m in set(sys.modules) - modules_before
              if m.split(".")[0] in ("myapp", "sqlalchemy_utils", "billingapp", "shop_helpers")]
    assert leaked == [] and sys.path == path_before


def test_application_types_render_as_named_types():
    result = judge("app_imports")
    statement = next(f["statement"] for f in result["findings"] if f["rule"] == "create-table")
    assert "balance Money" in statement and "currency CurrencyType" in statement
    assert result["revisions"][0]["stand_ins"] == ["myapp", "myapp.models", "myapp.models.types",
                                                   "myapp.models.types.CurrencyType", "myapp.models.types.Money",
                                                   "myapp.settings"]


def test_engine_url_branch_takes_the_postgresql_path():
    result = judge("engine_url_branches")
    statements = " ".join(f["statement"] for f in result["findings"])
    assert "JSONB" in statements and "kind VARCHAR(20)" in statements
    assert "DROP TABLE" not in statements


def test_python_data_changes_are_data_transformations():
    loops = judge("rowcount_loops")
    orm = judge("orm_session")
    loop_lines = [f["statement"] for f in loops["findings"] if f["rule"] == "python-data-loop"]
    assert loop_lines == ["upgrade() line 16"]
    orm_findings = [(f["revision"], f["statement"]) for f in orm["findings"] if f["rule"] == "python-data-loop"]
    # the slug loop over ORM objects, the session.add in no loop is not one; app models stood in are named
    assert orm_findings[0] == ("0001", "upgrade() line 25")
    assert any(rev == "0002" and "session.query(myapp.models.User)" in text for rev, text in orm_findings)


def test_branches_and_merge_pending_from_one_applied_branch():
    expect = expectation("branches_merge")
    result = run_request(RiskRequest(alembic_config=str(HISTORIES / "branches_merge" / "alembic.ini"),
                                     from_revision="feat_a"))
    # In the order they would be applied: feat_b before the merge that needs it, then the other branch.
    assert [r["revision"] for r in result["revisions"]] == ["feat_b", "merge1", "hotfix"]
    assert expect["heads"] == sorted(result["heads"])


def test_analysed_share_over_all_fixtures():
    total = analysed = broken = 0
    for name in CASES:
        revisions = judge(name)["revisions"]
        total += len(revisions)
        analysed += sum(1 for r in revisions if r["analysed"])
        broken += expectation(name)["not_analysed"]
    # Only the deliberately broken revisions (no compile, a failing upgrade(), reflection) are not analysed.
    assert broken == 3 and analysed == total - broken
    print("analysed %d of %d revisions (%.0f%%)" % (analysed, total, 100.0 * analysed / total))
