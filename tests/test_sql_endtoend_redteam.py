"""Red team round 7: the whole path through the real SSH front door, and where values could land
outside result cells (query log, audit trail, the bastion's log, recordings, error messages,
echo, `\\d`, exec options, stdin), plus grants, read-only and blocked-statement guardrails end to
end, and sessions that end mid-result. Only attempts the bastion handles correctly are kept here;
the bypasses found this round are reported, not tested."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import psycopg
import pymysql
import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    setup_databases,
    ssh_argv,
    wait_for,
)
from sqldb import MY_HOST, MY_PORT, PG_ADMIN, assert_no_secrets, seeded_databases, target_toml
from test_sql_grants import ENV, USERS, approved_cert, targets
from test_sql_sessions import Screen

from bastion.demo_data import PEOPLE
from recorder import RecordingReader, event_to_json, load_auditor_private_key

BLOCKED = 'blocked_statements = ["drop", "truncate", "alter", "grant"]\nmax_rows = 3\n'
EXTRA = """
[[roles]]
name = "db-rt7"
request = ["pgblk", "myblk"]

[[roles]]
name = "db-rt7-approver"
approve = ["pgblk", "myblk"]
"""
SSN = PEOPLE[1][3]  # a seeded value typed as a literal in many spellings: it must be kept nowhere


@pytest.fixture(scope="module")
def db() -> Iterator[dict[str, str]]:
    yield from seeded_databases()


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory, db: dict[str, str]) -> Iterator[BastionProcess]:
    os.environ[ENV] = db["password"]
    users = {**USERS, "alice": [*USERS["alice"], "db-rt7"], "bob": [*USERS["bob"], "db-rt7-approver"]}
    world = World(root=tmp_path_factory.mktemp("rt7"), port=free_port(), users=users)
    world.extra = targets(db) + "".join(
        target_toml(name, kind, f"127.0.0.1:{port}", db, BLOCKED)
        for name, kind, port in (("pgblk", "postgres", 5432), ("myblk", "mysql", MY_PORT))) + EXTRA
    world.write_config()
    setup_databases(world, "pgdb", "mydb", "pgro", "myro", "pgblk", "myblk")
    proc = BastionProcess(world)
    proc.start()
    try:
        yield proc
        unmasked = {r["id"] for r in control_json(proc, "bob", "requests", "--all") if r["unmasked"]}
        skip = {s["id"] for s in control_json(proc, "carol", "sessions", "--limit", "5000")
                if s["request_id"] in unmasked}
    finally:
        proc.stop()
    _leak_scan(proc, skip)


def _leak_scan(bastion: BastionProcess, unmasked_sessions: set[str]) -> None:
    root = bastion.world.root
    for name, text in (("the bastion's log", bastion.log.read_text()),
                       ("the audit log file", (root / "data" / "audit.jsonl").read_text())):
        assert_no_secrets(text, name)
        assert os.environ[ENV] not in text and "Traceback" not in text, name
    identity = load_auditor_private_key(root / "keys" / "auditor")
    for path in (root / "recordings").glob("*.rec"):
        with RecordingReader(path, identity) as reader:
            events = [event_to_json(e) for e in reader]
        if path.stem in unmasked_sessions:  # results of an unmasked grant hold values; statements not
            events = [e for e in events if e["type"] == "sql_statement"]
        assert_no_secrets("\n".join(json.dumps(e) for e in events), f"recording {path.name}")


@pytest.fixture(scope="module")
def certs(bastion: BastionProcess) -> dict[str, Path]:
    return {t: approved_cert(bastion, "alice", t) for t in ("pgdb", "mydb", "pgro", "myro", "pgblk", "myblk")}


def run(bastion: BastionProcess, cert: Path, target: str, text: str | None = None, *,
        user: str = "alice", stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    args = ssh_argv(bastion, bastion.world.key(user), target, cert=cert,
                    options=("-T",) if text is None else ())
    if text is not None:
        args += ["--", text]
    return subprocess.run(args, input=stdin or b"", capture_output=True, timeout=60)


def admin_scalar(target: str, db: dict[str, str], sql: str) -> object:
    if target.startswith("pg"):
        base, _, _ = PG_ADMIN.rpartition("/")
        with psycopg.connect(f"{base}/{db['name']}", autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
    else:
        with pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", database=db["name"]) as conn, \
                conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
    return row[0] if row else None


# Guardrails end to end --------------------------------------------------------------------------

READ_ONLY_WRITES = {
    "pgro": [
        "SET TRANSACTION READ WRITE",
        "BEGIN READ WRITE; INSERT INTO notes VALUES (701, 'x'); COMMIT",
        "BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE; "
        "INSERT INTO notes VALUES (702, 'x'); COMMIT",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE,READ WRITE",
        "BEGIN TRANSACTION READ WRITE",
        "SET/**/TRANSACTION\nREAD\tWRITE",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SET SESSION default_transaction_read_only TO 'off'",
        "SET LOCAL transaction_read_only = off",
        "RESET ALL",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off",
        "WITH x AS (INSERT INTO notes VALUES (703, 'x') RETURNING 1) SELECT * FROM x",
        "SELECT id FROM customers FOR NO KEY UPDATE",
        "SELECT id FROM customers FOR KEY SHARE",
        "TABLE notes FOR UPDATE",
        "WITH c AS MATERIALIZED (SELECT id FROM customers FOR UPDATE) SELECT * FROM c",
        "SELECT * FROM (SELECT id FROM customers FOR UPDATE) s",
        "SELECT lo_create(4242)",
        "SELECT pg_notify('c', 'x')",
        "NOTIFY c",
        "COPY notes FROM STDIN",
        "DO $$BEGIN INSERT INTO notes VALUES (704, 'y'); END$$",
        "CALL nothing()",
        "SELECT nextval('x')",
        "SELECT pg_advisory_lock(1)",
        "LOCK TABLE notes",
        "PREPARE w AS INSERT INTO notes VALUES (705, 'p'); EXECUTE w",
        "EXPLAIN ANALYZE INSERT INTO notes VALUES (706, 'e')",
        "SELECT peek()",
        "CREATE TEMP TABLE rt7_t (a int)",
        "DISCARD ALL",
        "SET SESSION AUTHORIZATION DEFAULT",
        "SELECT 1; INSERT INTO notes VALUES (707, 'f')",
    ],
    "myro": [
        "SET SESSION TRANSACTION READ WRITE",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE",
        "SET TRANSACTION READ WRITE, ISOLATION LEVEL READ COMMITTED",
        "START TRANSACTION READ WRITE",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ WRITE",
        "SET @@SESSION.transaction_read_only = 0",
        "SET @@session.tx_read_only := 0",
        "SET STATEMENT tx_read_only = 0 FOR INSERT INTO notes VALUES (711, 'a')",
        "SET autocommit = 0",
        "LOCK TABLES notes WRITE",
        "HANDLER notes OPEN",
        "DO GET_LOCK('x', 1)",
        "SELECT GET_LOCK('x', 1)",
        "CALL nothing()",
        "REPLACE INTO notes VALUES (712, 'c')",
        "WITH x AS (SELECT 1) INSERT INTO notes SELECT 713, 'g'",
        "INSERT INTO notes WITH x AS (SELECT 714 a) SELECT a, 'h' FROM x",
        "SELECT id FROM customers LOCK IN SHARE MODE",
        "SELECT id FROM customers FOR UPDATE SKIP LOCKED",
        "SELECT sleep(0) FROM customers FOR UPDATE WAIT 1",
        "SELECT 1 INTO OUTFILE '/tmp/rt7_out'",
        "PREPARE s FROM 'INSERT INTO notes VALUES (715, 1)'; EXECUTE s",
        "SET @q = 'INSERT INTO notes VALUES (716, 1)'; PREPARE s FROM @q; EXECUTE s",
        "EXECUTE IMMEDIATE CONCAT('INSERT INTO notes ', 'VALUES (717, 1)')",
        "XA START 'x'",
        "CREATE TEMPORARY TABLE rt7_t (a int)",
        "SELECT 1; INSERT INTO notes VALUES (718, 'f')",
    ],
}


@pytest.mark.parametrize("target", ["pgro", "myro"])
def test_read_only_target_refuses_read_write_modes_locks_and_hidden_writes(
        bastion: BastionProcess, certs: dict[str, Path], db: dict[str, str], target: str) -> None:
    for sql in READ_ONLY_WRITES[target]:
        result = run(bastion, certs[target], target, sql)
        assert result.returncode == 1, (sql, result.stdout, result.stderr)
        assert b"refused" in result.stderr or b"read-only" in result.stderr, (sql, result.stderr)
    # Versioned comments are stripped before the server sees them (MariaDB would run them).
    hidden = run(bastion, certs[target], target,
                 "SELECT 1 AS a /*!50000 ; INSERT INTO notes VALUES (719, 'v') */")
    assert hidden.returncode == 0
    assert admin_scalar(target, db, "SELECT count(*) FROM notes WHERE id BETWEEN 700 AND 799") == 0


@pytest.mark.parametrize("target", ["pgblk", "myblk"])
def test_blocked_kinds_stay_blocked_in_prepare_execute_and_multi_statements(
        bastion: BastionProcess, certs: dict[str, Path], db: dict[str, str], target: str) -> None:
    attempts = ["SELECT 1; DROP TABLE notes", "EXPLAIN ANALYZE DROP TABLE notes"]
    if target == "myblk":
        attempts += [
            "PREPARE s FROM 'DROP TABLE notes'",
            "SET @q = 'DROP TABLE notes'; PREPARE s FROM @q; EXECUTE s",
            "EXECUTE IMMEDIATE 'DROP TABLE notes'",
            "EXECUTE IMMEDIATE CONCAT('DR', 'OP TABLE notes')",
            "PREPARE s FROM 'TRUNCATE notes'; EXECUTE s",
        ]
    else:
        attempts += ["PREPARE s AS DROP TABLE notes", "TRUNCATE notes",
                     "WITH x AS (SELECT 1) SELECT 1; ALTER TABLE notes ADD COLUMN z int"]
    for sql in attempts:
        result = run(bastion, certs[target], target, sql)
        assert result.returncode == 1 and b"refused" in result.stderr, (sql, result.stderr)
    stripped = run(bastion, certs[target], target, "/*!DROP TABLE notes */ SELECT 1 AS a")
    assert stripped.returncode == 0
    table = "'notes'"
    schema = "'public'" if target == "pgblk" else f"'{db['name']}'"
    assert admin_scalar(target, db, f"SELECT count(*) FROM information_schema.tables "
                                    f"WHERE table_name = {table} AND table_schema = {schema}") == 1


@pytest.mark.parametrize("target", ["pgblk", "myblk"])
def test_max_rows_cuts_every_result_cursors_and_several_statements(
        bastion: BastionProcess, certs: dict[str, Path], target: str) -> None:
    several = run(bastion, certs[target], target,
                  "SELECT id FROM customers ORDER BY id; SELECT id FROM customers ORDER BY id DESC")
    assert several.returncode == 0
    assert several.stdout.count(b"cut at max_rows = 3") == 2 and b"(3 rows)" in several.stdout
    if target == "pgblk":
        cursor = run(bastion, certs[target], target,
                     "BEGIN; DECLARE c CURSOR FOR SELECT id FROM customers ORDER BY id; "
                     "FETCH 10 FROM c; COMMIT")
        assert cursor.returncode == 0 and b"cut at max_rows = 3" in cursor.stdout
        assert b"\n4\n" not in cursor.stdout and b"\n5\n" not in cursor.stdout


# Where values could land besides result cells ---------------------------------------------------

LITERALS = {
    "pgdb": [
        f"SELECT name FROM customers WHERE ssn = E'{SSN}'",
        f"SELECT name FROM customers WHERE ssn = $${SSN}$$",
        f"SELECT name FROM customers WHERE ssn = $q${SSN}$q$",
        f"SELECT name FROM customers WHERE ssn = '{SSN}'::text",
        f"SELECT name FROM customers WHERE ssn IN ('{SSN}')",
        f"PREPARE p7 AS SELECT name FROM customers WHERE ssn = $1; EXECUTE p7('{SSN}')",
        f"SELECT name FROM customers WHERE ssn = '{SSN}' -- '{SSN}'",
        f"SELECT name FROM customers /* {SSN} */ WHERE id = 1",
        f"SELECT 1/0 FROM customers WHERE ssn = '{SSN}'",
        f"SELECT name FROM customers WHERE ssn = '{SSN}' AND no_such_column = 1",
        f"INSERT INTO customers (id, name, ssn) VALUES (98, 'X', '{SSN}')",
    ],
    "mydb": [
        f'SELECT name FROM customers WHERE ssn = "{SSN}"',
        f"SELECT name FROM customers WHERE ssn = _utf8mb4'{SSN}'",
        f"SELECT name FROM customers WHERE ssn = N'{SSN}'",
        f"SELECT name FROM customers WHERE ssn = CAST('{SSN}' AS CHAR)",
        f"SELECT name FROM customers WHERE id = 1 # {SSN}",
        f"SET @x = '{SSN}'",
        f"SELECT 1/0 FROM customers WHERE ssn = '{SSN}'",
        f"SELECT name FROM customers WHERE ssn = '{SSN}' AND no_such_column = 1",
        f"INSERT INTO customers (id, name, ssn) VALUES (98, 'X', '{SSN}')",
    ],
}


@pytest.mark.parametrize("target", ["pgdb", "mydb"])
def test_typed_literals_reach_no_log_in_any_spelling(
        bastion: BastionProcess, certs: dict[str, Path], target: str) -> None:
    for sql in LITERALS[target]:
        run(bastion, certs[target], target, sql)
        run(bastion, certs[target], target, stdin=(sql + ";\n").encode())
    logged = json.dumps(control_json(bastion, "carol", "queries", "--limit", "5000"))
    assert_no_secrets(logged, "the query log")
    audit = json.dumps(control_json(bastion, "carol", "audit", "--limit", "5000"))
    assert_no_secrets(audit, "the audit trail")
    assert_no_secrets((bastion.world.root / "data" / "audit.jsonl").read_text(), "audit.jsonl")
    assert_no_secrets(bastion.log.read_text(), "the bastion's log")


@pytest.mark.parametrize("target", ["pgdb", "mydb"])
def test_escape_sequences_in_values_are_shown_escaped(
        bastion: BastionProcess, certs: dict[str, Path], db: dict[str, str], target: str) -> None:
    nasty = "a\x1b]0;pwned\x07b\x1b[2Jc\rd\x9b31me\u202ef"
    if target == "pgdb":
        base, _, _ = PG_ADMIN.rpartition("/")
        with psycopg.connect(f"{base}/{db['name']}", autocommit=True) as conn:
            conn.execute("INSERT INTO notes VALUES (%s, %s)", (750, nasty))
    else:
        with pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", database=db["name"],
                             autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO notes VALUES (%s, %s)", (750, nasty))
    for fmt in ("--format table", "--expanded", "--csv", "--tsv"):
        result = run(bastion, certs[target], target, f"{fmt} SELECT body FROM notes WHERE id = 750")
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode()
        for raw in ("\x1b", "\x07", "\r", "\x9b", "\u202e"):
            assert raw not in out, (fmt, out)
        assert "\\x1b" in out and "\\x9b" in out
    as_json = run(bastion, certs[target], target, "--json SELECT body FROM notes WHERE id = 750")
    assert "\x1b" not in as_json.stdout.decode() and "\x07" not in as_json.stdout.decode()
    assert json.loads(as_json.stdout)[0]["body"] == nasty  # JSON keeps the value, escaped


@pytest.mark.parametrize("target", ["pgdb", "mydb"])
async def test_console_describe_quotes_the_name_and_logs_it_redacted(
        bastion: BastionProcess, certs: dict[str, Path], target: str) -> None:
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    async with asyncssh.connect(
        "127.0.0.1", bastion.world.port, username=target, known_hosts=str(bastion.known_hosts()),
        client_keys=[(key, asyncssh.read_certificate(str(certs[target])))], agent_path=None, config=None,
    ) as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(120, 30))
        screen = Screen(proc)
        await screen.expect(f"{target}=> ")
        for name in ("customers' OR '1'='1", "x' UNION SELECT ssn, ssn, ssn FROM customers --",
                     "customers\\' OR 1=1 -- ", f"x' OR ssn = '{SSN}"):
            proc.stdin.write(f"\\d {name}\r")
            assert "(0 rows)" in await screen.expect(f"{target}=> ")
        proc.stdin.write("\\d customers\r")
        assert "card_number" in await screen.expect("(6 rows)")
        proc.stdin.write("\\format nope\r")
        await screen.expect("takes one of")
        proc.stdin.write("\\format csv\r")
        await screen.expect(f"Output format is csv.\r\n{target}=> ")
        proc.stdin.write("SELECT id, ssn FROM customers WHERE id = 2;\r")
        await screen.expect("id,ssn\r\n2,****\r\n")
        proc.stdin.write("\\q\r")
        await proc.wait_closed()
    assert_no_secrets(screen.seen.replace(SSN, ""), "the console")  # only the echo of what was typed
    logged = json.dumps(control_json(bastion, "carol", "queries", "--limit", "5000"))
    assert_no_secrets(logged, "the query log")


@pytest.mark.parametrize("target", ["pgdb", "mydb"])
def test_exec_options_binary_and_oversized_input_end_cleanly(
        bastion: BastionProcess, certs: dict[str, Path], target: str) -> None:
    cert = certs[target]
    bad = run(bastion, cert, target, "--format nope SELECT 1")
    assert bad.returncode == 2 and b"--format must be one of" in bad.stderr
    eq = run(bastion, cert, target, "--format=csv SELECT 1 AS a")
    assert eq.returncode == 0 and eq.stdout.splitlines() == [b"a", b"1"]
    last = run(bastion, cert, target, "--json --csv SELECT 1 AS a")
    assert last.stdout.splitlines() == [b"a", b"1"]
    comment = run(bastion, cert, target, "-- a note\nSELECT 2 AS b")
    assert comment.returncode == 0 and b"(1 row)" in comment.stdout
    binary = run(bastion, cert, target, stdin=b"SELECT '\xff\xfe' AS a, 1 AS b;\n")
    assert binary.returncode == 0 and "\ufffd".encode() in binary.stdout
    deep = run(bastion, cert, target, stdin=("SELECT " + "1+" * 100_000 + "1 AS x;\n").encode())
    assert deep.returncode == 1 and deep.stderr.startswith((b"ERROR", b"bastion: refused"))
    long_literal = run(bastion, cert, target, stdin=b"SELECT '" + b"z" * 2_000_000 + b"' AS big;\n")
    assert long_literal.returncode == 0 and b"z" * 59 + "\u2026\n(1 row)".encode() in long_literal.stdout
    after = run(bastion, cert, target, "SELECT 'ok' AS s")
    assert after.returncode == 0 and b"ok" in after.stdout


# Grants ---------------------------------------------------------------------------------------

def test_certificates_are_bound_to_their_target_and_key(
        bastion: BastionProcess, certs: dict[str, Path]) -> None:
    other_target = run(bastion, certs["pgdb"], "mydb", "SELECT 1")
    assert other_target.returncode != 0 and b"request" in other_target.stderr
    unmasked = approved_cert(bastion, "alice", "pgdb", "--unmasked")
    stolen = run(bastion, unmasked, "pgdb", f"SELECT ssn FROM customers WHERE ssn = '{SSN}'", user="erin")
    assert stolen.returncode != 0 and SSN.encode() not in stolen.stdout
    masked = run(bastion, certs["pgdb"], "pgdb", "SELECT ssn FROM customers WHERE id = 2")
    assert masked.returncode == 0 and SSN.encode() not in masked.stdout


async def test_revoking_an_unmasked_grant_ends_its_live_console_and_future_logins(
        bastion: BastionProcess) -> None:
    req = control_json(bastion, "alice", "request", "pgdb", "--reason", "INC-7: fraud", "--unmasked")
    control_json(bastion, "bob", "approve", str(req["id"]))
    cert_path = bastion.world.root / f"alice-pgdb-{req['id']}-unmasked.pub"
    cert_path.write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    async with asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="pgdb", known_hosts=str(bastion.known_hosts()),
        client_keys=[(key, asyncssh.read_certificate(str(cert_path)))], agent_path=None, config=None,
    ) as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(100, 30))
        screen = Screen(proc)
        await screen.expect("pgdb=> ")
        proc.stdin.write("SELECT ssn FROM customers WHERE id = 2;\r")
        assert SSN in await screen.expect("(1 row)")
        control_json(bastion, "bob", "revoke", str(req["id"]))
        async with asyncio.timeout(10):
            await proc.wait_closed()
        assert proc.exit_status != 0
    again = run(bastion, cert_path, "pgdb", "SELECT ssn FROM customers WHERE id = 2")
    assert again.returncode != 0 and b"revoked" in again.stderr and SSN.encode() not in again.stdout
    # The client's channel closes first; the session's end is written once its recording is
    # closed (within the recording grace period).
    assert wait_for(lambda: any(
        s["request_id"] == req["id"] and "revoked" in (s.get("end_reason") or "")
        for s in control_json(bastion, "carol", "sessions")), 15), \
        control_json(bastion, "carol", "sessions")


# Sessions that end mid-result -----------------------------------------------------------------

async def test_huge_results_closed_channels_and_ctrl_c_storms_keep_recordings_intact(
        bastion: BastionProcess, certs: dict[str, Path]) -> None:
    before = set((bastion.world.root / "recordings").glob("*.rec"))
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    async with asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="pgdb", known_hosts=str(bastion.known_hosts()),
        client_keys=[(key, asyncssh.read_certificate(str(certs["pgdb"])))], agent_path=None, config=None,
    ) as conn:
        big = await conn.create_process(
            "SELECT repeat('x', 2000) AS rt7_big FROM generate_series(1, 500000)", encoding=None)
        assert len(await big.stdout.read(100_000)) > 0
        big.close()  # the client closes its channel mid-result
        console = await conn.create_process(term_type="xterm", term_size=(100, 30), encoding=None)
        await console.stdout.read(1000)
        console.stdin.write(b"SELECT repeat('y', 500) AS rt7_y FROM generate_series(1, 200000);\r")
        await asyncio.sleep(0.3)
        for _ in range(200):
            console.stdin.write(b"\x03")
        console.stdin.write(b"SELECT 'still-alive' AS s;\r")
        seen = b""
        async with asyncio.timeout(30):
            while b"still-alive\r\n(1 row)" not in seen[-4000:]:
                chunk = await console.stdout.read(65536)
                assert chunk, seen[-300:]
                seen += chunk
        console.stdin.write(b"\\q\r")
        await console.wait_closed()
        assert console.exit_status == 0
    async with asyncio.timeout(15):
        while True:
            sessions = [s for s in control_json(bastion, "carol", "sessions")
                        if s["target"] == "pgdb" and s["status"] == "live"]
            if not sessions:
                break
            await asyncio.sleep(0.2)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        running = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%rt7_big%' "
                                "AND pid <> pg_backend_pid()").fetchone()
    assert running is not None and running[0] == 0
    new = set((bastion.world.root / "recordings").glob("*.rec")) - before
    assert len(new) >= 2
    for path in new:
        verify = subprocess.run(
            [sys.executable, "-m", "bastion.cli", "recordings", "verify", str(path),
             "--config", str(bastion.world.config)], capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0 and "intact" in verify.stdout, verify.stdout + verify.stderr
