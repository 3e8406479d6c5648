"""Guardrails: statements a target refuses whatever the masking (read-only, blocked kinds, writes
without WHERE, files and other databases).

Decisions, in the order they are checked:
- Text the bastion cannot tokenize is refused when any guardrail or masking applies; MySQL
  executable comments (`/*! … */`) are always refused, since the server runs what looks like a
  comment. Changing `sql_mode` or `standard_conforming_strings` is refused: the bastion reads
  statements the way those settings are at connect time.
- Always refused: COPY (data outside result columns; the console does not carry COPY data),
  LOAD DATA, SELECT … INTO OUTFILE/DUMPFILE, and functions that read or write server files, large
  objects or other databases (pg_read_file, lo_get, lo_export, dblink, LOAD_FILE, …).
- Blocked kinds (`blocked_statements`) apply to what a statement does, including writes inside
  data-modifying CTEs, EXPLAIN ANALYZE of a write, and the statement a PREPARE will run.
- UPDATE and DELETE need a WHERE clause that depends on the row: none, a constant one
  (`WHERE true`, `WHERE 1=1`) or an OR with a constant branch are refused. Tautologies over
  columns (`WHERE id = id`) are not detected.
- Read-only targets run only reads: SELECT (without FOR UPDATE/SHARE, INTO a table, or writes in
  CTEs), SHOW, EXPLAIN (ANALYZE only of a read), DESCRIBE, transaction control without READ WRITE,
  cursors and prepared statements of reads, and SET of a short list of harmless settings.
  Functions with side effects that a read-only transaction does not stop (pg_terminate_backend,
  set_config, advisory locks, …) are refused by name, and so are user-defined functions, which
  the bastion cannot inspect; the database's own read-only mode backs this up for everything else
  (the session is opened with read-only transactions).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bastion.sql.analysis import READ_KINDS, Analysis
from bastion.sql.policy import SqlPolicy

__all__ = ["ALWAYS_REFUSED_FUNCTIONS", "READ_ONLY_REFUSED_FUNCTIONS", "check_guardrails"]

ALWAYS_REFUSED_FUNCTIONS = frozenset({
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_ls_logdir", "pg_ls_waldir",
    "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalsnapdir", "pg_ls_logicalmapdir",
    "pg_ls_replslotdir", "pg_stat_file", "pg_file_write", "pg_file_rename", "pg_file_unlink",
    "pg_file_sync", "pg_logdir_ls", "lo_import", "lo_export", "lo_get", "lo_put", "loread",
    "lowrite", "lo_from_bytea", "lo_open", "lo_create", "lo_creat", "lo_truncate", "lo_truncate64",
    "dblink", "dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_open", "dblink_fetch",
    "dblink_send_query", "dblink_get_result", "load_file", "sys_exec", "sys_eval",
})
READ_ONLY_REFUSED_FUNCTIONS = frozenset({
    "set_config", "setval", "nextval", "lastval", "pg_notify", "pg_advisory_lock",
    "pg_advisory_lock_shared", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock", "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
    "pg_rotate_logfile", "pg_switch_wal", "pg_create_restore_point", "pg_promote",
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
    "pg_drop_replication_slot", "pg_logical_emit_message", "pg_stat_reset",
    "pg_stat_reset_shared", "pg_stat_reset_single_table_counters", "pg_backup_start",
    "pg_backup_stop", "pg_wal_replay_pause", "pg_wal_replay_resume", "pg_import_system_collations",
    "pg_log_backend_memory_contexts", "txid_current", "pg_current_xact_id",
    "get_lock", "release_lock", "release_all_locks", "master_pos_wait", "master_gtid_wait",
})
READ_ONLY_SETTINGS = frozenset({
    "search_path", "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
    "timezone", "time", "datestyle", "intervalstyle", "application_name", "extra_float_digits",
    "bytea_output", "client_min_messages", "work_mem", "jit", "enable_seqscan",
    "enable_indexscan", "enable_bitmapscan", "enable_hashjoin", "enable_mergejoin",
    "enable_nestloop", "random_page_cost", "max_parallel_workers_per_gather", "transaction",
    "collation_connection", "time_zone", "max_statement_time",
    "max_execution_time", "sql_select_limit", "group_concat_max_len", "net_read_timeout",
    "net_write_timeout", "lc_time_names", "div_precision_increment",
    # What drivers set on connect (lexing settings pass only with values that read the same).
    "names", "character", "charset", "character_set_client", "character_set_connection",
    "character_set_results", "client_encoding", "sql_mode",
    "session_track_schema", "session_track_system_variables", "session_track_state_change",
    "session_track_transaction_info",
})
# Settings that change how the server reads statement text: quotes, backslashes, and the client
# character set (in GBK or SJIS a multi-byte character can end in 0x5C, a backslash).
# Client character sets in which no multi-byte character holds a quote or backslash byte, so the
# bastion reads a statement as the server does (GBK, SJIS, BIG5 and the like are not).
SAFE_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8", "latin1", "ascii", "binary", "unicode"})
# PostgreSQL: the bastion's relay reads statements and results as UTF-8, so only UTF-8 passes.
SAFE_PG_ENCODINGS = frozenset({"utf8", "unicode"})
# SQL modes that change how quotes and backslashes read (directly or as part of a combination).
LEXING_MODES = frozenset({"ANSI_QUOTES", "NO_BACKSLASH_ESCAPES", "ANSI", "DB2", "MAXDB", "MSSQL",
                          "ORACLE", "POSTGRESQL"})
_SQL_MODE = re.compile(
    r"(?i)(?:SESSION\s+|@@(?:SESSION\.)?)?sql_mode\s*=\s*(?:concat\s*\(\s*@@(?:SESSION\.)?sql_mode"
    r"\s*,\s*'(?P<added>[A-Z_,]*)'\s*\)|'(?P<set>[A-Z_,]*)')")
# Connector/J's `set autocommit=1, …`: autocommit stays on (every statement its own read).
_AUTOCOMMIT_ON = re.compile(r"(?i)(?:SESSION\s+|@@(?:SESSION\.)?)?autocommit\s*=\s*(?:1|ON|TRUE),?")
_CHARSET_ITEM = re.compile(
    r"(?i)(?:NAMES|CHARSET|CHARACTER SET|(?:character_set_(?:client|connection|results)|"
    r"client_encoding)\s*(?:=|TO))\s*['\"`]?([\w-]+)['\"`]?(?:\s+COLLATE\s+['\"`]?\w+['\"`]?)?")
LEXING_SETTINGS = frozenset({"sql_mode", "standard_conforming_strings", "backslash_quote", "names",
                             "character", "charset", "character_set_client",
                             "character_set_connection", "character_set_results",
                             "client_encoding"})


def prepared_key(kind: str, name: str) -> str:
    """Prepared statements and cursors live in separate namespaces (as in PostgreSQL)."""
    return ("cursor:" if kind in ("declare", "fetch", "close") else "prepared:") + name


def check_guardrails(
    analysis: Analysis,
    policy: SqlPolicy,
    user_functions: frozenset[str],
    prepared: Callable[[str], Analysis | None],
) -> str | None:
    """Return why the statement is refused by the target's guardrails, or None to let it run."""
    if not analysis.lexed.ok:
        return ("The bastion could not read this statement (is a quote or comment left open?), "
                "so it cannot check it.")
    if any(a.lexed.executable_comment for a in analysis.chain()):
        return ("MySQL executable comments (/*! … */) are not allowed: the server runs them but "
                "the bastion would read them as comments.")
    for a in analysis.chain():
        if a.kind == "set" and a.lexed.dialect == "mysql" and "statement" in a.set_names:
            return ("MariaDB's SET STATEMENT … FOR is not available through the bastion (the "
                    "bastion would not check the statement it runs); run SET and the statement "
                    "one after the other.")
        if a.kind == "set" and any(
                name in LEXING_SETTINGS and not _reads_the_same(item, a.lexed.dialect)
                for name, item in zip(a.set_names, a.set_items, strict=False)):
            return ("Changing sql_mode, standard_conforming_strings or the client character set "
                    "is not allowed through the bastion: it reads your statements with the "
                    "settings of the session's start.")
    if any(a.kind == "do" or a.code for a in analysis.chain()):
        if policy.blocked_statements:
            return ("DO blocks and function, procedure or trigger definitions run statements the "
                    "bastion cannot check against this target's blocked statements.")
        return ("DO blocks and function, procedure or trigger definitions run statements the "
                "bastion can neither check nor log; run the statements themselves.")
    if refusal := _setting_by_function(analysis):
        return refusal
    if refusal := _always_refused(analysis):
        return refusal
    kinds = set(analysis.kinds)
    executed = _executed(analysis, prepared)
    if executed is not None:
        kinds |= executed.kinds
    blocked = sorted(kinds & policy.blocked_statements)
    if blocked:
        return f"{blocked[0].upper()} statements are blocked on this target."
    if (analysis.kind == "execute" and executed is None) or analysis.prepare_from_variable:
        return ("This prepared statement's text is not known to the bastion (it was prepared from a "
                "variable or outside this session), so it cannot be checked.")
    if refusal := _missing_where(analysis):
        return refusal
    if policy.read_only:
        return _read_only(analysis, kinds, user_functions, executed)
    return None


def _reads_the_same(item: str, dialect: str) -> bool:
    """Whether a SET item that names a lexing setting leaves statements read as before: drivers
    set a character set in which no character hides a quote or backslash byte (`SET NAMES
    utf8mb4`), or add SQL modes that do not change quoting (Connector/J's
    `sql_mode = concat(@@sql_mode, ',STRICT_TRANS_TABLES')`)."""
    item = item.strip()
    if found := _CHARSET_ITEM.fullmatch(item):
        charset = found.group(1).lower().replace("-", "")
        if dialect == "postgres":
            return charset in SAFE_PG_ENCODINGS
        # Result text in no character set at all is still not statement text.
        return charset in SAFE_CHARSETS or (
            charset == "null" and item.lower().startswith("character_set_results"))
    if found := _SQL_MODE.fullmatch(item):
        modes = found.group("added") or found.group("set") or ""
        return not {m.strip().upper() for m in modes.split(",")} & LEXING_MODES
    return False


_SET_CONFIG = re.compile(r"""(?i)"?set_config"?\s*\(\s*('(?:[^'\\]|'')*'|[^,)]*)""")


def _setting_by_function(analysis: Analysis) -> str | None:
    """set_config() of a setting that changes how statements read, a name the bastion cannot
    read, or a write to pg_settings: refused on every target (the bastion would read the next
    statements one way and the server another)."""
    lexed = analysis.lexed
    if "pg_settings" in {n.lower() for n in lexed.names} and \
            analysis.kinds & {"update", "insert", "delete", "merge"}:
        return "Changing settings through pg_settings is not allowed through the bastion; use SET."
    if "set_config" not in analysis.functions:
        return None
    names = _SET_CONFIG.findall(lexed.clean)
    if not names:
        return "set_config() is allowed only with a setting's name as a plain string."
    for name in names:
        if not (name.startswith("'") and name.endswith("'") and "\\" not in name):
            return "set_config() is allowed only with a setting's name as a plain string."
        if name.strip("'").strip().lower() in LEXING_SETTINGS:
            return ("Changing sql_mode, standard_conforming_strings or the client character set "
                    "is not allowed through the bastion: it reads your statements with the "
                    "settings of the session's start.")
    return None


def _executed(analysis: Analysis, prepared: Callable[[str], Analysis | None]) -> Analysis | None:
    if analysis.kind in ("execute", "fetch") and analysis.name:
        return prepared(prepared_key(analysis.kind, analysis.name))
    return None


def _always_refused(analysis: Analysis) -> str | None:
    for a in analysis.chain():
        if a.kind == "copy":
            return ("COPY is not available through the bastion: it moves data outside result "
                    "columns, where masking and recording do not apply. Use SELECT instead.")
        if a.kind == "load":
            return "LOAD DATA is not available through the bastion: it reads files the bastion cannot check."
        words = [w.upper() for w in a.lexed.words]
        for i, word in enumerate(words[:-1]):
            if word == "INTO" and words[i + 1] in ("OUTFILE", "DUMPFILE"):
                return ("SELECT … INTO OUTFILE/DUMPFILE is not available through the bastion: it "
                        "writes data to server files, outside masking and recording.")
    calls = sorted(analysis.functions & ALWAYS_REFUSED_FUNCTIONS)
    if calls:
        return (f"{calls[0]}() is not available through the bastion: it reads or writes server "
                "files, large objects or other databases, outside masking and recording.")
    if "pg_largeobject" in analysis.words:
        return "Large objects are not available through the bastion: their content is not masked."
    return None


def _missing_where(analysis: Analysis) -> str | None:
    for a in analysis.chain():
        if a is not analysis and analysis.kind == "explain" and not analysis.explain_analyze:
            break
        if a.missing_where:
            return a.missing_where + ": add a WHERE clause that selects the rows you mean."
        if a.kind in ("update", "delete") and not a.parsed:
            return (f"The bastion could not check that this {a.kind.upper()} has a WHERE clause, "
                    "so it is refused.")
    return None


def _read_only(
    analysis: Analysis, kinds: set[str], user_functions: frozenset[str], executed: Analysis | None
) -> str | None:
    writes = sorted(kinds - READ_KINDS)
    if writes:
        return f"This target is read-only: {writes[0].upper()} statements are not allowed."
    if analysis.kind == "execute" and (executed is None or executed.kinds - READ_KINDS):
        return "This target is read-only: the prepared statement is not known to be a read."
    for a in analysis.chain():
        if a.locks:
            return "This target is read-only: SELECT … FOR UPDATE/SHARE takes row locks."
        if a.read_write:
            return "This target is read-only: read-write transactions are not allowed."
        if a.kind == "set":
            names = [(n, item) for n, item in zip(a.set_names, a.set_items, strict=False)
                     if not n.startswith("@")]
            bad = [n for n, item in names if n not in READ_ONLY_SETTINGS
                   and not (n == "autocommit" and _AUTOCOMMIT_ON.fullmatch(item.strip()))]
            if bad or a.set_global:
                return (f"This target is read-only: changing {bad[0] if bad else 'global settings'} "
                        "is not allowed.")
        if a.kind in ("select", "do") and not a.parsed:
            return ("This target is read-only and the bastion could not analyse this statement, "
                    "so it cannot tell that it only reads.")
    calls = sorted(analysis.functions & READ_ONLY_REFUSED_FUNCTIONS)
    if calls:
        return f"This target is read-only: {calls[0]}() changes the database or other sessions."
    udfs = sorted(analysis.functions & user_functions)
    if udfs:
        return (f"This target is read-only: {udfs[0]}() is a user-defined function, and the bastion "
                "cannot tell whether it writes.")
    return None
