"""The thin async driver that sends the device flow's requests to the provider with httpx."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bastion.identity.device_flow import (
    MAX_BODY,
    DeviceAuthorization,
    Discovery,
    HttpRequest,
    HttpResponse,
    Pending,
    TokenSet,
    device_request,
    parse_device_authorization,
    parse_discovery,
    parse_token,
    provider_json,
    refresh_request,
    token_poll_request,
)
from bastion.identity.errors import ProviderUnreachable, TokenRejected
from bastion.identity.settings import IdentitySettings
from bastion.identity.tokens import validate_id_token
from bastion.models import utcnow

__all__ = ["ProviderClient"]

CACHE_SECONDS = 300.0  # discovery and JWKS are fetched again after this (keys rotate)


class ProviderClient:
    """Talks to one OpenID provider; every network failure becomes ProviderUnreachable."""

    def __init__(self, settings: IdentitySettings) -> None:
        self.settings = settings
        self._discovery: tuple[float, Discovery] | None = None
        self._jwks: tuple[float, dict[str, Any]] | None = None

    def _secret(self) -> str | None:
        ref = self.settings.client_secret
        return ref.resolve().reveal() if ref is not None else None

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send one request; return status and body (bounded)."""
        headers = {"Accept": "application/json"}
        if request.bearer:
            headers["Authorization"] = f"Bearer {request.bearer}"
        try:
            # One deadline for the whole answer: httpx's timeout is per read, so a provider that
            # sends a byte at a time would otherwise hold the sign-in (and its lock) forever.
            async with asyncio.timeout(self.settings.timeout), httpx.AsyncClient(
                    timeout=self.settings.timeout, follow_redirects=False) as client, \
                    client.stream(request.method, request.url, data=request.form,
                                  headers=headers) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        break  # read no more of an oversized answer: it is refused as too large
        except (httpx.HTTPError, httpx.InvalidURL, TimeoutError) as exc:
            raise ProviderUnreachable(f"the identity provider at {self.settings.issuer} cannot be "
                                      f"reached ({type(exc).__name__}); try again later") from exc
        return HttpResponse(response.status_code, bytes(body[:MAX_BODY + 1]))

    async def discovery(self) -> Discovery:
        """The provider's endpoints (OpenID Connect discovery), cached for a few minutes."""
        if self._discovery is not None and time.monotonic() - self._discovery[0] < CACHE_SECONDS:
            return self._discovery[1]
        url = f"{self.settings.issuer}/.well-known/openid-configuration"
        found = parse_discovery(self.settings.issuer, await self.send(HttpRequest("GET", url)))
        self._discovery = (time.monotonic(), found)
        return found

    async def _keys(self, fresh: bool) -> dict[str, Any]:
        if not fresh and self._jwks is not None and \
                time.monotonic() - self._jwks[0] < CACHE_SECONDS:
            return self._jwks[1]
        response = await self.send(HttpRequest("GET", (await self.discovery()).jwks_uri))
        try:
            keys = provider_json(response.body) if len(response.body) <= MAX_BODY else None
        except (ValueError, UnicodeDecodeError):
            keys = None
        if response.status != 200 or not isinstance(keys, dict):
            raise ProviderUnreachable("the identity provider's JWKS cannot be read")
        self._jwks = (time.monotonic(), keys)
        return keys

    async def start(self, nonce: str) -> DeviceAuthorization:
        """Begin a device authorization."""
        s = self.settings
        request = device_request(await self.discovery(), s.client_id, self._secret(), s.scopes,
                                 nonce)
        return parse_device_authorization(await self.send(request))

    async def poll(self, auth: DeviceAuthorization, interval: int) -> TokenSet | Pending:
        """Ask once whether the person has finished."""
        request = token_poll_request(await self.discovery(), self.settings.client_id,
                                     self._secret(), auth.device_code)
        return parse_token(await self.send(request), interval)

    async def refresh(self, refresh_token: str) -> TokenSet:
        """Use a refresh token (the re-check)."""
        request = refresh_request(await self.discovery(), self.settings.client_id, self._secret(),
                                  refresh_token)
        tokens = parse_token(await self.send(request), 0)
        if isinstance(tokens, Pending):
            raise ProviderUnreachable("the identity provider answered a refresh with 'pending'")
        return tokens

    async def claims(self, tokens: TokenSet, nonce: str | None) -> dict[str, Any]:
        """Validated ID token claims, completed from userinfo where the ID token lacks them."""
        claims: dict[str, Any] = {}
        if tokens.id_token is not None:
            claims = await self._validated(tokens.id_token, nonce)
        elif nonce is not None:
            raise TokenRejected("the identity provider sent no ID token")
        s = self.settings
        if tokens.access_token and (s.username_claim not in claims or s.groups_claim not in claims):
            info = await self.userinfo(tokens.access_token)
            if claims and info.get("sub") != claims.get("sub"):
                raise TokenRejected("userinfo is about another subject than the ID token")
            claims = {**info, **claims} if claims else info
        if not claims.get("sub"):
            raise TokenRejected("the identity provider's answer names no subject")
        return claims

    async def _validated(self, token: str, nonce: str | None) -> dict[str, Any]:
        s = self.settings
        issuer = (await self.discovery()).issuer
        try:
            return validate_id_token(token, await self._keys(False), issuer=issuer,
                                     client_id=s.client_id, nonce=nonce, now=utcnow())
        except TokenRejected as exc:
            if "does not publish" not in str(exc) and "signature" not in str(exc):
                raise
        # An unknown key, or one that does not verify: the provider may have rotated its keys
        # since they were cached; fetch them once more before refusing.
        return validate_id_token(token, await self._keys(True), issuer=issuer,
                                 client_id=s.client_id, nonce=nonce, now=utcnow())

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The userinfo endpoint's claims about the access token's owner."""
        endpoint = (await self.discovery()).userinfo_endpoint
        if endpoint is None:
            raise ProviderUnreachable("the identity provider has no userinfo endpoint")
        response = await self.send(HttpRequest("GET", endpoint, bearer=access_token))
        if response.status in (401, 403):
            raise TokenRejected("the identity provider no longer accepts this sign-in (userinfo "
                                f"answered HTTP {response.status})")
        if response.status != 200:
            raise ProviderUnreachable(f"the identity provider's userinfo answered HTTP "
                                      f"{response.status}")
        try:
            data = provider_json(response.body) if len(response.body) <= MAX_BODY else None
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise ProviderUnreachable("the identity provider's userinfo answer is not JSON")
        return data
