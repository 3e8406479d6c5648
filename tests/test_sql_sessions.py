"""SQL sessions through the bastion on real PostgreSQL and MariaDB: exec, formats, console,
guardrails, the masked query log, and a leak scan of everything the bastion wrote."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pyte
import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    running_statements,
    setup_databases,
    ssh_argv,
    wait_for,
)
from sqldb import (
    MASKING_RULES,
    MY_PORT,
    assert_no_secrets,
    seeded_databases,
    target_toml,
)

from bastion.demo_data import PEOPLE
from recorder import RecordingReader, load_auditor_private_key

USERS = {"alice": ["developer", "db-developer"], "bob": ["approver", "db-approver"],
         "dave": ["approver", "db-approver"], "carol": ["auditor"]}
DB_ROLES = """
[[roles]]
name = "db-developer"
request = ["pgdb", "mydb"]

[[roles]]
name = "db-approver"
approve = ["pgdb", "mydb"]
"""
@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    yield from seeded_databases()


def sql_targets(db: dict[str, str], pg_port: int) -> str:
    guardrails = 'blocked_statements = ["drop", "truncate", "alter", "grant"]\nmax_rows = 1000'
    return "".join(target_toml(name, kind, f"127.0.0.1:{port}", db, guardrails + MASKING_RULES)
                   for name, kind, port in (("pgdb", "postgres", pg_port), ("mydb", "mysql", MY_PORT))
                   ) + DB_ROLES


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory,
            databases: dict[str, str]) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("sql"), port=free_port(), users=dict(USERS))
    world.extra = sql_targets(databases, 5432)
    world.write_config()
    setup_databases(world, "pgdb", "mydb")
    os.environ["BASTION_TEST_DB_PASSWORD"] = databases["password"]
    proc = BastionProcess(world)
    proc.start()
    yield proc
    proc.stop()
    leak_scan(proc)


def leak_scan(bastion: BastionProcess) -> None:
    """Nothing the bastion wrote may hold a seeded sensitive value, in any obvious encoding."""
    root = bastion.world.root
    password = os.environ["BASTION_TEST_DB_PASSWORD"]
    for name, text in (("the bastion's log", bastion.log.read_text()),
                       ("the audit log file", (root / "data" / "audit.jsonl").read_text())):
        assert_no_secrets(text, name)
        assert password not in text, f"{name} holds the database password"
    identity = load_auditor_private_key(root / "keys" / "auditor")
    for path in (root / "recordings").glob("*.rec"):
        with RecordingReader(path, identity) as reader:
            text = "\n".join(json.dumps(_event_json(e)) for e in reader)
        assert_no_secrets(text, f"recording {path.name}")
        assert password not in text


def _event_json(event: Any) -> Any:
    from recorder import event_to_json

    return event_to_json(event)


@pytest.fixture(scope="module")
def certs(bastion: BastionProcess) -> dict[str, Path]:
    out = {}
    for target in ("pgdb", "mydb"):
        req = control_json(bastion, "alice", "request", target, "--reason", "INC-77: billing")
        control_json(bastion, "bob", "approve", str(req["id"]))
        path = bastion.world.root / f"alice-{target}-cert.pub"
        path.write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
        out[target] = path
    return out


ENGINES = ["pgdb", "mydb"]


def run(bastion: BastionProcess, certs: dict[str, Path], target: str, *command: str,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    # Like `ssh pgdb@bastion --json "SELECT …"`: ssh joins its arguments with spaces, unquoted.
    args = ssh_argv(bastion, bastion.world.key("alice"), target, cert=certs[target])
    if command:
        args += ["--", " ".join(command)]
    result = subprocess.run(args, input=input.decode() if input else None, capture_output=True,
                            text=True, timeout=60)
    assert_no_secrets(result.stdout + result.stderr, f"the user's output of {command}")
    return result


@pytest.mark.parametrize("target", ENGINES)
def test_select_masks_sensitive_columns_and_keeps_the_rest(
        bastion: BastionProcess, certs: dict[str, Path], target: str) -> None:
    result = run(bastion, certs, target,
                 "SELECT id, name, email, ssn, card_number, note FROM customers ORDER BY id")
    assert result.returncode == 0, result.stderr
    assert "Ada Lovelace" in result.stdout and "prefers email" in result.stdout
    assert "6789" in result.stdout  # partial keeps the last four
    assert "(5 rows)" in result.stdout


@pytest.mark.parametrize("target", ENGINES)
def test_exec_formats(bastion: BastionProcess, certs: dict[str, Path], target: str) -> None:
    as_json = run(bastion, certs, target, "--json", "SELECT id, name, ssn FROM customers ORDER BY id")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert [r["name"] for r in rows][:2] == ["Ada Lovelace", "Alan Turing"]
    assert rows[0]["ssn"] != PEOPLE[0][3]
    as_csv = run(bastion, certs, target, "--format", "csv", "SELECT id, name FROM customers ORDER BY id")
    assert as_csv.stdout.splitlines()[:2] == ["id,name", "1,Ada Lovelace"]
    as_tsv = run(bastion, certs, target, "--tsv", "SELECT id, name FROM customers ORDER BY id")
    assert as_tsv.stdout.splitlines()[1] == "1\tAda Lovelace"
    several = run(bastion, certs, target, "--csv", "SELECT 1 AS a; SELECT 2 AS b")
    assert several.stdout.splitlines() == ["a", "1", "b", "2"]


@pytest.mark.parametrize("target", ENGINES)
def test_sql_error_exits_non_zero_without_quoting_values(
        bastion: BastionProcess, certs: dict[str, Path], target: str) -> None:
    result = run(bastion, certs, target, "SELECT no_such_column FROM customers")
    assert result.returncode == 1
    assert "no_such_column" in result.stderr
    # The value is built in SQL so the command itself does not carry it; the unique violation's
    # detail would quote it.
    head, tail = PEOPLE[0][3][:3], PEOPLE[0][3][3:]
    built = f"'{head}' || '{tail}'" if target == "pgdb" else f"CONCAT('{head}', '{tail}')"
    dup = run(bastion, certs, target, f"INSERT INTO customers (id, name, ssn) VALUES (99, 'X', {built})")
    assert dup.returncode == 1  # the unique violation's detail quotes the value: scrubbed


@pytest.mark.parametrize("target", ENGINES)
def test_guardrails_refuse_and_explain(bastion: BastionProcess, certs: dict[str, Path],
                                       target: str) -> None:
    dropped = run(bastion, certs, target, "DROP TABLE notes")
    assert dropped.returncode == 1 and "refused" in dropped.stderr
    everything = run(bastion, certs, target, "DELETE FROM notes")
    assert everything.returncode == 1 and "WHERE" in everything.stderr
    ok = run(bastion, certs, target, "INSERT INTO notes VALUES (1, 'kept'); SELECT body FROM notes")
    assert ok.returncode == 0 and "kept" in ok.stdout
    events = control_json(bastion, "carol", "audit", "--kind", "sql.blocked")
    assert any("DROP" in e["details"]["statement"].upper() for e in events)


@pytest.mark.parametrize("target", ENGINES)
def test_query_log_redacts_literals(bastion: BastionProcess, certs: dict[str, Path],
                                    target: str) -> None:
    probe = run(bastion, certs, target,
                f"SELECT name FROM customers WHERE ssn = '{PEOPLE[1][3]}'")
    assert probe.returncode == 0
    # (the user's own typed literal is theirs; the bastion must not keep it anywhere)
    logged = control_json(bastion, "carol", "queries", "--limit", "1000")
    mine = [q for q in logged if q["target"] == target and "WHERE" in q["statement"].upper()
            and "ssn" in q["statement"].lower()]
    assert mine, logged
    assert all(PEOPLE[1][3] not in q["statement"] for q in logged)
    assert mine[0]["user"] == "alice" and mine[0]["rows"] is not None
    text = control(bastion, "carol", "queries").stdout
    assert PEOPLE[1][3] not in text
    denied = control(bastion, "alice", "queries")
    assert denied.returncode == 1 and "auditors" in denied.stderr


@pytest.mark.parametrize("target", ENGINES)
def test_statements_from_stdin(bastion: BastionProcess, certs: dict[str, Path], target: str) -> None:
    script = b"SELECT count(*) AS n FROM customers;\nSELECT 'done' AS status;\n"
    result = run(bastion, certs, target, input=script)
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout and "5" in result.stdout


async def _console(bastion: BastionProcess, cert: Path, target: str) -> tuple[
        asyncssh.SSHClientConnection, asyncssh.SSHClientProcess[str]]:
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    conn = await asyncssh.connect(
        "127.0.0.1", bastion.world.port, username=target,
        client_keys=[(key, asyncssh.read_certificate(str(cert)))],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
    )
    return conn, await conn.create_process(term_type="xterm", term_size=(100, 30))


_CURSOR_RIGHT = re.compile(r"\x1b\[(\d*)C")
_ESCAPE = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|[=>])")


def visible(stream: str) -> str:
    """Terminal output as text: the editor moves the cursor right over blanks instead of writing
    them, and colours what it draws."""
    stream = _CURSOR_RIGHT.sub(lambda m: " " * int(m.group(1) or 1), stream)
    return _ESCAPE.sub("", stream)


class Screen:
    def __init__(self, proc: asyncssh.SSHClientProcess[str]) -> None:
        self.proc, self.seen, self.pos = proc, "", 0

    def _find(self, text: str, needle: str) -> int:
        """Where `needle` is, after what was matched before. A prompt (ending in "> ") counts only
        with nothing after it yet: the editor redraws a prompt with the line typed after it when
        Enter is pressed, before the results and the next prompt."""
        at = text.find(needle, self.pos)
        if needle.endswith("> "):
            while at >= 0 and text[at + len(needle):].strip():
                at = text.find(needle, at + 1)
        return at

    async def expect(self, needle: str, timeout: float = 20) -> str:
        try:
            async with asyncio.timeout(timeout):
                while self._find(visible(self.seen), needle) < 0:
                    chunk = await self.proc.stdout.read(4096)
                    assert chunk, f"closed before {needle!r}: {self.seen[-500:]!r}"
                    self.seen += chunk
        except TimeoutError:
            raise AssertionError(f"no {needle!r} in {timeout} s; the screen ends with "
                                 f"{visible(self.seen)[-300:]!r}") from None
        text = visible(self.seen)
        start = self.pos
        self.pos = self._find(text, needle) + len(needle)
        return text[start:self.pos]

    async def shows(self, needle: str, timeout: float = 20) -> None:
        """Wait until the terminal (an emulator fed everything so far) shows `needle`."""
        terminal = pyte.Screen(100, 30)
        stream = pyte.Stream(terminal)
        stream.feed(self.seen)
        async with asyncio.timeout(timeout):
            while not any(needle in line for line in terminal.display):
                chunk = await self.proc.stdout.read(4096)
                assert chunk, f"closed before {needle!r} showed"
                self.seen += chunk
                stream.feed(chunk)


@pytest.mark.parametrize("target", ENGINES)
async def test_console_multiline_transactions_expanded_and_cancel(
        bastion: BastionProcess, databases: dict[str, str], certs: dict[str, Path],
        target: str) -> None:
    conn, proc = await _console(bastion, certs[target], target)
    screen = Screen(proc)
    async with conn:
        await screen.expect(f"{target}=> ")
        proc.stdin.write("SELECT name\r")
        await screen.expect(f"{target}-> ")
        proc.stdin.write("FROM customers WHERE id = 3;\r")
        await screen.expect("Grace Hopper")
        await screen.expect("(1 row)")
        proc.stdin.write("BEGIN;\r")
        await screen.expect(f"{target}*=> ")
        proc.stdin.write("INSERT INTO notes VALUES (42, 'rolled back');\r")
        await screen.expect(f"{target}*=> ")
        proc.stdin.write("ROLLBACK;\r")
        await screen.expect(f"{target}=> ")
        proc.stdin.write("SELECT count(*) AS n FROM notes WHERE id = 42;\r")
        assert "0" in await screen.expect("(1 row)")
        proc.stdin.write("\\x\r")
        await screen.expect("Expanded display is on")
        proc.stdin.write("SELECT id, name FROM customers WHERE id = 1;\r")
        await screen.expect("-[ RECORD 1 ]")
        proc.stdin.write("\\x\r")
        proc.stdin.write("\\dt\r")
        await screen.expect("customers")
        proc.stdin.write("\\d customers\r")
        assert "card_number" in await screen.expect("(6 rows)")
        proc.stdin.write("\\?\r")
        await screen.expect("expanded display on/off")
        sleep = "SELECT pg_sleep(30);" if target == "pgdb" else "SELECT SLEEP(30);"
        proc.stdin.write(sleep + "\r")
        # Ctrl-C must find the statement running on the server: on a loaded machine it may not
        # have reached the server a second later. Polled in a thread: the event loop serves the
        # SSH connection meanwhile.
        engine = "postgres" if target == "pgdb" else "mysql"

        def running() -> list[str]:
            return running_statements(bastion, "alice", engine, database=databases["name"])

        def sleeping() -> bool:
            return any(query.startswith(sleep[:-1]) for query in running())

        assert await asyncio.to_thread(wait_for, sleeping, 20), (running(),
                                                                 visible(screen.seen)[-300:])
        proc.stdin.write("\x03")
        await screen.expect(f"{target}=> ", timeout=10)  # cancelled on the server, session goes on
        proc.stdin.write("SELECT 'still-here' AS s;\r")
        await screen.expect("still-here")
        proc.stdin.write("\\q\r")
        await proc.wait_closed()
    assert_no_secrets(screen.seen, "the console output")


@pytest.mark.parametrize("target", ENGINES)
async def test_console_completes_the_names_the_grant_may_read(
        bastion: BastionProcess, certs: dict[str, Path], target: str) -> None:
    conn, proc = await _console(bastion, certs[target], target)
    screen = Screen(proc)
    async with conn:
        await screen.expect(f"{target}=> ")
        proc.stdin.write("SELECT card_n\t")  # at once: a Tab waits for the names being read
        await screen.shows("SELECT card_number")
        proc.stdin.write(" FROM custo\t")
        await screen.shows("SELECT card_number FROM customers")
        proc.stdin.write(" WHERE id = 1;\r")
        assert "****" in await screen.expect("(1 row)")
        proc.stdin.write("\\q\r")
        await proc.wait_closed()
