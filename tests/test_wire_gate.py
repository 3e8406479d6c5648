"""The statement gate of native clients and the guardrail rules it added, without sockets:
settings drivers send on connect, COPY to and from the client, the verdict cache, lookups."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.sql.analysis import analyse
from bastion.sql.engine import LookupBudget
from bastion.sql.guardrails import check_guardrails
from bastion.sql.lexing import split_statements
from bastion.sql.lookups import Lookups
from bastion.sql.policy import SqlPolicy
from bastion.wire import gate as gate_module
from bastion.wire.gate import StatementGate


def refusal(sql: str, dialect: str, policy: SqlPolicy | None = None) -> str | None:
    return check_guardrails(analyse(sql, dialect), policy or SqlPolicy(), frozenset(),
                            lambda _key: None)


@pytest.mark.parametrize("sql", [
    "SET NAMES utf8mb4",  # PyMySQL, mysql-connector
    "set names 'utf8mb4' collate 'utf8mb4_unicode_ci'",
    "SET CHARACTER SET latin1",
    "set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')",  # Connector/J
    "SET character_set_results = NULL",
    "SET sql_mode = ''",
])
def test_settings_drivers_send_are_allowed(sql: str) -> None:
    assert refusal(sql, "mysql") is None


@pytest.mark.parametrize("sql", ["SET client_encoding = 'UTF8'", "SET client_encoding TO 'utf-8'",
                                 "SET NAMES 'UNICODE'"])
def test_utf8_client_encoding_is_allowed_on_postgres(sql: str) -> None:
    assert refusal(sql, "postgres") is None


@pytest.mark.parametrize(("sql", "dialect"), [
    ("SET NAMES gbk", "mysql"),  # a multi-byte character can end in a backslash byte
    ("SET sql_mode = 'ANSI_QUOTES'", "mysql"),
    ("SET sql_mode = concat(@@sql_mode, ',NO_BACKSLASH_ESCAPES')", "mysql"),
    ("SET sql_mode = concat(@@sql_mode, ',ANSI')", "mysql"),
    ("SET sql_mode = @saved", "mysql"),
    ("SET NAMES utf8mb4, sql_mode = 'ORACLE'", "mysql"),
    ("SET client_encoding TO 'SJIS'", "postgres"),
    ("SET client_encoding = 'LATIN1'", "postgres"),  # the relay reads PostgreSQL text as UTF-8
    ("SET NAMES 'LATIN1'", "postgres"),
    ("SET standard_conforming_strings = off", "postgres"),
])
def test_settings_that_change_lexing_are_refused(sql: str, dialect: str) -> None:
    assert refusal(sql, dialect) is not None


async def test_copy_with_the_client_only() -> None:
    gate = StatementGate(SqlPolicy(), "postgres", None, LookupBudget())
    assert (await gate.check("COPY customers TO STDOUT")).refused is None
    assert (await gate.check("COPY (SELECT id FROM customers) TO STDOUT WITH CSV")).refused is None
    assert (await gate.check("COPY notes FROM STDIN")).refused is None
    for bad in ("COPY customers TO '/tmp/x'", "COPY customers FROM PROGRAM 'id'",
                "COPY (SELECT pg_read_file('/etc/passwd')) TO STDOUT"):
        assert (await gate.check(bad)).refused is not None, bad
    read_only = StatementGate(SqlPolicy(read_only=True), "postgres", None, LookupBudget())
    assert "read-only" in ((await read_only.check("COPY notes FROM STDIN")).refused or "")
    assert (await read_only.check("COPY notes TO STDOUT")).refused is None


async def test_verdicts_are_cached_by_shape_but_comments_are_not_shape() -> None:
    gate = StatementGate(SqlPolicy(), "mysql", None, LookupBudget())
    assert (await gate.check("SELECT 1")).refused is None
    # Same literal-free text, but an executable comment: never served from the cache.
    assert (await gate.check("SELECT 1 /*! , LOAD_FILE('/etc/passwd') */")).refused is not None
    first = await gate.check("SELECT name FROM customers WHERE id = 1")
    second = await gate.check("SELECT name FROM customers WHERE id = 2")
    assert first.text.endswith("1") and second.text.endswith("2")  # each runs its own text
    assert "\x00" not in second.text


async def test_lookups_name_every_hash_and_spend_only_new_ones() -> None:
    budget = LookupBudget(limit=2)
    gate = StatementGate(SqlPolicy(), "postgres", Lookups(frozenset({"ssn"}), b"k" * 32),
                         budget)
    one = await gate.check("SELECT id FROM customers WHERE ssn = '123-45-6789'")
    assert one.hashes and "ssn__lookup" in one.text and "123-45-6789" not in one.text
    again = await gate.check("SELECT id FROM customers WHERE ssn = '123-45-6789'")
    assert again.refused is None and budget.used == 1  # the same value is not counted twice
    assert (await gate.check("SELECT 1 FROM customers WHERE ssn IN ('1', '2')")).refused
    assert "bastion.lookups" in gate.naming()


def test_read_only_targets_take_drivers_settings_but_not_autocommit_off() -> None:
    read_only = SqlPolicy(read_only=True)
    assert refusal("set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')",
                   "mysql", read_only) is None
    assert refusal("SET NAMES utf8mb4", "mysql", read_only) is None
    assert refusal("SET autocommit = 0", "mysql", read_only) is not None
    assert refusal("SET autocommit = 1, foreign_key_checks = 0", "mysql", read_only) is not None


# Plain texts (bastion.wire.gate): one statement of ASCII letters, digits, blanks and a few signs,
# checked without tokenizing when a text of the same shape (numbers aside) was analysed before.
PLAIN_PIECES = st.sampled_from([
    "SELECT", "select", "abalance", "FROM", "pgbench_accounts", "WHERE", "aid", "id", "=", "<",
    ">=", "<>", "7", "48213", "0", "1.5", "2.", "1e5", "0x1F", "t1", "x_2", "(", ")", ",", "*",
    "+", ".", "count", "LIMIT", "IN", "AND", "OR", "NOT", "DELETE", "UPDATE", "SET", "DROP",
    "TABLE", "pg_sleep", "sleep", "load_file", "EXPLAIN", "ANALYZE", "INTO", "OUTFILE", "COPY",
    "TO", "STDOUT", "PREPARE", "EXECUTE", "CALL", "DO", "BEGIN", "END", "CREATE", "PROCEDURE",
    "customers", "ssn", "name", "1abc", "t.3", " ", "  ", "\n", "\t", "\r\n",
])
PLAIN_TEXTS = st.tuples(st.lists(PLAIN_PIECES, min_size=1, max_size=12).map(" ".join),
                        st.sampled_from(["", ";", " ;", ";\n", "  "]))


def _renumbered(text: str, rng: random.Random) -> str:
    """The same text with numbers replaced by others: those that stand alone (the same shape),
    or every run of digits (in names too: another shape)."""
    runs = r"\b[0-9]+\b" if rng.random() < 0.7 else r"[0-9]+"
    return re.sub(runs, lambda _m: str(rng.randrange(10 ** rng.randint(1, 6))), text,
                  flags=re.ASCII)


def _gate(dialect: str, masked: bool) -> StatementGate:
    lookups = Lookups(frozenset({"ssn"}), b"k" * 32) if masked else None
    return StatementGate(SqlPolicy(read_only=True), dialect, lookups, LookupBudget())


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
@pytest.mark.parametrize("masked", [False, True])
@settings(max_examples=300, deadline=None)
@given(text=PLAIN_TEXTS, seed=st.integers(0, 2**32))
async def test_a_plain_text_checks_as_if_analysed_on_its_own(dialect: str, masked: bool,
                                                             text: tuple[str, str],
                                                             seed: int) -> None:
    first = "".join(text)
    again = _renumbered(first, random.Random(seed))
    gate = _gate(dialect, masked)
    assert gate.split(first) == split_statements(first, dialect)
    for piece in gate.split(first):
        await gate.check(piece)
    # `again` is served from the shape `first` left (when its verdict could be cached), and
    # must be what a gate that never saw `first` makes of it.
    assert gate.split(again) == split_statements(again, dialect)
    for piece in gate.split(again):
        assert await gate.check(piece) == await _gate(dialect, masked).check(piece), piece


@pytest.mark.parametrize("text", [
    "SELECT 1 -- x", "SELECT 1 /* x */", "SELECT 1 # x", "SELECT '1'", 'SELECT "1"', "SELECT `1`",
    "SELECT $1", "SELECT :a", "SELECT ?", "SELECT @v", "SELECT 1; SELECT 2", "SELECT -1",
    "SELECT 1/2", "SELECT E'x'", "SELECT 1\x00", "SELECT \u0661", "SELECT\u00a01", "SELECT 1 ;;",
    "SELECT x\\y", "SELECT 1 || 2", "SELECT * FROM t WHERE a = 1 /*! OR 1=1 */",
])
def test_texts_with_anything_but_plain_words_numbers_and_signs_are_tokenized(text: str) -> None:
    assert gate_module._PLAIN.fullmatch(text) is None


async def test_a_refusal_is_served_to_every_text_of_its_shape_and_no_other() -> None:
    gate = StatementGate(SqlPolicy(read_only=True), "postgres", None, LookupBudget())
    assert (await gate.check("DELETE FROM customers WHERE id = 1")).refused
    assert (await gate.check("DELETE FROM customers WHERE id = 99999")).refused
    assert (await gate.check("SELECT name FROM customers WHERE id = 1")).refused is None
    # A comment or a string is not part of a plain text: analysed, and refused on its own merits.
    assert (await gate.check("SELECT name FROM customers WHERE id = 1 /* x */")).refused is None
    assert (await gate.check("SELECT pg_read_file('/etc/passwd') FROM customers WHERE id = 1")
            ).refused
    assert "pg_read_file" not in (await gate.check("SELECT name FROM customers WHERE id = 2")).text


async def test_long_statements_are_analysed_each_time_not_kept_as_cache_keys() -> None:
    gate = StatementGate(SqlPolicy(), "postgres", None, LookupBudget())
    for i in range(50):
        columns = ", ".join(f"c{i}_{j}" for j in range(1200))  # ~10 KB, a new shape each time
        assert (await gate.check(f"SELECT {columns} FROM t WHERE id = {i}")).refused is None
        assert (await gate.check(f"SELECT {columns} FROM t WHERE id = '{i}'")).refused is None
    assert (await gate.check("DELETE FROM t")).refused  # the gate still judges
    assert len(gate._plain) == len(gate._verdicts) == 1  # only the short DELETE's
