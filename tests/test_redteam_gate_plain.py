"""Red team of the statement gate's plain-text fast path (bastion.wire.gate, commit 67f89dd).

Each test is an attack as a database client would send it. Passing tests assert the safe
behaviour; the last ones are the bypasses this round found (EXPLAIN (ANALYZE <literal>), the
verdict cache's key without copy_stdio), kept as tests of their fixes.
"""

from __future__ import annotations

import pytest

from bastion.sql.engine import LookupBudget
from bastion.sql.lexing import split_statements
from bastion.sql.lookups import Lookups
from bastion.sql.policy import SqlPolicy
from bastion.wire import gate as gate_module
from bastion.wire.gate import StatementGate

DIALECTS = ["postgres", "mysql"]
WRITES_BLOCKED = SqlPolicy(blocked_statements=frozenset({"delete", "insert", "update"}))


def _gate(dialect: str, policy: SqlPolicy | None = None, masked: bool = False) -> StatementGate:
    lookups = Lookups(frozenset({"ssn"}), b"k" * 32) if masked else None
    return StatementGate(policy or SqlPolicy(read_only=True), dialect, lookups, LookupBudget())


async def _second_as_fresh(dialect: str, first: str, second: str,
                           policy: SqlPolicy | None = None, masked: bool = False) -> None:
    """After `first`, `second` is checked exactly as a gate that never saw `first` checks it."""
    assert gate_module._PLAIN.fullmatch(first) and gate_module._PLAIN.fullmatch(second)
    gate = _gate(dialect, policy, masked)
    for piece in gate.split(first):
        await gate.check(piece)
    assert gate.split(second) == split_statements(second, dialect)
    for piece in gate.split(second):
        assert await gate.check(piece) == await _gate(dialect, policy, masked).check(piece), piece


# Numbers next to letters, dots, underscores, exponents, signs: in every pair the texts have the
# same shape (or not, which is fine too) and the second must check as on its own.
ADJACENT = [
    ("SELECT 1.5 FROM t", "SELECT 48213.99999 FROM t"),
    ("SELECT 1. FROM t", "SELECT 0. FROM t"),
    ("SELECT 1.e FROM t", "SELECT 0.e FROM t"),  # sqlglot: one NUMBER "1.e"
    ("SELECT 1.E+5 FROM t", "SELECT 0.E+7 FROM t"),
    ("SELECT 1E+5 FROM t", "SELECT 1E+0 FROM t"),
    ("SELECT 1e5 FROM t", "SELECT 2e5 FROM t"),
    ("SELECT 1.abc FROM t", "SELECT 4111111111111111.abc FROM t"),  # MySQL: 1. AS abc
    ("SELECT 1.5abc FROM t", "SELECT 0.5abc FROM t"),
    ("SELECT 1abc FROM t", "SELECT 2abc FROM t"),  # MySQL: identifier 1abc (another shape)
    ("SELECT t.1 FROM t", "SELECT t.0 FROM t"),
    ("SELECT t.1abc FROM t", "SELECT t.0abc FROM t"),
    ("SELECT x_1, t1 FROM t2", "SELECT x_0, t9 FROM t0"),
    ("SELECT 1_000 FROM t", "SELECT 0_000 FROM t"),
    ("SELECT 0 x1F FROM t", "SELECT 1 x1F FROM t"),  # "0 x1F" is not 0x1F
    ("SELECT 0x1F FROM t", "SELECT 1x1F FROM t"),
    ("SELECT 0b1 FROM t", "SELECT 1b1 FROM t"),
    ("SELECT 0 b1 FROM t", "SELECT 7 b1 FROM t"),
    ("SELECT 00 FROM t", "SELECT 0 FROM t"),
    ("SELECT 01 FROM t", "SELECT 1 FROM t"),
    ("SELECT " + "9" * 5000 + " FROM t", "SELECT 0 FROM t"),
    ("SELECT 1.in(id, 1.) FROM t", "SELECT 0.in(id, 0.) FROM t"),
    ("SELECT 1 DIV 2, 3 MOD 4 FROM t", "SELECT 0 DIV 0, 0 MOD 0 FROM t"),
    ("SELECT 1<>2, 3<=4, 5>=6 FROM t", "SELECT 0<>0, 0<=0, 0>=0 FROM t"),
    ("SELECT interval 1 day", "SELECT interval 0 day"),
    ("SELECT * FROM t LIMIT 1,2", "SELECT * FROM t LIMIT 0,0"),
    ("SELECT * FROM t LIMIT 1 OFFSET 2", "SELECT * FROM t LIMIT 0 OFFSET 0"),
    ("SELECT 1 <=> 2 FROM t", "SELECT 0 <=> 0 FROM t"),  # <=> is plain (MySQL null-safe =)
    ("SELECT * FROM t WHERE a<=>1", "SELECT * FROM t WHERE a<=>0"),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("first", "second"), ADJACENT)
async def test_numbers_next_to_letters_dots_and_signs(dialect: str, first: str, second: str) -> None:
    await _second_as_fresh(dialect, first, second)
    await _second_as_fresh(dialect, second, first)


# Whitespace, \r, semicolons, empty statements: split as split_statements does.
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("text", [
    "", " ", ";", " ; ", "\r;\r", "\r\n;\r\n", "SELECT 1;", "SELECT 1 ;", " SELECT 1;\n",
    "SELECT\r1\rFROM\rt;\r", "\tSELECT\t1\t;\t", "SELECT 1.;", "SELECT t.1;", "SELECT (1);",
    "SELECT 1.e;", "SELECT 1E+5;", "SELECT 1abc;",
])
def test_plain_texts_split_as_split_statements(dialect: str, text: str) -> None:
    assert gate_module._PLAIN.fullmatch(text)
    assert _gate(dialect).split(text) == split_statements(text, dialect)


@pytest.mark.parametrize("text", [
    "SELECT 1;;", "SELECT 1; SELECT 2", "SELECT 1\x0b", "SELECT 1\x0c", "SELECT 1\u2028",
    "SELECT \uff11", "SELECT 1 != 2", "SELECT -1", "SELECT 1 % 2", "SELECT ?",
    "SELECT 1\x00", "SELECT @@x", "SELECT 1 | 2", "SELECT 1 & 2", "SELECT ~1", "SELECT 1 ^ 2",
])
def test_anything_else_is_not_plain(text: str) -> None:
    assert gate_module._PLAIN.fullmatch(text) is None


# Guardrails whose verdict could depend on a number's value, in cacheable kinds.
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("first", "second"), [
    ("SELECT * FROM t WHERE id = 1", "SELECT * FROM t WHERE 1 = 1"),  # another shape anyway
    ("DELETE FROM t WHERE id = 1", "DELETE FROM t WHERE id = 0"),
    ("DELETE FROM t WHERE 1 = 0", "DELETE FROM t WHERE 1 = 1"),
    ("DELETE FROM t WHERE 0", "DELETE FROM t WHERE 1"),
    ("UPDATE t SET a = 1 WHERE id = 1 OR 1 = 0", "UPDATE t SET a = 1 WHERE id = 1 OR 1 = 1"),
    ("SELECT sleep(0)", "SELECT sleep(100000)"),
    ("SELECT pg_sleep(0)", "SELECT pg_sleep(100000)"),
    ("SELECT * FROM t LIMIT 1", "SELECT * FROM t LIMIT 99999999999999999999"),
    ("SELECT * FROM t WHERE ssn = 1", "SELECT * FROM t WHERE ssn = 123456789"),
    ("SELECT * FROM t WHERE ssn IN (1, 2)", "SELECT * FROM t WHERE ssn IN (4111111111111111, 7)"),
    ("EXPLAIN (ANALYZE 1) SELECT 1", "EXPLAIN (ANALYZE 0) SELECT 1"),
    ("EXPLAIN (ANALYZE 2) DELETE FROM t", "EXPLAIN (ANALYZE 00) DELETE FROM t"),
])
@pytest.mark.parametrize("policy", [SqlPolicy(), SqlPolicy(read_only=True), WRITES_BLOCKED])
@pytest.mark.parametrize("masked", [False, True])
async def test_value_dependent_guardrails(dialect: str, first: str, second: str,
                                          policy: SqlPolicy, masked: bool) -> None:
    await _second_as_fresh(dialect, first, second, policy, masked)


async def test_a_refusal_for_one_value_reaches_every_value_of_the_shape() -> None:
    # The safe direction: ANALYZE 1 (runs the DELETE) refused, so ANALYZE 0 is refused as well
    # (an over-refusal: a fresh gate lets ANALYZE 0 through, so this pair is not in the list above).
    gate = _gate("postgres", WRITES_BLOCKED)
    assert (await gate.check("EXPLAIN (ANALYZE 1) DELETE FROM t WHERE id = 1")).refused
    assert (await gate.check("EXPLAIN (ANALYZE 0) DELETE FROM t WHERE id = 1")).refused


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("text", [
    "SET statement_timeout = 1", "SET autocommit = 1", "EXECUTE p", "PREPARE p AS SELECT 1",
    "DECLARE c CURSOR FOR SELECT 1", "FETCH 1 FROM c", "CALL p(1)", "DO 1", "SELECT * FROM pg_settings",
    "SELECT set_config(1, 2, 3)",
])
async def test_uncacheable_kinds_never_get_a_shape(dialect: str, text: str) -> None:
    gate = _gate(dialect)
    await gate.check(text)
    assert not gate._plain


async def test_explain_execute_never_gets_a_shape_on_postgres() -> None:
    # (MySQL reads EXPLAIN EXECUTE as DESCRIBE of a table named execute: cacheable, and harmless.)
    gate = _gate("postgres")
    await gate.check("EXPLAIN ANALYZE EXECUTE p(1)")
    assert not gate._plain


async def test_autocommit_off_is_not_served_from_autocommit_on() -> None:
    gate = _gate("mysql")
    assert (await gate.check("SET autocommit = 1")).refused is None
    assert (await gate.check("SET autocommit = 0")).refused


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_text_sent_is_the_new_text_and_lookups_rewrite_it(dialect: str) -> None:
    gate = _gate(dialect, masked=True)
    await gate.check("SELECT name FROM t WHERE ssn = 1")
    second = await gate.check("\r\n SELECT name FROM t WHERE ssn = 2 \r\n")
    fresh = await _gate(dialect, masked=True).check("\r\n SELECT name FROM t WHERE ssn = 2 \r\n")
    assert second == fresh
    assert second.hashes and second.text.startswith("SELECT name FROM t WHERE ")
    assert second.hashes != (await _gate(dialect, masked=True).check(
        "SELECT name FROM t WHERE ssn = 1")).hashes


# ---- Bypasses this round found, fixed (analysis._explain, the verdict cache's key) ----------
# PostgreSQL reads EXPLAIN (ANALYZE 0) as no ANALYZE and (ANALYZE 1) as ANALYZE (booleans take
# 0 and 1, and strings). The analysis read the value, but verdicts are cached by the literal-free
# form, so (ANALYZE 0) let (ANALYZE 1) through and the DELETE ran; PostgreSQL 16's 0o1 and 0_1
# (the tokenizer: 0 and a name) passed with no cache at all. Now only the words FALSE and OFF
# turn ANALYZE off; any literal counts as on.


@pytest.mark.parametrize("policy", [SqlPolicy(), SqlPolicy(read_only=True), WRITES_BLOCKED])
async def test_explain_analyze_0_then_1_plain_fast_path(policy: SqlPolicy) -> None:
    gate = _gate("postgres", policy)
    assert (await gate.check("EXPLAIN (ANALYZE 0) DELETE FROM t")).refused  # fails closed
    assert (await gate.check("EXPLAIN (ANALYZE 1) DELETE FROM t")).refused


async def test_explain_analyze_0_then_1_old_verdict_cache() -> None:
    gate = _gate("postgres", WRITES_BLOCKED)
    assert (await gate.check("EXPLAIN (ANALYZE 0) DELETE FROM t WHERE id = 1 /* x */")).refused
    assert (await gate.check("EXPLAIN (ANALYZE 1) DELETE FROM t WHERE id = 1 /* x */")).refused


@pytest.mark.parametrize("value", ["0o1", "0_1", "0_0_1", "'off'", "'0'", "'on'"])
async def test_explain_analyze_with_a_literal_counts_as_on(value: str) -> None:
    gate = _gate("postgres", WRITES_BLOCKED)
    assert (await gate.check(f"EXPLAIN (ANALYZE {value}) DELETE FROM t")).refused


@pytest.mark.parametrize("value", ["off", "OFF", "false", "FALSE"])
async def test_explain_analyze_off_in_words_only_explains(value: str) -> None:
    gate = _gate("postgres", WRITES_BLOCKED)
    assert (await gate.check(f"EXPLAIN (ANALYZE {value}) DELETE FROM t WHERE id = 1")).refused \
        is None


async def test_copy_stdio_is_part_of_the_shape() -> None:
    gate = _gate("postgres", SqlPolicy())
    assert (await gate.check("COPY t TO STDOUT")).refused is None
    assert (await gate.check("COPY t TO STDOUT", copy_stdio=False)).refused
