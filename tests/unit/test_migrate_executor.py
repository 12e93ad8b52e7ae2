"""Where alembic runs, from the options alembic_migrate and migration_rehearsal share."""
from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.dbops.migrations.plugins.module_utils.migrate.alembic_cli import AlembicPlanError
from ansible_collections.dbops.migrations.plugins.module_utils.migrate.executor import executor_from_params


class HostWithout:
    """What the function asks of AnsibleModule: get_bin_path, here finding nothing."""
    def get_bin_path(self, name, required=False, opt_dirs=None):
        return None


def params(**overrides):
    base = dict(executor="local", config=None, alembic_bin=None, project_src=None, compose_files=None,
                compose_command="auto", compose_service="migrate", compose_profiles=[], compose_project_name=None)
    base.update(overrides)
    return base


def executable(path):
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_local_needs_config():
    with pytest.raises(AlembicPlanError, match="config is required with executor=local"):
        executor_from_params(HostWithout(), params())


def test_a_missing_config_is_refused_only_where_it_must_exist(tmp_path):
    alembic = executable(tmp_path / "alembic")
    missing = str(tmp_path / "alembic.ini")
    assert executor_from_params(HostWithout(), params(config=missing, alembic_bin=alembic)) == (None, alembic)
    with pytest.raises(AlembicPlanError, match="config .*alembic.ini not found"):
        executor_from_params(HostWithout(), params(config=missing, alembic_bin=alembic), config_must_exist=True)


def test_alembic_not_found_says_what_to_set(tmp_path):
    with pytest.raises(AlembicPlanError, match="alembic executable not found.*set alembic_bin"):
        executor_from_params(HostWithout(), params(config=str(tmp_path / "alembic.ini")))


def test_alembic_bin_must_be_an_executable_file(tmp_path):
    plain = tmp_path / "alembic"
    plain.write_text("")
    for path in (str(plain), str(tmp_path)):
        with pytest.raises(AlembicPlanError, match="is not an executable file"):
            executor_from_params(HostWithout(), params(config="alembic.ini", alembic_bin=path))
    assert os.path.exists(plain)


def test_compose_needs_a_project():
    with pytest.raises(AlembicPlanError, match="executor=compose needs project_src"):
        executor_from_params(HostWithout(), params(executor="compose"))
