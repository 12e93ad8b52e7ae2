"""bench/machine.py: how the benchmarks tell their own CPU use from other processes'."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _machine():
    spec = importlib.util.spec_from_file_location("bench_machine", REPO / "bench" / "machine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


machine = _machine()


def test_a_process_that_exits_meanwhile_does_not_take_its_lifetime_off_the_total():
    # a container stopped during a window: its pid is gone at the end; nothing it used before counts
    before = {10: 500, 11: 40}
    after = {11: 45}
    assert machine.ticks_since(before, after) == 5


def test_a_new_process_counts_with_everything_it_used():
    assert machine.ticks_since({1: 100}, {1: 110, 7: 30}) == 40


def test_a_reused_pid_with_fewer_ticks_is_not_a_negative_amount():
    assert machine.ticks_since({5: 900}, {5: 3}) == 0


def test_a_busy_child_of_the_benchmark_is_its_own_work():
    loop = "import time\nend = time.time() + 1.0\nwhile time.time() < end: pass\n"
    with machine.OtherCpu(lambda: [os.getpid()]) as other:
        subprocess.run([sys.executable, "-c", loop], check=True)
    # the reaped child's CPU is counted as the benchmark's (other tests may run beside this one)
    assert other.own_cores > 0.4


def test_a_busy_process_outside_the_roots_is_other_and_named():
    loop = "import time\nend = time.time() + 5\nwhile time.time() < end: pass\n"
    outsider = subprocess.Popen([sys.executable, "-c", loop])
    try:
        time.sleep(0.3)  # past its start-up
        with machine.OtherCpu(lambda: []) as other:  # nothing is the benchmark's
            time.sleep(1.0)
        assert other.cores > 0.4
        assert any(entry.startswith("python") and "[%d]" % outsider.pid in entry for entry in other.top), other.top
    finally:
        outsider.kill()
        outsider.wait()
