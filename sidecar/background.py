"""`sidecar.load(refresh=...)`: keep values current from a thread inside the host's process.

The same rounds as `sidecar supervise` (sidecar.refresh): the same resolution (`fetch_values`, with tokens,
pinned results and the vault's challenge carried over), the same comparison, the same schedule (a first
round 0.5-1.5 intervals after the start, then every interval +-10%, backing off to 2x and 4x after failed
rounds), files rewritten atomically. What differs is where values go: into a mapping the caller reads
(`Current`), never into os.environ, which no thread may write while others read it. A round runs in the
thread, not in a fork: forking a process whose other threads hold locks (a web server's) is not safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType

from sidecar import logs
from sidecar.delivery import Delivery
from sidecar.environment import Resolution
from sidecar.pipeline import Carried, fetch_values
from sidecar.refresh import (
    apply_change,
    compare,
    first_round_delay,
    log_failures,
    next_round_delay,
    nothing_can_change,
)
from sidecar.settings import Settings

log = logs.get_logger("sidecar")

OnChange = Callable[[list[str]], None]


class Current(Mapping[str, str]):
    """Each resolved variable's current value (a `?file` reference: the file's path), kept current by a
    background thread while `refreshing`. Reads are safe from any thread: each round swaps in a new mapping.
    """

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values: Mapping[str, str] = MappingProxyType(dict(values))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:  # names only: the values are secrets
        return f"<sidecar.Current {sorted(self._values)}{' refreshing' if self.refreshing else ''}>"

    @property
    def refreshing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        """End the refresh after the round under way (waiting for it up to `timeout` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def values(resolutions: Iterable[Resolution]) -> dict[str, str]:
    """Each resolved variable's value as the caller sees it (unset ones are absent)."""
    return {r.variable.name: r.value for r in resolutions if not r.unset and r.value is not None}


class Rounds:
    """The refresh rounds of one load(), in a daemon thread (`start`)."""

    def __init__(
        self,
        current: Current,
        resolutions: list[Resolution],
        carried: Carried | None,
        env: Mapping[str, str],
        settings: Settings,
        delivery: Delivery,
        interval_s: float,
        on_change: OnChange | None,
    ) -> None:
        self._current = current
        self._resolutions = {r.variable.name: r for r in resolutions}
        self._variables = [r.variable for r in resolutions]
        self._carried = carried
        self._env = dict(env)  # as at the first load: the references, not the values it set
        self._settings = settings
        self._delivery = delivery
        self._interval_s = interval_s
        self._on_change = on_change
        self._failed_rounds = 0

    def start(self) -> None:
        """Start the rounds (none when no reference can change: each names a Key Vault version)."""
        if nothing_can_change(self._variables):
            return
        self._current._thread = threading.Thread(target=self._run, name="sidecar-refresh", daemon=True)
        self._current._thread.start()

    def _run(self) -> None:
        delay = first_round_delay(self._interval_s)
        log.info("refresh", interval_s=self._interval_s, first_in_s=round(delay, 1), into="the returned mapping")
        while not self._current._stop.wait(delay):
            try:
                self._round()
            except Exception as error:  # a bug must not end the thread silently: say where, never what
                self._failed_rounds += 1
                log.error("refresh failed", error=type(error).__name__, action="keeping every current value")
            delay = next_round_delay(self._interval_s, self._failed_rounds)

    def _round(self) -> None:
        # In this process the resolution registers every value and token with the redactor itself.
        report = fetch_values(self._variables, self._env, self._settings, self._delivery, self._carried)
        self._carried = report.carried
        change, failures = compare(self._resolutions, report.resolutions)
        log_failures(failures)
        self._failed_rounds = self._failed_rounds + 1 if failures else 0
        if not change.resolutions:
            return
        if not apply_change(self._resolutions, change, self._delivery):
            self._failed_rounds += 1
            return
        self._current._values = MappingProxyType(values(self._resolutions.values()))
        if self._on_change is not None:
            try:
                self._on_change(sorted(change.resolutions))
            except Exception as error:  # the host's callback: its failure is the host's to handle
                log.error("on_change failed", error=type(error).__name__, at="the callback passed to sidecar.load")
