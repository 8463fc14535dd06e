"""Access tokens: opaque to clients, verifiable by this emulator process only.

Format `emu1.<base64url JSON claims>.<base64url HMAC-SHA256>`, keyed with a random key made
at start, so a token never outlives the process that issued it and cannot be forged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass

PREFIX = "emu1"


@dataclass(frozen=True)
class Claims:
    audience: str
    client_id: str
    tenant_id: str
    issued_at: int
    expires_on: int


class InvalidToken(ValueError):
    """Not a token this process issued, or altered since."""


class ExpiredToken(InvalidToken):
    """Issued here, but past its expiry."""


class WrongTenant(InvalidToken):
    """Issued here for another tenant (a fixture reloaded with a new tenant_id)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    def __init__(self) -> None:
        self._key = os.urandom(32)

    def mint(self, *, audience: str, client_id: str, tenant_id: str, expires_in: int) -> tuple[str, Claims]:
        now = int(time.time())
        claims = Claims(audience, client_id, tenant_id, issued_at=now, expires_on=now + expires_in)
        body = _b64(
            json.dumps(
                {"aud": audience, "appid": client_id, "tid": tenant_id, "iat": now, "exp": now + expires_in},
                separators=(",", ":"),
            ).encode()
        )
        return f"{PREFIX}.{body}.{self._sign(body)}", claims

    def verify(self, token: str) -> Claims:
        """The token's claims if this process issued it unaltered; expiry is the caller's check."""
        prefix, _, rest = token.partition(".")
        body, _, signature = rest.partition(".")
        if prefix != PREFIX or not body or not hmac.compare_digest(signature, self._sign(body)):
            raise InvalidToken("signature does not verify")
        try:
            raw = json.loads(_unb64(body))
            return Claims(raw["aud"], raw["appid"], raw["tid"], int(raw["iat"]), int(raw["exp"]))
        except (ValueError, KeyError, TypeError):
            raise InvalidToken("malformed claims") from None

    def check(self, token: str, tenant_id: str) -> Claims:
        """Claims of a token that verifies, is not expired and is for tenant_id; else an InvalidToken."""
        claims = self.verify(token)
        if claims.expires_on <= time.time():
            raise ExpiredToken(f"expired at {claims.expires_on}")
        if claims.tenant_id != tenant_id:
            raise WrongTenant(claims.tenant_id)
        return claims

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())
