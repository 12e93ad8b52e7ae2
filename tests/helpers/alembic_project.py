"""Throw-away Alembic projects for tests that read revisions without running them."""
from __future__ import annotations

import textwrap
from pathlib import Path

# Imports most revision files start with.
REVISION_HEADER = "from alembic import op\nimport sqlalchemy as sa\n"


def write_alembic_project(root: Path, revisions: dict[str, str], header: str = "") -> Path:
    """Write alembic.ini and ``revisions`` (file name -> body, dedented, after ``header``)
    under ``root``; env.py raises, so anything that runs it fails loudly. Returns alembic.ini."""
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "migrations" / "env.py").write_text("raise RuntimeError('env.py must not run')\n")
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    for name, body in revisions.items():
        (versions / name).write_text(header + textwrap.dedent(body))
    return root / "alembic.ini"
