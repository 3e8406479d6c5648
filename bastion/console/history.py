"""Console history per user and target, kept in the bastion's memory only.

Statements carry literals (`WHERE ssn = '…'`). The bastion writes recordings it cannot read back
(they are encrypted for the auditors' keys), so a history it could read would be a second,
readable copy of those literals on disk; it keeps none on disk. The history lives as long as the
bastion process, is bounded per user and target and in how many it keeps, and is shown only to
the same user on the same target.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable

from prompt_toolkit.history import History

__all__ = ["ConsoleHistories", "SessionHistory"]

MAX_STATEMENTS = 500  # per user and target
MAX_STATEMENT_CHARS = 16384  # a pasted script is run, not kept for recall
MAX_HISTORIES = 1000  # (user, target) pairs; the least recently used is forgotten first


class ConsoleHistories:
    """Every console history the bastion keeps, by (user, target)."""

    def __init__(self, per_history: int = MAX_STATEMENTS, histories: int = MAX_HISTORIES) -> None:
        self.per_history = per_history
        self.histories = histories
        self._kept: OrderedDict[tuple[str, str], deque[str]] = OrderedDict()

    def statements(self, user: str, target: str) -> list[str]:
        """The user's statements on the target, oldest first."""
        return list(self._kept.get((user, target), ()))

    def add(self, user: str, target: str, statement: str) -> None:
        """Keep one statement (not a repeat of the last one, nor an oversized one)."""
        statement = statement.strip()
        if not statement or len(statement) > MAX_STATEMENT_CHARS:
            return
        key = (user, target)
        kept = self._kept.setdefault(key, deque(maxlen=self.per_history))
        self._kept.move_to_end(key)
        if not kept or kept[-1] != statement:
            kept.append(statement)
        while len(self._kept) > self.histories:
            self._kept.popitem(last=False)


class SessionHistory(History):
    """One console's view of its user's history on its target, for prompt_toolkit."""

    def __init__(self, histories: ConsoleHistories, user: str, target: str) -> None:
        super().__init__()
        self.histories = histories
        self.user = user
        self.target = target

    def load_history_strings(self) -> Iterable[str]:
        """Newest first, as prompt_toolkit asks."""
        return reversed(self.histories.statements(self.user, self.target))

    def store_string(self, string: str) -> None:
        """Keep an accepted statement."""
        self.histories.add(self.user, self.target, string)
