# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Talking to the ``alembic`` command line: revision graph, plans, offline SQL, errors.

Everything here is pure: it parses what ``alembic history --verbose`` and
``alembic upgrade --sql`` print, resolves targets (``head``, a revision, ``+N``, ``-N``,
``base``) into a list of single-revision steps, and classifies alembic's failures.
The graph comes from the command line rather than from importing alembic, so the same
code serves an alembic on this host and one inside the application's image.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Optional, Sequence, Tuple

BASE = "base"


class AlembicPlanError(ValueError):
    """A target or a revision graph that cannot be migrated; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Revision:
    revision: str
    down_revisions: Tuple[str, ...] = ()
    branch_labels: Tuple[str, ...] = ()
    doc: str = ""
    path: str = ""


@dataclasses.dataclass(frozen=True)
class Step:
    """One alembic invocation: move the database from ``from_rev`` to ``to_rev``."""
    direction: str  # upgrade | downgrade
    revision: str  # the revision applied (upgrade) or reverted (downgrade)
    from_rev: Optional[str]
    to_rev: Optional[str]
    # The database's heads before and after the step (several while branches are unmerged).
    heads_before: Tuple[str, ...] = ()
    heads_after: Tuple[str, ...] = ()

    @property
    def alembic_target(self) -> str:
        if self.direction == "upgrade":
            return self.revision  # alembic keeps the other branches' heads as they are
        return self.to_rev or BASE

    def as_dict(self) -> Dict[str, Optional[str]]:
        return {"direction": self.direction, "revision": self.revision,
                "from_revision": self.from_rev, "to_revision": self.to_rev}


_REV_LINE = re.compile(r"^Rev: (?P<rev>\S+)(?P<flags>(?: \([a-z ]+\))*)\s*$")


def _split_list(text: str) -> Tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip() and item.strip() != "<base>")


def parse_history(text: str) -> Dict[str, Revision]:
    """Parse ``alembic history --verbose`` into revisions keyed by id."""
    revisions: Dict[str, Revision] = {}
    current: Optional[Dict[str, object]] = None
    doc_lines: List[str] = []

    def flush() -> None:
        if current is None:
            return
        doc = next((line.strip() for line in doc_lines if line.strip()), "")
        rev = Revision(revision=str(current["rev"]), down_revisions=tuple(current.get("down", ())),  # type: ignore[arg-type]
                       branch_labels=tuple(current.get("labels", ())), doc=doc,  # type: ignore[arg-type]
                       path=str(current.get("path", "")))
        revisions[rev.revision] = rev

    for line in text.splitlines():
        match = _REV_LINE.match(line)
        if match:
            flush()
            current = {"rev": match.group("rev")}
            doc_lines = []
            continue
        if current is None:
            continue
        if line.startswith("Parent: ") or line.startswith("Merges: "):
            current["down"] = _split_list(line.split(": ", 1)[1])
        elif line.startswith("Branch names: "):
            current["labels"] = _split_list(line.split(": ", 1)[1])
        elif line.startswith("Path: "):
            current["path"] = line.split(": ", 1)[1].strip()
        elif line.startswith("    ") or not line.strip():
            doc_lines.append(line)
    flush()
    return revisions


def as_heads(value: object) -> Tuple[str, ...]:
    """None (base), one revision or several heads -> a sorted tuple of revisions."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(sorted(value))  # type: ignore[arg-type]


def heads_label(value: object) -> Optional[str]:
    """How results name a database state: None for base, ``r1``, or ``r2a,r2b`` for several heads."""
    heads = as_heads(value)
    return ",".join(heads) if heads else None


class RevisionGraph:
    """The revision graph of an alembic project and the plans that walk it."""

    def __init__(self, revisions: Dict[str, Revision]):
        self.revisions = revisions
        self.children: Dict[str, List[str]] = {rev: [] for rev in revisions}
        for rev in revisions.values():
            for parent in rev.down_revisions:
                if parent not in revisions:
                    raise AlembicPlanError(
                        "revision %s names a parent %s that does not exist; fix its down_revision"
                        % (rev.revision, parent))
                self.children[parent].append(rev.revision)

    @classmethod
    def from_history(cls, text: str) -> "RevisionGraph":
        return cls(parse_history(text))

    @property
    def heads(self) -> List[str]:
        return sorted(rev for rev, kids in self.children.items() if not kids)

    def ancestors(self, rev: Optional[str]) -> set:
        """``rev`` and everything below it."""
        seen: set = set()
        stack = [rev] if rev else []
        while stack:
            item = stack.pop()
            if item in seen:
                continue
            seen.add(item)
            stack.extend(self.revisions[item].down_revisions)
        return seen

    def ancestors_of_heads(self, heads: Sequence[str]) -> set:
        seen: set = set()
        for rev in heads:
            seen |= self.ancestors(rev)
        return seen

    def resolve(self, ident: str) -> str:
        """A full revision id from an id, a unique prefix or a branch label."""
        ident = ident.strip()
        if ident in self.revisions:
            return ident
        labelled = [rev for rev, info in self.revisions.items() if ident in info.branch_labels]
        if len(labelled) == 1:
            return labelled[0]
        matches = sorted(rev for rev in self.revisions if rev.startswith(ident))
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise AlembicPlanError(
                "revision %r is ambiguous: it is a prefix of %s; give more characters"
                % (ident, ", ".join(matches)))
        known = ", ".join(sorted(self.revisions)[:20]) or "none"
        raise AlembicPlanError(
            "unknown revision %r; known revisions: %s (see `alembic history`)" % (ident, known))

    def single_head(self) -> Optional[str]:
        heads = self.heads
        if len(heads) > 1:
            raise AlembicPlanError(
                "the migrations have %d heads (%s); merge them with `alembic merge heads` "
                "or migrate to one of them by revision" % (len(heads), ", ".join(heads)))
        return heads[0] if heads else None

    def resolve_target(self, target: str, current: object) -> object:
        """What ``target`` names, seen from ``current`` (None, a revision or several heads):
        None for base, a revision, or a tuple of revisions for ``heads``."""
        target = str(target).strip()
        if target == "head":
            return self.single_head()
        if target == "heads":
            heads = tuple(self.heads)
            return heads[0] if len(heads) == 1 else heads
        if target == BASE:
            return None
        relative = re.fullmatch(r"([+-])(\d+)", target)
        if relative:
            count = int(relative.group(2))
            current_heads = as_heads(current)
            if len(current_heads) > 1:
                raise AlembicPlanError(
                    "target %s is ambiguous: the database is at several heads (%s); give a revision, "
                    "or heads" % (target, ", ".join(current_heads)))
            current = current_heads[0] if current_heads else None
            if relative.group(1) == "+":
                return self._walk_up(current, count)
            return self._walk_down(current, count)
        if target.endswith("@head"):
            return self.resolve(target[:-5])
        return self.resolve(target)

    def _walk_up(self, current: Optional[str], count: int) -> Optional[str]:
        rev = current
        for done in range(count):
            kids = self.children[rev] if rev else [r for r, i in self.revisions.items() if not i.down_revisions]
            if not kids:
                raise AlembicPlanError(
                    "target +%d goes past the head: only %d revision(s) above %s"
                    % (count, done, rev or "base"))
            if len(kids) > 1:
                raise AlembicPlanError(
                    "target +%d is ambiguous: %s branches into %s; give a revision instead"
                    % (count, rev or "base", ", ".join(sorted(kids))))
            rev = kids[0]
        return rev

    def _walk_down(self, current: Optional[str], count: int) -> Optional[str]:
        rev = current
        for done in range(count):
            if rev is None:
                raise AlembicPlanError(
                    "target -%d goes below base: the database is only %d revision(s) above base"
                    % (count, done))
            parents = self.revisions[rev].down_revisions
            if len(parents) > 1:
                raise AlembicPlanError(
                    "target -%d is ambiguous: %s merges %s; give a revision instead"
                    % (count, rev, ", ".join(parents)))
            rev = parents[0] if parents else None
        return rev

    def _topological(self, revs: set) -> List[str]:
        ordered: List[str] = []
        placed: set = set()

        def visit(rev: str) -> None:
            if rev in placed or rev not in revs:
                return
            for parent in self.revisions[rev].down_revisions:
                visit(parent)
            placed.add(rev)
            ordered.append(rev)

        for rev in sorted(revs):
            visit(rev)
        return ordered

    def plan(self, current: object, target: object) -> List[Step]:
        """Single-revision steps from ``current`` to ``target`` (None means base; either may be a
        tuple of heads). Upgrades walk every branch below the target, merges included, in the
        order alembic would apply them."""
        current_heads, target_heads = as_heads(current), as_heads(target)
        for rev in current_heads:
            if rev not in self.revisions:
                raise AlembicPlanError(
                    "the database is at revision %s, which this alembic project does not know; "
                    "deploy the code that contains it or fix alembic_version by hand" % rev)
        below_current = self.ancestors_of_heads(current_heads)
        below_target = self.ancestors_of_heads(target_heads)
        if below_current == below_target:
            return []
        if below_target < below_current:
            if len(current_heads) > 1:
                raise AlembicPlanError(
                    "the database is at several heads (%s); downgrading them one revision at a time is not "
                    "supported: give a target on one branch with alembic by hand, or upgrade to heads first"
                    % ", ".join(current_heads))
            return self._downgrade_plan(current_heads[0], heads_label(target_heads))
        if below_current < below_target:
            steps = []
            heads = set(current_heads)
            for rev in self._topological(below_target - below_current):
                before = tuple(sorted(heads))
                heads = (heads - set(self.revisions[rev].down_revisions)) | {rev}
                after = tuple(sorted(heads))
                steps.append(Step("upgrade", rev, heads_label(before), heads_label(after), before, after))
            return steps
        raise AlembicPlanError(
            "target %s is on another branch than the database's revision %s; "
            "downgrade to their common ancestor first" % (heads_label(target_heads) or BASE,
                                                          heads_label(current_heads) or BASE))

    def _downgrade_plan(self, current: Optional[str], target: Optional[str]) -> List[Step]:
        steps = []
        rev = current
        while rev != target:
            if rev is None:
                raise AlembicPlanError("cannot downgrade from base")  # pragma: no cover - guarded by plan()
            parents = self.revisions[rev].down_revisions
            if len(parents) > 1:
                raise AlembicPlanError(
                    "cannot downgrade through merge revision %s (it merges %s) one step at a time; "
                    "give one of its parents as target" % (rev, ", ".join(parents)))
            parent = parents[0] if parents else None
            steps.append(Step("downgrade", rev, rev, parent, as_heads(rev), as_heads(parent)))
            rev = parent
        return steps


# ---------------------------------------------------------------- offline SQL

_RUNNING = re.compile(r"^-- Running (upgrade|downgrade) (.*?) -> (\S*)\s*$")


def split_offline_sql(text: str) -> List[Dict[str, str]]:
    """Split ``alembic upgrade --sql`` output into one SQL text per revision."""
    chunks: List[Dict[str, str]] = []
    preamble: List[str] = []
    current: Optional[Dict[str, object]] = None
    for line in text.splitlines():
        match = _RUNNING.match(line)
        if match:
            if current is not None:
                chunks.append(_finish_chunk(current))
            direction, down, up = match.groups()
            current = {"direction": direction, "from": down.strip(), "to": up.strip(),
                       "lines": list(preamble)}
            preamble = []
            continue
        if current is None:
            preamble.append(line)
        else:
            current["lines"].append(line)  # type: ignore[union-attr]
    if current is not None:
        chunks.append(_finish_chunk(current))
    return chunks


def _finish_chunk(chunk: Dict[str, object]) -> Dict[str, str]:
    lines = [line for line in chunk["lines"] if line.strip() != "COMMIT;"]  # type: ignore[union-attr]
    sql = "\n".join(lines).strip()
    direction = str(chunk["direction"])
    revision = str(chunk["to"] if direction == "upgrade" else chunk["from"])
    return {"direction": direction, "revision": revision, "sql": sql}


def offline_range(step_from: Optional[str], step_to: Optional[str], direction: str) -> str:
    """The ``from:to`` argument of an offline run."""
    if direction == "upgrade":
        return "%s:%s" % (step_from, step_to) if step_from else str(step_to)
    return "%s:%s" % (step_from, step_to or BASE)


# ---------------------------------------------------------------- failures

LOCK_TIMEOUT = "lock_timeout"
STATEMENT_TIMEOUT = "statement_timeout"
CONNECTION_LOST = "connection_lost"
KILLED = "killed"
ERROR = "error"

RETRYABLE = (LOCK_TIMEOUT, CONNECTION_LOST)

_CONNECTION_MARKERS = (
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "terminating connection due to",
    "connection to server at",
    "could not connect to server",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "SSL connection has been closed unexpectedly",
    "AdminShutdown",
    "connection already closed",
)


def classify_failure(rc: int, stderr: str) -> str:
    """What kind of failure an alembic run ended with."""
    if rc < 0 or rc in (137, 143):
        return KILLED
    if "LockNotAvailable" in stderr or "canceling statement due to lock timeout" in stderr:
        return LOCK_TIMEOUT
    if "canceling statement due to statement timeout" in stderr:
        return STATEMENT_TIMEOUT
    if any(marker in stderr for marker in _CONNECTION_MARKERS):
        return CONNECTION_LOST
    return ERROR


def failing_statement(stderr: str) -> Optional[str]:
    """The statement SQLAlchemy quotes in ``[SQL: ...]``, if any."""
    start = stderr.rfind("[SQL: ")
    if start < 0:
        return None
    end = stderr.find("]\n", start)
    text = stderr[start + 6:end if end > 0 else None].strip().rstrip("]")
    return " ".join(text.split())[:500]


def error_tail(stderr: str, lines: int = 15) -> str:
    """The last meaningful lines of alembic's stderr (tracebacks are long)."""
    kept = [line for line in stderr.rstrip().splitlines()
            if line.strip() and not line.startswith("INFO  [alembic.runtime.migration]")]
    interesting = [line for line in kept if not line.startswith("  ")]
    tail = interesting[-lines:] if interesting else kept[-lines:]
    return "\n".join(tail)


# ---------------------------------------------------------------- durations

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60000.0, "h": 3600000.0, "d": 86400000.0}


def duration_ms(value: object, name: str) -> int:
    """PostgreSQL duration (``200ms``, ``2s``, ``1min``) or integer milliseconds -> ms."""
    if isinstance(value, bool):
        raise AlembicPlanError("%s must be a duration such as 200ms or 2s, or milliseconds" % name)
    if isinstance(value, (int, float)):
        number = float(value)
        unit = "ms"
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise AlembicPlanError(
                "%s=%r is not a PostgreSQL duration; use for example 200ms, 2s, 1min, or integer milliseconds"
                % (name, value))
        number = float(match.group(1))
        unit = match.group(2) or "ms"
    ms = number * _UNIT_MS[unit]
    if ms < 0:
        raise AlembicPlanError("%s must not be negative" % name)
    if 0 < ms < 1:
        ms = 1
    return int(round(ms))


def pgoptions(settings: Sequence[Tuple[str, str]], existing: str = "") -> str:
    """A PGOPTIONS value: ``-c name=value`` pairs appended to what the environment had."""
    parts = [existing.strip()] if existing and existing.strip() else []
    for key, value in settings:
        escaped = str(value).replace("\\", "\\\\").replace(" ", "\\ ")
        parts.append("-c %s=%s" % (key, escaped))
    return " ".join(parts)


# ---------------------------------------------------------------- causes and leads

_EXCEPTION_LINE = re.compile(r"^(?P<name>(?:[A-Za-z_]\w*\.)*[A-Z]\w*|FAILED): (?P<msg>\S.*)$")
_DRIVER_PREFIX = re.compile(r"^\((?:[A-Za-z_]\w*\.)*(?P<name>[A-Z]\w*)\) (?P<msg>.*)$")


def root_cause(stderr: str) -> Optional[str]:
    """The error alembic died of, in one or two lines: ``UniqueViolation: could not create unique
    index "ix" DETAIL: Key (sku)=(a) is duplicated.`` (SQLAlchemy's wrapper names stripped)."""
    lines = stderr.rstrip().splitlines()
    for index in range(len(lines) - 1, -1, -1):
        match = _EXCEPTION_LINE.match(lines[index])
        if not match:
            continue
        name = match.group("name").rsplit(".", 1)[-1]
        msg = match.group("msg").strip()
        driver = _DRIVER_PREFIX.match(msg)
        if driver:
            name, msg = driver.group("name"), driver.group("msg").strip()
        details = [line.strip() for line in lines[index + 1:index + 4]
                   if line.startswith(("DETAIL:", "HINT:"))]
        return " ".join(["%s: %s" % (name, msg)] + [" ".join(d.split()) for d in details])
    return None


def error_name(stderr: str) -> Optional[str]:
    """The exception class of :func:`root_cause` (``UniqueViolation``, ``DuplicateColumn``...)."""
    cause = root_cause(stderr)
    return cause.split(":", 1)[0] if cause else None


_IMAGE_PATTERNS = (
    re.compile(r"pull access denied for ([^\s,]+)"),
    re.compile(r"Unable to find image '([^']+)'"),
    re.compile(r"manifest for (\S+) not found"),
    re.compile(r"No such image: (\S+)"),
    re.compile(r'failed to resolve reference "([^"]+)"'),
    re.compile(r"repository (\S+) not found"),
)
_IMAGE_MARKERS = ("pull access denied", "Unable to find image", "manifest unknown", "No such image",
                  "failed to resolve reference", "repository does not exist", "not found: manifest",
                  " Pulling", "registry-1.docker.io", "Error response from daemon: Get ")
_NO_SERVICE = re.compile(r"no such service: ['\"]?([^\s'\"]+)", re.IGNORECASE)


def executor_problem(stderr: str, service: str) -> Optional[str]:
    """For the compose executor: a lead when compose, not alembic, failed (missing service, image)."""
    match = _NO_SERVICE.search(stderr)
    if match:
        return ("compose has no service %s (set dbops_compose_migration_service / the `service` option "
                "compose_service to the one-off service that runs alembic, and enable its profile with "
                "dbops_compose_migration_profiles / compose_profiles)" % match.group(1))
    if any(marker in stderr for marker in _IMAGE_MARKERS):
        image = next((m.group(1) for m in (p.search(stderr) for p in _IMAGE_PATTERNS) if m), None)
        return ("the image %s of compose service %s could not be found or pulled: the image tag variable "
                "(dbops_compose_tag_var, e.g. APP_VERSION) or the version released (app_version) is probably "
                "wrong; check `docker image ls` and the variables passed in env"
                % (image or "(unknown)", service))
    python = re.search(r'exec: "?(python[\w.]*)"?: executable file not found', stderr)
    if python:
        return ("the image of compose service %s has no %s on its PATH; set the `python` option to the "
                "interpreter that has alembic installed (e.g. /opt/venv/bin/python), or launcher=alembic when "
                "the ini names script_location" % (service, python.group(1)))
    if re.search(r'exec: "?alembic"?: executable file not found', stderr) or (
            "FAILED: alembic is not installed for" in stderr):
        return ("the image of compose service %s has no alembic executable on its PATH; use the application's "
                "image (the one whose code holds the migrations)" % service)
    return None


# ---------------------------------------------------------------- launcher

# Runs alembic's own command line, with one difference: an ini that names no script_location
# gets the ini's folder, as Flask-Migrate does (its migrations/alembic.ini names none). Without
# alembic importable (a Python other than the application's) it hands over to the alembic
# executable, unchanged.
LAUNCHER_SCRIPT = "\n".join([
    "import os, sys",
    "try:",
    "    from alembic.config import CommandLine, Config",
    "except ImportError:",
    "    try:",
    "        os.execvp('alembic', ['alembic'] + sys.argv[1:])",
    "    except OSError:",
    "        sys.exit('FAILED: alembic is not installed for %s and no alembic executable is on PATH'"
    " % sys.executable)",
    "cli = CommandLine(prog='alembic')",
    "options = cli.parser.parse_args(sys.argv[1:])",
    "if not hasattr(options, 'cmd'):",
    "    cli.parser.error('too few arguments')",
    "if hasattr(cli, '_inis_from_config'):",
    "    toml, ini = cli._inis_from_config(options)",
    "    cfg = Config(file_=ini, toml_file=toml, ini_section=options.name, cmd_opts=options)",
    "else:",
    "    ini = options.config",
    "    cfg = Config(file_=ini, ini_section=options.name, cmd_opts=options)",
    "get = getattr(cfg, 'get_alembic_option', cfg.get_main_option)",
    "if ini and os.path.isfile(ini) and not get('script_location'):",
    "    folder = os.path.dirname(os.path.abspath(ini))",
    "    cfg.set_main_option('script_location', folder.replace('%', '%%'))",
    "cli.run_cmd(cfg, options)",
])

LAUNCHERS = ("auto", "alembic", "python")


def launcher_argv(python: str, config: Optional[str], args: Sequence[str]) -> List[str]:
    """``python -c LAUNCHER [-c config] args``: alembic's arguments, unchanged, after the script."""
    argv = [python, "-c", LAUNCHER_SCRIPT]
    if config:
        argv += ["-c", config]
    return argv + list(args)


def ini_names_script_location(path: str, section: str = "alembic") -> bool:
    """Whether an alembic ini names script_location (False for a Flask-Migrate ini, or no file)."""
    import configparser
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return True  # let alembic report what it makes of the file
    return bool(parser.has_section(section) and parser.get(section, "script_location", fallback="").strip())


def choose_launcher(launcher: str, executor: str, config: Optional[str]) -> str:
    """``alembic`` or ``python`` for ``launcher=auto``: the python launcher inside images (their ini
    cannot be read from here), and on this host only for an ini without script_location."""
    if launcher != "auto":
        return launcher
    if executor == "compose":
        return "python"
    return "alembic" if config is None or ini_names_script_location(config) else "python"


_COMPOSE_PROGRESS = re.compile(
    r"^\s*(?:\[\+\]\s+(?:Running|Creating|Starting|Stopping|Removing)\s+\d+/\d+.*"
    r"|(?:[\u2714\u2718\u283f]\s*)?(?:Container|Network|Volume)\s+\S+\s+(?:Creating|Created|Starting|Started|Running|Waiting|Healthy|"
    r"Recreate|Recreated|Stopping|Stopped|Removing|Removed|Exited)\s*)$")


def strip_compose_progress(text: str) -> str:
    """Compose's progress lines (``Container db Running``) removed, so alembic's error shows."""
    return "\n".join(line for line in text.splitlines() if not _COMPOSE_PROGRESS.match(line))
