"""Watch the process list for a secret while something runs.

Passwords must reach child processes through their environment, never their argv, which
any user on the host can read in /proc/PID/cmdline or `ps`.
"""
from __future__ import annotations

import os
import threading


class ArgvWatcher:
    """Polls every process's command line until stopped; records those containing ``secret``."""

    def __init__(self, secret: str, interval: float = 0.01):
        self.secret = secret.encode()
        self.interval = interval
        self.leaks: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _scan_once(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            if self.secret in cmdline:
                self.leaks.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._scan_once()
            self._stop.wait(self.interval)

    def __enter__(self) -> "ArgvWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def find_secret(secret: str, *texts: object) -> list[str]:
    """The texts (stringified) in which the secret or its URL-quoted form appears."""
    from urllib.parse import quote
    forms = {secret, quote(secret, safe="")}
    return [str(t)[:200] for t in texts if any(f in str(t) for f in forms)]


def files_containing(secret: str, *roots: str) -> list[str]:
    """Files under the roots whose bytes contain the secret."""
    hits = []
    needle = secret.encode()
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    with open(path, "rb") as handle:
                        if needle in handle.read():
                            hits.append(path)
                except OSError:
                    continue
    return hits
