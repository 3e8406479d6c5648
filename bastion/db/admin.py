"""The bastion's admin connection to one SQL target: provisioning, grant accounts and checks.

Runs in a worker thread (blocking drivers: psycopg's sync API and PyMySQL); callers use
`asyncio.to_thread`. The admin account is the target's `login`: it provisions the masked views,
creates and disables grant accounts, and reads the catalog to check them. It never runs a user's
statement.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

import psycopg
import pymysql

from bastion.config import Target
from bastion.db.accounts import Grant, grant_sql
from bastion.db.layout import (
    MASKED_SUFFIX,
    MYSQL_STATE_TABLE,
    STATE_SCHEMA,
    Layout,
    Table,
    plan_layout,
    provisioning_sql,
)
from bastion.sql.errors import SqlConnectError
from bastion.sql.mysql import tls_options

__all__ = ["Admin", "DatabaseError", "admin_session", "first_line", "logs_in"]

DatabaseError = (psycopg.Error, pymysql.err.MySQLError)

CONNECTION_LIMIT = 20  # connections one grant account may hold at once


class _Cursor(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...
    def fetchall(self) -> Any: ...
    def fetchone(self) -> Any: ...


@contextlib.contextmanager
def admin_session(target: Target) -> Iterator[Admin]:
    """Log in as the target's admin account (blocking)."""
    password = target.password.resolve().reveal() if target.password is not None else None
    conn: Any
    try:
        if target.kind == "postgres":
            conn = psycopg.connect(host=target.host, port=target.port, user=target.login,
                                   password=password, dbname=target.database or target.login,
                                   connect_timeout=10, autocommit=True,
                                   application_name="bastion-admin")
        else:
            conn = pymysql.connect(host=target.host, port=target.port, user=target.login,
                                   password=password or "", database=target.database,
                                   autocommit=True, connect_timeout=10, charset="utf8mb4",
                                   **tls_options(target.host))
    except DatabaseError as exc:
        raise SqlConnectError(f"{target.name}: cannot log in as the admin account "
                              f"{target.login!r}: {first_line(exc)}") from None
    try:
        yield Admin(target, conn)
    finally:
        conn.close()


def logs_in(target: Target, account: str, password: str) -> bool:
    """Whether `account` still logs in with the password the bastion gave it (False: the
    password was changed, by the account itself, say). Other failures raise."""
    try:
        if target.kind == "postgres":
            psycopg.connect(host=target.host, port=target.port, user=account, password=password,
                            dbname=target.database or target.login, connect_timeout=10,
                            application_name="bastion-check").close()
        else:
            pymysql.connect(host=target.host, port=target.port, user=account, password=password,
                            connect_timeout=10, **tls_options(target.host)).close()
    except psycopg.OperationalError as exc:
        if "password authentication failed" in str(exc):
            return False
        raise
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] == 1045:  # access denied
            return False
        raise
    return True


def first_line(exc: BaseException) -> str:
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1]
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Admin:
    """Provisioning and grant-account work on one target, over one admin connection."""

    def __init__(self, target: Target, conn: Any) -> None:
        self.target = target
        self.conn = conn
        self.dialect = "postgres" if target.kind == "postgres" else "mysql"
        self.database = target.database or target.login

    def _cursor(self) -> _Cursor:
        cur: _Cursor = self.conn.cursor()
        return cur

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self._cursor()
        cur.execute(sql, params)
        return [tuple(r) for r in cur.fetchall()]

    def _run(self, statements: list[str]) -> None:
        cur = self._cursor()
        for statement in statements:
            cur.execute(statement)

    # -- layout ------------------------------------------------------------------------------

    def tables(self) -> list[Table]:
        """The target's base tables and their columns (system and bastion schemas left out)."""
        if self.dialect == "postgres":
            rows = self._rows(
                "SELECT n.nspname, c.relname, array_agg(a.attname::text ORDER BY a.attnum) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
                "WHERE c.relkind IN ('r', 'p', 'm', 'f') "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema', %s) "
                "AND n.nspname NOT LIKE 'pg\\_%%' AND n.nspname NOT LIKE %s "
                "GROUP BY n.nspname, c.relname", (STATE_SCHEMA, "%" + MASKED_SUFFIX))
            return [Table(s, n, tuple(cols)) for s, n, cols in rows]
        rows = self._rows(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema "
            "AND t.table_name = c.table_name WHERE c.table_schema = %s "
            "AND t.table_type = 'BASE TABLE' ORDER BY c.table_name, c.ordinal_position",
            (self.database,))
        found: dict[str, list[str]] = {}
        for table, column in rows:
            found.setdefault(table, []).append(column)
        indexes: dict[str, dict[str, list[str]]] = {}
        for table, index, column in self._rows(
                "SELECT table_name, index_name, column_name FROM information_schema.statistics "
                "WHERE table_schema = %s AND index_name <> 'PRIMARY' "
                "ORDER BY table_name, index_name, seq_in_index", (self.database,)):
            indexes.setdefault(table, {}).setdefault(index, []).append(column)
        return [Table(self.database, t, tuple(cols),
                      tuple((i, tuple(c)) for i, c in indexes.get(t, {}).items()))
                for t, cols in found.items()]

    def layout(self) -> Layout:
        """The layout the config asks for, on the tables the target has now."""
        return plan_layout(self.dialect, self.database, self.tables(), self.target.masking)

    def apply(self, layout: Layout, key: bytes) -> None:
        """Create or bring up to date the masked views (idempotent)."""
        if self.dialect == "postgres":
            with self.conn.transaction():
                self._run(provisioning_sql(layout, key))
            return
        self._run(provisioning_sql(layout, key))
        masked_db = layout.database + MASKED_SUFFIX
        wanted = {m.table.name for m in layout.viewed}
        for (view,) in self._rows("SELECT table_name FROM information_schema.views "
                                  "WHERE table_schema = %s", (masked_db,)):
            if view not in wanted:
                self._run([f"DROP VIEW `{masked_db}`.`{view.replace('`', '``')}`"])

    def layout_problems(self, layout: Layout) -> list[str]:
        """What differs between the applied views and the layout (empty: up to date)."""
        if not layout.masked:
            return []
        try:
            rows = self._rows(f"SELECT fingerprint FROM {layout.state_table()}")
        except DatabaseError:
            return ["the masked views were never set up"]
        if not rows:
            return ["the masked views were never set up"]
        schemas = layout.view_schemas
        present = set(self._rows(
            "SELECT table_schema, table_name FROM information_schema.views WHERE table_schema IN ("
            + ", ".join(["%s"] * len(schemas)) + ")", schemas))
        problems = [f"view {layout.view_schema(m.table.schema)}.{m.table.name} is missing"
                    for m in layout.viewed
                    if (layout.view_schema(m.table.schema), m.table.name) not in present]
        if rows[0][0] != layout.fingerprint:
            problems.append("the masked views do not match the masking rules and tables of the "
                            "config (rules or tables changed since they were set up)")
        return problems

    # -- grant accounts ------------------------------------------------------------------------

    def ensure_account(self, layout: Layout, grant: Grant, account: str) -> str:
        """Create the grant's account (or bring it up to date) with a new random password;
        return the password."""
        password = secrets.token_hex(24)
        if self.dialect == "postgres":
            self._ensure_postgres(layout, grant, account, password)
        else:
            self._ensure_mysql(layout, grant, account, password)
        return password

    def _ensure_postgres(self, layout: Layout, grant: Grant, account: str, password: str) -> None:
        who = '"' + account + '"'
        until = _timestamp(grant.expires_at)
        with self.conn.transaction():
            if not self._rows("SELECT 1 FROM pg_roles WHERE rolname = %s", (account,)):
                self._run([f"CREATE ROLE {who}"])
            statements = [
                f"ALTER ROLE {who} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
                f"NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {CONNECTION_LIMIT} "
                f"PASSWORD '{password}' VALID UNTIL '{until}'",
                f'REVOKE ALL ON DATABASE "{self.database}" FROM {who}',
            ]
            schemas = {t.table.schema for t in layout.tables} | set(layout.view_schemas) | {"public"}
            for schema in sorted(schemas):
                q = '"' + schema.replace('"', '""') + '"'
                statements.append(f"REVOKE ALL ON ALL TABLES IN SCHEMA {q} FROM {who}")
                statements.append(f"REVOKE ALL ON SCHEMA {q} FROM {who}")
            self._run(statements + grant_sql(layout, grant, account))

    def _ensure_mysql(self, layout: Layout, grant: Grant, account: str, password: str) -> None:
        who = f"'{account}'@'%'"
        self._run([
            f"CREATE USER IF NOT EXISTS {who} IDENTIFIED BY '{password}'",
            f"ALTER USER {who} IDENTIFIED BY '{password}' "
            f"WITH MAX_USER_CONNECTIONS {CONNECTION_LIMIT} ACCOUNT UNLOCK",
            f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {who}",
            *grant_sql(layout, grant, account),
        ])

    def account_problems(self, layout: Layout, account: str) -> list[str]:
        """Ways `account` could read masked data past the views, from the database's own
        catalog (empty: none). Fails closed: the session is refused on any."""
        if self.dialect == "postgres":
            return self._postgres_account_problems(layout, account)
        return self._mysql_account_problems(layout, account)

    def _postgres_account_problems(self, layout: Layout, account: str) -> list[str]:
        problems = []
        (role,) = self._rows("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s",
                             (account,)) or [(True,)]
        if role[0]:
            problems.append(f"account {account} is a superuser or bypasses row security")
        member_of = self._rows("SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r "
                               "ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
                               "WHERE u.rolname = %s ORDER BY 1", (account,))
        if member_of:  # SET ROLE would give it that role's privileges
            problems.append(f"account {account} is a member of role {member_of[0][0]}")
        for masked in layout.masked:
            t = masked.table
            rel = '"' + t.schema.replace('"', '""') + '"."' + t.name.replace('"', '""') + '"'
            for column in masked.masked:
                if self._rows("SELECT has_column_privilege(%s, %s::regclass, %s, 'SELECT')",
                              (account, rel, column))[0][0]:
                    problems.append(f"account {account} can read {t.schema}.{t.name}.{column}")
        if self._rows(f"SELECT has_table_privilege(%s, '{layout.state_table()}', 'SELECT')",
                      (account,))[0][0]:
            problems.append(f"account {account} can read the masking key")
        definer = self._rows(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND has_function_privilege(%s, p.oid, 'EXECUTE') ORDER BY 1 LIMIT 1", (account,))
        if definer:
            problems.append(f"account {account} may run SECURITY DEFINER function {definer[0][0]}, "
                            "which runs with its owner's rights (REVOKE EXECUTE … FROM PUBLIC)")
        for name in self._readable_views_over_masked(layout, account):
            problems.append(f"account {account} can read view {name}, which reads a masked table")
        return problems

    def _readable_views_over_masked(self, layout: Layout, account: str) -> list[str]:
        """Views outside the masked schemas that the account may read and that read (directly
        or through other views) a table with masked columns."""
        edges = self._rows(
            "SELECT DISTINCT r.ev_class, d.refobjid FROM pg_rewrite r "
            "JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass "
            "AND d.refclassid = 'pg_class'::regclass WHERE d.refobjid <> r.ev_class")
        reads: dict[int, set[int]] = {}
        for view, rel in edges:
            reads.setdefault(view, set()).add(rel)
        masked_oids = set()
        for masked in layout.masked:
            t = masked.table
            rel = '"' + t.schema.replace('"', '""') + '"."' + t.name.replace('"', '""') + '"'
            masked_oids.add(self._rows("SELECT %s::regclass::oid", (rel,))[0][0])
        tainted = set(masked_oids)
        for _ in range(16):
            grown = {v for v, rels in reads.items() if rels & tainted} - tainted
            if not grown:
                break
            tainted |= grown
        views = self._rows(
            "SELECT c.oid, n.nspname || '.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE %s "
            "AND has_table_privilege(%s, c.oid, 'SELECT')", ("%" + MASKED_SUFFIX, account))
        return sorted(name for oid, name in views if oid in tainted - masked_oids)

    def _mysql_account_problems(self, layout: Layout, account: str) -> list[str]:
        grantee = f"'{account}'@'%'"
        problems = []
        if self._rows("SELECT 1 FROM information_schema.user_privileges WHERE grantee = %s "
                      "AND privilege_type = 'SELECT'", (grantee,)):
            problems.append(f"account {account} may read every database")
        for (schema,) in self._rows("SELECT table_schema FROM information_schema.schema_privileges "
                                    "WHERE grantee = %s AND privilege_type = 'SELECT'", (grantee,)):
            if schema in (layout.database, layout.database + MASKED_SUFFIX):
                problems.append(f"account {account} may read all of database {schema}")
        tables = set(self._rows(
            "SELECT table_schema, table_name FROM information_schema.table_privileges "
            "WHERE grantee = %s AND privilege_type = 'SELECT'", (grantee,)))
        columns = set(self._rows(
            "SELECT table_schema, table_name, column_name FROM information_schema.column_privileges "
            "WHERE grantee = %s AND privilege_type = 'SELECT'", (grantee,)))
        if (layout.database + MASKED_SUFFIX, MYSQL_STATE_TABLE) in tables:
            problems.append(f"account {account} can read the masking key")
        for masked in layout.masked:
            t = masked.table
            if (t.schema, t.name) in tables:
                problems.append(f"account {account} can read all of {t.schema}.{t.name}")
            for column in masked.masked:
                if (t.schema, t.name, column) in columns:
                    problems.append(f"account {account} can read {t.schema}.{t.name}.{column}")
        return problems

    def verifier(self, account: str) -> str | None:
        """The account's stored password verifier, where the admin may read it (PostgreSQL:
        a superuser; MySQL: read on mysql.user); None otherwise."""
        try:
            if self.dialect == "postgres":
                rows = self._rows("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (account,))
            else:
                rows = self._rows("SELECT authentication_string FROM mysql.user "
                                  "WHERE user = %s AND host = '%%'", (account,))
        except DatabaseError:
            return None
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def reset_password(self, account: str) -> str:
        """Give an account a new random password and end its connections (whoever held the old
        password, or one the account set itself, is out); return the new one."""
        password = secrets.token_hex(24)
        if self.dialect == "postgres":
            self._run([f'ALTER ROLE "{account}" PASSWORD \'{password}\''])
            self._rows("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                       (account,))
            return password
        self._run([f"ALTER USER '{account}'@'%' IDENTIFIED BY '{password}'"])
        self._kill_connections(account)
        return password

    def _kill_connections(self, account: str) -> None:
        for (conn_id,) in self._rows("SELECT id FROM information_schema.processlist WHERE user = %s",
                                     (account,)):
            with contextlib.suppress(pymysql.err.MySQLError):
                self._run([f"KILL CONNECTION {int(conn_id)}"])

    def accounts(self, prefix: str) -> list[str]:
        """The grant accounts on this server whose names start with `prefix` (one
        installation's)."""
        pattern = prefix.replace("_", "\\_") + "%"
        if self.dialect == "postgres":
            return [str(n) for (n,) in self._rows(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (pattern,))]
        return [str(n) for (n,) in self._rows(
            "SELECT user FROM mysql.user WHERE host = '%%' AND user LIKE %s", (pattern,))]

    def end_account(self, account: str) -> None:
        """Stop the account logging in, end its connections, then drop it."""
        if self.dialect == "postgres":
            who = '"' + account + '"'
            self._run([f"ALTER ROLE {who} NOLOGIN"])
            self._rows("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                       (account,))
            with contextlib.suppress(psycopg.Error):
                with self.conn.transaction():
                    self._run([f"DROP OWNED BY {who}", f"DROP ROLE {who}"])
            return
        who = f"'{account}'@'%'"
        self._run([f"ALTER USER {who} ACCOUNT LOCK"])
        self._kill_connections(account)
        self._run([f"DROP USER IF EXISTS {who}"])


def _timestamp(when: datetime | None) -> str:
    return "infinity" if when is None else when.isoformat()
