"""`bastion keygen` and `bastion recordings list|verify|export`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from bastion.config import BastionConfig, load_config
from bastion.errors import BastionError, InvalidRequest, NotFound
from bastion.store import open_store
from recorder import (
    RECORDING_SUFFIX,
    RecordingError,
    RecordingReader,
    SessionFacts,
    VerifyStatus,
    export_asciicast,
    export_jsonl,
    generate_auditor_key,
    load_auditor_private_key,
    load_signing_key,
    public_key_line,
    read_header_unencrypted,
    verify_for_session,
    verify_recording,
    write_key_pair,
)

__all__ = ["add_commands", "run"]

DEFAULT_CONFIG = os.environ.get("BASTION_CONFIG", "/etc/bastion/bastion.toml")
# Exit statuses of `recordings verify`: scripts tell the three verdicts apart.
EXIT_INTACT, EXIT_TAMPERED, EXIT_CUT_OFF = 0, 1, 3


def add_commands(sub: Any) -> None:
    """Add `keygen` and `recordings` to the top-level parser."""
    p = sub.add_parser("keygen", help="create an auditor's recording key pair")
    p.add_argument("--out", required=True, type=Path, help="private key file (public: FILE.pub)")
    p.add_argument("--passphrase", action="store_true",
                   help="encrypt the private key (asks, or reads BASTION_KEY_PASSPHRASE)")
    p.add_argument("--comment", default="", help="a name for the key, e.g. the auditor's")

    rec = sub.add_parser("recordings", help="list, verify and export session recordings")
    rsub = rec.add_subparsers(dest="recordings_command", required=True)
    p = rsub.add_parser("list", help="recordings in the configured directory (no key needed)")
    p.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))
    p.add_argument("--json", action="store_true")
    p = rsub.add_parser("verify", help="check signatures and completeness (no key needed)")
    p.add_argument("recording", help="a session id or a recording file")
    p.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))
    p.add_argument("--json", action="store_true")
    p = rsub.add_parser("export", help="decrypt with an auditor key and write to stdout")
    p.add_argument("recording", help="a session id or a recording file")
    p.add_argument("--key", required=True, type=Path, help="the auditor's private key")
    p.add_argument("--format", choices=["asciicast", "jsonl"], default="asciicast")
    p.add_argument("--input", action="store_true", help="asciicast: include typed input events")
    p.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))


def _passphrase(confirm: bool) -> str | None:
    if "BASTION_KEY_PASSPHRASE" in os.environ:
        return os.environ["BASTION_KEY_PASSPHRASE"]
    if not sys.stdin.isatty():
        raise InvalidRequest("the key is passphrase-protected: set BASTION_KEY_PASSPHRASE or run "
                             "in a terminal")
    first = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise InvalidRequest("the passphrases differ")
    return first


def _resolve(arg: str, config_path: Path) -> Path:
    path = Path(arg)
    if path.is_file():
        return path
    if "/" in arg:
        raise NotFound(f"no recording file {arg}")
    directories = _directories(load_config(config_path))
    for directory in directories:
        candidate = directory / f"{arg}{RECORDING_SUFFIX}"
        if candidate.is_file():
            return candidate
    raise NotFound(f"no recording {arg!r} in {' or '.join(str(d) for d in directories)}")


def _directories(config: BastionConfig) -> list[Path]:
    """Where recordings are: this node's own directory, then the cluster's shared store."""
    shared = [config.cluster.recordings_store] if config.cluster is not None else []
    return [config.recordings.dir, *shared]


def _session_of(path: Path, config_path: Path) -> tuple[SessionFacts | None, str]:
    """What the state store says of the session this file names, to compare the file with it:
    (facts, "") or (None, a note saying why the file was not compared)."""
    try:
        header = read_header_unencrypted(path)
        config = load_config(config_path)
    except (BastionError, RecordingError, OSError) as exc:
        return None, f" (not compared with the state store: {exc})"
    return asyncio.run(_stored_session(config.server.state_store, path, header.session_id))


async def _stored_session(url: str, path: Path, header_id: str) -> tuple[SessionFacts | None, str]:
    """The session whose recording lives at `path` (a file copied over it must be that session's),
    else the session its header names."""
    try:
        store = await open_store(url)
    except (BastionError, OSError) as exc:
        return None, f" (not compared with the state store: {exc})"
    here = await asyncio.to_thread(path.resolve)
    try:
        record = await store.get_session(path.stem)
        if record is None or not record.recording or \
                await asyncio.to_thread(Path(record.recording).resolve) != here:
            record = await store.get_session(header_id)
    finally:
        await store.close()
    if record is None:
        return None, " (the state store has no such session)"
    return SessionFacts(record.id, record.user, record.target, record.status.value,
                        record.started_at, record.end_reason), ""


def _signer(config_path: Path) -> Any:
    """The bastion's signing public key when its config is readable, to catch foreign signers."""
    try:
        config = load_config(config_path)
        return load_signing_key(config.recordings.signing_key).public_key()
    except (BastionError, RecordingError, OSError):
        return None


def run(args: argparse.Namespace) -> int:
    """Run `keygen` or a `recordings` subcommand."""
    if args.command == "keygen":
        passphrase = _passphrase(confirm=True) if args.passphrase else None
        key = generate_auditor_key()
        try:
            public = write_key_pair(args.out, key, passphrase=passphrase, comment=args.comment)
        except (RecordingError, OSError) as exc:
            raise BastionError(f"cannot write {args.out}: {exc}") from None
        print(f"private key: {args.out} (mode 0600; keep it off the bastion)")
        print(f"public key:  {public} (add it to recordings.auditor_keys)")
        print(public_key_line(key.public_key(), args.comment))
        return 0
    command = args.recordings_command
    if command == "list":
        return _list(args)
    if command == "verify":
        path = _resolve(args.recording, args.config)
        session, note = _session_of(path, args.config)
        signer = _signer(args.config)
        result = (verify_for_session(path, signer, session) if session is not None
                  else verify_recording(path, signer))
        if args.json:
            print(json.dumps({"path": str(path), "status": result.status.value,
                              "message": result.message, "chunks": result.chunks,
                              "chunk": result.chunk, "signer": result.signer}))
        else:
            print(f"{path}: {result.status.value}: {result.message}{note}")
        return {VerifyStatus.INTACT: EXIT_INTACT, VerifyStatus.CUT_OFF: EXIT_CUT_OFF}.get(
            result.status, EXIT_TAMPERED)
    path = _resolve(args.recording, args.config)
    try:
        identity = load_auditor_private_key(args.key)
    except RecordingError as exc:
        if "passphrase" not in str(exc).lower():
            raise BastionError(str(exc)) from None
        identity = load_auditor_private_key(args.key, _passphrase(confirm=False))
    try:
        with RecordingReader(path, identity) as reader:
            if args.format == "asciicast":
                export_asciicast(reader, sys.stdout, include_input=args.input)
            else:
                export_jsonl(reader, sys.stdout)
            if reader.cut_off:
                print(f"bastion: {path} was cut off after chunk {reader.last_chunk}; "
                      "exported what it holds", file=sys.stderr)
    except RecordingError as exc:
        raise BastionError(f"{path}: {exc}") from None
    return 0


def _list(args: argparse.Namespace) -> int:
    directories = _directories(load_config(args.config))
    signer = _signer(args.config)
    rows: list[dict[str, Any]] = []
    paths = [p for d in directories if d.is_dir() for p in sorted(d.glob(f"*{RECORDING_SUFFIX}"))]
    for path in paths:
        try:
            header = read_header_unencrypted(path)
        except RecordingError as exc:
            rows.append({"id": path.stem, "path": str(path), "status": "unreadable",
                         "message": str(exc), "user": None, "target": None})
            continue
        result = verify_recording(path, signer)
        rows.append({
            "id": header.session_id, "user": header.user, "target": header.target,
            "kind": header.kind.value, "start": header.start.isoformat(),
            "status": result.status.value, "chunks": result.chunks, "path": str(path),
            "signer": header.signer_fingerprint,
        })
    rows.sort(key=lambda r: r.get("start") or "", reverse=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no recordings in {' or '.join(str(d) for d in directories)}")
        return 0
    for r in rows:
        print(f"{r['id']:<18} {r.get('start', '-')[:19]:<19} {r['user'] or '-':<12} "
              f"{r['target'] or '-':<16} {r['status']}")
    return 0


