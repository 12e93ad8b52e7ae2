# -*- coding: utf-8 -*-
"""Pure logic behind ``dbops.migrations.compose_deploy``.

Nothing here talks to Docker: the action plugin gathers facts through community.docker
modules (compose config, container lists, image inspection) and these functions turn
them into plans, health verdicts, diffs and messages. Everything is unit-tested.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Mapping, Sequence

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"
CONFIG_HASH_LABEL = "com.docker.compose.config-hash"

# Backup tags read <prefix>-<project>-<release replaced>: one project's rollback image never
# shadows another's, and no release tag is ever moved.
BACKUP_PREFIX = "dbops-rollback"
PROXY_MODES = ("auto", "resolving", "caching", "none")
# Seconds a retired container keeps serving after it left the service name: a re-resolving proxy's
# DNS cache (nginx ``resolver ... valid=1s``) and requests in flight to it run out meanwhile.
DRAIN_SECONDS = 2.0
# What a retired container waits beyond a proxy's resolver validity (requests in flight).
IN_FLIGHT_MARGIN = 1.0


ARGUMENT_SPEC: dict[str, Any] = dict(
    project_src=dict(type="path", required=True),
    project_name=dict(type="str"),
    files=dict(type="list", elements="path"),
    profiles=dict(type="list", elements="str", default=[]),
    services=dict(type="list", elements="str"),
    env=dict(type="dict", default={}),
    state=dict(type="str", default="present",
               choices=["present", "absent", "restarted", "stopped", "inspected"]),
    pull=dict(type="str", default="missing", choices=["always", "missing", "never", "policy"]),
    build=dict(type="str", default="never", choices=["always", "never", "policy"]),
    backup_tag=dict(type="str", default=BACKUP_PREFIX),
    rollback=dict(type="bool", default=False),
    tag_variable=dict(type="str", default="APP_VERSION"),
    image_variable=dict(type="str", default="APP_IMAGE"),
    allow_in_place=dict(type="bool", default=False),
    proxy=dict(type="dict", options=dict(
        service=dict(type="str"),
        mode=dict(type="str", default="auto", choices=list(PROXY_MODES)),
        reload_command=dict(type="list", elements="str", default=["nginx", "-s", "reload"]),
        drain=dict(type="float", default=2.0),
    )),
    rollback_on_failure=dict(type="bool", default=True),
    zero_downtime=dict(type="bool", default=True),
    health=dict(type="dict", default={}, options=dict(
        url=dict(type="str"),
        status_code=dict(type="list", elements="int", default=[200]),
        timeout=dict(type="int", default=60),
        interval=dict(type="float", default=1.0),
        successes=dict(type="int", default=3),
        settle=dict(type="float", default=5.0),
        containers=dict(type="bool", default=True),
        container_path=dict(type="str"),
        container_port=dict(type="int"),
    )),
    stop_timeout=dict(type="int", default=20),
    drain_seconds=dict(type="float", default=DRAIN_SECONDS),
    log_lines=dict(type="int", default=40),
    remove_volumes=dict(type="bool", default=False),
    run=dict(type="str"),
    run_command=dict(type="list", elements="str"),
    compose_command=dict(type="str", default="auto", choices=["auto", "plugin", "standalone"]),
)


class ComposeError(Exception):
    """Bad input or an engine answer that stops the deploy before anything changes."""


# --------------------------------------------------------------------------- images


@dataclasses.dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        if self.digest:
            return "%s@%s" % (self.repository, self.digest)
        return "%s:%s" % (self.repository, self.tag or "latest")

    def with_tag(self, tag: str) -> str:
        return "%s:%s" % (self.repository, tag)


_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def parse_image_ref(image: str) -> ImageRef:
    """Split ``[registry[:port]/]name[:tag][@digest]`` (a port is not a tag)."""
    if not image or not image.strip():
        raise ComposeError("empty image reference")
    image = image.strip()
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    last_slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > last_slash:
        return ImageRef(image[:colon], image[colon + 1:], digest)
    return ImageRef(image, None if digest else "latest", digest)


def valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag or ""))


_PROJECT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def project_name_problem(name: str | None) -> str | None:
    """Why compose v2 would refuse ``name`` as a project name, with a name it accepts; None when fine."""
    if name is None or _PROJECT_NAME_RE.match(name):
        return None
    suggestion = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_") or "app"
    return ("project_name %r is not a compose project name: use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit (for example %r); nothing was changed" % (name, suggestion))


# --------------------------------------------------------------------------- compose config


@dataclasses.dataclass
class ServiceSpec:
    name: str
    image: str | None
    has_healthcheck: bool
    published_ports: list[str]
    container_name: str | None
    profiles: list[str]
    replicas: int
    build: bool

    @property
    def surge_capable(self) -> bool:
        """A second copy can run beside the first: no fixed name, no host port, one replica."""
        return not self.published_ports and not self.container_name and self.replicas == 1


def _healthcheck_enabled(raw: Any) -> bool | None:
    if not raw:
        return None
    if raw.get("disable"):
        return False
    test = raw.get("test")
    if isinstance(test, list) and test and test[0] == "NONE":
        return False
    return True


def _published_ports(raw: Any) -> list[str]:
    ports = []
    for port in raw or []:
        if isinstance(port, Mapping):
            published = port.get("published")
            if published not in (None, "", 0, "0"):
                host_ip = port.get("host_ip") or "0.0.0.0"
                ports.append("%s:%s" % (host_ip, published))
        elif isinstance(port, str) and ":" in port:
            ports.append(port.rsplit(":", 1)[0])
    return ports


def parse_compose_config(text: str | Mapping[str, Any]) -> tuple[str, dict[str, ServiceSpec]]:
    """``docker compose config --format json`` -> (project name, services)."""
    data = json.loads(text) if isinstance(text, str) else text
    if not isinstance(data, Mapping) or not isinstance(data.get("services"), Mapping):
        raise ComposeError("compose config has no services")
    services = {}
    for name, raw in data["services"].items():
        raw = raw or {}
        deploy = raw.get("deploy") or {}
        replicas = deploy.get("replicas")
        if replicas is None:
            replicas = raw.get("scale") or 1
        healthcheck = _healthcheck_enabled(raw.get("healthcheck"))
        services[name] = ServiceSpec(
            name=name,
            image=raw.get("image"),
            # None: the image's own HEALTHCHECK decides (looked up later)
            has_healthcheck=bool(healthcheck),
            published_ports=_published_ports(raw.get("ports")),
            container_name=raw.get("container_name"),
            profiles=list(raw.get("profiles") or []),
            replicas=int(replicas),
            build=bool(raw.get("build")),
        )
    return str(data.get("name") or ""), services


def select_services(available: Mapping[str, ServiceSpec], wanted: Sequence[str] | None,
                    run: str | None = None, active_profiles: Sequence[str] = ()) -> list[str]:
    """Services the deploy acts on; unknown names are an error that lists the real ones."""
    names = list(wanted or [])
    if run:
        names.append(run)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ComposeError(
            "unknown service%s %s; the compose project defines: %s. Check the service names "
            "(and profiles) in the compose files." % (
                "s" if len(unknown) > 1 else "", ", ".join(sorted(unknown)),
                ", ".join(sorted(available))))
    if wanted:
        return list(wanted)
    active = set(active_profiles)
    return [name for name, spec in available.items()
            if not spec.profiles or active.intersection(spec.profiles) or "*" in active]


# --------------------------------------------------------------------------- containers


@dataclasses.dataclass
class Container:
    id: str
    name: str
    service: str
    number: int
    image: str
    image_id: str
    state: str
    health: str
    oneoff: bool = False
    exit_code: int | None = None
    ports: list[str] = dataclasses.field(default_factory=list)
    config_hash: str | None = None  # the compose config hash it was created with
    hidden: bool = False  # attached, but not under its service name: a surge that never took traffic

    @property
    def running(self) -> bool:
        return self.state == "running"


def hidden_from_service(service: str, aliases_by_network: Mapping[str, Sequence[str]]) -> bool:
    """A container on its networks without the service-name alias cannot be reached through
    the service name: a release's new container before it was exposed."""
    return bool(aliases_by_network) and not any(service in (aliases or ()) for aliases in aliases_by_network.values())


_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def health_from_status(status: str) -> str:
    """``Up 3 seconds (health: starting)`` -> ``starting``; no marker -> ``none``."""
    match = _HEALTH_IN_STATUS.search(status or "")
    if not match:
        return "none"
    return "starting" if match.group(1) == "health: starting" else match.group(1)


def _labels(raw: Any) -> dict[str, str]:
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, str):  # `docker compose ps --format json` joins labels with commas
        out = {}
        for item in raw.split(","):
            key, _sep, value = item.partition("=")
            out[key] = value
        return out
    return {}


def listed_name(item: Mapping[str, Any]) -> str:
    """A container's name from the engine's list answer (names there start with a slash); its short
    id when the answer has no name."""
    names = item.get("Names") or [item.get("Name", "")]
    name = (names[0] if names else "").lstrip("/")
    return name or str(item.get("Id") or item.get("ID") or "")[:12]


def parse_container_list(items: Iterable[Mapping[str, Any]], project: str) -> list[Container]:
    """Containers of ``project`` from docker_host_info's verbose list (Docker API shape)."""
    containers = []
    for item in items or []:
        labels = _labels(item.get("Labels"))
        if labels.get(PROJECT_LABEL) != project:
            continue
        name = listed_name(item)
        status = item.get("Status") or ""
        exit_code = None
        match = re.search(r"Exited \((-?\d+)\)", status)
        if match:
            exit_code = int(match.group(1))
        containers.append(Container(
            id=str(item.get("Id") or item.get("ID") or ""),
            name=name,
            service=labels.get(SERVICE_LABEL, ""),
            number=int(labels.get(NUMBER_LABEL) or 0),
            image=str(item.get("Image") or ""),
            image_id=str(item.get("ImageID") or ""),
            state=str(item.get("State") or "").lower(),
            health=health_from_status(status),
            oneoff=labels.get(ONEOFF_LABEL, "False").lower() == "true",
            exit_code=exit_code,
            ports=_container_ports(item.get("Ports")),
            config_hash=labels.get(CONFIG_HASH_LABEL),
        ))
    return sorted(containers, key=lambda c: (c.service, c.number))


def _container_ports(raw: Any) -> list[str]:
    out = []
    for port in raw or []:
        if isinstance(port, Mapping) and port.get("PublicPort"):
            out.append("%s:%s" % (port.get("IP") or "0.0.0.0", port["PublicPort"]))
    return sorted(set(out))


def split_host_port(value: str) -> tuple[str, int]:
    host, _sep, port = value.rpartition(":")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def ports_owned_by(port: str, service: str, containers: Iterable[Container]) -> bool:
    """Is ``port`` published by a container of ``service`` (which the deploy replaces)?"""
    number = split_host_port(port)[1]
    for container in containers:
        if container.service == service and any(split_host_port(p)[1] == number for p in container.ports):
            return True
    return False


def port_conflict_message(busy: Mapping[str, str]) -> str:
    parts = ["%s (service %s)" % (port, service) for port, service in sorted(busy.items())]
    return ("host port%s %s already in use by another process or container; nothing was changed. Free %s "
            "or publish the service on another port (for example through env)." % (
                "s" if len(parts) > 1 else "", ", ".join(parts), "them" if len(parts) > 1 else "it"))


def by_service(containers: Iterable[Container], include_oneoff: bool = False) -> dict[str, list[Container]]:
    out: dict[str, list[Container]] = {}
    for container in containers:
        if container.oneoff and not include_oneoff:
            continue
        out.setdefault(container.service, []).append(container)
    return out


# --------------------------------------------------------------------------- planning


@dataclasses.dataclass
class ServiceChange:
    service: str
    action: str                   # create | recreate | start | unchanged
    before_image: str | None      # image reference running now
    before_image_id: str | None
    after_image: str | None       # reference the compose file asks for
    after_image_id: str | None    # None: not present locally yet (pull or build)
    strategy: str = "compose"     # compose | surge

    @property
    def changes(self) -> bool:
        return self.action != "unchanged"

    @property
    def image_changes(self) -> bool:
        if not self.after_image:
            return False
        if self.before_image_id is None:
            return True
        return self.before_image != self.after_image or self.before_image_id != self.after_image_id


_ACTION_WORDS = {
    "recreate": "recreate", "recreated": "recreate",
    "creating": "create", "created": "create", "create": "create",
    "starting": "start", "started": "start", "start": "start",
    "running": "unchanged",
}


def services_from_dry_run(actions: Iterable[Mapping[str, Any]], project: str,
                          containers: Iterable[Container], services: Iterable[str]) -> dict[str, str]:
    """docker_compose_v2 check-mode ``actions`` -> {service: create|recreate|start}."""
    by_name = {c.name: c.service for c in containers}
    known = set(services)
    out: dict[str, str] = {}
    rank = {"start": 1, "create": 2, "recreate": 3}
    for action in actions or []:
        if action.get("what") not in ("container", "service"):
            continue
        status = str(action.get("status", "")).lower()
        verb = _ACTION_WORDS.get(status)
        if verb is None or verb == "unchanged":
            continue
        ident = str(action.get("id", ""))
        service = by_name.get(ident)
        if service is None:
            service = _service_from_container_name(ident, project, known)
        if service is None:
            continue
        if rank[verb] > rank.get(out.get(service, ""), 0):
            out[service] = verb
    return out


def _service_from_container_name(name: str, project: str, services: set[str]) -> str | None:
    # Compose names containers PROJECT-SERVICE-N; a temporary rename adds an ID_ prefix.
    name = re.sub(r"^[0-9a-f]{12}_", "", name)
    if name in services:
        return name
    prefix = project + "-"
    if name.startswith(prefix):
        rest = name[len(prefix):]
        rest = re.sub(r"-\d+$", "", rest)
        if rest in services:
            return rest
    return None


def plan_changes(services: Mapping[str, ServiceSpec], targets: Sequence[str],
                 containers: Sequence[Container], dry_run: Mapping[str, str],
                 image_ids: Mapping[str, str | None], zero_downtime: bool = True) -> list[ServiceChange]:
    """One entry per target service: what happens to it and how."""
    current = by_service(containers)
    plan = []
    for name in targets:
        spec = services[name]
        running = [c for c in current.get(name, []) if c.running]
        first = running[0] if running else (current.get(name) or [None])[0]
        action = dry_run.get(name, "unchanged")
        if not running and action == "unchanged":
            action = "start" if current.get(name) else "create"
        strategy = "compose"
        if (zero_downtime and action == "recreate" and spec.surge_capable and len(running) == 1):
            strategy = "surge"
        plan.append(ServiceChange(
            service=name, action=action,
            before_image=first.image if first else None,
            before_image_id=first.image_id if first else None,
            after_image=spec.image,
            after_image_id=image_ids.get(spec.image or ""),
            strategy=strategy,
        ))
    return plan


def render_diff(plan: Sequence[ServiceChange]) -> dict[str, str]:
    """Ansible diff: one ``service: image (id)`` line per target service."""
    def line(service, image, image_id):
        if not image:
            return "%s: (not running)\n" % service
        short = (image_id or "").replace("sha256:", "")[:12] or "not present locally"
        return "%s: %s (%s)\n" % (service, image, short)
    before = "".join(line(c.service, c.before_image, c.before_image_id) for c in plan)
    after = "".join(line(c.service, c.after_image, c.after_image_id) if c.changes
                    else line(c.service, c.before_image, c.before_image_id) for c in plan)
    return {"before": before, "after": after, "before_header": "running images",
            "after_header": "images after deploy"}


def is_image_id(reference: str | None) -> bool:
    """``sha256:...`` or a bare hex id: what Docker shows for a container whose tag moved away."""
    ref = reference or ""
    return ref.startswith("sha256:") or bool(re.match(r"^[0-9a-f]{12,64}$", ref))


def short_id(image_id: str | None) -> str:
    return (image_id or "").replace("sha256:", "")[:12]


def sanitize_tag(text: str) -> str:
    """A valid image tag from ``text``: other characters become '-', at most 128 long."""
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).lstrip(".-") or "x"
    return tag[:128]


def backup_tag_name(prefix: str, project: str, replaced: str | None, image_id: str | None) -> str:
    """``<prefix>-<project>.<tag it replaced>``; a replaced image known only by its id gives the short id.
    The dot ends the project name (compose project names cannot hold one), so project ``shop`` never
    takes the backups of project ``shop-eu`` for its own."""
    release = None
    if replaced and not is_image_id(replaced):
        ref = parse_image_ref(replaced)
        release = ref.tag or (ref.digest or "").replace("sha256:", "")[:12] or None
    return sanitize_tag("%s-%s.%s" % (prefix, project, release or short_id(image_id) or "unknown"))


def backup_prefix(prefix: str, project: str) -> str:
    """The start every backup tag of ``project`` shares (see backup_tag_name)."""
    return sanitize_tag("%s-%s." % (prefix, project))


def backup_targets(plan: Sequence[ServiceChange], prefix: str, project: str = "") -> list[dict[str, str]]:
    """Backups to write before the update: the running image of each service whose image changes,
    kept as ``REPO:<prefix>-<project>.<tag it replaced>`` (REPO: the repository the compose file names)."""
    out, seen = [], set()
    for change in plan:
        if not change.changes or not change.before_image_id or not change.before_image:
            continue
        if not change.image_changes:  # recreated for config only: its image stays, no backup needed
            continue
        ref = parse_image_ref(change.after_image or change.before_image)
        replaced = change.before_image
        if is_image_id(replaced):
            replaced = None
        tag = backup_tag_name(prefix, project, replaced, change.before_image_id)
        if replaced and (parse_image_ref(replaced).tag or "").startswith(backup_prefix(prefix, project)):
            tag = parse_image_ref(replaced).tag  # it runs a backup already (after a rollback): keep that name
        target = ref.with_tag(tag)
        if (target, change.before_image_id) in seen:
            continue
        seen.add((target, change.before_image_id))
        out.append({"service": change.service, "image_id": change.before_image_id,
                    "source": change.before_image, "backup": target,
                    "replaced": replaced or short_id(change.before_image_id)})
    return out


def backup_images_result(backups: Sequence[Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """``backup_images``: {service: {image, id, replaced}}."""
    return {b["service"]: {"image": b["backup"], "id": b["image_id"], "replaced": b["replaced"]} for b in backups}


def choose_rollback_image(candidates: Sequence[Mapping[str, Any]], running_id: str | None,
                          wanted_tag: str | None = None) -> Mapping[str, Any] | None:
    """The backup to roll back to: the one named ``wanted_tag`` when given, else the most recently
    written backup whose image is not the one running now. Candidates: {tag, id, tagged_at}."""
    if wanted_tag:
        return next((c for c in candidates if c["tag"] == wanted_tag), None)
    usable = [c for c in candidates if c.get("id") != running_id]
    return max(usable, key=lambda c: (c.get("tagged_at") or "", c["tag"])) if usable else None


def display_image(container_image: str, image_id: str, tags: Sequence[str], prefix: str = BACKUP_PREFIX) -> str:
    """``repo:tag`` for what a container runs: its own reference while that is a release tag of its
    image, else another release tag of it (a rollback runs a backup tag), else a backup tag, else
    the short id."""
    releases = [t for t in tags if ":" + prefix + "-" not in t]
    if container_image in releases or (container_image in tags and not releases):
        return container_image
    if container_image and not is_image_id(container_image):
        # the same repository first: a rollback of REPO:2 shows REPO:1, not another name of that image
        repository = parse_image_ref(container_image).repository
        releases = [t for t in releases if parse_image_ref(t).repository == repository] or releases
    if releases:
        return sorted(releases)[0]
    if tags:
        return sorted(tags)[0]
    if container_image and not is_image_id(container_image):
        return container_image
    return short_id(image_id) or container_image


# --------------------------------------------------------------------------- proxy

_NGINX_COMMENT = re.compile(r"#[^\n]*")


def _nginx_directives(config: str, name: str) -> list[str]:
    text = _NGINX_COMMENT.sub("", config or "")
    return [m.group(1).strip() for m in re.finditer(r"(?:^|[;{}\s])%s\s+([^;]*);" % re.escape(name), text)]


def _upstream_host(target: str, variables: Mapping[str, str]) -> tuple[str | None, bool]:
    """(host, through a variable) for a proxy_pass target such as ``http://app:8000/`` or ``$up``."""
    via_variable = "$" in target
    if via_variable:
        match = re.match(r"\$\{?(\w+)\}?", target.strip())
        target = variables.get(match.group(1), "") if match else ""
    match = re.match(r"^(?:[a-z]+://)?([^/:$\s]+)", target.strip())
    return (match.group(1) if match else None), via_variable


def classify_proxy(config: str, services: Iterable[str]) -> dict[str, Any]:
    """How an nginx configuration (``nginx -T``) reaches the compose services.

    ``resolving``: every proxy_pass to a service goes through a variable and a ``resolver`` is set,
    so nginx asks Docker's DNS again while it runs. ``caching``: a service is named literally
    (``proxy_pass http://app:8000;`` or an ``upstream`` block), resolved once when nginx starts
    or reloads. Returns {mode, upstreams (services it routes to), literal, via_variable,
    resolver_valid_s (see resolver_validity)}."""
    known = set(services)
    variables = {}
    for value in _nginx_directives(config, "set"):
        parts = value.split(None, 1)
        if len(parts) == 2:
            variables[parts[0].lstrip("$")] = parts[1].strip("'\"")
    upstream_blocks = {}
    for match in re.finditer(r"upstream\s+([\w.-]+)\s*{([^}]*)}", _NGINX_COMMENT.sub("", config or "")):
        servers = [s for s in _nginx_directives("{" + match.group(2), "server") if s]
        upstream_blocks[match.group(1)] = [h for h, _v in (_upstream_host(s.split()[0], {}) for s in servers)]
    literal, dynamic = set(), set()
    for target in _nginx_directives(config, "proxy_pass"):
        host, via_variable = _upstream_host(target, variables)
        hosts = upstream_blocks.get(host or "", [host])
        for name in hosts:
            if name in known:
                (dynamic if via_variable and host not in upstream_blocks else literal).add(name)
    resolvers = _nginx_directives(config, "resolver")
    if literal or (dynamic and not resolvers):
        mode = "caching"
    elif dynamic:
        mode = "resolving"
    else:
        mode = "none"
    return {"mode": mode, "upstreams": sorted(literal | dynamic), "literal": sorted(literal),
            "via_variable": sorted(dynamic), "resolver_valid_s": resolver_validity(resolvers)}


_NGINX_TIME_UNITS = {"ms": 0.001, "": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def resolver_validity(resolvers: Iterable[str]) -> float | None:
    """Longest ``valid=`` of nginx ``resolver`` directives (their arguments), in seconds; None when
    none sets it (nginx then keeps an answer for its DNS TTL: 600 s from Docker's DNS)."""
    longest = None
    for arguments in resolvers:
        for match in re.finditer(r"(?:^|\s)valid=(\d+)(ms|s|m|h|d)?(?=\s|$)", arguments):
            seconds = int(match.group(1)) * _NGINX_TIME_UNITS[match.group(2) or ""]
            longest = seconds if longest is None else max(longest, seconds)
    return longest


def retire_wait(drain_seconds: float, proxy: Mapping[str, Any] | None, reloaded: bool) -> float:
    """Seconds between taking a container out of its service name and stopping it: ``drain_seconds``,
    at least a re-resolving proxy's resolver validity plus the in-flight margin, and after a caching
    proxy's reload at least its ``drain`` (its old workers finish what they carry)."""
    wait = max(0.0, float(drain_seconds))
    if proxy and proxy.get("mode") == "resolving" and proxy.get("resolver_valid_s") is not None:
        wait = max(wait, float(proxy["resolver_valid_s"]) + IN_FLIGHT_MARGIN)
    if proxy and reloaded:
        wait = max(wait, float(proxy.get("drain") or 0.0))
    return wait


# A caching proxy re-resolves a service name only when it reloads, and Docker cannot take one
# alias off a running container without a reconnect during which its address does not answer.
# So the proxy is pointed at the containers that stay before the retiring ones leave the name:
# lines in the proxy container's /etc/hosts (read before DNS), marked so that they are removed
# again, also by the next release when a run died in between.
HOSTS_PIN_MARK = "# dbops.migrations release pin"


def hosts_without_pins(text: str) -> tuple[str, list[str]]:
    """The hosts file without the release's pin lines, and the lines removed."""
    kept, removed = [], []
    for line in text.splitlines(keepends=True):
        (removed if HOSTS_PIN_MARK in line else kept).append(line)
    return "".join(kept), [line.rstrip("\n") for line in removed]


def hosts_with_pin(text: str, name: str, addresses: Sequence[str]) -> str:
    """The hosts file with ``name`` resolving to ``addresses`` only (earlier pins dropped)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise ValueError("not a host name: %r" % name)
    base, _removed = hosts_without_pins(text)
    if base and not base.endswith("\n"):
        base += "\n"
    return base + "".join("%s\t%s\t%s\n" % (address, name, HOSTS_PIN_MARK) for address in addresses)


def resolved_addresses(getent_output: str, name: str) -> list[str]:
    """Addresses ``getent ahostsv4``/``hosts`` printed for ``name``, in order, once each."""
    found: list[str] = []
    for line in (getent_output or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] not in found:
            found.append(parts[0])
    return found


def in_place_problem(plan: Sequence["ServiceChange"], specs: Mapping[str, ServiceSpec],
                     traffic: Iterable[str], proxy_mode: str) -> str | None:
    """Why a release of the services that take traffic would drop requests, or None.

    Said before anything changes; the caller releases in place only with allow_in_place."""
    reasons = []
    for change in plan:
        if change.service not in set(traffic) or change.action != "recreate" or change.strategy == "surge":
            continue
        spec = specs[change.service]
        if spec.published_ports:
            why = "publishes host port %s, which two containers cannot share" % ", ".join(spec.published_ports)
        elif spec.container_name:
            why = "has a fixed container_name (%s)" % spec.container_name
        elif spec.replicas != 1:
            why = "runs %d replicas" % spec.replicas
        else:
            why = "has no single running container to replace"
        reasons.append("%s %s" % (change.service, why))
    if not reasons:
        return None
    return ("no zero-downtime strategy fits this release (proxy: %s): %s. Nothing was changed. Release in place "
            "(requests fail while the container restarts) with allow_in_place=true, or remove what blocks a "
            "second container (route traffic through a proxy instead of a host port)."
            % (proxy_mode, "; ".join(reasons)))


# --------------------------------------------------------------------------- health


@dataclasses.dataclass
class HealthVerdict:
    state: str                    # ok | pending | failed
    check: str | None = None      # container | url | exited
    service: str | None = None
    container: str | None = None
    reason: str = ""


def evaluate_containers(containers: Sequence[Container], targets: Sequence[str],
                        specs: Mapping[str, ServiceSpec], exclude_ids: Iterable[str] = (),
                        image_healthchecks: Mapping[str, bool] | None = None) -> HealthVerdict:
    """Are all target services' containers running and (where defined) healthy?"""
    exclude = set(exclude_ids)
    grouped = by_service([c for c in containers if c.id not in exclude])
    pending = None
    for service in targets:
        if service not in specs:
            continue
        present = grouped.get(service, [])
        if not present:
            return HealthVerdict("failed", "exited", service, None,
                                 "service %s has no container" % service)
        for container in present:
            if not container.running:
                return HealthVerdict(
                    "failed", "exited", service, container.name,
                    "container %s is %s%s" % (container.name, container.state or "gone",
                                              "" if container.exit_code is None
                                              else " (exit code %d)" % container.exit_code))
            if container.health == "unhealthy":
                return HealthVerdict("failed", "container", service, container.name,
                                     "container %s reports unhealthy" % container.name)
            if container.health == "starting" and pending is None:
                pending = HealthVerdict("pending", "container", service, container.name,
                                        "container %s is still starting" % container.name)
    return pending or HealthVerdict("ok")


def url_ok(status: int | None, expected: Sequence[int]) -> bool:
    return status is not None and status in expected


@dataclasses.dataclass
class UrlGate:
    """Counts consecutive good answers from the health URL."""
    needed: int
    streak: int = 0
    last_status: int | None = None
    last_error: str = ""

    def record(self, status: int | None, ok: bool, error: str = "") -> bool:
        self.last_status, self.last_error = status, error
        self.streak = self.streak + 1 if ok else 0
        return self.passed

    @property
    def passed(self) -> bool:
        return self.streak >= self.needed

    def describe(self, url: str) -> str:
        if self.last_status is None:
            return "%s did not answer (%s)" % (url, self.last_error or "no response")
        return "%s answered HTTP %s" % (url, self.last_status)


# --------------------------------------------------------------------------- messages


def tail_lines(text: str, count: int) -> list[str]:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-count:] if count > 0 else []


_PORT_PATTERNS = (
    re.compile(r"[Bb]ind for ([\d.:\[\]a-f]+?:\d+) failed: port is already allocated"),
    re.compile(r"listen tcp[46]? ([\d.:\[\]a-f]+?:\d+): bind: address already in use"),
    re.compile(r"Ports are not available: .*?([\d.]+:\d+)"),
)


_ENGINE_GONE = ("cannot connect to the docker daemon", "is the docker daemon running",
                "error while fetching server api version", "docker engine is not reachable", "/docker.sock")


def engine_unreachable(text: str) -> bool:
    """Whether compose, the Docker SDK or community.docker failed because the engine is gone."""
    lowered = (text or "").lower()
    return any(marker in lowered for marker in _ENGINE_GONE)


def engine_lost_message(reason: str, last_step: str | None, backups: list[str], during_rollback: bool) -> str:
    """What happened and what to run next when the engine stops answering mid-release."""
    where = "while rolling back" if during_rollback else "during the release"
    msg = ("the Docker engine stopped answering %s (last step: %s): %s. Nothing more was changed%s. An engine "
           "that stops takes every container down with it; services with a restart policy start again with the "
           "engine. Once `docker info` answers, run this task again: it releases from whatever runs then"
           % (where, last_step or "start", reason.rstrip("."),
              "" if during_rollback else " and nothing was rolled back"))
    if backups:
        msg += ", or run it with rollback=true to bring back %s" % ", ".join(backups)
    return msg + "."


def explain_compose_failure(text: str) -> str:
    """Turn compose/engine error output into one sentence that says what to do."""
    text = text or ""
    for pattern in _PORT_PATTERNS:
        match = pattern.search(text)
        if match:
            return ("host port %s is already in use by another process or container; free it or "
                    "publish the service on another port (for example through the compose env)."
                    % match.group(1))
    lowered = text.lower()
    if "cannot connect to the docker daemon" in lowered or "is the docker daemon running" in lowered:
        return "the Docker engine is not reachable; start it (systemctl start docker) or set DOCKER_HOST."
    if "no such service" in lowered:
        match = re.search(r"no such service:? ?([\w.-]+)", text, re.I)
        return "unknown service %s; check the service names in the compose files." % (
            match.group(1) if match else "")
    if "no such image" in lowered or "pull access denied" in lowered or "manifest unknown" in lowered:
        return ("an image is neither present locally nor pullable; build it first or fix the "
                "image reference. Compose said: %s" % _first_error_line(text))
    return _first_error_line(text)


def _first_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[-1] if lines else "compose failed without output"


def explain_config_failure(text: str, command: str = "docker compose") -> str:
    return ("the compose files are not valid: %s. Fix them, then check with `%s config`."
            % (_first_error_line(text), command))


def dump_plan(plan: Sequence[ServiceChange]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(change) for change in plan]


def container_dict(container: Container) -> dict[str, Any]:
    return dataclasses.asdict(container)


def container_from_dict(data: Mapping[str, Any]) -> Container:
    return Container(**{f.name: data.get(f.name) for f in dataclasses.fields(Container)})


def spec_from_dict(data: Mapping[str, Any]) -> ServiceSpec:
    return ServiceSpec(**{f.name: data.get(f.name) for f in dataclasses.fields(ServiceSpec)})
