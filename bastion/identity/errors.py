"""Errors of signing in through the identity provider.

BastionError
└── IdentityError            a sign-in or a re-check did not give an identity (says why)
    ├── ProviderUnreachable  the provider could not be reached or answered nonsense
    ├── SignInRefused        the provider refused, or the user cancelled or let the code expire
    └── TokenRejected        a token failed validation (issuer, audience, signature, expiry, nonce)
"""

from __future__ import annotations

from bastion.errors import BastionError

__all__ = ["IdentityError", "ProviderUnreachable", "SignInRefused", "TokenRejected"]


class IdentityError(BastionError):
    """No identity came of a sign-in or re-check."""


class ProviderUnreachable(IdentityError):
    """The identity provider could not be reached, or its answer made no sense."""


class SignInRefused(IdentityError):
    """The provider or the claim mapping refused this person."""


class TokenRejected(IdentityError):
    """A token from the provider failed validation."""
