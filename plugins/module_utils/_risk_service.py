# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One migration_risk request from inputs to the pinned result (used by the module and the benchmark)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils import _risk_report
from ansible_collections.dbops.migrations.plugins.module_utils._pg import (
    conninfo_from_params, connect, mask_secrets)
from ansible_collections.dbops.migrations.plugins.module_utils._risk_engine import (
    Engine, MigrationUnit, RiskConfig, RiskInputError, load_config)

Runner = Callable[[List[str], Dict[str, str]], Tuple[int, str, str]]


def subprocess_runner(argv: List[str], env: Dict[str, str]) -> Tuple[int, str, str]:
    """Default runner outside Ansible: argv list, extra environment, no shell."""
    full_env = dict(os.environ)
    full_env.update(env)
    proc = subprocess.run(argv, env=full_env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
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
        info = conninfo_from_params(request.connection_params)
        from ansible_collections.dbops.migrations.plugins.module_utils._risk_dbfacts import read_facts
        try:
            conn = connect(info, application_name="dbops.migration_risk")
        except Exception as exc:
            raise RiskInputError(mask_secrets(
                "cannot connect to %s: %s -- check db_url/login_* and that the server accepts connections"
                % (info.masked_url(), str(exc).strip()), info.password))
        try:
            facts = read_facts(conn)
        finally:
            conn.close()
    units: List[MigrationUnit]
    uri_for_revision: Dict[str, str] = {}
    if request.alembic_config:
        from ansible_collections.dbops.migrations.plugins.module_utils._risk_alembic import (
            HAS_ALEMBIC, pending_units)
        if not HAS_ALEMBIC:
            raise RiskInputError("alembic is not installed on the managed host: pip install alembic")
        current = facts.alembic_revisions if (facts is not None and request.from_revision is None) else None
        units = pending_units(request.alembic_config, request.from_revision, request.to_revision, current)
        for unit in units:
            uri_for_revision[unit.revision or ""] = unit.source
    elif request.sql_file is not None:
        units = [MigrationUnit(sql=_read_sql_file(request.sql_file), source=request.sql_file)]
        uri_for_revision[""] = request.sql_file
    else:
        units = [MigrationUnit(sql=request.sql or "", source="sql")]
    engine = Engine(request.server_version, facts, config)
    analysis = engine.analyse(units, alembic=bool(request.alembic_config))
    result = analysis.as_result()
    if request.trace:
        if info is None:
            raise RiskInputError("trace=true needs a database: set db_url or the login_* options")
        from ansible_collections.dbops.migrations.plugins.module_utils._risk_trace import trace_units
        result["trace"] = trace_units(info, units, analysis, request.runner, request.trace_bin_dir)
    result["report"] = _risk_report.markdown(result)
    # Lines are lines of the SQL text; for revisions they would point into the rendered SQL, not the file.
    result["sarif"] = _risk_report.sarif(dict(result, findings=[
        dict(f.as_dict(), line=None if f.revision else f.line) for f in analysis.findings]), uri_for_revision)
    return result
