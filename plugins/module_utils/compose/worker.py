# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The protocol between compose_deploy's action plugin and its module on the target.

The action plugin (controller) runs one step at a time on the target through the compose_deploy
module's hidden option ``_worker`` (``OPTION``): ``{"op": NAME, FIELD: VALUE, ...}``. Each
operation has one argument spec here (``OPERATIONS``): its fields, their types, which may be
None, and whether it changes state on the target. Both sides check a request against it with
``request_problems`` (Ansible's ArgumentSpecValidator plus exact types and presence), so a
renamed, misspelled or missing field is an error on the controller before anything is sent and
again in the module, never a silent None. The option is not documented for users, the action
plugin's own argument spec refuses it in a task, and results do not echo it in ``invocation``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

OPTION = "_worker"


@dataclasses.dataclass(frozen=True)
class Operation:
    name: str
    changes: bool               # changes state on the target (containers, networks, files)
    summary: str
    fields: dict[str, dict[str, Any]]   # {field: {"type": ..., "elements": ..., "nullable": bool}}

    def argument_spec(self) -> dict[str, dict[str, Any]]:
        """Ansible argument spec of the fields. Presence of every field, nullable ones included, is
        checked by request_problems (Ansible's ``required`` cannot say "present, may be None")."""
        spec = {}
        for name, field in self.fields.items():
            entry = {"type": field["type"], "required": not field["nullable"]}
            if field.get("elements"):
                entry["elements"] = field["elements"]
            spec[name] = entry
        return spec


def _f(kind: str, elements: str | None = None, nullable: bool = False) -> dict[str, Any]:
    return {"type": kind, "elements": elements, "nullable": nullable}


# The fields the docker-compose v1 operations share: the project's global options.
_V1_PROJECT = {"docker": _f("str"), "project": _f("str"), "files": _f("list", "str", nullable=True),
               "env_files": _f("list", "str"), "profiles": _f("list", "str"), "pull": _f("str"),
               "build": _f("str"), "deps": _f("dict"), "targets": _f("list", "str"), "specs": _f("dict")}


def _op(name: str, changes: bool, summary: str, **fields: dict[str, Any]) -> Operation:
    return Operation(name, changes, summary, fields)


OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    # read only
    _op("prepare", False, "find the compose CLI, write the env file (a private temporary file, removed by cleanup) "
        "and read the rendered compose config", env=_f("dict"), project_name=_f("str", nullable=True),
        files=_f("list", "str", nullable=True), compose_command=_f("str")),
    _op("facts", False, "the project's containers (with whether each is in its service name), image ids and tags",
        project=_f("str"), refs=_f("list", "str")),
    _op("wait", False, "wait until the targets' containers are healthy, stay so for settle seconds and the URL "
        "answers; the failing service's logs", project=_f("str"), specs=_f("dict"), targets=_f("list", "str"),
        timeout=_f("int"), interval=_f("float"), settle=_f("float"), url=_f("str", nullable=True),
        status_code=_f("list", "int"), successes=_f("int"), containers=_f("bool"), exclude_ids=_f("list", "str"),
        watch_ids=_f("list", "str"), log_lines=_f("int"), log_service=_f("str", nullable=True)),
    _op("ports", False, "which wanted host ports another process or container holds", project=_f("str"),
        ports=_f("dict")),
    _op("backups", False, "the project's backup tags per repository", repositories=_f("list", "str"),
        tag_prefix=_f("str")),
    _op("proxy_config", False, "the proxy's effective configuration (nginx -T in its container)",
        project=_f("str"), service=_f("str")),
    _op("v1_plan", False, "what docker-compose v1 up would do, from the config hashes",
        services=_f("list", "str"), all_services=_f("list", "str"), **_V1_PROJECT),
    # changes state
    _op("cleanup", True, "remove the temporary directory prepare wrote", tmpdir=_f("str")),
    _op("surge_create", True, "create one more container of a service (the new release) and start it hidden from "
        "its service name", project=_f("str"), service=_f("str"), scale=_f("int"), pull=_f("str"), build=_f("str"),
        docker=_f("str"), files=_f("list", "str", nullable=True), env_files=_f("list", "str"),
        profiles=_f("list", "str"), cli=_f("str"), deps=_f("dict"), specs=_f("dict")),
    _op("expose", True, "give healthy new containers their service name (reconnect with the alias)",
        service=_f("str"), aliases=_f("dict")),
    _op("hide", True, "take retired containers out of their service name (reconnect without the alias)",
        service=_f("str"), ids=_f("list", "str")),
    _op("proxy_exec", True, "run the proxy's graceful reload inside its container", project=_f("str"),
        service=_f("str"), command=_f("list", "str")),
    _op("proxy_pin", True, "point the proxy's name for an upstream service at the containers that stay (its /etc/hosts), "
        "or with no keep_ids remove a release's pins", project=_f("str"), service=_f("str"), upstream=_f("str"),
        keep_ids=_f("list", "str"), check=_f("bool")),
    _op("v1_up", True, "docker-compose v1 up -d", services=_f("list", "str"), **_V1_PROJECT),
    _op("v1_down", True, "docker-compose v1 down (nothing in check mode)", remove_volumes=_f("bool"),
        all_services=_f("list", "str"), all_profiles=_f("list", "str"), check=_f("bool"), **_V1_PROJECT),
    _op("v1_restart", True, "docker-compose v1 restart (nothing in check mode)",
        services=_f("list", "str", nullable=True), check=_f("bool"), **_V1_PROJECT),
    _op("v1_stop", True, "docker-compose v1 stop", services=_f("list", "str", nullable=True), **_V1_PROJECT),
    _op("v1_run", True, "docker-compose v1 run --rm of a one-off service", service=_f("str"),
        command=_f("list", "str"), **_V1_PROJECT),  # profiles: the project's and the service's own
)}

READ_ONLY = frozenset(name for name, op in OPERATIONS.items() if not op.changes)

_EXACT_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
                                             "list": (list, tuple), "dict": (dict,)}


class WorkerProtocolError(Exception):
    """A request that does not match its operation's spec."""


def request_problems(request: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``request`` ({"op": NAME, field: value, ...}) against its operation's
    spec: an unknown operation, unknown or missing fields, None where it is not allowed, wrong types
    (exactly: the controller sends what the spec says, no conversions). Empty when it matches."""
    name = request.get("op") if isinstance(request, Mapping) else None
    operation = OPERATIONS.get(name) if isinstance(name, str) else None
    if operation is None:
        return ["unknown worker operation %r (known: %s)" % (name, ", ".join(sorted(OPERATIONS)))]
    fields = {k: v for k, v in request.items() if k != "op"}
    problems = []
    for key in sorted(set(fields) - set(operation.fields)):
        problems.append("unexpected field %s" % key)
    for key in sorted(set(operation.fields) - set(fields)):
        problems.append("missing field %s" % key)
    known = {k: v for k, v in fields.items() if k in operation.fields and v is not None}
    result = ArgumentSpecValidator(operation.argument_spec()).validate(known)
    problems += [str(error) for error in result.errors if "missing required arguments" not in str(error)]
    for key, field in operation.fields.items():
        if key not in fields:
            continue
        value = fields[key]
        if value is None:
            if not field["nullable"]:
                problems.append("%s is None" % key)
            continue
        wanted = _EXACT_TYPES[field["type"]]
        if not isinstance(value, wanted) or (field["type"] in ("int", "float") and isinstance(value, bool)):
            problems.append("%s must be %s, not %s" % (key, field["type"], type(value).__name__))
    return sorted(set(problems), key=problems.index)


def build_request(op: str, **fields: Any) -> dict[str, Any]:
    """The value of the hidden option for one step; raises WorkerProtocolError when it does not match."""
    request = dict(fields, op=op)
    problems = request_problems(request)
    if problems:
        raise WorkerProtocolError("worker operation %s: %s" % (op, "; ".join(problems)))
    return request


def read_request(request: Mapping[str, Any]) -> tuple[Operation, dict[str, Any]]:
    """(operation, fields) of a received request; raises WorkerProtocolError when it does not match."""
    problems = request_problems(request)
    if problems:
        raise WorkerProtocolError("worker operation %s: %s" % (request.get("op"), "; ".join(problems)))
    return OPERATIONS[request["op"]], {k: v for k, v in request.items() if k != "op"}


def spec_dicts(specs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Service specs (dataclasses) as plain dicts for a request."""
    return {name: dataclasses.asdict(spec) for name, spec in specs.items()}
