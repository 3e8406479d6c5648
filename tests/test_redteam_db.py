"""Red team of the database-enforced masking: a masked grant's own account, on the real servers.

Every attempt runs as `bx_<tag>_mallory_r<n>` (a masked grant; read-write unless said otherwise) against
the seeded `customers` table, whose `ssn` is `partial`, `card_number` `redact`, `email` `hash`.
Before the views are built the admin mirrors the first digit of every SSN (1 -> 8, 2 -> 7, ...), so
the raw SSN order is the reverse of the primary-key and physical order: any output whose row order
follows the raw values shows up as a reversed list.

Tests whose docstring says "Found by the red team, fixed" failed when the round ran (HANDLER and
CHECKSUM TABLE through column grants on MariaDB, index order under `enable_seqscan = off` on
PostgreSQL, raw-table order on MariaDB); the fixes took every privilege on raw masked tables
away and made the PostgreSQL views unreadable by index-only scans. A grant account changing its
own password is caught by the bastion's sweep (tests/test_db_masking.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pymysql
import pytest
from sqldb import MY_HOST, MY_PORT, PG_ADMIN, seeded_databases

from bastion.config import MaskingRule, Target
from bastion.console.render import cell
from bastion.db.accounts import AccountNames, Grant, new_installation_tag
from bastion.db.admin import Admin, admin_session
from bastion.db.grants import setup_target, target_key
from bastion.db.layout import Layout, _pads
from bastion.models import utcnow
from bastion.secrets import Secret, SecretRef
from bastion.sql import SqlPolicy, open_sql_connection
from bastion.sql.engine import LookupBudget
from bastion.sql.lookups import Lookups

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]

MASTER = b"r" * 32
NAMES = AccountNames(new_installation_tag())  # this module's own accounts
RULES = (MaskingRule(("*.customers.ssn",), "partial"),
         MaskingRule(("*.customers.card_number",), "redact"),
         MaskingRule(("*.customers.email",), "hash"))
PG_PORT = int(PG_ADMIN.rsplit(":", 1)[1].split("/")[0])
PG_BASE = PG_ADMIN.rpartition("/")[0]
MIRROR = {"postgres": "UPDATE customers SET ssn = (9 - left(ssn, 1)::int)::text || substr(ssn, 2)",
          "mysql": "UPDATE customers SET ssn = CONCAT(9 - LEFT(ssn, 1), SUBSTR(ssn, 2))"}


@dataclasses.dataclass
class Engine:
    target: Target
    layout: Any
    accounts: dict[str, tuple[str, str]]  # "rw" / "ro" -> (account, password)
    grants: dict[str, Grant]


@dataclasses.dataclass
class Env:
    db: str
    engines: dict[str, Engine]
    secrets: list[str]  # raw values and hidden parts, as the admin reads them
    key_forms: list[str]  # the hash key and its pads, in hex

    def leaks(self, text: str) -> list[str]:
        low = text.lower()
        return [s for s in self.secrets + self.key_forms if s.lower() in low]


def _target(kind: str, db: str, **changes: Any) -> Target:
    if kind == "postgres":
        base = Target(name="rt-pg", kind="postgres", address=f"127.0.0.1:{PG_PORT}", login="postgres",
                      approvals_required=1, database=db, masking=RULES)
    else:
        base = Target(name="rt-my", kind="mysql", address=f"{MY_HOST}:{MY_PORT}", login="root",
                      approvals_required=1, database=db, masking=RULES)
    return dataclasses.replace(base, **changes)


def _grants() -> dict[str, Grant]:
    until = utcnow() + timedelta(hours=1)
    return {"rw": Grant(7, "mallory", False, False, until), "ro": Grant(8, "mallory", False, True, until)}


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    gen = seeded_databases()
    db = next(gen)["name"]
    engines: dict[str, Engine] = {}
    try:
        with psycopg.connect(f"{PG_BASE}/{db}", autocommit=True) as pg:
            pg.execute(MIRROR["postgres"])
        my = pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", database=db, autocommit=True)
        with my.cursor() as cur:
            cur.execute(MIRROR["mysql"])
            cur.execute("SELECT email, ssn, card_number FROM customers")
            raw = cur.fetchall()
        my.close()
        secrets = sorted({v for row in raw for v in row} | {row[1][:5] for row in raw})
        key = target_key(MASTER, _target("postgres", db))
        key_forms = [key.hex()] + [p.hex()[:32] for p in _pads(key)]
        key = target_key(MASTER, _target("mysql", db))
        key_forms += [key.hex()] + [p.hex()[:32] for p in _pads(key)]
        for kind in ("postgres", "mysql"):
            target = _target(kind, db)
            layout, problems = setup_target(target, MASTER, apply=True)
            assert not problems
            grants = _grants()
            accounts = {}
            with admin_session(target) as admin:
                for name, grant in grants.items():
                    accounts[name] = _ensure(admin, layout, grant)
                    assert not admin.account_problems(layout, accounts[name][0])
            engines[kind] = Engine(target, layout, accounts, grants)
        yield Env(db, engines, secrets, key_forms)
    finally:
        for engine in engines.values():
            with admin_session(engine.target) as admin:
                for account, _ in engine.accounts.values():
                    with contextlib.suppress(Exception):
                        admin.end_account(account)
        for _ in gen:
            pass


def _ensure(admin: Admin, layout: Layout, grant: Grant) -> tuple[str, str]:
    """The grant's account (made or brought up to date) and its new password."""
    account = NAMES.account(grant.user, grant.request_id)
    return account, admin.ensure_account(layout, grant, account)


def _refresh(env: Env, kind: str, which: str) -> None:
    """Make an account again after an attempt ended it."""
    engine = env.engines[kind]
    with admin_session(engine.target) as admin:
        engine.accounts[which] = _ensure(admin, engine.layout, engine.grants[which])


def pg_connect(env: Env, which: str = "rw", password: str | None = None) -> psycopg.Connection:
    account, secret = env.engines["postgres"].accounts[which]
    return psycopg.connect(host="127.0.0.1", port=PG_PORT, user=account, password=password or secret,
                           dbname=env.db, autocommit=True, connect_timeout=5)


def my_connect(env: Env, which: str = "rw", password: str | None = None) -> pymysql.Connection:
    for attempt in range(2):
        account, secret = env.engines["mysql"].accounts[which]
        try:
            return pymysql.connect(host=MY_HOST, port=MY_PORT, user=account,
                                   password=password or secret, database=env.db + "_masked",
                                   autocommit=True, connect_timeout=5)
        except pymysql.err.OperationalError:
            if attempt or password:
                raise
            _refresh(env, "mysql", which)
    raise AssertionError("unreachable")


def pg_run(conn: psycopg.Connection, sql: str) -> tuple[list[tuple[Any, ...]], str | None, list[str]]:
    """Rows, error text (None: ran) and notices of one statement."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(f"{d.message_primary} {d.message_detail}"))
    try:
        cur = conn.execute(sql)
        rows = cur.fetchall() if cur.description else []
        return rows, None, notices
    except psycopg.Error as exc:
        return [], str(exc), notices


def my_run(conn: pymysql.Connection, sql: str) -> tuple[list[tuple[Any, ...]], str | None, list[str]]:
    """Rows, error text (None: ran) and warnings of one statement."""
    with conn.cursor() as cur:
        try:
            cur.execute(sql)
            rows = list(cur.fetchall())
            error = None
        except pymysql.err.MySQLError as exc:
            rows, error = [], str(exc)
        try:
            cur.execute("SHOW WARNINGS")
            warnings = [str(w) for w in cur.fetchall()]
        except pymysql.err.MySQLError as exc:  # the connection is gone (revoked)
            warnings = [str(exc)]
        return rows, error, warnings


def _raw(env: Env) -> str:
    return f"`{env.db}`"


# -- PostgreSQL ------------------------------------------------------------------------------------

PG_DENIED = [
    "SELECT ssn FROM public.customers",
    "SELECT count(*) FROM public.customers WHERE ssn LIKE '8%'",
    "SELECT id FROM public.customers ORDER BY ssn",
    "SELECT c FROM public.customers c",
    "SELECT to_json(c) FROM public.customers c",
    "SELECT xmin, id FROM public.customers WHERE card_number IS NOT NULL",
    "UPDATE public.customers SET note = note WHERE ssn LIKE '8%'",
    "UPDATE public.customers SET note = note WHERE id = 1 RETURNING ssn",
    "DELETE FROM public.customers WHERE card_number LIKE '4%'",
    "INSERT INTO public.customers (id, name) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET note = "
    "customers.ssn",
    "SELECT * FROM bastion_masking.state",
    "SELECT pg_read_file('postgresql.conf')",
    "SELECT pg_read_binary_file('global/pg_control')",
    "SELECT pg_ls_dir('.')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT * FROM pg_statistic",
    "SELECT * FROM customer_view",
    "SET ROLE postgres",
    "SET SESSION AUTHORIZATION postgres",
    "ALTER ROLE CURRENT_USER VALID UNTIL 'infinity'",
    "ALTER ROLE CURRENT_USER SET bastion.lookups = 'x'",
    "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE VIEW public.v AS SELECT 1",
    "COPY public.customers TO STDOUT",
    "SELECT pg_relation_size('bastion_masking.state')",
]

# Statements that run (or fail) but must show nothing of the hidden values or the key.
PG_PROBES = [
    "SELECT * FROM customers",
    "SELECT * FROM pg_stats WHERE tablename IN ('customers', 'state')",
    "SELECT * FROM pg_stats_ext",
    "SELECT * FROM pg_stats_ext_exprs",
    "SELECT peek()",
    "SELECT usename, query FROM pg_stat_activity",
    "SELECT * FROM pg_stat_user_tables",
    "SELECT pg_get_viewdef('public_masked.customers'::regclass)",
    "EXPLAIN (ANALYZE, VERBOSE, BUFFERS) SELECT * FROM customers WHERE id = 1",
    "SELECT min(ssn), max(ssn), string_agg(card_number, ','), min(email) FROM customers",
    "SELECT pg_column_size(ssn), octet_length(card_number) FROM customers",
    "SELECT to_json(c) FROM customers c",
    "SELECT id FROM customers WHERE ssn::text LIKE '8%' OR card_number LIKE '4%'",
    "SELECT set_config('bastion.lookups', repeat('0123456789abcdef', 64), false)",
    "SELECT ssn__lookup, card_number__lookup, email__lookup FROM customers",
    "SELECT * FROM pg_db_role_setting",
    "SELECT * FROM pg_locks",
]


@pytest.mark.parametrize("sql", PG_DENIED)
def test_pg_raw_columns_key_and_privileges_are_denied(env: Env, sql: str) -> None:
    with pg_connect(env) as conn:
        rows, error, notices = pg_run(conn, sql)
    assert error is not None, f"ran: {sql!r} -> {rows}"
    assert not env.leaks(f"{rows}{error}{notices}")


@pytest.mark.parametrize("sql", PG_PROBES)
def test_pg_probes_show_no_hidden_value(env: Env, sql: str) -> None:
    with pg_connect(env) as conn:
        rows, error, notices = pg_run(conn, sql)
    assert not env.leaks(f"{rows}{error}{notices}"), sql


def test_pg_plan_dumps_and_temp_functions_see_only_masks(env: Env) -> None:
    """debug_print_* send the plan trees to the client; a temp function raising NOTICE with its
    arguments (cheap, so the planner would run it early) only ever sees the views' output."""
    with pg_connect(env) as conn:
        seen: list[str] = []
        for sql in ("SET client_min_messages = debug5", "SET debug_print_plan = on",
                    "SET debug_print_rewritten = on", "SELECT * FROM customers WHERE id = 1",
                    "RESET ALL",
                    "CREATE FUNCTION pg_temp.spy(text) RETURNS bool LANGUAGE plpgsql COST 0.0001 AS "
                    "$$BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END$$",
                    "SELECT id FROM customers WHERE pg_temp.spy(ssn) AND pg_temp.spy(card_number) "
                    "AND pg_temp.spy(email)",
                    "CREATE TEMP TABLE loot AS SELECT * FROM customers",
                    "SELECT * FROM loot"):
            rows, error, notices = pg_run(conn, sql)
            seen.append(f"{rows}{error}{notices}")
    text = "\n".join(seen)
    assert "saw *****" in text  # the spy did run, on masks
    assert not env.leaks(text)


def test_pg_self_named_lookups_reveal_nothing_new(env: Env) -> None:
    """Naming hashes yourself: only hashes you already know (the hash column's) come back."""
    with pg_connect(env) as conn:
        emails = [r[0] for r in conn.execute("SELECT email FROM customers").fetchall()]
        guesses = [*emails, "h:" + "0" * 16, "h:", "h:8", ",".join(f"h:{i:x}" for i in range(16))]
        conn.execute("SELECT set_config('bastion.lookups', %s, false)", (",".join(guesses),))
        rows = conn.execute("SELECT ssn__lookup, card_number__lookup, email__lookup, email "
                            "FROM customers").fetchall()
    assert all(r[0] is None and r[1] is None and r[2] == r[3] for r in rows), rows


def test_pg_planner_settings_do_not_order_rows_by_hidden_values(env: Env) -> None:
    """Found by the red team, fixed (PostgreSQL): with sequential and bitmap scans disabled (ordinary USERSET
    GUCs, allowed
    even on read-only targets), `SELECT ssn FROM customers` through the masked view is an index-only
    scan of the raw `customers_ssn_key` index, so rows come in the raw SSNs' order (the hidden
    prefix's ranking), and `LIMIT 1` names the row with the smallest SSN."""
    with pg_connect(env) as conn:
        plain = [r[0] for r in conn.execute("SELECT ssn FROM customers").fetchall()]
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT ssn FROM customers").fetchall())
        forced = [r[0] for r in conn.execute("SELECT ssn FROM customers").fetchall()]
    assert forced == plain, f"row order follows the raw SSNs: {forced} (plan: {plan})"


# -- MariaDB -------------------------------------------------------------------------------------


def my_denied(raw: str) -> list[str]:
    return [
        f"SELECT ssn FROM {raw}.customers",
        f"SELECT id FROM {raw}.customers WHERE ssn LIKE '8%'",
        f"SELECT id FROM {raw}.customers ORDER BY card_number",
        f"SELECT * FROM {raw}.customers",
        f"UPDATE {raw}.customers SET note = ssn WHERE id = 1",
        f"UPDATE {raw}.customers SET note = note WHERE id = 1 AND ssn > '5'",
        f"UPDATE {raw}.customers SET note = note ORDER BY ssn LIMIT 1",
        f"DELETE FROM {raw}.customers WHERE email LIKE 'a%'",
        f"INSERT INTO {raw}.customers (id, name) VALUES (1, 'x') ON DUPLICATE KEY UPDATE note = ssn",
        f"INSERT INTO {raw}.customers (id, name) SELECT 100, ssn FROM {raw}.customers LIMIT 1",
        "SELECT * FROM bastion_state",
        "SELECT * FROM mysql.column_stats",
        "SELECT * FROM mysql.proc",
        "SELECT * FROM performance_schema.events_statements_history",
        "EXPLAIN EXTENDED SELECT * FROM customers WHERE id = 1",
        "ANALYZE FORMAT=JSON SELECT * FROM customers WHERE id = 1",
        "SHOW CREATE VIEW customers",
        "SELECT ssn FROM customers FORCE INDEX (ssn)",
        f"SELECT {raw}.peek()",
        f"SELECT * FROM {raw}.customer_view",
        "CREATE TEMPORARY TABLE loot AS SELECT * FROM customers",
        "CREATE VIEW v AS SELECT 1",
        "CREATE FUNCTION f() RETURNS INT RETURN 1",
        "ALTER USER CURRENT_USER() IDENTIFIED BY 'x'",
        "SELECT 1 INTO OUTFILE '/tmp/bastion_redteam_out'",
    ]


def my_probes(raw: str) -> list[str]:
    return [
        "SELECT * FROM customers",
        "SELECT * FROM customers WHERE id = 1",
        "SELECT GROUP_CONCAT(ssn), MIN(card_number), MAX(email) FROM customers",
        "SELECT LOAD_FILE('/etc/passwd')",
        "SELECT * FROM information_schema.views",
        "SELECT * FROM information_schema.columns WHERE table_name = 'bastion_state'",
        f"SHOW INDEX FROM {raw}.customers",
        f"SELECT id FROM {raw}.customers PROCEDURE ANALYSE()",
        "SHOW PROCESSLIST",
        "SELECT bastion_lookup('x')",
        "SHOW GRANTS",
        "SELECT * FROM information_schema.optimizer_trace",
        # Runs for a read-write grant (INSERT + SELECT on some columns suffice) and writes min/max of
        # the raw SSNs into mysql.column_stats, which the account cannot read.
        f"ANALYZE TABLE {raw}.customers PERSISTENT FOR ALL",
        f"CHECK TABLE {raw}.customers",
        "SELECT * FROM customers WHERE id = 1",
    ]


def test_my_raw_columns_key_and_privileges_are_denied(env: Env) -> None:
    conn = my_connect(env)
    try:
        for sql in my_denied(_raw(env)):
            rows, error, warnings = my_run(conn, sql)
            assert error is not None, f"ran: {sql!r} -> {rows}"
            assert not env.leaks(f"{rows}{error}{warnings}"), sql
    finally:
        conn.close()


def test_my_probes_show_no_hidden_value(env: Env) -> None:
    conn = my_connect(env)
    try:
        my_run(conn, "SET optimizer_trace = 'enabled=on'")
        for sql in my_probes(_raw(env)):
            rows, error, warnings = my_run(conn, sql)
            assert not env.leaks(f"{rows}{error}{warnings}"), sql
    finally:
        conn.close()


def test_my_view_rows_come_in_primary_key_order(env: Env) -> None:
    conn = my_connect(env, "ro")
    try:
        for sql in ("SELECT id FROM customers", "SELECT id FROM customers LIMIT 5",
                    "SELECT id FROM customers GROUP BY id, ssn",
                    "SELECT id FROM customers WHERE ssn IS NOT NULL"):
            rows, error, _ = my_run(conn, sql)
            assert error is None and [r[0] for r in rows] == [1, 2, 3, 4, 5], (sql, rows)
        rows, _, _ = my_run(conn, "SELECT GROUP_CONCAT(id) FROM customers")
        assert rows == [("1,2,3,4,5",)]
    finally:
        conn.close()


def test_my_self_named_lookups_reveal_nothing_new(env: Env) -> None:
    conn = my_connect(env, "ro")
    try:
        emails = [r[0] for r in my_run(conn, "SELECT email FROM customers")[0]]
        guesses = [*emails, "h:" + "0" * 16, "h:", "%", "h:%"]
        with conn.cursor() as cur:
            cur.execute("SET @bastion_lookups = %s", (",".join(guesses),))
        rows, _, _ = my_run(conn, "SELECT ssn__lookup, card_number__lookup, email__lookup, email "
                                  "FROM customers")
    finally:
        conn.close()
    assert all(r[0] is None and r[1] is None and r[2] == r[3] for r in rows), rows


def test_my_handler_cannot_read_raw_rows(env: Env) -> None:
    """Found by the red team, fixed (MariaDB, full plaintext): `HANDLER <db>.customers OPEN` needs only
    *some* SELECT
    privilege on the table (the column-level grant on the unmasked columns suffices), and
    `HANDLER h READ `PRIMARY` FIRST/NEXT` then returns whole raw rows: SSN, card number, email."""
    conn = my_connect(env, "ro")
    try:
        rows: list[tuple[Any, ...]] = []
        for sql in (f"HANDLER {_raw(env)}.customers OPEN AS h", "HANDLER h READ `PRIMARY` FIRST",
                    "HANDLER h READ `PRIMARY` NEXT", "HANDLER h READ ssn FIRST", "HANDLER h CLOSE"):
            got, _, _ = my_run(conn, sql)
            rows += got
    finally:
        conn.close()
    assert not env.leaks(str(rows)), f"HANDLER returned raw rows: {rows}"


def test_my_covering_index_does_not_order_rows_by_hidden_values(env: Env) -> None:
    """Found by the red team, fixed (MariaDB, order): `SELECT id FROM <db>.customers` (the raw table, column-
    level grant on
    id) is served from the covering secondary index on `ssn` (InnoDB keeps the primary key in it),
    so the ids come in the raw SSNs' order; `LIMIT 1` names the smallest SSN's owner. The views'
    IGNORE INDEX does not cover the raw table."""
    conn = my_connect(env, "ro")
    try:
        runs = {sql: my_run(conn, sql) for sql in (
            f"SELECT id FROM {_raw(env)}.customers",
            f"SELECT id FROM {_raw(env)}.customers FORCE INDEX (ssn)")}
    finally:
        conn.close()
    for sql, (rows, error, _) in runs.items():  # denied (no privilege on the raw table) or PK order
        assert error is not None or [r[0] for r in rows] == [1, 2, 3, 4, 5], (sql, rows)


def test_my_checksum_table_does_not_depend_on_hidden_values(env: Env) -> None:
    """Found by the red team, fixed (MariaDB, oracle): `CHECKSUM TABLE <db>.customers` runs with the column-
    level grant and
    checksums whole raw rows, so its result changes when only a hidden SSN prefix changes (a
    guessing oracle for small tables, and a change detector for any)."""
    conn = my_connect(env, "ro")
    admin = pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", database=env.db, autocommit=True)
    try:
        before, error, _ = my_run(conn, f"CHECKSUM TABLE {_raw(env)}.customers")
        with admin.cursor() as cur:  # change only the hidden part of one SSN, then put it back
            cur.execute("UPDATE customers SET ssn = CONCAT('0', SUBSTR(ssn, 2)) WHERE id = 1")
        after, _, _ = my_run(conn, f"CHECKSUM TABLE {_raw(env)}.customers")
    finally:
        with admin.cursor() as cur:
            cur.execute("UPDATE customers SET ssn = CONCAT('8', SUBSTR(ssn, 2)) WHERE id = 1")
        admin.close()
        conn.close()
    assert error is not None or before == after, f"checksum follows hidden values: {before} {after}"


# -- Revoke ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_revoke_ends_live_connections_and_a_self_set_password(env: Env, kind: str) -> None:
    """A password the user set themselves does not outlive the revoke, nor does a live session."""
    engine = env.engines[kind]
    grant = Grant(9, "mallory", False, False, utcnow() + timedelta(hours=1))
    with admin_session(engine.target) as admin:
        account, password = _ensure(admin, engine.layout, grant)
    engine.accounts["revoked"], engine.grants["revoked"] = (account, password), grant
    if kind == "postgres":
        live = pg_connect(env, "revoked")
        pg_run(live, "ALTER ROLE CURRENT_USER PASSWORD 'kept-after-revoke'")
        pg_run(live, "BEGIN")
        pg_run(live, "SELECT pg_advisory_lock(42)")
    else:
        live = my_connect(env, "revoked")
        my_run(live, "SET PASSWORD = PASSWORD('kept-after-revoke')")
        my_run(live, "SELECT GET_LOCK('bastion_redteam', 0)")
    with admin_session(engine.target) as admin:
        admin.end_account(account)
    if kind == "postgres":
        _, error, _ = pg_run(live, "SELECT 1")
        assert error is not None
        with pytest.raises(psycopg.OperationalError):
            pg_connect(env, "revoked", password="kept-after-revoke").close()
    else:
        _, error, _ = my_run(live, "SELECT * FROM customers")
        assert error is not None
        with pytest.raises(pymysql.err.OperationalError):
            my_connect(env, "revoked", password="kept-after-revoke").close()
    with contextlib.suppress(Exception):
        live.close()


# -- Through the bastion's SQL engine (what a console session runs) ------------------------------


async def _console(env: Env, kind: str, which: str, *, read_only: bool, budget: int = 500) -> Any:
    engine = env.engines[kind]
    account, password = engine.accounts[which]
    database = env.db + ("_masked" if kind == "mysql" else "")
    target = dataclasses.replace(engine.target, login=account, database=database, read_only=read_only,
                                 password=SecretRef(value=Secret(password)))
    layout = engine.layout
    strategies = {(layout.view_schema(m.table.schema).lower(), m.table.name.lower(), c.lower()): s
                  for m in layout.masked for c, s in zip(m.table.columns, m.strategies, strict=True) if s}
    lookups = Lookups(frozenset(c for _, _, c in strategies), target_key(MASTER, engine.target), strategies)
    return await open_sql_connection(target, SqlPolicy.for_target(target), LookupBudget(budget), lookups)


async def _seen(conn: Any, sql: str) -> tuple[list[list[str]], list[str | None]]:
    rows: list[list[str]] = []
    refusals: list[str | None] = []
    async for result in conn.execute(sql):
        refusals.append(result.blocked or result.error)
        async for batch in result.rows():
            rows.extend([cell(v) for v in row] for row in batch)
    return rows, refusals


async def test_console_pg_read_only_session_orders_rows_by_hidden_values(env: Env) -> None:
    """Found by the red team, fixed (PostgreSQL, through the console of a read-only target): the guardrails
    allow
    enable_seqscan / enable_bitmapscan, so the index-only-scan order leak above works there too."""
    conn = await _console(env, "postgres", "ro", read_only=True)
    try:
        plain, _ = await _seen(conn, "SELECT ssn FROM customers")
        _, refusals = await _seen(conn, "SET enable_seqscan = off; SET enable_bitmapscan = off")
        forced, _ = await _seen(conn, "SELECT ssn FROM customers")
    finally:
        await conn.close()
    assert any(refusals) or forced == plain, f"console rows in raw SSN order: {forced}"


async def test_console_my_read_write_session_runs_handler(env: Env) -> None:
    """Found by the red team, fixed (MariaDB, through the console of a read-write target): HANDLER is passed
    through."""
    conn = await _console(env, "mysql", "rw", read_only=False)
    try:
        rows, _ = await _seen(conn, f"HANDLER {_raw(env)}.customers OPEN AS h; "
                                    "HANDLER h READ `PRIMARY` FIRST; HANDLER h CLOSE")
    finally:
        await conn.close()
    assert not env.leaks(str(rows)), f"console HANDLER rows: {rows}"


async def test_console_my_read_only_session_refuses_handler(env: Env) -> None:
    conn = await _console(env, "mysql", "ro", read_only=True)
    try:
        rows, refusals = await _seen(conn, f"HANDLER {_raw(env)}.customers OPEN AS h")
    finally:
        await conn.close()
    assert refusals[0] and not env.leaks(str(rows))


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
async def test_console_lookups_work_and_stop_at_the_budget(env: Env, kind: str) -> None:
    ssn = next(s for s in env.secrets if s.startswith("8") and len(s) == 11)  # Ada's, mirrored
    conn = await _console(env, kind, "ro", read_only=True, budget=3)
    try:
        found, _ = await _seen(conn, f"SELECT id FROM customers WHERE ssn = '{ssn}'")
        _, refusals = await _seen(conn, "SELECT id FROM customers WHERE ssn IN ('1', '2', '3')")
        # Naming hashes by hand does not help: only the bastion can compute them.
        setter = ("SELECT set_config('bastion.lookups', 'h:0000000000000000', false)"
                  if kind == "postgres" else "SET @bastion_lookups = 'h:0000000000000000'")
        await _seen(conn, setter)
        rows, _ = await _seen(conn, "SELECT ssn__lookup, card_number__lookup FROM customers")
    finally:
        await conn.close()
    assert found == [["1"]]
    assert refusals[0] and "limit" in refusals[0]
    assert not env.leaks(str(rows))
