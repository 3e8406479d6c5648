"""The SQL engine: statements run by the bastion itself, guarded, masked and scrubbed."""

from bastion.sql.engine import LookupBudget, SqlConnection, open_sql_connection
from bastion.sql.errors import SqlConnectError, SqlError
from bastion.sql.policy import SqlPolicy
from bastion.sql.results import Column, StatementResult

__all__ = ["Column", "LookupBudget", "SqlConnectError", "SqlConnection", "SqlError", "SqlPolicy",
           "StatementResult", "open_sql_connection"]
