"""A real OpenID provider (node-oidc-provider, tests/oidc/) on loopback, and a person using it."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from harness import REPO, free_port

OIDC_DIR = REPO / "tests" / "oidc"


class OidcProvider:
    """`node tests/oidc/provider.js PORT STATE.json`; the test edits the users in STATE.json."""

    def __init__(self, root: Path, users: dict[str, dict[str, Any]], client_id: str = "bastion"):
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.state_file = root / "oidc-state.json"
        self.state: dict[str, Any] = {"client_id": client_id, "users": users, "bad_jwks": False}
        self.log = root / "oidc.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def save(self) -> None:
        """Write the state the provider reads on every request."""
        self.state_file.write_text(json.dumps(self.state))

    def start(self) -> None:
        """Start the provider and wait until it serves its discovery document."""
        if not (OIDC_DIR / "node_modules" / "oidc-provider").exists():
            raise RuntimeError("tests/oidc/node_modules is missing: run scripts/bootstrap.sh "
                               "with BASTION_BOOTSTRAP_TEST=1")
        self.save()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(["node", "provider.js", str(self.port), str(self.state_file)],
                                         cwd=OIDC_DIR, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.issuer}/.well-known/openid-configuration").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the OpenID provider did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        """Stop the provider."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _xsrf(text: str) -> str:
    found = re.search(r'name="xsrf" value="([^"]+)"', text)
    assert found, text[:500]
    return found.group(1)


def approve_device(verification_uri: str, user_code: str, login: str, password: str,
                   otp: str = "") -> str:
    """Do what a person does in a browser: enter the code, confirm, sign in. Returns the last page."""
    with httpx.Client(follow_redirects=True, timeout=10) as web:
        page = web.get(verification_uri)
        page = web.post(verification_uri, data={"xsrf": _xsrf(page.text), "user_code": user_code})
        page = web.post(verification_uri, data={"xsrf": _xsrf(page.text), "user_code": user_code,
                                                "confirm": "yes"})
        action = re.search(r'action="(/interaction/[^"]+)"', page.text)
        assert action, page.text[:500]
        page = web.post(page.url.join(action.group(1)),
                        data={"login": login, "password": password, "otp": otp})
        return page.text
