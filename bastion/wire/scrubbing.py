"""What the relays scrub in results, as the console does: the database masks table data, and
these are the nets for what is not table data. Plans, SHOW output and similar server text quote
values (a statement's own literals, constants the optimizer read): values quoted in them go.
Computed values of a masked grant (no table or view behind the column) pass the content
detectors. Columns read from a table or a masked view pass as the database sent them."""

from __future__ import annotations

from collections.abc import Callable

from bastion.sql.detectors import scrub_text, scrub_value
from bastion.sql.scrub import scrub_message

__all__ = ["TEXT_KINDS", "Scrubber", "computed_scrubber", "scrub_binary_integer"]

TEXT_KINDS = frozenset({"show", "explain", "describe"})  # results that are server text
Scrubber = Callable[[bytes], "bytes | None"]  # a value in, the value the client gets out


def computed_scrubber(kind: str, names: Callable[[], frozenset[str]], masked: bool
                      ) -> Scrubber | None:
    """How a computed column's text values are scrubbed for a statement of `kind` (None: they
    pass as they are). `names` gives the statement's own names, asked for only when server text
    is scrubbed (gathering them for every result was work a relay did for nothing)."""
    text_result = kind in TEXT_KINDS
    if not text_result and not masked:
        return None
    kept = names() if text_result else frozenset()

    def scrub(value: bytes) -> bytes | None:
        text = value.decode("utf-8", "replace")
        scrubbed = scrub_message(text, kept) if text_result else scrub_text(text)
        return value if scrubbed == text else scrubbed.encode()

    return scrub


def scrub_binary_integer(value: bytes) -> bytes | None:
    """A computed integer in binary format that looks like a sensitive number becomes NULL (a
    binary column cannot carry the redaction text)."""
    number = int.from_bytes(value, "big", signed=True)
    return value if scrub_value(number) == number else None
