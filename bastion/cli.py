"""The `bastion` command line: serve, check-config, demo, ca-key, db, keygen, recordings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bastion.errors import BastionError

T = TypeVar("T")

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bastion", description="SSH and database session-recording bastion"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the bastion")
    p.add_argument("--config", required=True, type=Path, help="the TOML config file")

    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("file", type=Path)

    p = sub.add_parser("demo", help="create a self-contained demo and run it")
    p.add_argument("--dir", type=Path, default=Path("demo"), help="where to put it (default ./demo)")
    p.add_argument("--port", type=int, default=2222, help="the bastion's SSH port (0 = any free)")

    p = sub.add_parser("ca-key", help="print a CA public key (upstream: for TrustedUserCAKeys)")
    p.add_argument("which", choices=["user", "upstream"])
    p.add_argument("--config", required=True, type=Path)

    from bastion.db import cli as db_cli
    from bastion.recordings_cli import add_commands

    db_cli.add_commands(sub)
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        return _run(args)
    except BastionError as exc:
        print(f"bastion: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run_server(main: Coroutine[Any, Any, T]) -> T:
    """Run the bastion's event loop: uvloop's (libuv; its transports and callbacks in C), where
    pgbench through the bastion went from 0.54x / 0.48-0.49x to 0.58-0.60x / 0.52-0.58x of the
    OpenSSH tunnel in two interleaved pairs; asyncio's own where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from bastion.server import serve

        _run_server(serve(args.config))
        return 0
    if args.command == "check-config":
        from bastion.cluster.settings import cluster_notes
        from bastion.config import load_config

        config = load_config(args.file)
        print(f"{args.file}: OK ({len(config.users)} users, {len(config.roles)} roles, "
              f"{len(config.targets)} targets)")
        for note in cluster_notes(config):
            print(f"  {note}")
        return 0
    if args.command == "demo":
        from bastion.demo import run_demo

        status: int = _run_server(run_demo(args.dir, args.port))
        return status
    if args.command == "ca-key":
        from bastion.ca import CertificateAuthority
        from bastion.config import load_config

        config = load_config(args.config)
        path = (config.certificates.user_ca_key if args.which == "user"
                else config.certificates.upstream_ca_key)
        print(CertificateAuthority.load(path, f"{args.which} CA").public_key_line())
        return 0
    if args.command == "db":
        from bastion.db import cli as db_cli

        return db_cli.run(args)
    from bastion import recordings_cli

    return recordings_cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
