"""The typed protocol between compose_deploy's action plugin and its module (compose/worker.py)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.compose import plan as compose_plan
from ansible_collections.dbops.migrations.plugins.module_utils.compose import worker

MODULE = Path(__file__).resolve().parents[2] / "plugins" / "modules" / "compose_deploy.py"
ACTION = Path(__file__).resolve().parents[2] / "plugins" / "action" / "compose_deploy.py"

SAMPLES = {"str": "x", "int": 3, "float": 1.5, "bool": True, "list": ["a"], "dict": {"k": "v"}}


def sample_request(operation: worker.Operation) -> dict:
    fields = {}
    for name, field in operation.fields.items():
        value = SAMPLES[field["type"]]
        if field["type"] == "list" and field.get("elements") == "int":
            value = [200]
        fields[name] = value
    return fields


@pytest.mark.parametrize("name", sorted(worker.OPERATIONS))
def test_every_operation_round_trips(name):
    operation = worker.OPERATIONS[name]
    fields = sample_request(operation)
    request = worker.build_request(name, **fields)
    assert request == dict(fields, op=name)
    received, read = worker.read_request(request)
    assert received is operation and read == fields
    # nullable fields may be None, and only they
    for key, field in operation.fields.items():
        problems = worker.request_problems(dict(request, **{key: None}))
        assert (problems == []) is field["nullable"], (key, problems)


@pytest.mark.parametrize("name", sorted(worker.OPERATIONS))
def test_a_missing_or_misspelled_field_is_an_error_not_none(name):
    fields = sample_request(worker.OPERATIONS[name])
    key = sorted(fields)[0]
    missing = {k: v for k, v in fields.items() if k != key}
    with pytest.raises(worker.WorkerProtocolError, match="missing field %s" % key):
        worker.build_request(name, **missing)
    misspelled = dict(missing, **{key + "s": fields[key]})
    problems = worker.request_problems(dict(misspelled, op=name))
    assert "unexpected field %ss" % key in problems and "missing field %s" % key in problems
    with pytest.raises(worker.WorkerProtocolError):
        worker.read_request(dict(misspelled, op=name))


def test_types_are_exact_and_unknown_operations_are_refused():
    fields = sample_request(worker.OPERATIONS["wait"])
    assert "timeout must be int, not str" in worker.request_problems(dict(fields, op="wait", timeout="20"))
    assert "timeout must be int, not bool" in worker.request_problems(dict(fields, op="wait", timeout=True))
    assert "targets must be list, not str" in worker.request_problems(dict(fields, op="wait", targets="app"))
    assert worker.request_problems(dict(fields, op="wait", interval=2)) == []  # an int is a float
    assert "project is None" in worker.request_problems(dict(fields, op="wait", project=None))
    assert "unknown worker operation 'nope'" in worker.request_problems({"op": "nope"})[0]
    assert "unknown worker operation None" in worker.request_problems({})[0]


def test_operations_say_whether_they_change_state():
    assert worker.READ_ONLY == {"prepare", "facts", "wait", "ports", "backups", "proxy_config", "v1_plan"}
    for name in ("surge_create", "expose", "hide", "proxy_exec", "cleanup", "v1_up", "v1_down", "v1_restart",
                 "v1_stop", "v1_run"):
        assert worker.OPERATIONS[name].changes, name


def test_the_option_is_hidden_from_users():
    assert worker.OPTION.startswith("_")
    assert worker.OPTION not in compose_plan.ARGUMENT_SPEC  # the action plugin's spec refuses it in a task
    # documented only as internal (sanity needs every option documented), never in the examples
    documentation, examples = MODULE.read_text().split('EXAMPLES = r"""')[:2]
    assert "_worker:" in documentation and "Internal." in documentation.split("_worker:")[1][:200]
    assert "_worker" not in examples.split('RETURN = r"""')[0]


def _functions(path: Path) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}


def _handlers() -> dict[str, str]:
    tree = ast.parse(MODULE.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "HANDLERS":
            return {key.value: value.id for key, value in zip(node.value.keys, node.value.values)}
    raise AssertionError("no HANDLERS table in the module")


def test_the_module_handles_every_operation_and_reads_only_declared_fields():
    handlers = _handlers()
    assert set(handlers) == set(worker.OPERATIONS)
    functions = _functions(MODULE)
    for op, function in handlers.items():
        read = {node.slice.value for node in ast.walk(functions[function])
                if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "request"
                and isinstance(node.slice, ast.Constant)}
        undeclared = read - set(worker.OPERATIONS[op].fields) - {"project_src"}
        assert not undeclared, (op, undeclared)


def test_the_action_plugin_sends_only_known_operations():
    sent = set()
    for node in ast.walk(ast.parse(ACTION.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("_worker", "_v1")
                and node.args and isinstance(node.args[0], ast.Constant)):
            sent.add(node.args[0].value)
    assert sent and sent <= set(worker.OPERATIONS), sent - set(worker.OPERATIONS)
