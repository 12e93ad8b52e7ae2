# -*- coding: utf-8 -*-
"""Action plugin for dbops.migrations.compose_deploy.

Compose changes go through community.docker's modules on the target (docker_compose_v2,
docker_compose_v2_run, docker_image_tag, docker_container). The other steps run in one call
each through the compose_deploy module on the target (its hidden ``_worker`` option, one typed
operation per call, see module_utils/compose/worker.py), with the Docker SDK
(module_utils/compose/engine.py): engine facts, the health wait with its URL gate, logs, backup tags, the proxy's configuration,
and the changes community.docker has no module for (hidden start and exposure of a surge
container, taking a retired one out of the service name, a proxy reload). What this adds: a
backup tag per project and release before the update, a health gate, a zero-downtime surge
(the old container leaves the service name before it stops; a caching proxy is reloaded
around that), an automatic rollback and a rollback on request through the compose tag variable.
Decisions live in module_utils/compose/plan.py.

community.docker's compose modules drive only the ``docker compose`` v2 plugin. Without it
(or with compose_command=standalone) the compose steps (plan, up, down, restart, run) run
``docker-compose`` v1 through the compose_deploy module instead, which answers in the shape
of docker_compose_v2's results; its decisions live in module_utils/compose/v1.py.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.dbops.migrations.plugins.module_utils.compose import plan as compose_plan
from ansible_collections.dbops.migrations.plugins.module_utils.compose import v1 as compose_v1
from ansible_collections.dbops.migrations.plugins.module_utils.compose import worker


class DeployFailed(Exception):
    def __init__(self, msg: str, **extra: Any):
        super().__init__(msg)
        self.msg = msg
        self.extra = extra


class EngineLost(DeployFailed):
    """The Docker engine stopped answering: nothing can be checked or rolled back until it is back."""


def by_service_running(containers: list[compose_plan.Container]) -> dict[str, str]:
    """{service: image id} of the running, non one-off containers."""
    return {c.service: c.image_id for c in containers if c.running and not c.oneoff}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    # ------------------------------------------------------------------ plumbing

    def _module(self, name: str, args: dict[str, Any], *, check: bool | None = None,
                ignore_errors: bool = False) -> dict[str, Any]:
        """Run one module on the target; ``check`` forces check mode on or off."""
        with self._check_mode(check):
            result = self._execute_module(module_name=name, module_args=dict(args),
                                          task_vars=self._task_vars)
        result.pop("invocation", None)
        if result.get("failed") and not ignore_errors:
            text = "%s\n%s" % (result.get("stderr", ""), result.get("msg", ""))
            error = EngineLost if result.get("engine_down") or compose_plan.engine_unreachable(text) else DeployFailed
            raise error(compose_plan.explain_compose_failure(text), module=name, failed_check="engine" if error is EngineLost
                        else None, module_result={k: result.get(k) for k in ("msg", "stderr", "rc") if k in result})
        return result

    @contextlib.contextmanager
    def _check_mode(self, check: bool | None):
        if check is None:
            yield
            return
        saved = self._task.check_mode
        self._task.check_mode = check
        try:
            yield
        finally:
            self._task.check_mode = saved

    def _compose_args(self) -> dict[str, Any]:
        args = {"project_src": self.params["project_src"], "project_name": self.project}
        if self.params["files"]:
            args["files"] = self.params["files"]
        if self.params["profiles"]:
            args["profiles"] = self.params["profiles"]
        if self.env_files:
            args["env_files"] = self.env_files
        return args

    # ------------------------------------------------------------------ target-side worker

    def _worker(self, op: str, **fields: Any) -> dict[str, Any]:
        """One step run by the compose_deploy module on the target (Docker SDK or compose CLI). The
        request is checked against its operation's spec (module_utils/compose/worker.py) before it
        leaves: an unknown, missing or mistyped field is a defect of this plugin, said as such.
        Read only: prepare, facts, wait, ports, backups, proxy_config, v1_plan; the others change
        state on the target (cleanup, surge_create, expose, hide, proxy_exec, v1_up, v1_down,
        v1_restart, v1_stop, v1_run)."""
        try:
            request = worker.build_request(op, **fields)
        except worker.WorkerProtocolError as exc:
            raise AnsibleError("compose_deploy: %s" % exc)
        args = {"project_src": self.params["project_src"], worker.OPTION: request}
        result = self._module("dbops.migrations.compose_deploy", args, check=False, ignore_errors=True)
        if result.get("failed"):
            msg = result.get("msg") or "compose_deploy %s failed" % op
            if result.get("engine_down") or compose_plan.engine_unreachable(msg):
                raise EngineLost(msg, failed_check="engine")
            raise DeployFailed(msg)
        return result

    def _v1(self, op: str, **fields: Any) -> dict[str, Any]:
        """One docker-compose v1 step through the compose_deploy module (what docker_compose_v2
        does for the compose plugin), with the project's global options."""
        project_options = {"docker": self.docker, "project": self.project, "files": self.params["files"],
                           "env_files": self.env_files, "profiles": self.params["profiles"], "pull": self.params["pull"],
                           "build": self.params["build"], "deps": self.deps, "targets": self.targets,
                           "specs": worker.spec_dicts(self.specs)}
        project_options.update(fields)
        return self._worker(op, **project_options)

    def _all_profiles(self) -> list[str]:
        return sorted({p for spec in self.specs.values() for p in spec.profiles})

    def _prepare(self, env: dict[str, Any] | None = None) -> None:
        """Env file, engine, compose and config, before anything changes. ``env`` replaces the
        task's variables (a rollback names the backup image through the tag variable)."""
        env = self.params["env"] if env is None else env
        self._cleanup()
        res = self._worker("prepare", env={k: ("" if v is None else to_text(v)) for k, v in env.items()},
                           project_name=self.params["project_name"], files=self.params["files"],
                           compose_command=self.params["compose_command"])
        self.tmpdir = res.get("tmpdir")
        self.env_files = res.get("env_files") or []
        self.compose_version = res["compose_version"]
        self.compose_command = res.get("compose_command")
        self.v1 = res.get("compose_cli") == compose_v1.STANDALONE
        self.deps = res.get("deps") or {}
        self.docker = res["docker"]
        self.project = res["project"]
        self.specs = {name: compose_plan.spec_from_dict(raw) for name, raw in res["specs"].items()}
        if self.v1:
            problem = compose_v1.unsupported_options(self.params["pull"])
            if problem:
                raise DeployFailed(problem)
        self.targets = compose_plan.select_services(self.specs, self.params["services"], None, self.params["profiles"])
        if self.params["run"]:
            compose_plan.select_services(self.specs, [self.params["run"]])
        if self.params["backup_tag"] and not compose_plan.valid_tag(self.params["backup_tag"]):
            raise DeployFailed("backup_tag %r is not a valid image tag prefix; use letters, digits, '.', '_' "
                               "and '-' (for example %s)" % (self.params["backup_tag"], compose_plan.BACKUP_PREFIX))

    def _cleanup(self) -> None:
        if getattr(self, "tmpdir", None):
            try:
                self._worker("cleanup", tmpdir=self.tmpdir)
            except DeployFailed:
                pass
            self.tmpdir = None

    def _facts(self, refs: list[str] | None = None) -> tuple[list[compose_plan.Container], dict[str, str | None]]:
        res = self._worker("facts", project=self.project, refs=refs or [])
        self.image_tags = res.get("image_tags") or {}
        return [compose_plan.container_from_dict(c) for c in res["containers"]], res.get("image_ids") or {}

    def _containers(self) -> list[compose_plan.Container]:
        return self._facts()[0]

    def _image_ids(self, refs: list[str]) -> dict[str, str | None]:
        return self._facts(refs)[1]

    def _wait_healthy(self, targets: list[str], *, exclude_ids: tuple[str, ...] = (),
                      watch_ids: tuple[str, ...] = (), settle: float = 0.0,
                      log_service: str | None = None, use_url: bool = True,
                      url: str | None = None) -> tuple[compose_plan.HealthVerdict, list[str]]:
        """Containers running and healthy, ``settle`` seconds stable, then the URL (one call);
        ``url`` replaces the health URL (the deep health URL of a hidden container)."""
        h = self.health
        res = self._worker(
            "wait", project=self.project, specs=worker.spec_dicts(self.specs),
            targets=list(targets), timeout=h["timeout"], interval=h["interval"], settle=settle,
            url=url or (h.get("url") if use_url else None), status_code=h["status_code"], successes=h["successes"],
            containers=h["containers"], exclude_ids=list(exclude_ids), watch_ids=list(watch_ids),
            log_lines=self.params["log_lines"], log_service=log_service)
        v = res["verdict"]
        self.timeline.append(("health %s" % v["state"], round(time.monotonic() - self.t0, 2)))
        return (compose_plan.HealthVerdict(v["state"], v.get("check"), v.get("service"), v.get("container"),
                                           v.get("reason") or ""), v.get("logs") or [])

    # ------------------------------------------------------------------ steps

    def _dry_run(self, services: list[str] | None = None) -> dict[str, Any]:
        if self.v1:
            return self._v1("v1_plan", services=list(services or self.targets), all_services=list(self.specs))
        args = self._compose_args()
        args.update({"state": "present", "pull": self.params["pull"], "build": self.params["build"]})
        if services:
            args["services"] = services
        return self._module("community.docker.docker_compose_v2", args, check=True)

    def _plan(self) -> list[compose_plan.ServiceChange]:
        refs = [self.specs[s].image for s in self.targets if self.specs[s].image]
        containers, image_ids = self._facts(refs)
        dry = self._dry_run(self.params["services"])
        actions = compose_plan.services_from_dry_run(dry.get("actions", []), self.project, containers, self.specs)
        return compose_plan.plan_changes(self.specs, self.targets, containers, actions, image_ids,
                                         zero_downtime=self.params["zero_downtime"])

    def _check_ports(self, plan: list[compose_plan.ServiceChange]) -> None:
        """A host port the release needs must be free or held by the container it replaces."""
        wanted = {}
        for change in plan:
            if change.changes:
                for port in self.specs[change.service].published_ports:
                    wanted[port] = change.service
        if not wanted:
            return
        res = self._worker("ports", project=self.project, ports=wanted)
        if res.get("busy"):
            raise DeployFailed(compose_plan.port_conflict_message(res["busy"]), failed_check="ports")

    def _backup(self, plan: list[compose_plan.ServiceChange]) -> list[dict[str, str]]:
        """Keep each replaced image under this project's own backup tag (never a release tag)."""
        done = []
        for item in compose_plan.backup_targets(plan, self.params["backup_tag"], self.project):
            self._module("community.docker.docker_image_tag", {
                "name": item["image_id"], "repository": [item["backup"]],
                "existing_images": "overwrite"}, check=False)
            done.append(item)
        return done

    def _up(self, services: list[str] | None, **extra: Any) -> dict[str, Any]:
        if self.v1:
            return self._v1("v1_up", services=list(services or []))
        args = self._compose_args()
        args.update({"state": "present", "pull": self.params["pull"], "build": self.params["build"],
                     "remove_orphans": False})
        if services:
            args["services"] = services
        args.update(extra)
        return self._module("community.docker.docker_compose_v2", args, check=False)

    def _remove_container(self, container: compose_plan.Container, graceful: bool = True) -> None:
        """Graceful: SIGTERM and up to stop_timeout seconds to finish in-flight requests. A failed
        new container never took traffic, so it is removed at once."""
        if graceful:
            self._module("community.docker.docker_container", {
                "name": container.id, "state": "stopped", "stop_timeout": self.params["stop_timeout"]},
                check=False, ignore_errors=True)
        self._module("community.docker.docker_container", {"name": container.id, "state": "absent",
                                                           "force_kill": True}, check=False)

    def _surge(self, change: compose_plan.ServiceChange) -> None:
        """Start the new release beside the old one, hidden from the service name until it is
        healthy and has stayed so for ``settle`` seconds; then let it take traffic, check the
        health URL, and retire the old container (see _retire)."""
        service = change.service
        old = [c for c in self._containers() if c.service == service and not c.oneoff]
        for leftover in [c for c in old if c.hidden]:
            # the new container of a release that never finished (the engine or the run died):
            # it never took traffic, and compose would count it towards the scale below
            self._remove_container(leftover, graceful=False)
            self._mark("removed unfinished %s" % leftover.name)
        old = [c for c in old if not c.hidden]
        old_ids = tuple(c.id for c in old)
        self._unpin_proxy(service, "left by a release that never finished")
        self._mark("surge %s" % service)
        try:
            # compose counts stopped containers towards the scale too
            created = self._worker("surge_create", project=self.project, service=service,
                                   scale=len(old) + 1, pull=self.params["pull"],
                                   build=self.params["build"], docker=self.docker, files=self.params["files"],
                                   env_files=self.env_files, profiles=self.params["profiles"],
                                   cli=compose_v1.STANDALONE if self.v1 else compose_v1.PLUGIN, deps=self.deps,
                                   specs=worker.spec_dicts(self.specs))
        except EngineLost:
            raise
        except DeployFailed as exc:
            # nothing new runs (the worker removes what it created); the old release serves on
            raise DeployFailed(exc.msg, failed_check="compose", failed_service=service, logs=[], old_kept=True)
        new_ids = tuple(created.get("new_ids") or [])
        new = [compose_plan.Container(id=i, name=i[:12], service=service, number=0, image="", image_id="",
                                      state="running", health="none") for i in new_ids]
        verdict, logs = self._wait_healthy([service], exclude_ids=old_ids, watch_ids=new_ids,
                                           settle=self.health["settle"], log_service=service, use_url=False,
                                           url=self._deep_health_url(created, new_ids))
        exposed = False
        if verdict.state == "ok":
            self._worker("expose", service=service, aliases=created.get("aliases") or {})
            exposed = True
            self._mark("exposed new %s" % service)
            # a proxy that resolved the service name once learns the new container only now
            self._reload_proxy(service, "new %s healthy" % service)
            if self.health.get("url"):
                verdict, logs = self._wait_healthy([service], exclude_ids=old_ids, watch_ids=new_ids,
                                                   log_service=service)
        if verdict.state != "ok":
            if exposed:
                # it took traffic: it leaves the name before it stops, as a retired release does
                self._retire(service, new, "new", keep=old)
            else:
                for container in new:
                    self._remove_container(container, graceful=False)
            self._mark("removed new %s" % service)
            raise DeployFailed("new release of %s failed its health gate: %s" % (service, verdict.reason),
                               failed_check=verdict.check, failed_service=service, logs=logs,
                               old_kept=True)
        self._retire(service, old, "old", keep=new)

    def _deep_health_url(self, created: dict[str, Any], new_ids: tuple[str, ...]) -> str | None:
        """health.container_path on the hidden new container itself, before it takes traffic."""
        path, port = self.health.get("container_path"), self.health.get("container_port")
        if not path or not new_ids:
            return None
        ips = (created.get("ips") or {}).get(new_ids[0]) or []
        if not ips:
            raise DeployFailed("the new container has no network address for health.container_path",
                               failed_check="url", old_kept=True)
        return "http://%s:%d/%s" % (ips[0], port or 80, path.lstrip("/"))

    def _proxy_caches(self, service: str) -> bool:
        return bool(self.proxy) and self.proxy["mode"] == "caching" and service in self.proxy["upstreams"]

    def _reload_proxy(self, service: str, why: str, drain: bool = True) -> bool:
        """Graceful reload of a caching proxy (it re-resolves the service name); False when none.
        ``drain``: wait proxy.drain for the requests its old workers still carry."""
        if not self._proxy_caches(service):
            return False
        self._worker("proxy_exec", project=self.project, service=self.proxy["service"],
                     command=list(self.proxy["reload_command"]))
        self._mark("reloaded %s (%s)" % (self.proxy["service"], why))
        if drain and self.proxy["drain"] > 0:
            time.sleep(self.proxy["drain"])  # requests the old proxy workers still carry finish
        return True

    def _pin_proxy(self, service: str, keep: list[compose_plan.Container], which: str) -> bool:
        """A caching proxy: point its name for ``service`` at the containers that stay and reload it,
        before the retiring ones leave the name. Leaving the name is a reconnect during which their
        address does not answer; a proxy that still sent there would wait for TCP's second SYN (1 s).
        False when there is no caching proxy, or the pin did not take (the timeline says why)."""
        if not self._proxy_caches(service) or not keep:
            return False
        answer = self._worker("proxy_pin", project=self.project, service=self.proxy["service"], upstream=service,
                              keep_ids=[c.id for c in keep], check=False)
        if not answer.get("pinned"):
            self._mark("not pinned %s in %s (%s): it sends to the %s container while it leaves the name"
                       % (service, self.proxy["service"], answer.get("error") or "no address", which))
            return False
        self._mark("pinned %s to %s in %s" % (service, ", ".join(answer["pinned"]), self.proxy["service"]))
        return True

    def _unpin_proxy(self, service: str, why: str, pinned_here: bool = False) -> None:
        """Remove a release's pins from a caching proxy's /etc/hosts (the service name resolves
        through Docker's DNS again). A pin that cannot be removed is a warning that says how; a
        proxy whose hosts file cannot even be read never held one."""
        if not self._proxy_caches(service):
            return
        answer = self._worker("proxy_pin", project=self.project, service=self.proxy["service"], upstream=service,
                              keep_ids=[], check=False)
        if answer.get("removed") and not answer.get("error"):
            self._mark("unpinned %s in %s (%s)" % (service, self.proxy["service"], why))
        elif answer.get("error") and (pinned_here or answer.get("removed")):
            self.warnings.append(
                "could not remove the release's lines from /etc/hosts in the proxy container %s (%s): until they are "
                "gone, a reload of the proxy resolves %s to the addresses they name. Remove the lines marked '%s' "
                "(docker exec %s sh -c 'grep -v \"%s\" /etc/hosts > /tmp/hosts; cat /tmp/hosts > /etc/hosts'), "
                "restart the proxy container (Docker writes /etc/hosts anew), or run the release again, which removes "
                "them first."
                % (answer.get("container") or self.proxy["service"], answer["error"], service,
                   compose_plan.HOSTS_PIN_MARK, answer.get("container") or self.proxy["service"],
                   compose_plan.HOSTS_PIN_MARK))

    def _retire(self, service: str, containers: list[compose_plan.Container], which: str,
                keep: list[compose_plan.Container]) -> None:
        """Retire containers without a proxy ever holding a dead address: a caching proxy pinned to
        the containers that stay (``keep``) and reloaded; then out of the service name (same
        address, still serving; without a pin a caching proxy is reloaded now), then drain_seconds
        (at least a re-resolving proxy's resolver validity) for DNS caches and requests in flight
        to run out; only then SIGTERM (stop_timeout to finish) and removal."""
        if not containers:
            return
        pinned = False
        try:
            pinned = self._pin_proxy(service, keep, which)
            if pinned:
                # its old workers finish what they carry (some of it on the retiring containers)
                # before those reconnect
                self._reload_proxy(service, "%s %s pinned out" % (which, service))
            answer = self._worker("hide", service=service, ids=[c.id for c in containers])
            self._mark("hid %s %s" % (which, service))
        finally:
            if pinned:
                # the name now resolves to the containers that stay through Docker's DNS too
                self._unpin_proxy(service, "%s %s hidden" % (which, service), pinned_here=True)
        for container_id, addresses in sorted((answer.get("hidden") or {}).items()):
            if addresses.get("addresses_before") != addresses.get("addresses_after"):
                # Docker gave it another address: a proxy still holding the old one waits on it
                self._mark("address of %s %s changed (%s -> %s)" % (which, container_id[:12], ", ".join(
                    addresses.get("addresses_before") or []), ", ".join(addresses.get("addresses_after") or [])))
        reloaded = not pinned and self._reload_proxy(service, "%s %s hidden" % (which, service), drain=False)
        wait = compose_plan.retire_wait(self.params["drain_seconds"], self.proxy if self._proxy_routes_to(service)
                                        else None, reloaded)
        if wait > 0:
            time.sleep(wait)
        self._mark("drained %s %s (%.1f s)" % (which, service, wait))
        for container in containers:
            self._remove_container(container)
        self._mark("stopped %s %s" % (which, service))
        if which == "old":
            self._mark("retired old %s" % service)

    def _proxy_routes_to(self, service: str) -> bool:
        return bool(self.proxy) and service in self.proxy["upstreams"]

    def _mark(self, step: str) -> None:
        self.timeline.append((step, round(time.monotonic() - self.t0, 2)))

    def _deploy(self, plan: list[compose_plan.ServiceChange]) -> None:
        surged = [c for c in plan if c.strategy == "surge"]
        for change in surged:
            self._surge(change)
        if surged:
            # compose plans to recreate dependents of a recreated service; after a surge they
            # usually need nothing, so ask again instead of trusting the first plan
            plan = self._plan()
        if any(c.changes for c in plan) or not plan:
            self.timeline.append(("compose up", round(time.monotonic() - self.t0, 2)))
            try:
                self._up(self.params["services"])
            except EngineLost:
                raise
            except DeployFailed as exc:
                raise DeployFailed("compose up failed: %s" % exc.msg, failed_check="compose",
                                   failed_service=None, logs=[])
        changed = [c.service for c in plan if c.changes]
        verdict, logs = self._wait_healthy(self.targets, log_service=changed[0] if changed else None)
        if verdict.state != "ok":
            raise DeployFailed("health check failed: %s" % verdict.reason, failed_check=verdict.check,
                               failed_service=verdict.service or (changed[0] if changed else None), logs=logs)

    def _redeploy_images(self, chosen: dict[str, dict[str, str]]) -> list[str]:
        """Deploy the given backups ({service: {ref, id}}) through the compose file's own tag
        variable (and image variable), then check that each service runs exactly that image."""
        refs = {compose_plan.parse_image_ref(c["ref"]) for c in chosen.values()}
        tags = sorted({r.tag for r in refs})
        if len(tags) != 1:
            raise DeployFailed("the services to roll back need different backup tags (%s) but the compose file has one "
                               "tag variable (%s); roll them back one at a time with services=[...]"
                               % (", ".join(tags), self.params["tag_variable"]), failed_check="rollback")
        env = dict(self.params["env"])
        env[self.params["tag_variable"]] = tags[0]
        repos = sorted({r.repository for r in refs})
        if self.params["image_variable"] and len(repos) == 1:
            env[self.params["image_variable"]] = repos[0]
        self._prepare(env)
        wrong = {s: self.specs[s].image for s, c in chosen.items() if self.specs[s].image != c["ref"]}
        if wrong:
            raise DeployFailed(
                "with %s=%s the compose file still names %s, so the backup cannot be deployed through it; set "
                "tag_variable (and image_variable) to the variables the compose file uses in image:"
                % (self.params["tag_variable"], tags[0], ", ".join("%s: %s" % kv for kv in sorted(wrong.items()))),
                failed_check="rollback")
        self._deploy(self._plan())
        running = by_service_running(self._containers())
        mismatch = ["%s runs %s, expected %s" % (s, compose_plan.short_id(running.get(s)), compose_plan.short_id(c["id"]))
                    for s, c in chosen.items() if running.get(s) != c["id"]]
        if mismatch:
            raise DeployFailed("after the rollback " + "; ".join(mismatch), failed_check="rollback")
        return sorted({c["ref"] for c in chosen.values()})

    def _rollback_after(self, failure: DeployFailed, backups: list[dict[str, str]],
                        fresh: bool) -> dict[str, Any]:
        """Bring the previous release back; report what failed and what serves now."""
        out: dict[str, Any] = {"failed": True, "rolled_back": True, "msg": failure.msg,
                               "failed_check": failure.extra.get("failed_check"),
                               "failed_service": failure.extra.get("failed_service"),
                               "logs": failure.extra.get("logs", [])}
        if fresh:
            # Nothing ran before this deploy: leave nothing half-started.
            self._down(remove_volumes=False, check=False, ignore_errors=True)
            out["msg"] += "; the new containers were removed (nothing ran before)"
            return out
        if failure.extra.get("old_kept"):
            # The old containers never stopped: nothing to bring back, no tag to touch.
            out["restored_images"] = []
            out["msg"] += "; the new container was removed and the previous release kept serving"
            self._mark("rolled back")
            return out
        # In place: redeploy the images that ran before, each under its backup tag (release tags
        # stay where they are, the failed release keeps its own).
        chosen = {b["service"]: {"ref": b["backup"], "id": b["image_id"]} for b in backups}
        try:
            if chosen:
                out["restored_images"] = self._redeploy_images(chosen)
                out["msg"] += "; rolled back to the previous release (%s), which is healthy" % ", ".join(
                    "%s: %s" % (b["service"], b["source"] if not compose_plan.is_image_id(b["source"]) else b["backup"])
                    for b in backups)
            else:
                out["restored_images"] = []
                self._deploy(self._plan())
                out["msg"] += "; redeployed the previous configuration"
        except EngineLost:
            raise
        except DeployFailed as again:
            out["rollback_error"] = again.msg
            out["msg"] += "; ROLLBACK ALSO FAILED: %s" % again.msg
        self._mark("rolled back")
        return out

    # ------------------------------------------------------------------ states

    def _present(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.params["rollback"]:
            return self._manual_rollback(result)
        plan = self._plan()
        changing = [c for c in plan if c.changes]
        result["changed"] = bool(changing)
        result["plan"] = compose_plan.dump_plan(plan)
        result["services"] = self.targets
        if self._task.diff:
            result["diff"] = compose_plan.render_diff(plan)
        if any(c.action == "recreate" for c in changing):
            # something that runs is replaced: how does traffic reach it, can it be done without downtime?
            self._refuse_in_place(plan, result)
        if self._task.check_mode:
            return result
        if not changing:
            verdict, logs = self._wait_healthy(self.targets)
            result["images"] = self._running_images()
            if verdict.state != "ok":
                result.update(failed=True, msg="the running release is not healthy: %s" % verdict.reason,
                              failed_check=verdict.check, failed_service=verdict.service, logs=logs)
            return result
        self._check_ports(plan)
        fresh = not any(c.before_image_id for c in plan)
        backups = self._backup(plan) if self.params["backup_tag"] else []
        result["backups"] = [b["backup"] for b in backups]
        result["backup_images"] = compose_plan.backup_images_result(backups)
        started = time.monotonic()
        try:
            self._deploy(plan)
        except EngineLost as lost:
            result.update(self._engine_lost(lost, backups, during_rollback=False))
        except DeployFailed as failure:
            if not self.params["rollback_on_failure"]:
                result.update(failed=True, rolled_back=False, msg=failure.msg,
                              failed_check=failure.extra.get("failed_check"),
                              failed_service=failure.extra.get("failed_service"),
                              logs=failure.extra.get("logs", []))
                return result
            try:
                result.update(self._rollback_after(failure, backups, fresh))
            except EngineLost as lost:
                result.update(self._engine_lost(lost, backups, during_rollback=True))
                result["msg"] = "%s; then %s" % (failure.msg, result["msg"])
        result["duration_s"] = round(time.monotonic() - started, 2)
        result["timeline"] = [{"step": step, "t": t} for step, t in self.timeline]
        if self.warnings:
            result["warnings"] = list(self.warnings)
        if not result.get("engine_lost"):
            result["images"] = self._running_images()
        return result

    def _detect_proxy(self) -> None:
        """How traffic reaches the services (proxy option): mode and the services it routes to."""
        option = self.params.get("proxy")
        self.proxy = None
        if not option:
            return
        proxy = {"service": option.get("service"), "mode": option.get("mode") or "auto",
                 "reload_command": option.get("reload_command") or ["nginx", "-s", "reload"],
                 "drain": float(option.get("drain") if option.get("drain") is not None else 2.0),
                 "upstreams": [], "detected": False, "resolver_valid_s": None}
        if proxy["mode"] != "none" and not proxy["service"]:
            raise DeployFailed("proxy.service is required with proxy.mode=%s: name the compose service of the reverse "
                               "proxy (for example nginx), or set proxy.mode=none" % proxy["mode"])
        if proxy["mode"] != "none":
            if proxy["service"] not in self.specs:
                raise DeployFailed("proxy.service %s is not a service of the compose project (it defines: %s)"
                                   % (proxy["service"], ", ".join(sorted(self.specs))))
            others = [s for s in self.specs if s != proxy["service"]]
            answer = self._worker("proxy_config", project=self.project, service=proxy["service"])
            if not answer.get("running"):
                # no proxy container runs: no traffic flows through it, nothing to keep alive
                proxy["mode"] = "none" if proxy["mode"] == "auto" else proxy["mode"]
            elif answer.get("rc") == 0:
                found = compose_plan.classify_proxy(answer.get("config") or "", others)
                proxy["upstreams"] = found["upstreams"]
                proxy["resolver_valid_s"] = found["resolver_valid_s"]
                if proxy["mode"] == "auto":
                    proxy["mode"], proxy["detected"] = found["mode"], True
            elif proxy["mode"] == "auto":
                raise DeployFailed(
                    "could not read the configuration of the proxy %s to tell how it reaches the services (%s); set "
                    "proxy.mode to resolving (it re-resolves names), caching (it resolves them once; give "
                    "proxy.reload_command) or none. Nothing was changed."
                    % (proxy["service"], (answer.get("error") or "").strip()[-300:] or "nginx -T failed"))
            if not proxy["upstreams"]:
                proxy["upstreams"] = [s for s in self.targets if s != proxy["service"]]
        self.proxy = proxy

    def _refuse_in_place(self, plan: list[compose_plan.ServiceChange], result: dict[str, Any]) -> None:
        """With a proxy option: say before anything changes when a service that takes traffic
        can only be released in place, and go on only with allow_in_place."""
        self._detect_proxy()
        if self.proxy is None:
            return
        result["proxy"] = {k: self.proxy[k] for k in ("service", "mode", "upstreams", "detected")}
        if not self.params["zero_downtime"] or self.params["allow_in_place"]:
            return
        if self.proxy["mode"] == "none":
            traffic = [s for s in (self.params["services"] or []) if self.specs[s].published_ports]
        else:
            traffic = self.proxy["upstreams"]
        problem = compose_plan.in_place_problem(plan, self.specs, traffic, self.proxy["mode"])
        if problem:
            raise DeployFailed(problem, failed_check="strategy")

    def _engine_lost(self, lost: EngineLost, backups: list[dict[str, str]], during_rollback: bool) -> dict[str, Any]:
        self._mark("engine lost")
        last = self.timeline[-2][0] if len(self.timeline) > 1 else None
        return {"failed": True, "rolled_back": False, "engine_lost": True, "failed_check": "engine",
                "failed_service": None, "logs": [],
                "msg": compose_plan.engine_lost_message(lost.msg, last, [b["backup"] for b in backups], during_rollback)}

    def _manual_rollback(self, result: dict[str, Any]) -> dict[str, Any]:
        """Redeploy the image each service ran before the last release, from this project's backup
        tag, through the compose file's tag variable; release tags are not touched."""
        prefix = compose_plan.backup_prefix(self.params["backup_tag"], self.project)
        self._detect_proxy()
        repos = {s: compose_plan.parse_image_ref(self.specs[s].image).repository for s in self.targets if self.specs[s].image}
        found = self._worker("backups", repositories=sorted(set(repos.values())), tag_prefix=prefix)["candidates"]
        running = by_service_running(self._containers())
        chosen = {}
        for service, repo in repos.items():
            pick = compose_plan.choose_rollback_image(found.get(repo) or [], running.get(service))
            if pick:
                chosen[service] = {"ref": pick["ref"], "id": pick["id"]}
        if not chosen:
            raise DeployFailed("no backup image of project %s (tags %s* in %s) to roll back %s to; a release that "
                               "replaces a running image writes one" % (
                                   self.project, prefix, ", ".join(sorted(set(repos.values()))) or "-",
                                   ", ".join(self.targets)), failed_check="rollback")
        result["changed"] = True
        result["restored_images"] = sorted({c["ref"] for c in chosen.values()})
        result["rollback_to"] = {s: {"image": c["ref"], "id": c["id"]} for s, c in chosen.items()}
        if self._task.check_mode:
            return result
        self._redeploy_images(chosen)
        result["images"] = self._running_images()
        return result

    def _running_images(self) -> dict[str, str]:
        """repo:tag per running service: what runs, never a bare image id when a tag names it."""
        current = [c for c in self._containers() if c.running and not c.oneoff]
        return {c.service: compose_plan.display_image(c.image, c.image_id, self.image_tags.get(c.image_id) or [],
                                                      self.params["backup_tag"]) for c in current}

    def _inspected(self, result: dict[str, Any]) -> dict[str, Any]:
        """Read-only: per service, the container, image (repo:tag), image id, running, health."""
        grouped = compose_plan.by_service(self._containers())
        services = {}
        for service in self.targets:
            present = grouped.get(service) or []
            first = next((c for c in present if c.running), present[0] if present else None)
            if first is None:
                services[service] = {"container": None, "image": None, "image_id": None, "running": False,
                                     "health": None}
                continue
            services[service] = {
                "container": first.name, "running": first.running, "health": first.health,
                "image": compose_plan.display_image(first.image, first.image_id, self.image_tags.get(first.image_id) or [],
                                                    self.params["backup_tag"]),
                "image_id": first.image_id}
        result.update(changed=False, services=services)
        return result

    def _down(self, remove_volumes: bool, check: bool | None = None, ignore_errors: bool = False) -> dict[str, Any]:
        if self.v1:
            try:
                return self._v1("v1_down", remove_volumes=remove_volumes, all_services=list(self.specs),
                                all_profiles=self._all_profiles(),
                                check=self._task.check_mode if check is None else check)
            except DeployFailed:
                if ignore_errors:
                    return {"failed": True}
                raise
        args = dict(self._compose_args(), state="absent", remove_volumes=remove_volumes)
        return self._module("community.docker.docker_compose_v2", args, check=check, ignore_errors=ignore_errors)

    def _absent(self, result: dict[str, Any]) -> dict[str, Any]:
        res = self._down(self.params["remove_volumes"])
        result["changed"] = res.get("changed", False)
        result["actions"] = res.get("actions", [])
        return result

    def _restarted(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.v1:
            res = self._v1("v1_restart", services=self.params["services"], check=self._task.check_mode)
        else:
            args = dict(self._compose_args(), state="restarted")
            if self.params["services"]:
                args["services"] = self.params["services"]
            res = self._module("community.docker.docker_compose_v2", args)
        result["changed"] = res.get("changed", True)
        if self._task.check_mode:
            return result
        verdict, logs = self._wait_healthy(self.targets)
        if verdict.state != "ok":
            result.update(failed=True, msg="after the restart: %s" % verdict.reason,
                          failed_check=verdict.check, failed_service=verdict.service, logs=logs)
        return result

    def _stopped(self, result: dict[str, Any]) -> dict[str, Any]:
        """Stop the running containers of ``services`` (all when empty) and keep them, so that
        ``state: present`` or ``restarted`` brings the same release back."""
        wanted = set(self.params["services"] or self.specs)
        running = sorted(c.name for c in self._containers()
                         if c.service in wanted and c.running and not c.oneoff)
        result.update(changed=bool(running), stopped=running)
        if not running or self._task.check_mode:
            return result
        if self.v1:
            self._v1("v1_stop", services=self.params["services"])
        else:
            args = dict(self._compose_args(), state="stopped")
            if self.params["services"]:
                args["services"] = self.params["services"]
            self._module("community.docker.docker_compose_v2", args)
        left = sorted(c.name for c in self._containers() if c.name in running and c.running)
        if left:
            result.update(failed=True, msg="still running after the stop: %s; stop them with `docker stop`"
                                           % ", ".join(left))
        return result

    def _run_oneoff(self, result: dict[str, Any]) -> dict[str, Any]:
        service = self.params["run"]
        result["changed"] = True
        if self._task.check_mode:
            result["msg"] = "would run the one-off service %s" % service
            return result
        args = self._compose_args()
        profiles = set(args.get("profiles", [])) | set(self.specs[service].profiles)
        if profiles:
            args["profiles"] = sorted(profiles)
        if self.v1:
            ran = self._v1("v1_run", service=service, command=self.params["run_command"] or [],
                           profiles=sorted(profiles))
            res = {"rc": ran.get("exit_code"), "stdout": ran.get("stdout", ""), "stderr": ran.get("stderr", "")}
        else:
            # interactive stays at its default: `--no-interactive` needs compose 2.27
            args.update({"service": service, "cleanup": True, "detach": False, "tty": False,
                         "remove_orphans": False})
            if self.params["run_command"]:
                args["argv"] = self.params["run_command"]
            res = self._module("community.docker.docker_compose_v2_run", args, ignore_errors=True)
        rc = res.get("rc")
        output = "%s\n%s" % (res.get("stdout", ""), res.get("stderr", ""))
        result.update(run={"service": service, "rc": rc,
                           "stdout": res.get("stdout", ""), "stderr": res.get("stderr", ""),
                           "logs": compose_plan.tail_lines(output, self.params["log_lines"])})
        result["rc"] = rc
        if rc != 0:
            result["failed"] = True
            result["msg"] = ("one-off service %s exited with %s; see run.logs" % (service, rc)
                             if rc is not None else compose_plan.explain_compose_failure(output + res.get("msg", "")))
        return result

    # ------------------------------------------------------------------ entry point

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        result = super().run(tmp, task_vars)
        del tmp
        self._task_vars = task_vars or {}
        validation, self.params = self.validate_argument_spec(argument_spec=compose_plan.ARGUMENT_SPEC)
        self.params = dict(self.params)
        self.health = dict(self.params["health"] or {})
        for key, default in compose_plan.ARGUMENT_SPEC["health"]["options"].items():
            self.health.setdefault(key, default.get("default"))
            if self.health[key] is None and "default" in default:
                self.health[key] = default["default"]
        self.project = self.params["project_name"]
        self.v1 = False
        self.deps = {}
        self.targets = []
        self.compose_command = None
        self.env_files = []
        self.tmpdir = None
        self.timeline = []
        self.warnings: list[str] = []
        self.proxy = None
        self.image_tags = {}
        self.t0 = time.monotonic()
        result.update(changed=False, rolled_back=False, project=None)
        try:
            self._prepare()
            result["project"] = self.project
            result["compose_version"] = self.compose_version
            result["compose_command"] = self.compose_command
            if self.params["run"]:
                return self._run_oneoff(result)
            if self.params["state"] == "absent":
                return self._absent(result)
            if self.params["state"] == "restarted":
                return self._restarted(result)
            if self.params["state"] == "stopped":
                return self._stopped(result)
            if self.params["state"] == "inspected":
                return self._inspected(result)
            return self._present(result)
        except DeployFailed as exc:
            result.update(failed=True, msg=exc.msg)
            for key in ("failed_check", "failed_service", "logs"):
                if key in exc.extra:
                    result[key] = exc.extra[key]
            return result
        except compose_plan.ComposeError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        except AnsibleError:
            raise
        finally:
            self._cleanup()
