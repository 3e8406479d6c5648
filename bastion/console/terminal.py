"""prompt_toolkit over the SSH channel of a console session, without a second server.

prompt_toolkit reads keys from an `Input` and draws on an `Output`. `ChannelInput` is an Input fed
with the bytes the console reads from the SSH channel (no pipe, no file descriptor: a paste of any
size never blocks the event loop); `channel_output` is a VT100 Output whose writes go to the
console's `echo` (the editing area holds literals, so it is shown to the user and not recorded,
like keystroke echo always was).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TextIO, cast

from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import Input
from prompt_toolkit.input.vt100_parser import Vt100Parser
from prompt_toolkit.key_binding import KeyPress
from prompt_toolkit.keys import Keys
from prompt_toolkit.output.vt100 import Vt100_Output

__all__ = ["MAX_WAITING_KEYS", "ChannelInput", "channel_output"]

# No key or mouse report a terminal sends has a longer CSI parameter run; prompt_toolkit's parser
# retries every shorter prefix of an unfinished one (quadratic: 10 KB of "\x1b[1;1;…" held the
# event loop for 9 s), so longer runs are cut here.
MAX_SEQUENCE = 32
MAX_WAITING_KEYS = 65536  # keys typed ahead while a statement runs (each is an object in memory)
_CSI_RUN = re.compile(r"\x1b\[<?[\d;]*")
_PARAMETERS = re.compile(r"[\d;]*")
_TYPED_RUN = re.compile(r"[^\x00-\x1f\x7f-\x9f]{2,}")  # printable characters, two or more
_PASTED = re.compile(r"[^\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]*")  # printable and line ends
_LINE_END = re.compile(r"\r\n|\r|\n")


class ChannelInput(Input):
    """Keys parsed from what the SSH client sends, handed to whichever prompt is attached."""

    def __init__(self) -> None:
        self._keys: list[KeyPress] = []
        self._parser = Vt100Parser(lambda key: self._keys.append(key))
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._ready: Callable[[], None] | None = None
        self._closed = False
        self._run = 0  # length of a CSI parameter run the last chunk ended in
        self._escaped = False  # the last chunk ended near an escape character
        self._statement_may_end = False  # the line being typed holds a ';'

    def feed(self, data: bytes) -> bool:
        """Parse bytes from the client and wake the attached prompt; False when nothing reads
        them and too many wait already (they are dropped)."""
        if self._ready is None and len(self._keys) >= MAX_WAITING_KEYS:
            return False
        text = self._bounded(self._decoder.decode(data))
        if "\x1b" in text or self._escaped:
            self._parser.feed(text)  # keys and escape sequences: prompt_toolkit's parser
        elif _PASTED.fullmatch(text) and len(_LINE_END.findall(text)) > 1:
            self._pasted_lines(text)
        else:
            self._typed(text)
        self._escaped = "\x1b" in text[-MAX_SEQUENCE:]  # a sequence may go on in the next chunk
        self._wake()
        return True

    def _typed(self, text: str) -> None:
        """Runs of several printable characters go in as one insert each, not a key at a time
        (prompt_toolkit spends about 0.1 ms of the shared event loop on each key); Enter, Tab and
        the other control keys stay keys."""
        at = 0
        for run in _TYPED_RUN.finditer(text):
            self._parser.feed(text[at:run.start()])
            self._keys.append(KeyPress(Keys.BracketedPaste, run.group()))
            at = run.end()
        self._parser.feed(text[at:])
        line = _LINE_END.split(text)[-1]
        self._statement_may_end = ";" in line or (text == line and self._statement_may_end)

    def _pasted_lines(self, text: str) -> None:
        """Lines pasted at once: a line end is Enter (the editor decides whether the statement
        runs) after a line that may end one (it holds a ';', or it is a `\\` command) and at
        the end of the chunk; elsewhere it is a new line in the insert. Enter keys on every line
        of a long statement cost prompt_toolkit a copy of the whole input each (quadratic: a
        920 KB statement took 55 s)."""
        lines = _LINE_END.split(text)
        insert: list[str] = []
        for number, line in enumerate(lines):
            insert.append(line)
            self._statement_may_end = self._statement_may_end or ";" in line
            if number == len(lines) - 1:
                break
            last = number == len(lines) - 2 and not lines[-1]
            if last or self._statement_may_end or line.lstrip().startswith("\\"):
                self._insert("".join(insert))
                self._parser.feed("\r")
                insert = []
            else:
                insert.append("\n")
            self._statement_may_end = False
        self._insert("".join(insert))

    def _insert(self, text: str) -> None:
        """Text (printable, and new lines) as one key: prompt_toolkit inserts a paste at once."""
        if len(text) > 1:
            self._keys.append(KeyPress(Keys.BracketedPaste, text))
        else:
            self._parser.feed(text)

    def _bounded(self, text: str) -> str:
        """The text with every escape sequence's parameters cut at MAX_SEQUENCE characters."""
        if self._run:
            run = _PARAMETERS.match(text)
            length = run.end() if run else 0
            keep = max(0, MAX_SEQUENCE - self._run)
            self._run = self._run + length if length == len(text) else 0
            text = text[:min(length, keep)] + text[length:]
            if self._run:
                return text

        def cut(match: re.Match[str]) -> str:
            if match.end() == len(text):
                self._run = len(match.group())
            return match.group()[:MAX_SEQUENCE]

        return _CSI_RUN.sub(cut, text)

    def _wake(self) -> None:
        if self._ready is not None and (self._keys or self._closed):
            self._ready()

    def fileno(self) -> int:
        """No file descriptor: prompt_toolkit is woken by `feed`."""
        raise NotImplementedError("a channel input has no file descriptor")

    def typeahead_hash(self) -> str:
        """Keys typed ahead of a prompt are kept for the next prompt on this channel."""
        return f"bastion-channel-{id(self)}"

    def read_keys(self) -> list[KeyPress]:
        """The keys parsed so far."""
        keys, self._keys = self._keys, []
        return keys

    def flush_keys(self) -> list[KeyPress]:
        """The keys parsed so far, a lone Escape included (its sequence timed out)."""
        self._parser.flush()
        return self.read_keys()

    @property
    def closed(self) -> bool:
        """Whether the client's input ended (or the session did)."""
        return self._closed

    def close(self) -> None:
        """End the input: the attached prompt raises EOFError."""
        self._closed = True
        self._wake()

    def raw_mode(self) -> AbstractContextManager[None]:
        """The client's terminal is already raw (it asked for a PTY)."""
        return nullcontext()

    def cooked_mode(self) -> AbstractContextManager[None]:
        """Nothing to change on the server side."""
        return nullcontext()

    def attach(self, input_ready_callback: Callable[[], None]) -> AbstractContextManager[None]:
        """Make `input_ready_callback` the one woken by new keys, until the context ends."""
        return self._attached(input_ready_callback)

    def detach(self) -> AbstractContextManager[None]:
        """Wake nobody until the context ends."""
        return self._attached(None)

    @contextmanager
    def _attached(self, callback: Callable[[], None] | None) -> Generator[None, None, None]:
        previous, self._ready = self._ready, callback
        try:
            self._wake()
            yield
        finally:
            self._ready = previous

    def send_bytes(self, data: bytes) -> None:
        """The same as `feed`."""
        self.feed(data)

    def send_text(self, data: str) -> None:
        """Feed text as if typed."""
        self.feed(data.encode())


class _ChannelText:
    """The text stream prompt_toolkit writes to: CRLF line ends, handed on as UTF-8 bytes."""

    encoding = "utf-8"

    def __init__(self, write: Callable[[bytes], None], flush: Callable[[], None]) -> None:
        self._write = write
        self._flush = flush

    def write(self, text: str) -> int:
        """Pass text on (no terminal on this side turns LF into CRLF)."""
        self._write(text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        """Send what was written."""
        self._flush()

    def isatty(self) -> bool:
        """The client asked for a PTY."""
        return True


def channel_output(write: Callable[[bytes], None], flush: Callable[[], None],
                   size: Callable[[], Size], term: str) -> Vt100_Output:
    """A VT100 output drawing through `write`/`flush`, sized by `size` (the client's window)."""
    # No cursor position requests: the answer would arrive among the user's keys, and scripted
    # clients never send one.
    return Vt100_Output(cast(TextIO, _ChannelText(write, flush)), size, term=term or "xterm",
                        enable_cpr=False)
