"""bastion-tui: the app, its modes (sessions, requests, audit) and the command line.

    bastion-tui --connect [USER@]HOST[:PORT] --key AUDITOR_KEY [--identity SSH_KEY] [--known-hosts FILE]
    bastion-tui --config FILE --key AUDITOR_KEY
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.notifications import SeverityLevel

from bastion.models import utcnow
from tui.context import AppContext
from tui.errors import PassphraseNeeded, TuiError
from tui.keys import env_passphrase, load_identity
from tui.safe import printable
from tui.screens.audit import AuditScreen
from tui.screens.help import HelpScreen
from tui.screens.passphrase import PassphraseScreen
from tui.screens.requests import RequestsScreen
from tui.screens.sessions import SessionsScreen
from tui.screens.startup import StartupScreen
from tui.sources import DataSource, LocalSource, RemoteSource, parse_address

__all__ = ["BastionTUI", "build_parser", "main", "source_from_args"]

_MAIN_MODES = ("sessions", "requests", "audit")


class BastionTUI(App[None]):
    """The auditor's app."""

    CSS_PATH = "app.tcss"
    TITLE = "bastion-tui"
    ENABLE_COMMAND_PALETTE = False
    MODES = {
        "start": StartupScreen,
        "sessions": SessionsScreen,
        "requests": RequestsScreen,
        "audit": AuditScreen,
    }
    DEFAULT_MODE = "start"
    BINDINGS = [
        Binding("1", "mode('sessions')", "Sessions"),
        Binding("2", "mode('requests')", "Requests"),
        Binding("3", "mode('audit')", "Audit"),
        Binding("question_mark,f1", "help", "Help"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        source: DataSource,
        key_path: str | Path | None = None,
        *,
        recording_key: X25519PrivateKey | None = None,
        clock: Callable[[], datetime] = utcnow,
        refresh_interval: float | None = None,
    ) -> None:
        """Give either the key file (loaded at start, asking for a passphrase) or the key."""
        super().__init__()
        if refresh_interval is not None:
            source.refresh_interval = refresh_interval
        self.context = AppContext(source=source, key_path=Path(key_path) if key_path else None,
                                  recording_key=recording_key, clock=clock)
        self.startup_error = ""

    def on_mount(self) -> None:
        """Start: key, then connection."""
        self.start()

    @work(exclusive=True, group="startup")
    async def start(self) -> None:
        """Load the auditor key (asking for its passphrase if needed) and open the source."""
        context = self.context
        screen = self.screen
        startup = screen if isinstance(screen, StartupScreen) else None
        if context.recording_key is None:
            if context.key_path is None:
                self._startup_failed("no auditor key: pass --key FILE")
                return
            passphrase = env_passphrase()
            problem = ""
            while context.recording_key is None:
                try:
                    context.recording_key = load_identity(context.key_path, passphrase)
                except PassphraseNeeded as exc:
                    if passphrase is not None and not problem and env_passphrase() == passphrase:
                        problem = f"{exc} (from BASTION_KEY_PASSPHRASE)"
                    passphrase = await self.push_screen_wait(
                        PassphraseScreen(str(context.key_path), problem))
                    if passphrase is None:
                        self._startup_failed("no passphrase given for the auditor key")
                        return
                    problem = "wrong passphrase, try again"
                except TuiError as exc:
                    self._startup_failed(str(exc))
                    return
        if startup is not None:
            startup.step(f"connecting to {context.source.description}…")
        try:
            identity = await context.source.open()
        except TuiError as exc:
            self._startup_failed(str(exc))
            return
        context.identity = identity
        if not identity.auditor:
            roles = ", ".join(identity.roles) or "none"
            message = (f"{identity.user} has no audit role on this bastion (roles: {roles}): "
                       "sessions, recordings and the audit trail are for auditors.")
            if identity.approves:
                context.ready = True
                self._startup_failed(message, "Press 2 for access requests, ctrl+q to quit.")
                self.refresh_bindings()
                return
            self._startup_failed(message)
            return
        context.ready = True
        self.refresh_bindings()
        await self.switch_mode("sessions")

    def _startup_failed(self, message: str, hint: str = "Press ctrl+q to quit.") -> None:
        self.startup_error = message
        screen = self.screen
        if isinstance(screen, StartupScreen):
            screen.fail(message, hint)

    async def on_unmount(self) -> None:
        """Close the connection or store."""
        await self.context.source.close()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Show a notification as plain, printable text, whatever the caller asked.

        Messages carry marker labels, search text and the bastion's error messages: read as
        markup, a `[/]` in them would crash the app and `[@click=…]` would add an action.
        """
        super().notify(printable(message, keep_newlines=True), title=printable(title),
                       severity=severity, timeout=timeout, markup=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Modes are available once start-up succeeded (audit screens only for auditors)."""
        if action == "mode":
            if not self.context.ready:
                return False
            identity = self.context.identity
            if parameters and parameters[0] != "requests" and identity is not None \
                    and not identity.auditor:
                return False
        return True

    async def action_mode(self, mode: str) -> None:
        """Go to one of the main screens."""
        if mode in _MAIN_MODES and self.current_mode != mode:
            await self.switch_mode(mode)

    def action_help(self) -> None:
        """Show the help screen."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bastion-tui",
        description="Audit sessions, replay recordings and review access requests of a bastion.",
        epilog="Remote: bastion-tui --connect access@bastion:2222 --key carol.key --identity "
               "~/.ssh/id_ed25519. Local (offline forensics): bastion-tui --config "
               "/etc/bastion/bastion.toml --key carol.key. An encrypted key asks for its "
               "passphrase (or reads BASTION_KEY_PASSPHRASE).",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", metavar="[USER@]HOST[:PORT]",
                       help="the bastion's SSH address (user `access`, port 2222 by default)")
    where.add_argument("--config", type=Path, metavar="FILE",
                       help="a bastion config: read its state store and recordings directly")
    parser.add_argument("--key", required=True, type=Path, metavar="AUDITOR_KEY",
                        help="your auditor private key (X25519, from `bastion keygen`)")
    parser.add_argument("--identity", "-i", type=Path, metavar="SSH_KEY",
                        help="the SSH private key to log in with (default: agent and ~/.ssh)")
    parser.add_argument("--known-hosts", type=Path, metavar="FILE",
                        help="known_hosts file with the bastion's host key (default ~/.ssh/known_hosts)")
    parser.add_argument("--refresh", type=float, default=5.0, metavar="SECONDS",
                        help="how often a list with live sessions refreshes (default 5)")
    return parser


def source_from_args(args: argparse.Namespace) -> DataSource:
    """The data source the arguments name."""
    if args.connect:
        try:
            address = parse_address(args.connect)
        except ValueError as exc:
            raise SystemExit(f"bastion-tui: --connect {args.connect}: {exc}") from None
        return RemoteSource(address, identity=args.identity, known_hosts=args.known_hosts)
    return LocalSource(args.config)


def main(argv: Sequence[str] | None = None) -> int:
    """Run bastion-tui."""
    args = build_parser().parse_args(argv)
    if not args.key.is_file():
        print(f"bastion-tui: no auditor key file {args.key}", file=sys.stderr)
        return 2
    app = BastionTUI(source_from_args(args), args.key, refresh_interval=max(args.refresh, 0.5))
    app.run()
    if app.startup_error:
        print(f"bastion-tui: {app.startup_error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
