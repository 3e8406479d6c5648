"""Attacks on sign-in through the identity provider, kept as tests: hostile users, hostile answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
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
from oidc_provider import OidcProvider
from test_identity import (  # noqa: F401 (the key fixtures are used by name)
    ISSUER,
    JWKS,
    NOW,
    _keys,
    claims,
    jwk,
    keys,
    rejected,
    settings,
    token,
    validate,
)
from test_identity_oidc import as_key, sign_in

from bastion.identity.claims import person_from_claims
from bastion.identity.device_flow import (
    MAX_BODY,
    HttpRequest,
    HttpResponse,
    parse_device_authorization,
    parse_discovery,
    parse_token,
)
from bastion.identity.errors import ProviderUnreachable, SignInRefused
from bastion.identity.provider import ProviderClient
from bastion.identity.tokens import validate_id_token

# -- claims a hostile provider or a hostile person at the provider could send ------------------


@pytest.mark.parametrize(("name", "reason"), [
    ("\u212aarl", "cannot be a bastion user name"),  # KELVIN SIGN: str.lower() makes it "karl"
    ("bob\n", "cannot be a bastion user name"),
    (" dora", "cannot be a bastion user name"),
    ("alice\u200b", "cannot be a bastion user name"),
    ("ALICE", "alice is a user of the bastion's config file"),
    ("../x", "cannot be a bastion user name"),
    ("a" * 200, "cannot be a bastion user name"),
    ("", "no 'preferred_username' claim"),
    (["dora"], "no 'preferred_username' claim"),
    ("access", "cannot be a bastion user name"),
])
def test_names_that_are_not_plain_names_or_look_like_another_are_refused(
        name: Any, reason: str) -> None:
    with pytest.raises(SignInRefused) as exc:
        person_from_claims(claims(preferred_username=name), settings(), frozenset({"alice"}))
    assert reason in str(exc.value)
    assert "\n" not in str(exc.value) and "\u200b" not in str(exc.value)


def test_groups_amr_acr_and_sub_tricks() -> None:
    s = settings(mfa={"roles": ["ops"], "targets": ["prod"], "acr": ["mfa"]})
    for groups in ({"eng": True}, [["eng"]], [{"name": "eng"}], 7):
        with pytest.raises(SignInRefused, match="groups claim is not a list of names"):
            person_from_claims(claims(groups=groups), s, frozenset())
    # amr as a string, or acr spelled differently, is not MFA.
    assert not person_from_claims(claims(amr="otp mfa"), s, frozenset()).mfa
    assert not person_from_claims(claims(amr=None, acr="MFA"), s, frozenset()).mfa
    assert not person_from_claims(claims(amr=None, acr=["mfa"]), s, frozenset()).mfa
    assert not person_from_claims(claims(amr=[["otp"]]), s, frozenset()).mfa
    with pytest.raises(SignInRefused, match="names no subject"):
        person_from_claims(claims(sub={"id": 1}), s, frozenset())


def test_a_huge_group_list_is_refused_with_its_reason_not_cut() -> None:
    with pytest.raises(SignInRefused, match="lists 5001 groups; the bastion reads at most 1000"):
        person_from_claims(claims(groups=[f"g{i}" for i in range(5000)] + ["eng"]), settings(),
                           frozenset())
    kept = person_from_claims(claims(groups=[f"g{i}" for i in range(999)] + ["eng"]), settings(),
                              frozenset())
    assert kept.roles == ("dev",) and len(kept.groups) == 1000


@pytest.mark.parametrize(("changes", "reason"), [
    ({"iat": int(NOW.timestamp()) + 86400}, "not valid yet"),
    ({"iat": "yesterday"}, "is not a number"),
    ({"nbf": int(NOW.timestamp()) + 86400}, "not valid yet"),
    ({"exp": float("inf")}, "not a finite time"),
    ({"iss": ISSUER + "/"}, "was not issued by"),
    ({"aud": ["bastion", "other"], "azp": "other"}, "was not issued to this bastion"),
    ({"aud": ["other", "bastion"]}, "was not issued to this bastion"),
    ({"aud": "bastion", "azp": "other"}, "was not issued to this bastion"),
    ({"aud": ["other"], "azp": "bastion"}, "not meant for this bastion"),
    ({"sub": None}, "lacks the 'sub' claim"),
    ({"sub": ""}, "no subject"),
    ({"nonce": "another-sign-in"}, "nonce does not match"),
])
def test_id_token_tricks_are_refused(changes: dict[str, Any], reason: str) -> None:
    assert reason in rejected(token(claims(**changes)))


def test_an_id_token_for_this_bastion_through_azp_is_accepted() -> None:
    assert validate(token(claims(aud=["bastion", "other"], azp="bastion")))["sub"] == "u-123"


def test_a_jwks_with_hundreds_of_keys_is_handled_quickly() -> None:
    spare = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    many = {"keys": [{**jwk(spare, f"k{i}")} for i in range(300)] + JWKS["keys"]}
    assert len(json.dumps(many)) < MAX_BODY
    started = time.monotonic()
    found = validate_id_token(token(claims()), many, issuer=ISSUER, client_id="bastion",
                              nonce="n-1", now=NOW)
    assert found["sub"] == "u-123" and time.monotonic() - started < 2.0


# -- the provider's answers -------------------------------------------------------------------

DOC = {"issuer": ISSUER, "device_authorization_endpoint": f"{ISSUER}/device",
       "token_endpoint": f"{ISSUER}/token", "jwks_uri": f"{ISSUER}/jwks"}


def answer(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status, body if isinstance(body, bytes) else json.dumps(body).encode())


@pytest.mark.parametrize("change", [
    {"token_endpoint": "https://[::1"},
    {"jwks_uri": "https:///no-host"},
    {"token_endpoint": "file:///etc/passwd"},
    {"jwks_uri": ["https://x/jwks"]},
    {"device_authorization_endpoint": "http://plain/device"},
])
def test_discovery_with_bad_endpoints_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ProviderUnreachable):
        parse_discovery(ISSUER, answer(200, {**DOC, **change}))


@pytest.mark.parametrize("body", [
    b'{"device_code": "d", "user_code": "u", "verification_uri": "https://x/d", '
    b'"expires_in": Infinity}',
    b'{"device_code": "d", "user_code": "u", "verification_uri": "https://x/d", '
    b'"expires_in": 60, "interval": 1e999}',
    b'{"device_code": "d", "user_code": "u", "verification_uri": "https://[::1", '
    b'"expires_in": 60}',
    b'{"device_code": "d", "user_code": "u", "verification_uri": "https://x/d", '
    b'"expires_in": NaN}',
    b'{"device_code": "d", ',
    b'[1, 2]',
    b'\xff\xfe',
    b' ' * (MAX_BODY + 1),
])
def test_device_answers_that_would_crash_or_poll_forever_are_refused(body: bytes) -> None:
    with pytest.raises(ProviderUnreachable):
        parse_device_authorization(answer(200, body))


def test_device_polling_is_bounded_whatever_the_provider_asks() -> None:
    fast = parse_device_authorization(answer(200, {
        "device_code": "d", "user_code": "u", "verification_uri": "https://x/d",
        "expires_in": 10**9, "interval": -5}))
    slow = parse_device_authorization(answer(200, {
        "device_code": "d", "user_code": "u", "verification_uri": "https://x/d",
        "expires_in": 60, "interval": 10**9}))
    assert (fast.interval, slow.interval) == (1, 60)
    assert parse_token(answer(400, {"error": "slow_down"}), 60).interval == 60
    with pytest.raises(ProviderUnreachable):
        parse_token(answer(200, b'{"id_token": "x", "expires_in": Infinity}'), 5)


class HostileProvider:
    """A real HTTP server on loopback that answers too slowly or too much."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            if self.mode == "drip":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{")
                for _ in range(1000):  # a byte every 50 ms: each read is well within timeout
                    await asyncio.sleep(0.05)
                    writer.write(b" ")
                    await writer.drain()
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                chunk = b" " * 65536
                for _ in range(16 * 1024):  # up to 1 GiB, unless the bastion stops reading
                    writer.write(chunk)
                    await writer.drain()
                    self.sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"


@pytest.fixture
async def hostile() -> AsyncIterator[list[HostileProvider]]:
    made: list[HostileProvider] = []
    yield made
    for provider in made:
        if provider.server is not None:
            provider.server.close()


async def test_a_provider_that_drips_its_answer_is_cut_off_at_the_timeout(
        hostile: list[HostileProvider]) -> None:
    hostile.append(HostileProvider("drip"))
    url = await hostile[0].start()
    client = ProviderClient(settings(timeout=1))
    ticks = 0

    async def others() -> None:
        nonlocal ticks
        while True:  # the rest of the bastion keeps running meanwhile
            await asyncio.sleep(0.05)
            ticks += 1

    beat = asyncio.create_task(others())
    started = time.monotonic()
    with pytest.raises(ProviderUnreachable, match="cannot be reached"):
        await client.send(HttpRequest("GET", url))
    beat.cancel()
    assert 0.9 < time.monotonic() - started < 3.0
    assert ticks >= 10


async def test_an_endless_answer_is_read_only_up_to_the_limit(
        hostile: list[HostileProvider]) -> None:
    hostile.append(HostileProvider("flood"))
    url = await hostile[0].start()
    client = ProviderClient(settings(timeout=5))
    response = await client.send(HttpRequest("GET", url))
    assert len(response.body) == MAX_BODY + 1
    assert hostile[0].sent < 64 * 1024 * 1024  # it stopped reading; 1 GiB was on offer
    with pytest.raises(ProviderUnreachable, match="too large"):
        parse_token(response, 5)


async def test_a_provider_address_that_is_not_a_url_is_unreachable_not_a_crash() -> None:
    client = ProviderClient(settings())
    with pytest.raises(ProviderUnreachable, match="cannot be reached"):
        await client.send(HttpRequest("GET", "http://exa mple.invalid:99999/"))


# -- end to end: a real provider, a real bastion, the stock ssh client -------------------------

PEOPLE = {
    "dora": {"password": "dora-pw", "groups": ["eng"]},
    "gina": {"password": "gina-pw", "groups": ["eng"]},
    "Alice": {"password": "alice-pw", "groups": ["eng"]},
    "\u212aarl": {"password": "karl-pw", "groups": ["eng"]},
    "nobody": {"password": "nobody-pw", "groups": ["marketing"]},
}


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(tmp_path_factory.mktemp("idp"), json.loads(json.dumps(PEOPLE)))
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def bastion(idp: OidcProvider, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("redteam"), port=free_port(),
                  users={"alice": ["developer"], "bob": ["approver"], "carol": ["auditor"],
                         "dave": ["approver"], "karl": ["developer"]})
    world.extra = f"""
[identity]
issuer = "{idp.issuer}"
client_id = "bastion"
key_ttl = "1h"
timeout = 5

[[identity.groups]]
group = "eng"
roles = ["developer"]
"""
    with running_bastion(world) as proc:
        yield proc


def _can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


UNBOUND_COMMANDS = [
    ["whoami"], ["requests"], ["request", "staging", "--reason", "x"], ["cert"], ["targets"],
    ["approve", "1"], ["deny", "1"], ["identities"], ["unbind", "dora"], ["audit"],
    ["sessions"], ["logout"], ["WHOAMI"], ["Login"], ["requests;login"], ["help;whoami"],
    ["  whoami", "--json"], ["\twhoami"], ["login\u00a0--json"],
]


@pytest.mark.sshd
def test_an_unbound_key_gets_nothing_but_login_and_help(bastion: BastionProcess) -> None:
    key = bastion.world.root / "keys" / "stranger"
    make_key(key)
    for command in UNBOUND_COMMANDS:
        result = as_key(bastion, key, *command)
        assert result.returncode != 0, command
        assert "not signed in" in result.stderr, (command, result.stderr)
        assert result.stdout == "", command
    # Port forwarding and the sftp subsystem through access@, and any target without a cert.
    local = free_port()
    tunnel = subprocess.Popen(
        [*ssh_argv(bastion, key, "access"), "-N", "-L", f"{local}:127.0.0.1:{bastion.world.port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: _can_connect(local)), "ssh -L never listened"
        with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
            assert conn.recv(64) == b""  # refused: the bastion's own banner never comes through
    finally:
        tunnel.kill()
        _, err = tunnel.communicate(timeout=10)
    assert "open failed" in err
    jump = subprocess.run([*ssh_argv(bastion, key, "access"), "-W", "127.0.0.1:22"],
                          capture_output=True, text=True, timeout=15, input="")
    assert jump.returncode != 0 and "SSH-2.0" not in jump.stdout
    sftp = subprocess.run([*ssh_argv(bastion, key, "access"), "-s", "sftp"],
                          capture_output=True, timeout=15, input=b"")
    assert sftp.returncode != 0
    target = ssh(bastion, key, "staging", ["id"])
    assert target.returncode != 0 and "uid=" not in target.stdout


@pytest.mark.sshd
def test_names_that_fold_onto_a_config_user_cannot_sign_in(bastion: BastionProcess,
                                                           idp: OidcProvider) -> None:
    upper, key = sign_in(bastion, idp, "Alice", "upper-alice")
    assert upper.returncode == 1
    assert "alice is a user of the bastion's config file" in upper.stderr
    kelvin, _ = sign_in(bastion, idp, "\u212aarl", "kelvin-karl")
    assert kelvin.returncode == 1
    assert "cannot be a bastion user name" in kelvin.stderr
    assert "not signed in" in as_key(bastion, key, "whoami").stderr
    assert [b["user"] for b in control_json(bastion, "carol", "identities")] == []
    reasons = [e["details"]["reason"] for e in control_json(
        bastion, "carol", "audit", "--kind", "identity.sign_in_failed")]
    assert any("one name cannot be both" in r for r in reasons)
    assert any("cannot be a bastion user name" in r for r in reasons)


@pytest.mark.sshd
def test_two_logins_racing_for_one_key_leave_one_person_bound(bastion: BastionProcess,
                                                              idp: OidcProvider) -> None:
    results: list[subprocess.CompletedProcess[str]] = []
    make_key(bastion.world.root / "keys" / "shared-key")

    def run(person: str) -> None:
        results.append(sign_in(bastion, idp, person, "shared-key")[0])

    threads = [threading.Thread(target=run, args=(p,)) for p in ("dora", "gina")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r.returncode for r in results) == [0, 0], [r.stderr for r in results]
    key = bastion.world.root / "keys" / "shared-key"
    who = json.loads(as_key(bastion, key, "whoami", "--json").stdout)
    bound = [b for b in control_json(bastion, "carol", "identities")
             if b["key"] == who["signed_in"]["key"]]
    assert who["user"] in ("dora", "gina") and [b["user"] for b in bound] == [who["user"]]
    assert "signed out" in as_key(bastion, key, "logout").stdout


@pytest.mark.sshd
def test_after_logout_a_cert_and_an_approved_request_are_useless(bastion: BastionProcess,
                                                                 idp: OidcProvider) -> None:
    result, key = sign_in(bastion, idp, "dora", "dora-cert")
    assert result.returncode == 0, result.stderr
    assert json.loads(as_key(bastion, key, "request", "staging", "--reason", "deploy",
                             "--json").stdout)["status"] == "approved"
    cert = key.parent / "dora-cert-cert.pub"
    cert.write_text(as_key(bastion, key, "cert").stdout)
    assert ssh(bastion, key, "staging", ["echo", "ok"], cert=cert).returncode == 0
    pending = json.loads(as_key(bastion, key, "request", "prod", "--reason", "INC-1",
                                "--json").stdout)
    assert pending["status"] == "pending"
    assert "signed out" in as_key(bastion, key, "logout").stdout
    after = ssh(bastion, key, "staging", ["echo", "ok"], cert=cert)
    assert after.returncode != 0 and "ok" not in after.stdout
    assert "sign-in of dora with this key has ended" in after.stderr
    approved = control(bastion, "bob", "approve", str(pending["id"]))
    assert approved.returncode == 0, approved.stderr
    assert "not signed in" in as_key(bastion, key, "cert", "prod").stderr


@pytest.mark.sshd
def test_no_token_or_device_code_reaches_the_audit_trail_or_the_log(
        bastion: BastionProcess, idp: OidcProvider) -> None:
    result, key = sign_in(bastion, idp, "gina", "gina-audit")
    assert result.returncode == 0, result.stderr
    assert as_key(bastion, key, "whoami").returncode == 0
    refused, _ = sign_in(bastion, idp, "nobody", "nobody-audit")
    assert refused.returncode == 1
    secrets = Path(f"{idp.state_file}.secrets").read_text().split()
    assert len(secrets) >= 3  # a device code, an access token and a refresh token at least
    trail = json.dumps(control_json(bastion, "carol", "audit", "--kind", "identity."))
    stored = b"".join(p.read_bytes() for p in bastion.world.root.rglob("*") if p.is_file())
    assert b"state.db" in b"".join(str(p).encode() for p in bastion.world.root.rglob("*"))
    for secret in secrets:
        assert secret not in trail and secret.encode() not in stored
    # A JWT (the ID token) is base64url header and payload, both starting "eyJ", joined by dots;
    # "eyJ" alone turns up by chance in the encrypted recordings and the SQLite file.
    jwt = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")
    assert not jwt.search(trail.encode()) and not jwt.search(stored)
    failed = control_json(bastion, "carol", "audit", "--kind", "identity.sign_in_failed")
    assert any("none of your groups (marketing)" in e["details"]["reason"] for e in failed)
    assert "signed out" in as_key(bastion, key, "logout").stdout


@contextlib.contextmanager
def _live_session(bastion: BastionProcess, argv: list[str], user: str
                  ) -> Iterator[subprocess.Popen[str]]:
    """An ssh session kept open, once the bastion lists it as live (ssh's own words if it never
    is); killed, its pipes closed, at the end."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as live:
        try:
            if not wait_for(lambda: any(s["user"] == user for s in control_json(
                    bastion, "carol", "sessions", "--live")), timeout=30):
                live.kill()
                _, err = live.communicate(timeout=5)
                pytest.fail(f"{user}'s session did not start: {err}")
            yield live
        finally:
            live.kill()


@pytest.mark.sshd
def test_logout_ends_the_live_sessions_even_while_another_key_is_signed_in(
        bastion: BastionProcess, idp: OidcProvider) -> None:
    first, key = sign_in(bastion, idp, "dora", "dora-live")
    second, other = sign_in(bastion, idp, "dora", "dora-other")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    as_key(bastion, key, "request", "staging", "--reason", "work")
    cert = key.parent / "dora-live-cert.pub"
    cert.write_text(as_key(bastion, key, "cert").stdout)
    with _live_session(bastion, [*ssh_argv(bastion, key, "staging", cert=cert), "sleep 60"],
                       "dora") as live:
        assert "signed out" in as_key(bastion, key, "logout").stdout
        _, err = live.communicate(timeout=15)
    assert "you signed out" in err
    assert as_key(bastion, other, "whoami").returncode == 0  # the other key is still signed in
    assert "signed out" in as_key(bastion, other, "logout").stdout


@pytest.mark.sshd
def test_a_key_signed_in_again_as_someone_else_ends_the_first_person_s_sessions(
        bastion: BastionProcess, idp: OidcProvider) -> None:
    first, key = sign_in(bastion, idp, "dora", "dora-shared")
    second, other = sign_in(bastion, idp, "dora", "dora-stays")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    as_key(bastion, key, "request", "staging", "--reason", "work")
    cert = key.parent / "dora-shared-cert.pub"
    cert.write_text(as_key(bastion, key, "cert").stdout)
    with _live_session(bastion, [*ssh_argv(bastion, key, "staging", cert=cert), "sleep 60"],
                       "dora") as live:
        again, _ = sign_in(bastion, idp, "gina", "dora-shared")
        assert again.returncode == 0 and "signed in as gina" in again.stdout, again.stderr
        _, err = live.communicate(timeout=15)
    assert "this key was signed in again as gina" in err
    assert json.loads(as_key(bastion, key, "whoami", "--json").stdout)["user"] == "gina"
    assert ssh(bastion, key, "staging", ["true"], cert=cert).returncode != 0
    for each in (key, other):
        assert "signed out" in as_key(bastion, each, "logout").stdout


@pytest.mark.sshd
def test_one_address_cannot_take_every_waiting_sign_in(bastion: BastionProcess) -> None:
    # Last in the module: it fills this address's places (they free when the clients hang up).
    waiting = []
    try:
        for n in range(8):
            key = bastion.world.root / "keys" / f"flood-{n}"
            make_key(key)
            proc = subprocess.Popen([*ssh_argv(bastion, key, "access"), "login"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert proc.stderr is not None
            assert "enter the code" in proc.stderr.readline()
            waiting.append(proc)
        key = bastion.world.root / "keys" / "flood-9"
        make_key(key)
        refused = as_key(bastion, key, "login")
        assert refused.returncode == 1
        assert "8 sign-ins from 127.0.0.1 are already waiting" in refused.stderr
    finally:
        for proc in waiting:
            proc.kill()
            proc.communicate()


def test_id_tokens_must_carry_the_issuer_exactly_as_the_provider_publishes_it() -> None:
    published = parse_discovery(ISSUER, answer(200, {**DOC, "issuer": ISSUER + "/"}))
    assert published.issuer == ISSUER + "/"  # a provider like Auth0 publishes the slash
    with_slash = token(claims(iss=ISSUER + "/"))
    assert validate_id_token(with_slash, JWKS, issuer=published.issuer, client_id="bastion",
                             nonce="n-1", now=NOW)["sub"] == "u-123"
    assert "was not issued by" in rejected(with_slash)
    assert parse_discovery(ISSUER, answer(200, DOC)).issuer == ISSUER
