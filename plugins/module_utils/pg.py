# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection options shared by every module of the collection.

Modules accept either ``db_url`` or the community.postgresql style ``login_*`` options.
This module turns them into one :class:`ConnInfo`, hands them to psycopg2 and to libpq
tools (through environment variables, never argv) and masks them for messages.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Optional
from urllib.parse import parse_qsl, quote, unquote, urlsplit

try:
    import psycopg2
    import psycopg2.extensions
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported through missing_required_lib
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = exc


def connection_argument_spec() -> Dict[str, Any]:
    """argument_spec entries for the connection options (see doc fragment dbops.migrations.postgres)."""
    return dict(
        db_url=dict(type="str", no_log=True),
        login_host=dict(type="str"),
        login_port=dict(type="int", default=5432),
        login_user=dict(type="str"),
        login_password=dict(type="str", no_log=True),
        login_db=dict(type="str"),
        connect_timeout=dict(type="int", default=10),
    )


CONNECTION_MUTUALLY_EXCLUSIVE = [["db_url", "login_host"], ["db_url", "login_user"],
                                 ["db_url", "login_password"], ["db_url", "login_db"]]


class ConnectionOptionsError(ValueError):
    """The connection options cannot describe a database."""


@dataclasses.dataclass(frozen=True)
class ConnInfo:
    host: Optional[str] = None
    port: int = 5432
    user: Optional[str] = None
    password: Optional[str] = dataclasses.field(default=None, repr=False)
    dbname: Optional[str] = None
    options: Dict[str, str] = dataclasses.field(default_factory=dict)
    connect_timeout: int = 10

    def with_dbname(self, dbname: str) -> "ConnInfo":
        return dataclasses.replace(self, dbname=dbname)

    def psycopg2_kwargs(self) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = {"connect_timeout": self.connect_timeout}
        for key, value in (("host", self.host), ("port", self.port), ("user", self.user),
                           ("password", self.password), ("dbname", self.dbname)):
            if value not in (None, ""):
                kwargs[key] = value
        kwargs.update(self.options)
        return kwargs

    def libpq_env(self) -> Dict[str, str]:
        """Environment for pg_dump/psql/pg_restore: PGPASSWORD stays out of argv."""
        env: Dict[str, str] = {"PGCONNECT_TIMEOUT": str(self.connect_timeout)}
        for name, value in (("PGHOST", self.host), ("PGPORT", self.port), ("PGUSER", self.user),
                            ("PGPASSWORD", self.password), ("PGDATABASE", self.dbname)):
            if value not in (None, ""):
                env[name] = str(value)
        if "sslmode" in self.options:
            env["PGSSLMODE"] = self.options["sslmode"]
        return env

    def url(self, driver: str = "") -> str:
        """A full URL, password included: only for environment variables of child processes."""
        scheme = "postgresql+" + driver if driver else "postgresql"
        auth = ""
        if self.user:
            auth = quote(self.user, safe="")
            if self.password:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        host = self.host or "localhost"
        if ":" in host and not host.startswith("["):
            host = "[" + host + "]"
        query = "&".join("%s=%s" % (k, quote(v, safe="")) for k, v in sorted(self.options.items()))
        return "%s://%s%s:%s/%s%s" % (scheme, auth, host, self.port, quote(self.dbname or "", safe=""),
                                      "?" + query if query else "")

    def masked_url(self) -> str:
        """A URL safe for messages and results: the password is replaced by ``***``."""
        user = self.user or ""
        auth = (user + (":***" if self.password else "") + "@") if user else ""
        return "postgresql://%s%s:%s/%s" % (auth, self.host or "localhost", self.port, self.dbname or "")


def parse_db_url(url: str, connect_timeout: int = 10) -> ConnInfo:
    """Parse ``postgresql://user:pass@host:port/db?sslmode=...`` (also ``postgresql+driver://``)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConnectionOptionsError(
            "db_url must start with postgresql:// (got a URL with scheme %r); "
            "for example postgresql://app@db.example.com:5432/app" % (parts.scheme or "none"))
    try:
        port = parts.port or 5432
    except ValueError:
        raise ConnectionOptionsError("db_url has an invalid port; use postgresql://user@host:5432/dbname")
    dbname = unquote(parts.path.lstrip("/")) or None
    options = dict(parse_qsl(parts.query))
    host = unquote(parts.hostname) if parts.hostname else options.pop("host", None)
    return ConnInfo(host=host, port=port,
                    user=unquote(parts.username) if parts.username else None,
                    password=unquote(parts.password) if parts.password is not None else None,
                    dbname=dbname, options=options, connect_timeout=connect_timeout)


def conninfo_from_params(params: Dict[str, Any]) -> ConnInfo:
    """Build a ConnInfo from a module's params (db_url or login_*)."""
    timeout = params.get("connect_timeout") or 10
    if params.get("db_url"):
        return parse_db_url(params["db_url"], timeout)
    if not (params.get("login_host") or params.get("login_user") or params.get("login_db")):
        raise ConnectionOptionsError(
            "no database given: set db_url (postgresql://user@host:port/dbname) or login_host, "
            "login_user, login_password and login_db")
    return ConnInfo(host=params.get("login_host"), port=params.get("login_port") or 5432,
                    user=params.get("login_user"), password=params.get("login_password"),
                    dbname=params.get("login_db"), connect_timeout=timeout)


def has_connection_params(params: Dict[str, Any]) -> bool:
    return bool(params.get("db_url") or params.get("login_host") or params.get("login_user")
                or params.get("login_db"))


def connect(info: ConnInfo, autocommit: bool = True, application_name: str = "dbops.migrations"):
    """psycopg2 connection; errors carry no password (psycopg2 never echoes it)."""
    kwargs = info.psycopg2_kwargs()
    kwargs.setdefault("application_name", application_name)
    conn = psycopg2.connect(**kwargs)
    conn.autocommit = autocommit
    return conn


_URL_PASSWORD = re.compile(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)([^@\s]*)(@)")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^']|'')*'|\S+)", re.IGNORECASE)


def mask_secrets(text: Any, *secrets: Optional[str]) -> str:
    """Remove passwords from text meant for users: URL passwords, ``password=...``, given secrets."""
    if text is None:
        return ""
    masked = str(text)
    for secret in secrets:
        if secret:
            masked = masked.replace(secret, "********")
            quoted = quote(secret, safe="")
            if quoted != secret:
                masked = masked.replace(quoted, "********")
    masked = _URL_PASSWORD.sub(r"\1********\3", masked)
    return _KEYWORD_PASSWORD.sub(r"\1********", masked)


def server_version_num(conn) -> int:
    """``server_version_num``, e.g. 150004."""
    return int(conn.server_version)


def quote_ident(name: str, conn=None) -> str:
    """Quote an identifier the way PostgreSQL does (with psycopg2 when a connection is at hand)."""
    if conn is not None:
        return psycopg2.extensions.quote_ident(name, conn)
    return '"' + name.replace('"', '""') + '"'


def conninfo_quote(value: str) -> str:
    """A value for a libpq connection string. Tools read ``--dbname`` as a connection string
    when it holds ``=``, so a database name goes in as ``dbname='...'``."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
