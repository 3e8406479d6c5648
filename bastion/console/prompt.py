"""The console's editor: prompt_toolkit on the SSH channel, with SQL completion, highlighting,
multi-line statements submitted at `;`, history and Ctrl-R search."""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager

import prompt_toolkit.application.application as _application
from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import create_app_session
from prompt_toolkit.data_structures import Size
from prompt_toolkit.filters import is_searching
from prompt_toolkit.history import History
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.lexers import PygmentsLexer
from pygments.lexers.sql import MySqlLexer, PostgresLexer

from bastion.console.completion import SqlCompleter
from bastion.console.terminal import ChannelInput, channel_output

__all__ = ["ConsolePrompt", "statement_complete", "submits"]


@contextmanager
def _no_winch_handler(handler: Callable[[], None]) -> Generator[None, None, None]:
    """Window changes arrive over SSH (TerminalSizeChanged), never as the bastion's SIGWINCH."""
    yield


# prompt_toolkit sets the process's SIGWINCH handler while a prompt runs (and restores the one
# before it): with consoles ending in any order, a finished console's handler stays behind, and
# the bastion is no terminal program.
_application.attach_winch_signal_handler = _no_winch_handler


def statement_complete(text: str) -> bool:
    """Whether console input ends a statement: a ';' outside quotes and comments at the end."""
    quote: str | None = None
    last = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if not ch.isspace():
            last = ch if quote is None else ""
        i += 1
    return quote is None and last == ";"


def submits(text: str) -> bool:
    """Whether Enter runs the input: a finished statement, a `\\` command or an empty line."""
    stripped = text.strip()
    # The ';' test first: a long statement is scanned only when it may be over.
    return not stripped or stripped.startswith("\\") or (stripped.endswith(";")
                                                          and statement_complete(text))


def _bindings() -> KeyBindings:
    keys = KeyBindings()

    @keys.add("enter", filter=~is_searching)  # in a Ctrl-R search, Enter takes the match
    def _enter(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if buffer.complete_state is not None:  # Enter takes the completion chosen in the menu
            buffer.complete_state = None
        elif submits(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    return keys


class ConsolePrompt:
    """Reads one statement at a time from the keys `feed` is given, drawing through `write`."""

    def __init__(self, *, write: Callable[[bytes], None], flush: Callable[[], None], term: str,
                 size: tuple[int, int], dialect: str, history: History,
                 completer: SqlCompleter) -> None:
        self.input = ChannelInput()
        self.size = Size(columns=size[0] or 80, rows=size[1] or 24)
        self.output = channel_output(write, flush, lambda: self.size, term)
        self._continuation = "-> "
        # Lexing from a nearby line, not from the start: a long paste is lexed once, not per key.
        lexer = PygmentsLexer(MySqlLexer if dialect == "mysql" else PostgresLexer,
                              sync_from_start=False)
        self.session: PromptSession[str] = PromptSession(
            input=self.input, output=self.output, history=history, completer=completer,
            lexer=lexer, multiline=True, key_bindings=_bindings(), complete_while_typing=False,
            prompt_continuation=lambda width, line, wrapped: self._continuation.rjust(width),
            reserve_space_for_menu=6,
        )
        # At most one redraw per 10 ms: a statement sent at once is drawn when it is accepted,
        # not also in between (a third of the editor's CPU per statement); typing is slower.
        self.session.app.min_redraw_interval = 0.01

    async def read(self, prompt: str, continuation: str) -> str | None:
        """One statement or command; "" after Ctrl-C, None when the input ends (Ctrl-D)."""
        self._continuation = continuation
        with create_app_session(input=self.input, output=self.output):
            try:
                return await self.session.prompt_async(prompt, handle_sigint=False)
            except KeyboardInterrupt:
                return ""
            except EOFError:
                return None

    def feed(self, data: bytes) -> bool:
        """Keys from the client (kept for the next prompt while a statement runs); False when
        too many wait already and these were dropped."""
        return self.input.feed(data)

    def resize(self, columns: int, rows: int) -> None:
        """Follow the client's window; a prompt on screen is drawn again."""
        self.size = Size(columns=columns or self.size.columns, rows=rows or self.size.rows)
        app = self.session.app
        if app.is_running:
            app._on_resize()

    def close(self) -> None:
        """End the input: a prompt on screen returns None."""
        self.input.close()
