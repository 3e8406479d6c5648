"""Errors of the SQL engine.

BastionError                      (bastion.errors)
└── SqlError                      the SQL engine cannot do what was asked
    └── SqlConnectError           a database target cannot be reached or refuses the login;
                                  the message never contains the password

Statements that fail on the server are not exceptions: they come back as a StatementResult whose
`error` holds the server's message, scrubbed of values.
"""

from __future__ import annotations

from bastion.errors import BastionError

__all__ = ["SqlConnectError", "SqlError"]


class SqlError(BastionError):
    """The SQL engine cannot do what was asked (e.g. a connection that is closed or busy)."""


class SqlConnectError(SqlError):
    """A database target cannot be reached, or it refused the bastion's login."""
