"""One database account per approved grant: its name and the privileges it holds, as SQL.

Pure: the statements are built here and run by `bastion.db.admin`. A masked grant reads the
masked views and the unmasked columns of the raw tables, and nothing of a raw masked column
(column-level grants); an unmasked grant reads the raw tables. Read-only targets give SELECT only;
read-write grants may also write the columns they may read. No grant may create code or tables
(temporary tables aside), and every account's password is random and held by the bastion alone.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from bastion.db.layout import MASKED_SUFFIX, Layout

__all__ = ["ACCOUNT_PREFIX", "AccountNames", "Grant", "grant_sql", "new_installation_tag"]

ACCOUNT_PREFIX = "bx_"
_UNSAFE = re.compile(r"[^a-z0-9_]")
_INSTALLATION = re.compile(r"^[a-z0-9]{5}$")
_PERSON_AND_REQUEST = re.compile(r"[a-z0-9_]*_r(\d+)")


@dataclass(frozen=True)
class Grant:
    """What one approved request allows on one SQL target."""

    request_id: int
    user: str
    unmasked: bool
    read_only: bool
    expires_at: datetime | None


def new_installation_tag() -> str:
    """A random tag for a new installation: 5 of [a-z0-9]."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(5))


@dataclass(frozen=True)
class AccountNames:
    """The grant accounts of one installation (the bastions sharing one state store).

    Request numbers are only unique within a state store: two installations on one database
    server (staging and production bastions, say) would otherwise both own `bx_alice_r1`, reset
    each other's passwords and end each other's sessions. The installation's tag in every name
    keeps each bastion to its own accounts.
    """

    installation: str

    def __post_init__(self) -> None:
        if not _INSTALLATION.match(self.installation):
            raise ValueError(f"installation tag {self.installation!r} is not 5 of [a-z0-9]")

    @property
    def prefix(self) -> str:
        """What every account of this installation starts with."""
        return f"{ACCOUNT_PREFIX}{self.installation}_"

    def account(self, user: str, request_id: int) -> str:
        """`bx_<installation>_<user>_r<request>`: the database's own logs and activity views
        name the person. At most 32 characters (MySQL's limit)."""
        suffix = f"_r{request_id}"
        person = _UNSAFE.sub("_", user.lower())[: 32 - len(self.prefix) - len(suffix)]
        return f"{self.prefix}{person}{suffix}"

    def request_of(self, account: str) -> int | None:
        """The request an account was made for, or None if it is not one of this
        installation's."""
        if not account.startswith(self.prefix):
            return None
        match = _PERSON_AND_REQUEST.fullmatch(account[len(self.prefix):])
        return int(match.group(1)) if match else None


def _cols(dialect: str, names: tuple[str, ...]) -> str:
    if dialect == "mysql":
        return ", ".join("`" + n.replace("`", "``") + "`" for n in names)
    return ", ".join('"' + n.replace('"', '""') + '"' for n in names)


def _rel(dialect: str, schema: str, name: str) -> str:
    return f"{_cols(dialect, (schema,))}.{_cols(dialect, (name,))}"


def grant_sql(layout: Layout, grant: Grant, account: str) -> list[str]:
    """Statements giving `account` exactly what `grant` allows (run after its privileges were
    reset)."""
    d = layout.dialect
    who = _cols(d, (account,)) if d == "postgres" else f"'{account}'@'%'"
    write = not grant.read_only
    out: list[str] = []
    schemas = sorted({t.table.schema for t in layout.tables})
    if d == "postgres":
        out.append(f"GRANT CONNECT, TEMPORARY ON DATABASE {_cols(d, (layout.database,))} TO {who}")
        visible = schemas if grant.unmasked else [*layout.view_schemas, *schemas]
        for schema in dict.fromkeys([*visible, "public"]):
            out.append(f"GRANT USAGE ON SCHEMA {_cols(d, (schema,))} TO {who}")
    privileges = "SELECT, INSERT, UPDATE, DELETE" if write else "SELECT"
    if d == "postgres" and write:  # serial and identity columns draw from sequences
        out.extend(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {_cols(d, (s,))} TO {who}"
                   for s in schemas)
    if grant.unmasked:
        if d == "postgres":
            out.extend(f"GRANT {privileges} ON ALL TABLES IN SCHEMA {_cols(d, (s,))} TO {who}"
                       for s in schemas)
        else:
            out.append(f"GRANT {privileges} ON {_cols(d, (layout.database,))}.* TO {who}")
        return out
    if d == "mysql" and layout.masked:
        # The views call it; MariaDB shows a view's columns only to who may run what it calls.
        out.append(f"GRANT EXECUTE ON FUNCTION {_cols(d, (layout.database + MASKED_SUFFIX,))}"
                   f".bastion_lookup TO {who}")
    for masked in layout.tables:
        t = masked.table
        raw = _rel(d, t.schema, t.name)
        if not masked.masked:
            out.append(f"GRANT {privileges} ON {raw} TO {who}")
            if d == "mysql":  # the pass-through view in the default database
                out.append(f"GRANT {privileges} ON {_rel(d, layout.view_schema(t.schema), t.name)} "
                           f"TO {who}")
            continue
        # Nothing on the raw table, not even its unmasked columns: a scan of them may follow an
        # index that holds a masked column (rows in raw-value order), and MariaDB's HANDLER and
        # CHECKSUM TABLE read whole rows with any column privilege.
        plain = _cols(d, masked.plain)
        view = _rel(d, layout.view_schema(t.schema), t.name)
        out.append(f"GRANT SELECT ON {view} TO {who}")
        if write and masked.plain:  # through the view, which is updatable in its plain columns
            insert = f"INSERT ({plain}), " if d == "postgres" else ""
            out.append(f"GRANT {insert}UPDATE ({plain}), DELETE ON {view} TO {who}")
    if d == "postgres":
        path = ", ".join(_cols(d, (s,)) for s in layout.search_path)
        out.append(f"ALTER ROLE {who} IN DATABASE {_cols(d, (layout.database,))} "
                   f"SET search_path = {path}")
    return out

