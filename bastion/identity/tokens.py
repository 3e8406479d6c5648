"""ID token validation: signature through the provider's JWKS, issuer, audience, expiry, nonce.

PyJWT does the JOSE work (signature algorithms, time claims, audience lists); this module decides
which keys and algorithms are acceptable and turns every failure into a reason a person can read.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import jwt

from bastion.identity.errors import ProviderUnreachable, TokenRejected

__all__ = ["SIGNING_ALGORITHMS", "validate_id_token"]

# Asymmetric only: "none" and HMAC (keyed with the public client secret) are never accepted.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                      "ES256", "ES384", "ES512", "EdDSA")
LEEWAY = timedelta(seconds=60)  # clock skew between bastion and provider


def _signing_key(token: str, jwks: dict[str, Any]) -> tuple[Any, str]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRejected("the ID token is not a signed JWT") from None
    alg = header.get("alg")
    if alg not in SIGNING_ALGORITHMS:
        raise TokenRejected(f"the ID token is signed with {str(alg)[:20]!r}, which the bastion "
                            "does not accept (asymmetric signatures only)")
    try:
        keys = jwt.PyJWKSet.from_dict(jwks).keys
    except jwt.PyJWTError:
        raise ProviderUnreachable("the identity provider's JWKS holds no usable key") from None
    kid = header.get("kid")
    found = [k for k in keys if (kid is None or k.key_id == kid)
             and (k.public_key_use in (None, "sig"))]
    if not found:
        raise TokenRejected(f"the ID token is signed with a key the provider does not publish "
                            f"(kid {str(kid)[:60]!r})")
    if kid is None and len(found) > 1:
        raise TokenRejected("the ID token names no key (kid) and the provider publishes several")
    return found[0].key, str(alg)


def validate_id_token(token: str, jwks: dict[str, Any], *, issuer: str, client_id: str,
                      nonce: str | None, now: datetime) -> dict[str, Any]:
    """Return the claims of a valid ID token, or raise TokenRejected saying what is wrong."""
    key, alg = _signing_key(token, jwks)
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[alg], audience=client_id, issuer=issuer,
            options={"require": ["iss", "aud", "exp", "iat", "sub"], "verify_iat": False,
                     # Times are checked below against `now`: explicit, and testable.
                     "verify_exp": False, "verify_nbf": False},
        )
    except jwt.InvalidAudienceError:
        raise TokenRejected(f"the ID token is not meant for this bastion (audience is not "
                            f"{client_id!r})") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected(f"the ID token was not issued by {issuer}") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("the ID token's signature does not verify with the provider's "
                            "keys") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"the ID token lacks the {exc.claim!r} claim") from None
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"the ID token is invalid: {str(exc)[:200]}") from None
    skew = LEEWAY.total_seconds()
    try:
        expires, not_before = float(claims["exp"]), float(claims.get("nbf", 0))
        issued = float(claims["iat"])
    except (TypeError, ValueError):
        raise TokenRejected("the ID token's exp, nbf or iat is not a number") from None
    if not all(math.isfinite(t) for t in (expires, not_before, issued)):
        # JSON's Infinity would make a token that never expires.
        raise TokenRejected("the ID token's exp, nbf or iat is not a finite time")
    if expires + skew < now.timestamp():
        raise TokenRejected("the ID token has expired")
    if not_before - skew > now.timestamp() or issued - skew > now.timestamp():
        raise TokenRejected("the ID token is not valid yet (check the clocks)")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != client_id:
        raise TokenRejected("the ID token names several audiences but was not issued to this "
                            "bastion (azp)")
    if "nonce" in claims and claims["nonce"] != nonce:
        raise TokenRejected("the ID token's nonce does not match this sign-in (a replayed token?)")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise TokenRejected("the ID token has no subject")
    return claims
