"""Analysis shared among worker processes gives exactly the serial answer: same order, same findings."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.risk import engine as risk_engine
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import (
    Engine, MigrationUnit, RiskInputError, analyse_files, effective_jobs, parallel_map)
from ansible_collections.dbops.migrations.plugins.module_utils.risk.service import RiskRequest, run_request

REPO = Path(__file__).resolve().parents[2]

EXTRA = {
    "zz_suppressed.sql": "-- migration-risk: ignore create-index because the table has 40 rows\n"
                         "CREATE INDEX ix_a ON reports (day);\nUPDATE t SET a = 1;\n",
    "zz_transaction.sql": "BEGIN;\nALTER TABLE t ADD COLUMN c int;\nCREATE INDEX ix_t ON t (c);\nCOMMIT;\n",
    "zz_password.sql": "ALTER ROLE app PASSWORD 'secret';\nDROP INDEX ix_old;\n",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list:
    spec = importlib.util.spec_from_file_location("bench_lint_corpus", REPO / "bench" / "lint" / "corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    directory = tmp_path_factory.mktemp("corpus")
    module.generate(directory, files=45)
    for name, sql in EXTRA.items():
        (directory / name).write_text(sql)
    return sorted(str(path) for path in directory.glob("*.sql"))


def _result(_path, analysis):
    return analysis.as_result()


@pytest.mark.parametrize("jobs", [2, 3, 0])
def test_files_in_parallel_equal_serial(corpus, jobs, monkeypatch):
    monkeypatch.setattr(risk_engine, "PARALLEL_MIN_UNITS", 10)  # jobs=0 shares this small corpus too
    serial = analyse_files(corpus, 15, jobs=1, summary=_result)
    parallel = analyse_files(corpus, 15, jobs=jobs, summary=_result)
    assert parallel == serial
    assert len(serial) == len(corpus)
    assert any(result["suppressed"] for result in serial)


def test_analyses_sent_back_by_workers_equal_serial(corpus):
    serial = analyse_files(corpus, 12, jobs=1)
    parallel = analyse_files(corpus, 12, jobs=2)
    assert [a.as_result() for a in parallel] == [a.as_result() for a in serial]
    assert [[f.line for f in a.findings] for a in parallel] == [[f.line for f in a.findings] for a in serial]


def test_first_file_that_does_not_parse_raises_as_serial(corpus, tmp_path):
    bad = []
    for name in ("b1.sql", "b2.sql"):
        path = tmp_path / name
        path.write_text("ALTER TABLE t ADD COLUMN;\n")
        bad.append(str(path))
    paths = corpus[:7] + bad + corpus[7:]
    with pytest.raises(RiskInputError) as serial:
        analyse_files(paths, jobs=1)
    with pytest.raises(RiskInputError) as parallel:
        analyse_files(paths, jobs=3)
    assert str(parallel.value) == str(serial.value)
    assert "b1.sql" in str(serial.value)


def test_units_parsed_ahead_equal_serial(corpus):
    def units():
        return [MigrationUnit(sql=Path(path).read_text(), revision="r%03d" % n, source=path)
                for n, path in enumerate(corpus)]
    serial = Engine(15, jobs=1).analyse(units()).as_result()
    parallel = Engine(15, jobs=2).analyse(units()).as_result()
    assert parallel == serial
    assert [r["revision"] for r in parallel["revisions"]] == ["r%03d" % n for n in range(len(corpus))]


def test_request_with_jobs_equals_serial(corpus):
    serial = run_request(RiskRequest(sql_file=corpus[-1]))
    parallel = run_request(RiskRequest(sql_file=corpus[-1], jobs=2))
    assert parallel == serial


def test_parallel_map_keeps_order_and_recovers_a_dead_worker():
    items = list(range(23))
    assert parallel_map(lambda n: n * n, items, 4) == [n * n for n in items]
    assert parallel_map(lambda n: n, items[:2], 8) == items[:2]
    assert parallel_map(lambda n: n, [], 3) == []
    # A result that cannot be sent back (a lambda does not pickle): this process computes it instead.
    answers = parallel_map(lambda n: (lambda: n), items, 3)
    assert [answer() for answer in answers] == items


def test_effective_jobs():
    assert effective_jobs(1, 5000) == 1
    assert effective_jobs(4, 2) == 2
    assert effective_jobs(0, risk_engine.PARALLEL_MIN_UNITS - 1) == 1
    assert effective_jobs(None, risk_engine.PARALLEL_MIN_UNITS) >= 1
