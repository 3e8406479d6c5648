"""Reading one TOML table of the config: typed keys, dotted paths in errors, unknown keys refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from bastion.durations import parse_duration
from bastion.errors import ConfigError
from bastion.secrets import SecretRef

__all__ = ["ConfigTable", "secret_ref"]

T = TypeVar("T")


class ConfigTable:
    """A TOML table being read: tracks its dotted path and refuses keys nobody read."""

    def __init__(self, file: str, path: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(file, path, f"must be a table, not {_kind(data)}")
        self.file = file
        self.path = path
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        """Dotted name of a key in this table."""
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str) -> ConfigError:
        """Build an error about one key."""
        return ConfigError(self.file, self.key(name), problem)

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: Any = ...) -> Any:
        """Read a key of the given type; a missing key without default is an error."""
        self.seen.add(name)
        if name not in self.data:
            if default is ...:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        if kind is int and isinstance(value, bool):
            raise self.error(name, f"must be an integer, not {_kind(value)}")
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(name, f"must be {_article(expected)}, not {_kind(value)}")
        return value

    def text(self, name: str, default: Any = ...) -> Any:
        """Read a non-empty string."""
        value = self.get(name, str, default)
        if isinstance(value, str) and not value.strip():
            raise self.error(name, "must not be empty")
        return value

    def strings(self, name: str, default: Any = ...) -> tuple[str, ...]:
        """Read a list of strings."""
        value = self.get(name, list, default)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"{name}[{i}]", "must be a non-empty string")
        return tuple(value)

    def duration(self, name: str, default: Any = ...) -> timedelta:
        """Read a duration such as "1h"."""
        value = self.get(name, str, default)
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def tables(self, name: str) -> Iterator[ConfigTable]:
        """Read an array of tables."""
        items = self.get(name, list, [])
        for i, item in enumerate(items):
            yield ConfigTable(self.file, f"{self.key(name)}[{i}]", item)

    def table(self, name: str) -> ConfigTable:
        """Read a sub-table (empty if missing)."""
        return ConfigTable(self.file, self.key(name), self.get(name, dict, {}))

    def done(self) -> None:
        """Refuse keys that no reader asked for (typos must not silently do nothing)."""
        for name in self.data:
            if name not in self.seen:
                raise self.error(name, "unknown key")


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _article(noun: str) -> str:
    noun = {"str": "string", "int": "integer", "list": "list", "dict": "table", "bool": "boolean"}.get(
        noun, noun
    )
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def secret_ref(t: ConfigTable, name: str, base: Path) -> SecretRef | None:
    """Read a credential reference: {env = "VAR"} or {file = "/path"}, never the value inline."""
    value = t.data.get(name)
    if isinstance(value, str):
        t.seen.add(name)
        raise t.error(name, 'credentials are never inline: give {env = "VARIABLE"} or '
                      '{file = "/path"}')
    value = t.get(name, dict, None)
    if value is None:
        return None
    ref = ConfigTable(t.file, t.key(name), value)
    env = ref.get("env", str, None)
    file = ref.get("file", str, None)
    ref.done()
    if (env is None) == (file is None):
        raise t.error(name, 'must be {env = "VARIABLE"} or {file = "/path"}')
    return SecretRef(env=env, file=_under(file, base) if file else None)


def _under(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
