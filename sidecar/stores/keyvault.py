"""Key Vault, through azure-keyvault-secrets' SecretClient: one client per vault.

TLS verification and challenge-resource verification stay on; the SDK's own
retries are off (retry_total=0) so that `sidecar.resolve` is the one retry layer.

The SDK trusts the shape of a 200 answer: a body of the wrong shape makes it fail
with DecodeError, RecursionError, AttributeError, ValueError... or hand back
`exp`/`nbf` as whatever the body held. Each becomes an UnavailableError here that
says what was wrong, never the exception's text (it can quote the body).
"""

from __future__ import annotations

import json
import pickle
import threading
import traceback
from collections.abc import Hashable
from datetime import datetime
from urllib.parse import urlsplit

import requests
from azure.core.exceptions import (
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.keyvault.secrets import SecretClient

# The SDK keeps each vault's challenge in this process-wide cache; a long-running sidecar's rounds are
# processes of their own, so the challenge is carried from one to the next (carry/resume). A private
# module of the pinned SDK: without it, each round costs one unauthenticated request per vault more.
try:
    from azure.keyvault.secrets._shared import http_challenge_cache
except ImportError:  # another SDK version
    http_challenge_cache = None

from sidecar.clouds import cloud_for_vault_host
from sidecar.errors import (
    ConfigurationError,
    MissingRoleError,
    NotFoundError,
    PermissionDeniedError,
    SidecarError,
    UnavailableError,
)
from sidecar.identity import ManagedIdentity
from sidecar.logs import redactor
from sidecar.references import KeyVaultReference
from sidecar.stores.base import (
    CONNECT_TIMEOUT_S,
    RETRYABLE_STATUSES,
    Fetched,
    Store,
    TransientError,
    retry_after_seconds,
)

SECRETS_USER_ROLE = "Key Vault Secrets User"
Key = tuple[str, str, str | None]  # vault URL, secret name, version (None: latest)


def _error_codes(error: HttpResponseError) -> tuple[str, str, str]:
    """(code, inner code, message) from Key Vault's error body; never a value."""
    try:
        body = json.loads(error.response.text()).get("error", {})
    except (ValueError, AttributeError):
        return "", "", ""
    inner = body.get("innererror") or {}
    message = " ".join(str(body.get("message", "")).split())[:300]
    return body.get("code", ""), inner.get("code", ""), message


def _refused_challenge(exc: ValueError) -> bool:
    """Whether the SDK's challenge-resource check raised this ValueError.

    The SDK raises a plain ValueError from _validate_challenge_resource (keyvault/secrets/_shared/
    challenge_auth_policy.py) when the challenge names a resource the vault's host is not under, before
    it asks for a token for it; every other ValueError (e.g. an answer whose `id` is not a secret id)
    comes after the request with the token was sent.
    """
    innermost = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        innermost = frame
    return innermost is not None and innermost.f_code.co_name == "_validate_challenge_resource"


def _bad_answer(where: str, what: str) -> UnavailableError:
    return UnavailableError(
        f"{where}: the vault's answer {what}.",
        fix="check that nothing between the sidecar and the vault (a proxy, a SIDECAR_CONNECT_TO rule) answers "
        "in the vault's place.",
    )


class KeyVaultStore(Store):
    kind = "keyvault"
    first_fetch_alone = True

    def __init__(self, identity: ManagedIdentity, session: requests.Session, verify: str | bool) -> None:
        self._identity = identity
        self._session = session
        self._verify = verify
        self._clients: dict[str, SecretClient] = {}
        self._lock = threading.Lock()

    def key(self, reference: KeyVaultReference) -> Key:  # type: ignore[override]
        return (reference.vault_url, reference.name, reference.version)

    def location(self, key: Hashable) -> str:
        return key[0]  # type: ignore[index]

    def audience(self, key: Hashable) -> str:
        cloud = cloud_for_vault_host(urlsplit(key[0]).hostname or "")  # type: ignore[index]
        assert cloud is not None, "references are checked against the known clouds when parsed"
        return cloud.vault_resource + "/.default"

    def _client(self, vault_url: str) -> SecretClient:
        with self._lock:
            client = self._clients.get(vault_url)
            if client is None:
                client = self._clients[vault_url] = SecretClient(
                    vault_url,
                    self._identity,
                    transport=RequestsTransport(session=self._session, session_owner=False),
                    connection_verify=self._verify,
                    verify_challenge_resource=True,
                    retry_total=0,
                )
            return client

    def carry(self) -> bytes | None:
        """The challenges learnt this round: the next round then sends no unauthenticated request first."""
        if http_challenge_cache is None:
            return None
        with self._lock:
            urls = list(self._clients)
        challenges = {url: http_challenge_cache.get_challenge_for_url(url) for url in urls}
        return pickle.dumps({url: challenge for url, challenge in challenges.items() if challenge is not None})

    def resume(self, carried: bytes | None) -> None:
        # Checked as any challenge is: the SDK verifies its resource against the vault's host before use.
        if http_challenge_cache is None:
            return
        for url, challenge in (pickle.loads(carried) if carried else {}).items():
            http_challenge_cache.set_challenge_for_url(url, challenge)

    def describe(self, key: Hashable) -> str:
        vault_url, name, version = key  # type: ignore[misc]
        return f"vault {vault_url}, secret '{name}'" + (f" version {version}" if version else " (latest)")

    def fetch(self, key: Hashable, timeout: float) -> Fetched:
        vault_url, name, version = key  # type: ignore[misc]
        where = self.describe(key)
        try:
            secret = self._client(vault_url).get_secret(
                name,
                version,
                connection_timeout=min(CONNECT_TIMEOUT_S, timeout),
                read_timeout=timeout,
            )
            redactor.add(secret.value)
            properties = secret.properties  # read inside the try: the SDK parses attributes when they are read
            fetched = Fetched(
                secret.value if secret.value is not None else "",
                properties.version,
                expires_on=properties.expires_on,
                not_before=properties.not_before,
                content_type=properties.content_type,
            )
        except SidecarError:
            raise  # the identity's own, already explained
        except (ServiceRequestError, ServiceResponseError, IncompleteReadError) as exc:
            raise TransientError(
                UnavailableError(f"{where}: no answer from the vault ({type(exc).__name__}).")
            ) from None
        except DecodeError:  # not JSON, or not decodable (Content-Encoding)
            raise _bad_answer(where, "could not be decoded as JSON") from None
        except HttpResponseError as exc:
            raise self._failure(exc, where) from None
        except ValueError as exc:  # also DeserializationError, and "'...' is not a valid ID" for a bad `id`
            if not _refused_challenge(exc):
                raise _bad_answer(where, f"is not a secret bundle ({type(exc).__name__})") from None
            refusal = str(exc).split(". ")[0]  # the rest of the SDK's text advises turning the check off
            raise ConfigurationError(
                f"{where}: the vault's authentication challenge does not match its host ({refusal}); "
                "no token was sent for it.",
                fix="check that the vault URL is the vault's own DNS name.",
            ) from None
        except RecursionError:
            raise _bad_answer(where, "is JSON nested too deeply to read") from None
        except (AttributeError, TypeError) as exc:
            raise _bad_answer(where, f"is not a secret bundle ({type(exc).__name__})") from None
        for field, value in (("exp", fetched.expires_on), ("nbf", fetched.not_before)):
            if value is not None and not isinstance(value, datetime):
                raise _bad_answer(where, f"has an attributes.{field} that is not a Unix time")
        return fetched

    def _failure(self, exc: HttpResponseError, where: str) -> SidecarError | TransientError:
        status = exc.status_code or 0
        code, inner, message = _error_codes(exc)
        said = f"HTTP {status} {code}" + (f"/{inner}" if inner else "") + (f": {message}" if message else "")
        identity = self._identity.description
        if status == 404:
            return NotFoundError(
                f"{where}: not found ({said}).",
                fix="check the secret name and version, or create the secret in that vault.",
            )
        if status == 403 and inner == "SecretDisabled":
            return PermissionDeniedError(
                f"{where}: the secret is disabled ({said}).", fix="enable that secret version."
            )
        if status in (401, 403):
            # 403: the vault took the token and refused the identity, which a role assignment fixes
            # (or will, once a new one has propagated); 401: it refused the token itself.
            error_class = MissingRoleError if status == 403 else PermissionDeniedError
            return error_class(
                f"{where}: access denied to {identity} ({said}).",
                fix=f"assign the role '{SECRETS_USER_ROLE}' on the vault to {identity} "
                "(or grant it 'get' in the vault's access policies).",
            )
        if status in RETRYABLE_STATUSES:
            return TransientError(
                UnavailableError(f"{where}: {said}."), retry_after_seconds(exc.response.headers), status=status
            )
        return UnavailableError(f"{where}: unexpected answer {said}.", fix="see the vault's message above.")
