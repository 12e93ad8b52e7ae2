# -*- coding: utf-8 -*-
"""Target-side helpers for compose_deploy (and alembic_migrate's compose executor): which
compose CLI to drive, engine facts, and the wait for health.

Runs inside the compose_deploy module on the target host, with the Docker SDK, so that
polling a release's health is one module call instead of one per poll. It reads (containers,
networks, volumes, images and their tags, logs, the health URL), writes the env file, hides or
exposes a surged container, takes a retired one out of its service name, and runs commands in
the proxy container (its configuration dump and graceful reload); every other change to the
project goes through community.docker's modules (compose v2) or the ``docker-compose`` command
(v1).
"""
from __future__ import annotations

import os
import tempfile
import time
import urllib.error
from typing import Any, Callable, Mapping, Sequence

from ansible.module_utils.urls import open_url

from ansible_collections.dbops.migrations.plugins.module_utils.compose import plan as compose
from ansible_collections.dbops.migrations.plugins.module_utils.compose import v1 as compose_v1


def _probe_version(module, argv: list[str]) -> tuple[str | None, str]:
    """(version, "") when ``argv`` printed a version, else (None, why not)."""
    rc, out, err = module.run_command(argv)
    if rc == 0 and out.strip():
        return out.strip(), ""
    return None, (err or out).strip() or "exit code %d" % rc


def choose_compose_cli(module, requested: str) -> tuple[compose_v1.ComposeChoice, str]:
    """The compose CLI to drive for ``compose_command`` and its executable: ``docker`` for the
    v2 plugin, ``docker-compose`` for v1. Raises ComposeError saying what to install."""
    docker_bin = module.get_bin_path("docker")
    plugin_version, plugin_error = None, "the docker CLI is not installed on the target (docker-ce-cli or docker.io)"
    if requested != compose_v1.STANDALONE and docker_bin:
        plugin_version, plugin_error = _probe_version(module, [docker_bin, "compose", "version", "--short"])
    standalone_bin = standalone_version = None
    standalone_error = ""
    if requested == compose_v1.STANDALONE or not compose_v1.plugin_usable(plugin_version):
        standalone_bin = module.get_bin_path("docker-compose")
        if standalone_bin:
            standalone_version, standalone_error = _probe_version(module, [standalone_bin, "version", "--short"])
    choice = compose_v1.choose_compose(requested, plugin_version, plugin_error, standalone_version, standalone_error)
    return choice, (docker_bin if choice.kind == compose_v1.PLUGIN else standalone_bin)


def docker_client(timeout: int = 10):
    import docker  # imported late: a missing SDK becomes a clear error, not an import crash
    return docker.from_env(timeout=timeout)


def write_env_file(env: Mapping[str, Any], dotenv: str = "") -> tuple[str, str]:
    """A 0700 directory holding a 0600 env file with ``env`` (after ``dotenv``, the text of the
    project's .env, when given); returns (directory, file)."""
    text = compose_v1.merged_env_text(dotenv, env)
    directory = tempfile.mkdtemp(prefix="dbops-compose-")
    path = os.path.join(directory, "deploy.env")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return directory, path


def containers(client, project: str, with_aliases: bool = False) -> list[compose.Container]:
    """The project's containers; ``with_aliases`` also inspects each service container to tell
    whether it is reachable under its service name (one more API call per container)."""
    items = client.api.containers(all=True, filters={"label": "%s=%s" % (compose.PROJECT_LABEL, project)})
    found = compose.parse_container_list(items, project)
    for container in found if with_aliases else ():
        if container.service and not container.oneoff:
            # the list API leaves aliases out; only inspect has them
            container.hidden = compose.hidden_from_service(container.service, _network_aliases(client, container.id))
    return found


def project_networks(client, project: str) -> list[str]:
    return sorted(n["Name"] for n in client.api.networks(filters={"label": "%s=%s" % (compose.PROJECT_LABEL, project)}))


def project_volumes(client, project: str) -> list[str]:
    answer = client.api.volumes(filters={"label": "%s=%s" % (compose.PROJECT_LABEL, project)}) or {}
    return sorted(v["Name"] for v in answer.get("Volumes") or [])


def image_ids(client, refs: Sequence[str]) -> dict[str, str | None]:
    import docker.errors
    out: dict[str, str | None] = {}
    for ref in refs:
        if not ref:
            continue
        try:
            out[ref] = client.api.inspect_image(ref)["Id"]
        except docker.errors.ImageNotFound:
            out[ref] = None
    return out


def container_logs(client, container_id: str, lines: int) -> list[str]:
    import docker.errors
    try:
        raw = client.api.logs(container_id, stdout=True, stderr=True, tail=lines)
    except docker.errors.NotFound:
        return []
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return compose.tail_lines(text, lines)


def health_log(client, container_id: str) -> list[str]:
    """The healthcheck's own last outputs (why Docker calls it unhealthy)."""
    import docker.errors
    try:
        state = client.api.inspect_container(container_id).get("State", {})
    except docker.errors.NotFound:
        return []
    entries = (state.get("Health") or {}).get("Log") or []
    return ["healthcheck exit %s: %s" % (e.get("ExitCode"), (e.get("Output") or "").strip()[:300])
            for e in entries[-3:]]


def fetch_status(url: str, timeout: float) -> tuple[int | None, str]:
    try:
        with open_url(url, timeout=timeout, http_agent="dbops-compose-deploy", follow_redirects="safe") as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except Exception as exc:  # refused, reset, timeout: the service is not there
        return None, "%s: %s" % (type(exc).__name__, exc)


def wait_healthy(client, project: str, specs: Mapping[str, compose.ServiceSpec], targets: Sequence[str], *,
                 timeout: float, interval: float, settle: float = 0.0, url: str | None = None,
                 status_codes: Sequence[int] = (200,), successes: int = 1,
                 wait_containers: bool = True, exclude_ids: Sequence[str] = (),
                 watch_ids: Sequence[str] = (), fetch: Callable[[str, float], tuple[int | None, str]] = fetch_status,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll until every target container is running and healthy, stays so for ``settle``
    seconds, and ``url`` answered ``successes`` times in a row; or until a failure/timeout."""
    start = clock()
    deadline = start + timeout
    gate = compose.UrlGate(max(1, successes)) if url else None
    healthy_since = None
    verdict = compose.HealthVerdict("pending")
    while True:
        current = containers(client, project)
        seen = {c.id for c in current}
        visible = current if wait_containers else [c for c in current if c.health != "starting"]
        verdict = compose.evaluate_containers(visible, targets, specs, exclude_ids)
        gone = [i for i in watch_ids if i not in seen]
        if gone and verdict.state != "failed":
            verdict = compose.HealthVerdict("failed", "exited", None, gone[0][:12],
                                            "container %s disappeared" % gone[0][:12])
        now = clock()
        if verdict.state == "failed":
            break
        if verdict.state == "ok":
            healthy_since = now if healthy_since is None else healthy_since
            url_done = True
            if gate is not None and not gate.passed:
                status, error = fetch(url, max(1.0, interval * 2))
                gate.record(status, compose.url_ok(status, status_codes), error)
                url_done = gate.passed
            if now - healthy_since >= settle and url_done:
                break
        else:
            healthy_since = None
        if now >= deadline:
            if verdict.state == "pending":
                verdict = compose.HealthVerdict("failed", verdict.check, verdict.service, verdict.container,
                                                "%s after %ss" % (verdict.reason, timeout))
            elif gate is not None and not gate.passed:
                verdict = compose.HealthVerdict("failed", "url", None, None, gate.describe(url))
            elif verdict.state == "ok":
                break
            break
        sleep(interval)
    out: dict[str, Any] = {"state": verdict.state, "check": verdict.check, "service": verdict.service,
                           "container": verdict.container, "reason": verdict.reason,
                           "waited_s": round(clock() - start, 2)}
    if gate is not None:
        out["url_status"] = gate.last_status
    return out


def _network_aliases(client, container_id: str) -> dict[str, list[str]]:
    networks = client.api.inspect_container(container_id)["NetworkSettings"]["Networks"] or {}
    return {name: list(cfg.get("Aliases") or []) for name, cfg in networks.items()}


def _reconnect(client, container_id: str, network: str, aliases: list[str]) -> None:
    client.api.disconnect_container_from_network(container_id, network)
    client.api.connect_container_to_network(container_id, network, aliases=aliases)


def start_hidden(client, container_id: str, service: str) -> dict[str, list[str]]:
    """Start a created container without the service-name alias, so that a proxy resolving
    the service name cannot route to it before it is healthy. Returns its original aliases."""
    original = _network_aliases(client, container_id)
    for network, aliases in original.items():
        _reconnect(client, container_id, network, [a for a in aliases if a != service])
    client.api.start(container_id)
    return original


def expose(client, container_id: str, service: str, original: dict[str, list[str]]) -> None:
    """Give a healthy container its service-name alias back: from now on it takes traffic."""
    for network, aliases in original.items():
        wanted = list(aliases) if service in aliases else list(aliases) + [service]
        _reconnect(client, container_id, network, wanted)


def hide(client, container_id: str, service: str) -> dict[str, Any]:
    """Take a running container out of its service name: reconnect it to each network without the
    service alias. It comes back at the same address (and MAC, which Docker derives from it): the
    address the disconnect freed is the lowest free one, which Docker hands out next; the caller
    compares. Asking for it explicitly would fail on compose's networks (Docker takes an address
    only on networks created with a subnet of their own) and lengthen the reconnect. The container
    keeps serving whoever still knows its address (a proxy's DNS cache); connections in flight
    survive, and new ones sent during the reconnect (a fraction of a second) are answered once
    their SYN is sent again. Returns {addresses_before, addresses_after}; on a failed reconnect
    the old aliases come back."""
    before = _network_settings(client, container_id)
    for network, settings in before.items():
        aliases = list(settings.get("Aliases") or [])
        if service not in aliases:
            continue
        try:
            _reconnect(client, container_id, network, [a for a in aliases if a != service])
        except Exception:
            try:  # never leave a serving container off its network
                client.api.connect_container_to_network(container_id, network, aliases=aliases)
            except Exception:
                pass
            raise
    after = _network_settings(client, container_id)
    return {"addresses_before": sorted(s.get("IPAddress") for s in before.values() if s.get("IPAddress")),
            "addresses_after": sorted(s.get("IPAddress") for s in after.values() if s.get("IPAddress"))}


def _network_settings(client, container_id: str) -> dict[str, dict[str, Any]]:
    return dict(client.api.inspect_container(container_id)["NetworkSettings"]["Networks"] or {})


def image_tags(client, ids: Sequence[str]) -> dict[str, list[str]]:
    """{image id: its repo:tag names} for the images the given containers run."""
    import docker.errors
    out: dict[str, list[str]] = {}
    for image_id in dict.fromkeys(i for i in ids if i):
        try:
            out[image_id] = sorted(client.api.inspect_image(image_id).get("RepoTags") or [])
        except docker.errors.ImageNotFound:
            out[image_id] = []
    return out


def backup_candidates(client, repository: str, tag_prefix: str) -> list[dict[str, str]]:
    """This project's backup tags in ``repository``: {tag, id, tagged_at} (Docker's LastTagTime,
    which records when the backup was written)."""
    found = []
    for image in client.api.images(name=repository) or []:
        tags = [t for t in image.get("RepoTags") or [] if t.startswith(repository + ":" + tag_prefix)]
        if not tags:
            continue
        tagged_at = ((client.api.inspect_image(image["Id"]).get("Metadata") or {}).get("LastTagTime") or "")
        for tag in tags:
            found.append({"tag": tag[len(repository) + 1:], "ref": tag, "id": image["Id"],
                          "tagged_at": tagged_at})
    return found


def addresses_seen_by(client, viewer_id: str, container_ids: Sequence[str]) -> list[str]:
    """The containers' addresses on the networks ``viewer_id`` is on (how it reaches them)."""
    shared = set(_network_settings(client, viewer_id))
    found: list[str] = []
    for container_id in container_ids:
        for network, settings in sorted(_network_settings(client, container_id).items()):
            address = settings.get("IPAddress")
            if network in shared and address and address not in found:
                found.append(address)
    return found


# The hosts file is a bind mount: it is rewritten in place (truncate and write, same inode); a
# rename would fail with "Device or resource busy". The text travels in the environment, not argv.
_WRITE_HOSTS = ["sh", "-c", 'printf "%s" "$DBOPS_HOSTS" > /etc/hosts']


def read_hosts(client, container_id: str) -> str:
    rc, text = exec_in(client, container_id, ["cat", "/etc/hosts"])
    if rc != 0:
        raise RuntimeError("cat /etc/hosts exited %s: %s" % (rc, text.strip()[-300:]))
    return text


def write_hosts(client, container_id: str, text: str) -> None:
    rc, out = exec_in(client, container_id, _WRITE_HOSTS, environment={"DBOPS_HOSTS": text})
    if rc != 0:
        raise RuntimeError("writing /etc/hosts exited %s: %s" % (rc, out.strip()[-300:]))


def resolve_in(client, container_id: str, name: str) -> list[str] | None:
    """The IPv4 addresses ``name`` resolves to inside the container the way getaddrinfo does
    (a proxy's resolution); None when the container has no getent to ask."""
    rc, text = exec_in(client, container_id, ["getent", "ahostsv4", name])
    if rc in (126, 127) or (rc != 0 and "not found" in text and "getent" in text):
        return None
    return compose.resolved_addresses(text, name) if rc == 0 else []


def container_ips(client, container_id: str) -> list[str]:
    """The container's addresses on all its networks."""
    return [cfg["IPAddress"] for cfg in _network_settings(client, container_id).values() if cfg.get("IPAddress")]


def exec_in(client, container_id: str, argv: Sequence[str], timeout: int = 30,
            environment: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Run ``argv`` in a running container (no shell); (exit code, combined output)."""
    created = client.api.exec_create(container_id, list(argv), stdout=True, stderr=True,
                                     environment=dict(environment) if environment else None)
    raw = client.api.exec_start(created["Id"])
    rc = client.api.exec_inspect(created["Id"]).get("ExitCode")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return (rc if rc is not None else -1), text


def running_container_of(client, project: str, service: str) -> compose.Container | None:
    found = [c for c in containers(client, project) if c.service == service and c.running and not c.oneoff]
    return found[0] if found else None
