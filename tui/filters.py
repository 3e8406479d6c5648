"""The filter language of the list screens: `key:value` terms and free words, all ANDed.

Examples: `user:alice target:prod`, `date:2026-11-22 less`, `since:2026-11-01 until:2026-11-30`,
`status:tampered`, `kind:login.`. A key given twice matches either value; free words must all
appear somewhere in the row. Matching ignores case. Unknown keys are read as free words.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

__all__ = ["Query", "parse_query"]

_TIME_KEYS = frozenset({"date", "since", "until"})


def _parse_day(text: str, end: bool) -> datetime | None:
    """Parse `YYYY-MM-DD` or an ISO datetime (UTC); for a day bound `end` means its end."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime.combine(day, time(), tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Query:
    """A parsed filter."""

    terms: Mapping[str, tuple[str, ...]]
    words: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether the filter lets everything through."""
        return not (self.terms or self.words or self.since or self.until)

    def matches(self, fields: Mapping[str, str], when: datetime | None = None,
                extra: str = "") -> bool:
        """Whether a row with these fields (and time) passes; `extra` is more free-text haystack."""
        for key, values in self.terms.items():
            value = fields.get(key, "").lower()
            if key == "date":
                stamp = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if when else ""
                if not any(stamp.startswith(v) for v in values):
                    return False
            elif not any(v in value for v in values):
                return False
        if self.since is not None and (when is None or when < self.since):
            return False
        if self.until is not None and (when is None or when >= self.until):
            return False
        if self.words:
            haystack = " ".join(fields.values()).lower() + " " + extra.lower()
            if not all(word in haystack for word in self.words):
                return False
        return True


def parse_query(text: str, keys: Iterable[str]) -> Query:
    """Parse a filter; `keys` are the field names this screen knows (besides date/since/until)."""
    known = {k.lower() for k in keys} | _TIME_KEYS
    try:
        tokens = shlex.split(text)
    except ValueError:  # an unbalanced quote while typing
        tokens = text.split()
    terms: dict[str, list[str]] = {}
    words: list[str] = []
    since = until = None
    problems: list[str] = []
    for token in tokens:
        key, sep, value = token.partition(":")
        key = key.lower()
        if not sep or key not in known or not value:
            words.append(token.lower())
            continue
        if key in ("since", "until"):
            bound = _parse_day(value, end=key == "until")
            if bound is None:
                problems.append(f"{key}: expects YYYY-MM-DD or an ISO time, not {value!r}")
            elif key == "since":
                since = bound
            else:
                until = bound
            continue
        terms.setdefault(key, []).append(value.lower())
    return Query({k: tuple(v) for k, v in terms.items()}, tuple(words), since, until, tuple(problems))
