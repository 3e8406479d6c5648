"""The SQL console as a person meets it: the real `ssh -tt` client in a tmux pane (send-keys,
capture-pane), on a real PostgreSQL behind the bastion, with masking on."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import BastionProcess, World, control, control_json, free_port, setup_databases, ssh_argv
from sqldb import MASKING_RULES, assert_no_secrets, seeded_databases, target_toml

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
        self.tmux("send-keys", "-t", self.name, "-l", text)

    def keys(self, *keys: str) -> None:
        """Press keys by tmux name: Enter, Tab, C-r, C-c."""
        self.tmux("send-keys", "-t", self.name, *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

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

    def prompt_line(self) -> str:
        """The last line that holds a prompt."""
        return [line for line in self.screen().splitlines() if "pgdb" in line and "> " in line][-1]

    def clear(self) -> None:
        self.tmux("clear-history", "-t", self.name)
        self.keys("C-l")


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
    screen = pane.wait(lambda s: "FROM customer" in s, "the table name completed")
    assert "customer_view" in screen and "customers" in screen  # two tables: a menu
    pane.type("s WHERE id = 2;")
    pane.keys("Enter")
    screen = pane.expect("(1 row)")
    assert "Margaret Hamilton" in screen or "|" in screen
    # The raw table and its columns (pg_class and pg_attribute list them) are never offered: the
    # grant's account has no privilege on them. The masked view's schema is offered instead.
    pane.type("SELECT public.customers.ss")
    pane.keys("Tab")
    time.sleep(0.3)
    assert "public.customers.ssn" not in pane.screen()
    pane.keys("C-c")
    pane.type("SELECT * FROM public_masked.")
    pane.keys("Tab")
    pane.expect("public_masked.customer")
    pane.keys("C-c")
    pane.type("SELECT * FROM public.")
    pane.keys("Tab")
    time.sleep(0.3)
    assert "public.customers" not in pane.screen()
    pane.keys("C-c")
    assert_no_secrets(pane.screen(), "the console")
