# -*- coding: utf-8 -*-
"""Pure logic for driving the standalone ``docker-compose`` command (v1, 1.28 or newer).

community.docker's compose modules drive only the ``docker compose`` v2 plugin. When only
``docker-compose`` v1 is on the target, the compose_deploy module runs it itself; this file
holds every decision about it: which compose to use, argument lists, the project name v1
derives, its ``config`` YAML and ``config --hash`` output, the plan ``up`` would carry out
(v1 has no ``--dry-run``) and its progress lines, turned into the action list the action
plugin reads from docker_compose_v2. Nothing here runs a command; everything is unit-tested.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterable, Mapping, Sequence

from ansible_collections.dbops.migrations.plugins.module_utils.compose import plan as compose

PLUGIN = "plugin"
STANDALONE = "standalone"
AUTO = "auto"
COMPOSE_COMMANDS = (AUTO, PLUGIN, STANDALONE)

PLUGIN_MINIMUM = (2, 18)
# Profiles (the migration one-off service) came with docker-compose 1.28.
STANDALONE_MINIMUM = (1, 28)

INSTALL_PLUGIN = "the compose plugin (docker-compose-plugin, 2.18 or newer)"
INSTALL_STANDALONE = ("docker-compose 1.28 or newer (Debian 12: apt-get install docker-compose; "
                      "elsewhere: pip install 'docker-compose>=1.28')")


# --------------------------------------------------------------------------- which compose


@dataclasses.dataclass(frozen=True)
class ComposeChoice:
    kind: str       # plugin | standalone
    version: str

    @property
    def label(self) -> str:
        """How the result names it: ``docker compose 2.26.1`` or ``docker-compose 1.29.2``."""
        return ("docker compose %s" if self.kind == PLUGIN else "docker-compose %s") % self.version


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """``v2.26.1-4`` / ``1.29.2`` / ``docker-compose version 1.29.2, build unknown`` -> (2, 26, 1)."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def clean_version(text: str | None) -> str:
    """The version as compose prints it with ``--short``, without a leading ``v``."""
    text = (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""
    return text[1:] if text[:1] in ("v", "V") else text


def _at_least(version: str | None, minimum: tuple[int, int]) -> bool:
    parsed = parse_version(version)
    return parsed is not None and parsed[:2] >= minimum


def plugin_usable(version: str | None) -> bool:
    return _at_least(version, PLUGIN_MINIMUM)


def choose_compose(requested: str, plugin_version: str | None, plugin_error: str = "",
                   standalone_version: str | None = None, standalone_error: str = "") -> ComposeChoice:
    """Pick the compose CLI for ``compose_command``.

    ``plugin_version`` is what ``docker compose version --short`` printed (None: it failed,
    ``plugin_error`` says why); ``standalone_version`` likewise for ``docker-compose``
    (None: not installed or not runnable). ``auto`` takes the plugin when it is 2.18 or
    newer, else docker-compose when present; anything unusable is a ComposeError that says
    what to install.
    """
    if requested not in COMPOSE_COMMANDS:
        raise compose.ComposeError("compose_command must be one of %s, not %r" % (", ".join(COMPOSE_COMMANDS), requested))
    plugin_ok = _at_least(plugin_version, PLUGIN_MINIMUM)
    standalone_ok = _at_least(standalone_version, STANDALONE_MINIMUM)
    if requested in (AUTO, PLUGIN) and plugin_ok:
        return ComposeChoice(PLUGIN, clean_version(plugin_version))
    if requested in (AUTO, STANDALONE) and standalone_ok:
        return ComposeChoice(STANDALONE, clean_version(standalone_version))

    if plugin_version is not None and not plugin_ok:
        plugin_problem = "docker compose %s is too old; 2.18 or newer is needed" % clean_version(plugin_version)
    else:
        plugin_problem = "docker compose v2 is not available (`docker compose version` failed: %s)" % (
            (plugin_error or "no output").strip())
    if standalone_version is not None:
        standalone_problem = ("docker-compose %s is too old: compose_deploy needs profiles, which came with "
                              "docker-compose 1.28" % clean_version(standalone_version))
    elif standalone_error.strip():
        standalone_problem = "`docker-compose version` failed: %s" % standalone_error.strip()
    else:
        standalone_problem = "docker-compose v1 is not installed"

    if requested == PLUGIN:
        hint = ""
        if standalone_ok:
            hint = " docker-compose %s is installed: set compose_command=standalone (or auto) to use it, or" % (
                clean_version(standalone_version))
        return _fail("%s.%s install %s." % (plugin_problem, hint, INSTALL_PLUGIN))
    if requested == STANDALONE:
        hint = " or use compose_command=auto to use docker compose %s" % clean_version(plugin_version) \
            if plugin_ok else ""
        return _fail("compose_command=standalone: %s. Install %s%s." % (standalone_problem, INSTALL_STANDALONE, hint))
    # auto: neither is usable
    return _fail("%s, and %s. Install %s, or %s." % (plugin_problem, standalone_problem, INSTALL_PLUGIN,
                                                     INSTALL_STANDALONE))


def _fail(msg: str) -> ComposeChoice:
    raise compose.ComposeError(msg)


def unsupported_options(pull: str) -> str | None:
    """Options docker-compose v1 cannot honour; None when the task can run on it."""
    if pull == "policy":
        return ("pull=policy follows each service's pull_policy, which docker-compose v1 does not know; "
                "use pull=missing, always or never, or install %s." % INSTALL_PLUGIN)
    return None


# --------------------------------------------------------------------------- project and env


def normalize_project_name(name: str) -> str:
    """docker-compose v1 keeps lower-case letters, digits, ``-`` and ``_`` of a project name."""
    return re.sub(r"[^-_a-z0-9]", "", (name or "").lower())


def dotenv_value(text: str, key: str) -> str | None:
    """The value of ``key`` in an env file (last assignment wins, quotes removed)."""
    value = None
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, raw = line.partition("=")
        if not sep or name.strip() != key:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            raw = raw[1:-1]
        value = raw
    return value


def project_name(requested: str | None, project_src: str, env: Mapping[str, Any] | None = None,
                 dotenv: str = "") -> str:
    """The name v1 gives the project: O(project_name), else COMPOSE_PROJECT_NAME from ``env`` or
    the project's .env, else the directory name; normalised as v1 does. It is always passed
    with ``-p`` so that the labels compose_deploy looks for are known in advance."""
    name = requested or (env or {}).get("COMPOSE_PROJECT_NAME") or dotenv_value(dotenv, "COMPOSE_PROJECT_NAME") \
        or os.path.basename(project_src.rstrip("/")) or "default"
    normalized = normalize_project_name(str(name))
    if not normalized:
        raise compose.ComposeError("project name %r has no letters or digits; set project_name" % name)
    return normalized


def merged_env_text(dotenv: str, env: Mapping[str, Any]) -> str:
    """One env file for v1 (its ``--env-file`` replaces the project's .env instead of adding to it):
    the project's .env first, then the task's variables, which win (the last assignment counts)."""
    lines = []
    if dotenv:
        lines.append(dotenv if dotenv.endswith("\n") else dotenv + "\n")
    for key, value in env.items():
        value = "" if value is None else str(value)
        if "\n" in value:
            raise compose.ComposeError("env value of %s contains a newline; compose env files cannot hold it" % key)
        # single quotes keep `$` literal in compose env files
        lines.append("%s=%s\n" % (key, value if "'" in value else "'%s'" % value))
    return "".join(lines)


# --------------------------------------------------------------------------- argv


def up_args(services: Sequence[str] | None, build: str) -> list[str]:
    """``up -d`` with the build policy (pull is handled before: v1 ``up`` has no ``--pull``)."""
    out = ["up", "-d", "--no-color"] + _build_flag(build)
    if services:
        out += ["--"] + list(services)
    return out


def _for_services(command: str, services: Sequence[str] | None) -> list[str]:
    """``COMMAND [-- SERVICE...]``: no services means all of them."""
    return [command] + (["--"] + list(services) if services else [])


def pull_args(services: Sequence[str] | None) -> list[str]:
    """``pull`` before ``up`` for pull=always."""
    return _for_services("pull", services)


def surge_args(service: str, scale: int, build: str) -> list[str]:
    """Create one more container of ``service`` without starting it or touching the others."""
    return ["up", "--no-start", "--no-recreate", "--no-deps", "--scale", "%s=%d" % (service, scale)] + \
        _build_flag(build) + ["--", service]


def _build_flag(build: str) -> list[str]:
    if build == "never":
        return ["--no-build"]
    if build == "always":
        return ["--build"]
    return []


def run_args(service: str, command: Sequence[str] | None) -> list[str]:
    """A one-off container, removed afterwards, without a TTY, dependencies started as compose does."""
    return ["run", "--rm", "-T", "--", service] + list(command or [])


def down_args(remove_volumes: bool) -> list[str]:
    return ["down"] + (["--volumes"] if remove_volumes else [])


def stop_args(services: Sequence[str] | None) -> list[str]:
    return _for_services("stop", services)


def restart_args(services: Sequence[str] | None) -> list[str]:
    return _for_services("restart", services)


def hash_args(services: Iterable[str]) -> list[str]:
    return ["config", "--hash=%s" % ",".join(services)]


# --------------------------------------------------------------------------- config


def parse_config(text: str) -> tuple[dict[str, compose.ServiceSpec], dict[str, list[str]]]:
    """``docker-compose config`` (YAML) -> (services, {service: services it depends on})."""
    try:
        import yaml  # PyYAML, which ansible-core itself needs; imported late for the sanity import test
    except ImportError as exc:  # pragma: no cover - ansible-core depends on it
        raise compose.ComposeError("PyYAML is needed on the target to read docker-compose v1's config; "
                                   "install python3-yaml") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise compose.ComposeError("docker-compose config printed no valid YAML: %s" % exc) from exc
    _name, specs = compose.parse_compose_config(data if isinstance(data, Mapping) else {})
    services = data["services"]
    deps = {name: dependencies(raw or {}, specs) for name, raw in services.items()}
    return specs, deps


def dependencies(raw: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """Services a service needs started first: depends_on, links, volumes_from, network_mode."""
    known = set(known)
    found: list[str] = []
    depends_on = raw.get("depends_on") or []
    found += list(depends_on.keys()) if isinstance(depends_on, Mapping) else [str(d) for d in depends_on]
    found += [str(link).split(":", 1)[0] for link in raw.get("links") or []]
    for item in raw.get("volumes_from") or []:
        item = str(item)
        if item.startswith("container:"):
            continue
        if item.startswith("service:"):
            item = item[len("service:"):]
        found.append(item.split(":", 1)[0])
    network_mode = str(raw.get("network_mode") or "")
    if network_mode.startswith("service:"):
        found.append(network_mode[len("service:"):])
    return [name for name in dict.fromkeys(found) if name in known]


def parse_hashes(text: str) -> dict[str, str]:
    """``docker-compose config --hash=a,b`` -> {service: config hash}."""
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[1]):
            out[parts[0]] = parts[1]
    return out


def with_dependencies(services: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[str]:
    """``services`` and everything they depend on, dependencies first (compose's start order)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in visiting:
            return
        visiting.add(name)
        for dep in deps.get(name, ()):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for service in services:
        visit(service)
    return order


# --------------------------------------------------------------------------- plan (v1 has no --dry-run)


def plan_up(services: Sequence[str], deps: Mapping[str, Sequence[str]], hashes: Mapping[str, str],
            containers: Sequence[compose.Container]) -> list[dict[str, str]]:
    """What ``docker-compose up -d SERVICES`` would do, as docker_compose_v2's check-mode actions.

    v1 recreates a service whose containers carry another config hash (the hash covers the
    service's options and its image ID), creates one without containers, starts stopped
    ones, and recreates a dependent of a created/recreated service only when that
    dependent's containers are stopped (``always_recreate_deps`` off).
    """
    current = compose.by_service(containers)
    actions: list[dict[str, str]] = []
    verbs: dict[str, str] = {}
    for service in with_dependencies(services, deps):
        present = current.get(service, [])
        stopped = [c for c in present if not c.running]
        if not present:
            verb = "Creating"
        elif any(c.config_hash != hashes.get(service) for c in present):
            verb = "Recreate"
        elif stopped and any(verbs.get(d) in ("Creating", "Recreate") for d in deps.get(service, ())):
            verb = "Recreate"
        elif stopped:
            verb = "Starting"
        else:
            continue
        verbs[service] = verb
        actions.append({"what": "service", "id": service, "status": verb})
    return actions


def down_actions(containers: Sequence[Mapping[str, Any]], networks: Sequence[str], volumes: Sequence[str],
                 services: Iterable[str], remove_volumes: bool) -> list[dict[str, str]]:
    """What ``docker-compose down`` removes, from the engine's project-labelled objects: the
    containers of the project's services (one-off ones included), its networks and, with
    ``--volumes``, its volumes. Empty: nothing to do (the result is not changed)."""
    known = set(services)
    out = [{"what": "container", "id": str(c["name"]), "status": "Removed"}
           for c in containers if c.get("service") in known]
    out += [{"what": "network", "id": name, "status": "Removed"} for name in networks]
    if remove_volumes:
        out += [{"what": "volume", "id": name, "status": "Removed"} for name in volumes]
    return out


# --------------------------------------------------------------------------- progress output

_EVENT_VERBS = {"Creating": "Created", "Recreating": "Recreated", "Starting": "Started", "Stopping": "Stopped",
                "Removing": "Removed", "Restarting": "Restarted", "Pulling": "Pulled", "Building": "Built"}
_CONTAINER_EVENT = re.compile(r"^(Creating|Recreating|Starting|Stopping|Removing|Restarting|Pulling)\s+(\S+)\s+\.\.\.\s+"
                              r"(done|error)\b", re.I)
_RESOURCE_EVENT = re.compile(r"^(Creating|Removing) (network|volume) \"?([^\s\"]+)\"?")


def parse_events(output: str) -> list[dict[str, str]]:
    """v1 progress lines (``Recreating p_app_1 ... done``) -> [{what, id, status}], one per object.

    ``Removing network X`` is printed even when X is already gone, so ``down`` does not use this
    to decide ``changed``."""
    events: dict[tuple[str, str], dict[str, str]] = {}
    for line in (output or "").splitlines():
        line = line.strip()
        match = _CONTAINER_EVENT.match(line)
        if match:
            verb, ident, outcome = match.groups()
            status = _EVENT_VERBS[verb.capitalize()] if outcome.lower() == "done" else "Error"
            events[("container", ident)] = {"what": "container", "id": ident, "status": status}
            continue
        match = _RESOURCE_EVENT.match(line)
        if match:
            verb, what, ident = match.groups()
            events[(what, ident)] = {"what": what, "id": ident, "status": _EVENT_VERBS[verb]}
    return list(events.values())


def missing_images(specs: Mapping[str, compose.ServiceSpec], services: Sequence[str],
                   image_ids: Mapping[str, str | None]) -> list[str]:
    """Images that pull=never forbids fetching and that are not present (built services excepted)."""
    out = []
    for service in services:
        spec = specs.get(service)
        if spec is None or not spec.image or spec.build:
            continue
        if not image_ids.get(spec.image) and spec.image not in out:
            out.append(spec.image)
    return out


def missing_images_message(images: Sequence[str]) -> str:
    return ("pull=never, and image%s %s %s not present on the target; build or load %s first, or use "
            "pull=missing." % ("s" if len(images) > 1 else "", ", ".join(images),
                               "are" if len(images) > 1 else "is", "them" if len(images) > 1 else "it"))
