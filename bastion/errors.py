"""Errors raised by the bastion, translated at the edges into messages for users.

BastionError
├── ConfigError            a config file is refused: names the file, the key and the problem
├── StoreError             the state store cannot be reached or is in an unexpected state
├── AccessDenied           a user may not do what they asked (names what to do instead)
├── NotFound               an unknown request, target, session or recording
├── InvalidRequest         a malformed command or argument
└── CertificateError       a certificate cannot be issued
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BastionError",
    "CertificateError",
    "ConfigError",
    "InvalidRequest",
    "NotFound",
    "StoreError",
]


class BastionError(Exception):
    """Base class of every error the bastion explains to a user or operator."""


class ConfigError(BastionError):
    """A config file is invalid."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + problem)


class StoreError(BastionError):
    """The state store failed."""


class AccessDenied(BastionError):
    """The user is not allowed to do this."""


class NotFound(BastionError):
    """Something named by the user does not exist."""


class InvalidRequest(BastionError):
    """A command or argument is malformed."""


class CertificateError(BastionError):
    """A certificate could not be issued."""
