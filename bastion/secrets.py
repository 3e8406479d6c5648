"""Secrets that never print, and references to them in the config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import ConfigError

__all__ = ["Secret", "SecretRef"]


class Secret:
    """A secret value (a password, a token) that shows as `<secret>` in reprs, logs and errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value itself, for handing to a driver."""
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class SecretRef:
    """Where a credential lives: an environment variable or a file, read when it is needed."""

    env: str | None = None
    file: Path | None = None
    value: Secret | None = None  # held by the bastion itself (a grant account's password)

    def describe(self) -> str:
        """Where the secret comes from, safe to show."""
        if self.value is not None:
            return "a password held by the bastion"
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def resolve(self) -> Secret:
        """Read the secret now; raise ConfigError naming where it was looked for."""
        if self.value is not None:
            return self.value
        if self.env is not None:
            if self.env not in os.environ:
                raise ConfigError("", "", f"credential {self.describe()} is not set")
            return Secret(os.environ[self.env])
        assert self.file is not None
        try:
            return Secret(self.file.read_text().rstrip("\n"))
        except OSError as exc:
            raise ConfigError("", "", f"cannot read credential {self.describe()}: "
                              f"{exc.strerror}") from None
