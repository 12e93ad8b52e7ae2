"""Every molecule scenario under molecule/ runs `molecule test` against the host's Docker engine.

The scenarios are independent (own compose project, ports, images), so they run
MOLECULE_JOBS at a time (default 3); each test reports one scenario. `make test` runs the
scenarios in SAMPLED (one batch); the others repeat paths the playbook tests already cover
and run with DBOPS_NIGHTLY=1 (make test-nightly).
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.ansible import ansible_env

pytestmark = [pytest.mark.molecule, pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3000)]

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))
MOLECULE = Path(sys.executable).parent / "molecule"
SAMPLED = ("low",)
NIGHTLY = os.environ.get("DBOPS_NIGHTLY") == "1"
SELECTED = SCENARIOS if NIGHTLY else [name for name in SCENARIOS if name in SAMPLED]


def run_scenario(name: str) -> tuple[int, str, float]:
    env = ansible_env({"MOLECULE_GLOB": "molecule/*/molecule.yml", "PY_COLORS": "0", "ANSIBLE_FORCE_COLOR": "0",
                       "NO_COLOR": "1"})
    started = time.monotonic()
    try:
        proc = subprocess.run([str(MOLECULE), "test", "-s", name], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=float(os.environ.get("MOLECULE_TIMEOUT", 900)), stdin=subprocess.DEVNULL)
        return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        subprocess.run([str(MOLECULE), "destroy", "-s", name], cwd=REPO, env=env, capture_output=True, timeout=300)
        return -1, out + "\n(timed out)", time.monotonic() - started


@pytest.fixture(scope="module")
def outcomes(docker_client):
    jobs = int(os.environ.get("MOLECULE_JOBS", 3))
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {name: pool.submit(run_scenario, name) for name in SELECTED}
        return {name: future.result() for name, future in futures.items()}


def test_all_scenarios_are_found():
    assert {"low", "medium", "high", "risk_gate", "broken_release", "rollback_database"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", [name if name in SAMPLED else pytest.param(name, marks=pytest.mark.nightly)
                                      for name in SCENARIOS])
def test_scenario(outcomes, scenario):
    rc, output, seconds = outcomes[scenario]
    assert rc == 0, f"molecule test -s {scenario} failed (rc={rc}, {seconds:.0f} s):\n{output[-8000:]}"
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    assert re.search(r"verify: Executed: Successful", plain), plain[-4000:]
