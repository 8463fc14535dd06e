"""Fetch every planned secret: concurrent, retried, inside one deadline.

- Tokens are requested first, one per audience, while the fetches start.
- Per Key Vault, one fetch goes alone first so the SDK learns the vault's
  challenge once; the rest of that vault then fans out.
- Each fetch is retried here and only here (the SDKs' retries are off):
  transient answers (connection errors, timeouts, 408, 429, 5xx) up to
  SIDECAR_MAX_ATTEMPTS, waiting what Retry-After / retry-after-ms /
  x-ms-retry-after-ms ask, else exponential backoff with full jitter; no
  retry may start after the deadline.
- The workers are never joined: at the deadline the caller reports what did not
  finish and exits (or execs), whatever a stuck socket is doing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from sidecar.errors import SidecarError, UnavailableError
from sidecar.plan import FetchId, Plan
from sidecar.stores.base import Fetched, Store, TransientError

if TYPE_CHECKING:  # azure-identity is imported only by a run that has references
    from sidecar.identity import ManagedIdentity

log = structlog.get_logger("sidecar.resolve")

BACKOFF_MULTIPLIER_S = 0.5
BACKOFF_MAX_S = 16.0


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())


@dataclass
class Outcome:
    fetched: Fetched | None = None
    error: SidecarError | None = None
    attempts: int = 0
    ms: float = 0.0


_jitter = wait_random_exponential(multiplier=BACKOFF_MULTIPLIER_S, max=BACKOFF_MAX_S)


def _wait(state: RetryCallState) -> float:
    """What the store asked for, else exponential backoff with full jitter."""
    error = state.outcome.exception() if state.outcome else None
    retry_after = getattr(error, "retry_after", None)
    return retry_after if retry_after is not None else _jitter(state)


def fetch_with_retries(store: Store, key: Hashable, deadline: Deadline, max_attempts: int) -> Outcome:
    outcome = Outcome()
    start = time.monotonic()

    def past_deadline(state: RetryCallState) -> bool:
        return (state.upcoming_sleep or 0) >= deadline.remaining()

    retrying = Retrying(
        stop=stop_after_attempt(max_attempts) | past_deadline,
        wait=_wait,
        retry=retry_if_exception_type(TransientError),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                outcome.attempts += 1
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise UnavailableError("the deadline passed before this fetch could start.")
                outcome.fetched = store.fetch(key, remaining)
    except TransientError as exc:
        exc.error.message += f" Gave up after {outcome.attempts} attempt(s)."
        exc.error.fix = exc.error.fix or "check the store's health and the network, or raise SIDECAR_TIMEOUT."
        outcome.error = exc.error
    except SidecarError as exc:
        outcome.error = exc
    outcome.ms = (time.monotonic() - start) * 1000
    return outcome


def fetch_all(
    plan: Plan, identity: ManagedIdentity, deadline: Deadline, *, max_concurrency: int, max_attempts: int
) -> dict[FetchId, Outcome]:
    outcomes: dict[FetchId, Outcome] = {}
    lock = threading.Lock()
    all_done = threading.Event()
    total = plan.fetch_count
    pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="sidecar-fetch")

    def run(kind: str, key: Hashable) -> None:
        store = plan.stores[kind]
        outcome = fetch_with_retries(store, key, deadline, max_attempts)
        with lock:
            outcomes[(kind, key)] = outcome
            if len(outcomes) == total:
                all_done.set()

    def run_group(kind: str, keys: list[Hashable]) -> None:
        run(kind, keys[0])
        for key in keys[1:]:
            pool.submit(run, kind, key)

    if total == 0:
        return outcomes
    for audience in plan.audiences:
        pool.submit(_prefetch_token, identity, audience)
    for kind, groups in plan.fetches.items():
        store = plan.stores[kind]
        for keys in groups.values():
            if store.first_fetch_alone:
                pool.submit(run_group, kind, keys)
            else:
                for key in keys:
                    pool.submit(run, kind, key)
    finished = all_done.wait(timeout=deadline.remaining())
    pool.shutdown(wait=False, cancel_futures=True)
    if not finished:
        with lock:
            for kind, groups in plan.fetches.items():
                store = plan.stores[kind]
                for keys in groups.values():
                    for key in keys:
                        if (kind, key) not in outcomes:
                            outcomes[(kind, key)] = Outcome(error=_deadline_error(store, key, identity, deadline))
    return dict(outcomes)


def _deadline_error(store: Store, key: Hashable, identity: ManagedIdentity, deadline: Deadline) -> SidecarError:
    audience = store.audience(key)
    if not identity.has_token(audience):
        return identity.deadline_error(audience, deadline.seconds)
    return UnavailableError(
        f"{store.location(key)}: no answer within the deadline of {deadline.seconds:g} s.",
        fix="check the store's health and the network, or raise SIDECAR_TIMEOUT.",
    )


def _prefetch_token(identity: ManagedIdentity, audience: str) -> None:
    """Ask for the token early; a failure is kept by the identity and reported by each fetch that needs it."""
    with contextlib.suppress(SidecarError):
        identity.get_token(audience)
