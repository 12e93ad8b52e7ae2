"""ansible-lint (production profile) and ansible-test sanity stay clean."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.ansible import REPO_ROOT, ansible_env

pytestmark = [pytest.mark.lint, pytest.mark.slow, pytest.mark.timeout(1200)]
BIN = Path(sys.executable).parent


def test_ansible_lint_production_profile():
    proc = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--nocolor"], cwd=REPO_ROOT, env=ansible_env(),
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]


def test_ansible_test_sanity():
    proc = subprocess.run([str(REPO_ROOT / "scripts" / "sanity")], cwd=REPO_ROOT, env=ansible_env(),
                          capture_output=True, text=True, timeout=1100, stdin=subprocess.DEVNULL)
    errors = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if line.startswith("ERROR")]
    assert proc.returncode == 0, "\n".join(errors[-60:]) or (proc.stdout + proc.stderr)[-6000:]
