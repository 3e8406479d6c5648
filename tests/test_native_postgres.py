"""Native PostgreSQL clients through `ssh -L` to a database target: psql, pgbench, psycopg 3 and
asyncpg against the real server, through the real bastion and the real OpenSSH client."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    ended_session,
    free_port,
    grant_account,
    running_statements,
    setup_databases,
    wait_for,
)
from native import approved, tunnel
from sqldb import MASKING_RULES, PG_ADMIN, SECRETS, seeded_databases, target_toml

from bastion.demo_data import PEOPLE
from bastion.wire.pg_protocol import message, startup_packet
from recorder import RecordingReader, SqlResultEvent, SqlStatementEvent, load_auditor_private_key

SSN = PEOPLE[0][3]

pytestmark = [pytest.mark.postgres, pytest.mark.sshd]

USERS = {"alice": ["developer", "db-dev"], "erin": ["developer", "db-dev"],
         "bob": ["approver", "db-approver"], "dave": ["approver"], "carol": ["auditor"]}
ROLES = """
[[roles]]
name = "db-dev"
request = ["pg*"]
request_unmasked = ["pgdb"]
[[roles]]
name = "db-approver"
approve = ["pg*"]
"""


@pytest.fixture(scope="module")
def db() -> Iterator[dict[str, str]]:
    gen = seeded_databases()
    yield next(gen)
    for _ in gen:
        pass


@pytest.fixture(scope="module")
def bench_db() -> Iterator[str]:
    """pgbench's own tables (`pgbench -i`), in a database of their own."""
    name = f"bastion_pgbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        subprocess.run(["pgbench", "-i", "-q", "-s", "1", "-h", "127.0.0.1", "-U", "postgres",
                        name], check=True, capture_output=True, timeout=120)
        yield name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory, db: dict[str, str],
            bench_db: str) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("nativepg"), port=free_port(), users=dict(USERS))
    world.extra = (target_toml("pgdb", "postgres", "127.0.0.1:5432", db, MASKING_RULES)
                   + target_toml("pgro", "postgres", "127.0.0.1:5432", db,
                                 "read_only = true\n" + MASKING_RULES)
                   + target_toml("pglim", "postgres", "127.0.0.1:5432", db, "max_rows = 3\n")
                   + target_toml("pgcap", "postgres", "127.0.0.1:5432", db, "max_rows = 250\n")
                   + target_toml("pgbench", "postgres", "127.0.0.1:5432", {"name": bench_db})
                   + ROLES)
    world.write_config()
    setup_databases(world, "pgdb")
    proc = BastionProcess(world)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def pg(bastion: BastionProcess) -> Iterator[tuple[int, int]]:
    """alice's masked grant on pgdb, through one `ssh -L`: (request id, local port)."""
    request_id, cert = approved(bastion, "alice", "pgdb")
    with tunnel(bastion, "alice", "pgdb", cert) as port:
        assert isinstance(port, int)
        yield request_id, port


def psql(port: int | str, db: dict[str, str], *args: str, stdin: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    host = "127.0.0.1" if isinstance(port, int) else str(Path(port).parent)
    number = port if isinstance(port, int) else 5432
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "psql"}
    env.pop("PGPASSWORD", None)
    return subprocess.run(["psql", "-X", "-h", host, "-p", str(number), "-U", "alice",
                           "-d", db["name"], "-v", "ON_ERROR_STOP=0", *args],
                          input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


def conninfo(port: int, db: dict[str, str], **extra: Any) -> str:
    words = {"host": "127.0.0.1", "port": port, "dbname": db["name"], "user": "alice", **extra}
    return " ".join(f"{k}={v}" for k, v in words.items())


def test_psql_masked_select_and_no_password(pg: tuple[int, int], db: dict[str, str]) -> None:
    _, port = pg
    result = psql(port, db, "-A", "-c", "SELECT name, ssn, email, card_number FROM customers "
                  "ORDER BY id")
    assert result.returncode == 0, result.stderr
    assert "Password" not in result.stderr
    leaks = [secret for secret in SECRETS if secret in result.stdout]
    assert not leaks
    assert PEOPLE[0][1] in result.stdout


def test_psql_meta_commands_copy_and_expanded(pg: tuple[int, int], db: dict[str, str]) -> None:
    _, port = pg
    result = psql(port, db, stdin="\\dt\n\\d customers\n\\x\nSELECT * FROM customers LIMIT 1;\n"
                  "COPY (SELECT id, ssn FROM customers ORDER BY id) TO STDOUT;\n")
    assert result.returncode == 0, result.stderr
    assert "customers" in result.stdout
    assert "-[ RECORD 1 ]" in result.stdout
    assert not [v for v in SECRETS if v in result.stdout]


def test_refused_statement_keeps_the_connection(pg: tuple[int, int], db: dict[str, str]) -> None:
    _, port = pg
    result = psql(port, db, stdin="SELECT pg_read_file('/etc/passwd');\nSELECT 40 + 2 AS answer;\n")
    assert "bastion: refused" in result.stderr
    assert "42" in result.stdout


def test_other_database_is_refused(pg: tuple[int, int], db: dict[str, str]) -> None:
    _, port = pg
    result = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "alice",
                             "-d", "postgres", "-c", "SELECT 1"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert f'may use database "{db["name"]}" only' in result.stderr


def test_psycopg_extended_protocol_and_pipeline(pg: tuple[int, int], db: dict[str, str]) -> None:
    _, port = pg
    with psycopg.connect(conninfo(port, db), autocommit=True) as conn:
        rows = conn.execute("SELECT id, ssn FROM customers WHERE id = %s", (1,)).fetchall()
        assert rows and not [v for v in SECRETS if v in str(rows)]
        with conn.pipeline():
            cursors = [conn.execute("SELECT %s::int + 1", (i,)) for i in range(20)]
        assert [c.fetchone()[0] for c in cursors] == list(range(1, 21))  # type: ignore[index]
        with pytest.raises(psycopg.Error, match="bastion: refused"):
            conn.execute("SELECT pg_read_file(%s)", ("/etc/passwd",))
        assert conn.execute("SELECT 7").fetchone() == (7,)


def test_asyncpg(pg: tuple[int, int], db: dict[str, str]) -> None:
    _, port = pg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="alice",
                                     database=db["name"], ssl=False)
        try:
            rows = await conn.fetch("SELECT id, ssn, email FROM customers WHERE id > $1", 0)
            stmt = await conn.prepare("SELECT $1::int * 2")
            doubled = [await stmt.fetchval(i) for i in range(5)]
            assert doubled == [0, 2, 4, 6, 8]
            return [tuple(r) for r in rows]
        finally:
            await conn.close()

    rows = asyncio.run(run())
    assert rows and not [v for v in SECRETS if v in str(rows)]


def test_lookup_by_masked_value(pg: tuple[int, int], db: dict[str, str]) -> None:
    _, port = pg
    result = psql(port, db, "-A", "-t", "-c",
                  f"SELECT count(*) FROM customers WHERE ssn = '{SSN}'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    with psycopg.connect(conninfo(port, db), autocommit=True) as conn:
        found = conn.execute(f"SELECT id FROM customers WHERE ssn = '{SSN}'").fetchall()
        assert len(found) == 1


def test_pgbench_select_only_in_every_mode(bastion: BastionProcess, bench_db: str) -> None:
    _, cert = approved(bastion, "erin", "pgbench")
    with tunnel(bastion, "erin", "pgbench", cert) as port:
        env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "erin"}
        for mode in ("simple", "extended", "prepared"):
            result = subprocess.run(["pgbench", "-n", "-S", "-M", mode, "-c", "2", "-t", "100",
                                     bench_db], capture_output=True, text=True, env=env,
                                    timeout=120)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "number of transactions actually processed: 200/200" in result.stdout
            assert "number of failed transactions: 0" in result.stdout


def test_sessions_audit_and_query_log(bastion: BastionProcess, pg: tuple[int, int],
                                      db: dict[str, str]) -> None:
    _, port = pg
    assert psql(port, db, "-c", "SELECT 'native-marker' AS marker").returncode == 0
    sessions = [s for s in control_json(bastion, "carol", "sessions")
                if s["user"] == "alice" and s["kind"] == "postgres"]
    assert sessions
    started = control_json(bastion, "carol", "audit", "--kind", "session.started")
    assert any(e.get("details", e).get("program") == "psql" for e in started), started[-3:]
    # The query log is written behind the relay (batched), after psql has its answer.
    assert wait_for(lambda: any("marker" in q["statement"]
                                for q in control_json(bastion, "carol", "queries")))
    queries = control_json(bastion, "carol", "queries")
    assert not any("native-marker" in q["statement"] for q in queries)  # literals redacted


def test_garbage_is_a_protocol_error(bastion: BastionProcess, pg: tuple[int, int],
                                     db: dict[str, str]) -> None:
    _, port = pg
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x00\x00\x00\x08GARBAGE!" * 4)
        data = sock.recv(4096)
        assert data[:1] == b"E" and b"protocol" in data
    events = wait_for(lambda: control_json(bastion, "carol", "audit", "--kind",
                                           "wire.protocol_error"))
    assert events
    assert psql(port, db, "-c", "SELECT 1").returncode == 0  # others go on


def _sleeping(bastion: BastionProcess, user: str, request_id: int) -> bool:
    """Whether the grant's account runs `SELECT pg_sleep(30)` on the server right now."""
    return any(query.startswith("SELECT pg_sleep(30)")
               for query in running_statements(bastion, user, request_id=request_id))


def test_revoke_ends_a_running_query_within_two_seconds(bastion: BastionProcess,
                                                        db: dict[str, str]) -> None:
    request_id, cert = approved(bastion, "erin", "pgdb")
    with tunnel(bastion, "erin", "pgdb", cert) as port:
        assert isinstance(port, int)
        proc = subprocess.Popen(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "erin",
                                 "-d", db["name"], "-c", "SELECT pg_sleep(30)"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The revoke must find the query running (psql connects through the tunnel first).
        assert wait_for(lambda: _sleeping(bastion, "erin", request_id), 20), proc.poll()
        assert proc.poll() is None
        started = time.monotonic()
        assert control(bastion, "erin", "revoke", str(request_id)).returncode == 0
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 2.5
        assert "bastion: " in err and "revoked" in err, err


def _recorded(bastion: BastionProcess, session_id: str) -> tuple[list[dict[str, Any]],
                                                                 list[dict[str, Any]]]:
    session = next(s for s in control_json(bastion, "carol", "sessions") if s["id"] == session_id)
    identity = load_auditor_private_key(bastion.world.root / "keys" / "auditor")
    with RecordingReader(session["recording"], identity) as reader:
        events = list(reader)
    return ([e.payload for e in events if isinstance(e, SqlStatementEvent)],
            [e.payload for e in events if isinstance(e, SqlResultEvent)])


def test_recording_holds_statements_and_results(bastion: BastionProcess, pg: tuple[int, int],
                                                db: dict[str, str]) -> None:
    _, port = pg
    env = {**os.environ, "PGAPPNAME": "recording-check"}
    subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "alice", "-d",
                    db["name"], "-c", "SELECT id, name, ssn FROM customers ORDER BY id"],
                   capture_output=True, text=True, timeout=30, env=env, check=True)
    events = control_json(bastion, "carol", "audit", "--kind", "session.started", "--limit", "500")
    sid = next(e["session_id"] for e in reversed(events)
               if e["details"].get("program") == "recording-check")
    ended_session(bastion, sid)
    statements, results = _recorded(bastion, sid)
    assert any(s["statement"].startswith("SELECT id, name, ssn FROM customers") and
               s["status"] == f"SELECT {len(PEOPLE)}" for s in statements), statements
    result = next(r for r in results if r["columns"] == ["id", "name", "ssn"])
    assert len(result["rows"]) == len(PEOPLE)
    assert result["rows"][0][1] == PEOPLE[0][1]
    assert not [v for v in SECRETS if v in str(results)]


def test_unix_socket_forward(bastion: BastionProcess, db: dict[str, str], tmp_path: Path) -> None:
    request_id, cert = approved(bastion, "erin", "pgdb")
    account = grant_account(bastion, "erin", request_id)
    sockdir = tmp_path / "pg"
    sockdir.mkdir(mode=0o700)
    with tunnel(bastion, "erin", "pgdb", cert, local=str(sockdir / ".s.PGSQL.5432")):
        result = subprocess.run(["psql", "-X", "-h", str(sockdir), "-U", "erin", "-A", "-t",
                                 "-c", f"SELECT current_user = '{account}'", db["name"]],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "t"


def test_ctrl_c_in_psql_cancels_the_query(bastion: BastionProcess, pg: tuple[int, int],
                                          db: dict[str, str]) -> None:
    request_id, port = pg
    proc = subprocess.Popen(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "alice",
                             "-d", db["name"], "-c", "SELECT pg_sleep(30)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Ctrl-C before the query runs would end psql without a cancel: wait for it to run.
    assert wait_for(lambda: _sleeping(bastion, "alice", request_id), 20), proc.poll()
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)  # psql sends a CancelRequest on a new connection
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - started < 3
    assert "canceling statement due to user request" in err, err


def test_destination_other_than_the_target_is_refused(bastion: BastionProcess,
                                                      db: dict[str, str]) -> None:
    _, cert = approved(bastion, "erin", "pgdb")
    with tunnel(bastion, "erin", "pgdb", cert, destination="127.0.0.1") as port:
        result = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "erin",
                                 "-d", db["name"], "-c", "SELECT 1"],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    refused = control_json(bastion, "carol", "audit", "--kind", "forward.refused")
    assert any("forward to pgdb" in e["details"]["reason"] for e in refused)


def test_cert_and_targets_print_the_commands(bastion: BastionProcess) -> None:
    req = control_json(bastion, "erin", "request", "pgdb", "--reason", "INC-10: hints")
    control_json(bastion, "bob", "approve", str(req["id"]))
    result = control(bastion, "erin", "cert", str(req["id"]))
    assert result.stdout.startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert "-L 15432:pgdb:5432 pgdb@" in result.stderr and "psql" in result.stderr
    targets = control(bastion, "erin", "targets").stdout
    assert "-L 15432:pgdb:5432" in targets


def test_copy_from_stdin_on_a_writable_target(pg: tuple[int, int], db: dict[str, str]) -> None:
    _, port = pg
    result = psql(port, db, "-A", "-t", stdin="COPY notes (id, body) FROM STDIN;\n"
                  "901\tcopied in\n902\tand this\n\\.\n"
                  "SELECT count(*) FROM notes WHERE id > 900;\n"
                  "DELETE FROM notes WHERE id > 900;\n")
    assert result.returncode == 0, result.stderr
    assert "COPY 2" in result.stdout and "\n2\n" in "\n" + result.stdout


def test_read_only_target_refuses_copy_from_stdin(bastion: BastionProcess,
                                                  db: dict[str, str]) -> None:
    setup_databases(bastion.world, "pgro")
    _, cert = approved(bastion, "erin", "pgro")
    with tunnel(bastion, "erin", "pgro", cert) as port:
        assert isinstance(port, int)
        result = psql(port, db, stdin="COPY notes FROM STDIN;\n1\tx\n\\.\n"
                      "COPY (SELECT 6 * 7) TO STDOUT;\n")
    assert "read-only" in result.stderr
    assert "42" in result.stdout


def _started(port: int, db: dict[str, str]) -> socket.socket:
    """A raw connection past start-up (ReadyForQuery received)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(startup_packet({"user": "alice", "database": db["name"],
                                 "application_name": "hostile"}))
    seen = b""
    while not seen.endswith(b"Z\x00\x00\x00\x05I"):
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    return sock


@pytest.mark.parametrize("hostile", [
    b"Q\x7f\xff\xff\xffSELECT",  # a 2 GiB length
    b"Q\x00\x00\x00\x02",  # a length below the header's own
    b"?\x00\x00\x00\x04",  # an unknown message
    b"B\x00\x00\x00\x05\x00",  # Bind cut short
    b"P\x00\x00\x00\x0bs\x00\xff\xfe\x00\x00\x00",  # Parse text that is not UTF-8
    b"C\x00\x00\x00\x06Xs\x00",  # Close of neither a statement nor a portal
])
def test_hostile_messages_end_the_connection_cleanly(bastion: BastionProcess, pg: tuple[int, int],
                                                     db: dict[str, str], hostile: bytes) -> None:
    _, port = pg
    before = len(control_json(bastion, "carol", "audit", "--kind", "wire.protocol_error",
                              "--limit", "1000"))
    with _started(port, db) as sock:
        sock.sendall(hostile)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer[:1] == b"E" and b"protocol violation" in answer, answer
    assert wait_for(lambda: len(control_json(bastion, "carol", "audit", "--kind",
                                             "wire.protocol_error", "--limit", "1000")) > before)
    assert psql(port, db, "-c", "SELECT 1").returncode == 0


def test_half_closed_and_out_of_order(pg: tuple[int, int], db: dict[str, str]) -> None:
    _, port = pg
    with _started(port, db) as sock:
        # Bind and Execute of a statement never parsed, then Sync: the server's error, and the
        # connection goes on.
        sock.sendall(message(b"B", b"\x00nope\x00\x00\x00\x00\x00\x00\x00") +
                     message(b"E", b"\x00\x00\x00\x00\x00") + message(b"S") +
                     message(b"Q", b"SELECT 6 * 7\x00"))
        answer = b""
        while answer.count(b"Z\x00\x00\x00\x05") < 2:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        assert b"nope" in answer and b"42" in answer
        sock.sendall(b"Q\x00\x00\x00\x20SELECT")  # half a message, then half-close
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        while sock.recv(65536):
            pass
    assert psql(port, db, "-c", "SELECT 1").returncode == 0


def test_an_auditors_kill_ends_the_client_with_the_reason(bastion: BastionProcess,
                                                          db: dict[str, str]) -> None:
    request_id, cert = approved(bastion, "erin", "pgdb")
    with tunnel(bastion, "erin", "pgdb", cert) as port:
        assert isinstance(port, int)
        env = {**os.environ, "PGAPPNAME": "to-be-killed"}
        proc = subprocess.Popen(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "erin",
                                 "-d", db["name"], "-c", "SELECT pg_sleep(30)"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        live = wait_for(lambda: [s for s in control_json(bastion, "carol", "sessions", "--live")
                                 if s["user"] == "erin" and s["kind"] == "postgres"])
        assert wait_for(lambda: _sleeping(bastion, "erin", request_id), 20), proc.poll()
        started = time.monotonic()
        assert control(bastion, "carol", "kill", live[0]["id"]).returncode == 0
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 2.5
    assert "bastion: " in err and "carol" in err, err
    running = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-U", "postgres", "-A", "-t", "-c",
                              "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                              "'SELECT pg_sleep(30)%' AND state = 'active'"],
                             capture_output=True, text=True, timeout=30)
    assert running.stdout.strip() == "0"  # the query was cancelled, not left running


def test_max_rows_cuts_results_and_copy_with_a_notice(bastion: BastionProcess,
                                                      db: dict[str, str]) -> None:
    _, cert = approved(bastion, "erin", "pglim")
    with tunnel(bastion, "erin", "pglim", cert) as port:
        assert isinstance(port, int)
        result = psql(port, db, "-A", stdin="SELECT g FROM generate_series(1, 10) g;\n"
                      "COPY (SELECT g FROM generate_series(1, 10) g) TO STDOUT;\n"
                      "SELECT 'still' || 'here';\n")
        with psycopg.connect(conninfo(port, db), autocommit=True) as conn:
            rows = conn.execute("SELECT g FROM generate_series(1, %s) g", (50,)).fetchall()
    assert result.returncode == 0, result.stderr
    assert "(3 rows)" in result.stdout and "\n4\n" not in result.stdout
    assert "cut at 3 rows" in result.stderr and "10 rows were found" in result.stderr
    assert result.stdout.count("\n") < 20 and "stillhere" in result.stdout
    assert rows == [(1,), (2,), (3,)]


def test_long_results_arrive_whole_or_cut_at_max_rows_past_the_recorded_rows(
        bastion: BastionProcess, db: dict[str, str]) -> None:
    """Past the rows the recording keeps, rows are counted in bulk: none lost, none past max_rows
    (250 here, more than the 200 recorded), in both protocols."""
    _, cert = approved(bastion, "erin", "pgcap")
    with tunnel(bastion, "erin", "pgcap", cert) as port:
        assert isinstance(port, int)
        cut = psql(port, db, "-A", "-t", stdin="SELECT g FROM generate_series(1, 100000) g;\n"
                   "SELECT 'still' || 'here';\n")
        with psycopg.connect(conninfo(port, db), autocommit=True) as conn:
            extended = conn.execute("SELECT g FROM generate_series(1, %s) g", (5000,)).fetchall()
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout.split() == [str(g) for g in range(1, 251)] + ["stillhere"]
    assert "cut at 250 rows" in cut.stderr and "100000 rows were found" in cut.stderr
    assert extended == [(g,) for g in range(1, 251)]
    _, cert = approved(bastion, "erin", "pgdb")
    with tunnel(bastion, "erin", "pgdb", cert) as port:
        assert isinstance(port, int)
        whole = psql(port, db, "-A", "-t", stdin="SELECT g FROM generate_series(1, 300000) g;\n")
        with psycopg.connect(conninfo(port, db, user="erin"), autocommit=True) as conn:
            binary = conn.cursor(binary=True).execute(
                "SELECT g, 'x' || g FROM generate_series(1, %s) g", (200001,)).fetchall()
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.split() == [str(g) for g in range(1, 300001)]
    assert binary == [(g, f"x{g}") for g in range(1, 200002)]


def test_a_server_ending_an_idle_connection_is_passed_on(bastion: BastionProcess,
                                                         db: dict[str, str]) -> None:
    _, cert = approved(bastion, "erin", "pgdb")
    with tunnel(bastion, "erin", "pgdb", cert) as port:
        assert isinstance(port, int)
        conn = psycopg.connect(conninfo(port, db, user="erin", application_name="idle-one"),
                               autocommit=True)
        try:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'idle-one'")
            # The server's unasked-for error, passed on by the bastion, reaches the client.
            readable, _, _ = select.select([conn.fileno()], [], [], 20)
            assert readable, "the server's goodbye did not reach the client"
            with pytest.raises(psycopg.OperationalError, match="terminating connection"):
                conn.execute("SELECT 1")
        finally:
            conn.close()
    errors = control_json(bastion, "carol", "audit", "--kind", "wire.protocol_error",
                          "--limit", "1000")
    assert not any("nothing was asked" in e["details"].get("error", "") for e in errors)


def test_window_end_ends_a_running_query_with_the_reason(bastion: BastionProcess,
                                                         db: dict[str, str]) -> None:
    _, cert = approved(bastion, "erin", "pgdb", "--duration", "6s")
    with tunnel(bastion, "erin", "pgdb", cert) as port:
        assert isinstance(port, int)
        started = time.monotonic()
        result = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "erin",
                                 "-d", db["name"], "-c", "SELECT pg_sleep(30)"],
                                capture_output=True, text=True, timeout=30)
        took = time.monotonic() - started
    assert result.returncode != 0
    assert "bastion: your access window has ended" in result.stderr, result.stderr
    assert took < 10
