"""What else the machine did while a benchmark ran.

A benchmark that keeps both cores busy itself (parallel dump jobs and the server they talk to) drives
the load average past the core count on its own, so the load average cannot tell a quiet machine
from a busy one. ``OtherCpu`` measures what matters: CPU time used by processes that are not the
benchmark's (its own process tree and the server's) while a cell ran, in cores.
"""
from __future__ import annotations

import os
import subprocess
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def busy_ticks() -> int:
    """CPU ticks spent on anything but idle and I/O wait, all cores together (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:9]]
    return sum(fields) - fields[3] - fields[4]


def _processes() -> Dict[int, Tuple[int, int]]:
    """pid -> (parent pid, CPU ticks of the process and of its children it has reaped)."""
    out: Dict[int, Tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue  # exited meanwhile
        fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
        # fields[1] is the parent; utime, stime, cutime, cstime are fields 14-17 of proc(5)
        out[int(entry)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    return out


def tree_ticks(roots: Iterable[int], processes: Optional[Dict[int, Tuple[int, int]]] = None) -> Dict[int, int]:
    """pid -> CPU ticks, for the given processes and all their descendants, reaped children included
    (``processes``: a snapshot of ``_processes()`` to use instead of reading /proc again)."""
    processes = _processes() if processes is None else processes
    children: Dict[int, List[int]] = {}
    for pid, (parent, _ticks) in processes.items():
        children.setdefault(parent, []).append(pid)
    seen = set()
    stack = [pid for pid in roots if pid in processes]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
    return {pid: processes[pid][1] for pid in seen}


def ticks_since(before: Dict[int, int], after: Dict[int, int]) -> int:
    """CPU ticks the processes of ``after`` used since ``before`` was taken (all of it for new ones).
    Per process, so that a process of the tree that exits meanwhile (a container stopped, a backend
    ended) does not take its whole lifetime's CPU off the total."""
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items() if ticks >= before.get(pid, 0))


def postmaster_pid(data_dir: str) -> int:
    """The pid of the PostgreSQL server of ``data_dir`` (-1 when it is not running)."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="ascii") as handle:
            return int(handle.readline())
    except (OSError, ValueError):
        return -1


# Cores' worth of CPU that other processes may use during a cell before a run counts as busy.
BUSY_OTHER_CORES = 0.3


def _command(pid: int) -> str:
    try:
        with open("/proc/%d/comm" % pid, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


class OtherCpu:
    """``with OtherCpu(roots) as other: ...`` then ``other.cores``: the CPU, in cores, that processes
    outside ``roots()`` (pids whose trees are the benchmark) used during the block, and
    ``other.top``: the busiest of those processes ("command[pid] cores"), to say what ran."""

    def __init__(self, roots: Callable[[], Iterable[int]]):
        self.roots = roots
        self.cores = 0.0
        self.own_cores = 0.0
        self.top: List[str] = []

    def __enter__(self) -> "OtherCpu":
        self._started = time.monotonic()
        self._busy = busy_ticks()
        processes = _processes()
        self._own = tree_ticks(self.roots(), processes)
        self._all = {pid: ticks for pid, (_parent, ticks) in processes.items()}
        return self

    def __exit__(self, *_exc) -> None:
        wall = max(time.monotonic() - self._started, 1e-6)
        processes = _processes()
        mine = tree_ticks(self.roots(), processes)
        own = ticks_since(self._own, mine)
        other = max(busy_ticks() - self._busy - own, 0)
        self.cores = round(other / TICKS_PER_SECOND / wall, 2)
        self.own_cores = round(own / TICKS_PER_SECOND / wall, 2)
        used = sorted(((ticks - self._all.get(pid, 0), pid) for pid, (_parent, ticks) in processes.items()
                       if pid not in mine and ticks > self._all.get(pid, 0)), reverse=True)
        self.top = ["%s[%d] %.2f" % (_command(pid), pid, ticks / TICKS_PER_SECOND / wall)
                    for ticks, pid in used[:3] if ticks / TICKS_PER_SECOND / wall >= 0.02]


def commit_measured(repo: str, paths: Iterable[str] = ("plugins",)) -> str:
    """The commit a report measures, and whether the measured paths had uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True).stdout.strip()
    dirty = git("status", "--porcelain", "--", *paths)
    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if dirty else "")
