"""Native MySQL clients through `ssh -N -L`: the real mariadb client, PyMySQL and
mysql-connector-python (text and server-side prepared statements) on the real MariaDB, through
the real `ssh` client and a real bastion: masking, the gate's refusals, the grant's database
only, the logs an auditor reads, revocation mid-statement, and garbage on the wire."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import mysql.connector
import pymysql
import pytest
from harness import BastionProcess, World, control, control_json, free_port, setup_databases, wait_for
from native import approved, tunnel
from sqldb import MASKING_RULES, MY_PORT, assert_no_secrets, seeded_databases, target_toml

from bastion.demo_data import PEOPLE

pytestmark = [pytest.mark.mysql, pytest.mark.sshd]

USERS = {"alice": ["developer", "db-dev"], "erin": ["developer", "db-dev"],
         "bob": ["approver", "db-approver"],
         "dave": ["approver"], "carol": ["auditor"]}
ROLES = """
[[roles]]
name = "db-dev"
request = ["my*"]
[[roles]]
name = "db-approver"
approve = ["my*"]
"""


@pytest.fixture(scope="module")
def db() -> Iterator[dict[str, str]]:
    gen = seeded_databases()
    yield next(gen)
    for _ in gen:
        pass


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory, db: dict[str, str]
            ) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("nativemy"), port=free_port(), users=dict(USERS))
    world.extra = (target_toml("mydb", "mysql", f"127.0.0.1:{MY_PORT}", db, MASKING_RULES)
                   + target_toml("myro", "mysql", f"127.0.0.1:{MY_PORT}", db,
                                 "read_only = true\n" + MASKING_RULES)
                   + target_toml("mylim", "mysql", f"127.0.0.1:{MY_PORT}", db, "max_rows = 3\n")
                   + ROLES)
    world.write_config()
    setup_databases(world, "mydb", "myro")
    proc = BastionProcess(world)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def mydb(bastion: BastionProcess) -> Iterator[tuple[int, int]]:
    """An approved grant on mydb and its tunnel: (request id, local port)."""
    request_id, cert = approved(bastion, "alice", "mydb")
    with tunnel(bastion, "alice", "mydb", cert, remote_port=3306) as port:
        assert isinstance(port, int)
        yield request_id, port


def mariadb(port: int, database: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port),
                           "-u", "alice", "--skip-ssl", "--batch", database, "-e", sql],
                          capture_output=True, text=True, timeout=60)


def connect(port: int, database: str, **kw: Any) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(host="127.0.0.1", port=port, user="alice", password="ignored",
                           database=database, autocommit=True, connect_timeout=20, **kw)


def connector(port: int, database: str) -> Any:
    return mysql.connector.connect(host="127.0.0.1", port=port, user="alice",
                                   password="ignored", database=database, use_pure=True,
                                   ssl_disabled=True, autocommit=True, connection_timeout=20)


def test_the_mariadb_client_sees_masked_values(mydb: tuple[int, int], db: dict[str, str]
                                               ) -> None:
    _, port = mydb
    done = mariadb(port, db["name"], "SELECT id, name, email, ssn, card_number FROM customers "
                                      "ORDER BY id")
    assert done.returncode == 0, done.stderr
    assert "Ada Lovelace" in done.stdout and "*****6789" in done.stdout, done.stdout
    assert_no_secrets(done.stdout, "mariadb output")
    version = mariadb(port, db["name"], "select @@version_comment")
    assert version.returncode == 0 and version.stdout.strip(), version.stderr
    several = mariadb(port, db["name"], "SELECT 1 AS one; SELECT name FROM customers WHERE id = 2")
    assert several.returncode == 0 and "one" in several.stdout and "Alan Turing" in several.stdout
    lookup = mariadb(port, db["name"], "SELECT name FROM customers WHERE ssn = '345-67-8901'")
    assert lookup.returncode == 0 and "Grace Hopper" in lookup.stdout, lookup.stderr


def test_pymysql_parameters_multi_statements_and_refusals(mydb: tuple[int, int],
                                                          db: dict[str, str]) -> None:
    _, port = mydb
    conn = connect(port, db["name"], client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
                   max_allowed_packet=64 << 20)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT name, ssn, email, card_number FROM customers WHERE id = %s", (1,))
        row = cur.fetchone()
        assert row is not None and row[0] == "Ada Lovelace" and row[1].endswith("6789")
        assert_no_secrets(repr(row), "pymysql row")
        cur.executemany("INSERT INTO notes (id, body) VALUES (%s, %s)",
                        [(101, "first"), (102, "second")])
        assert cur.rowcount == 2
        cur.execute("SELECT 1; SELECT body FROM notes WHERE id = 102")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset() and cur.fetchall() == (("second",),)
        assert not cur.nextset()
        with pytest.raises(pymysql.err.MySQLError) as refused:
            cur.execute("SELECT LOAD_FILE('/etc/passwd')")
        assert "bastion" in str(refused.value)
        with pytest.raises(pymysql.err.MySQLError) as multi:
            cur.execute("SELECT 1; SELECT LOAD_FILE('/etc/passwd')")
        assert "bastion: refused" in str(multi.value)
        cur.execute("SELECT name FROM customers WHERE email = %s", ("grace@example.net",))
        assert cur.fetchall() == (("Grace Hopper",),)
        with pytest.raises(pymysql.err.MySQLError) as other:
            conn.select_db("mysql")
        assert other.value.args[0] == 1044
        conn.select_db(db["name"])  # the target's database name: the grant's (masked) one
        cur.execute("SELECT count(*) FROM customers")
        assert cur.fetchone() == (len(PEOPLE),)
        cur.execute("DELETE FROM notes WHERE id IN (101, 102)")
        # A command spanning packets (over 16 MiB): reassembled, refused, answered in sequence.
        with pytest.raises(pymysql.err.MySQLError) as huge:
            cur.execute("SELECT '" + "x" * (17 << 20) + "'")
        assert "bastion: refused" in str(huge.value) and "longer than" in str(huge.value)
        cur.execute("SELECT name FROM customers WHERE id = 5")
        assert cur.fetchone() == (PEOPLE[4][1],)
    with pytest.raises(pymysql.err.MySQLError) as denied:
        connect(port, "mysql")
    assert denied.value.args[0] == 1044 and "bastion" in str(denied.value)


@pytest.mark.parametrize("prepared", [False, True])
def test_mysql_connector_plain_and_prepared(mydb: tuple[int, int], db: dict[str, str],
                                            prepared: bool) -> None:
    _, port = mydb
    cnx = connector(port, db["name"])
    try:
        cur = cnx.cursor(prepared=prepared)
        cur.execute("SELECT id, name, ssn, card_number, email FROM customers WHERE id > %s "
                    "ORDER BY id", (0,))
        rows = cur.fetchall()
        assert [r[1] for r in rows][:2] == ["Ada Lovelace", "Alan Turing"], rows
        assert_no_secrets(repr(rows), "mysql-connector rows")
        with pytest.raises(mysql.connector.Error) as refused:
            cur.execute("SELECT LOAD_FILE(%s)", ("/etc/passwd",))
        assert "bastion" in str(refused.value)
        cur.execute("SELECT name FROM customers WHERE id = %s", (4,))
        assert cur.fetchall() == [("Edsger Dijkstra",)]
        cur.execute("SELECT NULL, CAST('2024-02-29 13:05:09' AS DATETIME), -7, 1.5e0, %s",
                    ("é",))
        assert cur.fetchall() == [(None, datetime(2024, 2, 29, 13, 5, 9), -7, 1.5, "é")]
        cur.close()
        with pytest.raises(mysql.connector.Error) as change:
            cnx.cmd_change_user(username="root", password="", database=db["name"])
        assert "COM_CHANGE_USER" in str(change.value)
    finally:
        with contextlib.suppress(mysql.connector.Error):
            cnx.close()


def test_a_read_only_target_refuses_writes_and_goes_on(bastion: BastionProcess,
                                                       db: dict[str, str]) -> None:
    _, cert = approved(bastion, "alice", "myro")
    with tunnel(bastion, "alice", "myro", cert, remote_port=3306) as port:
        assert isinstance(port, int)
        conn = connect(port, db["name"])
        with conn, conn.cursor() as cur:
            with pytest.raises(pymysql.err.MySQLError) as refused:
                cur.execute("DELETE FROM customers WHERE id=1")
            assert "bastion: refused" in str(refused.value)
            assert refused.value.args[0] == 1142
            cur.execute("SELECT count(*) FROM customers")
            assert cur.fetchone() == (len(PEOPLE),)


def test_the_auditor_sees_sessions_programs_and_statements(bastion: BastionProcess,
                                                           mydb: tuple[int, int],
                                                           db: dict[str, str]) -> None:
    _, port = mydb
    marker = f"audit_marker_{time.monotonic_ns()}"
    assert mariadb(port, db["name"], f"SELECT '{marker}' AS m, name FROM customers").returncode == 0
    refused = mariadb(port, db["name"], "SELECT LOAD_FILE('/etc/passwd')")
    assert refused.returncode == 1 and "bastion: refused" in refused.stderr, refused.stderr
    conn = connect(port, db["name"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    sessions = control_json(bastion, "carol", "sessions")
    assert any(s["kind"] == "mysql" and s["target"] == "mydb" for s in sessions), sessions
    started = control_json(bastion, "carol", "audit", "--kind", "session.started")
    programs = {e["details"].get("program") for e in started}
    assert programs & {"mariadb", "mysql"} and "pymysql" in programs, programs
    queries = wait_for(lambda: [q for q in control_json(bastion, "carol", "queries")
                                if q["target"] == "mydb" and "AS m" in q["statement"]])
    assert queries, "the statement is not in the query log"
    assert marker not in queries[0]["statement"]  # literals are redacted
    # Another session's log: written behind its relay, not when the one above was.
    blocked = wait_for(lambda: [q for q in control_json(bastion, "carol", "queries")
                                if q.get("blocked") and "LOAD_FILE" in q["statement"].upper()])
    assert blocked, [q for q in control_json(bastion, "carol", "queries") if q.get("blocked")]


def test_revoke_ends_a_running_statement(bastion: BastionProcess, db: dict[str, str]) -> None:
    request_id, cert = approved(bastion, "alice", "mydb")
    with tunnel(bastion, "alice", "mydb", cert, remote_port=3306) as port:
        assert isinstance(port, int)
        conn = connect(port, db["name"], read_timeout=40)
        outcome: dict[str, Any] = {}

        def sleep() -> None:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT SLEEP(30)")
                    outcome["result"] = cur.fetchall()
            except Exception as exc:
                outcome["error"] = exc
            outcome["at"] = time.monotonic()

        thread = threading.Thread(target=sleep)
        thread.start()
        time.sleep(1.5)
        at = time.monotonic()
        revoked = control(bastion, "alice", "revoke", str(request_id))
        assert revoked.returncode == 0, revoked.stderr
        thread.join(10)
        assert "error" in outcome, outcome
        # From the start of `revoke` (its own SSH round trip included) to the client's error.
        assert outcome["at"] - at < 2.5, outcome["at"] - at
        assert outcome["error"].args[0] == 1927
        assert "bastion" in str(outcome["error"]), outcome["error"]


def test_a_client_that_leaves_mid_statement_has_it_killed(mydb: tuple[int, int],
                                                         db: dict[str, str]) -> None:
    _, port = mydb
    conn = connect(port, db["name"])
    sock = conn._sock
    assert sock is not None
    query = b"\x03SELECT SLEEP(31)"  # COM_QUERY, sent without waiting for its answer
    conn._write_bytes(len(query).to_bytes(3, "little") + b"\x00" + query)

    def sleeping() -> int:
        rows = admin_rows("SELECT count(*) FROM information_schema.processlist "
                          "WHERE info = 'SELECT SLEEP(31)'")
        return int(rows[0][0])

    assert wait_for(sleeping, 10) == 1
    sock.shutdown(socket.SHUT_RDWR)  # (PyMySQL's reader holds the socket open past close())
    sock.close()
    assert wait_for(lambda: sleeping() == 0, 5), "the statement still runs"


def admin_rows(sql: str) -> list[tuple[Any, ...]]:
    conn = pymysql.connect(host="127.0.0.1", port=MY_PORT, user="root", autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_garbage_closes_the_connection_and_others_go_on(bastion: BastionProcess,
                                                        mydb: tuple[int, int],
                                                        db: dict[str, str]) -> None:
    _, port = mydb
    for garbage in (b"\xff\xff\xff\x07" + b"x" * 64,  # a handshake answer out of sequence
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            greeting = raw.recv(4096)
            assert greeting[4:5] == b"\x0a"  # a protocol 10 greeting
            raw.sendall(garbage)
            raw.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := raw.recv(4096):
                answer += chunk
            assert b"bastion: protocol error" in answer, answer
    events = wait_for(lambda: control_json(bastion, "carol", "audit", "--kind",
                                           "wire.protocol_error"))
    assert events and events[0]["target"] == "mydb"
    conn = connect(port, db["name"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM customers WHERE id = 3")
        assert cur.fetchone() == ("Grace Hopper",)


def _numbers(n: int) -> str:
    return f"WITH RECURSIVE s(seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM s WHERE seq < {n}) "


def test_max_rows_cuts_text_and_binary_results(bastion: BastionProcess, db: dict[str, str]
                                               ) -> None:
    _, cert = approved(bastion, "erin", "mylim")
    with tunnel(bastion, "erin", "mylim", cert, remote_port=3306) as port:
        assert isinstance(port, int)
        with connect(port, db["name"],
                     client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS) as conn, \
                conn.cursor() as cur:
            cur.execute(_numbers(10) + "SELECT seq FROM s")
            assert [r[0] for r in cur.fetchall()] == [1, 2, 3]
            cur.execute("SELECT 'still' AS here; " + _numbers(5) + "SELECT seq FROM s")
            assert cur.fetchall() == (("still",),)
            assert cur.nextset() and [r[0] for r in cur.fetchall()] == [1, 2, 3]
        conn2 = connector(port, db["name"])
        try:
            cur2 = conn2.cursor(prepared=True)
            cur2.execute(_numbers(10) + "SELECT seq FROM s WHERE seq > ?", (0,))
            assert [r[0] for r in cur2.fetchall()] == [1, 2, 3]
            cur2.execute(_numbers(10) + "SELECT seq FROM s WHERE seq > ?", (5,))
            assert [r[0] for r in cur2.fetchall()] == [6, 7, 8]
        finally:
            conn2.close()
