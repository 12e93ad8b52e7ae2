# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render where the code lives: run :mod:`risk.render` in another interpreter or in the release image.

The source of ``risk/render.py`` goes to ``python -`` on stdin, with the alembic.ini and the
revision range as arguments; the interpreter is the application's own (``executor=python``)
or a one-off container of the compose migration service (``executor=compose``, the same
compose files, project, profiles and CLI as alembic_migrate, with ``--no-deps``: rendering
needs no database).  It prints one JSON document; the analysis stays on this side.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.compose import plan as compose
from ansible_collections.dbops.migrations.plugins.module_utils.compose import v1 as compose_v1
from ansible_collections.dbops.migrations.plugins.module_utils.compose.command import project_argv
from ansible_collections.dbops.migrations.plugins.module_utils.risk import render
from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import RiskInputError

# (argv, environment additions, stdin, cwd) -> (rc, stdout, stderr)
RenderRunner = Callable[[List[str], Dict[str, str], str, Optional[str]], Tuple[int, str, str]]

EXECUTORS = ("controller", "python", "compose")


@dataclasses.dataclass
class RenderSpec:
    executor: str = "controller"
    python: Optional[str] = None            # python: the interpreter; compose: the one inside the image
    ini_section: str = "alembic"
    script_location: Optional[str] = None
    # executor=compose
    project_src: Optional[str] = None
    files: Sequence[str] = ()
    project_name: Optional[str] = None
    profiles: Sequence[str] = ("migration",)
    service: str = "migration"
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    docker_bin: str = "docker"
    standalone: bool = False                # docker_bin is docker-compose v1
    config_in_image: str = "alembic.ini"


def script_source() -> str:
    """The render script: the source of _risk_render, also from a zipped module payload."""
    return inspect.getsource(render)


def script_args(config: str, spec: RenderSpec, from_revision: Optional[str], to_revision: Optional[str],
                current: Optional[List[str]], server_version: Optional[int]) -> List[str]:
    args = ["--config", config, "--section", spec.ini_section or "alembic",
            "--to-revision", to_revision or "heads", "--server-version", str(server_version or 15)]
    if spec.script_location:
        args += ["--script-location", spec.script_location]
    if from_revision is not None:
        args += ["--from-revision", from_revision]
    if current:
        args += ["--current", ",".join(current)]
    return args


def python_command(spec: RenderSpec, config: str, args: List[str]) -> Tuple[List[str], Optional[str]]:
    import os
    if not spec.python:
        raise RiskInputError("executor=python needs python: the interpreter of the application's virtualenv "
                             "(e.g. /srv/app/.venv/bin/python)")
    if not (os.path.isfile(spec.python) and os.access(spec.python, os.X_OK)):
        raise RiskInputError("python %s is not an executable file: give the interpreter of the application's "
                             "virtualenv (e.g. /srv/app/.venv/bin/python)" % spec.python)
    return [spec.python, "-"] + args, os.path.dirname(os.path.abspath(config))


def compose_command(spec: RenderSpec, args: List[str]) -> Tuple[List[str], Optional[str]]:
    """``docker compose ... run --rm -T --no-deps SERVICE python - ARGS`` through the project's own builders."""
    if not spec.project_src:
        raise RiskInputError("executor=compose needs project_src: the folder of the compose project")
    import os
    spec = dataclasses.replace(spec, project_src=os.path.abspath(spec.project_src))
    tail = ["run", "--rm", "-T", "--no-deps", "-e", "PYTHONDONTWRITEBYTECODE=1", "-e", "PYTHONIOENCODING=utf-8"]
    command = [spec.python or "python", "-"] + args
    if spec.standalone:
        try:
            project = compose_v1.project_name(spec.project_name, spec.project_src, spec.env)
            argv = project_argv(spec.docker_bin, spec.project_src, project, spec.files, None, spec.profiles,
                                *(tail + ["--", spec.service] + command), standalone=True)
        except compose.ComposeError as exc:
            raise RiskInputError(str(exc))
    else:
        argv = project_argv(spec.docker_bin, spec.project_src, spec.project_name, spec.files, None, spec.profiles,
                            *(tail + [spec.service] + command))
    return argv, spec.project_src


def parse_payload(rc: int, out: str, err: str, where: str) -> Dict[str, Any]:
    """The JSON the script printed after its marker, or an error naming the real cause."""
    marker = out.rfind(render.JSON_MARKER)
    if marker < 0:
        tail = "\n".join(line for line in (err or out or "").strip().splitlines()[-12:])
        raise RiskInputError("rendering the revisions with %s failed (exit code %d) before it could answer: %s"
                             % (where, rc, tail or "no output"))
    try:
        payload = json.loads(out[marker + len(render.JSON_MARKER):].strip())
    except ValueError as exc:
        raise RiskInputError("rendering with %s printed unreadable JSON (%s)" % (where, exc))
    if payload.get("failure"):
        raise RiskInputError("%s (rendered with %s)" % (payload["failure"], where))
    return payload


def render_elsewhere(spec: RenderSpec, runner: RenderRunner, alembic_config: Optional[str],
                     from_revision: Optional[str], to_revision: Optional[str], current: Optional[List[str]],
                     server_version: Optional[int], secrets: Sequence[str] = ()) -> Dict[str, Any]:
    """The render payload from the application's interpreter or image."""
    if spec.executor == "python":
        if not alembic_config:
            raise RiskInputError("executor=python needs alembic_config: the project's alembic.ini on this host")
        import os
        config = os.path.abspath(alembic_config)  # the interpreter runs in the ini's folder
        args = script_args(config, spec, from_revision, to_revision, current, server_version)
        argv, cwd = python_command(spec, config, args)
        env: Dict[str, str] = {}
        where = "python %s" % spec.python
    elif spec.executor == "compose":
        config = spec.config_in_image or "alembic.ini"
        args = script_args(config, spec, from_revision, to_revision, current, server_version)
        argv, cwd = compose_command(spec, args)
        env = dict(spec.env)
        where = "the compose service %s" % spec.service
    else:
        raise RiskInputError("executor must be one of %s" % ", ".join(EXECUTORS))
    rc, out, err = runner(argv, env, script_source(), cwd)
    for secret in secrets:
        if secret:
            out, err = out.replace(secret, "********"), err.replace(secret, "********")
    return parse_payload(rc, out, err, where)
