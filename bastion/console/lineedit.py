"""A small line editor for the SQL console on a raw PTY: editing, history, Ctrl-C/Ctrl-D.

It is a pure state machine: `feed(bytes)` returns what to echo and the events it produced
(a finished line, an interrupt, end of input), so it is tested without any terminal.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

__all__ = ["EOF", "INTERRUPT", "LineEditor"]

INTERRUPT = object()  # Ctrl-C
EOF = object()  # Ctrl-D on an empty line

_ESC_KEYS = {
    "[A": "up", "[B": "down", "[C": "right", "[D": "left", "[H": "home", "[F": "end",
    "OH": "home", "OF": "end", "[3~": "delete", "[1~": "home", "[4~": "end",
}


@dataclass
class LineEditor:
    """Edits one line at a time; keeps a history of entered lines."""

    prompt: str = ""
    history: list[str] = field(default_factory=list)
    max_history: int = 500
    _line: list[str] = field(default_factory=list)
    _cursor: int = 0
    _escape: str | None = None
    _browse: int | None = None
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )

    @property
    def line(self) -> str:
        """The line being edited."""
        return "".join(self._line)

    def start(self, prompt: str) -> str:
        """Begin a new line with `prompt`; return what to write."""
        self.prompt = prompt
        self._line, self._cursor, self._browse = [], 0, None
        return prompt

    def feed(self, data: bytes) -> tuple[str, list[object]]:
        """Process keystrokes; return (echo text, events: str lines, INTERRUPT or EOF)."""
        echo: list[str] = []
        events: list[object] = []
        for ch in self._decoder.decode(data):
            if self._escape is not None:
                self._escape += ch
                key = _ESC_KEYS.get(self._escape)
                if key is not None or (len(self._escape) > 1 and self._escape[-1].isalpha()) \
                        or self._escape.endswith("~") or len(self._escape) > 6:
                    self._escape = None
                    if key is not None:
                        echo.append(self._key(key))
                continue
            if ch == "\x1b":
                self._escape = ""
            elif ch in ("\r", "\n"):
                line = self.line
                if line.strip() and (not self.history or self.history[-1] != line):
                    self.history.append(line)
                    del self.history[: -self.max_history]
                echo.append("\r\n")
                events.append(line)
                self._line, self._cursor, self._browse = [], 0, None
            elif ch == "\x03":
                echo.append("^C\r\n")
                self._line, self._cursor, self._browse = [], 0, None
                events.append(INTERRUPT)
            elif ch == "\x04":
                if not self._line:
                    events.append(EOF)
                else:
                    echo.append(self._key("delete"))
            elif ch in ("\x7f", "\x08"):
                echo.append(self._backspace())
            elif ch == "\x15":  # Ctrl-U
                echo.append(self._replace(""))
            elif ch == "\x01":
                echo.append(self._key("home"))
            elif ch == "\x05":
                echo.append(self._key("end"))
            elif ch == "\t":
                echo.append(self._insert("    "))
            elif ch >= " ":
                echo.append(self._insert(ch))
        return "".join(echo), events

    def _insert(self, text: str) -> str:
        tail = self._line[self._cursor:]
        self._line[self._cursor:self._cursor] = list(text)
        self._cursor += len(text)
        return text + "".join(tail) + "\b" * len(tail)

    def _backspace(self) -> str:
        if self._cursor == 0:
            return ""
        self._cursor -= 1
        del self._line[self._cursor]
        tail = self._line[self._cursor:]
        return "\b" + "".join(tail) + " " + "\b" * (len(tail) + 1)

    def _replace(self, text: str) -> str:
        erase = "\b" * self._cursor + " " * len(self._line) + "\b" * len(self._line)
        self._line, self._cursor = list(text), len(text)
        return erase + text

    def _key(self, key: str) -> str:
        if key == "left" and self._cursor > 0:
            self._cursor -= 1
            return "\b"
        if key == "right" and self._cursor < len(self._line):
            self._cursor += 1
            return self._line[self._cursor - 1]
        if key == "home":
            moved, self._cursor = self._cursor, 0
            return "\b" * moved
        if key == "end":
            rest = "".join(self._line[self._cursor:])
            self._cursor = len(self._line)
            return rest
        if key == "delete" and self._cursor < len(self._line):
            del self._line[self._cursor]
            tail = self._line[self._cursor:]
            return "".join(tail) + " " + "\b" * (len(tail) + 1)
        if key in ("up", "down") and self.history:
            if key == "up":
                self._browse = len(self.history) - 1 if self._browse is None else max(
                    0, self._browse - 1)
            elif self._browse is None:
                return ""
            else:
                self._browse += 1
                if self._browse >= len(self.history):
                    self._browse = None
                    return self._replace("")
            return self._replace(self.history[self._browse])
        return ""
