"""Keep the revisions a release ships: the chain from HEAD down to the first revision.

    python3 tools/keep_revisions.py migrations/versions HEAD

The image of an older release is built from today's source; the revisions written after it
are removed so that the image carries exactly what that release carried. Standard library only.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def revision_ids(path: Path) -> tuple[str, str | None]:
    """(revision, down_revision) assigned at the top of a revision script."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("revision", "down_revision"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    if not isinstance(found.get("revision"), str):
        raise SystemExit(f"{path}: no revision id")
    down = found.get("down_revision")
    if down is not None and not isinstance(down, str):
        raise SystemExit(f"{path}: merge revisions are not supported here")
    return found["revision"], down


def keep(versions: Path, head: str) -> list[Path]:
    scripts = {}
    for path in sorted(versions.glob("*.py")):
        rev, down = revision_ids(path)
        scripts[rev] = (path, down)
    if head not in scripts:
        raise SystemExit(f"unknown head revision {head}; known: {', '.join(sorted(scripts))}")
    chain, rev = [], head
    while rev is not None:
        path, rev = scripts[rev]
        chain.append(path)
    removed = [path for path, _ in scripts.values() if path not in chain]
    for path in removed:
        path.unlink()
    return removed


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    for gone in keep(Path(sys.argv[1]), sys.argv[2]):
        print(f"not in this release: {gone.name}")
