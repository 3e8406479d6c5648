"""The differential leak test of database-enforced masking, through the bastion and the real
`ssh` client, on PostgreSQL and MariaDB.

Every statement of the masking corpora (those the SQL-text analysis was built against, and the
families it missed) runs as an ordinary masked grant, three times: twice on the same data, then
after the admin changed only the hidden part of the masked values (the last four characters that
`partial` shows stay; literals in the statements that equal a real value change the same way).
Hash tokens are ignored, and the hashed column is covered by a scan for its plaintext instead.
A statement whose output (as a set of lines) changes with the hidden part leaks a value, whatever
the encoding: `translate()`, `reverse()`, casts, errors, plans. Output that changes only in row
order is counted separately: that is the row-order question (an index on a masked column orders
rows by the raw value), reported rather than hidden.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest
from harness import BastionProcess, World, free_port, setup_databases, ssh_argv
from masking_corpus import masking_corpus, redteam_corpus
from native import tunnel
from sqldb import MASKING_RULES, MY_HOST, MY_PORT, PG_ADMIN, assert_no_secrets, seeded_databases, target_toml
from test_sql_grants import approved_cert

from bastion.demo_data import PEOPLE
from bastion.sql.lexing import split_statements

pytestmark = [pytest.mark.postgres, pytest.mark.mysql, pytest.mark.sshd]

USERS = {"alice": ["developer", "db-dev"], "bob": ["approver", "db-approver"], "dave": ["approver"],
         "carol": ["auditor"]}
ROLES = """
[[roles]]
name = "db-dev"
request = ["pgdb", "mydb"]
[[roles]]
name = "db-approver"
approve = ["pgdb", "mydb"]
"""
# The families the SQL-text analysis missed, in spellings of our own.
FAMILIES_BOTH = [
    "WITH t AS (SELECT * FROM customers) SELECT concat(t.ssn, '') FROM t",
    "SELECT x.ssn, x.card_number, x.email FROM (SELECT * FROM customers) x ORDER BY (3)",
    "SELECT id FROM customers ORDER BY (ssn)",
    "SELECT id FROM customers ORDER BY ssn DESC",
    "SELECT id FROM customers ORDER BY card_number, email",
    "SELECT count(*), ssn FROM customers GROUP BY (2)",
    "SELECT (SELECT ssn FROM customers WHERE id = 1) AS s",
    "SELECT name FROM customers WHERE ssn > '2' ORDER BY id",
    "SELECT name FROM customers WHERE substr(ssn, 1, 1) = '1' ORDER BY id",
    "SELECT name FROM customers WHERE ssn LIKE '1%' ORDER BY id",
    "SELECT name FROM customers WHERE card_number LIKE '4%' ORDER BY id",
    "SELECT max(ssn), min(card_number), max(email) FROM customers",
    "SELECT id, length(ssn), length(card_number), length(email) FROM customers ORDER BY id",
    "SELECT name FROM customers WHERE ssn = '123-45-6789'",
    "SELECT name FROM customers WHERE email IN ('ada@example.com', 'grace@example.net') ORDER BY 1",
    "SELECT ssn FROM customers WHERE id = 1 UNION SELECT card_number FROM customers WHERE id = 2",
    "SELECT id FROM customers WHERE ssn IS NOT NULL",
    "SELECT ssn FROM customers",
    "SELECT id, ssn FROM customers",
    "SELECT * FROM customers ORDER BY id",
    "SELECT tax_id, mail FROM customer_view",
    "SELECT peek()",
]
FAMILIES_POSTGRES = [
    "SELECT reverse(c::text) FROM customers c ORDER BY id",
    "SELECT to_json(t) FROM (SELECT * FROM customers) t ORDER BY 1",
    "WITH t AS (SELECT ssn, email FROM customers) SELECT row_to_json(t) FROM t ORDER BY 1",
    "SELECT l::text FROM customers c, LATERAL (SELECT c.ssn, c.card_number) l ORDER BY 1",
    "SELECT (t.*)::text FROM (SELECT ssn FROM customers) t ORDER BY 1",
    "SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers ORDER BY id",
    "SELECT ssn::bytea, card_number::bytea FROM customers ORDER BY id",
    "SELECT to_json(c) FROM public.customers c",
    "SELECT ssn FROM public.customers",
    "SELECT reverse(ssn) FROM public.customers",
    "SELECT count(*) FROM public.customers WHERE ssn LIKE '1%'",
    "UPDATE public.customers SET note = ssn WHERE id = 1 RETURNING note",
    "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats WHERE tablename = 'customers'",
    "SELECT stavalues1::text FROM pg_statistic",
    "SELECT pg_get_viewdef('public_masked.customers'::regclass)",
    "SELECT * FROM bastion_masking.state",
    "SELECT query FROM pg_stat_activity",
    "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
    "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM customers WHERE ssn = '1'",
    "EXPLAIN (VERBOSE, COSTS OFF) SELECT ssn FROM customers ORDER BY ssn",
    "COPY (SELECT * FROM customers ORDER BY id) TO STDOUT",
    "COPY public.customers TO STDOUT",
    "SELECT lo_get(oid) FROM pg_largeobject_metadata",
    "CREATE FUNCTION leak() RETURNS text LANGUAGE sql AS 'SELECT ssn FROM public.customers'",
    "CREATE VIEW mine AS SELECT * FROM customers",
    "CREATE TRIGGER t BEFORE UPDATE ON public.customers FOR EACH ROW EXECUTE FUNCTION peek()",
    "CREATE RULE r AS ON UPDATE TO public.customers DO ALSO NOTIFY x",
    "CREATE TEMP TABLE t AS SELECT * FROM customers; SELECT ssn FROM t ORDER BY 1",
    "SELECT CAST(ssn AS int) FROM customers WHERE id = 1",
    "SELECT 1 / (CASE WHEN ssn LIKE '*****6789' THEN 0 ELSE 1 END) FROM customers",
    "SELECT ssn::int FROM public.customers WHERE id = 1",
    "SET search_path = public; SELECT ssn FROM customers",
    "SELECT current_setting('search_path')",
]
FAMILIES_MYSQL = [
    "SELECT ssn FROM {db}.customers",
    "SELECT reverse(ssn) FROM {db}.customers",
    "SELECT name FROM {db}.customers WHERE ssn LIKE '1%'",
    "SELECT name FROM {db}.customers ORDER BY ssn",
    "SELECT * FROM {db}.customer_view",
    "SELECT HEX(ssn), HEX(card_number) FROM customers ORDER BY id",
    "SELECT JSON_OBJECT('s', ssn) FROM customers ORDER BY id",
    "SET optimizer_trace = 'enabled=on'; SELECT name FROM customers WHERE ssn = 'x'; "
    "SELECT trace FROM information_schema.optimizer_trace",
    "SET optimizer_trace = 'enabled=on'; SELECT * FROM customers WHERE id = 1; "
    "SELECT trace FROM information_schema.optimizer_trace",
    "ANALYZE SELECT * FROM customers WHERE ssn = '123-45-6789'",
    "EXPLAIN FORMAT=JSON SELECT * FROM customers WHERE id = 1",
    "SELECT info FROM information_schema.processlist",
    "SHOW FULL PROCESSLIST",
    "SELECT * FROM bastion_state",
    "SHOW CREATE VIEW customers",
    "SELECT * FROM mysql.user",
    "SELECT CAST(ssn AS SIGNED) FROM customers WHERE id = 1",
    "SELECT name FROM customers WHERE ssn = 123",
    "CREATE TEMPORARY TABLE t AS SELECT * FROM customers",
    "CREATE TRIGGER t BEFORE UPDATE ON {db}.customers FOR EACH ROW SET NEW.note = NEW.ssn",
    "CREATE FUNCTION leak() RETURNS TEXT READS SQL DATA RETURN (SELECT ssn FROM {db}.customers LIMIT 1)",
    "CREATE PROCEDURE leak() SELECT ssn FROM {db}.customers",
    "SELECT column_name FROM information_schema.column_statistics",
    "SELECT * FROM mysql.column_stats",
]


def _changed(value: str) -> str:
    """The same value with its hidden part changed (and its order reversed): every character but
    the last four maps to its mirror (0↔9, a↔z); separators stay."""
    def mirror(ch: str) -> str:
        if ch.isdigit():
            return str(9 - int(ch))
        if "a" <= ch <= "z":
            return chr(ord("a") + ord("z") - ord(ch))
        return ch
    return "".join(mirror(ch) for ch in value[:-4]) + value[-4:]


# The hashed column (email) keeps its values: any function of a hash token changes with the value
# (reverse(), upper(), md5() of it), so the differential would see noise; the plaintext scan of
# every output covers it instead, and HMAC does not run backwards.
CHANGED = {p[3]: _changed(p[3]) for p in PEOPLE} | {p[4]: _changed(p[4]) for p in PEOPLE}
HASH = re.compile(r"h:[0-9a-f]+…?")  # the console may cut long cells with …


def _rewrite(kind: str, db: dict[str, str], changed: bool) -> None:
    """Rewrite customers in id order (same physical order every run) with the real or the
    changed values."""
    rows = [(p[0], p[1], p[2], CHANGED[p[3]] if changed else p[3],
             CHANGED[p[4]] if changed else p[4], p[5]) for p in PEOPLE]
    if kind == "postgres":
        base, _, _ = PG_ADMIN.rpartition("/")
        with psycopg.connect(f"{base}/{db['name']}", autocommit=True) as conn:
            with conn.transaction():
                conn.execute("TRUNCATE customers")
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s)", rows)
            conn.execute("VACUUM ANALYZE customers")
        return
    my = pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", database=db["name"],
                         autocommit=True)
    with my, my.cursor() as cur:
        cur.execute("DELETE FROM customers")
        cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s)", rows)
        cur.execute("ANALYZE TABLE customers")


@pytest.fixture(scope="module")
def db() -> Iterator[dict[str, str]]:
    yield from seeded_databases()


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory, db: dict[str, str]
            ) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("differential"), port=free_port(), users=dict(USERS))
    world.extra = "".join(target_toml(name, kind, f"127.0.0.1:{port}", db, MASKING_RULES)
                          for name, kind, port in (("pgdb", "postgres", 5432),
                                                   ("mydb", "mysql", MY_PORT))) + ROLES
    world.write_config()
    setup_databases(world, "pgdb", "mydb")
    proc = BastionProcess(world)
    proc.start()
    yield proc
    proc.stop()


def _statements(kind: str, db: dict[str, str]) -> list[str]:
    # A NUL byte makes the bastion refuse the whole piped script (test_sql_masking covers it).
    old = [sql for sql, _ in masking_corpus(kind) + redteam_corpus(kind) if "\x00" not in sql]
    new = FAMILIES_BOTH + (FAMILIES_POSTGRES if kind == "postgres" else
                           [s.format(db=db["name"]) for s in FAMILIES_MYSQL])
    return list(dict.fromkeys(old + new))


DATABASE: dict[str, str] = {}  # target → database name, for the native clients


def _alone(sql: str, dialect: str) -> bool:
    """Whether a statement must run in a session of its own: one the bastion cannot split from
    the next (an unterminated string or comment) makes the rest of a piped script one statement."""
    return split_statements(f"{sql};\nSELECT 1", dialect)[-1:] != ["SELECT 1"]


Pipe = Callable[[str], tuple[str, str]]


@contextlib.contextmanager
def _client(bastion: BastionProcess, target: str, client: str) -> Iterator[Pipe]:
    """How a script reaches the database: the bastion's console (`ssh TARGET@bastion < script`)
    or the engine's own client (psql, mariadb) through `ssh -L`, each with a new grant."""
    cert = approved_cert(bastion, "alice", target)
    if client == "console":
        yield lambda script: _piped(bastion, cert, target, script)
        return
    port = 5432 if target == "pgdb" else 3306
    with tunnel(bastion, "alice", target, cert, remote_port=port) as local:
        yield lambda script: _native(target, int(local), script)


def _native(target: str, port: int, script: str) -> tuple[str, str]:
    database = DATABASE[target]
    if target == "pgdb":
        args = ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "alice", "-d", database]
    else:
        args = ["mariadb", "--skip-ssl", "-h", "127.0.0.1", "-P", str(port), "-u", "alice",
                "--force", "--table", database]
    done = subprocess.run(args, input=script, capture_output=True, text=True, errors="replace",
                          timeout=300)
    # The clients quote the statement they sent next to its error (libpq: `LINE 1: …` and a
    # caret; mariadb --force: the statement between lines of dashes): the user's own text,
    # which the client held before the server answered.
    errors = re.sub(r"(?ms)^-{14}\n.*?^-{14}\n", "", done.stderr)
    errors = "\n".join(line for line in errors.splitlines()
                       if not re.match(r"(psql:<stdin>:\d+: )?(LINE \d+: |\s*\^$)", line))
    return HASH.sub("h:…", done.stdout), HASH.sub("h:…", errors)


def _run(pipe: Pipe, target: str, statements: list[str], client: str = "console"
         ) -> tuple[list[str], list[str]]:
    """Run the statements, each in a transaction rolled back. Return each one's standard output,
    and the lines the piped session wrote to standard error, sorted: the ssh client writes its
    two streams in an order of its own, so errors are compared as a whole."""
    dialect = "postgres" if target == "pgdb" else "mysql"
    outputs = [""] * len(statements)
    # The native clients split scripts their own way around comments: those statements run alone.
    batch = [i for i, sql in enumerate(statements) if not _alone(sql, dialect) and not (
        client == "native" and any(c in sql for c in ("#", "--", "/*")))]
    for i in set(range(len(statements))) - set(batch):
        out, err = pipe(statements[i] + "\n")
        outputs[i] = (out + err) or "(nothing printed)"  # e.g. PREPARE through mariadb
    script = []
    for n, i in enumerate(batch):
        # The marker is computed, so a statement that prints recent statements' text (process
        # lists, histories) cannot print it.
        script.append(f"SELECT concat('mark', 'er-{n}') AS m;\nBEGIN;\n"
                      f"{statements[i].rstrip().rstrip(';')};\nROLLBACK;\n")
    stdout, stderr = pipe("".join(script))
    parts = re.split(r"(?m)^.*marker-(\d+).*$", stdout)
    assert len(parts) > 1, stdout[-3000:] + stderr[-3000:]
    for number, text in zip(parts[1::2], parts[2::2], strict=True):
        outputs[batch[int(number)]] = text
    return outputs, _lines(stderr)


def _piped(bastion: BastionProcess, cert: Path, target: str, script: str) -> tuple[str, str]:
    args = ssh_argv(bastion, bastion.world.key("alice"), target, cert=cert)
    done = subprocess.run(args, input=script, capture_output=True, text=True, timeout=300)
    return HASH.sub("h:…", done.stdout), HASH.sub("h:…", done.stderr)


def _lines(text: str) -> list[str]:
    return sorted(line.strip() for line in text.splitlines() if line.strip())


# Statements over the server's activity list its other sessions too: their rows come and go with
# whatever else runs on the server (other tests at the same time), so they cannot be compared run
# to run. Their output is still searched for every seeded value, like every other statement's.
SERVER_WIDE = re.compile(r"pg_stat_activity|pg_stat_get_backend|pg_locks|processlist", re.IGNORECASE)


@pytest.mark.parametrize("client", ["console", "native"])
@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_output_does_not_change_when_only_hidden_parts_change(
        bastion: BastionProcess, db: dict[str, str], kind: str, client: str) -> None:
    target = "pgdb" if kind == "postgres" else "mydb"
    statements = _statements(kind, db)
    changed = []
    for sql in statements:
        for real, other in CHANGED.items():
            sql = sql.replace(real, other)
        changed.append(sql)
    # A grant per run: each run compares masked columns with as many values as the last, and a
    # grant's lookup budget would end the third one early.
    DATABASE[target] = db["name"]
    _rewrite(kind, db, changed=False)
    with _client(bastion, target, client) as pipe:
        first, first_err = _run(pipe, target, statements, client)
    with _client(bastion, target, client) as pipe:
        second, second_err = _run(pipe, target, statements, client)
    _rewrite(kind, db, changed=True)
    try:
        with _client(bastion, target, client) as pipe:
            third, third_err = _run(pipe, target, changed, client)
    finally:
        _rewrite(kind, db, changed=False)
    for i, out in enumerate(first):
        assert_no_secrets(out, f"{kind}: {statements[i]!r}")
    for line in first_err:
        assert_no_secrets(line, f"{kind}: the error line {line!r}")
    silent = [statements[i] for i, out in enumerate(first) if not out]
    assert not silent, f"printed nothing (the marker after it went missing): {silent}"
    unstable = [i for i in range(len(statements)) if first[i] != second[i]]
    compared = [i for i in range(len(statements))
                if i not in unstable and not SERVER_WIDE.search(statements[i])]
    leaks = [i for i in compared if _lines(first[i]) != _lines(third[i])]
    order = [i for i in compared if i not in leaks and first[i] != third[i]]
    noisy = set(first_err) ^ set(second_err)  # error lines that differ between identical runs
    error_leaks = sorted((set(first_err) ^ set(third_err)) - noisy)
    report = [f"{kind} through the {client}: {len(statements)} statements, "
              f"{len(unstable)} unstable between identical runs, {len(leaks)} value leaks, "
              f"{len(order)} row-order differences, {len(error_leaks)} error lines that differ"]
    report += [f"  unstable: {statements[i]!r}" for i in unstable]
    report += [f"  unstable error line: {line!r}" for line in sorted(noisy)]
    report += [f"  row order: {statements[i]!r}" for i in order]
    print("\n".join(report))
    assert not leaks, "\n".join(
        f"LEAK {statements[i]!r}:\n--- real data\n{first[i]}\n--- hidden part changed\n{third[i]}"
        for i in leaks[:10])
    assert not error_leaks, error_leaks[:20]
    # Timings, process ids and timestamps (EXPLAIN ANALYZE, pg_stat_activity) differ run to run.
    assert len(unstable) <= 8, report
