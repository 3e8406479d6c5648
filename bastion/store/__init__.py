"""The state store: SQLite for one bastion, PostgreSQL for several."""

from __future__ import annotations

from bastion.store.base import ReviewOutcome, Store

__all__ = ["ReviewOutcome", "Store", "open_store"]


async def open_store(url: str) -> Store:
    """Open the store named by a `sqlite:///path` or `postgresql://…` URL and migrate it."""
    from bastion.errors import ConfigError

    store: Store
    if url.startswith("sqlite:///"):
        from bastion.store.sqlite import SQLiteStore

        store = SQLiteStore(url.removeprefix("sqlite:///"))
    elif url.startswith(("postgresql://", "postgres://")):
        from bastion.store.postgres import PostgresStore

        store = PostgresStore(url)
    else:
        raise ConfigError("", "server.state_store", f"unsupported store URL scheme in {url!r}")
    await store.open()
    return store
