"""SQL text at the token level (sqlglot's tokenizer): split, clean, redact, find names.

The text sent to the server is rebuilt from the tokens the bastion analysed, with comments
removed, so nothing the analysis took for a comment can run on the server. MySQL executable
comments (`/*! … */`, `/*M! … */`) are flagged so that they are refused rather than dropped.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field

from sqlglot.dialects import Dialect
from sqlglot.tokens import Token, Tokenizer, TokenType

from bastion.sql.detectors import scrub_text

__all__ = ["DIALECTS", "STRING_LITERALS", "Lexed", "lex", "redact_fallback", "split_statements"]

# sqlglot logs a warning for every statement it hands back as an opaque Command; the bastion
# handles those itself.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

DIALECTS = {"postgres": "postgres", "mysql": "mysql"}

LITERALS = frozenset(
    getattr(TokenType, name)
    for name in ("STRING", "NUMBER", "NATIONAL_STRING", "BIT_STRING", "HEX_STRING", "BYTE_STRING",
                 "RAW_STRING", "HEREDOC_STRING", "UNICODE_STRING")
    if hasattr(TokenType, name)
)
# Plain quoted strings (no hex, bit or byte literals).
STRING_LITERALS = frozenset(getattr(TokenType, name) for name in ("STRING", "NATIONAL_STRING")
                            if hasattr(TokenType, name))
_EXECUTABLE_COMMENT = re.compile(r"/\*M?!")
_NUMBER, _PARAMETER, _L_PAREN = TokenType.NUMBER, TokenType.PARAMETER, TokenType.L_PAREN
_COMPOUND = frozenset({"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT"})


@dataclass(frozen=True)
class Lexed:
    """One statement, tokenized."""

    text: str
    dialect: str
    tokens: tuple[Token, ...] | None
    clean: str
    redacted: str
    literals: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    functions: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    executable_comment: bool = False
    spans: tuple[tuple[int, int], ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """Whether the text could be tokenized."""
        return self.tokens is not None

    def word(self, i: int) -> str:
        """The i-th keyword or name of the statement, upper-cased ("" past the end)."""
        return self.words[i] if i < len(self.words) else ""

    def rest_after(self, token_index: int) -> str:
        """The clean text from the token at `token_index` on."""
        assert self.tokens is not None
        start = self.spans[token_index][0] if token_index < len(self.spans) else len(self.clean)
        return self.clean[start:]


def _tokenizer_class(dialect: str) -> type[Tokenizer]:
    """sqlglot's tokenizer for a dialect, minus its "command" shortcut (which would swallow the
    rest of e.g. EXPLAIN, PREPARE or CALL as one opaque string, hiding it from the analysis)."""
    if dialect not in _TOKENIZERS:
        base = Dialect.get_or_raise(DIALECTS[dialect]).tokenizer_class
        _TOKENIZERS[dialect] = type(f"Bastion{base.__name__}", (base,), {"COMMANDS": set()})
    return _TOKENIZERS[dialect]


_TOKENIZERS: dict[str, type[Tokenizer]] = {}
# One tokenizer per dialect and thread, reused: building one costs more than tokenizing a
# short statement, and tokenize() starts from a clean state each call.
_reused = threading.local()


def _tokenize(sql: str, dialect: str) -> list[Token] | None:
    split: tuple[str, str, list[Token]] | None = _reused.__dict__.pop("split", None)
    if split is not None and split[1] is sql and split[0] == dialect:
        return list(split[2])  # the statement split_statements just returned (see there)
    tokenizers: dict[str, Tokenizer] = _reused.__dict__.setdefault("by_dialect", {})
    tokenizer = tokenizers.get(dialect)
    if tokenizer is None:
        tokenizer = tokenizers[dialect] = _tokenizer_class(dialect)()
    try:
        return list(tokenizer.tokenize(sql))
    except Exception:
        return None


def split_statements(sql: str, dialect: str) -> list[str]:
    """Split text into statements at top-level semicolons (MySQL compound bodies stay whole)."""
    tokens = _tokenize(sql, dialect)
    if tokens is None:
        text = sql.strip().rstrip(";").strip()
        return [text] if text else []
    whole = _whole_statement(sql, tokens)
    if whole is not None:
        # One statement from the first character, ended by the text or by a last semicolon with
        # only blanks around it: its tokens are these, so the lex() that follows reuses them
        # instead of tokenizing the same characters again (the same string object, once).
        piece, body = whole
        _reused.split = (dialect, piece, body)
        return [piece]
    pieces: list[str] = []
    current: list[Token] = []
    depth = 0
    compound = False
    for i, tok in enumerate(tokens):
        if tok.token_type == TokenType.SEMICOLON and depth == 0:
            if current:
                pieces.append(sql[current[0].start : current[-1].end + 1])
            current, compound = [], False
            continue
        current.append(tok)
        upper = tok.text.upper()
        starts_create = current[0].text.upper() == "CREATE"
        if dialect == "mysql" and len(current) <= 12 and upper in _COMPOUND and starts_create:
            compound = True
        if compound and tok.token_type not in LITERALS:
            if upper in ("BEGIN", "CASE"):
                depth += 1
            elif upper == "END":
                following = tokens[i + 1].text.upper() if i + 1 < len(tokens) else ""
                if following not in ("IF", "LOOP", "WHILE", "REPEAT"):
                    depth = max(0, depth - 1)
    if current:
        pieces.append(sql[current[0].start : current[-1].end + 1])
    return [p for p in (piece.strip() for piece in pieces) if p]


def _whole_statement(sql: str, tokens: list[Token]) -> tuple[str, list[Token]] | None:
    """(the statement, its tokens) when `sql` is exactly one statement whose tokens would be
    the same tokenized alone: it starts at the first character and nothing but blanks follows
    its last token, or a semicolon that is the last token (so no comment is attached to a token
    differently and no token ends differently). None otherwise."""
    if not tokens or tokens[0].start != 0:
        return None
    body = tokens[:-1] if tokens[-1].token_type == TokenType.SEMICOLON else tokens
    if not body or any(t.token_type == TokenType.SEMICOLON for t in body):
        return None
    end = body[-1].end + 1
    after = sql[end:]
    if body is not tokens:
        semicolon = tokens[-1].start
        after = sql[end:semicolon] + sql[semicolon + 1:]
    if after and not after.isspace():
        return None
    return sql[:end], body


def lex(text: str, dialect: str) -> Lexed:
    """Tokenize one statement; an untokenizable one gets a conservatively redacted text."""
    tokens = _tokenize(text, dialect)
    if tokens is None:
        return Lexed(text=text, dialect=dialect, tokens=None, clean=text,
                     redacted=redact_fallback(text, dialect))
    clean: list[str] = []
    redacted: list[str] = []
    spans: list[tuple[int, int]] = []
    literals: list[str] = []
    words: list[str] = []
    functions: set[str] = set()
    names: set[str] = set()
    executable = False
    pos = 0
    length = 0
    # One pass, looking back rather than ahead: a word followed by "(" is a function; a number
    # right after a parameter sign ($1, :1) is part of the parameter, not a literal.
    word: str | None = None  # the previous token, lower case, when it was not a literal
    parameter_end = -1  # where the previous token ended, when it was a parameter sign
    for tok in tokens:
        start = tok.start
        kind = tok.token_type
        if start > pos:
            gap = text[pos:start]
            if not gap.isspace():
                executable = executable or bool(_EXECUTABLE_COMMENT.search(gap))
                gap = " "
            clean.append(gap)
            redacted.append(gap)
            length += len(gap)
        pos = tok.end + 1
        raw = text[start:pos]
        clean.append(raw)
        spans.append((length, length + len(raw)))
        length += len(raw)
        if kind is _L_PAREN and word is not None:
            functions.add(word)
        if kind in LITERALS and not (kind is _NUMBER and parameter_end == start):
            literals.append(tok.text)
            redacted.append("?")
            word, parameter_end = None, -1
            continue
        redacted.append(raw)
        words.append(tok.text.upper())
        word = tok.text.lower()
        names.add(word)
        parameter_end = pos if kind is _PARAMETER else -1
    tail = text[pos:]
    if tail and not tail.isspace():
        executable = executable or bool(_EXECUTABLE_COMMENT.search(tail))
    return Lexed(
        text=text,
        dialect=dialect,
        tokens=tuple(tokens),
        clean="".join(clean).strip(),
        redacted=scrub_text("".join(redacted).strip()),
        literals=tuple(literals),
        words=tuple(words),
        functions=frozenset(functions),
        names=frozenset(names),
        executable_comment=executable,
        spans=tuple(spans),
    )


_FALLBACK = re.compile(
    r"""--[^\n]*|\#[^\n]*|/\*.*?(?:\*/|\Z)      # comments (dropped)
    |\$(?P<tag>[A-Za-z_]*)\$.*?(?:\$(?P=tag)\$|\Z) # dollar-quoted strings
    |[eEnNbBxXuU]?&?'(?:[^'\\]|\\.|'')*(?:'|\Z)    # quoted strings, unterminated ones to the end
    |"(?:[^"\\]|\\.|"")*(?:"|\Z)
    |\b\d[\d.eE+-]*""",
    re.VERBOSE | re.DOTALL,
)


def redact_fallback(text: str, dialect: str) -> str:
    """Redact text the tokenizer refused: every quoted span, number and comment goes."""

    def replace(m: re.Match[str]) -> str:
        token = m.group()
        if token.startswith(("--", "#", "/*")):
            return " "
        if token.startswith('"') and dialect == "postgres":
            return token  # an identifier in PostgreSQL
        return "?"

    return scrub_text(_FALLBACK.sub(replace, text).strip())
