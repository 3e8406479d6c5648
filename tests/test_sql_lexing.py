"""The statement splitter hands its tokens to the lex() that follows: the result must be the
very same as tokenizing the statement again, for any text (what reaches the server is rebuilt
from these tokens)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.sql import lexing
from bastion.sql.lexing import Lexed, lex, split_statements

# Pieces of SQL text, glued in any order: words, literals of every quoting, comments (MySQL's
# executable ones too), parameters, semicolons and blanks, so that splits, comments next to
# semicolons and unterminated quotes all come up.
PIECES = st.sampled_from([
    "SELECT", "select", "abalance", "FROM", "pgbench_accounts", "WHERE", "aid", "=", "1", "42.5",
    "'x'", "'it''s'", "'a;b'", "E'\\n'", '"Col;umn"', "`tick`", "$1", "?", "$$ ; $$", "$q$x$q$",
    "-- c\n", "/* c */", "/*! 1 */", "/*M! 2 */", "#h\n", ";", ";", " ", "  ", "\n", "\t", "(", ")",
    ",", "*", "x'0A'", "b'01'", "BEGIN", "END", "CREATE", "PROCEDURE", "'unterminated", "/* open",
])
TEXTS = st.lists(PIECES, max_size=14).map("".join)


def _shape(lexed: Lexed) -> tuple[object, ...]:
    """Every field of a Lexed, its tokens as plain values (with their comments)."""
    tokens = None if lexed.tokens is None else tuple(
        (t.token_type, t.text, t.start, t.end, tuple(t.comments)) for t in lexed.tokens)
    fields = {f.name: getattr(lexed, f.name) for f in dataclasses.fields(lexed)}
    fields["tokens"] = tokens
    return tuple(sorted(fields.items(), key=lambda item: item[0]))


def _fresh(text: str, dialect: str) -> Lexed:
    """lex() of a copy of the string: a text split_statements did not just return."""
    return lex("".join(list(text)), dialect)


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
@settings(max_examples=600, deadline=None)
@given(text=TEXTS)
def test_the_statement_after_a_split_lexes_as_if_tokenized_again(dialect: str, text: str) -> None:
    for piece in split_statements(text, dialect):
        assert _shape(lex(piece, dialect)) == _shape(_fresh(piece, dialect))


@pytest.mark.parametrize(("text", "reused"), [
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 7;", True),  # pgbench -M simple
    ("SELECT id, name FROM big WHERE id = 5", True),  # PyMySQL
    ("SELECT 1 ;  \n", True),
    ("  SELECT 1;", False),  # blanks first: tokens would start elsewhere
    ("SELECT 1 -- note\n;", False),  # a comment before the semicolon
    ("SELECT 1; -- note", False),  # and after it
    ("SELECT 1; SELECT 2", False),  # two statements
])
def test_which_texts_reuse_the_split_tokens(text: str, reused: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tokenized: list[str] = []
    real = lexing._tokenizer_class

    def counting(dialect: str) -> type[lexing.Tokenizer]:
        base = real(dialect)

        class Counting(base):  # type: ignore[valid-type,misc]
            def tokenize(self, sql: str) -> list[lexing.Token]:
                tokenized.append(sql)
                return super().tokenize(sql)  # type: ignore[no-any-return]

        return Counting

    monkeypatch.setattr(lexing, "_tokenizer_class", counting)
    monkeypatch.setattr(lexing, "_reused", type(lexing._reused)())  # fresh tokenizers
    pieces = split_statements(text, "postgres")
    lexed = [lex(p, "postgres") for p in pieces]
    assert tokenized[0] == text
    assert (len(tokenized) == 1) is reused, tokenized
    assert all(x.ok for x in lexed)
