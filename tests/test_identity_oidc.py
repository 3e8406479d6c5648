"""Signing in through a real OpenID provider (node-oidc-provider) with the stock ssh client."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    make_key,
    running_bastion,
    ssh,
    ssh_argv,
    wait_for,
)
from oidc_provider import OidcProvider, approve_device

pytestmark = pytest.mark.sshd

PEOPLE = {
    "dora": {"password": "dora-pw", "groups": ["eng"], "otp": "111111"},
    "erin": {"password": "erin-pw", "groups": ["/leads", "eng"], "otp": "222222"},
    "frank": {"password": "frank-pw", "groups": ["contractors"]},
    "gina": {"password": "gina-pw", "groups": ["eng"]},
    "alice": {"password": "alice-pw", "groups": ["eng"]},  # also a user of the config file
    "nobody": {"password": "nobody-pw", "groups": ["marketing"]},
    "hank": {"password": "hank-pw", "groups": ["eng"]},
}


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(tmp_path_factory.mktemp("idp"), json.loads(json.dumps(PEOPLE)))
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def bastion(idp: OidcProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("identity"), port=free_port(),
                  users={"alice": ["developer"], "bob": ["approver"], "carol": ["auditor"]})
    world.extra = f"""
[identity]
issuer = "{idp.issuer}"
client_id = "bastion"
key_ttl = "1h"
recheck_interval = "1s"
timeout = 5

[[identity.groups]]
group = "eng"
roles = ["developer"]

[[identity.groups]]
group = "leads"
roles = ["approver"]

[[identity.groups]]
group = "contractors"
roles = ["contractor", "developer"]

[identity.mfa]
roles = ["approver"]
targets = ["critical"]
"""
    with running_bastion(world) as proc:
        yield proc


def sign_in(bastion: BastionProcess, idp: OidcProvider, person: str, key_name: str | None = None,
            *, otp: str = "") -> tuple[subprocess.CompletedProcess[str], Path]:
    """`ssh access@bastion login` with a fresh key while the person signs in at the provider."""
    key = bastion.world.root / "keys" / (key_name or f"{person}-idp")
    make_key(key)
    proc = subprocess.Popen([*ssh_argv(bastion, key, "access"), "login"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    prompt = ""
    while "enter the code" not in prompt:
        line = proc.stderr.readline()
        if not line:
            break
        prompt += line
    found = re.search(r"open (\S+) and enter the code (\S+)", prompt)
    if found:
        password = str(idp.state["users"].get(person, {}).get("password", "x"))
        approve_device(found.group(1), found.group(2), person, password, otp)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, prompt + err), key


def as_key(bastion: BastionProcess, key: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return ssh(bastion, key, "access", command)


def audit_kinds(bastion: BastionProcess) -> list[str]:
    return [e["kind"] for e in control_json(bastion, "carol", "audit", "--kind", "identity.")]


def test_a_wrongly_signed_id_token_is_refused(bastion: BastionProcess, idp: OidcProvider) -> None:
    # First in the module: the bastion has not cached the provider's real keys yet.
    idp.state["bad_jwks"] = True
    idp.save()
    try:
        result, key = sign_in(bastion, idp, "gina")
    finally:
        idp.state["bad_jwks"] = False
        idp.save()
    assert result.returncode == 1
    assert "sign-in failed: the ID token's signature does not verify" in result.stderr
    assert "not signed in" in as_key(bastion, key, "requests").stderr
    events = control_json(bastion, "carol", "audit", "--kind", "identity.sign_in_failed")
    assert "signature" in events[0]["details"]["reason"]


def test_sign_in_maps_groups_and_the_key_works_for_requests_certs_and_targets(
        bastion: BastionProcess, idp: OidcProvider) -> None:
    result, key = sign_in(bastion, idp, "dora")
    assert result.returncode == 0, result.stderr
    assert "enter the code" in result.stderr
    assert "signed in as dora (roles: developer; groups: eng)" in result.stdout
    who = json.loads(as_key(bastion, key, "whoami", "--json").stdout)
    assert who["user"] == "dora" and who["roles"] == ["developer"]
    assert who["signed_in"]["subject"] == "dora" and who["signed_in"]["mfa"] is False
    request = json.loads(as_key(bastion, key, "request", "staging", "--reason", "deploy",
                                "--json").stdout)
    assert request["status"] == "approved" and request["user"] == "dora"
    cert = key.parent / "dora-idp-cert.pub"
    cert.write_text(as_key(bastion, key, "cert").stdout)
    session = ssh(bastion, key, "staging", ["echo", "through-the-idp"], cert=cert)
    assert session.returncode == 0, session.stderr
    assert "through-the-idp" in session.stdout
    listed = control_json(bastion, "carol", "identities")
    assert [b["user"] for b in listed] == ["dora"] and listed[0]["groups"] == ["eng"]
    time.sleep(1.1)  # recheck_interval = 1s: the next command asks the provider again
    assert as_key(bastion, key, "whoami").returncode == 0
    assert {"identity.signed_in", "identity.bound", "identity.rechecked"} <= set(
        audit_kinds(bastion))


def test_an_unbound_key_may_only_log_in_or_ask_for_help(bastion: BastionProcess) -> None:
    key = bastion.world.root / "keys" / "stranger"
    make_key(key)
    refused = as_key(bastion, key, "request", "staging", "--reason", "x")
    assert refused.returncode == 1
    assert "this SSH key is not signed in" in refused.stderr and "access@127.0.0.1 login" in \
        refused.stderr
    assert "login" in as_key(bastion, key, "help").stdout


def test_unmapped_groups_and_config_names_are_refused(bastion: BastionProcess,
                                                      idp: OidcProvider) -> None:
    result, _ = sign_in(bastion, idp, "nobody")
    assert result.returncode == 1
    assert "none of your groups (marketing) is mapped to a role" in result.stderr
    result, _ = sign_in(bastion, idp, "alice", "alice-idp")
    assert "alice is a user of the bastion's config file: one name cannot be both" in result.stderr
    # The config's alice is unaffected, and her key is hers: it cannot be signed in.
    assert control_json(bastion, "alice", "whoami")["user"] == "alice"
    own = control(bastion, "alice", "login")
    assert own.returncode == 1 and "this key belongs to alice" in own.stderr


def test_mfa_required_by_a_role_and_by_a_target(bastion: BastionProcess,
                                                idp: OidcProvider) -> None:
    request = control_json(bastion, "alice", "request", "prod", "--reason", "INC-7")
    without, key = sign_in(bastion, idp, "erin")
    assert without.returncode == 0, without.stderr
    assert "require signing in with MFA" in without.stdout
    refused = as_key(bastion, key, "approve", str(request["id"]))
    assert refused.returncode == 1
    assert "your role(s) approver require signing in with MFA" in refused.stderr
    target = as_key(bastion, key, "request", "critical", "--reason", "x")
    assert "critical requires signing in with MFA" in target.stderr
    with_mfa, key = sign_in(bastion, idp, "erin", "erin-mfa", otp="222222")
    assert with_mfa.returncode == 0, with_mfa.stderr
    assert "MFA" in with_mfa.stdout
    approved = json.loads(as_key(bastion, key, "approve", str(request["id"]), "--json").stdout)
    assert approved["status"] == "approved" and approved["approvers"] == ["erin"]


def test_removal_from_the_group_takes_effect_at_the_next_recheck(
        bastion: BastionProcess, idp: OidcProvider) -> None:
    result, key = sign_in(bastion, idp, "gina", "gina-2")
    assert result.returncode == 0, result.stderr
    assert as_key(bastion, key, "whoami").returncode == 0
    idp.state["users"]["gina"]["groups"] = ["marketing"]
    idp.save()
    time.sleep(1.1)  # recheck_interval = 1s
    refused = as_key(bastion, key, "requests")
    assert refused.returncode == 1
    assert "your sign-in is no longer valid" in refused.stderr
    assert "none of your groups (marketing)" in refused.stderr
    assert "not signed in" in as_key(bastion, key, "requests").stderr
    assert "gina" not in [b["user"] for b in control_json(bastion, "carol", "identities")]
    assert "identity.recheck_failed" in audit_kinds(bastion)


def test_removal_from_the_provider_takes_effect_at_the_next_recheck(
        bastion: BastionProcess, idp: OidcProvider) -> None:
    result, key = sign_in(bastion, idp, "hank")
    assert result.returncode == 0, result.stderr
    del idp.state["users"]["hank"]
    idp.save()
    time.sleep(1.1)
    refused = as_key(bastion, key, "whoami")
    assert refused.returncode == 1
    assert "your sign-in is no longer valid: the identity provider no longer accepts this " \
        "sign-in" in refused.stderr


def test_unbind_ends_the_person_s_live_sessions(bastion: BastionProcess,
                                                idp: OidcProvider) -> None:
    result, key = sign_in(bastion, idp, "frank")
    assert result.returncode == 0, result.stderr
    cert = key.parent / "frank-cert.pub"
    as_key(bastion, key, "request", "staging", "--reason", "work")
    cert.write_text(as_key(bastion, key, "cert").stdout)
    live = subprocess.Popen([*ssh_argv(bastion, key, "staging", cert=cert), "sleep 60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = wait_for(lambda: any(s["user"] == "frank" for s in control_json(
            bastion, "carol", "sessions", "--live")))
    finally:
        if live.poll() is not None or not started:
            live.kill()
            _, err = live.communicate()
            pytest.fail(f"frank's session did not start: {err}")
    denied = as_key(bastion, bastion.world.key("alice"), "unbind", "frank")
    assert "identities are for auditors" in denied.stderr
    unbound = control(bastion, "carol", "unbind", "frank", "--reason", "left the company")
    assert unbound.returncode == 0, unbound.stderr
    _, err = live.communicate(timeout=15)
    assert "your sign-in was ended" in err
    assert "not signed in" in as_key(bastion, key, "requests").stderr
    assert "identity.unbound" in audit_kinds(bastion)


def test_logout_ends_the_key_s_binding(bastion: BastionProcess, idp: OidcProvider) -> None:
    result, key = sign_in(bastion, idp, "dora", "dora-2")
    assert result.returncode == 0, result.stderr
    assert "signed out" in as_key(bastion, key, "logout").stdout
    assert "not signed in" in as_key(bastion, key, "whoami").stderr

def test_a_name_given_to_another_person_passes_on_no_open_request(
        bastion: BastionProcess, idp: OidcProvider) -> None:
    """The provider gives the name `ivy` to a new person (another subject) after the first one
    signed out: the newcomer cannot sign in as `ivy` while the first person's requests are open,
    and once an approver revoked them signs in without them."""
    idp.state["users"]["ivy"] = {"password": "ivy-pw", "groups": ["eng"]}
    idp.state["users"]["ivy-new"] = {"password": "ivy-new-pw", "groups": ["eng"], "username": "ivy"}
    idp.save()
    first, key = sign_in(bastion, idp, "ivy")
    assert first.returncode == 0, first.stderr
    request = json.loads(as_key(bastion, key, "request", "staging", "--reason", "work",
                                "--json").stdout)
    assert request["status"] == "approved"
    assert "signed out" in as_key(bastion, key, "logout").stdout
    refused, new_key = sign_in(bastion, idp, "ivy-new")
    assert refused.returncode != 0
    assert (f"the name ivy belonged to another person at the provider (another subject), whose "
            f"requests {request['id']} are still open") in refused.stderr
    assert "not signed in" in as_key(bastion, new_key, "whoami").stderr
    revoked = control(bastion, "bob", "revoke", str(request["id"]), "--reason", "name reassigned")
    assert revoked.returncode == 0, revoked.stderr
    again, new_key = sign_in(bastion, idp, "ivy-new", "ivy-new-2")
    assert again.returncode == 0, again.stderr
    who = json.loads(as_key(bastion, new_key, "whoami", "--json").stdout)
    assert who["user"] == "ivy" and who["signed_in"]["subject"] == "ivy-new"
    cert = as_key(bastion, new_key, "cert")  # the revoked request gives no certificate
    assert cert.returncode != 0 and "no approved request in force" in cert.stderr, cert.stdout
    assert "identity.name_reassigned" in audit_kinds(bastion)



def test_provider_unreachable_is_explained_and_config_users_are_unaffected(
        bastion: BastionProcess, idp: OidcProvider) -> None:
    # Last in the module: it stops the provider.
    result, key = sign_in(bastion, idp, "dora", "dora-3")
    assert result.returncode == 0, result.stderr
    idp.stop()
    time.sleep(1.1)
    recheck = as_key(bastion, key, "requests")
    assert recheck.returncode == 1 and "cannot be reached" in recheck.stderr
    fresh, _ = sign_in(bastion, idp, "dora", "dora-4")
    assert fresh.returncode == 1
    assert f"the identity provider at {idp.issuer} cannot be reached" in fresh.stderr
    assert control_json(bastion, "alice", "whoami")["user"] == "alice"
    assert control(bastion, "alice", "requests").returncode == 0
