"""Fetch every planned secret: concurrent, retried, inside one deadline.

- Tokens are requested first, one per audience, while the fetches start.
- Per Key Vault, one fetch goes alone first so the SDK learns the vault's
  challenge once; the rest of that vault then fans out.
- Each fetch is retried here and only here (the SDKs' retries are off):
  transient answers (connection errors, timeouts, 408, 5xx) up to
  SIDECAR_MAX_ATTEMPTS, waiting what Retry-After / retry-after-ms /
  x-ms-retry-after-ms ask, else exponential backoff with full jitter; no
  retry may start after the deadline.
- A 429 slows the whole location (vault, workspace) down, not one fetch: see
  Pacer. 429s are bounded by the deadline, not by SIDECAR_MAX_ATTEMPTS.
- The workers are never joined: at the deadline the caller reports what did not
  finish and exits (or execs), whatever a stuck socket is doing. So a worker
  never lets an exception escape: every fetch ends with an Outcome.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tenacity import (
    RetryCallState,
    Retrying,
    wait_random_exponential,
)

from sidecar import logs
from sidecar.errors import MissingRoleError, SidecarError, UnavailableError
from sidecar.plan import FetchId, Plan
from sidecar.stores.base import Fetched, Store, TransientError

if TYPE_CHECKING:  # azure-identity is imported only by a run that has references
    from sidecar.identity import ManagedIdentity

log = logs.get_logger("sidecar.resolve")

BACKOFF_MULTIPLIER_S = 0.5
BACKOFF_MAX_S = 16.0
# Waiting for a role assignment: backoff with full jitter from 0.5 s, doubling up to 15 s (propagation takes
# minutes, so a request every 15 s or so costs nothing and starts the server soon after the role applies).
ROLE_WAIT_BACKOFF_S = 0.5
ROLE_WAIT_BACKOFF_MAX_S = 15.0
ROLE_WAIT_RESERVE_S = 5.0  # the role wait ends this long before the deadline (at most a quarter of it)


class Deadline:
    """The one deadline of a resolution, and the part of it a role assignment may be waited for.

    `role_wait`: SIDECAR_ROLE_WAIT, from the start; None where waiting does not apply (a refresh round,
    which the next round retries anyway). The wait ends a little before the deadline, so that the last
    attempt's refusal (77) is what is reported, not the deadline (69).
    """

    def __init__(self, seconds: float, role_wait: float | None = None) -> None:
        self.seconds = seconds
        self.role_wait = role_wait
        self._start = time.monotonic()
        self._end = self._start + seconds
        reserve_end = self._end - min(ROLE_WAIT_RESERVE_S, seconds / 4)
        self._role_end = min(self._start + (role_wait or 0.0), reserve_end)
        self.role_wait_cut = self._start + (role_wait or 0.0) > reserve_end  # the deadline ends the wait

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def role_wait_remaining(self) -> float:
        return max(0.0, self._role_end - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self._start


@dataclass
class Outcome:
    fetched: Fetched | None = None
    error: SidecarError | None = None
    attempts: int = 0
    ms: float = 0.0


THROTTLE_PAUSE_S = 0.05  # first pause after a 429 without Retry-After; doubles per remembered 429
THROTTLE_PAUSE_MAX_S = 2.0
THROTTLE_INCREASE = 0.1  # while 429s are remembered: about +1 in-flight per ten rounds of requests
THROTTLE_FORGET = 0.05  # each success fades one remembered 429 by this much

_jitter = wait_random_exponential(multiplier=BACKOFF_MULTIPLIER_S, max=BACKOFF_MAX_S)


def _throttled(error: BaseException | None) -> bool:
    return isinstance(error, TransientError) and error.status == 429


def _wait(state: RetryCallState) -> float:
    """A 429's wait is the pacer's; otherwise what the store asked for, else backoff with full jitter."""
    error = state.outcome.exception() if state.outcome else None
    if _throttled(error):
        return 0.0
    retry_after = getattr(error, "retry_after", None)
    return retry_after if retry_after is not None else _jitter(state)


class Pacer:
    """How many fetches to one location may be in flight, and when the next may start.

    Without 429s it holds nothing back (the pool caps concurrency). A 429 is the vault telling
    this client to slow down, so it applies to every fetch there (AIMD, as TCP does): the
    in-flight limit drops to 1 (once per round: 429s for requests sent before the last cut are
    the same signal); no fetch starts before Retry-After has passed (plus up to half again, so
    that replicas told the same do not return together), or without one before a jittered pause
    doubling per remembered 429; successes fade the memory and let the limit grow back. Each
    fetch retrying on its own timer instead kept every worker's request in the vault's queue:
    measured 2x the requests and 3x the vault's minimum time for a fleet (bench/RESULTS.md).
    """

    def __init__(self, limit: int) -> None:
        self._max = float(limit)
        self._limit = float(limit)
        self._threshold = float(limit)
        self._in_flight = 0
        self._resume_at = 0.0
        self._last_cut = 0.0
        self._strikes = 0.0
        self._changed = threading.Condition()

    def acquire(self, deadline: Deadline) -> float | None:
        """Wait for a slot: the time the request may go, or None if it cannot start before the deadline."""
        with self._changed:
            while True:
                now, remaining = time.monotonic(), deadline.remaining()
                if now < self._resume_at:
                    if self._resume_at - now >= remaining:
                        return None
                    self._changed.wait(self._resume_at - now)
                elif self._in_flight >= self._limit:
                    if remaining <= 0:
                        return None
                    self._changed.wait(remaining)
                else:
                    self._in_flight += 1
                    return now

    def release(self, sent: float, error: BaseException | None) -> None:
        with self._changed:
            self._in_flight -= 1
            now = time.monotonic()
            if _throttled(error):
                assert isinstance(error, TransientError)
                if sent >= self._last_cut:  # sent under the current limit: a new signal
                    self._threshold = max(1.0, self._limit / 2)
                    self._limit = 1.0
                    self._last_cut = now
                    self._strikes += 1
                if error.retry_after is not None:
                    pause = error.retry_after * random.uniform(1.0, 1.5)
                else:
                    pause = min(THROTTLE_PAUSE_MAX_S, THROTTLE_PAUSE_S * 2 ** max(0.0, self._strikes - 1))
                    pause *= random.uniform(0.5, 1.5)
                self._resume_at = max(self._resume_at, now + pause)
            elif error is None:
                if self._strikes:
                    increase = THROTTLE_INCREASE / self._limit
                elif self._limit < self._threshold:  # back to half the former limit, doubling per round
                    increase = 1.0
                else:
                    increase = 1.0 / self._limit
                self._limit = min(self._max, self._limit + increase)
                self._strikes = max(0.0, self._strikes - THROTTLE_FORGET)
            self._changed.notify_all()


def _role_wait_note(error: MissingRoleError, deadline: Deadline, waited: bool) -> None:
    """Say what waiting did, or that it might help."""
    if deadline.role_wait is None:
        return
    if waited:
        cut = f" (the deadline, SIDECAR_TIMEOUT={deadline.seconds:g}, ended it first)" if deadline.role_wait_cut else ""
        error.message += (
            f" Still refused after waiting {deadline.elapsed():.0f} s for a role assignment to propagate "
            f"(SIDECAR_ROLE_WAIT={deadline.role_wait:g}){cut}."
        )
    elif not deadline.role_wait:
        error.fix = (error.fix or "") + (
            " If the role was assigned in the last minutes, it may still be propagating: SIDECAR_ROLE_WAIT=600 "
            "(with SIDECAR_TIMEOUT above it) retries until it applies."
        )


def fetch_with_retries(
    store: Store,
    key: Hashable,
    deadline: Deadline,
    max_attempts: int,
    pacer: Pacer,
    waiting_for_role: Callable[[MissingRoleError], None] = lambda error: None,
) -> Outcome:
    """One fetch to its end: retried while transient, and while refused for a role within SIDECAR_ROLE_WAIT."""
    outcome = Outcome()
    start = time.monotonic()
    failures = 0  # transient failures other than 429: those count against max_attempts
    denials = 0  # refusals waited out for a role assignment: those are bounded by the role wait

    def retry(state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, MissingRoleError) and deadline.role_wait_remaining() > 0:
            if denials == 1:
                waiting_for_role(error)
            return True
        return isinstance(error, TransientError)

    def wait(state: RetryCallState) -> float:
        if isinstance(state.outcome.exception() if state.outcome else None, MissingRoleError):
            backoff = min(ROLE_WAIT_BACKOFF_MAX_S, ROLE_WAIT_BACKOFF_S * 2 ** (denials - 1))
            return min(random.uniform(0, backoff), deadline.role_wait_remaining())
        return _wait(state)

    def give_up(state: RetryCallState) -> bool:
        if isinstance(state.outcome.exception() if state.outcome else None, MissingRoleError):
            return False  # `retry` ends the wait when the role wait is over
        return failures >= max_attempts or (state.upcoming_sleep or 0) >= deadline.remaining()

    retrying = Retrying(stop=give_up, wait=wait, retry=retry, reraise=True)
    try:
        for attempt in retrying:
            with attempt:
                outcome.attempts += 1
                sent = pacer.acquire(deadline)
                if sent is None:
                    raise UnavailableError("the deadline passed before this fetch could start.")
                error: BaseException | None = None
                try:
                    outcome.fetched = store.fetch(key, deadline.remaining())
                except BaseException as exc:
                    error = exc
                    if isinstance(exc, TransientError) and exc.status != 429:
                        failures += 1
                    if isinstance(exc, MissingRoleError):
                        denials += 1
                    raise
                finally:
                    pacer.release(sent, error)
    except TransientError as exc:
        exc.error.message += f" Gave up after {outcome.attempts} attempt(s)."
        exc.error.fix = exc.error.fix or "check the store's health and the network, or raise SIDECAR_TIMEOUT."
        outcome.error = exc.error
    except SidecarError as exc:
        if isinstance(exc, MissingRoleError):
            _role_wait_note(exc, deadline, waited=denials > 1)
        outcome.error = exc
    except Exception as exc:
        # A failure the store did not anticipate (a bug, an answer of a shape nobody expected) must still end
        # this fetch now: lost in a worker, it would leave the run waiting for the deadline. Its type only:
        # an exception's text can quote the store's answer.
        outcome.error = UnavailableError(
            f"{store.describe(key)}: the fetch failed unexpectedly ({type(exc).__name__}); not retried.",
            fix="check that nothing between the sidecar and the store (a proxy, a SIDECAR_CONNECT_TO rule) answers "
            "in the store's place; if the store is genuine, report this as a sidecar bug.",
        )
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

    pacers = {(kind, location): Pacer(max_concurrency) for kind, groups in plan.fetches.items() for location in groups}

    announced: set[str] = set()  # variables already logged as waiting for a role assignment

    def waiting_for_role(fetch_id: FetchId, error: MissingRoleError) -> None:
        with lock:
            names = [name for name in plan.users[fetch_id] if name not in announced]
            announced.update(names)
        for name in names:
            log.warning(
                "waiting for a role assignment to propagate",
                variable=name,
                error=error.message,
                role_wait_s=deadline.role_wait,
                fix=error.fix,
            )

    def run(kind: str, key: Hashable) -> None:
        store = plan.stores[kind]
        pacer = pacers[(kind, store.location(key))]
        outcome = fetch_with_retries(
            store, key, deadline, max_attempts, pacer, lambda error: waiting_for_role((kind, key), error)
        )
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
        f"{store.describe(key)}: no answer within the deadline of {deadline.seconds:g} s.",
        fix="check the store's health and the network, or raise SIDECAR_TIMEOUT.",
    )


def _prefetch_token(identity: ManagedIdentity, audience: str) -> None:
    """Ask for the token early; a failure is kept by the identity and reported by each fetch that needs it."""
    with contextlib.suppress(SidecarError):
        identity.get_token(audience)
