"""The audit trail: every request, review, certificate, login, revocation and reload.

Each event goes to the state store (searchable) and is appended as one JSON line to a file
(for log shippers); request events are also sent to the configured webhooks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from bastion.models import AuditEvent, utcnow
from bastion.notify import WebhookNotifier
from bastion.store import Store

__all__ = ["AuditTrail"]

log = logging.getLogger("bastion.audit")


class AuditTrail:
    """Records audit events durably and notifies webhooks."""

    def __init__(self, store: Store, jsonl_path: Path, notifier: WebhookNotifier | None) -> None:
        self.store = store
        self.jsonl_path = jsonl_path
        self.notifier = notifier
        self._file_lock = asyncio.Lock()

    async def record(
        self,
        kind: str,
        *,
        actor: str | None = None,
        target: str | None = None,
        request_id: int | None = None,
        session_id: str | None = None,
        text: str | None = None,
        **details: Any,
    ) -> AuditEvent:
        """Store an event, append it to the JSON-lines file and, with `text`, notify webhooks."""
        event = AuditEvent(
            kind=kind,
            at=utcnow(),
            actor=actor,
            target=target,
            request_id=request_id,
            session_id=session_id,
            details=details,
        )
        event = await self.store.append_audit(event)
        line = json.dumps(event.to_json(), sort_keys=True, default=str) + "\n"
        async with self._file_lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                # The store already holds the event; the file is a copy for shippers.
                log.error("cannot append to audit log %s: %s", self.jsonl_path, exc.strerror)
        if text is not None and self.notifier is not None:
            self.notifier.notify(kind, text, event.to_json())
        return event

    def _append(self, line: str) -> None:
        self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.jsonl_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(line)
