"""A real OpenSSH `sshd` on a loopback port with a throwaway config, for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sshd:
    """`sshd -D` trusting a user CA (TrustedUserCAKeys) and, optionally, plain authorized keys."""

    def __init__(self, directory: Path, *, trusted_ca: str | None = None,
                 authorized_keys: tuple[str, ...] = (), extra: str = "") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.host_key = self.dir / "ssh_host_ed25519_key"
        if not self.host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)],
                           check=True)
        ca_file = self.dir / "trusted_user_ca.pub"
        ca_file.write_text((trusted_ca or "") + "\n")
        auth_file = self.dir / "authorized_keys"
        auth_file.write_text("".join(k + "\n" for k in authorized_keys))
        self.config = self.dir / "sshd_config"
        self.config.write_text(
            f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {self.dir / 'sshd.pid'}
AuthorizedKeysFile {auth_file}
TrustedUserCAKeys {ca_file}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
LogLevel ERROR
{extra}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host_key_line(self) -> str:
        """The host public key, as a target's `host_key` config value."""
        return Path(f"{self.host_key}.pub").read_text().strip()

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd and wait until it accepts TCP connections."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation directory
        log = (self.dir / "sshd.log").open("ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start")

    def stop(self) -> None:
        """Stop sshd (sessions it forked end with their clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    @staticmethod
    def available() -> bool:
        """Whether the OpenSSH server binary is installed."""
        return os.access(SSHD, os.X_OK)
