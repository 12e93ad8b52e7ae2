"""What the rehearsal tests and bench/rehearse share: a runner for the module utils' executors, a verified
backup of a test database, and a revision that holds ACCESS EXCLUSIVE for a minute (to interrupt)."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict, List, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.backup.archive import DumpOptions
from ansible_collections.dbops.migrations.plugins.module_utils.backup.operations import Backup, Executor
from ansible_collections.dbops.migrations.plugins.module_utils.pg import parse_db_url

SLOW_REVISIONS = [
    ("0001", "orders", '    op.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, quantity int)")', "    pass"),
    ("0002", "slow", '    op.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")\n'
                     '    op.execute("SELECT pg_sleep(60)")', "    pass"),
]


def subprocess_runner(argv: List[str], env: Dict[str, str], cwd: Optional[str] = None) -> Tuple[int, str, str]:
    """Runs argv with env added to this process's environment, as the modules' runners do."""
    full = dict(os.environ)
    full.update(env)
    proc = subprocess.run(argv, env=full, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


def take_backup(url: str, dest: str, bin_dir: Optional[str] = None) -> str:
    """A verified custom-format pg_backup archive of the database at url; its manifest's path."""
    executor = Executor(runner=lambda argv, env: subprocess_runner(argv, env), which=shutil.which, bin_dir=bin_dir)
    result = Backup(info=parse_db_url(url), executor=executor).create(dest, DumpOptions(fmt="custom"), "list", None)
    assert result["verified"], result
    return result["manifest_path"]
