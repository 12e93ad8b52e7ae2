# -*- coding: utf-8 -*-
"""Action plugin for dbops.migrations.compose_deploy.

Every change goes through community.docker's modules on the target (docker_compose_v2,
docker_compose_v2_run, docker_image_tag, docker_container). The read-only steps (engine
facts, the health wait with its URL gate, logs) and the hidden start of a surge container
run in one call each through the compose_deploy module on the target, with the Docker SDK
(module_utils/_compose_engine.py). What this adds: a backup tag before the update, a health
gate, a zero-downtime surge for services that can run twice, and an automatic rollback.
Decisions live in module_utils/_compose.py.

community.docker's compose modules drive only the ``docker compose`` v2 plugin. Without it
(or with compose_command=standalone) the compose steps (plan, up, down, restart, run) run
``docker-compose`` v1 through the compose_deploy module instead, which answers in the shape
of docker_compose_v2's results; its decisions live in module_utils/_compose_v1.py.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.dbops.migrations.plugins.module_utils import _compose as cu
from ansible_collections.dbops.migrations.plugins.module_utils import _compose_v1 as cu1


class DeployFailed(Exception):
    def __init__(self, msg: str, **extra: Any):
        super().__init__(msg)
        self.msg = msg
        self.extra = extra


class EngineLost(DeployFailed):
    """The Docker engine stopped answering: nothing can be checked or rolled back until it is back."""


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
            error = EngineLost if result.get("engine_down") or cu.engine_unreachable(text) else DeployFailed
            raise error(cu.explain_compose_failure(text), module=name, failed_check="engine" if error is EngineLost
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
        args = {"project_src": self.p["project_src"], "project_name": self.project}
        if self.p["files"]:
            args["files"] = self.p["files"]
        if self.p["profiles"]:
            args["profiles"] = self.p["profiles"]
        if self.env_files:
            args["env_files"] = self.env_files
        return args

    # ------------------------------------------------------------------ target-side worker

    def _worker(self, op: str, **job: Any) -> dict[str, Any]:
        """Read-only steps run by the compose_deploy module on the target (Docker SDK)."""
        job.update(op=op)
        args = {"project_src": self.p["project_src"], "worker": job}
        result = self._module("dbops.migrations.compose_deploy", args, check=False, ignore_errors=True)
        if result.get("failed"):
            msg = result.get("msg") or "compose_deploy %s failed" % op
            if result.get("engine_down") or cu.engine_unreachable(msg):
                raise EngineLost(msg, failed_check="engine")
            raise DeployFailed(msg)
        return result

    def _v1(self, op: str, **job: Any) -> dict[str, Any]:
        """One docker-compose v1 step through the compose_deploy module (what docker_compose_v2
        does for the compose plugin), with the project's global options."""
        base = {"docker": self.docker, "project": self.project, "files": self.p["files"],
                "env_files": self.env_files, "profiles": self.p["profiles"], "pull": self.p["pull"],
                "build": self.p["build"], "deps": self.deps, "targets": self.targets,
                "specs": {n: s.__dict__ for n, s in self.specs.items()}}
        base.update(job)
        return self._worker(op, **base)

    def _all_profiles(self) -> list[str]:
        return sorted({p for spec in self.specs.values() for p in spec.profiles})

    def _prepare(self) -> None:
        """Env file, engine, compose and config, before anything changes."""
        res = self._worker("prepare", env={k: ("" if v is None else to_text(v)) for k, v in self.p["env"].items()},
                           project_name=self.p["project_name"], files=self.p["files"],
                           compose_command=self.p["compose_command"])
        self.tmpdir = res.get("tmpdir")
        self.env_files = res.get("env_files") or []
        self.compose_version = res["compose_version"]
        self.compose_command = res.get("compose_command")
        self.v1 = res.get("compose_cli") == cu1.STANDALONE
        self.deps = res.get("deps") or {}
        self.docker = res["docker"]
        self.project = res["project"]
        self.specs = {name: cu.spec_from_dict(raw) for name, raw in res["specs"].items()}
        if self.v1:
            problem = cu1.unsupported_options(self.p["pull"])
            if problem:
                raise DeployFailed(problem)
        self.targets = cu.select_services(self.specs, self.p["services"], None, self.p["profiles"])
        if self.p["run"]:
            cu.select_services(self.specs, [self.p["run"]])
        if self.p["backup_tag"] and not cu.valid_tag(self.p["backup_tag"]):
            raise DeployFailed("backup_tag %r is not a valid image tag" % self.p["backup_tag"])

    def _cleanup(self) -> None:
        if getattr(self, "tmpdir", None):
            try:
                self._worker("cleanup", tmpdir=self.tmpdir)
            except DeployFailed:
                pass

    def _facts(self, refs: list[str] | None = None) -> tuple[list[cu.Container], dict[str, str | None]]:
        res = self._worker("facts", project=self.project, refs=refs or [])
        return [cu.container_from_dict(c) for c in res["containers"]], res.get("image_ids") or {}

    def _containers(self) -> list[cu.Container]:
        return self._facts()[0]

    def _image_ids(self, refs: list[str]) -> dict[str, str | None]:
        return self._facts(refs)[1]

    def _wait_healthy(self, targets: list[str], *, exclude_ids: tuple[str, ...] = (),
                      watch_ids: tuple[str, ...] = (), settle: float = 0.0,
                      log_service: str | None = None, use_url: bool = True) -> tuple[cu.HealthVerdict, list[str]]:
        """Containers running and healthy, ``settle`` seconds stable, then the URL (one call)."""
        h = self.health
        res = self._worker(
            "wait", project=self.project, specs={n: s.__dict__ for n, s in self.specs.items()},
            targets=list(targets), timeout=h["timeout"], interval=h["interval"], settle=settle,
            url=h.get("url") if use_url else None, status_code=h["status_code"], successes=h["successes"],
            containers=h["containers"], exclude_ids=list(exclude_ids), watch_ids=list(watch_ids),
            log_lines=self.p["log_lines"], log_service=log_service)
        v = res["verdict"]
        self.timeline.append(("health %s" % v["state"], round(time.monotonic() - self.t0, 2)))
        return (cu.HealthVerdict(v["state"], v.get("check"), v.get("service"), v.get("container"),
                                 v.get("reason") or ""), v.get("logs") or [])

    # ------------------------------------------------------------------ steps

    def _dry_run(self, services: list[str] | None = None) -> dict[str, Any]:
        if self.v1:
            return self._v1("v1_plan", services=list(services or self.targets), all_services=list(self.specs))
        args = self._compose_args()
        args.update({"state": "present", "pull": self.p["pull"], "build": self.p["build"]})
        if services:
            args["services"] = services
        return self._module("community.docker.docker_compose_v2", args, check=True)

    def _plan(self) -> list[cu.ServiceChange]:
        refs = [self.specs[s].image for s in self.targets if self.specs[s].image]
        containers, image_ids = self._facts(refs)
        dry = self._dry_run(self.p["services"])
        actions = cu.services_from_dry_run(dry.get("actions", []), self.project, containers, self.specs)
        return cu.plan_changes(self.specs, self.targets, containers, actions, image_ids,
                               zero_downtime=self.p["zero_downtime"])

    def _check_ports(self, plan: list[cu.ServiceChange]) -> None:
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
            raise DeployFailed(cu.port_conflict_message(res["busy"]), failed_check="ports")

    def _backup(self, plan: list[cu.ServiceChange]) -> list[dict[str, str]]:
        done = []
        for item in cu.backup_targets(plan, self.p["backup_tag"]):
            self._module("community.docker.docker_image_tag", {
                "name": item["image_id"], "repository": [item["backup"]],
                "existing_images": "overwrite"}, check=False)
            done.append(item)
        return done

    def _up(self, services: list[str] | None, **extra: Any) -> dict[str, Any]:
        if self.v1:
            return self._v1("v1_up", services=list(services or []))
        args = self._compose_args()
        args.update({"state": "present", "pull": self.p["pull"], "build": self.p["build"],
                     "remove_orphans": False})
        if services:
            args["services"] = services
        args.update(extra)
        return self._module("community.docker.docker_compose_v2", args, check=False)

    def _remove_container(self, container: cu.Container, graceful: bool = True) -> None:
        """Graceful: SIGTERM and up to stop_timeout seconds to finish in-flight requests. A failed
        new container never took traffic, so it is removed at once."""
        if graceful:
            self._module("community.docker.docker_container", {
                "name": container.id, "state": "stopped", "stop_timeout": self.p["stop_timeout"]},
                check=False, ignore_errors=True)
        self._module("community.docker.docker_container", {"name": container.id, "state": "absent",
                                                           "force_kill": True}, check=False)

    def _surge(self, change: cu.ServiceChange) -> None:
        """Start the new release beside the old one, hidden from the service name until it is
        healthy and has stayed so for ``settle`` seconds; then let it take traffic, check the
        health URL, and retire the old container gracefully."""
        service = change.service
        old = [c for c in self._containers() if c.service == service and not c.oneoff]
        for leftover in [c for c in old if c.hidden]:
            # the new container of a release that never finished (the engine or the run died):
            # it never took traffic, and compose would count it towards the scale below
            self._remove_container(leftover, graceful=False)
            self._mark("removed unfinished %s" % leftover.name)
        old = [c for c in old if not c.hidden]
        old_ids = tuple(c.id for c in old)
        self._mark("surge %s" % service)
        try:
            # compose counts stopped containers towards the scale too
            created = self._worker("surge_create", project=self.project, service=service,
                                   scale=len(old) + 1, pull=self.p["pull"],
                                   build=self.p["build"], docker=self.docker, files=self.p["files"],
                                   env_files=self.env_files, profiles=self.p["profiles"],
                                   cli=cu1.STANDALONE if self.v1 else cu1.PLUGIN, deps=self.deps,
                                   specs={n: s.__dict__ for n, s in self.specs.items()})
        except EngineLost:
            raise
        except DeployFailed as exc:
            # nothing new runs (the worker removes what it created); the old release serves on
            raise DeployFailed(exc.msg, failed_check="compose", failed_service=service, logs=[], old_kept=True)
        new_ids = tuple(created.get("new_ids") or [])
        new = [cu.Container(id=i, name=i[:12], service=service, number=0, image="", image_id="",
                            state="running", health="none") for i in new_ids]
        verdict, logs = self._wait_healthy([service], exclude_ids=old_ids, watch_ids=new_ids,
                                           settle=self.health["settle"], log_service=service, use_url=False)
        exposed = False
        if verdict.state == "ok":
            self._worker("expose", service=service, aliases=created.get("aliases") or {})
            exposed = True
            self._mark("exposed new %s" % service)
            if self.health.get("url"):
                verdict, logs = self._wait_healthy([service], exclude_ids=old_ids, watch_ids=new_ids,
                                                   log_service=service)
        if verdict.state != "ok":
            for container in new:
                self._remove_container(container, graceful=exposed)
            self._mark("removed new %s" % service)
            raise DeployFailed("new release of %s failed its health gate: %s" % (service, verdict.reason),
                               failed_check=verdict.check, failed_service=service, logs=logs,
                               old_kept=True)
        for container in old:
            self._remove_container(container)
        self._mark("retired old %s" % service)

    def _mark(self, step: str) -> None:
        self.timeline.append((step, round(time.monotonic() - self.t0, 2)))

    def _deploy(self, plan: list[cu.ServiceChange]) -> None:
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
                self._up(self.p["services"])
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

    def _restore_backups(self, backups: list[dict[str, str]], same_ref_only: bool) -> list[str]:
        restored = []
        for item in backups:
            if same_ref_only and not item["same_ref"]:
                continue
            self._module("community.docker.docker_image_tag", {
                "name": item["backup"], "repository": [item["restore_to"]],
                "existing_images": "overwrite"}, check=False)
            restored.append(item["restore_to"])
        return restored

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
            # The old containers never stopped. A release under the same tag (latest rebuilt)
            # gets its old image back under that tag, so compose still sees it as current.
            out["restored_images"] = self._restore_backups(backups, same_ref_only=True)
            out["msg"] += "; the new container was removed and the previous release kept serving"
            self.timeline.append(("rolled back", round(time.monotonic() - self.t0, 2)))
            return out
        # The guide's rollback: tag the backup as the release tag again and redeploy it. A new
        # tag (1.0 -> 1.1) gets its own image back afterwards, so that REPO:1.1 still names the
        # release that failed; the running containers keep the previous image.
        failed_ids = self._image_ids([b["restore_to"] for b in backups if not b["same_ref"]])
        out["restored_images"] = self._restore_backups(backups, same_ref_only=False)
        try:
            self._deploy(self._plan())
            out["msg"] += "; rolled back to the previous release (%s), which is healthy" % ", ".join(
                out["restored_images"]) if out["restored_images"] else "; redeployed the previous configuration"
        except DeployFailed as again:
            out["rollback_error"] = again.msg
            out["msg"] += "; ROLLBACK ALSO FAILED: %s" % again.msg
        for ref, image_id in failed_ids.items():
            if image_id:
                self._module("community.docker.docker_image_tag", {
                    "name": image_id, "repository": [ref], "existing_images": "overwrite"},
                    check=False, ignore_errors=True)
        self.timeline.append(("rolled back", round(time.monotonic() - self.t0, 2)))
        return out

    # ------------------------------------------------------------------ states

    def _present(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.p["rollback"]:
            return self._manual_rollback(result)
        plan = self._plan()
        changing = [c for c in plan if c.changes]
        result["changed"] = bool(changing)
        result["plan"] = cu.dump_plan(plan)
        result["services"] = self.targets
        if self._task.diff:
            result["diff"] = cu.render_diff(plan)
        if self._task.check_mode:
            return result
        if not changing:
            verdict, logs = self._wait_healthy(self.targets)
            if verdict.state != "ok":
                result.update(failed=True, msg="the running release is not healthy: %s" % verdict.reason,
                              failed_check=verdict.check, failed_service=verdict.service, logs=logs)
            return result
        self._check_ports(plan)
        fresh = not any(c.before_image_id for c in plan)
        backups = self._backup(plan) if self.p["backup_tag"] else []
        result["backups"] = [b["backup"] for b in backups]
        started = time.monotonic()
        try:
            self._deploy(plan)
        except EngineLost as lost:
            result.update(self._engine_lost(lost, backups, during_rollback=False))
        except DeployFailed as failure:
            if not self.p["rollback_on_failure"]:
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
        if not result.get("engine_lost"):
            result["images"] = self._running_images()
        return result

    def _engine_lost(self, lost: EngineLost, backups: list[dict[str, str]], during_rollback: bool) -> dict[str, Any]:
        self._mark("engine lost")
        last = self.timeline[-2][0] if len(self.timeline) > 1 else None
        return {"failed": True, "rolled_back": False, "engine_lost": True, "failed_check": "engine",
                "failed_service": None, "logs": [],
                "msg": cu.engine_lost_message(lost.msg, last, [b["backup"] for b in backups], during_rollback)}

    def _manual_rollback(self, result: dict[str, Any]) -> dict[str, Any]:
        """The guide's rollback: tag REPO:backup_tag as the release tag again and redeploy."""
        tag = self.p["backup_tag"]
        pairs = []
        for service in self.targets:
            image = self.specs[service].image
            if not image:
                continue
            ref = cu.parse_image_ref(image)
            pairs.append((ref.with_tag(tag), ref.reference))
        ids = self._image_ids([p[0] for p in pairs] + [p[1] for p in pairs])
        # services whose image never changed have no backup: they stay as they are
        pairs = [(b, r) for b, r in pairs if ids.get(b)]
        if not pairs:
            raise DeployFailed("no backup image (%s) for any of %s; nothing to roll back to (a deploy with "
                               "backup_tag=%s creates it)" % (tag, ", ".join(self.targets), tag))
        retag = [(b, r) for b, r in pairs if ids.get(b) != ids.get(r)]
        result["changed"] = bool(retag)
        result["restored_images"] = sorted({restored for _backup, restored in retag})
        if self._task.check_mode:
            return result
        for backup, ref in dict.fromkeys(retag):
            self._module("community.docker.docker_image_tag", {
                "name": backup, "repository": [ref], "existing_images": "overwrite"}, check=False)
        plan = self._plan()
        result["plan"] = cu.dump_plan(plan)
        result["changed"] = result["changed"] or any(c.changes for c in plan)
        self._deploy(plan)
        result["images"] = self._running_images()
        return result

    def _running_images(self) -> dict[str, str]:
        return {c.service: c.image for c in self._containers() if c.running and not c.oneoff}

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
        res = self._down(self.p["remove_volumes"])
        result["changed"] = res.get("changed", False)
        result["actions"] = res.get("actions", [])
        return result

    def _restarted(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.v1:
            res = self._v1("v1_restart", services=self.p["services"], check=self._task.check_mode)
        else:
            args = dict(self._compose_args(), state="restarted")
            if self.p["services"]:
                args["services"] = self.p["services"]
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
        wanted = set(self.p["services"] or self.specs)
        running = sorted(c.name for c in self._containers()
                         if c.service in wanted and c.running and not c.oneoff)
        result.update(changed=bool(running), stopped=running)
        if not running or self._task.check_mode:
            return result
        if self.v1:
            self._v1("v1_stop", services=self.p["services"])
        else:
            args = dict(self._compose_args(), state="stopped")
            if self.p["services"]:
                args["services"] = self.p["services"]
            self._module("community.docker.docker_compose_v2", args)
        left = sorted(c.name for c in self._containers() if c.name in running and c.running)
        if left:
            result.update(failed=True, msg="still running after the stop: %s; stop them with `docker stop`"
                                           % ", ".join(left))
        return result

    def _run_oneoff(self, result: dict[str, Any]) -> dict[str, Any]:
        service = self.p["run"]
        result["changed"] = True
        if self._task.check_mode:
            result["msg"] = "would run the one-off service %s" % service
            return result
        args = self._compose_args()
        profiles = set(args.get("profiles", [])) | set(self.specs[service].profiles)
        if profiles:
            args["profiles"] = sorted(profiles)
        if self.v1:
            ran = self._v1("v1_run", service=service, command=self.p["run_command"] or [],
                           profiles=sorted(profiles))
            res = {"rc": ran.get("exit_code"), "stdout": ran.get("stdout", ""), "stderr": ran.get("stderr", "")}
        else:
            # interactive stays at its default: `--no-interactive` needs compose 2.27
            args.update({"service": service, "cleanup": True, "detach": False, "tty": False,
                         "remove_orphans": False})
            if self.p["run_command"]:
                args["argv"] = self.p["run_command"]
            res = self._module("community.docker.docker_compose_v2_run", args, ignore_errors=True)
        rc = res.get("rc")
        output = "%s\n%s" % (res.get("stdout", ""), res.get("stderr", ""))
        result.update(run={"service": service, "rc": rc,
                           "stdout": res.get("stdout", ""), "stderr": res.get("stderr", ""),
                           "logs": cu.tail_lines(output, self.p["log_lines"])})
        result["rc"] = rc
        if rc != 0:
            result["failed"] = True
            result["msg"] = ("one-off service %s exited with %s; see run.logs" % (service, rc)
                             if rc is not None else cu.explain_compose_failure(output + res.get("msg", "")))
        return result

    # ------------------------------------------------------------------ entry point

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        result = super().run(tmp, task_vars)
        del tmp
        self._task_vars = task_vars or {}
        validation, self.p = self.validate_argument_spec(argument_spec=cu.ARGUMENT_SPEC)
        self.p = dict(self.p)
        self.health = dict(self.p["health"] or {})
        for key, default in cu.ARGUMENT_SPEC["health"]["options"].items():
            self.health.setdefault(key, default.get("default"))
            if self.health[key] is None and "default" in default:
                self.health[key] = default["default"]
        self.project = self.p["project_name"]
        self.v1 = False
        self.deps = {}
        self.targets = []
        self.compose_command = None
        self.env_files = []
        self.tmpdir = None
        self.timeline = []
        self.t0 = time.monotonic()
        result.update(changed=False, rolled_back=False, project=None)
        try:
            self._prepare()
            result["project"] = self.project
            result["compose_version"] = self.compose_version
            result["compose_command"] = self.compose_command
            if self.p["run"]:
                return self._run_oneoff(result)
            if self.p["state"] == "absent":
                return self._absent(result)
            if self.p["state"] == "restarted":
                return self._restarted(result)
            if self.p["state"] == "stopped":
                return self._stopped(result)
            return self._present(result)
        except DeployFailed as exc:
            result.update(failed=True, msg=exc.msg)
            for key in ("failed_check", "failed_service", "logs"):
                if key in exc.extra:
                    result[key] = exc.extra[key]
            return result
        except cu.ComposeError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        except AnsibleError:
            raise
        finally:
            self._cleanup()
