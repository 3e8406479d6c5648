"""SVG snapshots of the main screens at 80x24, over the fixed world of test_tui_support.

Update after a deliberate change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the new SVGs before committing them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_tui_screens import replay_ready, sessions_ready, until
from test_tui_support import SHELL, SQL, TAMPERED, Seeded, local_app, seed_sync
from textual.pilot import Pilot

from tui.screens.audit import AuditScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen
from tui.screens.requests import RequestsScreen
from tui.screens.sql import SqlScreen

Compare = Callable[..., bool]
Steps = Callable[[Pilot[None]], Awaitable[None]]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_sync(tmp_path_factory.mktemp("tui-snap"))


def snap(snap_compare: Compare, seeded: Seeded, steps: Steps, size: tuple[int, int] = (80, 24)) -> None:
    app = local_app(seeded)

    async def run_before(pilot: Pilot[Any]) -> None:
        await sessions_ready(app, pilot)
        await steps(pilot)
        await pilot.pause()
        # The footer follows focus through a signal; refresh it so the picture does not depend
        # on whether that signal came before or after the focus settled.
        pilot.app.refresh_bindings()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_sessions_list(snap_compare: Compare, seeded: Seeded) -> None:
    async def steps(pilot: Pilot[None]) -> None:
        pass

    snap(snap_compare, seeded, steps)


def test_replay_on_the_alternate_screen(snap_compare: Compare, seeded: Seeded) -> None:
    async def steps(pilot: Pilot[None]) -> None:
        replay = await replay_ready(pilot.app, pilot, SHELL)  # type: ignore[arg-type]
        replay.seek(8.0)

    snap(snap_compare, seeded, steps, size=(100, 34))


def test_replay_with_typed_input_panel(snap_compare: Compare, seeded: Seeded) -> None:
    async def steps(pilot: Pilot[None]) -> None:
        replay = await replay_ready(pilot.app, pilot, SHELL)  # type: ignore[arg-type]
        replay.seek(42.0)
        await pilot.press("i")

    snap(snap_compare, seeded, steps)


def test_tampered_recording_warning(snap_compare: Compare, seeded: Seeded) -> None:
    async def steps(pilot: Pilot[None]) -> None:
        app = pilot.app
        table = app.screen.query_one("#sessions")
        table.move_cursor(row=table.get_row_index(TAMPERED))  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))

    snap(snap_compare, seeded, steps)


def test_sql_statements(snap_compare: Compare, seeded: Seeded) -> None:
    async def steps(pilot: Pilot[None]) -> None:
        await replay_ready(pilot.app, pilot, SQL)  # type: ignore[arg-type]
        await pilot.press("q")
        await until(pilot, lambda: isinstance(pilot.app.screen, SqlScreen))

    snap(snap_compare, seeded, steps)


def test_requests(snap_compare: Compare, seeded: Seeded) -> None:
    async def steps(pilot: Pilot[None]) -> None:
        await pilot.press("2")
        await until(pilot, lambda: isinstance(pilot.app.screen, RequestsScreen)
                    and pilot.app.screen.ready_event.is_set())

    snap(snap_compare, seeded, steps)


def test_audit_trail(snap_compare: Compare, seeded: Seeded) -> None:
    async def steps(pilot: Pilot[None]) -> None:
        await pilot.press("3")
        await until(pilot, lambda: isinstance(pilot.app.screen, AuditScreen)
                    and pilot.app.screen.ready_event.is_set())

    snap(snap_compare, seeded, steps)


def test_help(snap_compare: Compare, seeded: Seeded) -> None:
    async def steps(pilot: Pilot[None]) -> None:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))

    snap(snap_compare, seeded, steps)
