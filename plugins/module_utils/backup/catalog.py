# -*- coding: utf-8 -*-
# Copyright: dbops developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What pg_backup reads from and writes to PostgreSQL's catalogs around a restore.

- whether a database is empty (no user objects of any kind) and what it holds otherwise;
- the database-level state a restore must carry over (owner, ACL, settings, comment, ...),
  which ``pg_restore`` never restores because it lives outside the database;
- whether the login role may do every step of a restore, checked before anything changes;
- owner records of scratch databases (database comments) and the databases they describe.

Every function takes a psycopg2 cursor; identifiers go through ``psycopg2.sql``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.dbops.migrations.plugins.module_utils.backup import archive as backups

try:
    from psycopg2 import sql as pgsql
except ImportError:  # pragma: no cover - the module reports missing_required_lib
    pgsql = None

_USER_NS = "{n}.nspname NOT IN ('pg_catalog', 'information_schema') AND {n}.nspname NOT LIKE 'pg\\_%%'"


def _not_member(catalog: str, oid: str) -> str:
    # objects an extension created belong to the extension, which is counted on its own
    return ("NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '%s'::regclass AND e.objid = %s "
            "AND e.deptype = 'e')" % (catalog, oid))


# kind, name of every user object (what CREATE DATABASE ... TEMPLATE template0 does not have).
_USER_OBJECTS_SQL = """
WITH objects(kind, name) AS (
  SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                        WHEN 'f' THEN 'foreign table' WHEN 'c' THEN 'composite type' ELSE 'table' END,
         n.nspname || '.' || c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c') AND {ns_n} AND {member_class}
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
         n.nspname || '.' || p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {ns_n} AND {member_proc}
  UNION ALL
  SELECT 'type', n.nspname || '.' || t.typname
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE t.typrelid = 0 AND {ns_n} AND {member_type}
    AND NOT EXISTS (SELECT 1 FROM pg_type a WHERE a.typarray = t.oid)
    AND t.typtype <> 'm'  -- the multirange of a range type (PostgreSQL 14+), made with it
  UNION ALL
  SELECT 'schema', n.nspname FROM pg_namespace n WHERE n.nspname <> 'public' AND {ns_n} AND {member_ns}
  UNION ALL
  SELECT 'large object', m.oid::text FROM pg_largeobject_metadata m
  UNION ALL
  SELECT 'extension', x.extname FROM pg_extension x WHERE x.extname <> 'plpgsql'
  UNION ALL
  SELECT 'operator', n.nspname || '.' || o.oprname
  FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace WHERE {ns_n} AND {member_op}
  UNION ALL
  SELECT 'operator class', n.nspname || '.' || o.opcname
  FROM pg_opclass o JOIN pg_namespace n ON n.oid = o.opcnamespace WHERE {ns_n} AND {member_opc}
  UNION ALL
  SELECT 'operator family', n.nspname || '.' || o.opfname
  FROM pg_opfamily o JOIN pg_namespace n ON n.oid = o.opfnamespace WHERE {ns_n} AND {member_opf}
  UNION ALL
  SELECT 'collation', n.nspname || '.' || o.collname
  FROM pg_collation o JOIN pg_namespace n ON n.oid = o.collnamespace WHERE {ns_n} AND {member_coll}
  UNION ALL
  SELECT 'conversion', n.nspname || '.' || o.conname
  FROM pg_conversion o JOIN pg_namespace n ON n.oid = o.connamespace WHERE {ns_n} AND {member_conv}
  UNION ALL
  SELECT 'text search configuration', n.nspname || '.' || o.cfgname
  FROM pg_ts_config o JOIN pg_namespace n ON n.oid = o.cfgnamespace WHERE {ns_n} AND {member_cfg}
  UNION ALL
  SELECT 'text search dictionary', n.nspname || '.' || o.dictname
  FROM pg_ts_dict o JOIN pg_namespace n ON n.oid = o.dictnamespace WHERE {ns_n} AND {member_dict}
  UNION ALL
  SELECT 'text search parser', n.nspname || '.' || o.prsname
  FROM pg_ts_parser o JOIN pg_namespace n ON n.oid = o.prsnamespace WHERE {ns_n} AND {member_prs}
  UNION ALL
  SELECT 'text search template', n.nspname || '.' || o.tmplname
  FROM pg_ts_template o JOIN pg_namespace n ON n.oid = o.tmplnamespace WHERE {ns_n} AND {member_tmpl}
  UNION ALL
  SELECT 'statistics object', n.nspname || '.' || o.stxname
  FROM pg_statistic_ext o JOIN pg_namespace n ON n.oid = o.stxnamespace WHERE {ns_n}
  UNION ALL
  SELECT 'cast', format_type(o.castsource, NULL) || ' AS ' || format_type(o.casttarget, NULL)
  FROM pg_cast o WHERE o.oid >= 16384 AND {member_cast}
  UNION ALL
  SELECT 'language', o.lanname FROM pg_language o WHERE o.oid >= 16384 AND {member_lang}
  UNION ALL
  SELECT 'access method', o.amname FROM pg_am o WHERE o.oid >= 16384 AND {member_am}
  UNION ALL
  SELECT 'event trigger', o.evtname FROM pg_event_trigger o WHERE {member_evt}
  UNION ALL
  SELECT 'foreign-data wrapper', o.fdwname FROM pg_foreign_data_wrapper o WHERE o.oid >= 16384 AND {member_fdw}
  UNION ALL
  SELECT 'foreign server', o.srvname FROM pg_foreign_server o WHERE {member_srv}
  UNION ALL
  SELECT 'publication', o.pubname FROM pg_publication o
  UNION ALL
  SELECT 'transform', format_type(o.trftype, NULL) FROM pg_transform o WHERE o.oid >= 16384 AND {member_trf}
  UNION ALL
  SELECT 'default privileges', coalesce(n.nspname, '(all schemas)') || ' for ' || pg_get_userbyid(d.defaclrole)
  FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
)
SELECT kind, count(*), (array_agg(name ORDER BY name))[1:5] FROM objects GROUP BY kind ORDER BY kind
""".format(
    ns_n=_USER_NS.format(n="n"),
    member_class=_not_member("pg_class", "c.oid"), member_proc=_not_member("pg_proc", "p.oid"),
    member_type=_not_member("pg_type", "t.oid"), member_ns=_not_member("pg_namespace", "n.oid"),
    member_op=_not_member("pg_operator", "o.oid"), member_opc=_not_member("pg_opclass", "o.oid"),
    member_opf=_not_member("pg_opfamily", "o.oid"), member_coll=_not_member("pg_collation", "o.oid"),
    member_conv=_not_member("pg_conversion", "o.oid"), member_cfg=_not_member("pg_ts_config", "o.oid"),
    member_dict=_not_member("pg_ts_dict", "o.oid"), member_prs=_not_member("pg_ts_parser", "o.oid"),
    member_tmpl=_not_member("pg_ts_template", "o.oid"), member_cast=_not_member("pg_cast", "o.oid"),
    member_lang=_not_member("pg_language", "o.oid"), member_am=_not_member("pg_am", "o.oid"),
    member_evt=_not_member("pg_event_trigger", "o.oid"),
    member_fdw=_not_member("pg_foreign_data_wrapper", "o.oid"),
    member_srv=_not_member("pg_foreign_server", "o.oid"), member_trf=_not_member("pg_transform", "o.oid"))


def user_objects(cur) -> Dict[str, Tuple[int, List[str]]]:
    """Every kind of user object in the connected database: ``{kind: (count, first names)}``.
    Empty means a database as fresh as ``template0`` (plpgsql and the public schema only)."""
    cur.execute(_USER_OBJECTS_SQL)
    return {kind: (int(count), list(names or [])) for kind, count, names in cur.fetchall()}


def large_object_count(cur) -> int:
    cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
    return int(cur.fetchone()[0])


# ---------------------------------------------------------------- database-level state

@dataclasses.dataclass
class DatabaseState:
    """What belongs to a database but lives outside it (pg_dump without --create omits all of it)."""
    name: str
    oid: int
    owner: str
    comment: Optional[str]
    connection_limit: int
    tablespace: str
    encoding: str
    collate: str
    ctype: str
    locale_provider: str = "c"
    locale: Optional[str] = None
    acl_default: bool = True
    # (grantee or None for PUBLIC, privilege, grantable)
    grants: List[Tuple[Optional[str], str, bool]] = dataclasses.field(default_factory=list)
    # (role or None for every role, ["name=value", ...])
    settings: List[Tuple[Optional[str], List[str]]] = dataclasses.field(default_factory=list)

    def summary(self) -> Dict[str, Any]:
        return {"owner": self.owner, "comment": self.comment, "connection_limit": self.connection_limit,
                "tablespace": self.tablespace,
                "grants": None if self.acl_default else ["%s %s%s" % (g or "PUBLIC", p, " WITH GRANT OPTION" if o else "")
                                                         for g, p, o in self.grants],
                "settings": [{"role": r, "settings": s} for r, s in self.settings]}


def read_database_state(cur, name: str) -> Optional[DatabaseState]:
    cur.execute("""
        SELECT d.oid, pg_get_userbyid(d.datdba), shobj_description(d.oid, 'pg_database'), d.datconnlimit,
               t.spcname, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, d.datacl IS NULL,
               to_jsonb(d)
        FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = %s""", (name,))
    row = cur.fetchone()
    if not row:
        return None
    oid, owner, comment, connlimit, tablespace, encoding, collate, ctype, acl_default, raw = row
    raw = raw or {}
    state = DatabaseState(name=name, oid=int(oid), owner=owner, comment=comment, connection_limit=int(connlimit),
                          tablespace=tablespace, encoding=encoding, collate=collate, ctype=ctype,
                          locale_provider=raw.get("datlocprovider") or "c",
                          locale=raw.get("datlocale") or raw.get("daticulocale"), acl_default=bool(acl_default))
    if not acl_default:
        cur.execute("""
            SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type,
                   a.is_grantable
            FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s ORDER BY 1 NULLS FIRST, 2""", (name,))
        state.grants = [(g, p, bool(o)) for g, p, o in cur.fetchall()]
    cur.execute("""
        SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, s.setconfig
        FROM pg_db_role_setting s WHERE s.setdatabase = %s ORDER BY 1 NULLS FIRST""", (oid,))
    state.settings = [(role, list(config or [])) for role, config in cur.fetchall()]
    return state


def create_database_sql(name: str, like: Optional[DatabaseState]):
    """CREATE DATABASE from template0, with the encoding, locale and tablespace of ``like``."""
    query = pgsql.SQL("CREATE DATABASE {} TEMPLATE template0").format(pgsql.Identifier(name))
    if like is None:
        return query
    parts = [query, pgsql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        pgsql.Literal(like.encoding), pgsql.Literal(like.collate), pgsql.Literal(like.ctype))]
    if like.locale_provider == "i" and like.locale:
        parts.append(pgsql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(pgsql.Literal(like.locale)))
    elif like.locale_provider == "b" and like.locale:
        parts.append(pgsql.SQL(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(pgsql.Literal(like.locale)))
    if like.tablespace != "pg_default":
        parts.append(pgsql.SQL(" TABLESPACE {}").format(pgsql.Identifier(like.tablespace)))
    return pgsql.Composed(parts)


def apply_database_state(cur, name: str, state: DatabaseState) -> None:
    """Give database ``name`` the owner, privileges, settings and connection limit of ``state``
    (the comment is set when the database takes the old one's place)."""
    db = pgsql.Identifier(name)
    cur.execute(pgsql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, pgsql.Identifier(state.owner)))
    if state.connection_limit != -1:
        cur.execute(pgsql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(db, pgsql.Literal(state.connection_limit)))
    if not state.acl_default:
        cur.execute(pgsql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        cur.execute(pgsql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, pgsql.Identifier(state.owner)))
        for grantee, privilege, grantable in state.grants:
            cur.execute(pgsql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                pgsql.SQL(privilege), db, pgsql.SQL("PUBLIC") if grantee is None else pgsql.Identifier(grantee),
                pgsql.SQL(" WITH GRANT OPTION" if grantable else "")))
    for role, config in state.settings:
        for entry in config:
            setting, values = backups.split_setting(entry)
            value_sql = pgsql.SQL(", ").join(pgsql.Literal(v) for v in values)
            if role is None:
                cur.execute(pgsql.SQL("ALTER DATABASE {} SET {} TO {}").format(db, pgsql.Identifier(setting), value_sql))
            else:
                cur.execute(pgsql.SQL("ALTER ROLE {} IN DATABASE {} SET {} TO {}").format(
                    pgsql.Identifier(role), db, pgsql.Identifier(setting), value_sql))


def set_comment(cur, name: str, comment: Optional[str]) -> None:
    cur.execute(pgsql.SQL("COMMENT ON DATABASE {} IS {}").format(
        pgsql.Identifier(name), pgsql.Literal(comment) if comment is not None else pgsql.SQL("NULL")))


def database_comment(cur, name: str) -> Optional[str]:
    cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,))
    row = cur.fetchone()
    return row[0] if row else None


def rename_database(cur, old: str, new: str) -> None:
    cur.execute(pgsql.SQL("ALTER DATABASE {} RENAME TO {}").format(pgsql.Identifier(old), pgsql.Identifier(new)))


def terminate_sessions(cur, name: str) -> int:
    cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
    return int(cur.fetchone()[0])


def database_names(cur) -> List[str]:
    cur.execute("SELECT datname FROM pg_database")
    return [r[0] for r in cur.fetchall()]


def recorded_databases(cur) -> List[Tuple[str, Dict[str, Any]]]:
    """Databases whose comment is a pg_backup owner record: (name, record)."""
    cur.execute("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                "WHERE shobj_description(oid, 'pg_database') LIKE %s ORDER BY datname", (backups.RECORD_PREFIX + "%",))
    found = []
    for name, comment in cur.fetchall():
        record = backups.parse_owner_record(comment)
        if record:
            found.append((name, record))
    return found


# ---------------------------------------------------------------- may the login role restore?

@dataclasses.dataclass
class Role:
    name: str
    superuser: bool
    createdb: bool
    createrole: bool


def current_role(cur) -> Role:
    cur.execute("SELECT rolname, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
    name, superuser, createdb, createrole = cur.fetchone()
    return Role(name, bool(superuser), bool(createdb), bool(createrole))


def restore_problems(cur, me: Role, target: str, state: Optional[DatabaseState], server_num: int) -> List[str]:
    """What would stop the login role half-way through a restore into ``target``: checked before
    anything changes, so a restore either can finish or changes nothing."""
    problems = []
    if not (me.superuser or me.createdb):
        problems.append("role %s may not create databases (a restore goes into a new database first); grant it "
                        "CREATEDB or log in as a role that has it" % me.name)
    if state is None:
        return problems
    if not me.superuser:
        cur.execute("SELECT pg_has_role(current_user, %s::name, 'MEMBER')", (state.owner,))
        if not cur.fetchone()[0]:
            problems.append("role %s does not own %s (owner: %s), so it can neither set it aside nor hand the "
                            "restored database to its owner; log in as %s or a superuser"
                            % (me.name, target, state.owner, state.owner))
        if state.tablespace != "pg_default":
            cur.execute("SELECT has_tablespace_privilege(%s, 'CREATE')", (state.tablespace,))
            if not cur.fetchone()[0]:
                problems.append("role %s may not create databases in tablespace %s, where %s lives"
                                % (me.name, state.tablespace, target))
        problems += _settings_problems(cur, me, state, server_num)
    problems += _session_problems(cur, me, target)
    return problems


def _settings_problems(cur, me: Role, state: DatabaseState, server_num: int) -> List[str]:
    problems = []
    for role, config in state.settings:
        if role is not None and role != me.name:
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))
            row = cur.fetchone()
            if not me.createrole or (row and row[0]):
                problems.append("the setting(s) %s of role %s in %s need a superuser (or CREATEROLE) to copy"
                                % (", ".join(config), role, state.name))
                continue
        for entry in config:
            setting = entry.partition("=")[0]
            cur.execute("SELECT context FROM pg_settings WHERE name = %s", (setting,))
            row = cur.fetchone()
            if not row or row[0] != "superuser":
                continue
            allowed = False
            if server_num >= 150000:
                cur.execute("SELECT has_parameter_privilege(%s, 'SET')", (setting,))
                allowed = bool(cur.fetchone()[0])
            if not allowed:
                problems.append("the setting %s of %s can only be copied by a superuser (or a role granted SET on it)"
                                % (entry, state.name))
    return problems


def _session_problems(cur, me: Role, target: str) -> List[str]:
    """Sessions connected to ``target`` that the login role may not end (the swap needs none)."""
    if me.superuser:
        return []
    cur.execute("""
        SELECT DISTINCT a.usename FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
        WHERE a.datname = %s AND a.pid <> pg_backend_pid()
          AND (r.rolsuper OR NOT (pg_has_role(current_user, a.usesysid, 'MEMBER')
                                  OR pg_has_role(current_user, 'pg_signal_backend'::name, 'MEMBER')))
        ORDER BY 1""", (target,))
    users = [r[0] for r in cur.fetchall()]
    if not users:
        return []
    return ["sessions of %s are connected to %s and role %s may not end them; stop the application (or ask a "
            "superuser to end them) and run the restore again" % (", ".join(users), target, me.name)]
