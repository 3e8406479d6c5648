"""What every screen needs: the data source, the auditor key, who we are, verdicts, the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from textual.dom import DOMNode

from bastion.models import utcnow
from tui.integrity import IntegrityCache
from tui.models import Identity
from tui.sources.base import DataSource

__all__ = ["AppContext", "context_of"]


@dataclass
class AppContext:
    """Shared state of one TUI run; `identity` and `recording_key` are set during start-up."""

    source: DataSource
    key_path: Path | None = None
    recording_key: X25519PrivateKey | None = None
    identity: Identity | None = None
    clock: Callable[[], datetime] = utcnow
    integrity: IntegrityCache = field(default_factory=IntegrityCache)
    ready: bool = False

    def key(self) -> X25519PrivateKey:
        """The auditor key (start-up guarantees it is loaded before any screen needs it)."""
        if self.recording_key is None:
            raise RuntimeError("the auditor key is not loaded")
        return self.recording_key


def context_of(node: DOMNode) -> AppContext:
    """Return the context of the app `node` belongs to."""
    context = getattr(node.app, "context", None)
    if not isinstance(context, AppContext):
        raise RuntimeError("this widget is not running inside bastion-tui")
    return context
