"""The AWX material loads, is well formed, and passes only variables the playbooks use."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.ansible import ansible_env

REPO = Path(__file__).resolve().parents[2]
AWX = REPO / "awx"
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}


def load(name: str):
    return yaml.safe_load((AWX / name).read_text())


TEMPLATES = load("templates.yml")
JOB_TEMPLATES = {jt["name"]: jt for jt in TEMPLATES["awx_job_templates"]}


def playbook_text(playbook: str) -> str:
    """The playbook and what it includes from playbooks/tasks and playbooks/vars, without comments."""
    path = REPO / playbook
    files = [path]
    if path.parent.name == "playbooks":
        files += sorted((path.parent / "tasks").glob("*.yml")) + sorted((path.parent / "vars").glob("*.yml"))
    lines = []
    for f in files:
        lines += [line for line in f.read_text().splitlines() if not line.lstrip().startswith("#")]
    return "\n".join(lines)


def variable_is_used(variable: str, playbook: str) -> bool:
    return re.search(r"(?<![\w.])%s(?![\w])" % re.escape(variable), playbook_text(playbook)) is not None


def survey_variables(obj) -> list[str]:
    return [q["variable"] for q in (obj.get("survey") or {}).get("spec", [])]


@pytest.mark.parametrize("name", sorted(JOB_TEMPLATES))
def test_job_template_playbook_exists_and_parses(name):
    playbook = JOB_TEMPLATES[name]["playbook"]
    assert (REPO / playbook).is_file(), playbook
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", "-i",
                           str(REPO / "inventories" / "local"), playbook], cwd=REPO, env=ansible_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(JOB_TEMPLATES))
def test_every_variable_a_job_template_passes_is_used_by_its_playbook(name):
    jt = JOB_TEMPLATES[name]
    variables = survey_variables(jt) + list(jt.get("extra_vars", {}))
    assert variables
    missing = [v for v in variables if not variable_is_used(v, jt["playbook"])]
    assert not missing, f"{name} passes {missing}, which {jt['playbook']} never reads"


def all_surveys():
    for jt in TEMPLATES["awx_job_templates"]:
        if "survey" in jt:
            yield jt["name"], jt["survey"]
    for wf in TEMPLATES["awx_workflows"]:
        if "survey" in wf:
            yield wf["name"], wf["survey"]


@pytest.mark.parametrize("name,survey", list(all_surveys()), ids=[n for n, _ in all_surveys()])
def test_surveys_are_well_formed(name, survey):
    assert survey["name"] and "description" in survey
    seen = set()
    for q in survey["spec"]:
        assert {"question_name", "variable", "type", "required"} <= set(q), q
        assert q["type"] in SURVEY_TYPES, q
        assert q["variable"] not in seen
        seen.add(q["variable"])
        if q["type"] == "multiplechoice":
            assert q["default"] in q["choices"], q
            assert all(isinstance(c, str) for c in q["choices"]), "AWX choices are strings: %s" % q


def test_deploy_survey_offers_exactly_the_pinned_risk_values():
    spec = {q["variable"]: q for q in JOB_TEMPLATES["dbops deploy"]["survey"]["spec"]}
    assert spec["risk"]["choices"] == ["auto", "low", "medium", "high"]
    assert {"risk", "app_version", "approve", "skip_migrate"} <= set(spec)
    assert spec["approve"]["default"] == "false"


def test_workflow_has_an_approval_node_between_the_check_and_the_deploy():
    wf = TEMPLATES["awx_workflows"][0]
    nodes = {n["identifier"]: n for n in wf["nodes"]}
    approvals = [n for n in nodes.values() if "approval" in n]
    assert len(approvals) == 1 and approvals[0]["approval"]["timeout"] > 0
    approval = approvals[0]["identifier"]
    check = next(n for n in nodes.values() if n.get("job_template") == "dbops migration check")
    deploy = next(n for n in nodes.values() if n.get("job_template") == "dbops deploy")
    assert approval in check["success_nodes"]
    assert deploy["identifier"] in nodes[approval]["success_nodes"]
    assert deploy["extra_data"] == {"approve": True}
    for node in nodes.values():
        for edge in node.get("success_nodes", []) + node.get("failure_nodes", []):
            assert edge in nodes
        if "job_template" in node:
            assert node["job_template"] in JOB_TEMPLATES


def test_workflow_variables_exist_in_the_deploy_playbook():
    wf = TEMPLATES["awx_workflows"][0]
    deploy = JOB_TEMPLATES["dbops deploy"]
    for variable in survey_variables(wf):
        assert variable_is_used(variable, deploy["playbook"]), variable
    for node in wf["nodes"]:
        for variable in node.get("extra_data", {}):
            jt = JOB_TEMPLATES[node["job_template"]]
            assert variable_is_used(variable, jt["playbook"]), (node["identifier"], variable)
            # AWX drops node extra_data a job template does not prompt for (survey or ask_variables)
            assert variable in survey_variables(jt) or jt.get("ask_variables_on_launch"), variable


def test_the_checker_catches_an_unknown_variable():
    assert not variable_is_used("rsik", "playbooks/deploy.yml")
    assert variable_is_used("risk", "playbooks/deploy.yml")


def test_configure_playbook_parses():
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check",
                           str(AWX / "configure.yml")], cwd=REPO, env=ansible_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_execution_environment_definition():
    ee = load("execution-environment.yml")
    assert ee["version"] == 3
    deps = ee["dependencies"]
    # Python and system packages come from the collection's own meta/execution-environment.yml,
    # which ansible-builder reads from the installed collection: one list, not two.
    assert "python" not in deps and "system" not in deps
    collections = {c["name"] for c in load(deps["galaxy"])["collections"]}
    assert {"community.docker", "community.postgresql", "dist/dbops-migrations-0.1.0.tar.gz"} <= collections
    meta = yaml.safe_load((REPO / "meta" / "execution-environment.yml").read_text())["dependencies"]
    python = (REPO / meta["python"]).read_text()
    for package in ("psycopg2", "pglast", "alembic", "docker", "requests"):
        assert package in python
    assert "postgresql-client" in (REPO / meta["system"]).read_text()
