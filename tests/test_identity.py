"""Identity decisions without sockets: ID token validation with tokens signed here, claim mapping,
the device flow's answers, the [identity] config, and bindings in both stores."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from harness import make_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from bastion.audit import AuditTrail
from bastion.config import parse_config
from bastion.errors import ConfigError
from bastion.identity.bindings import Identities
from bastion.identity.claims import held_roles, person_from_claims
from bastion.identity.device_flow import (
    HttpResponse,
    Pending,
    TokenSet,
    parse_device_authorization,
    parse_discovery,
    parse_token,
)
from bastion.identity.errors import ProviderUnreachable, SignInRefused, TokenRejected
from bastion.identity.people import with_people
from bastion.identity.sealing import TokenSeal
from bastion.identity.settings import IdentitySettings
from bastion.identity.tokens import validate_id_token
from bastion.models import IdentityBinding, SessionRecord
from bastion.store import open_store

ISSUER = "https://idp.example.com"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str, algorithm: Any = RSAAlgorithm) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig"}


JWKS = {"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1", ECAlgorithm)]}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(NOW.timestamp())
    base = {"iss": ISSUER, "aud": "bastion", "sub": "u-123", "iat": now, "exp": now + 300,
            "nonce": "n-1", "preferred_username": "dora", "groups": ["eng"], "amr": ["pwd"]}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(payload: dict[str, Any], key: Any = RSA_KEY, kid: str | None = "rsa-1",
          alg: str = "RS256") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def hs256(payload: dict[str, Any], secret: bytes) -> str:
    """A token MACed by hand (PyJWT will not use a public key as an HMAC secret)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (part(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()) + "." +
                     part(json.dumps(payload).encode()))
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(mac)}"


def validate(raw: str, nonce: str | None = "n-1") -> dict[str, Any]:
    return validate_id_token(raw, JWKS, issuer=ISSUER, client_id="bastion", nonce=nonce, now=NOW)


def rejected(raw: str, nonce: str | None = "n-1") -> str:
    with pytest.raises(TokenRejected) as exc:
        validate(raw, nonce)
    return str(exc.value)


def test_a_valid_token_gives_its_claims_with_rsa_and_ec_keys() -> None:
    assert validate(token(claims()))["preferred_username"] == "dora"
    assert validate(token(claims(), EC_KEY, "ec-1", "ES256"))["sub"] == "u-123"
    # Device-flow tokens need not carry a nonce.
    assert validate(token(claims(nonce=None)))["sub"] == "u-123"


def test_expired_wrong_audience_and_wrong_issuer_are_refused() -> None:
    past = int((NOW - timedelta(hours=2)).timestamp())
    assert rejected(token(claims(iat=past, exp=past + 60))) == "the ID token has expired"
    assert "not meant for this bastion" in rejected(token(claims(aud="another-app")))
    assert "not issued by https://idp.example.com" in rejected(token(claims(iss="https://evil")))
    assert "several audiences" in rejected(token(claims(aud=["bastion", "other"])))
    assert validate(token(claims(aud=["bastion", "other"], azp="bastion")))["sub"] == "u-123"


def test_wrong_signatures_and_algorithms_are_refused() -> None:
    assert "does not verify" in rejected(token(claims(), OTHER_RSA_KEY))
    assert "does not publish" in rejected(token(claims(), OTHER_RSA_KEY, "rotated-away"))
    unsigned = jwt.encode(claims(), None, algorithm="none")
    assert "does not accept" in rejected(unsigned)
    # Algorithm confusion: HMAC keyed with the provider's published public key.
    public_pem = RSA_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert "does not accept" in rejected(hs256(claims(), public_pem))
    assert "not a signed JWT" in rejected("not.a.jwt")


def test_nonce_and_required_claims() -> None:
    assert "nonce does not match" in rejected(token(claims(nonce="someone-elses")))
    assert "lacks the 'sub' claim" in rejected(token(claims(sub=None)))
    assert "lacks the 'exp' claim" in rejected(token(claims(exp=None)))


def settings(**changes: Any) -> IdentitySettings:
    config = parse_config(config_data(changes), Path("/etc/bastion/test.toml"))
    assert config.identity is not None
    return config.identity


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("keys")
    return {name: make_key(root / name) for name in ("a", "host")}


KEYS: dict[str, str] = {}


def config_data(identity_changes: dict[str, Any]) -> dict[str, Any]:
    identity: dict[str, Any] = {
        "issuer": ISSUER, "client_id": "bastion",
        "groups": [{"group": "eng", "roles": ["dev"]}, {"group": "leads", "roles": ["ops"]}],
        "mfa": {"roles": ["ops"], "targets": ["prod"]},
    }
    identity.update(identity_changes)
    return {
        "server": {"data_dir": "/tmp/x"},
        "roles": [{"name": "dev", "request": ["prod"]}, {"name": "ops", "approve": ["*"]}],
        "users": [{"name": "alice", "roles": ["dev"], "public_keys": [KEYS["a"]]}],
        "targets": [{"name": "prod", "kind": "ssh", "address": "10.0.0.1:22", "login": "root",
                     "host_key": KEYS["host"]}],
        "identity": {k: v for k, v in identity.items() if v is not None},
    }


@pytest.fixture(autouse=True)
def _keys(keys: dict[str, str]) -> None:
    KEYS.update(keys)


def config_refused(**changes: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(config_data(changes), Path("/etc/bastion/test.toml"))
    return str(exc.value)


def test_identity_config_defaults_and_refusals() -> None:
    s = settings()
    assert s.username_claim == "preferred_username" and s.key_ttl == timedelta(hours=12)
    assert s.roles_for(("leads", "eng")) == ("dev", "ops")
    assert "identity.issuer: must be an https:// URL" in config_refused(issuer="http://idp")
    assert "identity.groups[0].roles[0]: unknown role 'root'" in config_refused(
        groups=[{"group": "eng", "roles": ["root"]}])
    assert "identity.client_secret: credentials are never inline" in config_refused(
        client_secret="s3cret")
    assert "identity.colour: unknown key" in config_refused(colour="blue")
    assert "identity.groups: map at least one group" in config_refused(groups=[])
    assert "identity.recheck_interval: must not be longer than key_ttl" in config_refused(
        key_ttl="1m", recheck_interval="5m")
    assert "identity.mfa.roles[0]: unknown role" in config_refused(mfa={"roles": ["boss"]})


def test_an_approving_group_counts_as_approvers(keys: dict[str, str]) -> None:
    data = config_data({})
    data["targets"][0]["approvals_required"] = 2
    assert parse_config(data, Path("/etc/bastion/test.toml")).identity is not None
    data["identity"]["groups"] = [{"group": "eng", "roles": ["dev"]}]
    data["identity"]["mfa"] = {}
    with pytest.raises(ConfigError, match="needs 2 approval"):
        parse_config(data, Path("/etc/bastion/test.toml"))


def test_claims_map_to_a_person_with_roles_and_mfa() -> None:
    s = settings()
    person = person_from_claims(claims(groups=["/leads", "eng"], amr=["pwd", "otp"]), s,
                                frozenset({"alice"}))
    assert (person.user, person.groups, person.roles, person.mfa) == (
        "dora", ("leads", "eng"), ("dev", "ops"), True)
    by_acr = person_from_claims(claims(amr=None, acr="mfa"), settings(mfa={"acr": ["mfa"]}),
                                frozenset())
    assert by_acr.mfa is True
    plain = person_from_claims(claims(groups=["leads"]), s, frozenset())
    assert plain.mfa is False
    binding = plain.binding("SHA256:x", "ssh-ed25519 AAAA", NOW, s.key_ttl, "")
    assert held_roles(binding, s) == ()  # ops needs MFA


@pytest.mark.parametrize(("changes", "reason"), [
    ({"groups": ["marketing"]}, "none of your groups (marketing) is mapped to a role"),
    ({"groups": None}, "none of your groups (none) is mapped"),
    ({"groups": "eng,leads"}, "none of your groups (eng,leads)"),
    ({"groups": [1, 2]}, "groups claim is not a list of names"),
    ({"preferred_username": "alice"}, "one name cannot be both"),
    ({"preferred_username": "Access"}, "cannot be a bastion user name"),
    ({"preferred_username": "dora\x1b[2J"}, "cannot be a bastion user name"),
    ({"preferred_username": None}, "no 'preferred_username' claim"),
])
def test_claims_that_make_no_person_are_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(SignInRefused, match=None) as exc:
        person_from_claims(claims(**changes), settings(), frozenset({"alice"}))
    assert reason in str(exc.value)
    assert "\x1b" not in str(exc.value)


def response(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status, body if isinstance(body, bytes) else json.dumps(body).encode())


def test_token_endpoint_answers() -> None:
    assert parse_token(response(400, {"error": "authorization_pending"}), 5) == Pending(5)
    assert parse_token(response(400, {"error": "slow_down"}), 5) == Pending(10)
    tokens = parse_token(response(200, {"id_token": "x", "access_token": "y"}), 5)
    assert isinstance(tokens, TokenSet) and tokens.refresh_token is None
    assert "x" not in repr(tokens)
    for error, reason in [("access_denied", "declined"), ("expired_token", "code expired"),
                          ("invalid_grant", "no longer accepts")]:
        with pytest.raises(SignInRefused, match=reason):
            parse_token(response(400, {"error": error}), 5)
    with pytest.raises(ProviderUnreachable, match="not JSON"):
        parse_token(response(502, b"<html>bad gateway</html>"), 5)


def test_discovery_and_device_answers_are_checked() -> None:
    document = {"issuer": ISSUER, "device_authorization_endpoint": f"{ISSUER}/device",
                "token_endpoint": f"{ISSUER}/token", "jwks_uri": f"{ISSUER}/jwks"}
    assert parse_discovery(ISSUER, response(200, document)).userinfo_endpoint is None
    with pytest.raises(ProviderUnreachable, match="says its issuer is 'https://evil'"):
        parse_discovery(ISSUER, response(200, {**document, "issuer": "https://evil"}))
    with pytest.raises(ProviderUnreachable, match="does not offer the device authorization"):
        parse_discovery(ISSUER, response(200, {**document, "device_authorization_endpoint": None}))
    with pytest.raises(ProviderUnreachable, match="token_endpoint is not https"):
        parse_discovery(ISSUER, response(200, {**document, "token_endpoint": "http://x/t"}))
    auth = parse_device_authorization(response(200, {
        "device_code": "d", "user_code": "ABCD-EFGH", "verification_uri": f"{ISSUER}/device",
        "expires_in": 600, "interval": 0}))
    assert auth.interval == 1 and "'d'" not in repr(auth)
    with pytest.raises(ProviderUnreachable, match="lacks device_code"):
        parse_device_authorization(response(200, {"user_code": "x"}))
    with pytest.raises(ProviderUnreachable, match="not a web address"):
        parse_device_authorization(response(200, {
            "device_code": "d", "user_code": "u", "verification_uri": "javascript:alert(1)",
            "expires_in": 60}))


def binding(user: str = "dora", key: str = "SHA256:k1", expires: timedelta = timedelta(hours=1),
            mfa: bool = False) -> IdentityBinding:
    return IdentityBinding(
        key_fingerprint=key, public_key=KEYS["a"] if user == "alice" else f"{KEYS['host']}",
        user=user, subject=f"sub-{user}", roles=("dev", "ops"), groups=("eng", "leads"),
        amr=("pwd",), acr=None, mfa=mfa, bound_at=NOW, expires_at=NOW + expires, checked_at=NOW,
        sealed_tokens="sealed")


def test_people_in_force_join_the_config_users() -> None:
    config = parse_config(config_data({}), Path("/etc/bastion/test.toml"))
    people = with_people(config, [binding(), binding("erin", expires=timedelta(0)),
                                  binding("alice", "SHA256:k2")], NOW)
    dora = people.user("dora")
    assert dora is not None and dora.roles == ("dev",)  # ops needs MFA
    assert dora.expires == NOW + timedelta(hours=1)
    assert people.user("erin") is None  # past key_ttl
    alice = people.user("alice")
    assert alice is not None and alice.public_keys == (KEYS["a"],)  # the config's alice only
    assert with_people(config, [binding(mfa=True)], NOW).user("dora").roles == ("dev", "ops")  # type: ignore[union-attr]


def test_sealed_tokens_open_only_for_their_key() -> None:
    seal = TokenSeal(b"k" * 32)
    sealed = seal.seal({"refresh_token": "r-secret"}, "SHA256:k1")
    assert "r-secret" not in sealed
    assert seal.open(sealed, "SHA256:k1") == {"refresh_token": "r-secret"}
    assert seal.open(sealed, "SHA256:k2") == {}
    assert TokenSeal(b"x" * 32).open(sealed, "SHA256:k1") == {}
    assert seal.open("garbage!", "SHA256:k1") == {}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    url: str = request.getfixturevalue("pg_url")
    return url


async def test_bindings_in_the_store(store_url: str) -> None:
    store = await open_store(store_url)
    other = await open_store(store_url)  # another bastion on the same store
    try:
        await store.bind_identity(binding())
        await store.bind_identity(binding(key="SHA256:k2"))
        await store.bind_identity(binding("erin", "SHA256:k3"))
        found = await other.identity_bindings(user="dora")
        assert sorted(b.key_fingerprint for b in found) == ["SHA256:k1", "SHA256:k2"]
        assert found[0].roles == ("dev", "ops") and found[0].bound_at == NOW
        # Binding the same key again replaces the earlier binding.
        await store.bind_identity(binding("erin"))
        assert [b.user for b in await other.identity_bindings(key_fingerprint="SHA256:k1")] == [
            "erin"]
        later = NOW + timedelta(minutes=5)
        assert await other.update_identity_check("SHA256:k2", roles=("dev",), groups=("eng",),
                                                 checked_at=later, sealed_tokens="new")
        updated = (await store.identity_bindings(key_fingerprint="SHA256:k2"))[0]
        assert (updated.roles, updated.checked_at, updated.sealed_tokens) == (("dev",), later, "new")
        removed = await other.unbind_identity(user="erin")
        assert sorted(b.key_fingerprint for b in removed) == ["SHA256:k1", "SHA256:k3"]
        assert [b.user for b in await store.identity_bindings()] == ["dora"]
        assert not await store.update_identity_check("SHA256:k1", roles=(), groups=(),
                                                     checked_at=later, sealed_tokens="")
        assert await store.unbind_identity() == []
    finally:
        await store.close()
        await other.close()


async def test_the_owner_of_a_name_outlives_its_bindings(store_url: str) -> None:
    """Which subject signed in as a name is kept after every binding of it ended, and follows
    the name when it changes hands (the sign-in refuses the change while requests are open)."""
    store = await open_store(store_url)
    other = await open_store(store_url)
    try:
        assert await store.name_owner("dora") is None
        await store.own_name("dora", "sub-1", NOW)
        await store.bind_identity(binding())
        await store.unbind_identity(user="dora")
        assert await other.name_owner("dora") == "sub-1"
        await other.own_name("dora", "sub-2", NOW + timedelta(days=1))
        assert await store.name_owner("dora") == "sub-2"
        assert await store.name_owner("erin") is None
    finally:
        await store.close()
        await other.close()


async def test_bindings_past_key_ttl_leave_the_users_and_are_audited(tmp_path: Path) -> None:
    config = parse_config(config_data({}), tmp_path / "c.toml")
    store = await open_store(f"sqlite:///{tmp_path}/state.db")
    ended: list[tuple[bool, bool, str]] = []
    mine, theirs = (SessionRecord("s", user, "prod", "ssh", 1, 1, "?", "b", NOW)
                    for user in ("dora", "erin"))
    try:
        people = Identities(lambda: config, store, AuditTrail(store, tmp_path / "audit.jsonl", None),
                            TokenSeal(b"k" * 32),
                            lambda which, why: ended.append((which(mine), which(theirs), why)) or 1)
        now = datetime.now(UTC)
        await store.bind_identity(dataclasses.replace(binding(), bound_at=now,
                                                      expires_at=now + timedelta(hours=1)))
        await store.bind_identity(dataclasses.replace(binding("erin", "SHA256:k2"), bound_at=now,
                                                      expires_at=now - timedelta(seconds=1)))
        await people.refresh()
        assert people.config().user("dora") is not None
        assert people.config().user("erin") is None
        assert [b.user for b in await store.identity_bindings()] == ["dora"]
        events = await store.list_audit(kind="identity.")
        assert [(e.kind, e.actor) for e in events] == [("identity.expired", "erin")]
        assert [b.user for b in await people.unbind("dora", by="carol", reason="left")] == ["dora"]
        assert people.config().user("dora") is None
        assert ended == [(True, False, "your sign-in was ended: left")]
    finally:
        await store.close()
