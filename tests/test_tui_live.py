"""bastion-tui against a real bastion and a real sshd: a `less` session recorded and replayed,
remote mode over SSH (sessions, recordings, reviews), its errors, and the app in tmux.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from harness import (
    REPO,
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    make_key,
    running_bastion,
)
from test_tui_screens import open_session, rows, sessions_by_id, sessions_ready, static_text, terminal, until
from test_tui_support import flip_byte
from textual.widgets import DataTable, Input, Static

from recorder import InputEvent, OutputEvent, RecordingReader, load_auditor_private_key
from tui.app import BastionTUI, build_parser, source_from_args
from tui.replay.index import build_index
from tui.replay.player import Player
from tui.screens.confirm import ConfirmScreen
from tui.screens.requests import RequestsScreen
from tui.screens.review import ReviewScreen
from tui.screens.sessions import SessionsScreen
from tui.screens.startup import StartupScreen
from tui.sources import BastionAddress, LocalSource, RemoteSource

pytestmark = pytest.mark.sshd

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"],
         "erin": ["developer", "approver", "auditor"]}
SIZE = (80, 24)
LINES = 200


@dataclass(frozen=True)
class LessSession:
    """The recorded session: its id and recording, and when each thing was typed."""

    id: str
    recording: Path
    info: dict[str, Any]


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    if shutil.which("less") is None:
        pytest.fail("`less` is needed to record a full-screen session (apt-get install less)")
    world = World(root=tmp_path_factory.mktemp("tui-live"), port=free_port(), users=dict(USERS))
    with running_bastion(world) as proc:
        yield proc


def grant(bastion: BastionProcess, user: str = "alice", target: str = "prod") -> Path:
    """An approved request of `user` and its certificate file."""
    req = control_json(bastion, user, "request", target, "--reason", "INC-7 look at logs")
    if req["status"] != "approved":
        control_json(bastion, "bob", "approve", str(req["id"]), "--comment", "ok")
    cert = bastion.world.root / f"{user}-{req['id']}-cert.pub"
    result = control(bastion, user, "cert", str(req["id"]))
    assert result.returncode == 0, result.stderr
    cert.write_text(result.stdout)
    return cert


class Terminal:
    """A PTY session's output, read up to the next expected text."""

    def __init__(self, proc: asyncssh.SSHClientProcess[str]) -> None:
        self.proc, self.seen, self.pos = proc, "", 0

    async def expect(self, needle: str, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while needle not in self.seen[self.pos:]:
                chunk = await self.proc.stdout.read(4096)
                assert chunk, f"session closed before {needle!r}: {self.seen[-500:]!r}"
                self.seen += chunk
        self.pos = self.seen.index(needle, self.pos) + len(needle)

    async def type(self, text: str, then: str) -> None:
        await asyncio.sleep(0.3)  # distinct times for what follows
        self.proc.stdin.write(text)
        await self.expect(then)


@pytest.fixture(scope="module")
def less_session(bastion: BastionProcess) -> LessSession:
    """Log in through the bastion with a PTY, page through a file with `less`, quit it, exit."""
    sample = bastion.world.root / "sample.txt"
    sample.write_text("".join(f"sample line {i}\n" for i in range(1, LINES + 1)))
    cert = grant(bastion)

    async def run() -> None:
        key = asyncssh.read_private_key(str(bastion.world.key("alice")))
        conn = await asyncssh.connect(
            "127.0.0.1", bastion.world.port, username="prod",
            client_keys=[(key, asyncssh.read_certificate(str(cert)))],
            known_hosts=str(bastion.known_hosts()), agent_path=None, config=None)
        async with conn:
            proc = await conn.create_process(term_type="xterm", term_size=(80, 24))
            term = Terminal(proc)
            await term.type("echo before-less-$((6*7))\n", "before-less-42")
            await term.type(f"LESS= LESSHISTFILE=- less {sample}\n", "sample line 23")
            await term.type(" ", "sample line 45")  # the next page
            await term.type("q", "\x1b[?1049l")  # less leaves the alternate screen
            await term.type("printf '\\033]0;pwned\\007'; echo after-less-$((7*6))\n",
                            "after-less-42")
            await term.type("exit\n", "exit")
            await proc.wait_closed()

    asyncio.run(run())
    sessions = control_json(bastion, "carol", "sessions")
    info = next(s for s in sessions if s["user"] == "alice" and s["status"] != "live")
    return LessSession(info["id"], Path(info["recording"]), info)


def auditor_key(bastion: BastionProcess) -> Path:
    return bastion.world.root / "keys" / "auditor"


def remote_app(bastion: BastionProcess, user: str, known_hosts: Path | None = None) -> BastionTUI:
    """The app as `bastion-tui --connect access@127.0.0.1:PORT --key … -i … --known-hosts …`."""
    args = build_parser().parse_args([
        "--connect", f"access@127.0.0.1:{bastion.world.port}", "--key", str(auditor_key(bastion)),
        "--identity", str(bastion.world.key(user)),
        "--known-hosts", str(known_hosts or bastion.known_hosts())])
    source = source_from_args(args)
    assert isinstance(source, RemoteSource) and source.address.user == "access"
    return BastionTUI(source, args.key, refresh_interval=3600)


def local_app(bastion: BastionProcess) -> BastionTUI:
    return BastionTUI(LocalSource(bastion.world.config), auditor_key(bastion), refresh_interval=3600)


# -- the emulator on a real recording -----------------------------------------------------------


def test_less_recording_replays_through_the_emulator(bastion: BastionProcess,
                                                     less_session: LessSession) -> None:
    key = load_auditor_private_key(auditor_key(bastion))
    with RecordingReader(less_session.recording, key) as reader:
        assert not reader.cut_off
        events = list(reader)
    typed = [(e.t, e.data) for e in events if isinstance(e, InputEvent)]
    shown = b"".join(e.data for e in events if isinstance(e, OutputEvent))
    assert b"\x1b[?1049h" in shown and b"\x1b[?1049l" in shown  # less really used the alt screen

    def typed_at(prefix: bytes) -> float:
        return next(t for t, data in typed if data.startswith(prefix))

    t_less, t_page = typed_at(b"LESS="), typed_at(b" ")
    t_quit, t_after = typed_at(b"q"), typed_at(b"printf")
    index = build_index(less_session.recording, key)
    assert [c.text.split()[0].rstrip("⏎") for c in index.commands] == ["echo", "LESS=", "printf", "exit"]

    with RecordingReader(less_session.recording, key) as reader:
        player = Player(reader)
        points = [t_less - 0.05, t_page - 0.05, t_quit - 0.05, t_after - 0.05, player.duration]
        forward = []
        for t in points:
            player.seek(t)
            forward.append((player.screen.alternate, player.screen.text()))
        # 1. the shell, before less
        alternate, text = forward[0]
        assert not alternate and "before-less-42" in text and "sample line" not in text
        # 2. less on the alternate screen: the first page, the shell lines hidden
        alternate, text = forward[1]
        lines = text.splitlines()
        assert alternate and lines[0] == "sample line 1" and "sample line 23" in lines
        assert "before-less-42" not in text
        # 3. the next page
        alternate, text = forward[2]
        assert alternate and "sample line 45" in text and "sample line 1\n" not in text
        # 4. after quitting less: the shell's screen is back as it was, less's pages gone
        alternate, text = forward[3]
        assert not alternate and "before-less-42" in text and "sample line" not in text
        # 5. the end
        alternate, text = forward[4]
        assert not alternate and "after-less-42" in text
        # The OSC that set the title was swallowed: only the typed command line shows the word.
        assert text.count("pwned") == 1 and "\x1b" not in text
        # Seeking backwards lands on the same screens.
        for t, expected in reversed(list(zip(points, forward, strict=True))):
            player.seek(t)
            assert (player.screen.alternate, player.screen.text()) == expected


# -- local mode on the bastion's own files ------------------------------------------------------


async def test_local_mode_opens_the_real_less_session(bastion: BastionProcess,
                                                      less_session: LessSession) -> None:
    app = local_app(bastion)
    async with app.run_test(size=SIZE) as pilot:
        screen = await sessions_ready(app, pilot)
        row = sessions_by_id(screen.query_one("#sessions", DataTable))[less_session.id]
        assert (row["user"], row["target"], row["kind"], row["recording"]) == (
            "alice", "prod", "ssh", "intact")
        replay = await open_session(app, pilot, less_session.id)
        await until(pilot, replay.indexed.is_set)
        banner = static_text(replay.query_one("#banner", Static))
        assert banner.startswith("✔ Intact:") and "not pinned" not in banner
        player = replay.player
        assert player is not None
        await pilot.press("n")  # echo before-less
        assert "before-less-42" not in terminal(replay)  # at its Enter: not answered yet
        await pilot.press("n")  # the Enter of `less`
        await pilot.press("slash")
        replay.query_one("#search", Input).value = "sample line 45"  # less's second page
        await pilot.press("enter")
        await until(pilot, lambda: "search" not in replay._index_note and player.t > 0.5)
        await until(pilot, lambda: player.screen.alternate)
        lines = terminal(replay).splitlines()
        assert lines[0] != "sample line 1" and "sample line 45" in lines
        await pilot.press("escape", "N")  # back to the Enter of `less`, then a little later
        await pilot.press("slash")
        replay.query_one("#search", Input).value = "sample line 1"
        await pilot.press("enter")
        await until(pilot, lambda: terminal(replay).startswith("sample line 1\n"))
        assert player.screen.alternate and "before-less-42" not in terminal(replay)
        await pilot.press("escape", "end")
        assert "after-less-42" in terminal(replay) and not replay.player.screen.alternate


async def test_a_live_session_is_followed_as_it_happens(bastion: BastionProcess) -> None:
    cert = grant(bastion)
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    conn = await asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="prod",
        client_keys=[(key, asyncssh.read_certificate(str(cert)))],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None)
    async with conn:
        proc = await conn.create_process(term_type="xterm", term_size=(80, 24))
        term = Terminal(proc)
        await term.type("echo first-$((1+1))\n", "first-2")
        live = next(s for s in control_json(bastion, "carol", "sessions", "--live")
                    if s["user"] == "alice")
        app = BastionTUI(LocalSource(bastion.world.config), auditor_key(bastion),
                         refresh_interval=0.5)
        async with app.run_test(size=SIZE) as pilot:
            await sessions_ready(app, pilot)
            replay = await open_session(app, pilot, live["id"])
            await until(pilot, replay.opened.is_set, timeout=20)
            await until(pilot, lambda: "first-2" in terminal(replay), timeout=20)
            assert replay.following
            assert "following live" in static_text(replay.query_one("#play-status", Static))
            await term.type("echo second-$((2+2))\n", "second-4")
            await until(pilot, lambda: "second-4" in terminal(replay), timeout=20,
                        what="the new output of the live session")
            banner = static_text(replay.query_one("#banner", Static))
            assert banner.startswith("● Live session: recording in progress")
            await pilot.press("home")  # going back in time stops following
            assert not replay.following and replay.player is not None and replay.player.t == 0
            await term.type("echo third-$((3+3))\n", "third-6")
            await pilot.pause(2.5)
            await pilot.press("end")
            assert "third-6" not in terminal(replay)
            await pilot.press("f")  # follow again: catches up
            await until(pilot, lambda: "third-6" in terminal(replay), timeout=20)
            proc.stdin.write("exit\n")
            await proc.wait_closed()
            await until(pilot, lambda: not replay.following, timeout=20,
                        what="the end of the session")
            assert static_text(replay.query_one("#banner", Static)).startswith("✔ Intact:")
            await pilot.press("escape")
            # The list refreshes itself while it shows live sessions.
            table = app.screen.query_one("#sessions", DataTable)
            await until(pilot, lambda: sessions_by_id(table)[live["id"]]["status"] == "ended",
                        timeout=20, what="the list to show the session ended")
            assert sessions_by_id(table)[live["id"]]["recording"] == "intact"


# -- remote mode ------------------------------------------------------------------------------


async def test_remote_mode_lists_fetches_verifies_and_replays(bastion: BastionProcess,
                                                              less_session: LessSession) -> None:
    app = remote_app(bastion, "carol")
    async with app.run_test(size=SIZE) as pilot:
        screen = await sessions_ready_remote(app, pilot)
        assert screen.sub_title == f"carol @ 127.0.0.1:{bastion.world.port}"
        row = sessions_by_id(screen.query_one("#sessions", DataTable))[less_session.id]
        assert row["recording"] == "?"  # remote recordings are verified when fetched
        table = screen.query_one("#sessions", DataTable)
        table.move_cursor(row=table.get_row_index(less_session.id))
        await pilot.press("enter")
        replay = app.screen
        await until(pilot, lambda: getattr(replay, "indexed", asyncio.Event()).is_set(),
                    what="the fetched recording")
        banner = static_text(replay.query_one("#banner", Static))
        # The signer is pinned to the key the bastion publishes in `whoami`, not the file's own.
        assert banner.startswith("✔ Intact:") and "not pinned" not in banner
        assert replay.path is not None and replay.path.read_bytes() == \
            less_session.recording.read_bytes()
        await pilot.press("end")
        assert "after-less-42" in terminal(replay)
        await pilot.press("escape")
        row = sessions_by_id(screen.query_one("#sessions", DataTable))[less_session.id]
        assert row["recording"] == "intact"
        fetched = replay.path
    assert not fetched.exists()  # the temporary copy is gone with the app
    events = control_json(bastion, "carol", "audit", "--kind", "recording.fetched")
    assert any(e["session_id"] == less_session.id and e["actor"] == "carol" for e in events)


async def sessions_ready_remote(app: BastionTUI, pilot: Any) -> SessionsScreen:
    await until(pilot, lambda: isinstance(app.screen, SessionsScreen) or app.startup_error,
                timeout=20, what="the sessions screen")
    assert not app.startup_error, app.startup_error
    screen = app.screen
    assert isinstance(screen, SessionsScreen)
    await until(pilot, screen.ready_event.is_set, timeout=20)
    return screen


async def test_tampered_real_recording_is_flagged_in_both_modes(bastion: BastionProcess) -> None:
    cert = grant(bastion, target="staging")
    result = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(bastion.world.port),
         "-o", f"UserKnownHostsFile={bastion.known_hosts()}", "-o", "BatchMode=yes",
         "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
         "-i", str(bastion.world.key("alice")), "-o", f"CertificateFile={cert}",
         "staging@127.0.0.1", "echo tamper-me"], capture_output=True, text=True, timeout=30)
    assert result.stdout == "tamper-me\n", result.stderr
    session = next(s for s in control_json(bastion, "carol", "sessions")
                   if s["target"] == "staging")
    path = Path(session["recording"])
    flip_byte(path, 60)  # inside the last chunk or signature

    app = local_app(bastion)
    async with app.run_test(size=SIZE) as pilot:
        screen = await sessions_ready(app, pilot)
        row = sessions_by_id(screen.query_one("#sessions", DataTable))[session["id"]]
        assert row["recording"] == "TAMPERED"

    app = remote_app(bastion, "carol")
    async with app.run_test(size=SIZE) as pilot:
        screen = await sessions_ready_remote(app, pilot)
        table = screen.query_one("#sessions", DataTable)
        table.move_cursor(row=table.get_row_index(session["id"]))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=20)
        await pilot.press("y")
        replay = app.screen
        await until(pilot, lambda: getattr(replay, "opened", asyncio.Event()).is_set())
        assert static_text(replay.query_one("#banner", Static)).startswith("✖ TAMPERED:")
        await pilot.press("escape")
        assert sessions_by_id(table)[session["id"]]["recording"] == "TAMPERED"


async def review_in_tui(app: BastionTUI, pilot: Any, request_id: int, key: str,
                        text: str) -> RequestsScreen:
    await pilot.press("2")
    await until(pilot, lambda: isinstance(app.screen, RequestsScreen))
    screen = app.screen
    assert isinstance(screen, RequestsScreen)
    await until(pilot, screen.ready_event.is_set, timeout=20)
    table = screen.query_one("#requests", DataTable)
    table.move_cursor(row=table.get_row_index(str(request_id)))
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, ReviewScreen))
    await pilot.press(*text, "enter") if text else await pilot.press("enter")
    return screen


async def test_remote_reviews_approve_and_deny_with_comments(bastion: BastionProcess) -> None:
    first = control_json(bastion, "alice", "request", "prod", "--reason", "INC-1 disk full")
    second = control_json(bastion, "alice", "request", "prod", "--reason", "just curious")
    app = remote_app(bastion, "erin")
    async with app.run_test(size=SIZE) as pilot:
        await sessions_ready_remote(app, pilot)
        screen = await review_in_tui(app, pilot, first["id"], "a", "looks right")
        status = screen.query_one("#status", Static)
        await until(pilot, lambda: "is now approved" in static_text(status), timeout=20)
        # A denial needs a reason: the dialog says so and stays open.
        await pilot.press("escape")
        table = screen.query_one("#requests", DataTable)
        await until(pilot, lambda: str(second["id"]) in table.rows, timeout=20)
        table.move_cursor(row=table.get_row_index(str(second["id"])))
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen))
        await pilot.press("enter")
        assert isinstance(app.screen, ReviewScreen)
        assert "needs a reason" in static_text(app.screen.query_one("#review-problem", Static))
        await pilot.press(*"no ticket", "enter")
        await until(pilot, lambda: "is now denied" in static_text(status), timeout=20)
        await until(pilot, lambda: {r[0]: r[1] for r in rows(table)}.get(str(second["id"]))
                    == "denied", timeout=20)
    by_id = {r["id"]: r for r in control_json(bastion, "erin", "requests", "--all")}
    assert by_id[first["id"]]["status"] == "approved"
    assert by_id[first["id"]]["reviews"][0] | {"at": None} == {
        "reviewer": "erin", "decision": "approve", "comment": "looks right", "at": None}
    assert by_id[second["id"]]["status"] == "denied"
    assert by_id[second["id"]]["reviews"][0]["comment"] == "no ticket"


async def test_remote_review_of_ones_own_request_is_refused(bastion: BastionProcess) -> None:
    own = control_json(bastion, "erin", "request", "prod", "--reason", "my own")
    app = remote_app(bastion, "erin")
    async with app.run_test(size=SIZE) as pilot:
        await sessions_ready_remote(app, pilot)
        screen = await review_in_tui(app, pilot, own["id"], "a", "self-service")
        status = screen.query_one("#status", Static)
        await until(pilot, lambda: "the bastion refused" in static_text(status), timeout=20)
        assert "own request" in static_text(status)
    assert {r["id"]: r["status"] for r in control_json(bastion, "erin", "requests")}[own["id"]] \
        == "pending"


async def test_an_approver_without_audit_role_gets_requests_only(bastion: BastionProcess) -> None:
    pending = control_json(bastion, "alice", "request", "prod", "--reason", "INC-3")
    app = remote_app(bastion, "bob")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.startup_error, timeout=20)
        assert app.startup_error.startswith("bob has no audit role on this bastion (roles: approver)")
        assert "Press 2 for access requests" in static_text(
            app.screen.query_one("#startup-message", Static))
        await pilot.press("1")
        assert isinstance(app.screen, StartupScreen)  # sessions are for auditors
        screen = await review_in_tui(app, pilot, pending["id"], "a", "")
        await until(pilot, lambda: "is now approved" in static_text(
            screen.query_one("#status", Static)), timeout=20)


async def test_remote_start_up_errors(bastion: BastionProcess, tmp_path: Path) -> None:
    async def failure(app: BastionTUI) -> str:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.startup_error, timeout=20)
            assert isinstance(app.screen, StartupScreen)
            return app.startup_error

    # missing role: a developer
    error = await failure(remote_app(bastion, "alice"))
    assert error.startswith("alice has no audit role")
    # unreachable: nothing listens there
    app = BastionTUI(RemoteSource(BastionAddress("127.0.0.1", free_port()),
                                  identity=bastion.world.key("carol"),
                                  known_hosts=bastion.known_hosts(), connect_timeout=5),
                     auditor_key(bastion))
    error = await failure(app)
    assert error.startswith("cannot reach the bastion at access@127.0.0.1:")
    # a key the bastion does not know
    stranger = tmp_path / "stranger"
    make_key(stranger)
    app = BastionTUI(RemoteSource(BastionAddress("127.0.0.1", bastion.world.port),
                                  identity=stranger, known_hosts=bastion.known_hosts()),
                     auditor_key(bastion))
    assert "refused the SSH login" in await failure(app)
    # a host key that does not match
    wrong = tmp_path / "known_hosts"
    other = make_key(tmp_path / "other_host")
    wrong.write_text(f"[127.0.0.1]:{bastion.world.port} {other}\n")
    error = await failure(remote_app(bastion, "carol", known_hosts=wrong))
    assert "host key" in error and "not trusted" in error


# -- a real terminal --------------------------------------------------------------------------


class Tmux:
    """A private tmux server running one command in a 100x30 window."""

    def __init__(self, root: Path, command: list[str]) -> None:
        self.socket = str(root / "tmux.sock")
        # COLUMNS and LINES would override the pane's size for Textual (pytest-xdist workers set them).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("TMUX") and k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.env = env
        # The exit status goes to a file: tmux 3.3 marks a pane dead when its terminal closes and
        # sometimes never learns the status of the process it reaps afterwards.
        self.status_file = root / "tmux-exit-status"
        self.status_file.unlink(missing_ok=True)
        wrapped = f"{shlex.join(command)}; echo $? > {shlex.quote(str(self.status_file))}"
        self.run("-f", "/dev/null", "new-session", "-d", "-s", "tui", "-x", "100", "-y", "30",
                 "-c", str(REPO), "sh -c " + shlex.quote(wrapped))
        self.run("set-option", "-t", "tui", "remain-on-exit", "on")

    def run(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True,
                                text=True, env=self.env, timeout=10)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def exit_status(self, timeout: float = 30) -> str:
        """The command's exit status, once it has exited."""
        deadline = time.monotonic() + timeout
        while not (self.status_file.exists() and self.status_file.read_text().strip()):
            assert time.monotonic() < deadline, f"still running:\n{self.screen()}"
            time.sleep(0.1)
        return self.status_file.read_text().strip()

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "tui")

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if text in shown:
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on the tmux screen:\n{shown}")
            time.sleep(0.1)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "tui", *keys)

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True,
                       env=self.env, timeout=10)


def test_in_tmux_open_a_session_see_its_output_and_quit(bastion: BastionProcess,
                                                        less_session: LessSession) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for the real-terminal test (apt-get install tmux)")
    tmux = Tmux(bastion.world.root, [sys.executable, "-m", "tui.app", "--config",
                                     str(bastion.world.config), "--key", str(auditor_key(bastion))])
    try:
        tmux.wait_for(less_session.id[:20])
        tmux.wait_for("intact")
        tmux.keys("/")
        # At a typist's pace: Textual routes each key to the widget focused when it arrives, so
        # a burst sent with the `/` could reach the list before the filter field has focus.
        time.sleep(1.0)  # generous: CI machines are loaded
        tmux.keys("-l", f"id:{less_session.id}")
        tmux.wait_for(f"Filter id:{less_session.id}")
        tmux.keys("Enter")
        tmux.wait_for("1 of ")
        time.sleep(1.0)  # generous: CI machines are loaded
        tmux.keys("Enter")  # replay it
        tmux.wait_for("Intact")
        tmux.keys("End")
        shown = tmux.wait_for("after-less-42")
        assert "before-less-42" in shown and "\x1b" not in shown
        tmux.keys("/")  # search the output: jumps to less's second page
        time.sleep(1.0)  # generous: CI machines are loaded
        tmux.keys("-l", "sample line 45")
        tmux.keys("Enter")
        shown = tmux.wait_for("sample line 30")
        assert "before-less-42" not in shown and "after-less-42" not in shown  # alternate screen
        tmux.keys("Escape")
        title = tmux.run("display-message", "-p", "-t", "tui", "#{pane_title}")
        assert "pwned" not in title  # the recorded OSC title never reached the terminal
        tmux.keys("C-q")
        assert tmux.exit_status() == "0", tmux.screen()
    finally:
        tmux.kill()


def test_json_of_sessions_has_what_the_tui_reads(bastion: BastionProcess,
                                                 less_session: LessSession) -> None:
    # The remote source parses these fields; a rename on the bastion side must fail here.
    info = less_session.info
    assert {"id", "user", "target", "kind", "request_id", "status", "started_at", "ended_at",
            "end_reason", "client", "recording"} <= set(info)
