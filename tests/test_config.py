"""Config loading: every bad config is refused with the file, the key and the problem."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import REPO, make_key

from bastion.config import load_config, parse_config
from bastion.errors import ConfigError


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    return {name: make_key(tmp_path / name) for name in ("a", "b", "c", "host")}


def base(keys: dict[str, str]) -> dict[str, Any]:
    return {
        "server": {"data_dir": "/tmp/x"},
        "roles": [
            {"name": "dev", "request": ["prod"]},
            {"name": "ops", "approve": ["*"], "max_duration": "2h"},
        ],
        "users": [
            {"name": "alice", "roles": ["dev"], "public_keys": [keys["a"]]},
            {"name": "bob", "roles": ["ops"], "public_keys": [keys["b"]]},
        ],
        "targets": [
            {"name": "prod", "kind": "ssh", "address": "10.0.0.1:22", "login": "root",
             "host_key": keys["host"]},
        ],
    }


def refused(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, Path("/etc/bastion/test.toml"))
    assert str(exc.value).startswith("/etc/bastion/test.toml: ")
    return exc.value


def test_valid_config_loads(keys: dict[str, str]) -> None:
    config = parse_config(base(keys), Path("/etc/bastion/test.toml"))
    assert [u.name for u in config.users] == ["alice", "bob"]
    assert config.target("prod") is not None and config.target("prod").port == 22  # type: ignore[union-attr]
    assert config.server.state_store == "sqlite:////tmp/x/state.db"


def test_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_WEBHOOK_TOKEN", "token-value")
    config = load_config(REPO / "config.example.toml")
    assert {t.name for t in config.targets} == {"prod-web", "staging", "prod-db", "prod-orders"}
    db = config.target("prod-db")
    assert db is not None and db.password is not None and db.masking
    orders = config.target("prod-orders")
    assert orders is not None and orders.kind == "mysql" and orders.read_only and orders.max_rows == 5000
    assert "token-value" not in repr(config)  # header secrets never show in reprs
    identity = config.identity
    assert identity is not None and identity.roles_for(("eng",)) == ("developer",)
    assert identity.mfa.roles == ("sre",) and identity.client_secret is not None


def test_check_config_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "nowhere"\n')
    result = subprocess.run([sys.executable, "-m", "bastion.cli", "check-config", str(bad)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert f"{bad}: server.listen: must be HOST:PORT" in result.stderr


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (lambda d: d["server"].update(colour="blue"), "server.colour", "unknown key"),
        (lambda d: d.update(extras=1), "extras", "unknown key"),
        (lambda d: d["users"][0].update(role="dev"), "users[0].role", "unknown key"),
        (lambda d: d["roles"][1].update(max_duration="forever"), "roles[1].max_duration", "bad duration"),
        (lambda d: d["roles"][1].update(max_duration="0m"), "roles[1].max_duration", "longer than zero"),
        (lambda d: d["roles"][1].update(max_duration="9h"), "roles[1].max_duration", "max_ttl"),
        (lambda d: d.update(certificates={"default_ttl": "9h"}), "certificates.default_ttl",
         "must not be longer than max_ttl"),
        (lambda d: d["users"][0].update(roles=["dev", "admin"]), "users[0].roles[1]",
         "unknown role 'admin'"),
        (lambda d: d["roles"][1].update(approve=[]), "targets[0].approvals_required",
         "nobody may approve"),
        (lambda d: d["targets"][0].update(approvals_required=2), "targets[0].approvals_required",
         "only bob may approve"),
        (lambda d: d["users"].append(dict(d["users"][0])), "users[2].name", "duplicate name 'alice'"),
        (lambda d: d["roles"].append({"name": "dev"}), "roles[2].name", "duplicate name 'dev'"),
        (lambda d: d["targets"].append(dict(d["targets"][0])), "targets[1].name", "duplicate name"),
        (lambda d: d["users"][0].update(public_keys=["ssh-ed25519 AAAAnotakey"]),
         "users[0].public_keys[0]", "not an OpenSSH public key"),
        (lambda d: d["users"][0].update(public_keys=[]), "users[0].public_keys", "at least one"),
        (lambda d: d["users"][1].update(public_keys=d["users"][0]["public_keys"]),
         "users[1].public_keys[0]", "registered for 'alice'"),
        (lambda d: d["users"][0].update(expires="next week"), "users[0].expires", "must be a date"),
        (lambda d: d["users"][0].update(name="access"), "users[0].name", "reserved"),
        (lambda d: d["users"][0].update(name="Alice Smith"), "users[0].name", "lower-case"),
        (lambda d: d["targets"][0].update(kind="telnet"), "targets[0].kind", "must be one of"),
        (lambda d: d["targets"][0].update(approvals_required="one"), "targets[0].approvals_required",
         "must be an integer"),
        (lambda d: d["targets"][0].pop("host_key"), "targets[0].host_key", "needs host_key"),
        (lambda d: d["targets"][0].update(password="hunter2"), "targets[0].password", "never inline"),
        (lambda d: d["targets"][0].update(password={"env": "X", "file": "/y"}), "targets[0].password",
         "must be {env"),
        (lambda d: d["targets"][0].update(masking=[{"columns": ["ssn"]}]),
         "targets[0].masking[0].columns[0]", "schema.table.column"),
        (lambda d: d["targets"][0].update(masking=[{"columns": ["a.b.c"], "strategy": "rot13"}]),
         "targets[0].masking[0].strategy", "must be one of"),
        (lambda d: d["server"].update(listen="2222"), "server.listen", "HOST:PORT"),
        (lambda d: d["server"].update(state_store="mysql://x"), "server.state_store", "sqlite"),
        (lambda d: d.update(certificates={"upstream_ca_key": "user_ca"}), "certificates.upstream_ca_key",
         "never one"),
        (lambda d: d.update(webhooks=[{"url": "ftp://x"}]), "webhooks[0].url", "http"),
        (lambda d: d.update(webhooks=[{"url": "https://x/", "headers": {"Authorization": "Bearer t"}}]),
         "webhooks[0].headers.Authorization", "never inline"),
        (lambda d: d.update(recordings={"on_failure": "continue"}), "recordings.on_failure",
         "no recording, no session"),
        (lambda d: d["roles"][0].update(request="prod"), "roles[0].request", "must be a list"),
        (lambda d: d["roles"][0].update(agent_forwarding=True), "roles[0].agent_forwarding",
         "never offered"),
        (lambda d: d["targets"][0].update(read_only=True), "targets[0].kind", "postgres and mysql"),
        (lambda d: d["targets"].append({"name": "db", "kind": "postgres", "address": "h:5432",
                                        "login": "x", "blocked_statements": ["explode"]}),
         "targets[1].blocked_statements[0]", "unknown statement kind"),
    ],
)
def test_bad_configs_are_refused(keys: dict[str, str], change: Any, key: str, problem: str) -> None:
    data = base(keys)
    change(data)
    error = refused(data)
    assert error.key == key
    assert problem in error.problem


def test_a_past_expires_is_a_user_who_cannot_log_in_not_an_error(
        keys: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    """A contractor's date passing must never stop reloads or restarts (the user could then not
    be removed): the user loads, is expired, and the load warns."""
    data = base(keys)
    data["users"][0]["expires"] = "2020-01-01"
    with caplog.at_level("WARNING", logger="bastion.config"):
        config = parse_config(data, Path("/etc/bastion/test.toml"))
    alice = config.user("alice")
    assert alice is not None and alice.expired(datetime.now(UTC))
    assert "users[0].expires" in caplog.text and "alice cannot log in" in caplog.text


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nlisten=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_secret_reference_resolves_only_when_used(keys: dict[str, str], tmp_path: Path) -> None:
    data = base(keys)
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    data["targets"].append({"name": "db", "kind": "postgres", "address": "127.0.0.1:5432",
                            "login": "app", "approvals_required": 0,
                            "password": {"file": str(secret)}})
    config = parse_config(data, tmp_path / "c.toml")
    db = config.target("db")
    assert db is not None and db.password is not None
    assert "s3cret" not in repr(db)
    assert db.password.resolve().reveal() == "s3cret"
    assert repr(db.password.resolve()) == "<secret>"
