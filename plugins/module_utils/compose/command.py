# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one builder of compose command lines, for the ``docker compose`` plugin and the standalone
``docker-compose`` (v1): compose_deploy, alembic_migrate's compose executor and migration_risk's
rendering in the release image all start their compose commands here (pure, no I/O)."""
from __future__ import annotations

from typing import List, Optional, Sequence

from ansible_collections.dbops.migrations.plugins.module_utils.compose.plan import ComposeError


def project_argv(binary: str, project_src: Optional[str], project: Optional[str], files: Optional[Sequence[str]],
                 env_files: Optional[Sequence[str]], profiles: Optional[Sequence[str]], *tail: str,
                 standalone: bool = False) -> List[str]:
    """``docker compose`` (or ``docker-compose`` when ``standalone``) with a project's global options,
    then ``tail``. Relative compose files resolve against project_src. v1 reads one env file and knows no
    profile wildcard: asking for either raises ComposeError saying so. No shell is involved."""
    env_files = list(env_files or [])
    profiles = list(profiles or [])
    if standalone and len(env_files) > 1:
        raise ComposeError("docker-compose v1 reads one env file; got %d" % len(env_files))
    if standalone and "*" in profiles:
        raise ComposeError("docker-compose v1 has no profile wildcard `*`; name the profiles")
    argv = [binary] if standalone else [binary, "compose"]
    base = None
    if project_src:
        base = project_src.rstrip("/") or "/"
        argv += ["--project-directory", base]
    if project:
        argv += ["-p", project]
    for name in files or []:
        argv += ["-f", name if base is None or name.startswith("/") else base + "/" + name]
    for env_file in env_files:
        argv += ["--env-file", env_file]
    for profile in profiles:
        argv += ["--profile", profile]
    return argv + list(tail)
