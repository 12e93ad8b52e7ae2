"""pytest plugin: the time each test module took (setup, call and teardown), longest first.

Printed at the end of every run so that the suite's budget can be kept from a single log.
"""
from __future__ import annotations

from collections import defaultdict

_seconds: dict[str, float] = defaultdict(float)
_tests: dict[str, set] = defaultdict(set)


def pytest_runtest_logreport(report):
    module = report.nodeid.split("::", 1)[0]
    _seconds[module] += report.duration
    _tests[module].add(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section("time per test module")
    total = sum(_seconds.values())
    for module, seconds in sorted(_seconds.items(), key=lambda item: -item[1]):
        if seconds < 5:
            break
        terminalreporter.write_line("%8.1f s %4d tests  %s" % (seconds, len(_tests[module]), module))
    terminalreporter.write_line("%8.1f s in all" % total)
