"""The bastion over SSH: control commands with `--json`, recordings fetched over the same link.

The TUI logs in as `access@HOST` with the auditor's SSH key, exactly like `ssh access@HOST
COMMAND`; the bastion applies its own rules to every command. Recording files arrive still
encrypted (the bastion cannot read them) and are kept in a private temporary directory until
the TUI exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recorder import KeyFileError, parse_public_key_line
from tui.errors import (
    BastionUnreachable,
    CommandFailed,
    KeyProblem,
    LoginRefused,
    NotAnAuditor,
    RecordingProblem,
    SourceError,
)
from tui.models import AuditInfo, Identity, RequestInfo, SessionInfo
from tui.safe import one_line
from tui.sources.base import DataSource, Decision, FetchProgress

MAX_SESSIONS = 100_000  # as many as local mode reads

__all__ = ["BastionAddress", "RemoteSource", "parse_address"]

CONTROL_USER = "access"
DEFAULT_PORT = 2222
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class BastionAddress:
    """Where the control plane listens."""

    host: str
    port: int = DEFAULT_PORT
    user: str = CONTROL_USER

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


def parse_address(text: str) -> BastionAddress:
    """Parse `[USER@]HOST[:PORT]` (IPv6 hosts in brackets); raise ValueError when malformed."""
    user = CONTROL_USER
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not user:
            raise ValueError("empty user name before @")
    port = DEFAULT_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"unexpected {rest!r} after the IPv6 address")
            port = _port(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text)
    else:
        host = text
    if not host:
        raise ValueError("no host name")
    return BastionAddress(host, port, user)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r}")
    return int(text)


def _error_message(stderr: str) -> tuple[str, str]:
    """Return (message, kind) from a failed command's stderr (JSON with --json, else text)."""
    text = stderr.strip()
    with contextlib.suppress(ValueError):
        obj = json.loads(text.splitlines()[-1]) if text else None
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return obj["error"], str(obj.get("kind") or "")
    return text.removeprefix("error: ") or "the command failed without a message", ""


class RemoteSource(DataSource):
    """A control-plane connection to one bastion."""

    can_review = True

    def __init__(
        self,
        address: BastionAddress,
        *,
        identity: str | Path | None = None,
        known_hosts: str | Path | None = None,
        connect_timeout: float = 15.0,
        cache_dir: Path | None = None,
    ) -> None:
        self.address = address
        self.description = str(address)
        self._identity = Path(identity) if identity is not None else None
        self._known_hosts = Path(known_hosts) if known_hosts is not None else None
        self._signer: Ed25519PublicKey | None = None
        self._timeout = connect_timeout
        self._conn: asyncssh.SSHClientConnection | None = None
        self._cache_root = cache_dir
        self._cache: Path | None = None
        self._fetched: dict[str, Path] = {}

    # -- connection -------------------------------------------------------------------------

    def _client_key(self) -> asyncssh.SSHKey | None:
        if self._identity is None:
            return None
        passphrase = os.environ.get("BASTION_SSH_PASSPHRASE")
        try:
            return asyncssh.read_private_key(self._identity, passphrase)
        except (OSError, asyncssh.KeyImportError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            hint = " (set BASTION_SSH_PASSPHRASE)" if "assphrase" in problem else ""
            raise KeyProblem(f"cannot load the SSH key {self._identity}: {problem}{hint}") from None

    async def open(self) -> Identity:
        """Log in as `access` and ask the bastion who we are."""
        options: dict[str, Any] = {"username": self.address.user,
                                   "connect_timeout": self._timeout}
        key = await asyncio.to_thread(self._client_key)
        if key is not None:
            options["client_keys"] = [key]
            options["agent_path"] = None
        if self._known_hosts is not None:
            if not self._known_hosts.is_file():
                raise BastionUnreachable(f"no known-hosts file {self._known_hosts}")
            options["known_hosts"] = str(self._known_hosts)
        where = str(self.address)
        try:
            self._conn = await asyncssh.connect(self.address.host, self.address.port, **options)
        except asyncssh.PermissionDenied:
            raise LoginRefused(
                f"{where} refused the SSH login: the key is not registered for an auditor there "
                "(pass --identity with your registered SSH key)") from None
        except asyncssh.HostKeyNotVerifiable as exc:
            raise BastionUnreachable(
                f"the host key of {where} is not trusted ({exc.reason}); check it and add it to "
                "known_hosts, or pass --known-hosts FILE") from None
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc) \
                or type(exc).__name__
            raise BastionUnreachable(f"cannot reach the bastion at {where}: {reason}") from None
        whoami, targets = await asyncio.gather(self._json("whoami"), self._json("targets"))
        if not isinstance(whoami, dict):
            raise SourceError(f"{where} answered `whoami --json` with something unexpected")
        user = one_line(str(whoami.get("user") or "?"), 64)
        self._signer = _signer_key(whoami.get("recording_signer"))
        self.description = f"{user} @ {one_line(self.address.host, 64)}:{self.address.port}"
        return Identity.from_json(whoami, targets, self.description)

    def signer(self) -> Ed25519PublicKey | None:
        """The key the bastion says signs its recordings (pinned for every verification)."""
        return self._signer

    async def close(self) -> None:
        """Close the connection and delete fetched recordings."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()
        if self._cache is not None:
            await asyncio.to_thread(shutil.rmtree, self._cache, True)
            self._cache = None

    def _connection(self) -> asyncssh.SSHClientConnection:
        if self._conn is None:
            raise BastionUnreachable("not connected to the bastion")
        return self._conn

    async def _json(self, *argv: str) -> Any:
        """Run a control command with --json and return its parsed output."""
        command = shlex.join([*argv, "--json"])
        try:
            result = await self._connection().run(command, check=False, encoding="utf-8")
        except (OSError, asyncssh.Error) as exc:
            raise BastionUnreachable(f"lost the connection to the bastion: {exc}") from None
        stdout = result.stdout if isinstance(result.stdout, str) else ""
        stderr = result.stderr if isinstance(result.stderr, str) else ""
        if result.exit_status != 0:
            message, kind = _error_message(stderr)
            if kind == "AccessDenied" and "audit" in message:
                raise NotAnAuditor(message, kind, result.exit_status)
            raise CommandFailed(message, kind, result.exit_status)
        try:
            return json.loads(stdout)
        except ValueError:
            raise SourceError(f"`{argv[0]} --json` did not return JSON: {stdout[:200]!r}") from None

    # -- data -------------------------------------------------------------------------------

    async def sessions(self) -> list[SessionInfo]:
        """`sessions --json`."""
        data = await self._json("sessions", "--limit", str(MAX_SESSIONS))
        return [SessionInfo.from_json(s) for s in _objects(data)]

    async def requests(self) -> list[RequestInfo]:
        """`requests --all --json`."""
        data = await self._json("requests", "--all")
        return [RequestInfo.from_json(r) for r in _objects(data)]

    async def audit(self, *, kind: str | None = None, limit: int = 1000) -> list[AuditInfo]:
        """`audit --json [--kind PREFIX] --limit N`."""
        argv = ["audit", "--limit", str(limit)]
        if kind:
            argv += ["--kind", kind]
        data = await self._json(*argv)
        return [AuditInfo.from_json(e) for e in _objects(data)]

    async def review(self, request_id: int, decision: Decision, text: str) -> RequestInfo:
        """`approve ID [--comment TEXT]` or `deny ID --reason TEXT`; the bastion decides."""
        argv: Sequence[str]
        if decision == "approve":
            argv = ["approve", str(request_id)] + (["--comment", text] if text.strip() else [])
        else:
            if not text.strip():
                raise CommandFailed("a denial needs a reason")
            argv = ["deny", str(request_id), "--reason", text]
        data = await self._json(*argv)
        if not isinstance(data, dict):
            raise SourceError(f"`{decision}` returned something unexpected")
        return RequestInfo.from_json(data)

    async def fetch_recording(self, session: SessionInfo, progress: FetchProgress | None = None) -> Path:
        """`recording SESSION`, streamed to a private temporary file (kept for ended sessions)."""
        if not _SAFE_ID.match(session.id):
            raise RecordingProblem(f"unexpected session id {session.id!r}")
        cached = self._fetched.get(session.id)
        if cached is not None and cached.is_file() and not session.live:
            return cached
        if self._cache is None:
            self._cache = Path(tempfile.mkdtemp(prefix="bastion-tui-", dir=self._cache_root))
        path = self._cache / f"{session.id}.rec"
        partial = path.with_suffix(".part")
        try:
            process = await self._connection().create_process(
                shlex.join(["recording", session.id]), encoding=None)
        except (OSError, asyncssh.Error) as exc:
            raise BastionUnreachable(f"lost the connection to the bastion: {exc}") from None
        received = 0
        async with process:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                try:
                    while data := await process.stdout.read(1 << 20):
                        await asyncio.to_thread(out.write, data)
                        received += len(data)
                        if progress is not None:
                            progress(received)
                    errors = await process.stderr.read()
                    await process.wait()
                except (OSError, asyncssh.Error) as exc:
                    raise RecordingProblem(f"fetching the recording of {session.id} failed: {exc}") from None
        if process.exit_status != 0:
            partial.unlink(missing_ok=True)
            text = errors.decode("utf-8", "replace") if isinstance(errors, bytes) else str(errors)
            message, _ = _error_message(text)
            raise RecordingProblem(message)
        partial.replace(path)
        self._fetched[session.id] = path
        return path


def _objects(data: Any) -> list[dict[str, Any]]:
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _signer_key(line: object) -> Ed25519PublicKey | None:
    """The signing key from `whoami --json` (older bastions do not say: verify unpinned)."""
    if not isinstance(line, str) or not line.strip():
        return None
    try:
        key = parse_public_key_line(line, "the bastion's recording_signer")
    except KeyFileError:
        return None
    return key if isinstance(key, Ed25519PublicKey) else None
