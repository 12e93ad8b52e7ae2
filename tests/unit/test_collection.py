"""The collection as a whole: metadata, documentation of every module, the release tarball."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.helpers.ansible import REPO_ROOT, ansible_env

BIN = Path(sys.executable).parent
MODULES = ["alembic_migrate", "compose_deploy", "migration_rehearsal", "migration_risk", "pg_backup", "release_lock", "release_verify"]
# plugins/filter/release.py; each filter is documented in plugins/filter/<name>.yml
FILTERS = ["release_failure_after_maintenance", "release_failure_facts", "release_failure_lines", "release_failure_report",
           "release_rollback_commands", "release_summary", "release_summary_lines"]


def test_the_modules_are_the_capabilities():
    found = sorted(p.stem for p in (REPO_ROOT / "plugins" / "modules").glob("*.py") if not p.stem.startswith("_"))
    assert found == MODULES


def test_test_modules_have_unique_basenames():
    # tests/ has no __init__.py per folder: pytest imports each module by its basename, so two
    # files with one name (say unit/ and integration/) break collection of the whole suite.
    names = sorted(p.name for p in (REPO_ROOT / "tests").rglob("test_*.py") if ".venv" not in p.parts)
    assert [n for i, n in enumerate(names) if i and names[i - 1] == n] == []


def test_the_filters_are_the_release_filters():
    from ansible_collections.dbops.migrations.plugins.filter import release

    assert sorted(release.FilterModule().filters()) == FILTERS
    documented = sorted(p.stem for p in (REPO_ROOT / "plugins" / "filter").glob("*.yml"))
    assert documented == FILTERS


def test_filter_documentation_renders():
    proc = subprocess.run([str(BIN / "ansible-doc"), "-t", "filter", "--json"]
                          + [f"dbops.migrations.{name}" for name in FILTERS],
                          env=ansible_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    assert sorted(docs) == [f"dbops.migrations.{name}" for name in FILTERS]
    for name, doc in docs.items():
        assert doc["doc"]["short_description"] and doc["examples"] and doc["return"]["_value"], name
        assert doc["doc"]["version_added"] == "0.1.0" and doc["doc"]["options"]["_input"]["type"] == "dict", name


def test_galaxy_metadata():
    galaxy = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == ("dbops", "migrations")
    runtime = yaml.safe_load((REPO_ROOT / "meta" / "runtime.yml").read_text())
    assert runtime["requires_ansible"].startswith(">=")
    assert sorted(runtime["action_groups"]["migrations"]) == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_documentation_renders(module):
    proc = subprocess.run([str(BIN / "ansible-doc"), "--json", f"dbops.migrations.{module}"],
                          env=ansible_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json
    doc = json.loads(proc.stdout)[f"dbops.migrations.{module}"]
    assert doc["doc"]["short_description"] and doc["examples"] and doc["return"]
    assert doc["doc"]["version_added"] == "0.1.0"


def test_collection_builds(tmp_path):
    # A report the demo wrote on the build machine must not ship in the tarball.
    reports = REPO_ROOT / "reports"
    made_reports = not reports.exists()
    reports.mkdir(exist_ok=True)
    planted = reports / f"deploy-{tmp_path.name}.json"
    planted.write_text("{}")
    try:
        proc = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path),
                               str(REPO_ROOT)], env=ansible_env(), capture_output=True, text=True, timeout=300)
    finally:
        planted.unlink()
        if made_reports:
            reports.rmdir()
    assert proc.returncode == 0, proc.stderr
    tarball = next(tmp_path.glob("dbops-migrations-*.tar.gz"))
    names = tarfile.open(tarball).getnames()
    assert {f"plugins/modules/{module}.py" for module in MODULES} <= set(names)
    assert {"plugins/filter/release.py"} | {f"plugins/filter/{name}.yml" for name in FILTERS} <= set(names)
    assert not [n for n in names if n.startswith((".venv", ".collections", "examples/auto_trader/.wheels", "examples/ledger/.wheels",
                                                  "reports", "dist"))]
