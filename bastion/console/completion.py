"""Completion in the SQL console: keywords, `\\` commands, and the tables and columns the session's
database account may read.

The names come from the database's catalog as the grant's own account sees it
(information_schema shows a relation or column only to an account with a privilege on it), so a
masked grant is never offered a raw masked column; the engine leaves out the bastion's hidden
lookup columns too. Pure: `Vocabulary` is plain data and `suggest` a function over it, tested without a
terminal; `SqlCompleter` adapts them to prompt_toolkit.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass, field

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

__all__ = ["KEYWORDS", "META_COMMANDS", "SqlCompleter", "Suggestion", "Vocabulary", "suggest"]

KEYWORDS = (
    "ALL", "ALTER", "AND", "AS", "ASC", "BEGIN", "BETWEEN", "BY", "CASE", "CAST", "COALESCE",
    "COMMIT", "COUNT", "CREATE", "CROSS", "DELETE", "DESC", "DISTINCT", "DROP", "ELSE", "END",
    "EXCEPT", "EXISTS", "EXPLAIN", "FALSE", "FETCH", "FIRST", "FROM", "FULL", "GROUP", "HAVING",
    "ILIKE", "IN", "INNER", "INSERT", "INTERSECT", "INTO", "IS", "JOIN", "LATERAL", "LEFT", "LIKE",
    "LIMIT", "MAX", "MIN", "NOT", "NULL", "NULLS", "OFFSET", "ON", "OR", "ORDER", "OUTER", "OVER",
    "PARTITION", "RETURNING", "RIGHT", "ROLLBACK", "SELECT", "SET", "SHOW", "SUM", "TABLE", "THEN",
    "TRUE", "UNION", "UPDATE", "USING", "VALUES", "WHEN", "WHERE", "WITH",
)
NAMES_WAIT = 3.0  # seconds a Tab waits for the names at the start of a console
META_COMMANDS = {
    "\\?": "this help", "\\d": "describe a table", "\\dt": "list tables",
    "\\format": "table, expanded, csv, tsv or json", "\\q": "quit", "\\x": "expanded display on/off",
}
# After these words a table name comes next.
_TABLE_CONTEXT = frozenset({"from", "join", "into", "update", "table", "describe", "desc", "\\d"})
_WORD = re.compile(r"[\w$.\\?]*$")
_FROM = re.compile(r"\b(?:from|join|update|into)\s+([\w$.]+)(?:\s+(?:as\s+)?(?!(?:where|on|join|"
                   r"left|right|inner|full|cross|group|order|limit|set|using|natural)\b)(\w+))?",
                   re.IGNORECASE)


def _nameable(name: str) -> bool:
    """Names a terminal shows as they are: no control or format characters (escape sequences)."""
    return bool(name) and name.isprintable()


@dataclass(frozen=True)
class Vocabulary:
    """The tables (by schema) and their columns that the session's account may read."""

    tables: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_columns(cls, rows: Iterable[tuple[str, str, str]]) -> Vocabulary:
        """Build from (schema, table, column) rows; names a terminal cannot show are left out."""
        tables: dict[tuple[str, str], list[str]] = {}
        for schema, table, column in rows:
            if not (_nameable(schema) and _nameable(table)):
                continue
            columns = tables.setdefault((schema, table), [])
            if _nameable(column):
                columns.append(column)
        return cls({key: tuple(cols) for key, cols in tables.items()})

    def table_names(self) -> list[str]:
        """Every readable table's name, once."""
        return sorted({name for _, name in self.tables})

    def schemas(self) -> list[str]:
        """The schemas holding a readable table."""
        return sorted({schema for schema, _ in self.tables})

    def columns_of(self, name: str) -> list[str]:
        """The columns of a table named `name` or `schema.name` (any schema when unqualified)."""
        schema, _, table = name.rpartition(".")
        out: dict[str, None] = {}
        for (s, t), columns in self.tables.items():
            if t.lower() == table.lower() and (not schema or s.lower() == schema.lower()):
                out.update(dict.fromkeys(columns))
        return list(out)


@dataclass(frozen=True)
class Suggestion:
    """One completion: the text to insert in place of the word typed, and what it is."""

    text: str
    kind: str  # "keyword", "table", "schema", "column" or "command"


def _cased(keyword: str, typed: str) -> str:
    return keyword.lower() if typed and typed == typed.lower() else keyword


def suggest(text: str, vocabulary: Vocabulary, statement: str | None = None) -> tuple[str, list[Suggestion]]:
    """The word before the cursor at the end of `text`, and what may replace it; `statement` is
    the whole input (tables named after the cursor count too)."""
    statement = text if statement is None else statement
    word = _WORD.search(text)
    typed = word.group() if word else ""
    before = text[: len(text) - len(typed)]
    if typed.startswith("\\"):
        if before.strip():
            return typed, []
        return typed, [Suggestion(c, "command") for c in META_COMMANDS if c.startswith(typed)]
    lowered = typed.lower()
    if "." in typed:
        qualifier, _, part = typed.rpartition(".")
        aliases = _aliases(statement)
        found = [Suggestion(f"{qualifier}.{c}", "column")
                 for c in vocabulary.columns_of(aliases.get(qualifier.lower(), qualifier))
                 if c.lower().startswith(part.lower())]
        found += [Suggestion(f"{s}.{t}", "table") for s, t in sorted(vocabulary.tables)
                  if s.lower() == qualifier.lower() and t.lower().startswith(part.lower())]
        return typed, found
    previous = before.split()[-1].lower() if before.split() else ""
    tables = [Suggestion(t, "table") for t in vocabulary.table_names()
              if t.lower().startswith(lowered)]
    keywords = [Suggestion(_cased(k, typed), "keyword") for k in KEYWORDS
                if k.lower().startswith(lowered)]
    if previous in _TABLE_CONTEXT:
        schemas = [Suggestion(s + ".", "schema") for s in vocabulary.schemas()
                   if s.lower().startswith(lowered)]
        return typed, tables + schemas
    named = [vocabulary.columns_of(name) for name in dict.fromkeys(_aliases(statement).values())]
    pool = [c for columns in named for c in columns] if named else [
        c for columns in vocabulary.tables.values() for c in columns]
    columns = [Suggestion(c, "column") for c in dict.fromkeys(pool) if c.lower().startswith(lowered)]
    if not typed:
        return typed, columns if named else keywords
    return typed, columns + tables + keywords


def _aliases(text: str) -> dict[str, str]:
    """The relations a statement names after FROM/JOIN/UPDATE/INTO, by alias and by name."""
    out: dict[str, str] = {}
    for match in _FROM.finditer(text):
        name, alias = match.group(1), match.group(2)
        out[name.lower()] = name
        out[name.rpartition(".")[2].lower()] = name
        if alias:
            out[alias.lower()] = name
    return out


class SqlCompleter(Completer):
    """prompt_toolkit's view of `suggest`, over a vocabulary that is refreshed as the catalog is."""

    def __init__(self, vocabulary: Vocabulary | None = None) -> None:
        self.vocabulary = vocabulary or Vocabulary()
        self.ready = asyncio.Event()  # the names were read (or could not be)
        if vocabulary is not None:
            self.ready.set()

    def learned(self, vocabulary: Vocabulary | None) -> None:
        """Offer these names from now on (None: the reading failed, keep what there is)."""
        if vocabulary is not None:
            self.vocabulary = vocabulary
        self.ready.set()

    async def get_completions_async(self, document: Document,
                                    complete_event: CompleteEvent) -> AsyncGenerator[Completion, None]:
        """A Tab pressed while the names are still being read waits for them, briefly."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), NAMES_WAIT)
        for completion in self.get_completions(document, complete_event):
            yield completion

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        """Completions for the word before the cursor."""
        typed, found = suggest(document.text_before_cursor, self.vocabulary, document.text)
        for item in found:
            yield Completion(item.text, start_position=-len(typed), display_meta=item.kind)
