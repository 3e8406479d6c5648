"""The statement gate of a native-client session: what the relay lets through, and as what.

A relayed statement (a PostgreSQL Query or Parse, a MySQL COM_QUERY or COM_STMT_PREPARE) passes
the same checks as a console statement: the target's guardrails (bastion.sql.guardrails) and the
lookup rewrite of equality on masked columns, counted against the grant's budget. The database
masks (bastion.db); the gate is the second net, and what makes refusals clear.

What the server runs is the comment-free text the bastion analysed, never the client's own
bytes: a statement that reads one way to the bastion and another to the server cannot pass.

Analysing a statement costs about half a millisecond (sqlglot), and drivers send the same
statement shapes again and again with new literals, so verdicts are cached by the statement's
literal-free form — except statements whose verdict can depend on a literal's value or on the
session's state (SET, set_config, pg_settings, PREPARE/EXECUTE, cursors, DO, CALL), which are
analysed every time.

Even tokenizing costs a busy relay a fifth of its time (pgbench's `SELECT abalance FROM
pgbench_accounts WHERE aid = 48213;`, a driver's point select), so a *plain* text skips it: one
statement made only of ASCII letters, digits, `_`, blanks and `,.=<>()*+` (no quote, comment,
parameter sign, `-` or `/`), at most a final semicolon. In such a text every digit run that stands
alone is a number and nothing else, so two plain texts that differ only in those runs lex to the
same literal-free form and names: the first one is analysed as above, and the others of its shape
reuse what it gave (the text sent is their own, without the semicolon).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from bastion.sql.analysis import Analysis, analyse
from bastion.sql.engine import Budget
from bastion.sql.guardrails import (
    ALWAYS_REFUSED_FUNCTIONS,
    READ_ONLY_REFUSED_FUNCTIONS,
    check_guardrails,
    prepared_key,
)
from bastion.sql.lexing import lex, split_statements
from bastion.sql.lookups import Lookups
from bastion.sql.policy import SqlPolicy
from bastion.sql.scrub import scrub_message

__all__ = ["Checked", "StatementGate"]

CACHED_VERDICTS = 2048
# Longer statements are analysed every time rather than kept as cache keys (2048 keys of up to a
# MiB each would let one session hold gigabytes); drivers' repeated statements are short.
CACHED_TEXT = 4096
# A plain text (see above): ASCII only, so that \b and the digit runs mean what they say.
_PLAIN = re.compile(r"[A-Za-z0-9_ \t\r\n,.=<>()*+]*;?[ \t\r\n]*", re.ASCII)
_NUMBER = re.compile(r"\b[0-9]+\b", re.ASCII)
# Longer statement texts are refused rather than analysed (a guard against CPU exhaustion).
MAX_STATEMENT = 1 << 20


@dataclass(frozen=True)
class Checked:
    """One statement after the gate."""

    redacted: str  # for the query log and the recording: literals replaced by ?
    kind: str  # select, insert, … as the analysis names it
    text: str  # what to send to the server (comment-free; lookups rewritten)
    refused: str | None = None  # why the bastion refused it (then nothing is sent)
    hashes: tuple[str, ...] = ()  # lookup hashes the server must be told of before it runs
    names: frozenset[str] = frozenset()  # the statement's own names (kept when messages are scrubbed)


@dataclass(frozen=True)
class _Verdict:
    kind: str
    refused: str | None
    analysis: Analysis | None  # kept only for PREPARE, so a later EXECUTE is checked


class StatementGate:
    """Checks one session's statements; keeps what SQL-level PREPARE statements will run."""

    def __init__(self, policy: SqlPolicy, dialect: str, lookups: Lookups | None,
                 budget: Budget, user_functions: frozenset[str] = frozenset()) -> None:
        self.policy = policy
        self.dialect = dialect
        self.lookups = lookups
        self.budget = budget
        self.user_functions = user_functions
        self.named: set[str] = set()  # lookup hashes named to the server so far
        self._verdicts: OrderedDict[tuple[str, bool, bool, bool], _Verdict] = OrderedDict()
        # A plain text's shape (numbers replaced) → (redacted, names, verdict) of the first text
        # of that shape, when its verdict was cacheable.
        self._plain: OrderedDict[tuple[str, bool], tuple[str, frozenset[str], _Verdict]] = \
            OrderedDict()
        self._prepared: dict[str, Analysis] = {}

    def split(self, sql: str) -> list[str]:
        """The statements of a multi-statement text (as the server will split it)."""
        if _PLAIN.fullmatch(sql):
            statement = sql.strip().removesuffix(";").rstrip()
            return [statement] if statement else []
        return split_statements(sql, self.dialect)

    async def check(self, sql: str, *, copy_stdio: bool = True) -> Checked:
        """Check one statement (already split). With `copy_stdio`, COPY to and from the client
        is allowed (the relay carries COPY data; COPY to or from server files never is)."""
        if len(sql) > MAX_STATEMENT:
            return Checked(redacted=sql[:60] + "…", kind="other", text="",
                           refused=f"statements longer than {MAX_STATEMENT} characters are "
                                   "refused by the bastion")
        shape = (_NUMBER.sub("?", sql), copy_stdio) \
            if len(sql) <= CACHED_TEXT and _PLAIN.fullmatch(sql) else None
        known = self._plain.get(shape) if shape is not None else None
        if shape is not None and known is not None:
            self._plain.move_to_end(shape)
            redacted, names, verdict = known
            clean = sql.strip()
        else:
            redacted, names, clean, verdict = self._analysed(sql, copy_stdio, shape)
        if "\x00" in sql:
            # libpq and the servers end the text at a NUL: they would run less than was checked.
            return Checked(redacted, verdict.kind, "", "The statement contains a NUL byte.",
                           names=names)
        if verdict.refused is not None:
            return Checked(redacted, verdict.kind, "",
                           scrub_message(verdict.refused, names), names=names)
        if verdict.analysis is not None and verdict.analysis.name:
            self._prepared[prepared_key(verdict.analysis.kind, verdict.analysis.name)] = \
                verdict.analysis
        text = clean
        hashes: list[str] = []
        if self.lookups is not None:
            text, hashes = self.lookups.rewrite(text, self.dialect)
        if hashes:
            new = sorted(set(hashes) - self.named)
            spent, used = await self.budget.spend(len(new)) if new else (True, 0)
            if not spent:
                return Checked(redacted, verdict.kind, "",
                               f"masked data: this access grant has compared masked columns with "
                               f"{used} values, and the limit is {self.budget.limit} per grant "
                               "(a guard against guessing values); ask for a new grant to go on.",
                               names=names)
            self.named.update(new)
        return Checked(redacted, verdict.kind, text, None, tuple(hashes), names)

    def _analysed(self, sql: str, copy_stdio: bool, shape: tuple[str, bool] | None
                  ) -> tuple[str, frozenset[str], str, _Verdict]:
        """Lex a statement and judge it (or take the verdict of its literal-free form): its
        redacted text, names, clean text and verdict; a cacheable verdict of a plain text is
        kept for its shape too."""
        lexed = lex(sql, self.dialect)
        key = (lexed.redacted, lexed.executable_comment, lexed.ok, copy_stdio)
        verdict = self._verdicts.get(key)
        if verdict is not None:
            self._verdicts.move_to_end(key)
        else:
            analysis = analyse(sql, self.dialect)
            verdict = self._judge(analysis, copy_stdio)
            if not _cacheable(analysis) or len(lexed.redacted) > CACHED_TEXT:
                return lexed.redacted, lexed.names, lexed.clean, verdict
            self._verdicts[key] = verdict
            if len(self._verdicts) > CACHED_VERDICTS:
                self._verdicts.popitem(last=False)
        # Cached verdicts only (so of a text that could be tokenized), and no MySQL executable
        # comment (a plain text cannot hold one; checked all the same).
        if shape is not None and lexed.ok and not lexed.executable_comment:
            self._plain[shape] = (lexed.redacted, lexed.names, verdict)
            if len(self._plain) > CACHED_VERDICTS:
                self._plain.popitem(last=False)
        return lexed.redacted, lexed.names, lexed.clean, verdict

    def naming(self) -> str:
        """The statement that tells the server every lookup hash this session has named."""
        return Lookups.naming(sorted(self.named), self.dialect)

    def _judge(self, analysis: Analysis, copy_stdio: bool) -> _Verdict:
        direction = _copy_direction(analysis) if copy_stdio else None
        if direction is not None:
            refused = self._copy_refusal(analysis, direction)
            inner = _copy_query(analysis)
            if refused is None and inner is not None:
                # COPY (query) TO STDOUT runs its query: the query passes the guardrails too.
                refused = check_guardrails(analyse(inner, self.dialect), self.policy,
                                           self.user_functions, self._prepared.get)
        else:
            refused = check_guardrails(analysis, self.policy, self.user_functions,
                                       self._prepared.get)
        stateful = analysis.kind in ("prepare", "execute", "declare", "fetch", "deallocate")
        return _Verdict(analysis.kind, refused, analysis if stateful else None)

    def _copy_refusal(self, analysis: Analysis, direction: str) -> str | None:
        """COPY to or from the client: the functions it calls and what it writes."""
        functions = analysis.functions
        if bad := sorted(functions & ALWAYS_REFUSED_FUNCTIONS):
            return f"{bad[0]}() reads or writes outside the database and is not allowed."
        blocked = self.policy.blocked_statements
        if "copy" in blocked or (direction == "in" and "insert" in blocked):
            return "COPY statements are blocked on this target."
        if self.policy.read_only:
            if direction == "in":
                return "This target is read-only: COPY … FROM STDIN writes to a table."
            if bad := sorted(functions & (READ_ONLY_REFUSED_FUNCTIONS | self.user_functions)):
                return f"This target is read-only: {bad[0]}() is not allowed."
        return None


# Statements whose verdict may depend on a literal's value (settings, set_config's name) or on
# the session's state (prepared statements, cursors) are analysed every time.
_UNCACHED_KINDS = frozenset({"set", "reset", "prepare", "execute", "declare", "fetch",
                             "deallocate", "do", "call", "other"})


def _cacheable(analysis: Analysis) -> bool:
    return (analysis.lexed.ok and analysis.kind not in _UNCACHED_KINDS
            and not any(a.kind in _UNCACHED_KINDS for a in analysis.chain())
            and "set_config" not in analysis.functions
            and "pg_settings" not in analysis.lexed.names)


_COPY_QUERY = re.compile(r"(?is)^\s*COPY\s*\((.*)\)\s*TO\s+STDOUT\b")


def _copy_query(analysis: Analysis) -> str | None:
    """The query of `COPY (query) TO STDOUT` (None for COPY of a table)."""
    found = _COPY_QUERY.match(analysis.lexed.clean)
    return found.group(1) if found else None


def _copy_direction(analysis: Analysis) -> str | None:
    """"out" for COPY … TO STDOUT, "in" for COPY … FROM STDIN (PostgreSQL); None otherwise."""
    if analysis.kind != "copy" or not analysis.lexed.ok:
        return None
    words = [w.upper() for w in analysis.lexed.words]
    if "PROGRAM" in words:
        return None
    for i, word in enumerate(words[:-1]):
        if word == "TO" and words[i + 1] == "STDOUT":
            return "out"
        if word == "FROM" and words[i + 1] == "STDIN":
            return "in"
    return None
