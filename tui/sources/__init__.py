"""Where the TUI's data comes from: the bastion over SSH, or the store and files on disk."""

from __future__ import annotations

from tui.sources.base import DataSource, Decision, FetchProgress
from tui.sources.local import LocalSource
from tui.sources.remote import BastionAddress, RemoteSource, parse_address

__all__ = [
    "BastionAddress",
    "DataSource",
    "Decision",
    "FetchProgress",
    "LocalSource",
    "RemoteSource",
    "parse_address",
]
