"""Red team of the native-client relays (`ssh -L` to PostgreSQL and MariaDB), through the front
door: a real `ssh -N -L`, a real bastion process, the real databases, an ordinary user with an
approved (masked) grant speaking the wire protocols byte by byte.

Every test asserts the SAFE behaviour: it passes while the bastion resists and fails when an
attack gets through (the failing ones are findings, described in their docstrings)."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pymysql
import pytest
from harness import BastionProcess, World, control_json, free_port, setup_databases, wait_for
from native import approved, tunnel
from sqldb import MASKING_RULES, MY_PORT, PG_ADMIN, SECRETS, seeded_databases, target_toml

from bastion.demo_data import PEOPLE
from bastion.wire.pg_protocol import cancel_packet, message, startup_packet

pytestmark = [pytest.mark.postgres, pytest.mark.mysql, pytest.mark.sshd]

SSN = PEOPLE[0][3]
USERS = {"alice": ["developer", "db-dev"], "erin": ["developer", "db-dev"],
         "bob": ["approver", "db-approver"], "dave": ["approver"], "carol": ["auditor"]}
ROLES = """
[[roles]]
name = "db-dev"
request = ["pg*", "my*"]
[[roles]]
name = "db-approver"
approve = ["pg*", "my*"]
"""
BLOCKED = 'blocked_statements = ["delete", "update", "truncate"]\n'


# fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db() -> Iterator[dict[str, str]]:
    gen = seeded_databases()
    yield next(gen)
    for _ in gen:
        pass


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory, db: dict[str, str]
            ) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("redwire"), port=free_port(), users=dict(USERS))
    world.extra = (target_toml("pgdb", "postgres", "127.0.0.1:5432", db, MASKING_RULES)
                   + target_toml("pgblk", "postgres", "127.0.0.1:5432", db, BLOCKED + MASKING_RULES)
                   + target_toml("pglim", "postgres", "127.0.0.1:5432", db, "max_rows = 3\n")
                   + target_toml("mydb", "mysql", f"127.0.0.1:{MY_PORT}", db, MASKING_RULES)
                   + ROLES)
    world.write_config()
    setup_databases(world, "pgdb", "pgblk", "mydb")
    proc = BastionProcess(world)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def pg(bastion: BastionProcess) -> Iterator[int]:
    """alice's masked grant on pgdb, through `ssh -N -L`: the local port."""
    _, cert = approved(bastion, "alice", "pgdb")
    with tunnel(bastion, "alice", "pgdb", cert) as port:
        assert isinstance(port, int)
        yield port


@pytest.fixture(scope="module")
def pgblk(bastion: BastionProcess) -> Iterator[int]:
    """alice's grant on pgblk (DELETE, UPDATE and TRUNCATE blocked)."""
    _, cert = approved(bastion, "alice", "pgblk")
    with tunnel(bastion, "alice", "pgblk", cert) as port:
        assert isinstance(port, int)
        yield port


@pytest.fixture(scope="module")
def pglim(bastion: BastionProcess) -> Iterator[int]:
    """alice's grant on pglim (max_rows = 3)."""
    _, cert = approved(bastion, "alice", "pglim")
    with tunnel(bastion, "alice", "pglim", cert) as port:
        assert isinstance(port, int)
        yield port


@pytest.fixture(scope="module")
def erin_pg(bastion: BastionProcess) -> Iterator[int]:
    """erin's grant on pgdb: another user's session."""
    _, cert = approved(bastion, "erin", "pgdb")
    with tunnel(bastion, "erin", "pgdb", cert) as port:
        assert isinstance(port, int)
        yield port


@pytest.fixture(scope="module")
def my(bastion: BastionProcess) -> Iterator[int]:
    """alice's masked grant on mydb (MariaDB), through `ssh -N -L`: the local port."""
    _, cert = approved(bastion, "alice", "mydb")
    with tunnel(bastion, "alice", "mydb", cert, remote_port=3306) as port:
        assert isinstance(port, int)
        yield port


@pytest.fixture
def notes(db: dict[str, str]) -> Iterator[list[int]]:
    """Rows 7001-7003 of `notes`, body 'keep' (the only rows while the test runs)."""
    ids = [7001, 7002, 7003]
    with pg_admin(db) as admin:
        admin.execute("DELETE FROM notes")
        for i in ids:
            admin.execute("INSERT INTO notes VALUES (%s, 'keep')", (i,))
    with my_admin(db) as cur:
        cur.execute("DELETE FROM notes")
        cur.executemany("INSERT INTO notes VALUES (%s, 'keep')", [(i,) for i in ids])
    yield ids
    with pg_admin(db) as admin:
        admin.execute("DELETE FROM notes")
    with my_admin(db) as cur:
        cur.execute("DELETE FROM notes")


@contextlib.contextmanager
def pg_admin(db: dict[str, str]) -> Iterator[psycopg.Connection[Any]]:
    base = PG_ADMIN.rpartition("/")[0]
    with psycopg.connect(f"{base}/{db['name']}", autocommit=True) as conn:
        yield conn


@contextlib.contextmanager
def my_admin(db: dict[str, str]) -> Iterator[Any]:
    conn = pymysql.connect(host="127.0.0.1", port=MY_PORT, user="root", database=db["name"],
                           autocommit=True)
    with conn, conn.cursor() as cur:
        yield cur


def pg_kept(db: dict[str, str]) -> int:
    with pg_admin(db) as admin:
        row = admin.execute("SELECT count(*) FROM notes WHERE body = 'keep'").fetchone()
    assert row is not None
    return int(row[0])


def my_kept(db: dict[str, str]) -> int:
    with my_admin(db) as cur:
        cur.execute("SELECT count(*) FROM notes WHERE body = 'keep'")
        return int(cur.fetchone()[0])


# a raw PostgreSQL client ------------------------------------------------------------------------


class Pg:
    """A PostgreSQL v3 client that sends exactly the bytes it is told to."""

    def __init__(self, port: int, database: str, app: str, user: str = "alice",
                 **params: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""
        try:
            self.sock.sendall(startup_packet({"user": user, "database": database,
                                              "application_name": app, **params}))
            self.greeting = self.until_ready()
        except BaseException:
            self.sock.close()
            raise
        key = next((p for t, p in self.greeting if t == "K"), None)
        self.key = (struct.unpack("!i", key[:4])[0], key[4:]) if key else (0, b"")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(message(b"X"))
        self.sock.close()

    def __enter__(self) -> Pg:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, *messages: bytes) -> None:
        self.sock.sendall(b"".join(messages))

    def read(self) -> tuple[str, bytes]:
        while True:
            if len(self.buf) >= 5:
                length = int.from_bytes(self.buf[1:5], "big")
                if len(self.buf) >= 1 + length:
                    tag, payload = chr(self.buf[0]), self.buf[5:1 + length]
                    self.buf = self.buf[1 + length:]
                    return tag, payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; had {self.buf!r}")
            self.buf += chunk

    def until_ready(self, count: int = 1) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        while count:
            tag, payload = self.read()
            got.append((tag, payload))
            if tag == "Z":
                count -= 1
            if tag == "E" and b"SFATAL" in payload:
                raise ConnectionError(payload.decode("utf-8", "replace"))
        return got


def q(text: str) -> bytes:
    return message(b"Q", text.encode() + b"\x00")


def parse(name: str, text: str) -> bytes:
    return message(b"P", name.encode() + b"\x00" + text.encode() + b"\x00\x00\x00")


def bind(portal: str, statement: str, *params: str) -> bytes:
    body = portal.encode() + b"\x00" + statement.encode() + b"\x00" + b"\x00\x00"
    body += struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!i", len(p.encode())) + p.encode()
    return message(b"B", body + b"\x00\x00")


def execute(portal: str = "", rows: int = 0) -> bytes:
    return message(b"E", portal.encode() + b"\x00" + struct.pack("!i", rows))


def describe(kind: str, name: str) -> bytes:
    return message(b"D", kind.encode() + name.encode() + b"\x00")


SYNC = message(b"S")


def values(got: list[tuple[str, bytes]]) -> list[list[str | None]]:
    """The DataRows of a response, decoded as text."""
    rows = []
    for tag, payload in got:
        if tag != "D":
            continue
        n, pos, row = int.from_bytes(payload[:2], "big"), 2, []
        for _ in range(n):
            (length,) = struct.unpack_from("!i", payload, pos)
            pos += 4
            if length < 0:
                row.append(None)
            else:
                row.append(payload[pos:pos + length].decode("utf-8", "replace"))
                pos += length
        rows.append(row)
    return rows


def errors(got: list[tuple[str, bytes]]) -> list[str]:
    return [p.decode("utf-8", "replace") for t, p in got if t == "E"]


def session_of(bastion: BastionProcess, program: str) -> str:
    events = wait_for(lambda: [e for e in control_json(bastion, "carol", "audit", "--kind",
                                                       "session.started", "--limit", "1000")
                               if e["details"].get("program") == program])
    assert events, program
    return str(events[0]["session_id"])


def logged(bastion: BastionProcess, session: str, expect: int = 1) -> list[dict[str, Any]]:
    found = wait_for(lambda: (lambda qs: qs if len(qs) >= expect else [])(
        control_json(bastion, "carol", "queries", "--session", session)))
    return found or control_json(bastion, "carol", "queries", "--session", session)


def app(name: str) -> str:
    return f"rt-{name}-{time.monotonic_ns()}"


# PostgreSQL: getting a refused statement to run --------------------------------------------------


@pytest.mark.parametrize("switch", [
    "SELECT set_config('standard_conforming_strings', 'off', false)",
    "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
])
def test_pg_standard_conforming_strings_cannot_be_turned_off_to_smuggle_sql(
        pg: int, db: dict[str, str], notes: list[int], switch: str) -> None:
    """FINDING. The gate refuses `SET standard_conforming_strings` (it lexes statements with
    backslashes literal) but not set_config() nor an UPDATE of pg_settings, which do the same.
    With it off, `'a\\'` no longer ends a string for the server: the bastion checks (and logs)
    `UPDATE notes SET body = ? WHERE id = ? AND body = ?`, the server runs an UPDATE of every
    row (its WHERE is inside a string, the rest a comment)."""
    with Pg(pg, db["name"], app("scs")) as c:
        c.send(q(switch))
        c.until_ready()
        c.send(q("UPDATE notes SET body = 'a\\' WHERE id = 7001 AND body = ' -- '"))
        c.until_ready()
    assert pg_kept(db) >= 2, "every row was updated: the WHERE clause was smuggled into a string"


def test_pg_verdict_cache_does_not_let_a_client_encoding_change_through(
        pg: int, db: dict[str, str]) -> None:
    """FINDING. Verdicts are cached by the literal-free form, but whether a SET of
    client_encoding is harmless depends on its literal: `SET client_encoding = 'UTF8'` primes
    the cache for `SET client_encoding = ?`, and `'SJIS'` (where a multi-byte character can
    swallow a backslash) then passes without a check."""
    with Pg(pg, db["name"], app("enc")) as c:
        c.send(q("SET client_encoding = 'UTF8'"))
        c.until_ready()
        c.send(q("SET client_encoding = 'SJIS'"))
        got = c.until_ready()
    status = [p for t, p in got if t == "S" and p.startswith(b"client_encoding\x00")]
    assert not any(b"SJIS" in p for p in status), "the server switched to SJIS"
    assert any("bastion: refused" in e for e in errors(got)), got


def test_pg_verdict_cache_first_refusal_then_allowed_shape(pg: int, db: dict[str, str]) -> None:
    """The other order: a refused client_encoding is not cached as allowed either (held)."""
    with Pg(pg, db["name"], app("enc2")) as c:
        c.send(q("SET client_encoding = 'SJIS'"))
        first = c.until_ready()
        c.send(q("SET client_encoding = 'SJIS'"))
        second = c.until_ready()
    assert any("bastion: refused" in e for e in errors(first))
    assert any("bastion: refused" in e for e in errors(second))


@pytest.mark.parametrize("statement", [
    "COPY (UPDATE notes SET body = 'copied' RETURNING id) TO STDOUT",
    "COPY (WITH d AS (DELETE FROM notes RETURNING id) SELECT id FROM d) TO STDOUT",
])
def test_pg_copy_to_stdout_of_a_write_obeys_blocked_statements(
        pgblk: int, db: dict[str, str], notes: list[int], statement: str) -> None:
    """FINDING. COPY … TO STDOUT is judged by gate._copy_refusal only (functions, `copy` and,
    for FROM STDIN, `insert`); the query inside it is never checked: on a target that blocks
    UPDATE and DELETE, `COPY (UPDATE … RETURNING …) TO STDOUT` updates every row (no WHERE
    check either)."""
    with Pg(pgblk, db["name"], app("copyw")) as c:
        c.send(q(statement))
        got = c.until_ready()
        while any(t == "H" for t, _ in got) and not any(t == "Z" for t, _ in got):
            got += c.until_ready()
    assert pg_kept(db) == 3, f"the write ran: {errors(got)}"


def test_pg_copy_to_stdout_of_a_write_without_where_is_refused(
        pg: int, db: dict[str, str], notes: list[int]) -> None:
    """FINDING (same cause): UPDATE without WHERE inside COPY on an ordinary target."""
    with Pg(pg, db["name"], app("copynw")) as c:
        c.send(q("COPY (UPDATE notes SET body = 'copied' RETURNING id) TO STDOUT"))
        c.until_ready()
    assert pg_kept(db) == 3


@pytest.mark.parametrize("statements", [
    ["DO $$ BEGIN UPDATE notes SET body = 'do'; END $$"],
    ["CREATE FUNCTION pg_temp.rt_touch() RETURNS int LANGUAGE sql AS "
     "'UPDATE notes SET body = ''fn'' RETURNING 1'", "SELECT pg_temp.rt_touch()"],
])
def test_pg_code_cannot_run_an_update_without_where(pg: int, db: dict[str, str],
                                                    notes: list[int],
                                                    statements: list[str]) -> None:
    """FINDING (by design on targets without blocked_statements: guardrails.py refuses DO
    blocks and function definitions only when blocked_statements is set). A DO block or a
    temporary SQL function runs `UPDATE notes SET body = …` on every row, which the gate
    refuses when sent directly."""
    with Pg(pg, db["name"], app("do")) as c:
        for statement in statements:
            c.send(q(statement))
            c.until_ready()
    assert pg_kept(db) == 3


def test_pg_refused_function_is_refused_in_every_spelling(pg: int, db: dict[str, str]) -> None:
    """pg_read_file and friends, hidden by case, quoting, schema, comments, casts, a second
    statement, a Parse, a NUL, SQL-level PREPARE and a cursor (held)."""
    spellings = [
        "SELECT PG_READ_FILE('/etc/passwd')",
        'SELECT "pg_read_file"(\'/etc/passwd\')',
        "SELECT pg_catalog.pg_read_file('/etc/passwd')",
        "SELECT pg_read_file/**/('/etc/passwd')",
        "SELECT 1; SELECT pg_read_file('/etc/passwd')",
        "PREPARE rt_p AS SELECT pg_read_file('/etc/passwd')",
        "DECLARE rt_c CURSOR WITH HOLD FOR SELECT pg_read_file('/etc/passwd')",
        "EXPLAIN ANALYZE SELECT pg_read_file('/etc/passwd')",
        "SELECT lo_from_bytea(0, 'x')",
        "COPY (SELECT lo_from_bytea(0, 'x')) TO STDOUT",
        "COPY notes TO '/tmp/rt-notes'",
        "COPY notes TO PROGRAM 'id'",
    ]
    with Pg(pg, db["name"], app("fn")) as c:
        for text in spellings:
            c.send(q(text))
            got = c.until_ready()
            assert any("bastion: refused" in e for e in errors(got)), (text, got)
        c.send(parse("", "SELECT pg_read_file('/etc/passwd')"), bind("", ""), execute(), SYNC)
        got = c.until_ready()
        assert any("bastion: refused" in e for e in errors(got)), got
        # Text after a NUL, and text the bastion cannot tokenize (no check at all on a target
        # without read_only or blocked_statements: only the server's syntax error stops it).
        for raw in (b"SELECT 1\x00SELECT pg_read_file('/etc/passwd')\x00",
                    b"SELECT pg_read_file('/etc/passwd') /* unterminated\x00"):
            c.send(message(b"Q", raw))
            got = c.until_ready()
            assert not any("root:" in str(r) for r in values(got)), got
        c.send(q("SELECT 6 * 7"))
        assert values(c.until_ready()) == [["42"]]


# PostgreSQL: desynchronising the relay -----------------------------------------------------------


@pytest.mark.parametrize("second", ["SELECT 1 AS harmless", "SELECT pg_read_file('/etc/passwd')"])
def test_pg_reused_statement_name_is_logged_as_what_runs(bastion: BastionProcess, pg: int,
                                                         db: dict[str, str], notes: list[int],
                                                         second: str) -> None:
    """FINDING. The relay records a Parse's statement under its name before the server
    accepted it (postgres.py `_parse`: `self.statements[name] = …`), and drops the name when
    the gate refuses a new text for it. The server keeps the first statement (a second Parse of
    an existing name fails), so a later Bind/Execute of the name runs the UPDATE while the query
    log and the recording show `SELECT ? AS harmless` (or "(unknown)"): an UPDATE that never
    appears in the log."""
    name = app("reuse")
    with Pg(pg, db["name"], name) as c:
        c.send(parse("rt_s", "UPDATE notes SET body = 'reused' WHERE id > $1"), SYNC)
        assert not errors(c.until_ready())
        c.send(parse("rt_s", second), SYNC)
        assert errors(c.until_ready())  # already exists (or refused)
        c.send(bind("", "rt_s", "7000"), execute(), SYNC)
        got = c.until_ready()
    ran = any(t == "C" and p.startswith(b"UPDATE") for t, p in got)
    session = session_of(bastion, name)
    queries = logged(bastion, session, 2)
    if ran:
        assert any(q["kind"] == "update" and q["statement"].startswith("UPDATE")
                   and not q["blocked"] for q in queries), \
            f"the UPDATE ran ({pg_kept(db)} rows kept) but the log says {queries}"


def test_pg_error_mid_pipeline_drops_to_sync_and_stays_in_step(pg: int, db: dict[str, str]) -> None:
    """A failing Parse, then a simple Query, Flush, Describe of an unknown name and Close of the
    bastion's own names before Sync: the server skips them all, so must the relay (held)."""
    with Pg(pg, db["name"], app("pipe")) as c:
        c.send(parse("", "SELEC broken"), q("SELECT 'lost'"), message(b"H"),
               describe("S", "no_such"), message(b"C", b"Sbastion_lookups\x00"),
               message(b"C", b"Pbastion_lookups\x00"), SYNC, q("SELECT 6 * 7"))
        got = c.until_ready(2)
    assert values(got) == [["42"]], got
    assert len(errors(got)) == 1


def test_pg_refused_parse_then_bind_of_the_old_name_in_one_batch(pg: int, db: dict[str, str]
                                                                 ) -> None:
    """Parse of a valid statement, Sync; then, in one batch, a refused Parse of the same name
    and Bind/Execute of it: the refusal's error is what comes back, the server skips the rest
    (held)."""
    with Pg(pg, db["name"], app("refbind")) as c:
        c.send(parse("rt_old", "SELECT 'old' AS v"), SYNC)
        c.until_ready()
        c.send(parse("rt_old", "SELECT pg_read_file('/etc/passwd')"), bind("", "rt_old"),
               execute(), SYNC)
        got = c.until_ready()
        assert any("bastion: refused" in e for e in errors(got)), got
        assert values(got) == []
        c.send(q("SELECT 'after'"))
        assert values(c.until_ready()) == [["after"]]


def test_pg_function_call_and_query_mid_pipeline_keep_responses_in_order(
        pg: int, db: dict[str, str]) -> None:
    """A FunctionCall (refused, sent to the server as a failing Query) in the middle of an
    unsynced pipeline, followed by more of the pipeline: every response still comes to the
    right request, the refusal in the FunctionCall's place (held)."""
    fcall = message(b"F", struct.pack("!i", 2324) + b"\x00\x00" + b"\x00\x01"
                    + struct.pack("!i", 1) + b"1" + b"\x00\x00")
    with Pg(pg, db["name"], app("fcall")) as c:
        c.send(parse("", "SELECT 'one'"), bind("", ""), execute(), fcall,
               parse("", "SELECT 'two'"), bind("", ""), execute(), SYNC)
        got = c.until_ready(2)
        assert any("FunctionCall" in e for e in errors(got)), got
        c.send(q("SELECT 'still in step'"))
        assert values(c.until_ready()) == [["still in step"]]


def test_pg_portal_suspended_paging_cannot_exceed_max_rows(pglim: int, db: dict[str, str]
                                                           ) -> None:
    """FINDING (low). max_rows is counted per Execute: Execute with a row limit of 2, repeated
    on the same portal (PortalSuspended between), hands the client the whole result of one
    statement, 2 rows at a time, past max_rows = 3."""
    with Pg(pglim, db["name"], app("suspend")) as c:
        c.send(parse("", "SELECT g FROM generate_series(1, 10) g"), bind("p", ""),
               *[execute("p", 2) for _ in range(6)], SYNC)
        got = c.until_ready()
    assert len(values(got)) <= 3, f"{len(values(got))} rows of one statement"


def test_pg_lookup_naming_mid_pipeline_is_invisible_and_in_step(pg: int, db: dict[str, str]
                                                                ) -> None:
    """A lookup on a masked column inside a pipeline makes the relay insert its own
    Close/Parse/Bind/Execute/Close of `bastion_lookups`; a client that uses that name itself
    neither sees the bastion's responses nor loses step (held)."""
    with Pg(pg, db["name"], app("lookup")) as c:
        c.send(parse("bastion_lookups", "SELECT 'mine' AS v"), bind("", "bastion_lookups"),
               execute(), parse("", f"SELECT name FROM customers WHERE ssn = '{SSN}'"),
               bind("", ""), execute(), SYNC)
        got = c.until_ready()
        c.send(q("SELECT 'after'"))
        after = c.until_ready()
    rows = values(got)
    assert ["mine"] in rows and [PEOPLE[0][1]] in rows, got
    assert not any("set_config" in str(r) or "h:" in str(r) for r in rows)
    assert values(after) == [["after"]]


def test_pg_unscrubbed_undescribed_rows_hold_no_secret(pg: int, db: dict[str, str]) -> None:
    """Execute without Describe (so the relay cannot scrub computed columns), of expressions
    over masked columns, the lookup column and the server's own settings: the database's
    masking is all there is, and it holds (held)."""
    texts = [
        "SELECT ssn || '', upper(email), card_number, ssn__lookup FROM customers",
        "SELECT string_agg(ssn, ',') FROM customers",
        "SELECT row_to_json(c)::text FROM customers c",
        "SELECT ssn FROM public.customers",
        "SELECT * FROM customer_view",
        "SELECT peek()",
        "SELECT current_setting('bastion.lookups', true)",
    ]
    with Pg(pg, db["name"], app("nodesc")) as c:
        for text in texts:
            c.send(parse("", text), bind("", ""), execute(), SYNC)
            got = c.until_ready()
            seen = str(values(got)) + " ".join(errors(got))
            assert not [s for s in SECRETS if s in seen], (text, seen)


def test_pg_search_path_at_start_up_does_not_unmask(bastion: BastionProcess, pg: int,
                                                    db: dict[str, str]) -> None:
    """search_path is passed at start-up: pointing it at `public` (the raw tables) must not
    show raw values (held: the grant account has no privilege on the raw columns)."""
    with Pg(pg, db["name"], app("path"), search_path="public") as c:
        c.send(q("SELECT ssn, email, card_number FROM customers"))
        got = c.until_ready()
        c.send(q("SET search_path = public; SELECT ssn FROM customers"))
        got += c.until_ready()
    seen = str(values(got)) + " ".join(errors(got))
    assert not [s for s in SECRETS if s in seen], seen


def test_pg_start_up_tricks_are_refused(pg: int, db: dict[str, str]) -> None:
    """options=-c…, replication, client_encoding=SJIS, another database (held)."""
    for params in ({"options": "-c standard_conforming_strings=off"},
                   {"client_encoding": "SJIS"}, {"replication": "database"},
                   {"standard_conforming_strings": "off"}, {"database": "postgres"}):
        with pytest.raises(ConnectionError, match="bastion"):
            Pg(pg, params.pop("database", db["name"]), app("start"), **params).close()


def test_pg_cancel_request_cannot_reach_another_users_session(pg: int, erin_pg: int,
                                                              db: dict[str, str]) -> None:
    """erin's BackendKeyData (the server's pid and the bastion's key) in alice's hands: alice's
    CancelRequest through her own tunnel must not cancel erin's query (held)."""
    with Pg(erin_pg, db["name"], app("victim"), user="erin") as victim:
        pid, key = victim.key
        victim.send(q("SELECT pg_sleep(2), 'finished'"))
        time.sleep(0.5)
        for guess in (key, b"\x00\x00\x00\x00", key + b"\x00"):
            with socket.create_connection(("127.0.0.1", pg), timeout=10) as sock:
                sock.sendall(cancel_packet(pid, guess))
                sock.settimeout(5)
                with contextlib.suppress(OSError):
                    sock.recv(100)
        got = victim.until_ready()
    assert not errors(got), errors(got)
    assert values(got) == [["", "finished"]]


def test_pg_huge_and_split_messages_do_not_hang_others(pg: int, db: dict[str, str]) -> None:
    """A Query announced at 60 MiB and never finished, and one sent a byte at a time: others
    are served meanwhile (held)."""
    hog = socket.create_connection(("127.0.0.1", pg), timeout=10)
    try:
        hog.sendall(startup_packet({"user": "alice", "database": db["name"]}))
        time.sleep(0.3)
        hog.sendall(b"Q" + struct.pack("!i", 60 << 20) + b"SELECT '" + b"x" * (1 << 20))
        with Pg(pg, db["name"], app("slow")) as c:
            for byte in q("SELECT 'drip'"):
                c.sock.sendall(bytes([byte]))
            assert values(c.until_ready()) == [["drip"]]
    finally:
        hog.close()


# MySQL --------------------------------------------------------------------------------------------


def my_connect(port: int, db: dict[str, str], **kw: Any) -> Any:
    return pymysql.connect(host="127.0.0.1", port=port, user="alice", password="x",
                           database=db["name"], autocommit=True, connect_timeout=20,
                           client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS, **kw)


def test_my_verdict_cache_lets_no_backslash_escapes_through(my: int, db: dict[str, str],
                                                            notes: list[int]) -> None:
    """FINDING. `SET sql_mode = 'STRICT_TRANS_TABLES'` is allowed and its verdict cached as
    `SET sql_mode = ?`; `SET sql_mode = 'NO_BACKSLASH_ESCAPES'` then passes from the cache.
    From then on `'a\\'` ends a string for the server but not for the bastion: the bastion
    checks `UPDATE notes SET body = ? WHERE id = ?`, the server runs an UPDATE of every row
    (the WHERE clause is behind a `#` comment)."""
    conn = my_connect(my, db)
    with conn, conn.cursor() as cur:
        cur.execute("SET sql_mode = 'STRICT_TRANS_TABLES'")
        with contextlib.suppress(pymysql.err.MySQLError):
            cur.execute("SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        with contextlib.suppress(pymysql.err.MySQLError):
            cur.execute("UPDATE notes SET body = 'a\\' # ' WHERE id = 7001")
    assert my_kept(db) >= 2, "every row was updated: the WHERE clause was smuggled"


def test_my_smuggled_second_statement_is_in_the_query_log(bastion: BastionProcess, my: int,
                                                         db: dict[str, str],
                                                         notes: list[int]) -> None:
    """FINDING (same cause as the sql_mode one): with NO_BACKSLASH_ESCAPES on, the bastion reads
    `SELECT 'a\\'; DELETE FROM notes; #'` as ONE select of a string; the server runs a SELECT
    and a DELETE of every row, and the query log holds only `SELECT ?`."""
    conn = my_connect(my, db, program_name=app("mysmuggle"))
    with conn, conn.cursor() as cur:
        cur.execute("SET sql_mode = 'STRICT_TRANS_TABLES'")
        with contextlib.suppress(pymysql.err.MySQLError):
            cur.execute("SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        with contextlib.suppress(pymysql.err.MySQLError):
            cur.execute("SELECT 'a\\'; DELETE FROM notes; #'")
            while cur.nextset():
                pass
    deleted = my_kept(db) < 3
    if deleted:
        # The query log is written behind the relay, after the client has its answers.
        wait_for(lambda: any(q["kind"] == "delete" and q["target"] == "mydb"
                             for q in control_json(bastion, "carol", "queries", "--limit", "50")))
        queries = [q for q in control_json(bastion, "carol", "queries", "--limit", "50")
                   if q["target"] == "mydb"]
        assert any(q["kind"] == "delete" for q in queries), \
            f"every row of notes was deleted, and the log says {queries[:3]}"


def test_my_verdict_cache_lets_a_gbk_client_charset_through(my: int, db: dict[str, str]) -> None:
    """FINDING (same cause): `SET NAMES 'utf8mb4'` primes the cache for `SET NAMES ?`, and
    `SET NAMES 'gbk'` (0xBF5C swallows a backslash) passes."""
    conn = my_connect(my, db)
    with conn, conn.cursor() as cur:
        cur.execute("SET NAMES 'utf8mb4'")
        with contextlib.suppress(pymysql.err.MySQLError):
            cur.execute("SET NAMES 'gbk'")
        cur.execute("SELECT @@character_set_client")
        charset = cur.fetchone()[0]
    assert charset != "gbk"


@pytest.mark.parametrize("statements", [
    ["EXECUTE IMMEDIATE 'UPDATE notes SET body = 1'"],
    ["SET @rt = 'UPDATE notes SET body = 2'", "PREPARE rt FROM @rt", "EXECUTE rt"],
])
def test_my_dynamic_sql_cannot_run_an_update_without_where(my: int, db: dict[str, str],
                                                           notes: list[int],
                                                           statements: list[str]) -> None:
    """FINDING. On a target without read_only or blocked_statements, a statement prepared from a
    variable, and MariaDB's EXECUTE IMMEDIATE (read as `EXECUTE` of a statement named
    "immediate" the bastion does not know), run without a check: an UPDATE without WHERE (or
    LOAD_FILE) runs."""
    conn = my_connect(my, db)
    with conn, conn.cursor() as cur:
        for statement in statements:
            with contextlib.suppress(pymysql.err.MySQLError):
                cur.execute(statement)
    assert my_kept(db) == 3


def test_my_refusals_and_other_databases_hold(my: int, db: dict[str, str]) -> None:
    """LOAD_FILE in many spellings, LOAD DATA LOCAL, INTO OUTFILE, executable comments, USE of
    the raw database and of mysql, qualified names of raw tables (held)."""
    conn = my_connect(my, db)
    with conn, conn.cursor() as cur:
        for text in ("SELECT LoAd_FiLe('/etc/passwd')", "SELECT `load_file`('/etc/passwd')",
                     "SELECT 1; SELECT load_file('/etc/passwd')",
                     "PREPARE s FROM 'SELECT load_file(''/etc/passwd'')'",
                     "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE notes",
                     "SELECT 1 INTO OUTFILE '/tmp/rt-out'",
                     "SELECT N'x\\' , 1, ' , load_file(0x2f6574632f706173737764) # '"):
            with pytest.raises(pymysql.err.MySQLError) as refused:
                cur.execute(text)
            assert "bastion" in str(refused.value), text
        seen = ""
        # A trailing executable comment is dropped with the comment (the server runs less).
        for text in ("SELECT 1 /*!50000 , load_file('/etc/passwd') */",
                     f"SELECT ssn, email, card_number FROM {db['name']}.customers",
                     f"USE {db['name']}", "SELECT ssn FROM customers", "USE mysql",
                     "SELECT authentication_string FROM mysql.user"):
            try:
                cur.execute(text)
                seen += str(cur.fetchall())
            except pymysql.err.MySQLError as exc:
                seen += str(exc)
        assert not [s for s in SECRETS if s in seen], seen
        assert "root:" not in seen


def my_packet(payload: bytes, seq: int = 0) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def my_read(sock: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    length, seq = int.from_bytes(head[:3], "little"), head[3]
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return seq, body


def test_my_raw_commands_hold(my: int, db: dict[str, str]) -> None:
    """Raw commands after a PyMySQL login: COM_INIT_DB of mysql, COM_FIELD_LIST of a raw table
    via a qualified name, COM_STMT_EXECUTE of an id never prepared, COM_STMT_SEND_LONG_DATA to
    it, COM_CHANGE_USER to root, COM_RESET_CONNECTION then a query: answers stay in step and
    nothing raw comes back (held)."""
    conn = my_connect(my, db)
    sock = conn._sock
    assert sock is not None
    seen = b""
    try:
        for payload in (b"\x02mysql", b"\x04customers\x00ssn", b"\x17\x63\x00\x00\x00\x00"
                        b"\x01\x00\x00\x00", b"\x11root\x00\x00" + db["name"].encode() + b"\x00",
                        b"\x1f"):
            sock.sendall(my_packet(payload))
            while True:
                _, body = my_read(sock)
                seen += body
                if body[:1] in (b"\x00", b"\xff") or (body[:1] == b"\xfe" and len(body) < 9):
                    break
        sock.sendall(my_packet(b"\x18\x63\x00\x00\x00\x00\x00" + SSN.encode()))  # no reply
        sock.sendall(my_packet(b"\x03SELECT 'in step' AS v"))
        rows = b""
        while b"in step" not in rows:
            _, body = my_read(sock)
            rows += body
    finally:
        with contextlib.suppress(Exception):
            sock.close()
    assert not [s for s in SECRETS if s.encode() in seen]
    assert b"bastion" in seen  # COM_INIT_DB mysql and COM_CHANGE_USER were refused


def test_my_lookup_then_reset_connection_does_not_leak(my: int, db: dict[str, str]) -> None:
    """A lookup names a hash in @bastion_lookups; COM_RESET_CONNECTION clears it; a second
    lookup of the same value still works and the lookup column shows only hashes (held)."""
    conn = my_connect(my, db)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM customers WHERE ssn = %s", (SSN,))
        assert cur.fetchall() == ((PEOPLE[0][1],),)
        conn._execute_command(0x1F, b"")
        conn._read_ok_packet()
        cur.execute("SELECT name, ssn__lookup FROM customers WHERE ssn = %s", (SSN,))
        rows = cur.fetchall()
    assert rows and rows[0][0] == PEOPLE[0][1], rows
    assert not [s for s in SECRETS if s in str(rows)]
