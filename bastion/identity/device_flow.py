"""The OAuth 2.0 device authorization grant (RFC 8628) and refresh, as protocol logic without I/O.

Each step builds an `HttpRequest` or reads an `HttpResponse`; `provider.py` sends them. What the
provider says is checked here, so a hostile or broken provider gets a clear error, never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bastion.identity.errors import ProviderUnreachable, SignInRefused

__all__ = [
    "DeviceAuthorization",
    "Discovery",
    "HttpRequest",
    "HttpResponse",
    "Pending",
    "TokenSet",
    "device_request",
    "parse_device_authorization",
    "parse_discovery",
    "parse_token",
    "provider_json",
    "refresh_request",
    "token_poll_request",
]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAX_INTERVAL = 60  # seconds between polls, whatever the provider asks
MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class HttpRequest:
    """A request to the provider: GET with no form, or a POSTed form."""

    method: str
    url: str
    form: dict[str, str] | None = field(default=None, repr=False)
    bearer: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class HttpResponse:
    """The provider's answer."""

    status: int
    body: bytes


@dataclass(frozen=True)
class Discovery:
    """The endpoints of the provider's OpenID configuration."""

    issuer: str
    device_authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None


@dataclass(frozen=True)
class DeviceAuthorization:
    """What the person is shown, and the code the bastion polls with."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


@dataclass(frozen=True)
class TokenSet:
    """Tokens from the token endpoint (secrets: never shown or logged)."""

    id_token: str | None = field(repr=False)
    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)


@dataclass(frozen=True)
class Pending:
    """The person has not finished yet: poll again after `interval` seconds."""

    interval: int


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def provider_json(body: bytes) -> Any:
    """Strict JSON: Python's NaN and Infinity extensions are refused (int(Infinity) crashes)."""
    return json.loads(body, parse_constant=_no_constant)


def _json(response: HttpResponse, what: str) -> dict[str, Any]:
    if len(response.body) > MAX_BODY:
        raise ProviderUnreachable(f"the identity provider's {what} answer is too large")
    try:
        data = provider_json(response.body)
    except (ValueError, UnicodeDecodeError):
        raise ProviderUnreachable(f"the identity provider's {what} answer (HTTP "
                                  f"{response.status}) is not JSON") from None
    if not isinstance(data, dict):
        raise ProviderUnreachable(f"the identity provider's {what} answer is not a JSON object")
    return data


def _url(data: dict[str, Any], name: str, issuer: str, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
        host = parts.hostname if parts is not None else None
    except ValueError:  # "http://[::1" and other addresses that cannot be split
        parts = host = None
    if parts is None or parts.scheme not in ("https", "http") or not host:
        raise ProviderUnreachable(f"the identity provider's configuration has no valid {name}")
    if parts.scheme == "http" and urlsplit(issuer).scheme == "https":
        raise ProviderUnreachable(f"the identity provider's {name} is not https")
    return value


def parse_discovery(issuer: str, response: HttpResponse) -> Discovery:
    """Read `/.well-known/openid-configuration`; its issuer must be the configured one."""
    if response.status != 200:
        raise ProviderUnreachable(f"the identity provider's discovery document answered HTTP "
                                  f"{response.status}")
    data = _json(response, "discovery")
    if str(data.get("issuer", "")).rstrip("/") != issuer:
        raise ProviderUnreachable(f"the identity provider says its issuer is "
                                  f"{str(data.get('issuer'))[:200]!r}, not {issuer!r}")
    device = _url(data, "device_authorization_endpoint", issuer, required=False)
    if device is None:
        raise ProviderUnreachable("the identity provider does not offer the device authorization "
                                  "grant (no device_authorization_endpoint): enable it for the "
                                  "bastion's client")
    token = _url(data, "token_endpoint", issuer)
    jwks = _url(data, "jwks_uri", issuer)
    assert token is not None and jwks is not None
    # The issuer as published: ID tokens must carry exactly it (OIDC Discovery §4.3), trailing
    # slash and all, while the configured one may be written with or without the slash.
    return Discovery(str(data["issuer"]), device, token, jwks,
                     _url(data, "userinfo_endpoint", issuer, False))


def _client(client_id: str, secret: str | None) -> dict[str, str]:
    # client_secret_post: every provider that offers the device grant accepts it.
    return {"client_id": client_id, **({"client_secret": secret} if secret else {})}


def device_request(discovery: Discovery, client_id: str, secret: str | None,
                   scopes: tuple[str, ...], nonce: str) -> HttpRequest:
    """Start a device authorization."""
    form = {**_client(client_id, secret), "scope": " ".join(scopes), "nonce": nonce}
    return HttpRequest("POST", discovery.device_authorization_endpoint, form)


def parse_device_authorization(response: HttpResponse) -> DeviceAuthorization:
    """Read the device authorization response (RFC 8628 §3.2)."""
    data = _json(response, "device authorization")
    if response.status != 200:
        raise SignInRefused(f"the identity provider refused to start a sign-in: {_error(data)}")
    try:
        auth = DeviceAuthorization(
            device_code=str(data["device_code"]),
            user_code=str(data["user_code"]),
            verification_uri=str(data.get("verification_uri") or data["verification_url"]),
            verification_uri_complete=(str(data["verification_uri_complete"])
                                       if data.get("verification_uri_complete") else None),
            expires_in=int(data["expires_in"]),
            interval=min(max(int(data.get("interval", 5)), 1), MAX_INTERVAL),
        )
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ProviderUnreachable("the identity provider's device authorization answer lacks "
                                  "device_code, user_code, verification_uri or expires_in") from None
    try:
        scheme = urlsplit(auth.verification_uri).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("https", "http"):
        raise ProviderUnreachable("the identity provider's verification_uri is not a web address")
    return auth


def token_poll_request(discovery: Discovery, client_id: str, secret: str | None,
                       device_code: str) -> HttpRequest:
    """Ask whether the person has finished signing in."""
    return HttpRequest("POST", discovery.token_endpoint, {
        **_client(client_id, secret), "grant_type": DEVICE_GRANT, "device_code": device_code})


def refresh_request(discovery: Discovery, client_id: str, secret: str | None,
                    refresh_token: str) -> HttpRequest:
    """Re-check a person with their refresh token."""
    return HttpRequest("POST", discovery.token_endpoint, {
        **_client(client_id, secret), "grant_type": "refresh_token",
        "refresh_token": refresh_token})


def parse_token(response: HttpResponse, interval: int) -> TokenSet | Pending:
    """Read a token response: tokens, "keep waiting", or a refusal that says why."""
    data = _json(response, "token")
    if response.status == 200:
        tokens = TokenSet(*(data.get(k) if isinstance(data.get(k), str) else None
                            for k in ("id_token", "access_token", "refresh_token")))
        if tokens.id_token is None and tokens.access_token is None:
            raise ProviderUnreachable("the identity provider's token answer has no token")
        return tokens
    error = data.get("error")
    if error == "authorization_pending":
        return Pending(interval)
    if error == "slow_down":
        return Pending(min(interval + 5, MAX_INTERVAL))
    if error == "access_denied":
        raise SignInRefused("the sign-in was declined at the identity provider")
    if error == "expired_token":
        raise SignInRefused("the code expired before the sign-in was finished; run login again")
    if error == "invalid_grant":
        raise SignInRefused(f"the identity provider no longer accepts this sign-in ({_error(data)})")
    raise SignInRefused(f"the identity provider refused the sign-in: {_error(data)}")


def _error(data: dict[str, Any]) -> str:
    text = f"{data.get('error', 'unknown error')}"
    if isinstance(data.get("error_description"), str):
        text += f": {data['error_description']}"
    return "".join(c for c in text[:200] if c.isprintable())
