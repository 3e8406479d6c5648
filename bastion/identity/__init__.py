"""Sign-in through the organisation's OpenID Connect provider, and SSH keys bound to people."""
