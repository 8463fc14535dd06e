"""Injected faults (latency, status codes, connection resets, hangs) and the per-vault throttle."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("imds", "msi", "entra", "keyvault", "arm", "any")
MAX_HANG_S = 300.0  # a hang is for timeout tests; never hold a thread longer than this
FAULT_KEYS = {
    "kind",
    "host",
    "path",
    "latency_ms",
    "status",
    "count",
    "retry_after",
    "retry_after_ms",
    "x_ms_retry_after_ms",
    "reset",
    "hang_s",
}


@dataclass(frozen=True)
class Fault:
    kind: str
    host: str | None
    path: re.Pattern[str] | None  # searched in the request path (without the query)
    latency_ms: int
    status: int | None
    reset: bool
    hang_s: float | None
    count: int | None  # how many matching requests it affects; None: every one
    retry_after: int | None
    retry_after_ms: int | None
    x_ms_retry_after_ms: int | None

    def matches(self, kind: str, host: str, path: str) -> bool:
        return (
            self.kind in ("any", kind)
            and (self.host is None or self.host == host)
            and (self.path is None or self.path.search(path) is not None)
        )

    def retry_headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.retry_after_ms)
        if self.x_ms_retry_after_ms is not None:
            headers["x-ms-retry-after-ms"] = str(self.x_ms_retry_after_ms)
        return headers

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind}
        for key in ("host", "status", "hang_s", "retry_after", "retry_after_ms", "x_ms_retry_after_ms"):
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        if self.path is not None:
            spec["path"] = self.path.pattern
        if self.latency_ms:
            spec["latency_ms"] = self.latency_ms
        if self.reset:
            spec["reset"] = True
        spec["count"] = self.count
        return spec


def parse_fault(spec: Any) -> Fault:
    """A Fault from its fixture/admin form; ValueError says what is wrong."""
    if not isinstance(spec, Mapping):
        raise ValueError("a fault must be a mapping")
    unknown = set(spec) - FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; allowed: {sorted(FAULT_KEYS)}")
    kind = spec.get("kind", "any")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    status = _optional_int(spec, "status", 100, 599)
    reset = spec.get("reset", False)
    if not isinstance(reset, bool):
        raise ValueError("reset must be true or false")
    hang_s = spec.get("hang_s")
    if hang_s is not None and (not isinstance(hang_s, (int, float)) or not 0 < hang_s <= MAX_HANG_S):
        raise ValueError(f"hang_s must be a number of seconds in (0, {MAX_HANG_S:g}]")
    effects = [name for name, on in (("status", status is not None), ("reset", reset), ("hang_s", hang_s)) if on]
    if len(effects) > 1:
        raise ValueError(f"choose one of status, reset and hang_s, got {effects}")
    latency_ms = _optional_int(spec, "latency_ms", 0, 600_000) or 0
    if not effects and not latency_ms:
        raise ValueError("a fault needs latency_ms, status, reset or hang_s")
    # A status/reset/hang affects the next request by default; pure latency affects all of them.
    count = spec.get("count", 1 if effects else None)
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ValueError(f"count must be a positive integer or null, got {count!r}")
    path = spec.get("path")
    try:
        pattern = re.compile(path) if path is not None else None
    except re.error as exc:
        raise ValueError(f"path is not a valid regular expression: {exc}") from None
    host = spec.get("host")
    return Fault(
        kind=kind,
        host=host.lower() if isinstance(host, str) else None,
        path=pattern,
        latency_ms=latency_ms,
        status=status,
        reset=reset,
        hang_s=float(hang_s) if hang_s is not None else None,
        count=count,
        retry_after=_optional_int(spec, "retry_after", 0, 86400),
        retry_after_ms=_optional_int(spec, "retry_after_ms", 0, 86_400_000),
        x_ms_retry_after_ms=_optional_int(spec, "x_ms_retry_after_ms", 0, 86_400_000),
    )


def _optional_int(spec: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value


class FaultTable:
    """The active faults; the first one matching a request applies, and uses up one of its count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[list[Any]] = []  # [fault, remaining or None]

    def replace(self, faults: list[Fault]) -> None:
        with self._lock:
            self._faults = [[fault, fault.count] for fault in faults]

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append([fault, fault.count])

    def take(self, kind: str, host: str, path: str) -> Fault | None:
        if not self._faults:  # the common case: no lock on the hot path
            return None
        with self._lock:
            for entry in self._faults:
                fault, remaining = entry
                if remaining != 0 and fault.matches(kind, host, path):
                    if remaining is not None:
                        entry[1] = remaining - 1
                    return fault
        return None

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(fault.to_spec(), remaining=remaining) for fault, remaining in self._faults]


@dataclass(frozen=True)
class ThrottleRule:
    limit: int  # GETs admitted per window...
    window_s: float  # ...refilled continuously (a token bucket holding `limit`)
    retry_after: float | None  # seconds for the 429's Retry-After header; None: no header

    def retry_after_header(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


# Key Vault's documented service limit for secret GETs: 4,000 per 10 seconds per vault.
KEY_VAULT_LIMIT = ThrottleRule(limit=4000, window_s=10.0, retry_after=None)


def parse_throttle_rule(spec: Any) -> ThrottleRule:
    if not isinstance(spec, Mapping):
        raise ValueError("must be a mapping with limit, window_s and optionally retry_after")
    unknown = set(spec) - {"limit", "window_s", "retry_after"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    limit = spec.get("limit", KEY_VAULT_LIMIT.limit)
    window_s = spec.get("window_s", KEY_VAULT_LIMIT.window_s)
    retry_after = spec.get("retry_after")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if not isinstance(window_s, (int, float)) or window_s <= 0:
        raise ValueError(f"window_s must be a positive number, got {window_s!r}")
    if retry_after is not None and (not isinstance(retry_after, (int, float)) or retry_after < 0):
        raise ValueError(f"retry_after must be a non-negative number or null, got {retry_after!r}")
    return ThrottleRule(limit=limit, window_s=float(window_s), retry_after=retry_after)


class Throttle:
    """Per-vault token buckets. A request that gets a 429 takes no token: 429s don't count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._default = KEY_VAULT_LIMIT
        self._rules: dict[str, ThrottleRule] = {}
        self._buckets: dict[str, list[float]] = {}  # vault -> [tokens, last refill time]

    def configure(self, default: ThrottleRule, per_vault: dict[str, ThrottleRule]) -> None:
        with self._lock:
            self._default, self._rules, self._buckets = default, dict(per_vault), {}

    def set_rule(self, vault: str | None, rule: ThrottleRule) -> None:
        """Set one vault's rule, or (vault None) the default and drop every per-vault rule."""
        with self._lock:
            if vault is None:
                self._default, self._rules, self._buckets = rule, {}, {}
            else:
                self._rules[vault] = rule
                self._buckets.pop(vault, None)

    def admit(self, vault: str) -> tuple[bool, ThrottleRule]:
        now = time.monotonic()
        with self._lock:
            rule = self._rules.get(vault, self._default)
            bucket = self._buckets.setdefault(vault, [float(rule.limit), now])
            rate = rule.limit / rule.window_s
            bucket[0] = min(float(rule.limit), bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return True, rule
            return False, rule

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "default": vars(self._default).copy(),
                "vaults": {name: vars(rule).copy() for name, rule in self._rules.items()},
            }
