"""What a statement is: its kind, what it would change, what it touches, and its parse tree.

Kinds come from the statement's first keywords (sqlglot misreads some commands, e.g. `SAVEPOINT a`
as an alias), refined by the parse tree where sqlglot understands the statement. Wrappers
(EXPLAIN, PREPARE, DECLARE … CURSOR, MariaDB's ANALYZE <statement>) are unwrapped and their inner
statement is analysed like any other. This module does no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from bastion.sql.lexing import DIALECTS, LITERALS, STRING_LITERALS, Lexed, lex

__all__ = ["READ_KINDS", "Analysis", "analyse"]

FIRST_WORD = {
    "SELECT": "select", "WITH": "select", "VALUES": "select", "TABLE": "select",
    "INSERT": "insert", "REPLACE": "insert", "UPDATE": "update", "DELETE": "delete", "MERGE": "merge",
    "CREATE": "create", "ALTER": "alter", "RENAME": "alter", "DROP": "drop", "TRUNCATE": "truncate",
    "GRANT": "grant", "REVOKE": "revoke", "COPY": "copy", "CALL": "call", "DO": "do",
    "SET": "set", "RESET": "set", "LOCK": "lock", "UNLOCK": "lock", "VACUUM": "vacuum",
    "ANALYZE": "analyze", "ANALYSE": "analyze", "LOAD": "load",
    "BEGIN": "begin", "START": "begin", "COMMIT": "commit", "END": "commit",
    "ROLLBACK": "rollback", "ABORT": "rollback", "SAVEPOINT": "savepoint", "RELEASE": "release",
    "SHOW": "show", "EXPLAIN": "explain", "DESCRIBE": "describe", "DESC": "describe",
    "PREPARE": "prepare", "EXECUTE": "execute", "DEALLOCATE": "deallocate", "DECLARE": "declare",
    "FETCH": "fetch", "MOVE": "fetch", "CLOSE": "close", "USE": "use",
}
# Statements that only read (the read-only guardrail allows these, subject to further checks).
READ_KINDS = frozenset({"select", "show", "explain", "describe", "begin", "commit", "rollback",
                        "savepoint", "release", "use", "prepare", "execute", "deallocate",
                        "declare", "fetch", "close", "set"})
_STATEMENT_STARTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "TABLE", "VALUES",
                     "MERGE", "(")
_ANALYZE_STARTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "FORMAT", "(")
_WRITE_NODES: tuple[tuple[type[exp.Expression], str], ...] = (
    (exp.Insert, "insert"), (exp.Update, "update"), (exp.Delete, "delete"), (exp.Merge, "merge"),
)
_PARSEABLE = (exp.Query, exp.Values, exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create,
              exp.Alter, exp.Set)
_SET_ITEM = re.compile(
    r"^(?:(?:SESSION|LOCAL|GLOBAL|PERSIST|PERSIST_ONLY)\s*)?(@@(?:SESSION|GLOBAL|LOCAL)?\.?)?(@)?"
    r"[`\"]?([A-Za-z_][\w$]*)", re.IGNORECASE)


@dataclass
class Analysis:
    """Everything the guardrails need to know about one statement."""

    lexed: Lexed
    kind: str
    kinds: frozenset[str]
    ast: exp.Expression | None = None
    inner: Analysis | None = None
    explain_analyze: bool = False
    name: str | None = None
    prepare_from_variable: bool = False
    locks: bool = False
    into: str | None = None
    missing_where: str | None = None
    set_names: tuple[str, ...] = ()
    set_items: tuple[str, ...] = ()  # each SET item's text (`sql_mode = concat(…)`), compact
    set_global: bool = False
    read_write: bool = False
    code: bool = False
    extra_functions: frozenset[str] = field(default=frozenset())

    @property
    def parsed(self) -> bool:
        """Whether sqlglot understood the statement (its tree is available)."""
        return self.ast is not None

    @property
    def functions(self) -> frozenset[str]:
        """Names of every function called, including in wrapped statements (lower case)."""
        names = self.lexed.functions | self.extra_functions
        return names | self.inner.functions if self.inner else names

    @property
    def words(self) -> frozenset[str]:
        """Every keyword and name in the statement, lower case (including wrapped statements)."""
        names = self.lexed.names
        return names | self.inner.words if self.inner else names

    def chain(self) -> list[Analysis]:
        """This statement and the ones it wraps (EXPLAIN, PREPARE, DECLARE), outermost first."""
        return [self, *self.inner.chain()] if self.inner else [self]

    def innermost(self) -> Analysis:
        """The statement that actually runs (the inner statement of EXPLAIN/PREPARE/DECLARE)."""
        return self.inner.innermost() if self.inner else self


@lru_cache(maxsize=1024)
def analyse(text: str, dialect: str) -> Analysis:
    """Analyse one statement (already split). Cached: consoles repeat statements, and nothing
    changes an Analysis once it is made."""
    return _analyse(lex(text, dialect), dialect, depth=0)


def _words_from(lexed: Lexed) -> list[str]:
    words = list(lexed.words)
    while words and words[0] == "(":
        words.pop(0)
    return words


def _analyse(lexed: Lexed, dialect: str, depth: int) -> Analysis:
    words = _words_from(lexed)
    first = words[0] if words else ""
    second = words[1] if len(words) > 1 else ""
    kind = FIRST_WORD.get(first, "other")
    if not lexed.ok or not words:
        return Analysis(lexed=lexed, kind=kind if words else "other", kinds=frozenset({kind}))
    if depth < 3:
        if kind == "explain" or (kind == "describe" and dialect == "mysql") or (
            kind == "analyze" and dialect == "mysql" and second in _ANALYZE_STARTS
        ):
            return _explain(lexed, dialect, depth, first)
        if kind == "prepare":
            return _prepare(lexed, dialect, depth)
        if kind == "declare" and dialect == "postgres":
            return _declare(lexed, dialect, depth)
    if kind == "drop" and second == "PREPARE":
        kind = "deallocate"
    if kind in ("execute", "fetch", "close", "deallocate"):
        return Analysis(lexed=lexed, kind=kind, kinds=frozenset({kind}), name=_object_name(lexed, kind))
    if kind == "do" and dialect == "mysql":
        # MySQL's DO evaluates expressions like a SELECT whose result is thrown away.
        return _with_tree(Analysis(lexed=lexed, kind="do", kinds=frozenset({"do"})),
                          "SELECT " + lexed.rest_after(1), dialect)
    analysis = Analysis(lexed=lexed, kind=kind, kinds=frozenset({kind}))
    analysis.read_write = _has_sequence(words, "READ", "WRITE")
    analysis.code = _defines_code(words)
    if kind == "set":
        analysis.set_names, analysis.set_global, analysis.set_items = _set_names(lexed, first)
    if kind in ("select", "insert", "update", "delete", "merge", "create", "alter", "set"):
        text = lexed.clean
        if first == "REPLACE":
            text = "INSERT " + lexed.rest_after(_token_index(lexed, 1))
        return _with_tree(analysis, text, dialect)
    return analysis


def _token_index(lexed: Lexed, word_index: int) -> int:
    """Index in lexed.tokens of the word_index-th non-literal token."""
    assert lexed.tokens is not None
    seen = -1
    for i, tok in enumerate(lexed.tokens):
        if tok.token_type not in LITERALS:
            seen += 1
            if seen == word_index:
                return i
    return len(lexed.tokens)


def _with_tree(analysis: Analysis, text: str, dialect: str) -> Analysis:
    tree = _parse(text, dialect)
    if tree is None:
        return analysis
    analysis.ast = tree
    for node_type, kind in ((exp.Insert, "insert"), (exp.Update, "update"), (exp.Delete, "delete"),
                            (exp.Merge, "merge")):
        if isinstance(tree, node_type) and analysis.kind == "select":
            analysis.kind = kind  # WITH … INSERT/UPDATE/DELETE
    kinds = set(analysis.kinds) | {analysis.kind}
    if analysis.kind != "select" and "select" in kinds and not isinstance(tree, exp.Query | exp.Values):
        kinds.discard("select")
    for node_type, kind in _WRITE_NODES:
        if any(True for _ in tree.find_all(node_type)):
            kinds.add(kind)
    for select in tree.find_all(exp.Select):
        if select.args.get("locks"):
            analysis.locks = True
        into = select.args.get("into")
        if isinstance(into, exp.Into):
            target = into.this
            analysis.into = "table" if isinstance(target, exp.Table) and isinstance(
                target.this, exp.Identifier) else "variable"
    if analysis.into == "table":
        kinds.add("create")
    analysis.kinds = frozenset(kinds)
    analysis.missing_where = _missing_where(tree)
    return analysis


def _parse(text: str, dialect: str) -> exp.Expression | None:
    try:
        trees = [t for t in sqlglot.parse(text, read=DIALECTS[dialect]) if t is not None]
    except Exception:
        return None
    if len(trees) != 1 or not isinstance(trees[0], _PARSEABLE):
        return None
    return trees[0]


def _missing_where(tree: exp.Expression) -> str | None:
    nodes = [n for n in tree.find_all(exp.Update, exp.Delete) if not isinstance(n.parent, exp.When)]
    for node in nodes:
        verb = "UPDATE" if isinstance(node, exp.Update) else "DELETE"
        where = node.args.get("where")
        if where is None:
            return f"{verb} without a WHERE clause would change every row"
        condition = where.this
        if not any(True for _ in condition.find_all(exp.Column)):
            return f"{verb} with a WHERE clause that does not depend on the row would change every row"
        branches = list(condition.flatten()) if isinstance(condition, exp.Or) else []
        if any(not any(True for _ in b.find_all(exp.Column)) for b in branches):
            return (f"{verb} whose WHERE clause has an OR branch that is always the same would change "
                    "every row")
    return None


def _has_sequence(words: list[str], *sequence: str) -> bool:
    n = len(sequence)
    return any(tuple(words[i : i + n]) == sequence for i in range(len(words) - n + 1))


_CODE_OBJECTS = frozenset({"FUNCTION", "PROCEDURE", "TRIGGER", "RULE", "EVENT", "OPERATOR", "CAST",
                           "AGGREGATE", "POLICY", "EXTENSION", "LANGUAGE", "TRANSFORM"})


def _defines_code(words: list[str]) -> bool:
    """CREATE/ALTER of functions, procedures, triggers, rules, policies…: code the bastion cannot read."""
    if not words or words[0] not in ("CREATE", "ALTER"):
        return False
    head = words[1:12]
    if "TABLE" in head[:3] or "VIEW" in head[:4] or "INDEX" in head[:4]:
        return False
    return any(w in _CODE_OBJECTS for w in head)


def _set_names(lexed: Lexed, first: str) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
    """The parameters a SET or RESET statement changes (lower case; user variables as "@name")."""
    assert lexed.tokens is not None
    items: list[list[Token]] = [[]]
    depth = 0
    for tok in lexed.tokens[1:]:
        if tok.token_type == TokenType.L_PAREN:
            depth += 1
        elif tok.token_type == TokenType.R_PAREN:
            depth -= 1
        elif tok.token_type == TokenType.COMMA and depth == 0 and first == "SET":
            items.append([])
            continue
        items[-1].append(tok)
    names: list[str] = []
    texts: list[str] = []
    global_ = False
    text = lexed.clean
    for item in items:
        if not item:
            continue
        start = lexed.spans[lexed.tokens.index(item[0])][0]
        end = lexed.spans[lexed.tokens.index(item[-1])][1]
        texts.append(re.sub(r"\s+", " ", text[start:end + 1]))
        raw = re.sub(r"\s+", " ", text[start:start + 200])
        compact = raw.replace(" . ", ".").replace("@ @", "@@").replace("@ ", "@")
        if re.match(r"(?i)(GLOBAL\b|@@GLOBAL)", compact):
            global_ = True
        m = _SET_ITEM.match(compact)
        if not m:
            names.append("?")
            continue
        name = m.group(3).lower()
        names.append("@" + name if m.group(2) and not m.group(1) else name)
    return tuple(names), global_, tuple(texts)


def _object_name(lexed: Lexed, kind: str) -> str | None:
    """The prepared statement or cursor an EXECUTE/FETCH/CLOSE/DEALLOCATE names ("all" for ALL)."""
    assert lexed.tokens is not None
    names = [t for t in lexed.tokens if t.token_type not in LITERALS and t.token_type not in (
        TokenType.L_PAREN, TokenType.R_PAREN, TokenType.COMMA, TokenType.SEMICOLON)]
    if kind == "execute":
        return _name(names[1], lexed.dialect) if len(names) > 1 else None
    if kind == "fetch":
        candidates = [t for t in names[1:] if t.token_type in (TokenType.VAR, TokenType.IDENTIFIER)]
        return _name(candidates[-1], lexed.dialect) if candidates else None
    words = [t for t in names[1:] if t.text.upper() != "PREPARE"]
    return _name(words[0], lexed.dialect) if words else None


def _name(token: Token, dialect: str) -> str:
    """A prepared statement's or cursor's name as the server keys it: PostgreSQL folds only
    unquoted names ("P" and p are two statements), MySQL folds all."""
    text = str(token.text)
    if dialect == "postgres" and token.token_type == TokenType.IDENTIFIER:
        return text
    return text.lower()


def _explain(lexed: Lexed, dialect: str, depth: int, first: str) -> Analysis:
    assert lexed.tokens is not None
    tokens = lexed.tokens
    i = 1
    analyze = first in ("ANALYZE", "ANALYSE")
    other_session = False
    if dialect == "postgres" and i < len(tokens) and tokens[i].token_type == TokenType.L_PAREN:
        level, j = 0, i
        while j < len(tokens):
            if tokens[j].token_type == TokenType.L_PAREN:
                level += 1
            elif tokens[j].token_type == TokenType.R_PAREN:
                level -= 1
                if level == 0:
                    break
            elif tokens[j].text.upper() in ("ANALYZE", "ANALYSE"):
                # Off only when said with the words FALSE or OFF: a literal (0, '0', 'off', and
                # PostgreSQL 16's 0_1 or 0o1, which the tokenizer reads as 0 and a name) counts
                # as on, so that no verdict depends on a literal's value (verdicts are cached by
                # the statement's literal-free form) and an odd spelling fails closed.
                following = tokens[j + 1] if j + 1 < len(tokens) else None
                analyze = analyze or following is None or following.token_type in LITERALS \
                    or following.text.upper() not in ("FALSE", "OFF")
            j += 1
        i = j + 1
    while i < len(tokens):
        word = tokens[i].text.upper()
        if word in ("ANALYZE", "ANALYSE"):
            analyze = True
        elif word == "FORMAT" and i + 2 < len(tokens) and tokens[i + 1].text == "=":
            i += 2
        elif word == "FOR" and dialect == "mysql":
            other_session = True
        elif word not in ("VERBOSE", "EXTENDED", "PARTITIONS", "QUERY", "PLAN"):
            break
        i += 1
    rest = lexed.rest_after(i) if i < len(tokens) else ""
    rest_words = rest.split(None, 1)
    if dialect == "mysql" and first in ("DESCRIBE", "DESC", "EXPLAIN") and not other_session and (
        not rest_words or (rest_words[0].upper() not in _STATEMENT_STARTS and not rest.startswith("("))
    ) and i == 1:
        return Analysis(lexed=lexed, kind="describe", kinds=frozenset({"describe"}))
    analysis = Analysis(lexed=lexed, kind="explain", kinds=frozenset({"explain"}),
                        explain_analyze=analyze)
    if rest and not other_session:
        inner = _analyse(lex(rest, dialect), dialect, depth + 1)
        analysis.inner = inner
        if analyze:
            analysis.kinds = analysis.kinds | inner.kinds
    return analysis


def _prepare(lexed: Lexed, dialect: str, depth: int) -> Analysis:
    assert lexed.tokens is not None
    tokens = lexed.tokens
    name = _name(tokens[1], dialect) if len(tokens) > 1 else None
    analysis = Analysis(lexed=lexed, kind="prepare", kinds=frozenset({"prepare"}), name=name)
    if dialect == "mysql":
        for i, tok in enumerate(tokens):
            if tok.text.upper() == "FROM" and i + 1 < len(tokens):
                source = tokens[i + 1]
                raw = lexed.text[source.start : source.end + 1]
                # Only a plain quoted string whose text needs no unescaping is read: the server
                # unescapes \n, \Z… its own way, and a hex or bit literal is not text to sqlglot.
                if (source.token_type in STRING_LITERALS and i + 2 == len(tokens)
                        and "\\" not in raw):
                    analysis.inner = _analyse(lex(source.text, dialect), dialect, depth + 1)
                else:
                    analysis.prepare_from_variable = True
                break
    else:
        level = 0
        for i, tok in enumerate(tokens):
            if tok.token_type == TokenType.L_PAREN:
                level += 1
            elif tok.token_type == TokenType.R_PAREN:
                level -= 1
            elif level == 0 and i > 1 and tok.text.upper() == "AS":
                analysis.inner = _analyse(lex(lexed.rest_after(i + 1), dialect), dialect, depth + 1)
                break
    if analysis.inner is not None:
        analysis.kinds = analysis.kinds | analysis.inner.kinds
    return analysis


def _declare(lexed: Lexed, dialect: str, depth: int) -> Analysis:
    assert lexed.tokens is not None
    tokens = lexed.tokens
    name = _name(tokens[1], dialect) if len(tokens) > 1 else None
    analysis = Analysis(lexed=lexed, kind="declare", kinds=frozenset({"declare"}), name=name)
    seen_cursor = False
    for i, tok in enumerate(tokens):
        word = tok.text.upper()
        if word == "CURSOR":
            seen_cursor = True
        elif seen_cursor and word == "FOR" and tok.token_type not in LITERALS:
            analysis.inner = _analyse(lex(lexed.rest_after(i + 1), dialect), dialect, depth + 1)
            analysis.kinds = analysis.kinds | analysis.inner.kinds
            break
    return analysis
