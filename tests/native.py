"""Native database clients through the bastion: `ssh -N -L` tunnels as users open them."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from harness import BastionProcess, control, control_json, free_port, ssh_argv


def approved(bastion: BastionProcess, user: str, target: str, *flags: str,
             approver: str = "bob") -> tuple[int, Path]:
    """Request `target` as `user`, approve it, and save the certificate; (request id, path)."""
    req = control_json(bastion, user, "request", target, "--reason", "INC-10: native client",
                       *flags)
    if req["status"] != "approved":
        control_json(bastion, approver, "approve", str(req["id"]))
    path = bastion.world.root / f"{user}-{target}-{req['id']}-cert.pub"
    result = control(bastion, user, "cert", str(req["id"]))
    assert result.returncode == 0, result.stderr
    path.write_text(result.stdout)
    return req["id"], path


def listening(where: int | str) -> bool:
    """Whether something listens on the loopback TCP port or Unix socket path."""
    if isinstance(where, str):
        return Path(where).exists()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == where:
                    return True
    return False


@contextlib.contextmanager
def tunnel(bastion: BastionProcess, user: str, target: str, cert: Path, *,
           destination: str | None = None, remote_port: int = 5432,
           local: str | None = None) -> Iterator[int | str]:
    """`ssh -N -L PORT:TARGET:PORT TARGET@bastion`; yields the local port (or the Unix socket
    path given as `local`) once it accepts connections."""
    listen: int | str = local if local is not None else free_port()
    spec = f"{listen}:{destination or target}:{remote_port}" if local is None else \
        f"{local}:{destination or target}:{remote_port}"
    args = ssh_argv(bastion, bastion.world.key(user), target, cert=cert,
                    options=["-N", "-o", "ExitOnForwardFailure=yes", "-L", spec])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"ssh -L exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            # Connecting to find out would open a session: look for the listener instead.
            if listening(listen):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"ssh -L did not listen on {listen}")
            time.sleep(0.05)
        yield listen
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
