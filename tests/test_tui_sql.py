"""The SQL view on recordings of real SQL sessions: PostgreSQL through the bastion, masked, from
the console and from psql through `ssh -L`."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    ended_session,
    free_port,
    setup_databases,
    ssh_argv,
    wait_for,
)
from sqldb import seeded_databases, target_toml
from test_tui_screens import replay_ready, rows, static_text, terminal, until
from textual.widgets import DataTable, Static

from bastion.demo_data import PEOPLE
from tui.app import BastionTUI
from tui.screens.sql import SqlScreen
from tui.sources import LocalSource

pytestmark = pytest.mark.postgres

USERS = {"alice": ["developer", "db-developer"], "bob": ["approver", "db-approver"],
         "dave": ["approver", "db-approver"], "carol": ["auditor"]}
TARGET = """
blocked_statements = ["drop", "truncate"]
max_rows = 1000
[[targets.masking]]
columns = ["*.customers.ssn"]
strategy = "partial"
[[targets.masking]]
columns = ["*.customers.card_number"]
strategy = "redact"

[[roles]]
name = "db-developer"
request = ["pgdb"]

[[roles]]
name = "db-approver"
approve = ["pgdb"]
"""


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    for db in seeded_databases():
        world = World(root=tmp_path_factory.mktemp("tui-sql"), port=free_port(), users=dict(USERS))
        world.extra = target_toml("pgdb", "postgres", "127.0.0.1:5432", db, TARGET)
        world.write_config()
        setup_databases(world, "pgdb")
        os.environ["BASTION_TEST_TUI_DB_PASSWORD"] = db["password"]
        proc = BastionProcess(world)
        proc.start()
        yield proc
        proc.stop()


def sql(bastion: BastionProcess, cert: Path, statement: str) -> subprocess.CompletedProcess[str]:
    args = ssh_argv(bastion, bastion.world.key("alice"), "pgdb", cert=cert)
    return subprocess.run([*args, "--", statement], capture_output=True, text=True, timeout=60)


async def test_sql_view_of_real_postgres_sessions(bastion: BastionProcess) -> None:
    req = control_json(bastion, "alice", "request", "pgdb", "--reason", "INC-8 billing")
    control_json(bastion, "bob", "approve", str(req["id"]))
    cert = bastion.world.root / "alice-cert.pub"
    cert.write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
    selected = sql(bastion, cert, "SELECT id, name, ssn, card_number FROM customers ORDER BY id")
    assert selected.returncode == 0, selected.stderr
    dropped = sql(bastion, cert, "DROP TABLE customers")
    assert dropped.returncode != 0
    sessions = {s["id"]: s for s in control_json(bastion, "carol", "sessions")}
    assert len(sessions) == 2
    # The client hears the exit first; the bastion then closes the recording (with the last
    # statement in it) and writes the session's end: replay only what has ended.
    assert wait_for(lambda: all(s["status"] != "live"
                                for s in control_json(bastion, "carol", "sessions"))), \
        control_json(bastion, "carol", "sessions")

    app = BastionTUI(LocalSource(bastion.world.config), bastion.world.root / "keys" / "auditor",
                     refresh_interval=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        by_start = sorted(sessions.values(), key=lambda s: s["started_at"])
        replay = await replay_ready(app, pilot, by_start[0]["id"])
        await pilot.press("end")
        assert "Ada Lovelace" in terminal(replay)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, SqlScreen))
        screen = app.screen
        statements = rows(screen.query_one("#statements", DataTable))
        assert len(statements) == 1
        assert statements[0][2] == str(len(PEOPLE))  # rows
        assert statements[0][4] == "SELECT id, name, ssn, card_number FROM customers ORDER BY id"
        result = screen.query_one("#result", DataTable)
        labels = [str(c.label) for c in result.columns.values()]
        assert labels[:2] == ["id", "name"]
        assert labels[2].startswith("ssn [masked: ") and labels[3].startswith("card_number [masked")
        cells = rows(result)
        assert [c[1] for c in cells] == [p[1] for p in PEOPLE]
        shown = " ".join(" ".join(c) for c in cells)
        for person in PEOPLE:  # masked as the user saw them: the real values never appear
            assert person[3] not in shown and person[4] not in shown
        assert cells[0][2].endswith("6789")  # partial masking keeps the last four
        await pilot.press("escape", "escape")

        replay = await replay_ready(app, pilot, by_start[1]["id"])
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, SqlScreen))
        statements = rows(app.screen.query_one("#statements", DataTable))
        assert statements[0][3].startswith("blocked: ")
        assert "drop" in statements[0][3].lower()
        assert not app.screen.query_one("#result", DataTable).display
        assert "blocked:" in static_text(app.screen.query_one("#payload", Static))


async def test_sql_view_of_a_native_psql_session(bastion: BastionProcess) -> None:
    from native import approved, tunnel

    _, cert = approved(bastion, "alice", "pgdb")
    found = re.search(r'database = "([^"]+)"', bastion.world.extra)
    assert found is not None
    database = found.group(1)
    with tunnel(bastion, "alice", "pgdb", cert) as port:
        env = {**os.environ, "PGAPPNAME": "psql-in-tui-test"}
        done = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "alice",
                               "-d", database, "-c", "SELECT id, name, ssn FROM customers ORDER BY id"],
                              capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    started = control_json(bastion, "carol", "audit", "--kind", "session.started", "--limit", "500")
    sid = next(e["session_id"] for e in reversed(started)
               if e["details"].get("program") == "psql-in-tui-test")
    # The session ends (and its recording closes) after psql exits: wait for its end.
    await asyncio.to_thread(ended_session, bastion, sid)

    app = BastionTUI(LocalSource(bastion.world.config), bastion.world.root / "keys" / "auditor",
                     refresh_interval=3600)
    async with app.run_test(size=(100, 30)) as pilot:
        await replay_ready(app, pilot, sid)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, SqlScreen))
        statements = rows(app.screen.query_one("#statements", DataTable))
        assert any(s[4] == "SELECT id, name, ssn FROM customers ORDER BY id" and
                   s[2] == str(len(PEOPLE)) for s in statements), statements
        cells = rows(app.screen.query_one("#result", DataTable))
        assert [c[1] for c in cells] == [p[1] for p in PEOPLE]
        assert not any(p[3] in " ".join(c) for p in PEOPLE for c in cells)
