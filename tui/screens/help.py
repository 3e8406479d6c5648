"""The help screen: every key, the filter language and what the integrity labels mean."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

__all__ = ["HELP", "HelpScreen"]

HELP = """\
# bastion-tui

**Everywhere**: `1` sessions · `2` requests · `3` audit trail · `?` this help · `ctrl+q` quit ·
`/` filter or search · `escape` back · the mouse works too (click rows, headers, the timeline).

## Sessions
`enter` replay · `/` filter · `o` sort by the next column (or click a header) · `O` reverse ·
`v` verify the recording · `r` refresh (live sessions refresh by themselves).

Filter terms, all combined: `user:alice` `target:prod` `kind:postgres` `status:live`
`status:tampered` `date:2026-11-22` `since:2026-11-01` `until:2026-11-30`, and free words.

**Recording** column: `intact` (every chunk signed) · `recording` (live, in progress) ·
`CUT OFF` (the end is missing: the bastion stopped before closing it) · `TAMPERED` (altered;
never shown as intact) · `?` not verified yet (remote: verified when opened, or with `v`).

## Replay
`space` play/pause · `←` `→` 5 s · `shift+←` `shift+→` 30 s · `home` `end` ·
`-` `+` speed 0.5x to 16x · `s` skip idle time · `n` / `N` next / previous command ·
`m` / `M` next / previous marker · `/` search the output (`enter` finds the next one) ·
`i` typed input and events panel (select a line to jump there) · `q` SQL statements ·
`f` follow a live session (on when one opens; going back in time stops it).

The banner says whether the recording is intact, cut off or tampered.

## Requests
`a` approve · `d` deny (with a reason) · `p` pending only · `/` filter · `r` refresh.
The bastion applies its rules (nobody approves their own request; approvers need an approving
role for the target) and its answer is shown as is.

## Audit trail
`/` filter (`kind:login.` `actor:bob` `target:prod` `request:12` `session:…` `date:…`) ·
`l` load more · `r` refresh.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and concepts."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        """The help text, scrollable."""
        with VerticalScroll(id="help"):
            yield Markdown(HELP)

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
