"""The control plane: commands run as `ssh access@bastion COMMAND`, each with `--json`."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import asyncssh

from bastion import policy
from bastion.access import AccessWorkflow
from bastion.durations import format_duration, parse_duration
from bastion.errors import AccessDenied, BastionError, InvalidRequest, NotFound
from bastion.identity import commands as identity_commands
from bastion.identity.bindings import Identities
from bastion.models import (
    AccessRequest,
    Decision,
    IdentityBinding,
    RequestStatus,
    SessionRecord,
    SessionStatus,
    utcnow,
)
from bastion.text import control_characters, terminal_safe
from bastion.text import table as _table
from bastion.text import when as _when
from bastion.wire.commands import native_client_commands

__all__ = ["HELP", "CommandResult", "ControlPlane"]

HELP = """\
Commands (add --json to any of them for machine-readable output):
  request TARGET --reason TEXT [--duration 1h] [--unmasked]
                                                 ask for time-limited access to a target
                                                 (--unmasked: a database without masking)
  requests [--all]                               your requests (approvers/auditors: --all)
  approve ID [--comment TEXT]                    approve someone else's request
  deny ID --reason TEXT                          deny a request, with the reason
  revoke ID [--reason TEXT]                      end an approved or pending request now
  cert [ID]                                      print a certificate for the key you logged in with
  targets                                        targets you may request, approve or audit
  whoami                                         your user, roles and key (and sign-in)
  login                                          sign in through the identity provider with
                                                 this SSH key (any key)
  logout                                         end this key's sign-in
  identities                                     keys bound to signed-in people (auditors)
  unbind USER [--reason TEXT]                    end a person's sign-ins and live sessions
                                                 (auditors)
  sessions [--live] [--limit N]                  sessions through the bastion (auditors: all)
  kill SESSION [--reason TEXT]                   end a live session now (auditors)
  recording SESSION [--from OFFSET]              the session's encrypted recording file (auditors)
  queries [--session ID] [--limit N]             the masked SQL query log (auditors)
  audit [--kind PREFIX] [--request ID] [--limit N]  the audit trail (auditors)
  help                                           this text

Typical flow:
  ssh -p PORT access@HOST request prod --reason "INC-42: stuck payments" --duration 1h
  ssh -p PORT access@HOST approve 17            (someone else)
  ssh -p PORT access@HOST cert > ~/.ssh/id_ed25519-cert.pub
  ssh -p PORT prod@HOST
"""


# A control command is one line a person types: bounded before anything parses it (argparse is
# quadratic in repeated options), and parsed off the event loop.
MAX_COMMAND_BYTES = 8192
MAX_ARGUMENTS = 64
MAX_TEXT = 2000  # characters of a reason or comment
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class CommandResult:
    """What a control command prints and its exit status."""

    stdout: str | bytes | AsyncIterator[bytes] = ""  # an iterator streams a file
    stderr: str = ""
    exit_status: int = 0


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises instead of exiting the process."""

    def error(self, message: str) -> NoReturn:
        raise InvalidRequest(f"{self.prog}: {message} (see `help`)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise InvalidRequest(message or self.format_usage())


def _parser() -> _Parser:
    root = _Parser(prog="access", add_help=False)
    sub = root.add_subparsers(dest="command", parser_class=_Parser)

    def cmd(name: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, prog=name, add_help=False)
        p.add_argument("--json", action="store_true")
        return p

    p = cmd("request")
    p.add_argument("target")
    # ssh joins its arguments with spaces, so unquoted multi-word reasons arrive as several words.
    p.add_argument("--reason", required=True, nargs="+")
    p.add_argument("--duration")
    p.add_argument("--unmasked", action="store_true")
    cmd("requests").add_argument("--all", action="store_true")
    p = cmd("approve")
    p.add_argument("id", type=_request_id)
    p.add_argument("--comment", nargs="+", default=[])
    p = cmd("deny")
    p.add_argument("id", type=_request_id)
    p.add_argument("--reason", required=True, nargs="+")
    p = cmd("revoke")
    p.add_argument("id", type=_request_id)
    p.add_argument("--reason", nargs="+", default=[])
    cmd("cert").add_argument("id", type=_request_id, nargs="?")
    cmd("targets")
    cmd("whoami")
    cmd("logout")
    cmd("identities")
    p = cmd("unbind")
    p.add_argument("user")
    p.add_argument("--reason", nargs="+", default=[])
    p = cmd("sessions")
    p.add_argument("--live", action="store_true")
    p.add_argument("--limit", type=_count, default=200)
    p = cmd("recording")
    p.add_argument("session")
    p.add_argument("--from", dest="offset", type=_offset, default=0)
    p = cmd("kill")
    p.add_argument("session")
    p.add_argument("--reason", nargs="+", default=[])
    p = cmd("queries")
    p.add_argument("--session")
    p.add_argument("--limit", type=_count, default=200)
    p = cmd("audit")
    p.add_argument("--kind")
    p.add_argument("--request", type=_request_id)
    p.add_argument("--limit", type=_count, default=100)
    cmd("help")
    return root


def _number(text: str, what: str, low: int, high: int) -> int:
    """An ASCII decimal number in [low, high]: no signs, underscores or other scripts' digits."""
    if not (text.isascii() and text.isdigit() and len(text) <= 40):
        raise argparse.ArgumentTypeError(f"{what} must be a number made of the digits 0-9, "
                                         f"not {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what} must be between {low} and {high}, not {value}")
    return value


def _request_id(text: str) -> int:
    return _number(text, "a request id", 1, MAX_ID)


def _count(text: str) -> int:
    return _number(text, "--limit", 1, MAX_LIST)


def _offset(text: str) -> int:
    return _number(text, "--from", 0, MAX_ID)


def _parse(command_line: str) -> tuple[argparse.Namespace | None, bool]:
    """Split and parse a command line (bounded, off the event loop); None for no command."""
    argv = shlex.split(command_line)
    want_json = "--json" in argv
    if not argv:
        return None, want_json
    if len(argv) > MAX_ARGUMENTS:
        raise InvalidRequest(f"the command has {len(argv)} arguments; at most {MAX_ARGUMENTS} "
                             "are accepted (quote a long reason as one argument)")
    args = _parser().parse_args(argv)
    for name in ("reason", "comment"):
        if isinstance(getattr(args, name, None), list):
            setattr(args, name, " ".join(getattr(args, name)))
    return args, want_json


def _plain_text(name: str, value: str) -> None:
    """Refuse control characters in text other people will read (reasons, comments)."""
    bad = control_characters(value)
    if bad:
        raise InvalidRequest(f"{name} contains control or invisible characters ({', '.join(bad[:5])}); "
                             "write plain text on one line")
    if len(value) > MAX_TEXT:
        raise InvalidRequest(f"{name} is {len(value)} characters long; at most {MAX_TEXT}")


def request_json(req: AccessRequest, now: datetime) -> dict[str, Any]:
    """A request as the `--json` output shows it."""
    return {
        "id": req.id,
        "user": req.user,
        "target": req.target,
        "reason": req.reason,
        "status": req.status_at(now).value,
        "duration": int(req.duration.total_seconds()),
        "created_at": req.created_at.isoformat(),
        "approved_at": req.approved_at.isoformat() if req.approved_at else None,
        "expires_at": req.expires_at.isoformat() if req.expires_at else None,
        "pending_until": req.pending_until.isoformat(),
        "approvals_required": req.approvals_required,
        "approvers": list(req.approvers),
        "reviews": [
            {"reviewer": r.reviewer, "decision": r.decision.value, "comment": r.comment,
             "at": r.at.isoformat()}
            for r in req.reviews
        ],
        "closed_by": req.closed_by,
        "closed_reason": req.closed_reason,
        "unmasked": req.unmasked,
    }


def session_json(s: SessionRecord) -> dict[str, Any]:
    """A session as the `--json` output shows it."""
    return {
        "id": s.id, "user": s.user, "target": s.target, "kind": s.kind,
        "request_id": s.request_id, "status": s.status.value, "client": s.client,
        "started_at": s.started_at.isoformat(),
        "ended_at": s.ended_at.isoformat() if s.ended_at else None,
        "end_reason": s.end_reason, "recording": s.recording, "bastion_id": s.bastion_id,
    }


Handler = Callable[[argparse.Namespace], Awaitable[Any]]


class ControlPlane:
    """Runs one control command for one authenticated user."""

    def __init__(
        self,
        workflow: AccessWorkflow,
        user: str,
        key: asyncssh.SSHKey,
        end_session: Callable[[str, str], Awaitable[bool]] | None = None,
        identities: Identities | None = None,
        binding: IdentityBinding | None = None,
    ) -> None:
        self.workflow = workflow
        self.user = user
        self.key = key
        self.end_session = end_session
        self.identities = identities
        self.binding = binding  # this key's sign-in through the identity provider, if any

    async def run(self, command_line: str) -> CommandResult:
        """Parse and run a command; errors become a message on stderr and exit status."""
        want_json = "--json" in command_line
        try:
            size = len(command_line.encode())
            if size > MAX_COMMAND_BYTES:
                raise InvalidRequest(f"the command is {size} bytes long; at most "
                                     f"{MAX_COMMAND_BYTES} are accepted")
            args, want_json = await asyncio.to_thread(_parse, command_line)
            if args is None:
                return CommandResult(stdout=HELP)
            for name in ("reason", "comment"):
                value = getattr(args, name, None)
                if isinstance(value, str):
                    _plain_text(f"--{name}", value)
            handler: Handler = getattr(self, "_" + args.command)
            out = await handler(args)
        except ValueError as exc:  # shlex: unbalanced quotes
            return self._failure(InvalidRequest(f"cannot parse the command: {exc}"), want_json)
        except BastionError as exc:
            return self._failure(exc, want_json)
        if isinstance(out, CommandResult):
            return out
        if isinstance(out, str):
            return CommandResult(stdout=terminal_safe(out, keep_newlines=True))
        if isinstance(out, bytes) or hasattr(out, "__aiter__"):
            return CommandResult(stdout=out)
        text = await asyncio.to_thread(json.dumps, out, indent=2, sort_keys=True)
        return CommandResult(stdout=text + "\n")

    def _failure(self, exc: BastionError, want_json: bool) -> CommandResult:
        status = 2 if isinstance(exc, InvalidRequest) else 1
        if want_json:
            err = {"error": str(exc), "kind": type(exc).__name__}
            return CommandResult(stderr=json.dumps(err) + "\n", exit_status=status)
        return CommandResult(stderr=f"error: {terminal_safe(str(exc))}\n", exit_status=status)

    @property
    def _config(self):  # type: ignore[no-untyped-def]
        return self.workflow.config

    async def _help(self, args: argparse.Namespace) -> Any:
        return {"help": HELP} if args.json else HELP

    async def _request(self, args: argparse.Namespace) -> Any:
        if self.identities is not None and self.binding is not None:
            refusal = self.identities.target_refusal(self.binding, args.target)
            if refusal is not None:
                await self.workflow.audit.record("request.refused", actor=self.user,
                                                 target=args.target, reason=refusal)
                raise AccessDenied(refusal)
        duration = None
        if args.duration:
            try:
                duration = parse_duration(args.duration)
            except ValueError as exc:
                raise InvalidRequest(f"--duration: {exc}") from None
        req = await self.workflow.request(self.user, args.target, args.reason, duration,
                                          args.unmasked, key=self.key)
        if args.json:
            return request_json(req, utcnow())
        if req.status is RequestStatus.APPROVED:
            return (f"request {req.id} for {req.target} approved automatically, valid "
                    f"{format_duration(req.duration)}.\nNext: cert {req.id} > your-key-cert.pub\n")
        return (f"request {req.id} for {req.target} is pending: it needs {req.approvals_required} "
                f"approval(s) from another user.\nWhen approved: cert {req.id} > your-key-cert.pub\n")

    async def _requests(self, args: argparse.Namespace) -> Any:
        now = utcnow()
        if args.all:
            every = await self.workflow.store.list_requests(limit=500)
            reqs = [r for r in every if policy.may_see_request(self._config, self.user, r)]
        else:
            reqs = await self.workflow.store.list_requests(user=self.user, limit=500)
        if args.json:
            return [request_json(r, now) for r in reqs]
        if not reqs:
            return "no requests\n"
        rows = [
            (r.id, r.user, r.target, r.status_at(now).value,
             f"{len(r.approvers)}/{r.approvals_required}", _when(r.expires_at), r.reason)
            for r in reqs
        ]
        return _table(("ID", "USER", "TARGET", "STATUS", "APPROVALS", "EXPIRES", "REASON"), rows)

    async def _approve(self, args: argparse.Namespace) -> Any:
        return await self._review(args.id, Decision.APPROVE, args.comment, args.json)

    async def _deny(self, args: argparse.Namespace) -> Any:
        return await self._review(args.id, Decision.DENY, args.reason, args.json)

    async def _review(self, request_id: int, decision: Decision, comment: str, as_json: bool) -> Any:
        req = await self.workflow.review(self.user, request_id, decision, comment, key=self.key)
        now = utcnow()
        if as_json:
            return request_json(req, now)
        status = req.status_at(now)
        if status is RequestStatus.PENDING:
            return (f"request {req.id}: approval recorded ({len(req.approvers)} of "
                    f"{req.approvals_required}); still pending\n")
        return f"request {req.id} by {req.user} for {req.target} is now {status.value}\n"

    async def _revoke(self, args: argparse.Namespace) -> Any:
        req = await self.workflow.revoke(self.user, args.id, args.reason)
        if args.json:
            return request_json(req, utcnow())
        return f"request {req.id} for {req.target} revoked; its certificates no longer work\n"

    async def _cert(self, args: argparse.Namespace) -> Any:
        cert, issued = await self.workflow.issue_certificate(self.user, self.key, args.id)
        line = cert.export_certificate().decode().strip()
        target = self._config.target(issued.principals[0]) if issued.principals else None
        request = await self.workflow.store.get_request(issued.request_id)
        unmasked = request is not None and request.unmasked
        if args.json:
            return {
                "certificate": line, "serial": str(issued.serial),
                "principals": list(issued.principals), "request_id": issued.request_id,
                "key_id": f"{issued.user}/{issued.request_id}",
                "valid_after": issued.valid_after.isoformat(),
                "valid_before": issued.valid_before.isoformat(),
                "connect": native_client_commands(self._config, issued.request_id, target,
                                                  unmasked=unmasked) if target else [],
            }
        # The certificate alone on stdout (users redirect it to a file); how to use it on stderr.
        hints = native_client_commands(self._config, issued.request_id, target,
                                       unmasked=unmasked) if target else []
        return CommandResult(stdout=line + "\n",
                             stderr="".join(f"# {hint}\n" for hint in hints))

    async def _targets(self, args: argparse.Namespace) -> Any:
        config = self._config
        user = config.user(self.user)
        assert user is not None
        roles = config.roles_of(user)
        rows = []
        for t in config.targets:
            may = [a for a in ("request", "approve", "audit") if any(r.may(a, t.name) for r in roles)]
            if may:
                rows.append({"name": t.name, "kind": t.kind, "description": t.description,
                             "approvals_required": t.approvals_required, "you_may": may})
        if args.json:
            return rows
        if not rows:
            return "no targets: none of your roles grants any\n"
        table = _table(("TARGET", "KIND", "APPROVALS", "YOU MAY", "DESCRIPTION"),
                       [(r["name"], r["kind"], r["approvals_required"], ",".join(r["you_may"]),
                         r["description"]) for r in rows])
        hints = [hint for t in config.targets if t.kind != "ssh" and
                 any(r["name"] == t.name for r in rows)
                 for hint in native_client_commands(config, None, t)]
        if hints:
            table += "\nNative database clients (with an approved certificate for the target):\n"
            table += "".join(f"  {hint}\n" for hint in hints)
        return table

    async def _whoami(self, args: argparse.Namespace) -> Any:
        user = self._config.user(self.user)
        assert user is not None
        info = {
            "user": user.name, "roles": list(user.roles),
            "key": self.key.get_fingerprint("sha256"),
            "expires": user.expires.isoformat() if user.expires else None,
            "auditor": policy.can_audit(self._config, self.user),
        }
        if info["auditor"]:
            # So an auditor can pin the key that signs recordings instead of trusting the file.
            info["recording_signer"] = await asyncio.to_thread(
                _public_line, Path(f"{self._config.recordings.signing_key}.pub"))
        binding = self.binding
        if binding is not None:
            info["signed_in"] = binding.to_json()
        if args.json:
            return info
        lines = [f"user:    {user.name}", f"roles:   {', '.join(user.roles) or '-'}",
                 f"key:     {info['key']}"]
        if binding is not None:
            lines += [f"signed in through the identity provider at {_when(binding.bound_at)} UTC "
                      f"(subject {binding.subject}; groups {', '.join(binding.groups) or '-'}; "
                      f"{'MFA' if binding.mfa else 'no MFA'})",
                      f"bound:   until {_when(binding.expires_at)} UTC; last re-checked "
                      f"{_when(binding.checked_at)} UTC"]
        elif user.expires:
            lines.append(f"expires: {_when(user.expires)} UTC")
        return "\n".join(lines) + "\n"

    async def _logout(self, args: argparse.Namespace) -> Any:
        return await identity_commands.logout(self.identities, self.binding, self.key, args.json)

    async def _identities(self, args: argparse.Namespace) -> Any:
        return await identity_commands.identities(self.identities, self._config, self.user,
                                                  args.json)

    async def _unbind(self, args: argparse.Namespace) -> Any:
        return await identity_commands.unbind(self.identities, self._config, self.user, args.user,
                                              args.reason, args.json)

    async def _sessions(self, args: argparse.Namespace) -> Any:
        auditor = policy.can_audit(self._config, self.user)
        if not 1 <= args.limit <= MAX_LIST:
            raise InvalidRequest(f"--limit must be between 1 and {MAX_LIST}")
        sessions = await self.workflow.store.list_sessions(
            user=None if auditor else self.user, live_only=args.live, limit=args.limit
        )
        if auditor:
            sessions = [s for s in sessions if policy.can_audit(self._config, self.user, s.target)
                        or s.user == self.user]
        if args.json:
            return [session_json(s) for s in sessions]
        if not sessions:
            return "no sessions\n"
        return _table(("ID", "USER", "TARGET", "STATUS", "STARTED", "ENDED"),
                      [(s.id, s.user, s.target, s.status.value, _when(s.started_at),
                        _when(s.ended_at)) for s in sessions])

    async def _recording(self, args: argparse.Namespace) -> Any:
        session = await self.workflow.store.get_session(args.session)
        if session is None or not policy.can_audit(self._config, self.user, session.target):
            raise NotFound(f"no session {args.session} that you audit")
        if not session.recording:
            raise NotFound(f"session {session.id} has no recording")
        if args.offset < 0:
            raise InvalidRequest("--from must be a byte offset, 0 or more")
        path = Path(session.recording)
        try:
            # Encrypted for the auditors: the bastion hands over bytes it cannot read itself.
            handle = await asyncio.to_thread(path.open, "rb")
        except OSError as exc:
            # In a cluster a live session's recording is still on its own node's disk.
            elsewhere = (f" (the session is live on bastion {session.bastion_id}: its recording "
                         "can be read there now, or from any bastion once the session ends)"
                         if session.status is SessionStatus.LIVE else "")
            raise NotFound(f"the recording of session {session.id} cannot be read: "
                           f"{exc.strerror}{elsewhere}") from None
        await self.workflow.audit.record("recording.fetched", actor=self.user,
                                         target=session.target, session_id=session.id,
                                         offset=args.offset)
        return _file_chunks(handle, args.offset)

    async def _kill(self, args: argparse.Namespace) -> Any:
        session = await self.workflow.store.get_session(args.session)
        if session is None or not (policy.can_audit(self._config, self.user, session.target)
                                   or session.user == self.user):
            raise NotFound(f"no session {args.session} that you can see")
        if not policy.can_audit(self._config, self.user, session.target):
            raise AccessDenied("ending sessions is for auditors of the target")
        reason = f"ended by {self.user}" + (f": {args.reason}" if args.reason else "")
        ended = self.end_session is not None and await self.end_session(session.id, reason)
        if not ended:
            raise InvalidRequest(f"session {session.id} is {session.status.value}, not live on "
                                 "this bastion")
        await self.workflow.audit.record(
            "session.killed", actor=self.user, target=session.target, session_id=session.id,
            request_id=session.request_id, reason=args.reason,
        )
        if args.json:
            return {"session": session.id, "ended": True, "reason": reason}
        return f"session {session.id} of {session.user} on {session.target} ended\n"

    async def _queries(self, args: argparse.Namespace) -> Any:
        if not policy.can_audit(self._config, self.user):
            raise AccessDenied("the query log is for auditors: none of your roles has `audit`")
        queries = await self.workflow.store.list_queries(
            session_id=args.session, limit=max(1, min(args.limit, 10000))
        )
        queries = [q for q in queries if policy.can_audit(self._config, self.user, q.target)]
        if args.json:
            return [q.to_json() for q in queries]
        if not queries:
            return "no queries\n"
        return _table(("AT", "USER", "TARGET", "SESSION", "MS", "ROWS", "OUTCOME", "STATEMENT"),
                      [(_when(q.started_at), q.user, q.target, q.session_id,
                        f"{q.duration_ms:.1f}", "-" if q.rows is None else q.rows,
                        f"blocked: {q.blocked}" if q.blocked else
                        (f"error: {q.error}" if q.error else "ok"),
                        " ".join(q.statement.split())[:120]) for q in queries])

    async def _audit(self, args: argparse.Namespace) -> Any:
        if not policy.can_audit(self._config, self.user):
            raise AccessDenied("the audit trail is for auditors: none of your roles has `audit`")
        events = await self.workflow.store.list_audit(
            kind=args.kind, request_id=args.request, limit=max(1, min(args.limit, 10000))
        )
        events = [e for e in events if e.target is None
                  or policy.can_audit(self._config, self.user, e.target)]
        if args.json:
            return [e.to_json() for e in events]
        if not events:
            return "no events\n"
        return _table(("AT", "KIND", "ACTOR", "TARGET", "REQUEST", "DETAILS"),
                      [(_when(e.at), e.kind, e.actor or "-", e.target or "-", e.request_id or "-",
                        json.dumps(e.details, sort_keys=True)) for e in events])


MAX_LIST = 100_000
_CHUNK = 256 * 1024


def _public_line(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


async def _file_chunks(handle: BinaryIO, offset: int) -> AsyncIterator[bytes]:
    """A file from `offset` on, read in chunks off the event loop (recordings can be large)."""
    try:
        await asyncio.to_thread(handle.seek, offset)
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)
