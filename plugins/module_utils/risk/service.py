# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One migration_risk request from inputs to the pinned result (used by the module and the benchmark)."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.risk.engine import (
    Engine, MigrationUnit, RiskConfig, RiskInputError, load_config)

Runner = Callable[[List[str], Dict[str, str]], Tuple[int, str, str]]
RenderRunner = Callable[[List[str], Dict[str, str], str, Optional[str]], Tuple[int, str, str]]


def subprocess_runner(argv: List[str], env: Dict[str, str]) -> Tuple[int, str, str]:
    """Default runner outside Ansible: argv list, extra environment, no shell."""
    full_env = dict(os.environ)
    full_env.update(env)
    proc = subprocess.run(argv, env=full_env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def subprocess_render_runner(argv: List[str], env: Dict[str, str], stdin: str,
                             cwd: Optional[str]) -> Tuple[int, str, str]:
    """Default render runner outside Ansible: the script on stdin, no shell."""
    full_env = dict(os.environ)
    full_env.update(env)
    proc = subprocess.run(argv, env=full_env, input=stdin, capture_output=True, text=True, cwd=cwd, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@dataclasses.dataclass
class RiskRequest:
    sql: Optional[str] = None
    sql_file: Optional[str] = None
    alembic_config: Optional[str] = None
    from_revision: Optional[str] = None
    to_revision: Optional[str] = "heads"
    server_version: Optional[int] = 15
    config_file: Optional[str] = None
    trace: bool = False
    trace_bin_dir: Optional[str] = None
    connection_params: Optional[Dict[str, Any]] = None
    runner: Runner = subprocess_runner
    # Where the revisions are rendered (see _risk_render_exec.RenderSpec); None: here.
    render: Optional[Any] = None
    render_runner: RenderRunner = subprocess_render_runner
    ini_section: str = "alembic"
    script_location: Optional[str] = None
    version_table: str = "alembic_version"
    version_table_schema: Optional[str] = None
    # Processes that parse the migrations ahead of the analysis (1: none; 0: one per CPU from 200 on).
    jobs: int = 1

    @property
    def executor(self) -> str:
        return self.render.executor if self.render is not None else "controller"

    @property
    def alembic(self) -> bool:
        return bool(self.alembic_config) or self.executor == "compose"


def _read_sql_file(path: str) -> str:
    if not os.path.isfile(path):
        raise RiskInputError("sql_file %s does not exist: give the path of a .sql file" % path)
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError:
        raise RiskInputError("sql_file %s is not UTF-8 text" % path)
    except OSError as exc:
        raise RiskInputError("sql_file %s cannot be read: %s" % (path, exc.strerror))


def run_request(request: RiskRequest) -> Dict[str, Any]:
    config = load_config(request.config_file) if request.config_file else RiskConfig()
    facts = None
    info = None
    if request.connection_params:
        # Imported here: the connection helpers load psycopg2, which SQL without a database does not need.
        from ansible_collections.dbops.migrations.plugins.module_utils.pg import (
            conninfo_from_params, connect, mask_secrets)
        info = conninfo_from_params(request.connection_params)
        from ansible_collections.dbops.migrations.plugins.module_utils.risk.live_facts import read_facts
        try:
            conn = connect(info, application_name="dbops.migration_risk")
        except Exception as exc:
            raise RiskInputError(mask_secrets(
                "cannot connect to %s: %s -- check db_url/login_* and that the server accepts connections"
                % (info.masked_url(), str(exc).strip()), info.password))
        from ansible_collections.dbops.migrations.plugins.module_utils.risk.live_facts import VersionTableError
        try:
            facts = read_facts(conn, request.version_table or "alembic_version", request.version_table_schema or None,
                               read_version=request.alembic)
        except VersionTableError as exc:
            raise RiskInputError(str(exc))
        finally:
            conn.close()
    units: List[MigrationUnit]
    uri_for_revision: Dict[str, str] = {}
    payload: Optional[Dict[str, Any]] = None
    if request.alembic:
        from ansible_collections.dbops.migrations.plugins.module_utils.risk.alembic_units import units_from_payload
        current = facts.alembic_revisions if (facts is not None and request.from_revision is None) else None
        payload = render_payload(request, current, info)
        units = list(units_from_payload(payload))
        for unit in units:
            uri_for_revision[unit.revision or ""] = unit.source
    elif request.sql_file is not None:
        units = [MigrationUnit(sql=_read_sql_file(request.sql_file), source=request.sql_file)]
        uri_for_revision[""] = request.sql_file
    else:
        units = [MigrationUnit(sql=request.sql or "", source="sql")]
    engine = Engine(request.server_version, facts, config, version_table=request.version_table,
                    version_table_schema=request.version_table_schema, jobs=request.jobs)
    analysis = engine.analyse(units, alembic=request.alembic)
    result = analysis.as_result()
    if payload is not None:
        _add_render_facts(result, units, payload, request.executor, facts)
    if request.trace:
        if info is None:
            raise RiskInputError("trace=true needs a database: set db_url or the login_* options")
        from ansible_collections.dbops.migrations.plugins.module_utils.risk.trace import trace_units
        result["trace"] = trace_units(info, units, analysis, request.runner, request.trace_bin_dir)
    from ansible_collections.dbops.migrations.plugins.module_utils.risk import reports as risk_reports
    result["report"] = risk_reports.markdown(result)
    # Lines are lines of the SQL text; for revisions they would point into the rendered SQL, not the file.
    result["sarif"] = risk_reports.sarif(dict(result, findings=[
        dict(f.as_dict(), line=None if f.revision else f.line) for f in analysis.findings]), uri_for_revision)
    return result


def render_payload(request: RiskRequest, current: Optional[List[str]], info=None) -> Dict[str, Any]:
    """The rendered revisions, from this interpreter or from where the application's code lives."""
    if request.executor == "controller":
        from ansible_collections.dbops.migrations.plugins.module_utils.risk.alembic_units import render_here
        return render_here(request.alembic_config or "", request.from_revision, request.to_revision, current,
                           request.ini_section or "alembic", request.script_location, request.server_version)
    from ansible_collections.dbops.migrations.plugins.module_utils.risk.render_elsewhere import render_elsewhere
    # Mask what looks like a secret; masking every value (an image name, a tag) would garble the answer.
    secrets = [str(v) for k, v in (request.render.env or {}).items()
               if v and len(str(v)) >= 4 and re.search(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL", str(k), re.I)]
    if info is not None and info.password:
        secrets.append(info.password)
    return render_elsewhere(request.render, request.render_runner, request.alembic_config, request.from_revision,
                            request.to_revision, current, request.server_version, secrets)


def _add_render_facts(result: Dict[str, Any], units: List[MigrationUnit], payload: Dict[str, Any], executor: str,
                      facts) -> None:
    """Where the SQL came from, per revision and for the run (added keys; the pinned ones stay)."""
    by_revision = {unit.revision: unit for unit in units}
    stand_ins: set = set()
    for entry in result["revisions"]:
        unit = by_revision.get(entry["revision"])
        if unit is None:
            continue
        entry.setdefault("source", unit.source)
        entry["source_sha256"] = getattr(unit, "source_sha256", "")
        entry["stand_ins"] = list(getattr(unit, "stand_ins", []))
        entry["down_revisions"] = list(getattr(unit, "down_revisions", []))
        stand_ins.update(entry["stand_ins"])
    result["rendered_by"] = executor
    result["heads"] = list(payload.get("heads") or [])
    result["stand_ins"] = sorted(stand_ins)
    result["render"] = {key: payload.get(key) for key in ("script_location", "version_locations", "ini_section",
                                                          "python", "alembic", "sqlalchemy") if key in payload}
    if facts is not None and facts.version_table:
        result["version_table"] = {"table": facts.version_table, "found": facts.version_table_found,
                                   "revisions": list(facts.alembic_revisions or [])}
