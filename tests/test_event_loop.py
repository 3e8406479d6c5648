"""`bastion serve` and `bastion demo` run on uvloop's event loop (bastion.cli._run_server)."""

from __future__ import annotations

import asyncio

from bastion.cli import _run_server


async def _which_loop() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_the_server_runs_on_uvloop_and_gets_its_coroutine_s_result() -> None:
    assert _run_server(_which_loop()).startswith("uvloop")
