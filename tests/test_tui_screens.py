"""bastion-tui driven by Textual's pilot over a fixed world in local mode (config + store + files).

Every screen and action: the sessions list (filter, sort, verdicts), replay (play/pause, speed,
seek, markers, commands, search, typed input, escapes never reaching the terminal), the SQL
view, requests, the audit trail, help, and the errors an auditor can meet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.segment import Segment
from test_tui_support import (
    CUT_OFF,
    LIVE,
    NO_RECORDING,
    SHELL,
    SQL,
    TAMPERED,
    Seeded,
    local_app,
    seed_sync,
)
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from recorder import write_key_pair
from tui.app import BastionTUI, main
from tui.integrity import Verdict
from tui.screens.audit import AuditScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen
from tui.screens.passphrase import PassphraseScreen
from tui.screens.replay import ReplayScreen
from tui.screens.requests import RequestsScreen
from tui.screens.sessions import SessionsScreen
from tui.screens.sql import SqlScreen
from tui.screens.startup import StartupScreen
from tui.sources import LocalSource
from tui.widgets.terminal_view import TerminalView

SIZE = (80, 24)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_sync(tmp_path_factory.mktemp("tui"))


async def until(pilot: Pilot[None], check: Callable[[], object], timeout: float = 10.0,
                what: str = "") -> None:
    """Let the app run until `check()` is true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await pilot.pause(0.02)


def static_text(widget: Static) -> str:
    return str(widget.render())


def rows(table: DataTable[object]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(r)] for r in range(table.row_count)]


def sessions_by_id(table: DataTable[object]) -> dict[str, dict[str, str]]:
    """The sessions list, in its order: session id → column key → cell text."""
    keys = [str(column.key.value) for column in table.ordered_columns]
    return {str(row.key.value): dict(zip(keys, map(str, table.get_row(row.key)), strict=True))
            for row in table.ordered_rows}


def shown_ids(table: DataTable[object]) -> list[str]:
    return list(sessions_by_id(table))


async def sessions_ready(app: BastionTUI, pilot: Pilot[None]) -> SessionsScreen:
    """Wait for the sessions list with every recording verified."""
    await until(pilot, lambda: isinstance(app.screen, SessionsScreen), what="the sessions screen")
    screen = app.screen
    assert isinstance(screen, SessionsScreen)
    await until(pilot, screen.ready_event.is_set, what="the list")
    known = app.context.integrity.known
    await until(pilot, lambda: len(known()) == len(screen.sessions), what="verification")
    await pilot.pause()
    return screen


async def open_session(app: BastionTUI, pilot: Pilot[None], session_id: str) -> ReplayScreen:
    """Put the cursor on a session, press enter and wait until its recording shows."""
    screen = await sessions_ready(app, pilot)
    table = screen.query_one("#sessions", DataTable)
    table.move_cursor(row=table.get_row_index(session_id))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, ReplayScreen | ConfirmScreen))
    replay = app.screen if isinstance(app.screen, ReplayScreen) else app.screen_stack[-2]
    assert isinstance(replay, ReplayScreen)
    return replay


async def replay_ready(app: BastionTUI, pilot: Pilot[None], session_id: str) -> ReplayScreen:
    replay = await open_session(app, pilot, session_id)
    await until(pilot, replay.indexed.is_set, what="the index")
    await pilot.pause()
    return replay


def terminal(replay: ReplayScreen) -> str:
    return replay.query_one("#terminal", TerminalView).text()


# -- sessions ---------------------------------------------------------------------------------


async def test_sessions_list_shows_every_session_with_its_verdict(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        screen = await sessions_ready(app, pilot)
        table = screen.query_one("#sessions", DataTable)
        by_id = sessions_by_id(table)
        assert list(by_id) == [NO_RECORDING, LIVE, CUT_OFF, TAMPERED, SQL, SHELL]  # newest first
        assert by_id[SHELL] == {"start": "2026-11-29 09:05", "user": "alice", "target": "prod",
                                "recording": "intact", "status": "ended", "duration": "47s",
                                "kind": "ssh", "request": "1", "id": SHELL}
        assert by_id[SQL]["kind"] == "postgres" and by_id[SQL]["recording"] == "intact"
        assert by_id[TAMPERED]["recording"] == "TAMPERED"
        assert (by_id[CUT_OFF]["status"], by_id[CUT_OFF]["recording"]) == ("abnormal", "CUT OFF")
        assert (by_id[LIVE]["status"], by_id[LIVE]["duration"]) == ("live", "7m00s")
        assert by_id[LIVE]["recording"] == "recording"  # in progress, not cut off
        assert by_id[NO_RECORDING]["recording"] == "none"
        status = static_text(screen.query_one("#status", Static))
        assert "6 of 6 sessions" in status and "6 recordings verified" in status
        assert "2 not intact" in status
        assert app.context.integrity.known()[TAMPERED].verdict is Verdict.TAMPERED


async def test_sessions_filter_by_user_target_date_status_and_words(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        screen = await sessions_ready(app, pilot)
        table = screen.query_one("#sessions", DataTable)

        field = screen.query_one("#filter", Input)

        async def shown(query: str) -> list[str]:
            await pilot.press("slash")
            assert app.focused is field
            field.value = query  # as if typed: the list follows Input.Changed
            await pilot.press("enter")
            assert app.focused is table
            return shown_ids(table)

        await pilot.press("slash", *"user:bob")  # typed for real once
        assert shown_ids(table) == [NO_RECORDING, TAMPERED]
        assert await shown("user:bob") == [NO_RECORDING, TAMPERED]
        assert await shown("user:alice target:prod") == [LIVE, SQL, SHELL]
        assert await shown("kind:postgres") == [SQL]
        assert await shown("status:tampered") == [TAMPERED]
        assert await shown("status:live") == [LIVE]
        assert await shown("date:2026-11-29 critical") == [CUT_OFF]
        assert await shown("since:2026-11-29T11:00") == [NO_RECORDING, LIVE]
        assert await shown("date:2026-11-28") == []
        assert await shown("restarted") == [CUT_OFF]  # the end reason is searched too
        await shown("since:yesterday")
        assert "since: expects YYYY-MM-DD" in static_text(screen.query_one("#status", Static))
        await pilot.press("slash", "escape")  # escape clears the filter
        await pilot.press("escape")
        assert screen.query_one("#filter", Input).value == ""
        assert len(rows(table)) == 6


async def test_sessions_sort_by_columns_and_reverse(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        screen = await sessions_ready(app, pilot)
        table = screen.query_one("#sessions", DataTable)
        await pilot.press("o")  # start → user
        assert screen.sort_key == "user"
        users = [row["user"] for row in sessions_by_id(table).values()]
        assert users == sorted(users)
        await pilot.press("O")
        assert [row["user"] for row in sessions_by_id(table).values()] == sorted(users, reverse=True)
        await pilot.press("o", "o", "o")  # target, recording, status
        assert screen.sort_key == "status"
        statuses = [row["status"] for row in sessions_by_id(table).values()]
        assert statuses == ["ended"] * 4 + ["abnormal", "live"]
        await pilot.press("o")  # duration, longest first
        assert screen.sort_key == "duration"
        assert shown_ids(table)[:2] == [LIVE, SHELL]
        # A click on a header sorts by it; a second click reverses.
        await pilot.click("#sessions", offset=(2, 0))
        await pilot.pause()
        assert screen.sort_key == "start"
        first = shown_ids(table)
        await pilot.click("#sessions", offset=(2, 0))
        await pilot.pause()
        assert shown_ids(table) == list(reversed(first))
        assert "sorted by start" in static_text(screen.query_one("#status", Static))


async def test_long_lists_put_only_the_first_rows_in_the_table(
        seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tui.screens.sessions.MAX_ROWS", 3)
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        screen = await sessions_ready(app, pilot)
        table = screen.query_one("#sessions", DataTable)
        assert shown_ids(table) == [NO_RECORDING, LIVE, CUT_OFF]
        status = static_text(screen.query_one("#status", Static))
        assert "6 of 6 sessions" in status and "first 3 listed: filter to narrow" in status
        await pilot.press("O")  # sorting covers every session, not only the rows listed
        assert shown_ids(table) == [SHELL, SQL, TAMPERED]
        screen.query_one("#filter", Input).value = "user:bob"
        await pilot.pause()
        assert shown_ids(table) == [TAMPERED, NO_RECORDING]
        assert "first 3 listed" not in static_text(screen.query_one("#status", Static))


async def test_verify_key_and_refresh_keep_the_verdicts(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        screen = await sessions_ready(app, pilot)
        table = screen.query_one("#sessions", DataTable)
        table.move_cursor(row=table.get_row_index(TAMPERED))
        await pilot.press("v")
        await until(pilot, lambda: any("TAMPERED" in str(n.message) for n in app._notifications))
        await pilot.press("r")
        await until(pilot, lambda: table.row_count == 6 and not table.loading)
        assert sessions_by_id(table)[TAMPERED]["recording"] == "TAMPERED"


# -- replay -----------------------------------------------------------------------------------


async def test_replay_seek_alternate_screen_markers_and_commands(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        replay = await replay_ready(app, pilot, SHELL)
        banner = static_text(replay.query_one("#banner", Static))
        assert banner.startswith("✔ Intact:") and "signer not pinned" not in banner
        player = replay.player
        assert player is not None and player.duration == pytest.approx(46.2)
        assert terminal(replay).strip() == ""  # time 0: nothing printed yet

        await pilot.press("m")  # first marker
        assert player.t == pytest.approx(2.0)
        assert "README  notes.txt" in terminal(replay)
        await pilot.press("n")  # next command: `less notes.txt` (Enter at 3.0)
        assert player.t == pytest.approx(3.0)
        await pilot.press("right")  # +5 s: inside less, on the alternate screen
        assert player.t == pytest.approx(8.0)
        text = terminal(replay)
        assert text.splitlines()[:3] == ["NOTES", "first line", "second line"]
        assert "README" not in text and player.screen.alternate
        status = static_text(replay.query_one("#play-status", Static))
        assert "alternate screen" in status and "80x24" in status
        red = player.screen.buffer[0][0]
        assert (red.data, red.fg, red.bold) == ("N", "red", True)

        await pilot.press("shift+right")  # +30 s: after `q`, back on the shell's screen
        assert player.t == pytest.approx(38.0)
        text = terminal(replay)
        assert not player.screen.alternate and "NOTES" not in text
        assert text.splitlines()[:3] == ["$ ls", "README  notes.txt", "$ less notes.txt"]
        await pilot.press("end")
        text = terminal(replay)
        assert "done" in text and "exit" in text
        assert (player.screen.columns, player.screen.lines) == (100, 30)  # the recorded resize
        await pilot.press("M")  # previous marker
        assert player.t == pytest.approx(45.0)
        await pilot.press("N")  # previous command: `echo done`
        assert player.t == pytest.approx(41.0)
        timeline = replay.query_one("#timeline")
        await pilot.click("#timeline", offset=(timeline.size.width - 1, 0))  # the mouse seeks too
        assert player.t == pytest.approx(46.2)
        await pilot.click("#timeline", offset=((timeline.size.width - 1) // 2, 0))
        assert player.t == pytest.approx(23.1, abs=46.2 / timeline.size.width)
        assert replay.player.screen.alternate
        await pilot.press("home")
        assert player.t == 0.0 and terminal(replay).strip() == ""
        await pilot.press("shift+left")  # clamps at 0
        assert player.t == 0.0
        # Seeking backwards from the end restores the screen exactly (keyframes and snapshots).
        await pilot.press("end", "left", "left", "left", "left", "left", "left", "left", "left")
        assert player.t == pytest.approx(46.2 - 40)
        assert terminal(replay).splitlines()[:3] == ["NOTES", "first line", "second line"]


async def test_replay_play_pause_speed_and_skip_idle(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        replay = await replay_ready(app, pilot, SHELL)
        player = replay.player
        assert player is not None
        for key, speed in (("plus", 2.0), ("plus", 4.0), ("plus", 8.0), ("plus", 16.0),
                           ("plus", 16.0), ("minus", 8.0)):
            await pilot.press(key)
            assert replay.speed == speed
        for _ in range(6):
            await pilot.press("minus")
        assert replay.speed == 0.5
        await pilot.press("equals_sign", "equals_sign", "equals_sign", "equals_sign", "equals_sign")
        assert replay.speed == 16.0
        await pilot.press("s")
        assert replay.skip_idle
        assert "16x · skip idle" in static_text(replay.query_one("#play-status", Static))
        # Play and pause at 2x: at 16x a loaded machine could play to the end between two
        # key presses.
        await pilot.press("minus", "minus", "minus")
        assert replay.speed == 2.0
        await pilot.press("space")
        assert replay.playing
        status = static_text(replay.query_one("#play-status", Static))
        assert status.startswith("▶") and "2x · skip idle" in status
        await until(pilot, lambda: player.t > 1.0, timeout=15, what="playback past 1 s")
        await pilot.press("space")
        assert not replay.playing
        paused_at = player.t
        await pilot.pause(0.3)
        assert player.t == paused_at
        assert "⏸" in static_text(replay.query_one("#play-status", Static))
        # 16x with pauses cut to a second: the 32 s inside `less` pass in about 2 s of wall time.
        await pilot.press("equals_sign", "equals_sign", "equals_sign")
        assert replay.speed == 16.0
        await pilot.press("space")
        await until(pilot, lambda: player.t > 36.0, timeout=15, what="playback past 36 s")
        await until(pilot, lambda: not replay.playing, timeout=15, what="the end of playback")
        assert player.t == player.duration and "done" in terminal(replay)


async def test_replay_search_highlights_and_wraps(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        replay = await replay_ready(app, pilot, SHELL)
        player = replay.player
        assert player is not None
        await pilot.press("slash")
        search = replay.query_one("#search", Input)
        assert search.display and app.focused is search
        await pilot.press(*"second line")  # typed into the field, not taken as replay keys
        assert search.value == "second line" and player.t == 0.0 and not replay.playing
        await pilot.press("enter")
        await until(pilot, lambda: player.t > 0, what="the search result")
        assert player.t == pytest.approx(3.2)
        view = replay.query_one("#terminal", TerminalView)
        assert view.highlight == "second line"
        line = view.render_line(2)
        marked = "".join(s.text for s in line if s.style and s.style.bgcolor
                         and s.style.bgcolor.name == "yellow")
        assert marked == "second line"
        await pilot.press("enter")  # the next match: none after, wraps to the same place
        await until(pilot, lambda: any("wrapped" in str(n.message) for n in app._notifications))
        search.value = "no such text"
        await pilot.press("enter")
        await until(pilot, lambda: any("does not appear" in str(n.message)
                                       for n in app._notifications))
        await pilot.press("escape")  # closes the search, stays in the replay
        assert not search.display and view.highlight == "" and app.screen is replay


async def test_replay_typed_input_panel_jumps_to_a_line(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        replay = await replay_ready(app, pilot, SHELL)
        await pilot.press("i")
        side = replay.query_one("#side")
        assert side.display
        table = replay.query_one("#events", DataTable)
        entries = [row[1] for row in rows(table)]
        assert entries[:3] == ["⌨ ls⏎", "◆ checking notes", "⌨ less notes.txt⏎"]
        assert "⌨ q" in entries and "⇲ 100x30" in entries and "◆ end of checks" in entries
        assert "⌨ printf '\\033]0;pwned\\007'⏎" in entries
        assert any(e.startswith("⏹ exit") for e in entries)
        table.move_cursor(row=entries.index("⌨ echo done⏎"))
        await pilot.press("enter")
        assert replay.player is not None and replay.player.t == pytest.approx(41.0)
        await pilot.press("i")
        assert not side.display


async def test_recorded_escape_sequences_never_reach_the_terminal(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        replay = await replay_ready(app, pilot, SHELL)
        await pilot.press("end")
        view = replay.query_one("#terminal", TerminalView)
        segments: list[Segment] = []
        for y in range(view.size.height):
            segments.extend(view.render_line(y))
        text = "".join(s.text for s in segments)
        assert "$ printf" in text
        assert not any(ch < " " or ch == "\x7f" for ch in text)
        assert "pwned" not in app.title and "pwned" not in (app.sub_title or "")
        # Control characters typed by the user are shown as symbols, not sent.
        await pilot.press("i")
        entries = "".join(row[1] for row in rows(replay.query_one("#events", DataTable)))
        assert not any(ch < " " for ch in entries)


async def test_replay_of_a_tampered_recording_warns_and_stays_marked(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_session(app, pilot, TAMPERED)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the warning")
        assert "failed verification" in static_text(app.screen.query(Static).first())
        await pilot.press("n")  # the safe answer: back to the list
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen))

        replay = await open_session(app, pilot, TAMPERED)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, replay.opened.is_set)
        banner = replay.query_one("#banner", Static)
        assert static_text(banner).startswith("✖ TAMPERED:")
        assert banner.has_class("banner-tampered")
        assert replay.integrity is not None and not replay.integrity.trustworthy
        await until(pilot, replay.indexed.is_set)
        await pilot.press("end")
        assert static_text(banner).startswith("✖ TAMPERED:")  # never turns into "intact"
        await pilot.press("escape")
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        assert sessions_by_id(screen.query_one("#sessions", DataTable))[TAMPERED]["recording"] \
            == "TAMPERED"


async def test_replay_of_cut_off_and_live_recordings_says_so(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        replay = await replay_ready(app, pilot, CUT_OFF)
        assert static_text(replay.query_one("#banner", Static)).startswith("⚠ CUT OFF:")
        await pilot.press("end")
        assert "up 3 days" in terminal(replay) and "prod-1" in terminal(replay)
        await pilot.press("escape")
        replay = await replay_ready(app, pilot, LIVE)
        banner = static_text(replay.query_one("#banner", Static))
        assert banner.startswith("● Live session: recording in progress")
        assert "LIVE" in static_text(replay.query_one("#info", Static))


async def test_session_without_recording_is_explained(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        replay = await open_session(app, pilot, NO_RECORDING)
        await until(pilot, replay.opened.is_set)
        assert replay.failure == f"session {NO_RECORDING} has no recording"
        assert "has no recording" in static_text(replay.query_one("#loading-message", Static))
        await pilot.press("escape")
        assert isinstance(app.screen, SessionsScreen)


async def test_notifications_are_plain_text(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE, notifications=True) as pilot:  # toasts really drawn
        await replay_ready(app, pilot, SHELL)
        await pilot.press("m")  # a marker label, from the recording, is notified
        # Text from recordings or the bastion, read as markup, would crash or add an action.
        app.notify("label [/] [@click=app.quit]quit[/] \x1b]0;x\x07", title="[/]\x1b[2J")
        await pilot.pause(0.2)
        assert app.is_running and len(app.screen.query("Toast")) == 2
        shown = list(app._notifications)
        assert [n.message for n in shown] == ["checking notes", "label [/] [@click=app.quit]quit[/] ␛]0;x␇"]
        assert shown[-1].title == "[/]␛[2J"
        assert not any(n.markup for n in shown)


# -- SQL --------------------------------------------------------------------------------------


async def test_sql_session_statements_results_and_blocked(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        replay = await replay_ready(app, pilot, SQL)
        await pilot.press("end")
        assert "(2 rows)" in terminal(replay)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, SqlScreen))
        sql = app.screen
        statements = rows(sql.query_one("#statements", DataTable))
        assert statements == [
            ["00:01.2", "1.5", "2", "SELECT 2", "SELECT id, name, email FROM customers"],
            ["00:04.1", "0.2", "-", "blocked: COPY ... TO STDOUT would bypass masking",
             "COPY customers TO STDOUT"],
        ]
        result = sql.query_one("#result", DataTable)
        assert [str(c.label) for c in result.columns.values()] == [
            "id", "name", "email [masked: redact]"]
        assert rows(result) == [["1", "Ada", "***"], ["2", "Bob", "***"]]
        assert "2 row(s) as the user saw them; 2 in all" in str(
            sql.query_one("#result-title").render())
        await pilot.press("down")  # the blocked statement: no result table
        assert not result.display
        assert "blocked: COPY ... TO STDOUT" in static_text(sql.query_one("#payload", Static))
        await pilot.press("escape")
        assert app.screen is replay


async def test_sql_key_on_a_shell_session_says_there_is_none(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await replay_ready(app, pilot, SHELL)
        await pilot.press("q")
        await until(pilot, lambda: any("no SQL statements" in str(n.message)
                                       for n in app._notifications))
        assert isinstance(app.screen, ReplayScreen)


# -- requests and audit -----------------------------------------------------------------------


async def test_requests_screen_lists_filters_and_is_read_only_locally(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await sessions_ready(app, pilot)
        await pilot.press("2")
        await until(pilot, lambda: isinstance(app.screen, RequestsScreen))
        screen = app.screen
        assert isinstance(screen, RequestsScreen)
        await until(pilot, screen.ready_event.is_set)
        table = screen.query_one("#requests", DataTable)
        assert [row[:5] for row in rows(table)] == [
            ["3", "pending", "alice", "staging", "0/1"],
            ["2", "denied", "alice", "critical", "0/2"],
            ["1", "expired", "alice", "prod", "1/1"],
        ]
        table.move_cursor(row=1)
        await pilot.pause()
        detail = static_text(screen.query_one("#request-detail", Static))
        assert "Reason: rotate keys" in detail and "bob denied: not during the freeze" in detail
        await pilot.press("p")
        assert [row[0] for row in rows(table)] == ["3"]
        await pilot.press("p", "slash", *"freeze", "enter")
        assert [row[0] for row in rows(table)] == ["2"]
        await pilot.press("a")  # local mode cannot review: the bastion enforces the rules
        assert "read-only" in static_text(screen.query_one("#status", Static))
        assert isinstance(app.screen, RequestsScreen)


async def test_audit_screen_filters_and_shows_details_safely(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await sessions_ready(app, pilot)
        await pilot.press("3")
        await until(pilot, lambda: isinstance(app.screen, AuditScreen))
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        await until(pilot, screen.ready_event.is_set)
        table = screen.query_one("#audit", DataTable)
        kinds = [row[1] for row in rows(table)]
        assert kinds == ["request.denied", "login.refused", "session.started", "login.success",
                         "request.approved", "request.created"]
        await pilot.press("slash")
        screen.query_one("#filter", Input).value = "kind:login."
        await pilot.press("enter")
        assert [row[1] for row in rows(table)] == ["login.refused", "login.success"]
        detail = static_text(screen.query_one("#audit-detail", Static))
        assert "mallory" in detail and "\x1b" not in detail
        assert "\x1b" not in "".join(rows(table)[0])
        await pilot.press("escape", "slash")
        screen.query_one("#filter", Input).value = "actor:bob go ahead"
        await pilot.press("enter")
        assert [row[1] for row in rows(table)] == ["request.approved"]
        await pilot.press("escape", "l")  # load more
        await until(pilot, lambda: screen.limit == 4000 and table.row_count == 6)
        assert "6 of 6 events (newest 4000)" in static_text(screen.query_one("#status", Static))


async def test_help_screen_opens_and_closes(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await sessions_ready(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "Filter terms" in str(app.screen.query_one("Markdown").source)
        await pilot.press("escape")
        assert isinstance(app.screen, SessionsScreen)
        await pilot.press("question_mark")
        await pilot.press("question_mark")  # the same key closes it
        assert isinstance(app.screen, SessionsScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        assert isinstance(app.screen, SessionsScreen)


async def test_modes_switch_and_quit(seeded: Seeded) -> None:
    app = local_app(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await sessions_ready(app, pilot)
        await pilot.press("3")
        assert app.current_mode == "audit"
        await pilot.press("2")
        assert app.current_mode == "requests"
        await pilot.press("1")
        assert app.current_mode == "sessions"
        await pilot.press("ctrl+q")
    assert app.return_code == 0 and app.startup_error == ""


# -- errors -----------------------------------------------------------------------------------


async def startup_failure(app: BastionTUI) -> tuple[str, bool]:
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.startup_error, what="a start-up error")
        screen = app.screen
        assert isinstance(screen, StartupScreen)
        shown = static_text(screen.query_one("#startup-message", Static))
        assert app.startup_error in shown
        await pilot.press("1")  # no main screen behind a failed start
        assert isinstance(app.screen, StartupScreen)
        return app.startup_error, screen.has_class("failed")


async def test_wrong_key_file_is_a_clear_start_up_error(seeded: Seeded, tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-key"
    garbage.write_text("hello\n")
    error, failed = await startup_failure(local_app(seeded, garbage))
    assert failed and error.startswith("cannot use the auditor key") and str(garbage) in error
    ssh_key = seeded.world.key("carol")  # an SSH key is not an auditor recording key
    error, _ = await startup_failure(local_app(seeded, ssh_key))
    assert error.startswith("cannot use the auditor key")


async def test_a_key_the_recording_is_not_encrypted_for(seeded: Seeded) -> None:
    app = local_app(seeded, seeded.other_key)
    async with app.run_test(size=SIZE) as pilot:
        replay = await open_session(app, pilot, SHELL)
        await until(pilot, replay.opened.is_set)
        assert "cannot decrypt this recording" in replay.failure
        assert "recordings.auditor_keys" in replay.failure
        # Verification needs no key: the recording is still intact, not damaged.
        assert app.context.integrity.known()[SHELL].verdict is Verdict.INTACT


async def test_passphrase_protected_key_asks_and_retries(seeded: Seeded, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from test_tui_support import AUDITOR_KEY

    monkeypatch.delenv("BASTION_KEY_PASSPHRASE", raising=False)
    locked = tmp_path / "locked"
    write_key_pair(locked, AUDITOR_KEY, passphrase="s3cret")
    app = local_app(seeded, locked)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, PassphraseScreen))
        await pilot.press(*"wrong", "enter")
        await until(pilot, lambda: isinstance(app.screen, PassphraseScreen)
                    and "wrong passphrase" in static_text(app.screen.query_one("#passphrase-problem",
                                                                                Static)))
        await pilot.press(*"s3cret", "enter")
        await sessions_ready(app, pilot)
    app = local_app(seeded, locked)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, PassphraseScreen))
        await pilot.press("escape")
        await until(pilot, lambda: app.startup_error)
        assert app.startup_error == "no passphrase given for the auditor key"


async def test_missing_store_and_bad_config_are_start_up_errors(seeded: Seeded, tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(seeded.config.read_text().replace(str(seeded.world.root / "data"),
                                                        str(tmp_path / "nowhere")))
    app = BastionTUI(LocalSource(config), seeded.auditor_key)
    error, _ = await startup_failure(app)
    assert error.startswith("no state store at") and "server.state_store" in error
    config.write_text("[server\n")
    error, _ = await startup_failure(BastionTUI(LocalSource(config), seeded.auditor_key))
    assert error.startswith("cannot use the config")


def test_command_line_refuses_a_missing_key_file(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "x.toml"), "--key", str(tmp_path / "none")]) == 2
    assert "no auditor key file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--key", "k"])  # --connect or --config is required
    with pytest.raises(SystemExit, match="bad port"):
        main(["--connect", "host:99999", "--key", __file__])
