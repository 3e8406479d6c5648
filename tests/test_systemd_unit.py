"""systemd/bastion.service: valid for systemd, hardened, and consistent with the example config."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO

from bastion.config import load_config

UNIT = REPO / "systemd" / "bastion.service"

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            name, _, value = line.partition("=")
            found.setdefault(name.strip(), []).append(value.strip())
    return found


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's entry point, so systemd can check it."""
    entry = Path(sys.executable).parent / "bastion"
    assert entry.exists(), entry
    copy = tmp_path / "bastion.service"
    copy.write_text(UNIT.read_text().replace("/opt/bastion/venv/bin/bastion", str(entry)))
    return copy


@needs_systemd
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    verify = subprocess.run(["systemd-analyze", "verify", str(runnable_copy(tmp_path))],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr


@needs_systemd
def test_exposure_level_is_ok(tmp_path: Path) -> None:
    security = subprocess.run(["systemd-analyze", "security", "--offline=true",
                               str(runnable_copy(tmp_path))], capture_output=True, text=True)
    assert security.returncode == 0, security.stderr
    level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)[1])  # type: ignore[index]
    assert level < 2.0, security.stdout


def test_hardening_directives() -> None:
    d = directives()
    assert d["User"] == ["bastion"] and d["Group"] == ["bastion"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"] and d["PrivateTmp"] == ["yes"]
    assert d["Restart"] == ["on-failure"]
    assert "LogsDirectory" not in d and "ReadOnlyPaths" not in d
    # The example listens on 2222: no capability at all is needed.
    assert d["CapabilityBoundingSet"] == [""] and d["AmbientCapabilities"] == [""]
    assert d["ExecStart"] == ["/opt/bastion/venv/bin/bastion serve --config /etc/bastion/bastion.toml"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_example_config_writes_only_where_the_unit_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_WEBHOOK_TOKEN", "unused")
    config = load_config(REPO / "config.example.toml")
    assert config.server.listen_port >= 1024
    writable = [Path(p) for p in directives()["ReadWritePaths"]]
    assert writable == [config.server.data_dir] == [Path("/var/lib/bastion")]
    written = [config.server.data_dir, config.recordings.dir, config.server.audit_log,
               config.server.host_key, config.certificates.user_ca_key,
               config.certificates.upstream_ca_key, config.recordings.signing_key]
    state = config.server.state_store
    if state.startswith("sqlite:///"):
        written.append(config.server.data_dir / state.removeprefix("sqlite:///"))
    for path in written:
        assert any(path == w or w in path.parents for w in writable), path
