"""Open-loop HTTP prober: one request every 1/rate seconds, whatever the previous ones do.

Each request runs in its own thread with a fixed timeout, so a slow answer never delays
the schedule (a closed loop would hide outages by waiting). Records start time, status,
latency and the body's ``version`` field for every request.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request


@dataclasses.dataclass
class Sample:
    t: float
    status: int | None
    latency: float
    version: str | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


class Prober:
    def __init__(self, url: str, rate: float = 50.0, timeout: float = 1.0):
        self.url, self.rate, self.timeout = url, rate, timeout
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clock: threading.Thread | None = None

    def _one(self, t0: float) -> None:
        start = time.monotonic()
        status, version, error = None, None, ""
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
                status = resp.status
                body = resp.read()
                try:
                    version = json.loads(body).get("version")
                except ValueError:
                    version = None
        except urllib.error.HTTPError as exc:
            status = exc.code
        except Exception as exc:  # timeouts, resets, refused
            error = type(exc).__name__
        sample = Sample(t0, status, time.monotonic() - start, version, error)
        with self._lock:
            self.samples.append(sample)

    def _schedule(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
                continue
            thread = threading.Thread(target=self._one, args=(next_at,), daemon=True)
            thread.start()
            self._threads.append(thread)
            next_at += period

    def start(self) -> "Prober":
        self._clock = threading.Thread(target=self._schedule, daemon=True)
        self._clock.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._clock:
            self._clock.join()
        for thread in self._threads:
            thread.join(self.timeout + 1)
        with self._lock:
            return sorted(self.samples, key=lambda s: s.t)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def summarize(samples: list[Sample]) -> dict:
    """Failed requests, longest failure window (first to last failure in a run), p99."""
    failed = [s for s in samples if not s.ok]
    longest, run_start, last_fail = 0.0, None, None
    for s in samples:
        if not s.ok:
            run_start = s.t if run_start is None else run_start
            last_fail = s.t
            longest = max(longest, last_fail - run_start + (1.0 / 50))
        else:
            run_start = None
    latencies = sorted(s.latency for s in samples if s.ok)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
    errors: dict[str, int] = {}
    for s in failed:
        key = str(s.status) if s.status is not None else (s.error or "error")
        errors[key] = errors.get(key, 0) + 1
    versions: dict[str, int] = {}
    for s in samples:
        if s.version:
            versions[s.version] = versions.get(s.version, 0) + 1
    return {"total": len(samples), "failed": len(failed), "longest_failure_s": round(longest, 3),
            "p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
            "versions": versions, "errors": errors,
            "last_version": next((s.version for s in reversed(samples) if s.version), None)}


def latency_phases(samples: list[Sample], started: float, ended: float) -> dict:
    """p50/p99/max latency (ms) of good answers and failures before, during and after a release
    (``started``/``ended``: time.monotonic() around it)."""
    def stats(selected: list[Sample]) -> dict:
        good = sorted(s.latency for s in selected if s.ok)

        def pick(q: float):
            return round(good[min(len(good) - 1, int(q * len(good)))] * 1000, 1) if good else None
        return {"n": len(selected), "failed": sum(1 for s in selected if not s.ok),
                "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(good[-1] * 1000, 1) if good else None}
    return {"before": stats([s for s in samples if s.t < started]),
            "during": stats([s for s in samples if started <= s.t <= ended]),
            "after": stats([s for s in samples if s.t > ended])}
