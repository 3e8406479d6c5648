"""The console's editor without a network: completion decisions, history, and prompt_toolkit
driven through the channel input exactly as the SSH session drives it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.search import SearchState

from bastion.console.completion import SqlCompleter, Vocabulary, suggest
from bastion.console.history import ConsoleHistories, SessionHistory
from bastion.console.prompt import ConsolePrompt

VOCABULARY = Vocabulary.from_columns([
    ("public_masked", "customers", "id"), ("public_masked", "customers", "name"),
    ("public_masked", "customers", "ssn"), ("public", "notes", "id"), ("public", "notes", "body"),
    ("public", "evil\x1b]0;x\x07", "id"), ("public", "notes", "bad\x9b31m"),
])


def texts(text: str, statement: str | None = None) -> list[str]:
    return [s.text for s in suggest(text, VOCABULARY, statement)[1]]


def test_tables_after_from_and_columns_of_the_tables_named() -> None:
    assert texts("SELECT * FROM cu") == ["customers"]
    assert "public." in texts("SELECT * FROM ")
    assert texts("SELECT na") == ["name"]
    # The columns of the table named (after the cursor too) first, then keywords.
    assert texts("SELECT b", "SELECT b FROM notes") == ["body", "begin", "between", "by"]
    assert texts("SELECT n FROM customers c WHERE c.n") == ["c.name"]  # through the alias
    assert texts("SELECT public.notes.b") == ["public.notes.body"]
    assert texts("SELECT * FROM public.") == ["public.notes"]  # the raw customers table: unreadable
    assert texts("\\d cus") == ["customers"]


def test_keywords_follow_the_case_typed_and_commands_start_a_line() -> None:
    assert "select" in texts("sel") and "SELECT" in texts("SEL")
    assert texts("\\") == ["\\?", "\\d", "\\dt", "\\format", "\\q", "\\x"]
    assert texts("\\f") == ["\\format"]
    assert texts("select 1 \\") == []


def test_names_a_terminal_cannot_show_are_never_offered() -> None:
    everything = texts("SELECT ") + texts("SELECT * FROM ") + texts("SELECT b", "SELECT b FROM notes")
    assert not any(ch in "".join(everything) for ch in ("\x1b", "\x9b", "\x07"))


def test_history_is_per_user_and_target_bounded_and_skips_repeats() -> None:
    kept = ConsoleHistories(per_history=3, histories=2)
    for sql in ("select 1;", "select 1;", "select 2;", "select 3;", "select 4;"):
        kept.add("alice", "pg", sql)
    assert kept.statements("alice", "pg") == ["select 2;", "select 3;", "select 4;"]
    assert kept.statements("bob", "pg") == [] and kept.statements("alice", "my") == []
    kept.add("alice", "pg", "x" * 20000)  # a pasted script: run, not kept
    assert kept.statements("alice", "pg")[-1] == "select 4;"
    kept.add("bob", "pg", "b;")
    kept.add("carol", "pg", "c;")  # a third history: the least recently used one goes
    assert kept.statements("alice", "pg") == []
    assert list(SessionHistory(kept, "carol", "pg").load_history_strings()) == ["c;"]


async def _read(prompt: ConsolePrompt, *steps: bytes | Callable[[], bool]) -> str | None:
    """Types each chunk of keys into a prompt. A condition between chunks is waited for first:
    keys whose effect comes later, from a task of the event loop, that the next keys depend on."""
    task = asyncio.create_task(prompt.read("db=> ", "db-> "))
    for step in steps:
        if isinstance(step, bytes):
            await asyncio.sleep(0.05)
            prompt.feed(step)
        else:
            await _until(prompt, step, task)
    return await asyncio.wait_for(task, 5)


async def _until(prompt: ConsolePrompt, condition: Callable[[], bool],
                 reading: asyncio.Task[str | None]) -> None:
    """Polls the prompt's state: a loaded CI machine can hold the event loop back for long."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not condition():
        if reading.done() or loop.time() > deadline:
            reading.cancel()
            raise AssertionError(f"the prompt ended or timed out before {condition.__doc__} "
                                 f"(its text: {prompt.session.default_buffer.text!r})")
        await asyncio.sleep(0.01)


def _text_is(prompt: ConsolePrompt, text: str) -> Callable[[], bool]:
    def condition() -> bool:
        return prompt.session.default_buffer.text == text

    condition.__doc__ = f"its text was {text!r}"
    return condition


def _search_finds(prompt: ConsolePrompt, text: str) -> Callable[[], bool]:
    """Whether the Ctrl-R search typed so far finds `text` (what Enter would take), worked out as
    prompt_toolkit's own preview does; nothing is found before the history has loaded."""
    session = prompt.session

    def condition() -> bool:
        target = session.app.layout.search_target_buffer_control
        if target is None or not session.search_buffer.text:
            return False
        state = SearchState(text=session.search_buffer.text,
                            direction=target.search_state.direction,
                            ignore_case=target.search_state.ignore_case)
        return target.buffer.document_for_search(state).text == text

    condition.__doc__ = f"its Ctrl-R search found {text!r}"
    return condition


def _prompt(history: InMemoryHistory | None = None) -> tuple[ConsolePrompt, list[bytes]]:
    drawn: list[bytes] = []
    prompt = ConsolePrompt(write=drawn.append, flush=lambda: None, term="xterm", size=(80, 24),
                           dialect="postgres", history=history or InMemoryHistory(),
                           completer=SqlCompleter(VOCABULARY))
    return prompt, drawn


async def test_prompt_completes_spans_lines_and_submits_at_semicolon() -> None:
    prompt, drawn = _prompt()
    # Tab completes in a task of the event loop: Enter before it is done ends the line unfinished.
    assert await _read(prompt, b"SELECT na\t", _text_is(prompt, "SELECT name"), b"\r",
                       b"FROM customers;\r") == "SELECT name\nFROM customers;"
    assert b"db-> " in b"".join(drawn) or b"db->" in b"".join(drawn)
    assert await _read(prompt, b"\\dt\r") == "\\dt"


async def test_prompt_ctrl_c_clears_ctrl_d_ends_and_keys_typed_ahead_wait() -> None:
    prompt, _ = _prompt()
    assert await _read(prompt, b"SELECT half\x03") == ""
    prompt.feed(b"SELECT 'ahead';\r")  # typed while a statement ran: the next prompt reads it
    assert await _read(prompt) == "SELECT 'ahead';"
    assert await _read(prompt, b"\x04") is None


async def test_ctrl_r_finds_an_earlier_statement() -> None:
    history = InMemoryHistory()
    for sql in ("SELECT 'first';", "SELECT 'second';"):
        history.append_string(sql)
    prompt, _ = _prompt(history)
    # The history loads in a task of the event loop: Enter before it has, and nothing is found.
    assert await _read(prompt, b"\x12fir", _search_finds(prompt, "SELECT 'first';"), b"\r",
                       b"\r") == "SELECT 'first';"


async def test_closing_the_input_ends_a_prompt_on_screen() -> None:
    prompt, _ = _prompt()
    task = asyncio.create_task(prompt.read("db=> ", "db-> "))
    await asyncio.sleep(0.05)
    prompt.close()
    assert await asyncio.wait_for(task, 5) is None


async def _feed_chunks(prompt: ConsolePrompt, data: bytes) -> asyncio.Task[str | None]:
    task = asyncio.create_task(prompt.read("db=> ", "db-> "))
    await asyncio.sleep(0.05)
    for start in range(0, len(data), 4096):  # as the SSH channel hands it over
        prompt.feed(data[start:start + 4096])
    return task


async def test_a_script_sent_at_once_runs_statement_by_statement() -> None:
    prompt, _ = _prompt()
    script = "".join(f"INSERT INTO notes\rVALUES ({i}, 'n{i}');\r" for i in range(300)).encode()
    read = [await asyncio.wait_for(await _feed_chunks(prompt, script), 10)]
    while len(read) < 300:
        read.append(await asyncio.wait_for(prompt.read("db=> ", "db-> "), 10))
    assert read[0] == "INSERT INTO notes\nVALUES (0, 'n0');"
    assert read[-1] == "INSERT INTO notes\nVALUES (299, 'n299');"


async def test_a_long_statement_sent_at_once_is_inserted_whole() -> None:
    prompt, _ = _prompt()
    rows = ",\r".join(f"({i}, 'n{i}')" for i in range(20000))
    task = await _feed_chunks(prompt, f"INSERT INTO notes VALUES\r{rows};\r".encode())
    # Key by key (an Enter per line), prompt_toolkit copied the whole input on every line: 55 s.
    text = await asyncio.wait_for(task, 10)
    assert text is not None and text.count("\n") == 20000 and text.endswith("(19999, 'n19999');")


async def test_hostile_escape_runs_and_floods_of_typed_ahead_keys_are_bounded() -> None:
    prompt, _ = _prompt()
    # An escape sequence that never ends: prompt_toolkit alone spent seconds per 10 KB on it.
    flood = ("\x1b[" + "1;" * 40000).encode()
    for start in range(0, len(flood), 4096):
        prompt.feed(flood[start:start + 4096])
    assert await _read(prompt, b"x\x15SELECT 1;\r") == "SELECT 1;"  # Ctrl-U cleared what was left
    # Keys typed while no prompt reads them are kept up to a bound, then refused.
    accepted = [prompt.feed(b"\x01" * 4096) for _ in range(40)]
    assert accepted[0] and not accepted[-1]


async def test_consoles_leave_no_signal_handler_behind() -> None:
    first, _ = _prompt()
    second, _ = _prompt()
    reads = [asyncio.create_task(p.read("db=> ", "db-> ")) for p in (first, second)]
    await asyncio.sleep(0.05)
    for prompt, read in zip((first, second), reads, strict=True):  # the first to start ends first
        prompt.feed(b"SELECT 1;\r")
        assert await asyncio.wait_for(read, 5) == "SELECT 1;"
    handlers = getattr(asyncio.get_running_loop(), "_signal_handlers", {})
    assert signal.SIGWINCH not in handlers and signal.SIGINT not in handlers
