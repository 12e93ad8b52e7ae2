# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation for the compose_deploy action plugin (plugins/action/compose_deploy.py)."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_deploy
short_description: Release a docker compose project with a backup tag, health gate and automatic rollback
version_added: 0.1.0
author: dbops developers (@dbops)
description:
  - Deploys a docker compose project the way an operator would, every time. Before the update it keeps the image
    each changing service runs now under a tag of its own, C(REPOSITORY:<backup_tag>-<project>-<tag it replaced>)
    (for example C(auto_trader:dbops-rollback-shop.1.0.0)); release tags such as C(auto_trader:1.0.0) are never
    moved. Then it brings the new release up, waits for the container healthchecks and the O(health.url), and
    rolls back by itself when a check fails.
  - With O(proxy), it finds out how traffic reaches the services (a proxy that re-resolves names, one that
    resolves them once and caches the address, or none) and releases without failed requests in each case; a
    caching proxy is reloaded gracefully (O(proxy.reload_command)) once the new container is in the service name,
    and again, pointed at the new container only, before the old one leaves the name (see O(proxy.mode)). When no
    zero-downtime strategy fits a service that takes traffic (it publishes a
    host port, has a fixed C(container_name) or several replicas), it says so before changing anything and
    releases in place only with O(allow_in_place=true).
  - A service that can run twice (no C(container_name), no published host port, one replica) is released without
    downtime. A second container with the new image starts beside the old one, hidden from the service name; once
    it is healthy and has stayed healthy for O(health.settle) seconds it joins the name, and once the health URL
    answered, the old container is retired so that no proxy ever holds a dead address. It leaves the service
    name first (reconnected without the alias, at the same address, still serving), keeps serving for
    O(drain_seconds) while DNS caches and requests in flight run out, and only then is stopped gracefully
    (SIGTERM) and removed. When the new container fails its gate, it is removed the same way and the old one
    never stopped serving.
    A reverse proxy that resolves the service name through Docker's DNS (for nginx C(resolver 127.0.0.11 valid=1s)
    with a variable C(proxy_pass) and C(proxy_next_upstream error timeout)) sends traffic to whichever
    containers are alive.
  - Other services (databases, proxies with host ports) are updated with C(docker compose up) semantics.
  - With O(run), it runs a one-off service instead (for example the C(migration) profile) and returns its exit
    code and logs; a non-zero exit code fails the task.
  - This is an action plugin. Changes are made by community.docker's C(docker_compose_v2),
    C(docker_compose_v2_run), C(docker_image_tag) and C(docker_container) on the target host; engine facts, the
    health wait, logs, the proxy's configuration and reload, and the hidden start of a surged container run there in
    one call each through this module with the Docker SDK for Python.
  - It uses the C(docker compose) v2 CLI plugin (2.18 or newer) and falls back to the standalone C(docker-compose)
    v1 command (1.28 or newer) when the plugin is missing or too old (see O(compose_command)). community.docker's
    compose modules cannot drive v1, so with it this module runs C(docker-compose) itself (argument lists, the
    O(env) variables in an env file) with the same results. v1 has no C(--dry-run), so the plan (check and diff
    mode) compares each container's compose config hash (C(docker-compose config --hash)), which covers the
    service's options and its image ID, with the one it was created with.
extends_documentation_fragment:
  - dbops.migrations.attributes
  - dbops.migrations.attributes.ACTION
options:
  project_src:
    description: Directory of the compose project (where the compose files live).
    type: path
    required: true
  project_name:
    description: Compose project name. Defaults to the name compose derives (the C(name) key or the directory).
    type: str
  files:
    description: Compose files relative to O(project_src), merged in order, instead of the default file.
    type: list
    elements: path
  profiles:
    description: Compose profiles to enable.
    type: list
    elements: str
    default: []
  services:
    description:
      - Services to deploy. Defaults to every service that is not behind an inactive profile.
      - An unknown name fails before anything changes.
    type: list
    elements: str
  env:
    description:
      - Variables for compose interpolation (for example C(APP_VERSION), C(NGINX_PORT)).
      - They are written to a 0600 env file in a temporary directory on the target (after the project's own
        C(.env), so they win), never passed on a command line, and removed afterwards.
    type: dict
    default: {}
  state:
    description:
      - V(present) deploys (or, with O(rollback), rolls back); V(absent) removes the project's containers and
        networks (volumes only with O(remove_volumes)); V(restarted) restarts the services and waits for health.
      - V(stopped) stops the running containers of O(services) (all services when empty) and keeps them, as the
        guide's emergency stop does; V(present) or V(restarted) starts them again. Not changed when none runs.
      - V(inspected) changes nothing and returns, per service, the container, the image (C(repo:tag)), its ID,
        whether it runs and its health (RV(services)); deploy playbooks record it before a release.
    type: str
    choices: [present, absent, restarted, stopped, inspected]
    default: present
  pull:
    description: Pull policy handed to C(docker compose up) (see community.docker.docker_compose_v2).
    type: str
    choices: [always, missing, never, policy]
    default: missing
  build:
    description: Build policy handed to C(docker compose up).
    type: str
    choices: [always, never, policy]
    default: never
  backup_tag:
    description:
      - Prefix of the backup tags. Before the update, the image each changing service runs now is tagged
        C(REPOSITORY:<backup_tag>-<project>-<tag it replaced>) (characters a tag cannot hold become C(-); an image
        known only by its ID gives its short ID). It names the compose project, so projects sharing an image
        repository never overwrite each other's backups; release tags are never moved. Rollbacks deploy from it.
      - An empty string takes no backup.
    type: str
    default: dbops-rollback
  rollback:
    description:
      - Roll back on request. For each service, the most recent backup tag of this project whose image is not the
        one running now is deployed through the compose file's own variables (O(tag_variable), O(image_variable)),
        with the same health gate; then each service's running image ID is checked against the backup's.
        Release tags are not touched. Fails, changing nothing, when the compose file's image does not follow
        those variables.
    type: bool
    default: false
  tag_variable:
    description: "Compose variable the compose file's C(image:) takes its tag from (C(image: repo:${APP_VERSION}))."
    type: str
    default: APP_VERSION
  image_variable:
    description: Compose variable holding the image repository, set with O(tag_variable) on a rollback (empty for
      none).
    type: str
    default: APP_IMAGE
  proxy:
    description:
      - How traffic reaches the services, for a zero-downtime release whatever the proxy.
      - Without it, services that can run twice are surged (see above) and others are released in place.
    type: dict
    suboptions:
      service:
        description: Compose service of the reverse proxy (for example V(nginx)). Required unless O(proxy.mode=none).
        type: str
      mode:
        description:
          - V(auto) reads the proxy's configuration (C(nginx -T) in its container). A C(proxy_pass) through a
            variable with a C(resolver) is V(resolving); a service named literally (C(proxy_pass http://api:5000;)
            or an C(upstream) block) is V(caching); nginx resolved it once, so it is reloaded after the new
            container joined the service name (it then sends to both), and again before the old one leaves the
            name. For that second reload the service name is pinned to the new container's address by lines in
            the proxy container's C(/etc/hosts) (each ending in the comment C(dbops.migrations release pin); they are removed
            once the old container is out of the name, and by the next release if a run died in between). Leaving
            the name is a reconnect during which the old address does not answer, and a proxy still sending
            there would wait for TCP's second SYN (1 s). When the pin cannot be written or does not resolve (no
            C(sh) in the proxy image, a read-only file, a resolver that asks DNS first), the timeline says so and
            the proxy is reloaded after the old container left the name instead.
            V(none) means clients reach published ports.
        type: str
        choices: [auto, resolving, caching, none]
        default: auto
      reload_command:
        description: Graceful reload run inside the proxy container for a caching proxy.
        type: list
        elements: str
        default: [nginx, -s, reload]
      drain:
        description: Seconds to wait after each reload for requests the old proxy workers still carry (before the
          old container stops, the longer of this and O(drain_seconds)).
        type: float
        default: 2.0
  allow_in_place:
    description: Release services that take traffic in place when no zero-downtime strategy fits them (requests
      fail while they restart). Without it such a release fails before anything changes.
    type: bool
    default: false
  rollback_on_failure:
    description:
      - When the new release fails its health gate, restore the backup tags and bring the previous release back.
        The task still fails, with RV(rolled_back=true).
    type: bool
    default: true
  zero_downtime:
    description: Release services that can run twice with the surge described above. V(false) recreates in place.
    type: bool
    default: true
  health:
    description: The health gate.
    type: dict
    default: {}
    suboptions:
      url:
        description:
          - URL fetched from the target host after the containers are healthy, for example
            V(http://127.0.0.1:8080/healthz) through the proxy. It must answer with one of O(health.status_code)
            O(health.successes) times in a row.
        type: str
      status_code:
        description: Good answers from O(health.url).
        type: list
        elements: int
        default: [200]
      timeout:
        description: Seconds the release has to pass the gate.
        type: int
        default: 60
      interval:
        description: Seconds between checks.
        type: float
        default: 1.0
      successes:
        description: Consecutive good answers O(health.url) must give.
        type: int
        default: 3
      settle:
        description:
          - Seconds a surged container must stay running and healthy before the old one is retired. Catches
            releases that start and crash a little later while the old release still serves.
        type: float
        default: 5.0
      container_path:
        description:
          - Deep health path (for example V(/health)) fetched from the target on the new container's own address
            before it takes traffic (surged services only); it must answer like O(health.url).
        type: str
      container_port:
        description: Port of O(health.container_path) inside the container (default 80).
        type: int
      containers:
        description:
          - Wait for container healthchecks (the image's C(HEALTHCHECK) or the compose C(healthcheck)). With V(false)
            only "running" counts.
        type: bool
        default: true
  stop_timeout:
    description: Seconds an old container gets to finish in-flight requests after SIGTERM.
    type: int
    default: 20
  drain_seconds:
    description:
      - Seconds a retired container keeps serving after it left the service name and before SIGTERM, so that a
        proxy which re-resolves the name forgets its address (nginx keeps an answer for its C(resolver ... valid=)
        time) and requests already sent to it finish.
      - With O(proxy), at least the proxy's resolver validity read from its configuration plus 1 s, and after a
        caching proxy's reload at least O(proxy.drain). A proxy C(resolver) without C(valid=) keeps Docker's
        answers for their TTL (600 s); give it C(valid=1s).
    type: float
    default: 2.0
  log_lines:
    description: How many of the failing service's last log lines to return.
    type: int
    default: 40
  remove_volumes:
    description: With O(state=absent), also remove named volumes.
    type: bool
    default: false
  run:
    description:
      - Run this one-off service (its profiles are enabled for the run) instead of deploying, wait for it and
        return its exit code and logs. Dependencies start as with C(docker compose run).
    type: str
  run_command:
    description: Command (argument list) for O(run), instead of the service's own.
    type: list
    elements: str
  compose_command:
    description:
      - Which compose CLI runs the project on the target.
      - V(auto) uses the C(docker compose) plugin when C(docker compose version) works and is 2.18 or newer, else
        the standalone C(docker-compose) v1 command when it is installed, else fails saying what to install.
      - V(plugin) uses only the C(docker compose) v2 plugin (2.18 or newer).
      - V(standalone) uses only C(docker-compose) (1.28 or newer, which knows profiles). With v1, O(pull=policy)
        is not available (v1 knows no C(pull_policy)); O(pull=always) runs C(docker-compose pull) first and
        O(pull=never) fails when an image is not present. v1 names containers C(PROJECT_SERVICE_N).
      - RV(compose_command) reports which one ran.
    type: str
    choices: [auto, plugin, standalone]
    default: auto
  _worker:
    description:
      - Internal. One step of a deploy, sent by this module's action plugin to the target. A task that sets it
        is refused; use the options above.
    type: dict
attributes:
  check_mode:
    support: full
    details: Reports which services would be created or recreated (from C(docker compose up --dry-run), or with
      C(docker-compose) v1 from the compose config hashes) and their image changes; nothing is tagged, started or
      removed. With O(run), reports that it would run.
  diff_mode:
    support: full
    details: Shows, per service, the image reference and ID running now and after the deploy.
  idempotent:
    support: full
    details: A second deploy of the same release changes nothing and reports C(changed=false).
      O(run) and O(state=restarted) always act.
  action:
    support: full
    details: Runs on the controller and executes community.docker modules on the target.
  async:
    support: none
    details: Deploys wait for health checks and may roll back; run them in the foreground.
seealso:
  - module: community.docker.docker_compose_v2
  - module: community.docker.docker_compose_v2_run
  - module: community.docker.docker_image_tag
requirements:
  - On the target, the Docker CLI with the compose v2 plugin (2.18 or newer), or C(docker-compose) v1 (1.28 or
    newer) with PyYAML.
  - Docker SDK for Python (C(docker)) on the target.
  - community.docker 4.x on the controller.
"""

EXAMPLES = r"""
- name: Release auto_trader 1.1.0 without dropping requests, rolling back on failure
  dbops.migrations.compose_deploy:
    project_src: /srv/auto_trader
    files: [docker-compose.prod.yml]
    env:
      APP_VERSION: 1.1.0
    health:
      url: http://127.0.0.1:8080/healthz
      timeout: 60
  register: release

- name: Run the migration one-off service
  dbops.migrations.compose_deploy:
    project_src: /srv/auto_trader
    files: [docker-compose.prod.yml]
    run: migration

- name: Release on a host that only has docker-compose v1
  dbops.migrations.compose_deploy:
    project_src: /srv/auto_trader
    files: [docker-compose.prod.yml]
    compose_command: standalone
    env:
      APP_VERSION: 1.1.0

- name: Record what runs before a release (read-only)
  dbops.migrations.compose_deploy:
    project_src: /srv/auto_trader
    files: [docker-compose.prod.yml]
    state: inspected
  register: before

- name: Release behind an nginx that resolves the service name once (proxy_pass http://app:8000;)
  dbops.migrations.compose_deploy:
    project_src: /srv/auto_trader
    files: [docker-compose.prod.yml]
    services: [app]
    env:
      APP_VERSION: 1.1.0
    proxy:
      service: nginx
    health:
      container_path: /healthz
      container_port: 8000

- name: Roll back by hand to the image the last release replaced
  dbops.migrations.compose_deploy:
    project_src: /srv/auto_trader
    files: [docker-compose.prod.yml]
    services: [app]
    rollback: true

- name: Stop the application, keep the database running (emergency stop)
  dbops.migrations.compose_deploy:
    project_src: /srv/auto_trader
    files: [docker-compose.prod.yml]
    services: [app]
    state: stopped

- name: Stop and remove the stack (volumes stay)
  dbops.migrations.compose_deploy:
    project_src: /srv/auto_trader
    files: [docker-compose.prod.yml]
    state: absent
"""

RETURN = r"""
project:
  description: Compose project name.
  returned: always
  type: str
  sample: auto_trader
compose_version:
  description: Version of the compose CLI used on the target (C(docker compose) or C(docker-compose)).
  returned: when compose was found
  type: str
  sample: 2.26.1
compose_command:
  description: The compose CLI that ran the project, with its version (see O(compose_command)).
  returned: when compose was found
  type: str
  sample: docker compose 2.26.1
stopped:
  description: Containers that were running and were stopped (or would be, in check mode).
  returned: with O(state=stopped)
  type: list
  elements: str
  sample: [auto_trader-app-1]
services:
  description:
    - With O(state=present), the services the deploy acted on (a list).
    - With O(state=inspected), a dict per service with C(container), C(image) (C(repo:tag)), C(image_id),
      C(running) and C(health).
  returned: with O(state=present) or O(state=inspected)
  type: raw
  sample: {app: {container: shop-app-1, image: "auto_trader:1.0.0", image_id: "sha256:566d8b", running: true,
           health: healthy}}
plan:
  description: One entry per service; what happened (or would happen) to it.
  returned: with O(state=present)
  type: list
  elements: dict
  contains:
    service: {description: Service name., type: str, returned: always, sample: app}
    action: {description: "V(create), V(recreate), V(start) or V(unchanged).", type: str, returned: always,
             sample: recreate}
    strategy: {description: "V(surge) (zero downtime) or V(compose) (in place).", type: str, returned: always,
               sample: surge}
    before_image: {description: Image reference running before., type: str, returned: always,
                   sample: "auto_trader:1.0.0"}
    before_image_id: {description: Image ID running before., type: str, returned: always, sample: "sha256:566d8b"}
    after_image: {description: Image reference the compose file names., type: str, returned: always,
                  sample: "auto_trader:1.1.0"}
    after_image_id: {description: Its local image ID when the image is present., type: str, returned: always,
                     sample: "sha256:9f2432"}
backups:
  description: Backup tags written before the update.
  returned: when a deploy changed something
  type: list
  elements: str
  sample: ["auto_trader:dbops-rollback-shop.1.0.0"]
images:
  description: Image (C(repo:tag)) each running service runs after the task, read from its container.
  returned: after a deploy or rollback
  type: dict
  sample: {app: "auto_trader:1.1.0", db: "dbops/postgres:15"}
rolled_back:
  description: Whether the previous release was brought back because the new one failed.
  returned: always
  type: bool
  sample: true
failed_check:
  description: "Which check failed: V(container) (healthcheck unhealthy or never healthy), V(exited) (the
    container stopped), V(url) (the health URL), V(compose) (compose up itself failed), V(engine) (the Docker
    engine stopped answering; see RV(engine_lost))."
  returned: on failure
  type: str
  sample: container
engine_lost:
  description:
    - The Docker engine stopped answering during the release. Nothing was rolled back (nothing can be while the
      engine is away); when it is back, run the same task again, or with O(rollback=true) to return to the backup
      tag. A new container the release left behind is removed by the next run.
  returned: when the engine was lost
  type: bool
  sample: true
failed_service:
  description: The service that failed its check.
  returned: on failure
  type: str
  sample: app
logs:
  description: The failing service's last log lines (O(log_lines)).
  returned: on failure
  type: list
  elements: str
  sample: ["[INFO] Booting worker with pid: 8"]
restored_images:
  description: Backup images deployed again (by a rollback, or after a failed in-place release).
  returned: on rollback
  type: list
  elements: str
  sample: ["auto_trader:dbops-rollback-shop.1.0.0"]
rollback_to:
  description: Per service, the backup image and ID O(rollback=true) deploys (or would, in check mode).
  returned: with O(rollback=true)
  type: dict
  sample: {app: {image: "auto_trader:dbops-rollback-shop.1.0.0", id: "sha256:566d8b"}}
backup_images:
  description: The backups written before the update, per service.
  returned: when a deploy replaced a running image
  type: dict
  sample: {app: {image: "auto_trader:dbops-rollback-shop.1.0.0", id: "sha256:566d8b", replaced: "auto_trader:1.0.0"}}
proxy:
  description: How traffic reaches the services (with O(proxy)); C(detected) when O(proxy.mode=auto) found it.
  returned: with O(proxy) when something changes
  type: dict
  sample: {service: nginx, mode: caching, upstreams: [app], detected: true}
rollback_error:
  description: Why the automatic rollback itself failed.
  returned: when the rollback failed
  type: str
  sample: "health check failed: container auto_trader-app-3 reports unhealthy"
duration_s:
  description: Seconds from the first change to the end of the deploy (or rollback).
  returned: after a deploy
  type: float
  sample: 9.4
timeline:
  description: Steps of the deploy with seconds since the task started (surge, exposure, health verdicts, retirement,
    rollback).
  returned: after a deploy
  type: list
  elements: dict
  sample: [{step: surge app, t: 4.1}, {step: health ok, t: 11.0}, {step: exposed new app, t: 12.2},
           {step: hid old app, t: 13.9}, {step: drained old app (2.0 s), t: 15.9}, {step: retired old app, t: 16.9}]
rc:
  description: Exit code of the one-off service.
  returned: with O(run)
  type: int
  sample: 0
run:
  description: The one-off service's result.
  returned: with O(run)
  type: dict
  contains:
    service: {description: Service name., type: str, returned: always, sample: migration}
    rc: {description: Exit code., type: int, returned: always, sample: 0}
    stdout: {description: Standard output., type: str, returned: always, sample: "Running upgrade"}
    stderr: {description: Standard error., type: str, returned: always, sample: ""}
    logs: {description: Last output lines., type: list, elements: str, returned: always,
           sample: ["INFO  [alembic.runtime.migration] Running upgrade  -> 0001"]}
actions:
  description: Compose actions taken (or, in check mode, that would be taken) with O(state=absent).
  returned: with O(state=absent)
  type: list
  elements: dict
  sample: [{what: container, id: auto_trader-app-1, status: Removed}]
"""

import os  # noqa: E402
import shutil  # noqa: E402
import traceback  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402

from ansible_collections.dbops.migrations.plugins.module_utils.compose import plan as compose  # noqa: E402
from ansible_collections.dbops.migrations.plugins.module_utils.compose.command import project_argv  # noqa: E402
from ansible_collections.dbops.migrations.plugins.module_utils.compose import engine  # noqa: E402
from ansible_collections.dbops.migrations.plugins.module_utils.compose import v1 as compose_v1  # noqa: E402
from ansible_collections.dbops.migrations.plugins.module_utils.compose import worker  # noqa: E402

PROXY_CONFIG_DUMP = ["nginx", "-T"]

try:
    import docker  # noqa: F401  # pylint: disable=unused-import
    HAS_DOCKER_SDK, DOCKER_IMPORT_ERROR = True, None
except ImportError:
    HAS_DOCKER_SDK, DOCKER_IMPORT_ERROR = False, traceback.format_exc()


def _client(module):
    if not HAS_DOCKER_SDK:
        module.fail_json(msg=missing_required_lib("docker (Docker SDK for Python)"), exception=DOCKER_IMPORT_ERROR)
    try:
        client = engine.docker_client()
        client.ping()
        return client
    except Exception as exc:
        module.fail_json(msg="the Docker engine is not reachable (%s); start it (systemctl start docker) or point "
                             "DOCKER_HOST at it, then retry." % exc, engine_down=True)


def _choose_compose(module, requested):
    """The compose CLI to drive (compose_command) and its binary; fails saying what to install."""
    try:
        return engine.choose_compose_cli(module, requested)
    except compose.ComposeError as exc:
        module.fail_json(msg=str(exc))


def _prepare(module, request):
    """Env file, engine, the compose CLI and the rendered compose config, in one call."""
    _client(module)
    choice, binary = _choose_compose(module, request["compose_command"] or compose_v1.AUTO)
    src = request["project_src"]
    if not os.path.isdir(src):
        module.fail_json(msg="project_src %s is not a directory on the target; copy the compose project there first."
                         % src)
    dot_env = os.path.join(src, ".env")
    if choice.kind == compose_v1.STANDALONE:
        _prepare_standalone(module, request, choice, binary, dot_env)  # exits; v1 normalises names itself
    problem = compose.project_name_problem(request["project_name"])
    if problem:
        module.fail_json(msg=problem)
    env_files = []
    if os.path.isfile(dot_env):
        env_files.append(dot_env)
    tmpdir = None
    if request["env"]:
        try:
            tmpdir, path = engine.write_env_file(request["env"])
        except compose.ComposeError as exc:
            module.fail_json(msg=str(exc))
        env_files.append(path)
    argv = project_argv(binary, src, request["project_name"], request["files"], env_files, ["*"],
                        "config", "--format", "json")
    rc, out, err = module.run_command(argv, cwd=src)
    if rc != 0:
        _remove_tmpdir(tmpdir)
        module.fail_json(msg=compose.explain_config_failure(err or out))
    try:
        project, specs = compose.parse_compose_config(out)
    except (ValueError, compose.ComposeError) as exc:
        _remove_tmpdir(tmpdir)
        module.fail_json(msg=compose.explain_config_failure(str(exc)))
    module.exit_json(changed=False, compose_version=choice.version, compose_command=choice.label,
                     compose_cli=choice.kind, tmpdir=tmpdir, env_files=env_files,
                     project=request["project_name"] or project, docker=binary,
                     specs=worker.spec_dicts(specs))


def _prepare_standalone(module, request, choice, binary, dot_env):
    """docker-compose v1: one env file (the project's .env, then ``env``), the project name it
    will use, and its YAML config with each service's dependencies."""
    src = request["project_src"]
    dotenv = ""
    if os.path.isfile(dot_env):
        with open(dot_env, encoding="utf-8", errors="replace") as handle:
            dotenv = handle.read()
    tmpdir, env_files = None, []
    try:
        project = compose_v1.project_name(request["project_name"], src, request["env"], dotenv)
        if request["env"]:
            tmpdir, path = engine.write_env_file(request["env"], dotenv)
            env_files.append(path)
        argv = project_argv(binary, src, project, request["files"], env_files, [], "config", standalone=True)
    except compose.ComposeError as exc:
        _remove_tmpdir(tmpdir)
        module.fail_json(msg=str(exc))
    rc, out, err = module.run_command(argv, cwd=src)
    if rc != 0:
        _remove_tmpdir(tmpdir)
        module.fail_json(msg=compose.explain_config_failure(err or out, "docker-compose"))
    try:
        specs, deps = compose_v1.parse_config(out)
    except compose.ComposeError as exc:
        _remove_tmpdir(tmpdir)
        module.fail_json(msg=compose.explain_config_failure(str(exc), "docker-compose"))
    module.exit_json(changed=False, compose_version=choice.version, compose_command=choice.label,
                     compose_cli=choice.kind, tmpdir=tmpdir, env_files=env_files, project=project,
                     docker=binary, deps=deps, specs=worker.spec_dicts(specs))


def _remove_tmpdir(tmpdir):
    if tmpdir:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _facts(module, request):
    client = _client(module)
    current = engine.containers(client, request["project"], with_aliases=True)
    running_ids = [c.image_id for c in current if c.running and not c.oneoff]
    module.exit_json(changed=False, containers=[compose.container_dict(c) for c in current],
                     image_ids=engine.image_ids(client, request["refs"] or []),
                     image_tags=engine.image_tags(client, running_ids))


def _backups(module, request):
    """Backup tags of the project per repository, for a rollback."""
    client = _client(module)
    module.exit_json(changed=False, candidates={repo: engine.backup_candidates(client, repo, request["tag_prefix"])
                                                for repo in request["repositories"] or []})


def _proxy_container(module, client, request):
    found = engine.running_container_of(client, request["project"], request["service"])
    if found is None:
        module.fail_json(msg="the proxy service %s has no running container in project %s; start the stack, or set "
                             "proxy.mode (resolving, caching or none) instead of auto." % (request["service"], request["project"]))
    return found


def _proxy_config(module, request):
    """The proxy's effective configuration (``nginx -T``), read inside its container."""
    client = _client(module)
    container = engine.running_container_of(client, request["project"], request["service"])
    if container is None:
        module.exit_json(changed=False, running=False, rc=None, config="", error="")
    try:
        rc, text = engine.exec_in(client, container.id, PROXY_CONFIG_DUMP)
    except Exception as exc:
        rc, text = -1, str(exc)
    module.exit_json(changed=False, running=True, rc=rc, config=text if rc == 0 else "",
                     error="" if rc == 0 else text[-2000:])


def _proxy_exec(module, request):
    """The proxy's graceful reload (for nginx ``nginx -s reload``), run inside its container."""
    client = _client(module)
    container = _proxy_container(module, client, request)
    try:
        rc, text = engine.exec_in(client, container.id, request["command"])
    except Exception as exc:
        rc, text = -1, str(exc)
    if rc != 0:
        module.fail_json(msg="the proxy reload (%s in %s) failed with exit code %s: %s" % (
            " ".join(request["command"]), container.name, rc, text.strip()[-500:]))
    module.exit_json(changed=True, rc=rc)


def _proxy_pin(module, request):
    """Point the proxy's name for a service at the containers that stay (``keep_ids``) in its
    /etc/hosts, or with no ``keep_ids`` remove the pins a release left (check: only say which).
    Does not fail: ``error`` says why nothing was pinned, and the caller goes on without."""
    client = _client(module)
    container = engine.running_container_of(client, request["project"], request["service"])
    answer = {"pinned": [], "removed": [], "resolves_to": None, "error": ""}
    addresses, written = [], False
    if container is None:
        answer["error"] = "the proxy service %s has no running container" % request["service"]
        module.exit_json(changed=False, **answer)
    try:
        text = engine.read_hosts(client, container.id)
        if request["keep_ids"]:
            addresses = engine.addresses_seen_by(client, container.id, request["keep_ids"])
            if not addresses:
                raise RuntimeError("the containers that stay share no network with the proxy")
            wanted = compose.hosts_with_pin(text, request["upstream"], addresses)
        else:
            wanted, answer["removed"] = compose.hosts_without_pins(text)
        if request["check"]:
            module.exit_json(changed=False, container=container.name, **answer)
        if wanted != text:
            written = True
            engine.write_hosts(client, container.id, wanted)
        if addresses:
            answer["resolves_to"] = engine.resolve_in(client, container.id, request["upstream"])
            if answer["resolves_to"] is not None and sorted(answer["resolves_to"]) != sorted(addresses):
                raise RuntimeError("after the pin the proxy still resolves %s to %s, not %s (its resolver does not read "
                                   "/etc/hosts first)" % (request["upstream"], ", ".join(answer["resolves_to"]) or "nothing",
                                                          ", ".join(addresses)))
            answer["pinned"] = addresses
    except Exception as exc:
        answer["error"] = str(exc)
        if addresses and written:  # a pin that does not resolve is not left behind
            try:
                engine.write_hosts(client, container.id, compose.hosts_without_pins(engine.read_hosts(client, container.id))[0])
            except Exception as cleanup_exc:
                answer["error"] += "; removing the pin failed too: %s" % cleanup_exc
    module.exit_json(changed=written, container=container.name, **answer)


def _hide(module, request):
    """Take running containers out of their service name (a release retires them): reconnected
    without the service alias, at the same address, they serve on for whoever still knows it."""
    client = _client(module)
    hidden = {}
    for container_id in request["ids"]:
        try:
            hidden[container_id] = engine.hide(client, container_id, request["service"])
        except Exception as exc:
            module.fail_json(msg="could not take container %s out of the service name %s: %s; it still serves "
                                 "under that name" % (container_id[:12], request["service"], exc), hidden=hidden)
    module.exit_json(changed=True, hidden=hidden)


def _wait(module, request):
    client = _client(module)
    specs = {name: compose.spec_from_dict(raw) for name, raw in request["specs"].items()}
    verdict = engine.wait_healthy(
        client, request["project"], specs, request["targets"], timeout=request["timeout"], interval=request["interval"],
        settle=request["settle"], url=request["url"], status_codes=request["status_code"] or [200],
        successes=request["successes"], wait_containers=request["containers"],
        exclude_ids=request["exclude_ids"] or [], watch_ids=request["watch_ids"] or [])
    if verdict["state"] != "ok":
        verdict["logs"] = _logs_for(client, request, verdict)
    module.exit_json(changed=False, verdict=verdict)


def _logs_for(client, request, verdict):
    lines = request["log_lines"]
    current = engine.containers(client, request["project"])
    chosen = None
    if verdict.get("container"):
        chosen = next((c for c in current if c.name == verdict["container"] or c.id.startswith(verdict["container"])),
                      None)
    service = verdict.get("service") or request["log_service"]
    if chosen is None and service:
        candidates = [c for c in current if c.service == service and c.id not in set(request["exclude_ids"] or [])]
        chosen = candidates[-1] if candidates else None
    if chosen is None:
        return []
    if not verdict.get("service"):
        verdict["service"] = chosen.service
    return engine.health_log(client, chosen.id) + engine.container_logs(client, chosen.id, lines)


def _ports(module, request):
    """Which wanted host ports are taken by someone other than the service that will own them."""
    import socket
    client = _client(module)
    current = engine.containers(client, request["project"])
    busy = {}
    for port, service in (request["ports"] or {}).items():
        if compose.ports_owned_by(port, service, current):
            continue
        host, number = compose.split_host_port(port)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        # as docker-proxy binds (Go listeners set SO_REUSEADDR): a port whose last connections
        # linger in TIME_WAIT is free for it, one with a listener is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, number))
        except OSError:
            busy[port] = service
        finally:
            sock.close()
    module.exit_json(changed=False, busy=busy)


def _surge_create(module, request):
    """Create one more container of a service (new release) and start it hidden from its
    service name; the old containers keep all traffic until the new one is healthy."""
    client = _client(module)
    service = request["service"]
    before = {c.id for c in engine.containers(client, request["project"])}
    if request["cli"] == compose_v1.STANDALONE:
        _v1_pull(module, client, request, [service])
        argv = _v1_argv(module, request, *compose_v1.surge_args(service, request["scale"], request["build"]))
    else:
        tail = ["create", "--no-recreate", "--scale", "%s=%d" % (service, request["scale"]), "--pull", request["pull"]]
        if request["build"] == "never":
            tail.append("--no-build")
        elif request["build"] == "always":
            tail.append("--build")
        argv = project_argv(request["docker"], request["project_src"], request["project"], request["files"],
                            request["env_files"], request["profiles"], *tail, service)
    rc, out, err = module.run_command(argv, cwd=request["project_src"])
    if rc != 0:
        module.fail_json(msg="compose create failed: %s" % compose.explain_compose_failure(err or out))
    new = [c for c in engine.containers(client, request["project"]) if c.id not in before and c.service == service]
    if not new:
        module.fail_json(msg="compose created no new %s container (asked for %d in all); look for stray containers "
                             "of the service with `docker compose -p %s ps -a`, remove them, and run again."
                             % (service, request["scale"], request["project"]))
    aliases = {}
    try:
        for container in new:
            aliases[container.id] = engine.start_hidden(client, container.id, service)
    except Exception as exc:
        for container in new:
            try:
                client.api.remove_container(container.id, force=True)
            except Exception:
                pass
        module.fail_json(msg="could not start the new %s container: %s" % (service, exc))
    ips = {c.id: engine.container_ips(client, c.id) for c in new}
    module.exit_json(changed=True, new_ids=[c.id for c in new], aliases=aliases, ips=ips)


# ---------------------------------------------------------------- docker-compose v1
# community.docker drives only the compose v2 plugin; with compose_command=standalone (or auto
# without the plugin) the action plugin calls these instead. Each returns what the action plugin
# reads from docker_compose_v2 / docker_compose_v2_run; the decisions live in _compose_v1.


def _v1_argv(module, request, *tail, profiles=None):
    try:
        return project_argv(request["docker"], request["project_src"], request["project"], request["files"],
                            request["env_files"], request["profiles"] if profiles is None else profiles, *tail,
                            standalone=True)
    except compose.ComposeError as exc:
        module.fail_json(msg=str(exc))


def _v1_run(module, request, tail, profiles=None):
    return module.run_command(_v1_argv(module, request, *tail, profiles=profiles), cwd=request["project_src"])


def _v1_failed(module, what, rc, out, err):
    module.fail_json(msg="%s%s" % (what, compose.explain_compose_failure(err or out)), rc=rc,
                     stderr=compose.tail_lines(err, 40))


def _v1_pull(module, client, request, services):
    """v1 ``up`` has no ``--pull``: pull=always pulls first, pull=never checks the images are here."""
    if request["pull"] == "always":
        rc, out, err = _v1_run(module, request, compose_v1.pull_args(services))
        if rc != 0:
            _v1_failed(module, "docker-compose pull failed: ", rc, out, err)
    elif request["pull"] == "never":
        specs = {name: compose.spec_from_dict(raw) for name, raw in (request["specs"] or {}).items()}
        wanted = compose_v1.with_dependencies(services, request["deps"] or {})
        refs = [specs[s].image for s in wanted if s in specs and specs[s].image]
        missing = compose_v1.missing_images(specs, wanted, engine.image_ids(client, refs))
        if missing:
            module.fail_json(msg=compose_v1.missing_images_message(missing))


def _v1_plan(module, request):
    """What `docker-compose up -d SERVICES` would do (v1 has no --dry-run), as check-mode actions."""
    client = _client(module)
    rc, out, err = _v1_run(module, request, compose_v1.hash_args(request["all_services"]), profiles=[])
    if rc != 0:
        _v1_failed(module, "docker-compose config --hash failed: ", rc, out, err)
    hashes = compose_v1.parse_hashes(out)
    actions = compose_v1.plan_up(request["services"], request["deps"] or {}, hashes, engine.containers(client, request["project"]))
    module.exit_json(changed=bool(actions), actions=actions)


def _v1_up(module, request):
    client = _client(module)
    services = request["services"] or []
    _v1_pull(module, client, request, services or request["targets"] or [])
    rc, out, err = _v1_run(module, request, compose_v1.up_args(services, request["build"]))
    if rc != 0:
        _v1_failed(module, "", rc, out, err)
    actions = compose_v1.parse_events(err + "\n" + out)
    module.exit_json(changed=bool(actions), actions=actions)


def _v1_down(module, request):
    """`docker-compose down`; changed only when the project had containers or networks (v1
    prints "Removing network" even for a network that is gone)."""
    client = _client(module)
    current = [{"name": c.name, "service": c.service} for c in engine.containers(client, request["project"])]
    volumes = engine.project_volumes(client, request["project"]) if request["remove_volumes"] else []
    actions = compose_v1.down_actions(current, engine.project_networks(client, request["project"]), volumes,
                                      request["all_services"], bool(request["remove_volumes"]))
    if actions and not request["check"]:
        rc, out, err = _v1_run(module, request, compose_v1.down_args(bool(request["remove_volumes"])),
                               profiles=request["all_profiles"] or [])
        if rc != 0:
            _v1_failed(module, "docker-compose down failed: ", rc, out, err)
    module.exit_json(changed=bool(actions), actions=actions)


def _v1_services_command(module, request, args):
    """``docker-compose restart|stop [-- SERVICES]``, reported as the actions it printed."""
    rc, out, err = _v1_run(module, request, args)
    if rc != 0:
        _v1_failed(module, "docker-compose %s failed: " % args[0], rc, out, err)
    module.exit_json(changed=True, actions=compose_v1.parse_events(err + "\n" + out))


def _v1_restart(module, request):
    if request["check"]:
        module.exit_json(changed=True, actions=[])
    _v1_services_command(module, request, compose_v1.restart_args(request["services"]))


def _v1_stop(module, request):
    _v1_services_command(module, request, compose_v1.stop_args(request["services"]))


def _v1_oneoff(module, request):
    """`docker-compose run --rm -T SERVICE [COMMAND]`; the container's exit code is data, not a failure."""
    rc, out, err = _v1_run(module, request, compose_v1.run_args(request["service"], request["command"]))
    module.exit_json(changed=True, exit_code=rc, stdout=out, stderr=err)


def _expose(module, request):
    client = _client(module)
    for container_id, original in (request["aliases"] or {}).items():
        engine.expose(client, container_id, request["service"], original)
    module.exit_json(changed=True)


def _cleanup(module, request):
    path = request["tmpdir"]
    if path and os.path.basename(path).startswith("dbops-compose-"):
        shutil.rmtree(path, ignore_errors=True)
    module.exit_json(changed=False)


# One handler per worker operation (module_utils/compose/worker.py). Read only: prepare (it writes
# the env file, a private temporary file that cleanup removes), facts, wait, ports, backups,
# proxy_config, v1_plan. They change state: cleanup, surge_create (creates and starts a container),
# expose and hide (reconnect a container to its networks), proxy_exec (reloads the proxy),
# proxy_pin (the proxy's /etc/hosts) and
# v1_up, v1_down, v1_restart, v1_stop, v1_run (docker-compose v1 commands).
HANDLERS = {
    "prepare": _prepare, "facts": _facts, "wait": _wait, "ports": _ports, "backups": _backups,
    "proxy_config": _proxy_config, "v1_plan": _v1_plan, "cleanup": _cleanup, "surge_create": _surge_create,
    "expose": _expose, "hide": _hide, "proxy_exec": _proxy_exec, "proxy_pin": _proxy_pin, "v1_up": _v1_up, "v1_down": _v1_down,
    "v1_restart": _v1_restart, "v1_stop": _v1_stop, "v1_run": _v1_oneoff,
}


def main():
    # The action plugin of the same name does the orchestration; it calls this module on the
    # target with the hidden option _worker, one operation per call (module_utils/compose/worker.py).
    module = AnsibleModule(argument_spec=dict(compose.ARGUMENT_SPEC, **{worker.OPTION: dict(type="dict")}),
                           supports_check_mode=True)
    # the request stays out of the result's invocation (it carries the env values)
    raw = module.params.pop(worker.OPTION, None)
    if not raw:
        module.fail_json(msg="dbops.migrations.compose_deploy runs through its action plugin; call it as a task "
                             "with the documented options.")
    try:
        operation, request = worker.read_request(raw)
    except worker.WorkerProtocolError as exc:
        module.fail_json(msg="compose_deploy: %s; the module and its action plugin come from different versions "
                             "of the collection?" % exc)
    request["project_src"] = module.params["project_src"]
    HANDLERS[operation.name](module, request)


if __name__ == "__main__":
    main()
