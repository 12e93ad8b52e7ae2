# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where alembic runs, from the options alembic_migrate and migration_rehearsal share: a service of the
compose project (the release image) or an alembic executable on this host."""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.compose.engine import choose_compose_cli
from ansible_collections.dbops.migrations.plugins.module_utils.compose.plan import ComposeError
from ansible_collections.dbops.migrations.plugins.module_utils.compose.v1 import STANDALONE
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.alembic_cli import AlembicPlanError
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.runner import ComposeSpec


def executor_from_params(module, params: Dict[str, Any], config_must_exist: bool = False) -> Tuple[Optional[ComposeSpec], str]:
    """The compose service to run alembic in (None for executor=local) and the alembic executable.

    Raises AlembicPlanError naming the option to set when the executor cannot work."""
    if params["executor"] == "compose":
        return compose_executor(module, params), "alembic"
    if not params["config"]:
        raise AlembicPlanError("config is required with executor=local: the path of the project's alembic.ini")
    if config_must_exist and not os.path.isfile(params["config"]):
        raise AlembicPlanError("config %s not found; set config to the project's alembic.ini" % params["config"])
    return None, local_alembic(module, params["alembic_bin"])


def compose_executor(module, params: Dict[str, Any]) -> ComposeSpec:
    if not params["project_src"] and not params["compose_files"]:
        raise AlembicPlanError("executor=compose needs project_src (the compose project directory) or compose_files")
    try:
        choice, compose_bin = choose_compose_cli(module, params["compose_command"])
    except ComposeError as exc:
        raise AlembicPlanError(str(exc))
    return ComposeSpec(project_src=params["project_src"], files=params["compose_files"],
                       service=params["compose_service"], profiles=params["compose_profiles"],
                       project_name=params["compose_project_name"], docker_bin=compose_bin,
                       standalone=choice.kind == STANDALONE, docker_cli=module.get_bin_path("docker"))


def local_alembic(module, alembic_bin: Optional[str]) -> str:
    """alembic_bin, or the alembic on PATH or beside this Python; an executable file either way."""
    found = alembic_bin or module.get_bin_path("alembic", opt_dirs=[os.path.dirname(sys.executable)])
    if not found:
        raise AlembicPlanError("alembic executable not found on PATH or beside %s; install alembic or set "
                               "alembic_bin" % sys.executable)
    if not (os.path.isfile(found) and os.access(found, os.X_OK)):
        raise AlembicPlanError("alembic_bin %s is not an executable file; set alembic_bin to the alembic of "
                               "the application's virtualenv (e.g. /srv/app/.venv/bin/alembic)" % found)
    return found
