"""SQL targets with guardrails (read-only, row limits) and the separate grant for unmasked access,
through the real bastion, OpenSSH client, PostgreSQL and MariaDB; and what the recording keeps."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import psycopg
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
from sqldb import MY_PORT, PG_ADMIN, seeded_databases, target_toml

from bastion.demo_data import PEOPLE
from recorder import RecordingReader, SqlResultEvent, SqlStatementEvent, load_auditor_private_key

ENV = "BASTION_TEST_GRANTS_DB_PASSWORD"
USERS = {"alice": ["developer", "db-dev"], "erin": ["developer", "db-dev-masked"],
         "bob": ["approver", "db-approver"], "dave": ["approver"], "carol": ["auditor"]}


def targets(db: dict[str, str]) -> str:
    masking = """[[targets.masking]]
columns = ["*.customers.ssn", "*.customers.card_number", "*.customers.email"]
strategy = "redact"
"""
    read_only = "read_only = true\nmax_rows = 2\n"
    out = [target_toml(name, kind, f"127.0.0.1:{port}", db, extra + masking)
           for name, kind, port, extra in (
               ("pgdb", "postgres", 5432, ""), ("mydb", "mysql", MY_PORT, ""),
               ("pgro", "postgres", 5432, read_only), ("myro", "mysql", MY_PORT, read_only))]
    out.append(target_toml("pgdown", "postgres", "127.0.0.1:1", db))
    return "".join(out) + """
[[roles]]
name = "db-dev"
request = ["pgdb", "mydb", "pgro", "myro", "pgdown"]
request_unmasked = ["pgdb", "mydb"]

[[roles]]
name = "db-dev-masked"
request = ["pgdb", "mydb"]

[[roles]]
name = "db-approver"
approve = ["pgdb", "mydb", "pgro", "myro", "pgdown"]
"""


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    for db in seeded_databases():
        os.environ[ENV] = db["password"]
        world = World(root=tmp_path_factory.mktemp("grants"), port=free_port(), users=dict(USERS))
        world.extra = targets(db)
        world.write_config()
        setup_databases(world, "pgdb", "mydb", "pgro", "myro")
        proc = BastionProcess(world)
        proc.start()
        try:
            yield proc
        finally:
            proc.stop()


def approved_cert(bastion: BastionProcess, user: str, target: str, *flags: str) -> Path:
    req = control_json(bastion, user, "request", target, "--reason", "INC-9: check", *flags)
    control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / f"{user}-{target}-{req['id']}-cert.pub"
    path.write_text(control(bastion, user, "cert", str(req["id"])).stdout)
    return path


def sql(bastion: BastionProcess, user: str, target: str, cert: Path, text: str
        ) -> subprocess.CompletedProcess[str]:
    args = [*ssh_argv(bastion, bastion.world.key(user), target, cert=cert), "--", text]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("target", ["pgro", "myro"])
def test_read_only_target_refuses_writes_and_cuts_long_results(bastion: BastionProcess, target: str) -> None:
    cert = approved_cert(bastion, "alice", target)
    write = sql(bastion, "alice", target, cert, "INSERT INTO notes VALUES (7, 'x')")
    assert write.returncode == 1 and "read-only" in write.stderr, write.stderr
    locking = sql(bastion, "alice", target, cert, "SELECT id FROM customers WHERE id = 1 FOR UPDATE")
    assert locking.returncode == 1 and "read-only" in locking.stderr
    rows = sql(bastion, "alice", target, cert, "SELECT id, name FROM customers ORDER BY id")
    assert rows.returncode == 0, rows.stderr
    assert "Alan Turing" in rows.stdout and "Grace Hopper" not in rows.stdout
    assert "cut at max_rows = 2" in rows.stdout
    reads = sql(bastion, "alice", target, cert, "SELECT count(*) AS n FROM notes")
    assert reads.returncode == 0 and "0" in reads.stdout
    events = control_json(bastion, "carol", "audit", "--kind", "sql.blocked")
    assert any(e["target"] == target and "INSERT" in e["details"]["statement"] for e in events)


@pytest.mark.parametrize("target", ["pgdb", "mydb"])
def test_unmasked_access_is_a_separate_approved_grant(bastion: BastionProcess, target: str) -> None:
    masked_cert = approved_cert(bastion, "alice", target)
    masked = sql(bastion, "alice", target, masked_cert, "SELECT ssn FROM customers WHERE id = 1")
    assert masked.returncode == 0 and PEOPLE[0][3] not in masked.stdout and "****" in masked.stdout

    refused = control(bastion, "erin", "request", target, "--reason", "INC-9", "--unmasked")
    assert refused.returncode != 0 and "unmasked" in refused.stderr.lower()

    req = control_json(bastion, "alice", "request", target, "--reason", "INC-9: fraud case", "--unmasked")
    assert req["unmasked"] is True and req["status"] == "pending"
    control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / f"alice-{target}-unmasked-cert.pub"
    path.write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
    plain = sql(bastion, "alice", target, path, "SELECT ssn FROM customers WHERE id = 1")
    assert plain.returncode == 0 and PEOPLE[0][3] in plain.stdout

    probe = sql(bastion, "alice", target, path, f"SELECT name FROM customers WHERE ssn = '{PEOPLE[2][3]}'")
    assert "Grace Hopper" in probe.stdout
    logged = control_json(bastion, "carol", "queries", "--limit", "1000")
    assert all(PEOPLE[2][3] not in q["statement"] for q in logged)  # literals still redacted


def test_recording_keeps_statements_and_masked_results(bastion: BastionProcess) -> None:
    cert = approved_cert(bastion, "alice", "mydb")
    done = sql(bastion, "alice", "mydb", cert,
               "SELECT id, name, ssn FROM customers WHERE id = 2 AND name = 'Alan Turing'")
    assert done.returncode == 0 and "Alan Turing" in done.stdout
    identity = load_auditor_private_key(bastion.world.root / "keys" / "auditor")
    found = None
    deadline = time.monotonic() + 10  # the client may see the exit before the recording is closed
    while found is None and time.monotonic() < deadline:
        for path in (bastion.world.root / "recordings").glob("*.rec"):
            with RecordingReader(path, identity) as reader:
                events = list(reader)
            statements = [e.payload for e in events if isinstance(e, SqlStatementEvent)]
            results = [e.payload for e in events if isinstance(e, SqlResultEvent)]
            if any("id = ?" in s["statement"] and "name = ?" in s["statement"] for s in statements):
                found = (statements, results)
        time.sleep(0.2)
    assert found is not None
    statements, results = found
    assert statements[-1]["rows"] == 1 and statements[-1]["blocked"] is None
    assert results[-1]["columns"] == ["id", "name", "ssn"]
    assert results[-1]["rows"] == [["2", "Alan Turing", "****"]]
    assert results[-1]["masked"] == {"ssn": "redact"}
    assert "Alan Turing'" not in json.dumps(statements)  # the literal in WHERE is not kept


def test_unreachable_database_gives_a_clear_message_without_the_password(bastion: BastionProcess) -> None:
    cert = approved_cert(bastion, "alice", "pgdown")
    result = sql(bastion, "alice", "pgdown", cert, "SELECT 1")
    assert result.returncode == 1
    assert "cannot open pgdown" in result.stderr and "127.0.0.1" in result.stderr, result.stderr
    assert os.environ[ENV] not in result.stderr + result.stdout + bastion.log.read_text()
    # The client is told first; the session's end is written to the store right after.
    assert wait_for(lambda: any(
        s["target"] == "pgdown" and "database connection failed" in (s.get("end_reason") or "")
        for s in control_json(bastion, "carol", "sessions"))), \
        control_json(bastion, "carol", "sessions")


async def test_client_disconnect_cancels_the_running_statement(bastion: BastionProcess) -> None:
    cert = approved_cert(bastion, "alice", "pgdb")
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    marker = f"disconnect_{uuid.uuid4().hex[:8]}"
    async with asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="pgdb", known_hosts=str(bastion.known_hosts()),
        client_keys=[(key, asyncssh.read_certificate(str(cert)))], agent_path=None, config=None,
    ) as conn:
        await conn.create_process(f"SELECT pg_sleep(60) AS {marker}")
        # The session starts, logs the grant's account in, then sends the statement.
        async with asyncio.timeout(20):
            while not await _running(marker):
                await asyncio.sleep(0.2)
    async with asyncio.timeout(10):
        while await _running(marker):
            await asyncio.sleep(0.2)
    async with asyncio.timeout(10):
        while True:
            sessions = control_json(bastion, "carol", "sessions")
            mine = [s for s in sessions if s["target"] == "pgdb" and s["status"] != "live"]
            if any("disconnected" in (s.get("end_reason") or "") for s in mine):
                break
            await asyncio.sleep(0.2)


async def _running(marker: str) -> bool:
    async with await psycopg.AsyncConnection.connect(PG_ADMIN, autocommit=True) as admin:
        cur = await admin.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s "
                                  "AND pid <> pg_backend_pid()", (f"%{marker}%",))
        row = await cur.fetchone()
        return bool(row and row[0])


async def test_revoking_stops_new_sessions_on_an_open_connection(bastion: BastionProcess) -> None:
    """One SSH connection can open many sessions (ControlMaster): each is checked again."""
    req = control_json(bastion, "alice", "request", "pgdb", "--reason", "INC-9: one connection")
    control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / f"alice-pgdb-{req['id']}-multi-cert.pub"
    path.write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    async with asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="pgdb", known_hosts=str(bastion.known_hosts()),
        client_keys=[(key, asyncssh.read_certificate(str(path)))], agent_path=None, config=None,
    ) as conn:
        long = await conn.create_process("SELECT pg_sleep(30)")
        first = await conn.run("SELECT 'before-revoke' AS s", check=False)
        assert first.exit_status == 0 and "before-revoke" in str(first.stdout)
        control_json(bastion, "bob", "revoke", str(req["id"]), "--reason", "done")
        # The live session is ended, and says why.
        async with asyncio.timeout(15):
            await long.wait_closed()
        assert long.exit_status != 0 and "session ended" in str(await long.stderr.read())
        after = await conn.run("SELECT 'after-revoke' AS s", check=False)
        assert after.exit_status != 0 and "after-revoke" not in str(after.stdout)
        assert "refused" in str(after.stderr) and "revoked" in str(after.stderr)
    events = control_json(bastion, "carol", "audit", "--kind", "session.refused")
    assert any(e["target"] == "pgdb" for e in events)


def test_the_lookup_budget_belongs_to_the_grant_not_the_session(bastion: BastionProcess) -> None:
    """New sessions are cheap; guesses against masked columns are counted per approved request."""
    cert = approved_cert(bastion, "alice", "mydb")
    guesses = ", ".join(f"'{i:03d}-45-6789'" for i in range(50))
    for session in range(10):  # ten sessions of 50 guesses: the grant's 500
        done = sql(bastion, "alice", "mydb", cert, f"SELECT id FROM customers WHERE ssn IN ({guesses})")
        assert done.returncode == 0, (session, done.stderr)
    refused = sql(bastion, "alice", "mydb", cert, "SELECT id FROM customers WHERE ssn = '999-99-9999'")
    assert refused.returncode == 1 and "limit is 500 per grant" in refused.stderr
    other = approved_cert(bastion, "alice", "mydb")  # a new approved request starts afresh
    assert sql(bastion, "alice", "mydb", other,
               "SELECT id FROM customers WHERE ssn = '999-99-9999'").returncode == 0
