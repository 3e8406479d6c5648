"""What the SQL engine adds on top of the database, on the real PostgreSQL and MariaDB: errors and
notices scrubbed of values, content detectors on computed values of masked grants, column headers
without literals, blocked statements that cannot hide in code, and lookups rewritten onto the
masked views' lookup columns. Runs `SqlConnection` in process, as a console statement would."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqldb import MY_HOST, MY_PORT, PG_ADMIN, assert_no_secrets, seeded_databases

from bastion.config import Target
from bastion.console.render import cell
from bastion.db.grants import target_key
from bastion.demo_data import PEOPLE
from bastion.secrets import Secret, SecretRef
from bastion.sql import SqlConnection, SqlPolicy, open_sql_connection
from bastion.sql.lookups import Lookups, keyed_hash

pytestmark = [pytest.mark.postgres, pytest.mark.mysql]
PASSWORD = f"BASTION_TEST_ENGINE_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    yield from seeded_databases()


def target(kind: str, db: dict[str, str], **changes: object) -> Target:
    """The seeded database's own unprivileged account (no masked views: the engine alone)."""
    port = int(PG_ADMIN.rsplit(":", 1)[1].split("/")[0]) if kind == "postgres" else MY_PORT
    host = "127.0.0.1" if kind == "postgres" else MY_HOST
    base = Target(name=f"t-{kind}", kind=kind, address=f"{host}:{port}", login=db["name"],
                  approvals_required=1, database=db["name"],
                  password=SecretRef(value=Secret(db["password"])))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def connected(kind: str, db: dict[str, str], lookups: Lookups | None = None,
                    **changes: object) -> AsyncIterator[SqlConnection]:
    where = target(kind, db, **changes)
    conn = await open_sql_connection(where, SqlPolicy.for_target(where), lookups=lookups)
    try:
        yield conn
    finally:
        await conn.close()


async def run_all(conn: SqlConnection, sql: str) -> tuple[str, list[str | None]]:
    """Everything a user would see from running sql, and each statement's refusal (or None)."""
    seen: list[str] = []
    refusals: list[str | None] = []
    async for result in conn.execute(sql):
        refusals.append(result.blocked)
        seen.append(result.blocked or "")
        seen.extend(f"{c.name}" for c in result.columns)
        async for batch in result.rows():
            seen.extend(cell(v) for row in batch for v in row)
        seen.append(result.error or "")
        seen.extend(result.notices)
        seen.append(result.redacted)
    return "\n".join(seen), refusals


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
async def test_errors_do_not_quote_values(databases: dict[str, str], kind: str) -> None:
    head, tail = PEOPLE[0][3][:3], PEOPLE[0][3][3:]
    built = f"'{head}' || '{tail}'" if kind == "postgres" else f"CONCAT('{head}', '{tail}')"
    async with connected(kind, databases) as conn:
        # PostgreSQL's DETAIL would quote the whole row ("Failing row contains (…)").
        text, refusals = await run_all(conn, "UPDATE customers SET name = NULL WHERE id = 1")
        assert not any(refusals)
        assert "null" in text.lower() and "name" in text, text
        assert_no_secrets(text, "a not-null violation")
        text, refusals = await run_all(conn, "UPDATE customers SET id = 2 WHERE id = 1")
        assert not any(refusals)
        assert "duplicate" in text.lower() or "unique" in text.lower(), text
        assert_no_secrets(text, "a unique violation")
        bad_cast = ("SELECT CAST(" + built + " AS INTEGER)") if kind == "postgres" else (
            "SELECT CAST(" + built + " AS DATE) + INTERVAL 1 DAY")
        text, _ = await run_all(conn, bad_cast)
        assert_no_secrets(text, "a cast error")


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
async def test_detectors_scrub_computed_values_of_masked_grants(databases: dict[str, str],
                                                                kind: str) -> None:
    values = {
        "mail": "write to ada@example.com today", "card": "card 4111 1111 1111 1111",
        "ssn": "ssn 123-45-6789", "iban": "iban DE89370400440532013000",
        "token": "ghp_" + "a1B2" * 9, "plain": "order 42 shipped",
    }
    select = ", ".join(f"concat('{v[:3]}', '{v[3:]}') AS {k}" for k, v in values.items())
    masked = Lookups(frozenset({"ssn"}), b"k" * 32)
    async with connected(kind, databases, lookups=masked) as conn:
        async for result in conn.execute(f"SELECT {select}"):
            assert result.blocked is None and result.error is None, result
            rows = [row async for batch in result.rows() for row in batch]
    shown = dict(zip(values, rows[0], strict=True))
    assert shown["plain"] == "order 42 shipped"
    assert shown["mail"] == "write to **** today"
    for name in ("card", "ssn", "iban", "token"):
        assert shown[name] != values[name] and "****" in shown[name], (name, shown[name])
    async with connected(kind, databases) as conn:  # an unmasked grant sees what it asked for
        text, _ = await run_all(conn, f"SELECT {select}")
    assert "ada@example.com" in text


async def test_column_headers_do_not_carry_literals(databases: dict[str, str]) -> None:
    """MariaDB names a computed column after its text; the literal must not reach a recording."""
    async with connected("mysql", databases) as conn:
        async for result in conn.execute("SELECT ssn = '123-45-6789' FROM customers WHERE id = 1"):
            names = [c.name for c in result.columns]
            await result.drain()
    assert names and "123-45-6789" not in names[0] and "'?'" in names[0], names


async def test_blocked_statements_cannot_hide_in_code(databases: dict[str, str]) -> None:
    """A DO block or a function body could run a DROP the bastion never sees."""
    async with connected("postgres", databases, blocked_statements=("drop",)) as conn:
        for sql in ("DO $$BEGIN EXECUTE 'DROP TABLE notes'; END$$",
                    "CREATE FUNCTION rt_f() RETURNS void LANGUAGE plpgsql AS "
                    "$$BEGIN EXECUTE 'DROP TABLE notes'; END$$"):
            _, refusals = await run_all(conn, sql)
            assert refusals[0] and "blocked" in refusals[0], (sql, refusals)
        text, refusals = await run_all(conn, "SELECT count(*) FROM notes")
        assert not any(refusals) and "ERROR" not in text


def test_lookups_rewrite_equality_and_in_lists_only() -> None:
    key = target_key(b"m" * 32, target("postgres", {"name": "db", "password": ""}))
    lookups = Lookups(frozenset({"ssn", "email"}), key)
    text, hashes = lookups.rewrite(
        "SELECT name FROM customers c WHERE c.ssn = '123-45-6789' OR email IN ('a@b.c', 'x') "
        "OR ssn LIKE '1%' OR id = 3", "postgres")
    assert hashes == [keyed_hash(key, "123-45-6789"), keyed_hash(key, "a@b.c"), keyed_hash(key, "x")]
    assert "c.ssn__lookup = 'h:" in text and "email__lookup IN ('h:" in text
    assert "ssn LIKE '1%'" in text and "123-45-6789" not in text and "id = 3" in text
    assert lookups.rewrite("SELECT ssn FROM customers", "postgres") == ("SELECT ssn FROM customers", [])
    assert lookups.rewrite("SELECT name FROM t WHERE ssn = 'unterminated", "mysql")[1] == []
    naming = Lookups.naming(hashes, "mysql")
    assert naming.startswith("SET @bastion_lookups = 'h:") and naming.count("h:") == 3
