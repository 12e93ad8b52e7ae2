# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throw-away PostgreSQL container as the scratch server of a rehearsal (option ``scratch_container``).

The container runs an image whose entrypoint honours ``POSTGRES_USER`` and ``POSTGRES_PASSWORD``
(the official ``postgres`` image, or ``dbops/postgres``), publishes 5432 on a random port of
127.0.0.1 and gets a random password through its environment: never argv, results or logs.
Its labels carry ``dbops.migrations.rehearsal=1`` and the owner record of the run that started it
(host, boot, pid and the pid's start time, the format of ``backup.archive``). A run removes its
container with its anonymous volumes in a ``finally``; a run killed with ``kill -9`` cannot, so
every run first removes the labelled containers whose run is certainly gone, and reports those
of other hosts, as ``scratch`` does for scratch databases.

The Docker SDK is imported only when a container is asked for, so the rest of the rehearsal
needs no Docker at all.
"""
from __future__ import annotations

import dataclasses
import re
import secrets
import sys
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backups
from ansible_collections.dbops.migrations.plugins.module_utils.compose.plan import listed_name
from ansible_collections.dbops.migrations.plugins.module_utils.pg import (
    ConnInfo, connect, mask_secrets, server_version_num)
from ansible_collections.dbops.migrations.plugins.module_utils.rehearse.records import RehearsalError

LABEL = "dbops.migrations.rehearsal"
OWNER_LABEL = "dbops.migrations.rehearsal.owner"
OWNER_KIND = "rehearsal_container"
NAME_PREFIX = "dbops-rehearsal-"
CONTAINER_PORT = 5432
PUBLISH_IP = "127.0.0.1"
DEFAULT_START_TIMEOUT = 120.0
DEFAULT_USER = "postgres"
MAINTENANCE_DB = "postgres"
# Docker's 64 MB /dev/shm makes parallel index builds and hash joins fail ("could not resize shared
# memory segment"); tmpfs costs memory only as far as it is used.
SHM_SIZE = "1g"
# Networks where Docker refuses aliases, so the migration container could not find the server by name.
NO_ALIAS_NETWORKS = ("bridge", "host", "none")
REMOVE, KEEP, REPORT = "remove", "keep", "report"
LOG_TAIL = 20

_PLAIN_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    image: str
    network: Optional[str] = None    # a user-defined Docker network the container joins under an alias
    start_timeout: float = DEFAULT_START_TIMEOUT


# ---------------------------------------------------------------- options (pure)

def container_spec(options: Optional[Mapping[str, Any]]) -> Optional[ContainerSpec]:
    """The validated ``scratch_container`` option, or None when it is not given."""
    if options is None:
        return None
    image = str(options.get("image") or "").strip()
    if not image:
        raise RehearsalError("scratch_container.image is required: a PostgreSQL image of the archive's major version "
                             "whose entrypoint honours POSTGRES_PASSWORD, e.g. postgres:15 or dbops/postgres:15")
    if any(char.isspace() for char in image):
        raise RehearsalError("scratch_container.image %r is not an image reference (it holds a space)" % image)
    network = str(options.get("network") or "").strip() or None
    if network in NO_ALIAS_NETWORKS:
        raise RehearsalError(
            "scratch_container.network cannot be %s: Docker gives containers names only on user-defined networks. "
            "Give the network of the compose project (docker network ls; usually <project>_default)" % network)
    timeout = options.get("start_timeout")
    timeout = DEFAULT_START_TIMEOUT if timeout is None else float(timeout)
    if timeout <= 0:
        raise RehearsalError("scratch_container.start_timeout must be more than 0 seconds (default %d)"
                             % DEFAULT_START_TIMEOUT)
    return ContainerSpec(image=image, network=network, start_timeout=timeout)


def check_executor(spec: Optional[ContainerSpec], executor: str) -> None:
    """The compose executor's migration container reaches the scratch container only through a shared network."""
    if spec is not None and executor == "compose" and not spec.network:
        raise RehearsalError(
            "executor=compose with scratch_container needs scratch_container.network: the Docker network of the "
            "compose project (docker network ls; usually <project>_default), so that the migration container "
            "reaches the scratch container by its alias")


def executor_address(spec: ContainerSpec, alias: Optional[str]) -> Optional[Tuple[str, int]]:
    """How a container on ``spec.network`` reaches the scratch server: (alias, 5432); None without a network."""
    if not spec.network or not alias:
        return None
    return alias, CONTAINER_PORT


def container_name(database: str) -> str:
    """``dbops-rehearsal-<plain database>-<8 hex>``: unique, and says what it is in ``docker ps``."""
    return "%s%s-%s" % (NAME_PREFIX, backups.plain_name(database)[:30], uuid.uuid4().hex[:8])


def container_user(login_user: Optional[str]) -> str:
    """The container's superuser: named like the connection user, so that ownership changes and grants
    to it in migrations work; ``postgres`` when that name is none or not a plain role name."""
    if login_user and _PLAIN_ROLE.match(login_user) and not login_user.startswith("pg_"):
        return login_user
    return DEFAULT_USER


def new_password() -> str:
    return secrets.token_hex(24)


def owner_labels(owner: Dict[str, Any], name: str) -> Dict[str, str]:
    return {LABEL: "1", OWNER_LABEL: backups.owner_record(OWNER_KIND, owner, name=name)}


def environment(user: str, password: str) -> Dict[str, str]:
    """The entrypoint's settings; the password reaches the container through the engine's API, not argv."""
    return {"POSTGRES_USER": user, "POSTGRES_PASSWORD": password, "POSTGRES_DB": MAINTENANCE_DB}


def leftover_verdict(name: str, labels: Mapping[str, str], here: Dict[str, Any]) -> Tuple[str, str]:
    """(remove | keep | report, why) for a container labelled as a rehearsal's scratch server."""
    record = backups.parse_owner_record(labels.get(OWNER_LABEL))
    if record is None or record.get("kind") != OWNER_KIND:
        return REPORT, ("no owner record in its label %s; if no rehearsal uses it, remove it with "
                        "docker rm -f -v %s" % (OWNER_LABEL, name))
    who = "pid %s on %s (started %s)" % (record.get("pid"), record.get("host"), record.get("started_at"))
    gone = backups.owner_gone(record, here)
    if gone is None:
        return REPORT, "scratch container of %s; only that host can tell whether it still runs" % who
    if gone:
        return REMOVE, "scratch container of %s, which is gone" % who
    return KEEP, "a rehearsal by %s is running" % who


def archive_major(manifest: Mapping[str, Any]) -> Optional[int]:
    """The PostgreSQL major the archive was taken from (None for a manifest that does not say)."""
    number = manifest.get("server_version_num")
    if isinstance(number, int) and not isinstance(number, bool) and number > 0:
        return backups.server_major(number)
    return None


def version_problem(image: str, server_num: int, manifest: Mapping[str, Any]) -> Optional[str]:
    """Why the container cannot stand in for the archive's server (another major), or None."""
    wanted = archive_major(manifest)
    running = backups.server_major(server_num)
    if wanted is None or wanted == running:
        return None
    want = _major_text(wanted)
    return ("the image %s runs PostgreSQL %s, the archive comes from PostgreSQL %s (%s): use an image of PostgreSQL %s "
            "as scratch_container.image (e.g. postgres:%s); nothing was restored"
            % (image, _major_text(running), want, manifest.get("server_version") or want, want, want))


def _major_text(major: int) -> str:
    """15 for 15; 9.6 for server_major's 906 (before 10 the major had two parts)."""
    return str(major) if major < 100 else "%d.%d" % (major // 100, major % 100)


def published_port(attrs: Mapping[str, Any]) -> Optional[int]:
    """The host port 5432 is published on (127.0.0.1), from the container's inspect data."""
    ports = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get("%d/tcp" % CONTAINER_PORT) or []
    for binding in ports:
        if binding.get("HostIp") in (PUBLISH_IP, "") and str(binding.get("HostPort") or "").isdigit():
            return int(binding["HostPort"])
    return None


def refused_login(error: str) -> bool:
    """The server is up but does not know our user or password: waiting longer will not help."""
    return "password authentication failed" in error or ("role" in error and "does not exist" in error)


def log_tail(raw: Any, *secret: Optional[str]) -> str:
    """The last log lines of a container, on one line and masked."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()][-LOG_TAIL:]
    return mask_secrets(" | ".join(lines), *secret) or "(none)"


# ---------------------------------------------------------------- against the Docker engine

def docker_client(timeout: int = 60) -> Any:
    """A client of the local engine; the SDK is imported here so that a missing one is a clear message."""
    try:
        import docker
    except ImportError as exc:
        raise RehearsalError("scratch_container needs the Docker SDK for Python where the module runs: pip install "
                             "docker (into %s's environment); %s" % (sys.executable, exc))
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        raise RehearsalError("the Docker engine is not reachable (%s); start it (systemctl start docker) or set "
                             "DOCKER_HOST: scratch_container runs the scratch server there" % str(exc).strip()[:300])
    return client


def _not_found() -> Tuple[type, ...]:
    import docker.errors
    return (docker.errors.NotFound,)


class ScratchContainer:
    """One rehearsal's scratch server: started, described, removed (also when asked by name only)."""

    def __init__(self, spec: ContainerSpec, owner: Dict[str, Any], database: str, login_user: Optional[str],
                 client_factory: Optional[Callable[[], Any]] = None):
        self.spec = spec
        self.owner = owner
        self.name = container_name(database)
        self.alias = self.name if spec.network else None
        self.user = container_user(login_user)
        self.password = new_password()
        self.server_num: Optional[int] = None
        self.removed: Optional[bool] = None
        self.remove_error: Optional[str] = None
        self._client_factory = client_factory
        self._client: Any = None
        self._create_sent = False  # the engine may have made it even when the answer never came

    def mask(self, text: Any) -> str:
        return mask_secrets(text, self.password)

    def client(self) -> Any:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        return self._client_factory() if self._client_factory else docker_client()

    # ------------------------------------------------------------ leftovers of killed runs
    def clean_leftovers(self, here: Dict[str, Any], check_mode: bool) -> Dict[str, List[Any]]:
        """Remove the labelled containers of dead runs of this host; ``dropped`` and ``kept`` (name and reason)."""
        removed: List[str] = []
        kept: List[Dict[str, str]] = []
        for item in self._labelled_containers():
            name = listed_name(item)
            action, why = leftover_verdict(name, item.get("Labels") or {}, here)
            if action == REMOVE:
                if not check_mode:
                    self._remove_found(item["Id"])
                removed.append("container %s (%s)" % (name, why))
            elif action == REPORT:
                kept.append({"container": name, "reason": why})
        return {"dropped": removed, "kept": kept}

    def _labelled_containers(self) -> List[Dict[str, Any]]:
        # One list call with names and labels: the SDK's containers.list inspects each container
        # afterwards, and a scratch container another rehearsal removes in between fails it.
        return self.client().api.containers(all=True, filters={"label": "%s=1" % LABEL}) or []

    def _remove_found(self, container_id: str) -> None:
        try:
            self.client().api.remove_container(container_id, force=True, v=True)
        except _not_found():
            pass  # another run removed it meanwhile

    def image_present(self) -> bool:
        import docker.errors
        try:
            self.client().images.get(self.spec.image)
            return True
        except docker.errors.ImageNotFound:
            return False

    # ------------------------------------------------------------ start
    def start(self) -> ConnInfo:
        """Start the container, wait until it accepts connections; the server as this host reaches it."""
        import docker.errors
        client = self.client()
        self._ensure_image(client)
        self._create_sent = True
        try:
            container = client.containers.create(
                self.spec.image, name=self.name, environment=environment(self.user, self.password),
                labels=owner_labels(self.owner, self.name), ports={"%d/tcp" % CONTAINER_PORT: (PUBLISH_IP, None)},
                shm_size=SHM_SIZE)
            if self.spec.network:
                self._attach(client, container)
            container.start()
            container.reload()
        except docker.errors.APIError as exc:
            raise RehearsalError("cannot start the scratch container %s of %s: %s"
                                 % (self.name, self.spec.image, self.mask(exc).strip()[:400]))
        port = published_port(container.attrs)
        if port is None:
            raise RehearsalError("the scratch container %s has no port published for 5432 on %s; its ports: %s"
                                 % (self.name, PUBLISH_IP, (container.attrs.get("NetworkSettings") or {}).get("Ports")))
        info = ConnInfo(host=PUBLISH_IP, port=port, user=self.user, password=self.password)
        self.server_num = self._wait_ready(container, info)
        return info

    def _ensure_image(self, client: Any) -> None:
        """A missing image is pulled first (it is not part of start_timeout)."""
        import docker.errors
        from docker.utils import parse_repository_tag
        try:
            client.images.get(self.spec.image)
            return
        except docker.errors.ImageNotFound:
            pass
        repository, tag = parse_repository_tag(self.spec.image)
        try:
            client.images.pull(repository, tag=tag or "latest")
        except Exception as exc:
            raise RehearsalError("image %s is not on this host and cannot be pulled (%s); pull or build it first "
                                 "(docker pull %s)" % (self.spec.image, str(exc).strip()[:300], self.spec.image))

    def _attach(self, client: Any, container: Any) -> None:
        try:
            network = client.networks.get(self.spec.network)
        except _not_found():
            raise RehearsalError("Docker network %s not found (docker network ls); give the network of the compose "
                                 "project, usually <project>_default, and start the project once so it exists"
                                 % self.spec.network)
        network.connect(container, aliases=[self.alias])

    def _wait_ready(self, container: Any, info: ConnInfo) -> int:
        """Connect until the server answers; a container that stops, or a timeout, says what its log says."""
        probe = ConnInfo(host=info.host, port=info.port, user=info.user, password=info.password,
                         dbname=MAINTENANCE_DB, connect_timeout=5)
        deadline = time.monotonic() + self.spec.start_timeout
        last = ""
        while True:
            try:
                conn = connect(probe, autocommit=True, application_name="dbops.migration_rehearsal")
                try:
                    return server_version_num(conn)
                finally:
                    conn.close()
            except Exception as exc:  # not up yet (initdb, the entrypoint's own restart)
                last = self.mask(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if refused_login(last):
                    raise RehearsalError(
                        "the scratch container %s of %s answers but refuses the login (%s): its entrypoint does not "
                        "honour POSTGRES_USER and POSTGRES_PASSWORD; use an image that does, like the official "
                        "postgres image; its last log lines: %s"
                        % (self.name, self.spec.image, last, self._logs(container)))
            try:
                container.reload()
            except _not_found():
                raise RehearsalError("the scratch container %s was removed while it started (by hand, or by a "
                                     "docker prune?)" % self.name)
            state = container.attrs.get("State") or {}
            if state.get("Status") not in ("created", "running", "restarting"):
                raise RehearsalError(
                    "the scratch container %s of %s stopped while starting (%s, exit code %s); its last log lines: %s"
                    % (self.name, self.spec.image, state.get("Status"), state.get("ExitCode"), self._logs(container)))
            if time.monotonic() > deadline:
                raise RehearsalError(
                    "the scratch container %s of %s did not accept connections within %g s (scratch_container."
                    "start_timeout): %s; its last log lines: %s. Raise start_timeout on a slow host, or use an image "
                    "whose entrypoint honours POSTGRES_USER and POSTGRES_PASSWORD"
                    % (self.name, self.spec.image, self.spec.start_timeout, last, self._logs(container)))
            time.sleep(0.5)

    def _logs(self, container: Any) -> str:
        try:
            return log_tail(container.logs(tail=LOG_TAIL), self.password)
        except Exception as exc:
            return "(cannot read them: %s)" % self.mask(exc).strip()[:200]

    # ------------------------------------------------------------ the version and the result
    def version_problem(self, manifest: Mapping[str, Any]) -> Optional[str]:
        if self.server_num is None:
            return None
        return version_problem(self.spec.image, self.server_num, manifest)

    def describe(self) -> Dict[str, Any]:
        """Where the rehearsal ran, for the result and the record (no password)."""
        return {"kind": "container", "image": self.spec.image, "container": self.name, "network": self.spec.network,
                "alias": self.alias, "server_version": backups.server_version_text(self.server_num)
                if self.server_num else None}

    # ------------------------------------------------------------ removal
    def remove(self, timeout: float = 30.0) -> Optional[bool]:
        """Remove the container and its anonymous volumes; None when none was ever asked for.

        A fresh client: an interrupted request may have left the first one's connection mid-answer.
        By name: the engine may have made the container although its answer never arrived."""
        if not self._create_sent:
            return None
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = self._new_client()
                try:
                    client.containers.get(self.name).remove(force=True, v=True)
                except _not_found():
                    pass
                self.removed = True
                return True
            except Exception as exc:
                if time.monotonic() > deadline:
                    self.removed = False
                    self.remove_error = self.mask(exc).strip()[:300]
                    return False
                time.sleep(0.5)
