"""Recognising file transfers (sftp, scp, rsync) whatever the command's spelling.

Files move through the bastion over SFTP only, where policy allows it: the bastion terminates
SFTP itself (bastion/ssh/file_transfer.py) and audits every file. A transfer started by a command
(legacy `scp -O`, rsync, an sftp server run by hand) cannot be audited file by file, so it is
refused, by two independent nets, so the refusal does not depend on how the command is written:

1. **The command.** Every simple command in the exec string is examined, through the wrappers a
   shell offers (`env`, `command`, `exec`, `nice`, `sudo`, `sh -c '…'`, …), by the base name of
   the program (`/usr//bin/scp`, a tab after `scp`, quoting).
2. **The wire.** Without a terminal, the first bytes of each direction are held until they are
   known not to start a transfer protocol: an sftp client opens with SSH_FXP_INIT; a `scp -f`
   source waits for the client's NUL; a `scp -t` sink answers NUL first and is sent `C`/`D`/`T`
   lines; rsync sends its protocol version as a 4-byte integer. A match ends the session before
   any of those bytes is relayed, so no file byte passes.

What is NOT refused, and is recorded instead: a shell (or command) that prints a file (`cat`,
`base64`, `xxd`) or reads one from its input. Those bytes are in the recording like any output.
"""

from __future__ import annotations

import os
import re
import shlex

__all__ = ["REFUSAL", "command_refusal", "wire_refusal"]

TRANSFER_PROGRAMS = frozenset({"scp", "sftp", "sftp-server", "rsync", "internal-sftp", "sshfs"})
REFUSAL = ("file transfer by a command (legacy `scp -O`, rsync, an sftp server run by hand) is "
           "refused: the bastion audits files over SFTP only; where the target and your role "
           "allow file transfer, use sftp or scp (without -O)")

# Programs that run the rest of their arguments as a command, with how many option arguments
# of their own they may take (a rough but generous model: options are skipped until the first
# word that looks like a program).
_WRAPPERS = frozenset({"env", "command", "exec", "nice", "nohup", "sudo", "doas", "stdbuf",
                       "timeout", "time", "ionice", "setsid", "chrt", "taskset", "xargs", "busybox",
                       "builtin", "eval", "unbuffer", "chroot", "su", "runuser", "flock"})
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox", "fish", "mksh"})
_SEPARATORS = re.compile(r"[;&|\n\r()`]|\$\(")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_MAX_DEPTH = 4


def _program(word: str) -> str:
    return os.path.basename(word.rstrip("/")).lower()


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment, comments=False, posix=True)
    except ValueError:
        return segment.split()


def _refused_words(words: list[str], depth: int) -> bool:
    i = 0
    while i < len(words):
        word = words[i]
        program = _program(word)
        if _ASSIGNMENT.match(word) or word.startswith("-") or word.isdigit():
            i += 1  # VAR=value, a wrapper's option, or its numeric argument (nice -n 5, timeout 9)
            continue
        if program in TRANSFER_PROGRAMS:
            return True
        if program in _SHELLS and "-c" in words[i + 1:]:
            script = words[words.index("-c", i + 1) + 1:]
            return bool(script) and _refused_text(script[0], depth + 1)
        if program in _WRAPPERS:
            # Its options may take arguments (`sudo -u root`, `env -u X`): any later word that
            # is a transfer program, or a shell running a script, counts (fail closed).
            return any(_program(w) in TRANSFER_PROGRAMS for w in words[i + 1:]) or any(
                _program(w) in _SHELLS and _refused_words(words[j:], depth + 1)
                for j, w in enumerate(words[i + 1:], start=i + 1))
        # Any other program: its arguments may still run a command (`find -exec scp …`).
        rest = words[i + 1:]
        return any(w in ("-exec", "-execdir", "-ok", "-okdir") and j + 1 < len(rest)
                   and _refused_words(rest[j + 1:], depth + 1) for j, w in enumerate(rest))
    return False


def _refused_text(command: str, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        return True  # nested beyond reason: fail closed
    return any(_refused_words(_words(segment), depth)
               for segment in _SEPARATORS.split(command) if segment.strip())


def command_refusal(command: str | None, subsystem: str | None) -> str | None:
    """Why this exec command or subsystem is a file transfer, or None."""
    if subsystem:
        return f"the {subsystem} subsystem is not available: {REFUSAL}"
    if command and _refused_text(command):
        return REFUSAL
    return None


# SSH_FXP_INIT (1) from the client, SSH_FXP_VERSION (2) from the server, versions 0 to 6.
_SFTP_HELLO = re.compile(rb"^\x00\x00\x00[\x05-\xff][\x01\x02]\x00\x00\x00[\x00-\x06]", re.DOTALL)
_SCP_LINE = re.compile(rb"^[CD][0-7]{4} \d+ |^T\d+ \d+ \d+ \d+\n")


def _rsync_version(data: bytes) -> bool:
    return len(data) >= 4 and 20 <= data[0] <= 40 and data[1:4] == b"\x00\x00\x00"


def wire_refusal(data: bytes, *, from_client: bool) -> str | None:
    """Whether the first bytes of one direction open a file-transfer protocol; why, or None."""
    # Whichever side sends a file sends `C`/`D`/`T` lines; the other acknowledges with NUL bytes.
    acknowledgement = data.strip(b"\x00") == b"" and len(data) <= 8 and (from_client or len(data) <= 2)
    if _SFTP_HELLO.match(data) or _SCP_LINE.match(data) or _rsync_version(data) or acknowledgement:
        return REFUSAL
    return None
