"""The one small interface every secret store implements.

A store turns references into fetch keys (identical references share one key,
so one request), makes one attempt at a fetch, and picks a reference's value
out of what was fetched. Retries, concurrency and the deadline live in
`sidecar.resolve`, once for all stores.
"""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sidecar.errors import UnavailableError
from sidecar.references import Reference

# Statuses worth another attempt: the store is busy or briefly broken, not saying no.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Fetched:
    """What one fetch returned: the raw value (text, or a connection's JSON) and the version, if any."""

    value: Any
    version: str | None = None
    # Key Vault returns a secret outside its validity window all the same; the sidecar warns.
    expires_on: datetime | None = None
    not_before: datetime | None = None
    content_type: str | None = None


class TransientError(Exception):
    """One attempt failed in a way another attempt may fix; carries the error to report if none does."""

    def __init__(self, error: UnavailableError, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.status = status  # the HTTP status, if there was an answer (a 429 paces the whole location)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a 429/503 asks for: retry-after-ms, x-ms-retry-after-ms, then Retry-After (seconds or a date)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        try:
            return max(0.0, float(lowered[name]) / 1000)
        except (KeyError, ValueError):
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def json_object(load: Callable[[], Any]) -> tuple[dict[str, Any] | None, str]:
    """An answer's body as a JSON object, or None and what is wrong with it, in words that never quote it."""
    try:
        body = load()
    except RecursionError:
        return None, "is JSON nested too deeply to read"
    except ValueError:
        return None, "is not JSON"
    if not isinstance(body, dict):
        return None, "is not a JSON object"
    return body, ""


class Store(ABC):
    """A secret store: Key Vault, workspace connections."""

    kind: ClassVar[str]
    # Send one fetch per location before the others (Key Vault: learn the challenge once, not once per thread).
    first_fetch_alone: ClassVar[bool] = False

    @abstractmethod
    def key(self, reference: Reference) -> Hashable:
        """What identifies one fetch: references with equal keys are fetched once."""

    @abstractmethod
    def location(self, key: Hashable) -> str:
        """The vault or connection a key belongs to (for grouping and messages)."""

    def describe(self, key: Hashable) -> str:
        """What a fetch is, for messages: the store, its location and what is fetched there."""
        return f"{self.kind} {self.location(key)}"

    @abstractmethod
    def audience(self, key: Hashable) -> str:
        """The token scope the fetch needs, so that tokens can be requested ahead of the fetches."""

    @abstractmethod
    def fetch(self, key: Hashable, timeout: float) -> Fetched:
        """One attempt. Raise a SidecarError for a final answer, TransientError for one worth retrying."""

    def carry(self) -> bytes | None:
        """What this store learnt that the next round of a long-running sidecar may reuse.

        Bytes, opaque to others: the resident process keeps them without unpickling (or importing) SDK types.
        """
        return None

    def resume(self, carried: bytes | None) -> None:  # noqa: B027 (most stores learn nothing to carry)
        """Start from what an earlier round's `carry` returned."""

    def extract(self, reference: Reference, fetched: Fetched) -> str:
        """The reference's value out of what was fetched (raise NotFoundError for a missing part)."""
        return fetched.value
