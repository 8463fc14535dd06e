"""Service-account tokens (JWTs) as a Kubernetes cluster's OIDC issuer signs them: the assertions
workload identity presents to Microsoft Entra (entra.py), minted through the admin API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AssertionIssuer:
    """The cluster's OIDC issuer, as far as Entra can tell: it signs service-account tokens (JWTs).

    HS256 with a random key per process, so only this process can verify them and none outlives it
    (a real issuer signs RS256 and publishes its keys; clients never verify an assertion either way).
    """

    def __init__(self) -> None:
        self._key = os.urandom(32)

    def mint(self, *, issuer: str, subject: str, audience: str, expires_in: int, not_before: int | None = None) -> str:
        now = int(time.time())
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "azure-emulator"}).encode())
        claims = {
            "aud": [audience],
            "iss": issuer,
            "sub": subject,
            "iat": now,
            "nbf": now if not_before is None else not_before,
            "exp": now + expires_in,
            "jti": str(uuid.uuid4()),
        }
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{header}.{body}.{self._sign(header + '.' + body)}"

    def verify(self, assertion: str) -> dict[str, Any] | None:
        """The claims of an assertion this process signed, unaltered; None for anything else."""
        parts = assertion.split(".")
        if len(parts) != 3 or not hmac.compare_digest(parts[2], self._sign(parts[0] + "." + parts[1])):
            return None
        try:
            claims = json.loads(_unb64(parts[1]))
        except ValueError:
            return None
        return claims if isinstance(claims, dict) else None

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest())
