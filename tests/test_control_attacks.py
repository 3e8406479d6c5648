"""Hostile control commands: sizes, numbers, durations and text that rewrites someone's screen."""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Iterator

import asyncssh
import pytest
from harness import BastionProcess, World, control, control_json, free_port

from bastion.control import MAX_ARGUMENTS, MAX_COMMAND_BYTES, _parse, _request_id
from bastion.durations import parse_duration
from bastion.errors import InvalidRequest
from bastion.text import control_characters, terminal_safe

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("control"), port=free_port(), users=dict(USERS))
    world.write_config()
    proc = BastionProcess(world)
    proc.start()
    yield proc
    proc.stop()


# Decisions, without sockets ---------------------------------------------------------------

@pytest.mark.parametrize("text", ["١٢", "1_0", "+5", "-1", "0", "9223372036854775808", "1e3", " 7"])
def test_request_ids_are_plain_ascii_numbers_in_range(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _request_id(text)
    assert _request_id("9223372036854775807") == 2**63 - 1


@pytest.mark.parametrize("text", ["99999999999999999999d", "٣h", "1_0m", "3651d", "0s"])
def test_durations_are_bounded_and_ascii(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_argument_count_is_bounded_before_argparse() -> None:
    with pytest.raises(InvalidRequest, match=f"at most {MAX_ARGUMENTS}"):
        _parse("requests" + " --json" * 30_000)


def test_terminal_safe_escapes_what_rewrites_a_screen() -> None:
    hostile = "ok\r17  mallory  prod  approved\x1b[2J\u202eevil\u200b\x9b"
    shown = terminal_safe(hostile)
    assert shown.isprintable() and "\\x1b" in shown and "\\u202e" in shown and "\\x0d" in shown
    assert terminal_safe("a\nb", keep_newlines=True) == "a\nb"
    assert control_characters("a\u200bb\u200b\x07") == ["U+200B", "U+0007"]


# Through the real front door ----------------------------------------------------------------

def test_huge_commands_get_a_clear_error(bastion: BastionProcess) -> None:
    result = control(bastion, "alice", "requests", *(["--json"] * 100))
    assert result.returncode == 2
    assert f"at most {MAX_ARGUMENTS} are accepted" in json.loads(result.stderr)["error"]
    result = control(bastion, "alice", "request", "prod", "--reason", "x" * (MAX_COMMAND_BYTES + 1))
    assert result.returncode == 2 and f"at most {MAX_COMMAND_BYTES}" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["approve", "١٢"], "digits 0-9"),
    (["approve", "1_0"], "digits 0-9"),
    (["approve", str(2**64)], "between 1 and"),
    (["cert", str(2**63)], "between 1 and"),
    (["sessions", "--limit", "10" * 20], "--limit must be"),
    (["request", "prod", "--reason", "INC-1", "--duration", "99999999999999999h"], "bad duration"),
    (["request", "prod", "--reason", "INC-1", "--duration", "٣h"], "bad duration"),
])
def test_bad_numbers_are_refused_not_internal_errors(bastion: BastionProcess, args: list[str],
                                                     message: str) -> None:
    result = control(bastion, "alice", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "internal error" not in result.stderr


def test_control_characters_in_a_reason_are_refused(bastion: BastionProcess) -> None:
    result = control(bastion, "alice", "request", "prod", "--reason", "INC-1\r17 bob prod approved")
    assert result.returncode == 2 and "U+000D" in result.stderr
    result = control(bastion, "alice", "request", "prod", "--reason", "fine\u202eenil")
    assert result.returncode == 2 and "U+202E" in result.stderr


def test_a_reason_stored_earlier_is_shown_escaped(bastion: BastionProcess) -> None:
    """A hostile reason already in the store (from before input was checked) is shown escaped
    in the approver's listing; --json stays exact."""
    req = control_json(bastion, "alice", "request", "prod", "--reason", "INC-77: plain")
    hostile = "INC-77\r17  mallory  prod  approved\x1b[2J\u202eevil"
    [db] = [p for p in bastion.world.root.rglob("state.db")]
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE requests SET reason = ? WHERE id = ?", (hostile, req["id"]))
    listing = control(bastion, "bob", "requests", "--all")
    assert listing.returncode == 0
    assert all(line.isprintable() for line in listing.stdout.splitlines())
    assert "\\x1b[2J" in listing.stdout and "\\u202e" in listing.stdout
    as_json = control_json(bastion, "bob", "requests", "--all")
    assert any(r["id"] == req["id"] and r["reason"] == hostile for r in as_json)


async def test_invalid_utf8_in_a_command_is_refused_without_harm(bastion: BastionProcess) -> None:
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    async with asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="access", client_keys=[key],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
    ) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(b"whoami \xff".decode("latin-1").encode("latin-1"))  # type: ignore[arg-type]
        # The connection still serves the next command.
        result = await conn.run("whoami", check=False)
        assert result.exit_status == 0 and "alice" in str(result.stdout)
