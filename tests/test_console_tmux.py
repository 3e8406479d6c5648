"""The SQL console as a person meets it: the real `ssh -tt` client in a tmux pane (send-keys,
capture-pane), on a real PostgreSQL behind the bastion, with masking on."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
from sqldb import MASKING_RULES, assert_no_secrets, seeded_databases, target_toml

from recorder import RecordingReader, event_to_json, load_auditor_private_key

# Names of this run only: database roles (bx_<user>_r<request>) are shared by the whole server.
RUN = uuid.uuid4().hex[:6]
ALICE, DAVE, BOB = f"alice{RUN}", f"dave{RUN}", f"bob{RUN}"
USERS = {ALICE: ["developer", "db-developer"], DAVE: ["developer", "db-developer"],
         BOB: ["approver", "db-approver"], f"carol{RUN}": ["approver"]}
ROLES = """
[[roles]]
name = "db-developer"
request = ["pgdb"]

[[roles]]
name = "db-approver"
approve = ["pgdb"]
"""


class Pane:
    """One tmux pane on a private tmux server."""

    def __init__(self, socket: Path, name: str) -> None:
        self.socket, self.name = socket, name

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", str(self.socket), *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def type(self, text: str) -> None:
        """Type text as is (no key names)."""
        if text.endswith(";"):  # tmux reads a trailing ";" as the end of its command
            text = text[:-1] + "\\;"
        self.tmux("send-keys", "-t", self.name, "-l", text)

    def keys(self, *keys: str) -> None:
        """Press keys by tmux name: Enter, Tab, C-r, C-c."""
        self.tmux("send-keys", "-t", self.name, *keys)

    def screen(self) -> str:
        """What the pane shows, lines the terminal wrapped joined again."""
        return self.tmux("capture-pane", "-p", "-J", "-t", self.name)

    def wait(self, check: Callable[[str], bool], what: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{text}")
            time.sleep(0.05)

    def expect(self, needle: str, timeout: float = 15) -> str:
        return self.wait(lambda text: needle in text, repr(needle), timeout)

    def after(self, mark: str) -> str:
        """The screen from the last line holding `mark` on."""
        text = self.screen()
        return text[text.rindex(mark):] if mark in text else ""


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    databases = seeded_databases()
    db = next(databases)
    world = World(root=tmp_path_factory.mktemp("tmux"), port=free_port(), users=dict(USERS))
    world.extra = target_toml("pgdb", "postgres", "127.0.0.1:5432", db, MASKING_RULES) + ROLES
    world.write_config()
    setup_databases(world, "pgdb")
    os.environ["BASTION_TEST_DB_PASSWORD"] = db["password"]
    proc = BastionProcess(world)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        databases.close()


def recorded(bastion: BastionProcess) -> list[list[dict[str, Any]]]:
    """The events of every recording so far (one still open reads as cut off)."""
    identity = load_auditor_private_key(bastion.world.root / "keys" / "auditor")
    out = []
    for path in sorted((bastion.world.root / "recordings").glob("*.rec")):
        with RecordingReader(path, identity) as reader:
            out.append([event_to_json(e) for e in reader])
    return out


def _cert(bastion: BastionProcess, user: str) -> Path:
    req = control_json(bastion, user, "request", "pgdb", "--reason", "INC-9: console")
    control_json(bastion, BOB, "approve", str(req["id"]))
    path = bastion.world.root / f"{user}-cert.pub"
    path.write_text(control(bastion, user, "cert", str(req["id"])).stdout)
    return path


@pytest.fixture(scope="module")
def tmux(bastion: BastionProcess) -> Iterator[Callable[[str], Pane]]:
    socket = bastion.world.root / f"tmux-{uuid.uuid4().hex[:6]}"
    certs: dict[str, Path] = {}
    opened: list[Pane] = []

    def open_console(user: str) -> Pane:
        cert = certs.setdefault(user, _cert(bastion, user))
        argv = ssh_argv(bastion, bastion.world.key(user), "pgdb", cert=cert, options=["-tt"])
        pane = Pane(socket, f"{user}{len(opened)}")
        subprocess.run(["tmux", "-S", str(socket), "-f", "/dev/null", "new-session", "-d",
                        "-s", pane.name, "-x", "100", "-y", "30",
                        f"TERM=xterm-256color {shlex.join(argv)}; sleep 30"],
                       check=True, timeout=10)
        opened.append(pane)
        pane.expect("pgdb=>")
        return pane

    yield open_console
    subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True, timeout=10)


def test_completes_tables_and_columns_the_account_may_read(tmux: Callable[[str], Pane]) -> None:
    pane = tmux(ALICE)
    pane.type("SELECT na")
    pane.keys("Tab")
    pane.wait(lambda s: "SELECT name" in s, "the column name completed")
    pane.type(", ss")
    pane.keys("Tab")
    # The masked view's ssn, never its hidden lookup column ssn__lookup.
    screen = pane.wait(lambda s: "SELECT name, ssn" in s, "ssn completed")
    assert "__lookup" not in screen
    pane.type(" FROM cust")
    pane.keys("Tab")
    pane.wait(lambda s: "FROM customers" in s, "the table name completed")
    pane.type(" WHERE id = 2;")
    pane.keys("Enter")
    screen = pane.expect("(1 row)")
    assert re.search(r"name +\| ssn", screen) and "Alan Turing" in screen
    # The raw table and its columns (pg_class and pg_attribute list them) are never offered: the
    # grant's account has no privilege on them. The masked view's schema is offered instead.
    pane.type("SELECT public.customers.ss")
    pane.keys("Tab")
    time.sleep(0.3)
    assert "public.customers.ssn" not in pane.screen()
    pane.keys("C-c")
    pane.type("SELECT * FROM public_masked.")
    pane.keys("Tab")
    pane.expect("public_masked.customers")
    pane.keys("C-c")
    pane.type("SELECT * FROM public.")
    pane.keys("Tab")  # one table left to offer there (the raw customers is not): it is inserted
    pane.wait(lambda s: s.rstrip().endswith("FROM public.notes"), "public.notes completed")
    pane.keys("C-c")
    assert_no_secrets(pane.screen(), "the console")


def test_a_statement_over_several_lines_runs_at_the_semicolon(tmux: Callable[[str], Pane]) -> None:
    pane = tmux(ALICE)
    for line in ("SELECT id,", "  name AS who", "FROM customers", "WHERE id = 3;"):
        pane.type(line)
        pane.keys("Enter")
    screen = pane.expect("(1 row)")
    assert screen.count("pgdb->") == 3, screen  # a continuation prompt on each further line
    assert "Grace Hopper" in screen


def test_ctrl_c_cancels_a_running_statement_on_the_server(bastion: BastionProcess,
                                                          tmux: Callable[[str], Pane]) -> None:
    pane = tmux(ALICE)
    pane.type("SELECT pg_sleep(30);")
    pane.keys("Enter")
    # Ctrl-C must find the statement running on the server: on a loaded machine it may not have
    # reached the server half a second later.
    def sleeping() -> bool:
        return any(query.startswith("SELECT pg_sleep(30)") for query in running_statements(bastion, ALICE))

    assert wait_for(sleeping, 20), (running_statements(bastion, ALICE), pane.screen())
    started = time.monotonic()
    pane.keys("C-c")
    pane.expect("canceling statement due to user request", timeout=1.0)
    pane.wait(lambda s: s.rstrip().endswith("pgdb=>"), "the next prompt", timeout=1.0)
    assert time.monotonic() - started < 1.0
    pane.type("SELECT 'still here' AS s;")
    pane.keys("Enter")
    pane.expect("still here")


def test_history_search_finds_an_earlier_statement_of_the_same_user_only(
        bastion: BastionProcess, tmux: Callable[[str], Pane]) -> None:
    first = tmux(ALICE)
    first.type("SELECT 'needle-' || 41 + 1 AS found;")
    first.keys("Enter")
    first.expect("(1 row)")
    first.keys("C-d")
    # A new session of the same user on the same target: Ctrl-R finds the statement.
    again = tmux(ALICE)
    again.keys("C-r")
    again.type("needle")
    again.expect("SELECT 'needle-' || 41 + 1 AS found;")
    again.keys("Enter")
    again.keys("Enter")
    assert "needle-42" in again.after("(1 row)") or "needle-42" in again.expect("needle-42")
    # Another user's history is not theirs to search.
    other = tmux(DAVE)
    other.keys("C-r")
    other.type("needle")
    other.expect("I-search backward: needle")
    time.sleep(0.3)
    assert "41 + 1" not in other.screen()
    other.keys("C-c")
    # Kept in memory only: nothing the bastion wrote holds the statement as typed.
    for path in (bastion.world.root / "data").rglob("*"):
        if path.is_file():
            assert b"needle-" not in path.read_bytes(), path
    # The recording holds what the bastion showed (the result) and the statement with its
    # literals redacted; the editing area (the literals as typed) is not recorded.
    session = next(events for events in recorded(bastion)
                   if any("needle-42" in e.get("text", "") for e in events))
    statements = [e["payload"]["statement"] for e in session if e["type"] == "sql_statement"]
    assert statements and "needle" not in statements[0] and "41" not in statements[0]
    assert not any("needle-'" in e.get("text", "") for e in session)


def test_the_console_follows_a_window_resize(bastion: BastionProcess,
                                             tmux: Callable[[str], Pane]) -> None:
    pane = tmux(ALICE)
    query = "SELECT repeat('x', 50) AS a, repeat('y', 50) AS b;"
    pane.type(query)
    pane.keys("Enter")
    pane.expect("(1 row)")
    wide = [line for line in pane.after(query).splitlines() if "xxx" in line]
    pane.tmux("resize-window", "-t", pane.name, "-x", "60", "-y", "20")
    pane.wait(lambda s: s != "" and len(s.splitlines()[0]) <= 60, "the narrower window")
    pane.type(query.replace("AS b", "AS bb"))
    pane.keys("Enter")
    pane.wait(lambda s: "(1 row)" in s.partition("AS bb")[2], "the second result")
    narrow = [line for line in pane.after("AS bb").splitlines() if "xxx" in line]
    assert wide and narrow, pane.screen()
    assert len(wide[0]) > 60 and len(narrow[0]) <= 60 and "…" in narrow[0]
    pane.keys("C-d")  # the recording is closed (and so read whole) when the session ends
    assert wait_for(lambda: any(e["type"] == "resize" and (e["cols"], e["rows"]) == (60, 20)
                                for events in recorded(bastion) for e in events), timeout=5)
