"""Printing SQL results: aligned tables sized to the terminal, expanded records, CSV, TSV, JSON.

Results stream in batches, so every format renders batch by batch; an aligned table takes its
column widths from the header and the first batch and cuts longer values later with "…".
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Sequence
from datetime import date, datetime, time
from decimal import Decimal
from itertools import chain
from typing import Any

__all__ = ["FORMATS", "ResultWriter", "cell", "safe_text"]

FORMATS = ("table", "expanded", "csv", "tsv", "json")
MAX_CELL = 60


def cell(value: Any) -> str:
    """One value as text: NULL for None, hex for bytes, ISO for times."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return str(value)
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, datetime | date | time):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, Decimal | float | int):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    return cell(value)


def _safe(text: str) -> str:
    """Control characters in values (escape sequences!) never reach the user's terminal raw."""
    if text.isprintable():  # no control or format characters (the common case, checked in C)
        return text
    return "".join(
        ch if ch >= " " and unicodedata.category(ch) not in ("Cc", "Cf") else
        f"\\x{ord(ch):02x}" for ch in text
    )


def _texts(rows: Sequence[Sequence[Any]]) -> tuple[list[list[str]], str]:
    """Every value as safe text, and all of it joined. One check over the whole batch finds the
    common case (nothing to escape) without looking at each value twice."""
    texts = [[v if type(v) is str else cell(v) for v in row] for row in rows]
    joined = "".join(chain.from_iterable(texts))
    if joined.isprintable():
        return texts, joined
    texts = [[_safe(c) for c in row] for row in texts]
    return texts, "".join(chain.from_iterable(texts))


_UNSAFE_IN_JSON = re.compile(r"[\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _json_safe(text: str) -> str:
    """JSON text without C1 controls (CSI) or bidi overrides: json.dumps escapes only C0."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def safe_text(text: str) -> str:
    """Text a terminal shows as it is: control and format characters escaped."""
    return _safe(text)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


class ResultWriter:
    """Renders one statement's result in one format for a terminal of a given width."""

    def __init__(self, fmt: str, columns: Sequence[str], *, width: int = 80, crlf: bool = False):
        self.fmt = fmt
        self.columns = list(columns)
        self.width = max(width, 20)
        self.newline = "\r\n" if crlf else "\n"
        self._widths: list[int] | None = None
        self._record = 0
        self._json_first = True

    def _lines(self, lines: list[str]) -> str:
        return "".join(line + self.newline for line in lines)

    def header(self) -> str:
        """Text before the first row (JSON opens its array)."""
        if self.fmt in ("csv", "tsv"):
            return self._delimited([[_safe(c) for c in self.columns]])
        if self.fmt == "json":
            return "["
        return ""

    def batch(self, rows: Sequence[Sequence[Any]]) -> str:
        """Text for a batch of rows."""
        if self.fmt in ("csv", "tsv"):
            texts, joined = _texts(rows)
            delimiter = "," if self.fmt == "csv" else "\t"
            if len(self.columns) > 1 and not any(ch in joined for ch in (delimiter, '"', "\r", "\n")):
                # Nothing to quote anywhere in the batch (the common case): join in C, three
                # times faster than the csv module's writer for the same text.
                end = self.newline
                return "".join([delimiter.join(row) + end for row in texts])
            return self._delimited(texts)
        if self.fmt == "json":
            out = []
            for row in rows:
                obj = {c: _json_value(v) for c, v in zip(self.columns, row, strict=False)}
                out.append(("" if self._json_first else ",") + self.newline
                           + _json_safe(json.dumps(obj, ensure_ascii=False)))
                self._json_first = False
            return "".join(out)
        if self.fmt == "expanded":
            return self._expanded(rows)
        return self._table(rows)

    def footer(self, status: str, rowcount: int | None, truncated: bool, limit: int | None) -> str:
        """Text after the last row: the row count and whether it was cut at max_rows."""
        if self.fmt == "json":
            return self.newline + "]" + self.newline if not self._json_first else "]" + self.newline
        if self.fmt in ("csv", "tsv"):
            return ""
        lines = []
        if self.fmt == "table" and self._widths is None:
            lines.append(self._table_header())
        if rowcount is not None and self.columns:
            lines.append(f"({rowcount} row{'s' if rowcount != 1 else ''})")
        elif status:
            lines.append(status)
        if truncated:
            lines.append(f"(result cut at max_rows = {limit} by the bastion)")
        return self.newline.join(lines) + self.newline if lines else ""

    def _delimited(self, rows: list[list[str]]) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="," if self.fmt == "csv" else "\t",
                            lineterminator=self.newline)
        writer.writerows(rows)
        return buf.getvalue()

    def _table_header(self) -> str:
        if self._widths is None:
            self._widths = [len(c) for c in self.columns]
        head = " | ".join(_safe(c).ljust(w) for c, w in zip(self.columns, self._widths, strict=True))
        rule = "-+-".join("-" * w for w in self._widths)
        return head.rstrip() + self.newline + rule

    def _table(self, rows: Sequence[Sequence[Any]]) -> str:
        texts, _ = _texts(rows)
        lines = []
        if self._widths is None:
            widths = [min(MAX_CELL, max([len(c)] + [len(r[i]) for r in texts]))
                      for i, c in enumerate(self.columns)]
            # Narrow the widest columns until the table fits the terminal.
            while sum(widths) + 3 * (len(widths) - 1) > self.width and max(widths, default=0) > 8:
                widest = widths.index(max(widths))
                widths[widest] -= 1
            self._widths = widths
            lines.append(self._table_header())
        for row in texts:
            lines.append(" | ".join(_cut(v, w).ljust(w)
                                    for v, w in zip(row, self._widths, strict=False)).rstrip())
        return self._lines(lines)

    def _expanded(self, rows: Sequence[Sequence[Any]]) -> str:
        label = max((len(c) for c in self.columns), default=0)
        lines = []
        for row in rows:
            self._record += 1
            lines.append(f"-[ RECORD {self._record} ]" + "-" * max(0, label - 10))
            for name, value in zip(self.columns, row, strict=False):
                lines.append(f"{_safe(name).ljust(label)} | {_safe(cell(value))}")
        return self._lines(lines)
