# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render Alembic revisions to offline PostgreSQL SQL, wherever the project's code lives.

This file is self-contained on purpose (standard library, alembic and SQLAlchemy only): the
module imports it to render on the controller, and ships its source to another interpreter
(the application's virtualenv, or a one-off container of the release image) as
``python - ARGS`` with the source on stdin.  There it prints one JSON document after
:data:`JSON_MARKER`.

The project's ``env.py`` never runs (it usually imports the whole application).  Revision
files are loaded one by one:

- modules that cannot be imported become *stand-ins* (an import hook active only while
  revision files load and render): a stand-in used as a column type renders as a named type,
  and every stand-in is listed, so the reader knows what was guessed;
- ``op.get_bind()`` is a mock connection that answers like PostgreSQL (dialect, server
  version, ``engine.url``) and writes what is executed into the rendered SQL; its results are
  empty (``rowcount`` 0, ``fetchall()`` [], ``scalar()`` None);
- ORM sessions bound to it render their statements too and never flush objects.

A revision is not rendered only when its file does not compile or ``upgrade()`` itself
fails; the error then says exactly why (exception, message, line of the revision file).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import importlib.abc
import importlib.machinery
import io
import json
import os
import re
import sys
import traceback
import types

try:
    import sqlalchemy as sa
    from sqlalchemy import types as sa_types
    from alembic.config import Config
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic import util as alembic_util
    HAS_RENDER_LIBS = True
    RENDER_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the caller
    HAS_RENDER_LIBS = False
    RENDER_IMPORT_ERROR = exc

JSON_MARKER = "@@dbops-render-json@@"
OFFLINE_URL = "postgresql://migration_risk@offline/offline"
# Top-level packages never stood in for: a failure there is a real error, not a missing app.
NEVER_STAND_IN = frozenset(("sqlalchemy", "alembic", "__future__", "typing_extensions"))


class RenderError(Exception):
    """The project cannot be read: the message names the cause and what to do."""


# --------------------------------------------------------------------------- alembic.ini


_SEPARATORS = {"os": os.pathsep, ":": ":", ";": ";", "space": " ", "newline": "\n"}


def _split_paths(value, separator):
    if not value:
        return []
    if separator is None:
        # Alembic's historical rule: spaces and commas separate entries.
        return [item for item in re.split(r", *|(?: +)", value.strip()) if item]
    char = _SEPARATORS.get(separator, separator)
    return [item.strip() for item in value.split(char) if item.strip()]


def _resolve(path, base):
    path = os.path.expanduser(path)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))


class Project(object):
    """What an alembic.ini section says, with every path resolved from the ini's folder."""

    def __init__(self, config, ini_path, section, script_location, version_locations, prepend_sys_path,
                 recursive):
        self.config = config
        self.ini_path = ini_path
        self.section = section
        self.script_location = script_location
        self.version_locations = version_locations
        self.prepend_sys_path = prepend_sys_path
        self.recursive = recursive

    @property
    def base(self):
        return os.path.dirname(self.ini_path)


def read_project(ini_path, ini_section="alembic", script_location=None):
    """The project an alembic.ini describes; relative paths resolve from the ini's folder, as
    ``alembic`` run from that folder sees them.  No script_location (Flask-Migrate's
    migrations/alembic.ini): the ini's own folder holds env.py and versions/."""
    ini_path = os.path.abspath(ini_path)
    if not os.path.isfile(ini_path):
        raise RenderError("alembic config %s does not exist: give the path of the project's alembic.ini" % ini_path)
    base = os.path.dirname(ini_path)
    try:
        config = Config(ini_path, ini_section=ini_section)
        parser = config.file_config
        sections = parser.sections()
    except Exception as exc:
        raise RenderError("alembic config %s cannot be read (%s: %s): fix the file"
                          % (ini_path, type(exc).__name__, exc))
    if not parser.has_section(ini_section):
        raise RenderError("alembic config %s has no [%s] section (it has: %s): set ini_section to the section "
                          "alembic uses (alembic --name)" % (ini_path, ini_section, ", ".join(sections) or "none"))

    def option(name):
        try:
            value = config.get_section_option(ini_section, name)
        except Exception as exc:
            raise RenderError("alembic config %s: option %s in [%s] cannot be read (%s): fix the file"
                              % (ini_path, name, ini_section, exc))
        return value.strip() if isinstance(value, str) and value.strip() else None

    location = script_location or option("script_location")
    if location and ":" in location and not os.path.isabs(location) and not re.match(r"^[A-Za-z]:[\\/]", location):
        package_form = location  # package:path form, resolved by alembic once sys.path is set
    else:
        package_form = None
    separator = option("path_separator")
    prepend = [_resolve(p, base) for p in _split_paths(option("prepend_sys_path"), separator)]
    if package_form is not None:
        with _sys_path(prepend):
            try:
                location = alembic_util.coerce_resource_to_filename(package_form)
            except Exception as exc:
                raise RenderError("script_location %s in %s cannot be resolved (%s: %s)"
                                  % (package_form, ini_path, type(exc).__name__, exc))
    location = _resolve(location, base) if location else base
    source = "script_location override" if script_location else (
        "script_location in [%s]" % ini_section if option("script_location") else
        "the ini's folder (no script_location in [%s])" % ini_section)
    if not os.path.isdir(location):
        raise RenderError("the migrations folder %s (%s of %s) does not exist: fix script_location, or set the "
                          "script_location option" % (location, source, ini_path))
    version_separator = separator or option("version_path_separator")
    versions = [_resolve(p, base) for p in _split_paths(option("version_locations"), version_separator)]
    if not versions:
        versions = [os.path.join(location, "versions")]
    missing = [path for path in versions if not os.path.isdir(path)]
    if missing and len(missing) == len(versions):
        raise RenderError("no revision folder: %s does not exist (script_location %s, from %s); fix "
                          "script_location or version_locations" % (", ".join(missing), location, source))
    recursive = (option("recursive_version_locations") or "").lower() in ("true", "1", "yes", "on")
    return Project(config, ini_path, ini_section, location, [v for v in versions if os.path.isdir(v)], prepend,
                   recursive)


@contextlib.contextmanager
def _sys_path(prepend):
    """prepend_sys_path for the duration of a render only."""
    saved = list(sys.path)
    sys.path[:0] = [p for p in prepend if p not in sys.path]
    try:
        yield
    finally:
        sys.path[:] = saved


# --------------------------------------------------------------------------- stand-ins


class StandInRegistry(object):
    """Names stood in for while the current revision loads and renders."""

    def __init__(self):
        self.names = set()
        self.unrendered = []
        self.revision_path = None

    def note(self, name):
        self.names.add(name)

    def take(self):
        names, self.names = sorted(self.names), set()
        return names

    def skipped(self, what):
        """A statement built from stand-ins: it cannot be rendered; remember where it ran."""
        line = None
        for frame in traceback.extract_stack():
            if self.revision_path and os.path.abspath(frame.filename) == self.revision_path:
                line = frame.lineno
        self.unrendered.append({"line": line, "what": what[:200]})

    def take_unrendered(self):
        items, self.unrendered = self.unrendered, []
        return items


REGISTRY = StandInRegistry()


def _make_stand_in_type():
    # SQLAlchemy 1.3 types have a metaclass of their own: derive from it, whatever it is.
    class _StandInMeta(type(sa_types.UserDefinedType)):
        """Attribute access, calls and iteration on a stand-in class give more stand-ins."""

        def __getattr__(self, name):
            if name.startswith("_"):
                raise AttributeError(name)
            full = "%s.%s" % (self._standin_name, name)
            if "(" not in full and "[" not in full:
                REGISTRY.note(full)
            return stand_in(full)

        def __getitem__(self, key):
            return stand_in("%s[]" % self._standin_name)

        def __iter__(self):
            return iter(())

        def __str__(self):
            return self._standin_name

        def __repr__(self):
            return "<stand-in %s>" % self._standin_name

    class StandIn(sa_types.UserDefinedType, metaclass=_StandInMeta):  # pylint: disable=invalid-metaclass
        """Something the revision imports but this interpreter cannot: a class, a function, a
        column type or a constant of the application.  As a column type it renders as its
        name; called, subclassed or iterated it behaves as an empty, permissive object."""

        _standin_name = "standin"
        cache_ok = True

        def __init__(self, *args, **kwargs):
            self._standin_args = args

        def get_col_spec(self, **kw):
            return self._standin_name.rsplit(".", 1)[-1].replace("[]", "") or "standin"

        def __getattr__(self, name):
            if name.startswith("_"):
                raise AttributeError(name)
            return stand_in("%s().%s" % (self._standin_name, name))

        def __call__(self, *args, **kwargs):
            # SQLAlchemy calls a callable column type to instantiate it: stay the same named type.
            return type(self)()

        def __getitem__(self, key):
            return stand_in("%s[]" % self._standin_name)

        def __iter__(self):
            return iter(())

        def __len__(self):
            return 0

        def __str__(self):
            return self._standin_name

    return StandIn


_STAND_IN_BASE = None


def stand_in(name):
    """A stand-in class for the dotted ``name``."""
    global _STAND_IN_BASE
    if _STAND_IN_BASE is None:
        _STAND_IN_BASE = _make_stand_in_type()
    short = re.sub(r"\W", "_", name.rsplit(".", 1)[-1]) or "StandIn"
    return type(short, (_STAND_IN_BASE,), {"_standin_name": name, "__module__": name.rsplit(".", 1)[0]})


def is_stand_in(obj):
    base = _STAND_IN_BASE
    if base is None:
        return False
    return isinstance(obj, base) or (isinstance(obj, type) and issubclass(obj, base))


def _mentions_stand_in(args):
    return any(is_stand_in(arg) for arg in args)


class StandInModule(types.ModuleType):
    """A module that could not be imported: every attribute is a stand-in."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        full = "%s.%s" % (self.__name__, name)
        REGISTRY.note(full)
        value = stand_in(full)
        setattr(self, name, value)
        return value


class StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on sys.meta_path: a module no other finder knows becomes a stand-in.  With
    ``forced`` top-level names it goes first and stands in for those even when installed (the
    application is there but cannot be imported here)."""

    def __init__(self, forced=()):
        self.forced = frozenset(forced)

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".", 1)[0]
        if top in NEVER_STAND_IN or top in getattr(sys, "stdlib_module_names", ()):
            return None
        if self.forced:
            if top not in self.forced:
                return None
        elif not _imported_by_revision():
            # A library's optional import (try: import x / except ImportError) must fail as usual.
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = StandInModule(spec.name)
        module.__path__ = []
        module.__all__ = []
        return module

    def exec_module(self, module):
        REGISTRY.note(module.__name__)


def _imported_by_revision():
    """Whether the import statement being run is in the revision file (or in a stand-in's chain)."""
    getframe = getattr(sys, "_getframe", None)
    if getframe is None or not REGISTRY.revision_path:
        return True
    frame = getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if not (name.startswith("<frozen") or "importlib" in name or name == __file__):
            return os.path.abspath(name) == REGISTRY.revision_path
        frame = frame.f_back
    return False


@contextlib.contextmanager
def stand_ins(forced=()):
    """Stand-ins for missing modules (and for ``forced`` top-level packages) while active."""
    finder = StandInFinder(forced)
    saved = {}
    if forced:
        for name in list(sys.modules):
            if name.split(".", 1)[0] in finder.forced:
                saved[name] = sys.modules.pop(name)
        sys.meta_path.insert(0, finder)
    else:
        sys.meta_path.append(finder)
    try:
        yield finder
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        for name in list(sys.modules):
            if isinstance(sys.modules[name], StandInModule):
                del sys.modules[name]
        sys.modules.update(saved)


def _imported_tops(tree):
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".", 1)[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            tops.add(node.module.split(".", 1)[0])
    stdlib = getattr(sys, "stdlib_module_names", ())
    return {top for top in tops if top not in NEVER_STAND_IN and top not in stdlib and top not in sys.builtin_module_names}


# --------------------------------------------------------------------------- loading revision files


LOAD_ERROR_ATTR = "__migration_risk_load_error__"
STAND_INS_ATTR = "__migration_risk_stand_ins__"


def ids_from_source(text):
    """revision / down_revision / branch_labels / depends_on read without running the file."""
    found = {"revision": None, "down_revision": None, "branch_labels": None, "depends_on": None}
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        for name, value in re.findall(r"^(revision|down_revision)\s*(?::[^=]+)?=\s*(.+?)\s*(?:#.*)?$", text,
                                      re.MULTILINE):
            try:
                found[name] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
        return found
    for node in tree.body:
        targets, value = [], None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and target.id in found:
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    pass
    return found


def _placeholder(path, text, reason):
    ids = ids_from_source(text)
    if not ids["revision"]:
        raise RenderError("revision file %s cannot be loaded (%s) and its revision id cannot be read: fix the file"
                          % (path, reason))
    module = types.ModuleType("migration_risk_unloaded_%s" % ids["revision"])
    for key, value in ids.items():
        setattr(module, key, value)
    module.__file__ = path
    setattr(module, LOAD_ERROR_ATTR, reason)
    return module


def _where(exc, path):
    """' (line N)' of the deepest frame in the revision file, when there is one."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if os.path.abspath(frame.f_code.co_filename) == os.path.abspath(path):
            line = lineno
    return " (line %d)" % line if line else ""


def _exec_revision(path, text, code, forced=()):
    module = types.ModuleType("migration_risk_rev_%s" % hashlib.sha1(path.encode("utf-8")).hexdigest()[:12])
    module.__file__ = path
    sys.modules[module.__name__] = module
    try:
        with stand_ins(forced):
            exec(code, module.__dict__)
    finally:
        sys.modules.pop(module.__name__, None)
    return module


def load_revision_file(path):
    """The revision module, or a placeholder that carries why it could not be loaded."""
    with open(path, "rb") as handle:
        raw = handle.read()
    text = raw.decode("utf-8", "replace")
    try:
        code = compile(raw, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return _placeholder(path, text, "the file does not compile: %s at line %s" % (exc.msg, exc.lineno))
    except ValueError as exc:
        return _placeholder(path, text, "the file does not compile: %s" % exc)
    REGISTRY.take()
    REGISTRY.revision_path = os.path.abspath(path)
    try:
        module = _exec_revision(path, text, code)
    except Exception as first:
        # The application is importable but fails here (settings, a database at import time, ...):
        # stand in for everything the file imports beyond the standard library.
        forced = _imported_tops(ast.parse(text))
        if not forced:
            return _placeholder(path, text, "loading the file failed: %s: %s%s"
                                % (type(first).__name__, str(first)[:300], _where(first, path)))
        REGISTRY.take()
        try:
            module = _exec_revision(path, text, code, forced)
        except Exception as exc:
            return _placeholder(path, text, "loading the file failed: %s: %s%s"
                                % (type(exc).__name__, str(exc)[:300], _where(exc, path)))
    setattr(module, STAND_INS_ATTR, REGISTRY.take())
    return module


@contextlib.contextmanager
def tolerant_loading():
    """Alembic loads revision files through util.load_python_file: load them our way meanwhile."""
    original = alembic_util.load_python_file
    targets = [alembic_util]
    try:
        from alembic.script import base as script_base
        if getattr(script_base, "util", None) is not None and script_base.util is not alembic_util:
            targets.append(script_base.util)
    except ImportError:  # pragma: no cover
        pass

    def load(dir_, filename):
        if not filename.endswith(".py") or filename == "env.py":
            return original(dir_, filename)
        return load_revision_file(os.path.join(dir_, filename))

    for target in targets:
        target.load_python_file = load
    try:
        yield
    finally:
        for target in targets:
            target.load_python_file = original


# --------------------------------------------------------------------------- the offline bind


def _no_result_found():
    try:
        from sqlalchemy.exc import NoResultFound
    except ImportError:  # SQLAlchemy 1.3
        from sqlalchemy.orm.exc import NoResultFound
    return NoResultFound


class OfflineResult(object):
    """What a statement returns offline: no rows, nothing changed.  ``SELECT count(...)`` and
    other single-aggregate selects answer one row of zeros, as the database would."""

    rowcount = 0
    lastrowid = None
    inserted_primary_key = None
    returns_rows = True
    is_insert = False
    closed = False

    def __init__(self, aggregate=False):
        self._rows = [(0,)] if aggregate else []
        self._attributes = {}

    def fetchall(self):
        return list(self._rows)

    def fetchmany(self, size=None):
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def first(self):
        return self.fetchone()

    def scalar(self):
        row = self.fetchone()
        return row[0] if row else None

    def one(self):
        row = self.fetchone()
        if row is None:
            raise _no_result_found()("No row was found when one was required (offline rendering returns no rows)")
        return row

    def scalar_one(self):
        return self.one()[0]

    def one_or_none(self):
        return self.fetchone()

    def scalar_one_or_none(self):
        return self.scalar()

    def all(self):
        return self.fetchall()

    def close(self):
        self.closed = True

    def keys(self):
        return []

    def _self(self, *args, **kwargs):
        return self

    scalars = mappings = unique = columns = tuples = yield_per = freeze = _self

    def partitions(self, size=None):
        return iter(())

    def __iter__(self):
        rows, self._rows = self._rows, []
        return iter(rows)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Transaction(object):
    is_active = True

    def commit(self):
        self.is_active = False

    rollback = close = commit

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.is_active = False


class OfflineCursor(object):
    """The raw DB-API cursor behind the bind (``bind.connection.cursor()``)."""

    rowcount = 0
    description = None

    def __init__(self, bind):
        self._bind = bind

    def execute(self, sql, params=None):
        self._bind.exec_driver_sql(sql, params)

    def executemany(self, sql, seq):
        for params in list(seq)[:1]:
            self.execute(sql, params)

    def fetchall(self):
        return []

    def fetchmany(self, size=None):
        return []

    def fetchone(self):
        return None

    def close(self):
        pass

    def __iter__(self):
        return iter(())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class OfflineDBAPIConnection(object):
    autocommit = False

    def __init__(self, bind):
        self._bind = bind
        self.dbapi_connection = self
        self.driver_connection = self

    def cursor(self, *args, **kwargs):
        return OfflineCursor(self._bind)

    def commit(self):
        pass

    rollback = close = commit


class OfflineEngine(object):
    """``op.get_bind().engine``: the URL and dialect of a PostgreSQL database."""

    def __init__(self, bind):
        self._bind = bind
        self.url = sa.engine.make_url(OFFLINE_URL)
        self.dialect = bind.dialect
        self.name = "postgresql"
        self.driver = getattr(bind.dialect, "driver", "psycopg2")

    def connect(self, **kwargs):
        return self._bind

    def begin(self):
        return _BindContext(self._bind)

    def execute(self, *args, **kwargs):
        return self._bind.execute(*args, **kwargs)

    def raw_connection(self):
        return OfflineDBAPIConnection(self._bind)

    def dispose(self):
        pass

    def execution_options(self, **kw):
        return self

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._bind, name)


class _BindContext(object):
    def __init__(self, bind):
        self._bind = bind

    def __enter__(self):
        return self._bind

    def __exit__(self, *exc):
        return False


class OfflineBind(object):
    """``op.get_bind()`` while rendering: answers like a PostgreSQL connection and writes every
    statement into the revision's SQL.  It never holds rows."""

    closed = False
    invalidated = False

    def __init__(self, context, server_version):
        self._context = context
        self._impl = context.impl
        self._dialect = context.dialect
        if getattr(self._dialect, "server_version_info", None) is None:
            self._dialect.server_version_info = (int(server_version), 0)
        if getattr(self._dialect, "default_schema_name", None) is None:
            self._dialect.default_schema_name = "public"
        self.engine = OfflineEngine(self)
        self.info = {}
        self.connection = OfflineDBAPIConnection(self)
        self._execution_options = {}

    # identity
    @property
    def dialect(self):
        return self._dialect

    @property
    def url(self):
        return self.engine.url

    @property
    def name(self):
        return "postgresql"

    def connect(self, **kwargs):
        return self

    def execution_options(self, **kw):
        return self

    def get_execution_options(self):
        return {}

    def schema_for_object(self, obj):
        return getattr(obj, "schema", None)

    def get_isolation_level(self):
        return "READ COMMITTED"

    default_isolation_level = "READ COMMITTED"

    # transactions
    def begin(self):
        return _Transaction()

    begin_nested = begin_twophase = begin

    def in_transaction(self):
        return True

    def in_nested_transaction(self):
        return False

    def get_transaction(self):
        return _Transaction()

    get_nested_transaction = get_transaction

    def commit(self):
        pass

    rollback = close = invalidate = detach = commit

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    # execution
    def execute(self, statement, *multiparams, **params):
        if is_stand_in(statement):
            REGISTRY.skipped("execute(%s)" % statement)
            return OfflineResult()
        if isinstance(statement, str):
            statement = sa.text(statement)
        if "execution_options" in params:
            params.pop("execution_options")
        values = _first_params(multiparams, params)
        if hasattr(statement, "compile"):
            self._emit(_sql_of(statement, values, self._dialect))
        return OfflineResult(_aggregate_select(statement))

    def exec_driver_sql(self, sql, parameters=None, execution_options=None):
        text = str(sql)
        values = _first_params((parameters,) if parameters is not None else (), {})
        if values:
            try:
                text = text % _quoted_params(values, self._dialect)
            except (TypeError, ValueError, KeyError):
                pass
        self._emit(text)
        return OfflineResult(_aggregate_text(text))

    def scalar(self, statement, *multiparams, **params):
        return self.execute(statement, *multiparams, **params).scalar()

    def scalars(self, statement, *multiparams, **params):
        return self.execute(statement, *multiparams, **params).scalars()

    def _emit(self, text):
        text = text.strip()
        if not text:
            return
        self._impl.static_output(text.rstrip(";") + self._impl.command_terminator)

    # DDL through Table.create(bind), MetaData.create_all(bind), Enum.create(bind)
    def _run_ddl_visitor(self, visitorcallable, element, **kwargs):
        kwargs["checkfirst"] = False
        visitorcallable(self._dialect, self, **kwargs).traverse_single(element)

    def _run_visitor(self, visitorcallable, element, **kwargs):  # SQLAlchemy 1.3
        kwargs["checkfirst"] = False
        visitorcallable(self._dialect, self, **kwargs).traverse_single(element)


def _first_params(multiparams, params):
    """The parameters of a call (executemany: the first set; it shows the statement's shape)."""
    values = dict(params)
    for item in multiparams:
        if isinstance(item, (list, tuple)) and item and isinstance(item[0], dict):
            values.update(item[0])
        elif isinstance(item, dict):
            values.update(item)
    return values


def _quoted_params(values, dialect):
    out = {}
    for key, value in values.items():
        try:
            out[key] = sa.literal(value).compile(dialect=dialect, compile_kwargs={"literal_binds": True}).string
        except Exception:
            out[key] = "NULL"
    return out


def _sql_of(statement, values, dialect):
    """The statement with its parameters written in, as PostgreSQL would receive it."""
    bound = statement
    if values:
        try:
            known = getattr(statement, "_bindparams", None)
            if known is not None:  # text(): bind what it declares
                bound = statement.bindparams(**{k: v for k, v in values.items() if k in known})
            else:
                bound = statement.params(values)
        except Exception:
            bound = statement
    for candidate in (bound, _nulls_for_missing(bound)):
        try:
            return str(candidate.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        except Exception:
            continue
    return str(bound.compile(dialect=dialect))


def _nulls_for_missing(statement):
    """Parameters without a value (an unknown id from an empty result) render as NULL."""
    try:
        from sqlalchemy.sql import visitors

        def replace(element):
            if isinstance(element, sa.sql.elements.BindParameter) and (
                    element.value is None or not _renderable(element)):
                return sa.null()
            return None
        return visitors.replacement_traverse(statement, {}, replace)
    except Exception:
        return statement


def _renderable(bind):
    try:
        sa.literal(bind.value).compile(dialect=sa.dialects.postgresql.dialect(),
                                       compile_kwargs={"literal_binds": True})
        return True
    except Exception:
        return False


def _aggregate_select(statement):
    columns = getattr(statement, "selected_columns", None)
    if columns is None:
        if isinstance(statement, sa.sql.elements.TextClause):
            return _aggregate_text(statement.text)
        return False
    cols = list(columns)
    return bool(cols) and all(isinstance(col, sa.sql.functions.FunctionElement) or
                              isinstance(getattr(col, "element", None), sa.sql.functions.FunctionElement)
                              for col in cols)


def _aggregate_text(text):
    return bool(re.match(r"\s*select\s+(count|sum|max|min)\s*\(", text or "", re.IGNORECASE))


# --------------------------------------------------------------------------- ORM sessions on the bind


@contextlib.contextmanager
def offline_sessions():
    """ORM sessions bound to the offline bind render their statements and never flush objects
    (unit-of-work INSERTs need primary keys a database would return)."""
    try:
        from sqlalchemy.orm import session as orm_session
    except ImportError:  # pragma: no cover
        yield
        return
    cls = orm_session.Session
    saved = {}

    def offline(session):
        try:
            bind = session.bind if getattr(session, "bind", None) is not None else session.get_bind()
        except Exception:
            return None
        return bind if isinstance(bind, (OfflineBind, OfflineEngine)) else None

    def patch(name, make):
        original = getattr(cls, name, None)
        if original is None:
            return
        saved[name] = original

        def method(self, *args, **kwargs):
            bind = offline(self)
            if bind is None:
                return original(self, *args, **kwargs)
            return make(self, bind, *args, **kwargs)
        setattr(cls, name, method)

    def execute(self, bind, statement, params=None, *args, **kwargs):
        conn = bind if isinstance(bind, OfflineBind) else bind._bind
        return conn.execute(statement, params or {})

    def nothing(self, bind, *args, **kwargs):
        return None

    def connection(self, bind, *args, **kwargs):
        return bind if isinstance(bind, OfflineBind) else bind._bind

    def query(self, bind, *entities, **kwargs):
        if _mentions_stand_in(entities):
            REGISTRY.skipped("session.query(%s)" % ", ".join(str(e) for e in entities))
            return stand_in("query(%s)" % ", ".join(str(e) for e in entities))()
        return saved["query"](self, *entities, **kwargs)

    patch("execute", execute)
    patch("query", query)
    patch("scalar", lambda self, bind, statement, params=None, *a, **k: execute(self, bind, statement, params).scalar())
    patch("scalars", lambda self, bind, statement, params=None, *a, **k: execute(self, bind, statement, params))
    patch("get", nothing)
    patch("flush", nothing)
    patch("commit", nothing)
    patch("connection", connection)
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(cls, name, original)


def _register_inspection():
    """``sa.inspect(op.get_bind())``: an inspector that sees an empty database."""
    try:
        from sqlalchemy import inspection
    except ImportError:  # pragma: no cover
        return
    registrars = getattr(inspection, "_registrars", None)
    if registrars is None or OfflineBind in registrars:
        return
    registrars[OfflineBind] = OfflineInspector
    registrars[OfflineEngine] = lambda engine: OfflineInspector(engine._bind)


class OfflineInspector(object):
    """Reflection offline: the database is not there, so nothing is found."""

    default_schema_name = "public"

    def __init__(self, bind):
        self.bind = bind
        self.dialect = bind.dialect

    def get_schema_names(self):
        return ["public"]

    def _empty(self, *args, **kwargs):
        return []

    get_table_names = get_view_names = get_columns = get_indexes = get_foreign_keys = _empty
    get_unique_constraints = get_check_constraints = get_enums = get_sequence_names = _empty
    get_materialized_view_names = get_temp_table_names = _empty

    def get_pk_constraint(self, *args, **kwargs):
        return {"constrained_columns": [], "name": None}

    def _false(self, *args, **kwargs):
        return False

    has_table = has_index = has_sequence = has_schema = _false

    def get_table_comment(self, *args, **kwargs):
        return {"text": None}

    def get_table_options(self, *args, **kwargs):
        return {}

    def clear_cache(self):
        pass

    @contextlib.contextmanager
    def _inspection_context(self):
        yield self

    def reflect_table(self, table, *args, **kwargs):
        raise OfflineReflectionError(
            "table %s is reflected from the database (autoload_with), and rendering has no database: declare "
            "its columns in the revision (sa.table('%s', sa.column(...))), or review it by hand"
            % (table.name, table.name))


class OfflineReflectionError(Exception):
    """A revision needs the live schema (reflection), which offline rendering cannot see."""


# --------------------------------------------------------------------------- rendering


def _guard_op_execute(impl):
    """op.execute() of something built from stand-ins renders nothing (and says so)."""
    original = impl._exec

    def _exec(construct, *args, **kwargs):
        if is_stand_in(construct):
            REGISTRY.skipped("op.execute(%s)" % construct)
            return None
        return original(construct, *args, **kwargs)
    impl._exec = _exec


class Rendered(object):
    def __init__(self, sql="", error=None):
        self.sql = sql
        self.error = error


def render(module, direction, server_version=15, config=None, script_dir=None):
    """Offline SQL of ``upgrade()`` or ``downgrade()``; BEGIN/COMMIT and autocommit blocks included."""
    func = getattr(module, direction, None)
    if func is None:
        return Rendered(error="the file has no %s() function" % direction)
    buffer = io.StringIO()
    opts = {"as_sql": True, "output_buffer": buffer, "literal_binds": True, "transactional_ddl": True}
    environment = None
    if config is not None and script_dir is not None:
        from alembic.runtime.environment import EnvironmentContext
        environment = EnvironmentContext(config, script_dir)
    path = getattr(module, "__file__", "") or ""
    try:
        with (environment if environment is not None else contextlib.suppress()):
            if environment is not None:
                environment.configure(dialect_name="postgresql", **opts)
                context = environment.get_context()
            else:
                context = MigrationContext.configure(dialect_name="postgresql", opts=opts)
            bind = OfflineBind(context, server_version)
            context.connection = context.impl.connection = bind
            _guard_op_execute(context.impl)
            _register_inspection()
            with stand_ins(), offline_sessions(), Operations.context(context):
                with context.begin_transaction():
                    func()
    except Exception as exc:
        return Rendered(buffer.getvalue(), "%s() cannot be rendered offline: %s: %s%s"
                        % (direction, type(exc).__name__, str(exc).strip()[:300], _where(exc, path)))
    return Rendered(buffer.getvalue())


def script_directory(project):
    kwargs = {"version_locations": project.version_locations}
    if project.recursive:
        kwargs["recursive_version_locations"] = True
    try:
        return ScriptDirectory(project.script_location, **kwargs)
    except TypeError:  # an alembic without recursive_version_locations
        kwargs.pop("recursive_version_locations", None)
        return ScriptDirectory(project.script_location, **kwargs)


def _revision_error(exc, project, lower, upper, from_database):
    text = "%s" % exc
    if "Multiple head" in text:
        return RenderError("the project has several heads and to_revision=%s names one: use to_revision=heads "
                           "(what `alembic upgrade heads` applies) or name a revision (%s)" % (upper, text))
    if from_database:
        return RenderError("the database is at revision %s, which the project at %s does not know (%s): is the "
                           "code older than the database? Render from the release that matches, or give "
                           "from_revision" % (lower, project.script_location, text))
    return RenderError("revisions %s..%s of the project at %s: %s -- check from_revision/to_revision against "
                       "`alembic history`" % (lower, upper, project.script_location, text))


def pending_scripts(scripts, lower, upper):
    """The revisions ``alembic upgrade UPPER`` applies from LOWER (ids, comma separated), oldest first."""
    lowers = tuple(part for part in (lower or "").split(",") if part and part != "base")
    revs = list(scripts.revision_map.iterate_revisions(upper, lowers or "base", implicit_base=True,
                                                       inclusive=False))
    if lowers and not revs:
        # iterate_revisions answers nothing when lower is at or above upper; alembic does the same.
        return []
    return list(reversed(revs))


def _graph_problems(scripts):
    """Broken links (a down_revision no file has), found before they surface as range errors."""
    try:
        scripts.revision_map.heads
    except Exception as exc:
        return "%s: %s" % (type(exc).__name__, exc)
    return None


def render_project(ini_path, ini_section="alembic", script_location=None, from_revision=None,
                   to_revision="heads", current_revisions=None, server_version=15, with_source=True):
    """Everything a caller needs to analyse the pending revisions: a JSON-ready dict."""
    if not HAS_RENDER_LIBS:
        raise RenderError("rendering needs alembic and SQLAlchemy: %s" % RENDER_IMPORT_ERROR)
    project = read_project(ini_path, ini_section, script_location)
    from_database = from_revision is None and bool(current_revisions)
    lower = from_revision if from_revision is not None else ",".join(current_revisions or []) or "base"
    upper = to_revision or "heads"
    saved_modules = set(sys.modules)
    # The application may print while its modules load: never into the caller's stdout (module JSON).
    with contextlib.redirect_stdout(sys.stderr), _sys_path(project.prepend_sys_path), tolerant_loading():
        scripts = script_directory(project)
        problem = _graph_problems(scripts)
        if problem:
            raise RenderError("the revision files under %s do not form a history: %s -- fix the down_revision "
                              "named there" % (", ".join(project.version_locations), problem))
        try:
            heads = list(scripts.get_heads())
            revs = pending_scripts(scripts, lower, upper)
        except Exception as exc:
            raise _revision_error(exc, project, lower, upper, from_database)
        out = []
        for script in revs:
            out.append(_revision_entry(script, project, scripts, server_version, with_source))
    # The project's own modules go again, so that the next project's same-named package is its own.
    roots = tuple(os.path.join(p, "") for p in project.prepend_sys_path + [project.base, project.script_location])
    for name in set(sys.modules) - saved_modules:
        module_file = getattr(sys.modules.get(name), "__file__", None) or ""
        if name.startswith("migration_risk_") or (module_file and os.path.abspath(module_file).startswith(roots)):
            sys.modules.pop(name, None)
    return {"revisions": out, "heads": heads, "script_location": project.script_location,
            "version_locations": project.version_locations, "ini_section": project.section}


def _revision_entry(script, project, scripts, server_version, with_source):
    module = script.module
    path = getattr(module, "__file__", None) or script.path
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError:
        raw = b""
    entry = {
        "revision": script.revision,
        "down_revision": _as_list(script.down_revision),
        "branch_labels": sorted(script.branch_labels or ()),
        "path": os.path.relpath(path, project.base),
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "source": raw.decode("utf-8", "replace") if with_source else None,
        "stand_ins": list(getattr(module, STAND_INS_ATTR, []) or []),
        "upgrade_sql": "", "downgrade_sql": "", "downgrade_error": None, "error": None, "unrendered": [],
    }
    load_error = getattr(module, LOAD_ERROR_ATTR, None)
    if load_error:
        entry["error"] = load_error
        return entry
    REGISTRY.take()
    REGISTRY.take_unrendered()
    REGISTRY.revision_path = os.path.abspath(path)
    up = render(module, "upgrade", server_version, project.config, scripts)
    entry["upgrade_sql"], entry["error"] = up.sql, up.error
    entry["unrendered"] = REGISTRY.take_unrendered()
    if up.error is None:
        down = render(module, "downgrade", server_version, project.config, scripts)
        entry["downgrade_sql"], entry["downgrade_error"] = down.sql, down.error
    REGISTRY.take_unrendered()
    entry["stand_ins"] = sorted(set(entry["stand_ins"]) | set(REGISTRY.take()))
    return entry


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


# --------------------------------------------------------------------------- command line (python -)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dbops-render")
    parser.add_argument("--config", default="alembic.ini")
    parser.add_argument("--section", default="alembic")
    parser.add_argument("--script-location")
    parser.add_argument("--from-revision")
    parser.add_argument("--to-revision", default="heads")
    parser.add_argument("--current", default="")
    parser.add_argument("--server-version", type=int, default=15)
    args = parser.parse_args(argv)
    real_stdout = sys.stdout
    payload = {"python": sys.version.split()[0]}
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the application may print while importing
            if not HAS_RENDER_LIBS:
                raise RenderError("this interpreter (%s) has no alembic/SQLAlchemy: %s"
                                  % (sys.executable, RENDER_IMPORT_ERROR))
            import alembic
            payload["alembic"] = getattr(alembic, "__version__", "?")
            payload["sqlalchemy"] = getattr(sa, "__version__", "?")
            payload.update(render_project(
                args.config, args.section, args.script_location, args.from_revision, args.to_revision,
                [c for c in args.current.split(",") if c], args.server_version))
    except RenderError as exc:
        payload["failure"] = str(exc)
    except Exception as exc:
        payload["failure"] = "rendering failed: %s: %s" % (type(exc).__name__, exc)
    real_stdout.write("\n%s\n%s\n" % (JSON_MARKER, json.dumps(payload)))
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    main()
