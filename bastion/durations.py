"""Human durations in config and commands: "90s", "30m", "1h", "1h30m", "2d"."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

_PART = re.compile(r"([0-9]{1,7})([smhd])", re.ASCII)
MAX_SECONDS = 3650 * 86400  # ten years: anything longer is a typo, and timedelta has limits
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as "1h30m"; raise ValueError with the expected form otherwise."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned or _PART.sub("", cleaned) != "":
        raise ValueError(f"bad duration {text[:40]!r}: use a number with s, m, h or d, e.g. 30m, 1h, 1h30m")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(cleaned))
    if seconds > MAX_SECONDS:
        raise ValueError(f"bad duration {text[:40]!r}: longer than ten years")
    if seconds <= 0:
        raise ValueError(f"bad duration {text[:40]!r}: must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Format a duration compactly, e.g. 5400 s -> "1h30m"."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
