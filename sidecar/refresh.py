"""Keep values current: the loop of `sidecar supervise` (a child that gets them) and `render --watch` (files).

One thread and one loop, waiting on three things at once: signals (sidecar.supervisor.SignalPipe),
the round under way (sidecar.rounds), and the next timer (the next round, a restart waiting its
turn, a stop timeout). Between rounds nothing runs: no polling, no thread, no SDK in memory.

Each round re-reads only what can change (a Key Vault reference without a version, a connection),
through the same pipeline as `exec` (one token per audience, carried over between rounds; dedupe;
retries; the vault-wide 429 pacer; SIDECAR_TIMEOUT as the round's deadline). Each variable's new
value is compared in memory with the current one, and the round acts once, however many changed:
- nothing changed: nothing happens;
- changed files are rewritten atomically; then, per SIDECAR_ON_CHANGE, the child gets
  SIDECAR_RELOAD_SIGNAL or is restarted (a value held in the environment needs a restart: no
  signal can change a running process's environment); at most one restart per interval;
- a variable that failed keeps its current value, the child keeps running, the error is logged
  with its fix, and the rounds back off (2x, 4x the interval) until one succeeds.

Rounds are spread over time: the first comes 0.5 to 1.5 intervals after the start (splay: replicas
started together spread their reads over a whole interval), the next ones every interval +-10%
(jitter); an on-demand round (the reload signal sent to the sidecar) waits up to 5 s (a tenth of
an interval if that is less), so that a signal sent to every replica at once is not a burst.
"""

from __future__ import annotations

import math
import random
import select
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sidecar import logs
from sidecar.delivery import Delivery
from sidecar.environment import Resolution, child_environment
from sidecar.errors import InternalError, SidecarError, command_error, exit_code_for
from sidecar.logs import redactor
from sidecar.pipeline import Carried, Report, fetch_values, log_report, prepare_variables
from sidecar.references import Variable
from sidecar.rounds import Round
from sidecar.settings import RefreshSettings, Settings
from sidecar.supervisor import FORWARDED, TERMINATING, Child, SignalPipe, become_subreaper, reap

log = logs.get_logger("sidecar")

SPLAY = (0.5, 1.5)  # the first round, in intervals after the start
JITTER = 0.1  # each later round: interval * (1 +- JITTER)
ON_DEMAND_SPLAY_S = 5.0  # a round asked for by a signal: within this (or a tenth of an interval, if less)
MAX_BACKOFF_DOUBLINGS = 2  # after failed rounds: 2x, then 4x the interval
ROUND_GRACE_S = 10.0  # past SIDECAR_TIMEOUT, a round that has not reported is killed
# render --watch has no child: these end it (128+N).
WATCH_TERMINATING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


@dataclass
class Command:
    path: str  # found before anything is fetched
    argv: Sequence[str]


@dataclass
class Change:
    """What one round changed."""

    resolutions: dict[str, Resolution]  # the changed variables' new resolutions
    environment: bool  # a value held in the environment (or a variable's presence) changed
    files: bool  # a delivered file's contents changed (or it went away)


def compare(current: Mapping[str, Resolution], new: Iterable[Resolution]) -> tuple[Change, list[SidecarError]]:
    """The variables whose new value differs from the current one, and the failures (those keep theirs)."""
    change = Change({}, environment=False, files=False)
    failures: list[SidecarError] = []
    for resolution in new:
        if resolution.errors:
            failures += resolution.errors
            continue
        old = current[resolution.variable.name]
        environment = (old.value, old.unset) != (resolution.value, resolution.unset)
        files = old.file_data != resolution.file_data or (old.file_path is not None and environment)
        if environment or files:
            change.resolutions[resolution.variable.name] = resolution
            change.environment |= environment
            change.files |= files
    return change, failures


def log_failures(failures: Iterable[SidecarError]) -> None:
    """A round's failed variables: each keeps its current value."""
    for error in failures:
        log.error(
            "refresh failed",
            variable=error.variable,
            reference=error.reference,
            status=error.status,
            error=error.message,
            fix=error.fix,
            action="keeping the current value",
        )


def nothing_can_change(variables: Iterable[Variable]) -> bool:
    """Whether every reference names a Key Vault version, so that no round is ever needed (and say so)."""
    if any(reference.can_change for variable in variables for reference in variable.references):
        return False
    log.info("no refresh", reason="no reference can change: every one names a Key Vault version")
    return True


def first_round_delay(interval_s: float) -> float:
    return interval_s * random.uniform(*SPLAY)


def next_round_delay(interval_s: float, failed_rounds: int) -> float:
    backoff = 2 ** min(failed_rounds, MAX_BACKOFF_DOUBLINGS)
    return interval_s * backoff * random.uniform(1 - JITTER, 1 + JITTER)


def apply_change(current: dict[str, Resolution], change: Change, delivery: Delivery) -> bool:
    """Take a round's changes into `current` and rewrite the changed files; False if they could not be written."""
    for name, resolution in change.resolutions.items():
        log.info("changed", variable=name, versions=resolution.versions, destination=resolution.destination)
    current.update(change.resolutions)
    try:
        delivery.write(list(current.values()), changed=change.resolutions.keys())
    except SidecarError as error:
        log.error("refresh failed", variable=error.variable, error=error.message, fix=error.fix)
        return False
    return True


def _remember(report: Report) -> None:
    """The values and tokens a round sent are sensitive here too (the round registered them in its own memory)."""
    for resolution in report.resolutions:
        if resolution.variable.references and resolution.file_path is None:
            redactor.add(resolution.value)
        if resolution.file_data is not None:
            redactor.add(resolution.file_data.decode("utf-8", "replace"))
    if report.carried:
        for token, _ in report.carried.tokens.values():
            redactor.add(token)
        for fetched in report.carried.pinned.values():  # a pinned secret as fetched, before its options
            if isinstance(fetched.value, str):
                redactor.add(fetched.value)


class Refresher:
    """The loop. `command` None: render --watch (files only, no child)."""

    def __init__(
        self,
        env: Mapping[str, str],
        settings: Settings,
        refresh: RefreshSettings,
        delivery: Delivery,
        command: Command | None,
    ) -> None:
        self._handled = (*FORWARDED, signal.SIGCHLD)
        self._signals = SignalPipe(FORWARDED)  # first: no signal may be lost from here on
        if command is not None:
            become_subreaper()
        self._env = env
        self._settings = settings
        self._refresh = refresh
        self._delivery = delivery
        self._command = command
        self._variables: list[Variable] = []
        self._current: dict[str, Resolution] = {}
        self._carried: Carried | None = None
        self._child: Child | None = None
        self._round: Round | None = None
        self._round_killed_at = math.inf
        self._next_round_at = math.inf
        self._requested_at = math.inf  # a round asked for by the reload signal, not started yet
        self._restart_at = math.inf  # a restart waiting for its turn (at most one per interval)
        self._kill_at = math.inf  # a stopping child gets SIGKILL then
        self._stopping = False  # stopped for a restart: start the new child when it exits
        self._terminating = False  # a termination signal was passed on: leave when the child exits
        self._started_at = -math.inf
        self._failed_rounds = 0
        self._exit: int | None = None
        self._resolved = False  # the first round succeeded and the values were delivered
        self._first: Report | SidecarError | None = None  # the first round's result, for _resolve_first

    def run(self) -> int:
        """Resolve as exec does (failing the same way), start the child, then keep the values current."""
        report = self._resolve_first()
        if isinstance(report, int):
            return report
        self._resolved = True
        self._current = {resolution.variable.name: resolution for resolution in report.resolutions}
        self._delivery.write(report.resolutions)
        if self._command is not None:
            self._start_child()
        else:
            log.info("rendered", variables=len(report.resolutions))
        self._schedule_first_round()
        try:
            while self._exit is None:
                self._wait()
        except BaseException:
            # Leaving for an unexpected reason: stop the child rather than leave it without its parent.
            if self._child is not None and self._child.exit_code is None:
                self._child.signal_group(signal.SIGTERM)
            raise
        return self._exit

    def _resolve_first(self) -> Report | int:
        """The first resolution, or the exit code: what exec would exit with, or 128+N for a signal."""
        self._variables, errors = prepare_variables(self._env, self._settings, self._delivery)
        self._start_round()  # as exec: the well-formed references are fetched whatever else failed
        while self._exit is None and self._first is None:
            self._wait()
        if self._exit is not None:
            return self._exit
        report, self._first = self._first, None
        if isinstance(report, SidecarError):
            raise report
        assert report is not None
        self._accept(report)
        report.errors = errors + report.errors
        log_report(report)
        if report.errors:
            code = exit_code_for(report.errors)
            log.error("not starting", exit_code=code, failures=len(report.errors))
            return code
        return report

    # Waiting and dispatching

    def _wait(self) -> None:
        timers = (self._next_round_at, self._restart_at, self._kill_at, self._round_killed_at)
        timeout = max(0.0, min(timers) - time.monotonic()) if min(timers) < math.inf else None
        readable, _, _ = select.select([self._signals, *([self._round] if self._round else [])], [], [], timeout)
        for signum in self._signals.read():
            self._on_signal(signal.Signals(signum))
        self._reap()
        if self._round is not None and self._round in readable and self._round.read():
            self._on_round_end()
        self._on_timers(time.monotonic())
        if self._child is not None and self._child.exit_code is not None:
            self._on_child_exit(self._child.exit_code)

    def _reap(self) -> None:
        for pid, code in reap().items():
            if self._child is not None and pid == self._child.pid:
                self._child.exit_code = code
            elif self._round is not None and pid == self._round.pid:
                self._round.exit_code = code
            else:
                log.debug("reaped", pid=pid, exit_code=code)

    def _on_timers(self, now: float) -> None:
        if now >= self._round_killed_at and self._round is not None:
            self._kill_round()
            self._on_round_failed(
                f"the round did not report within SIDECAR_TIMEOUT ({self._settings.timeout_s:g} s) "
                f"+ {ROUND_GRACE_S:g} s and was killed",
                "check the network to the stores; lower SIDECAR_TIMEOUT if rounds should give up sooner.",
            )
        if now >= self._next_round_at and self._round is None:
            self._start_round()
        if now >= self._restart_at:
            self._stop_for_restart()
        if now >= self._kill_at and self._child is not None:
            log.warning(
                "stop timeout",
                pid=self._child.pid,
                timeout_s=self._refresh.stop_timeout_s,
                action="SIGKILL to its process group",
                fix="raise SIDECAR_STOP_TIMEOUT if the server needs longer to finish its requests.",
            )
            self._child.signal_group(signal.SIGKILL)
            self._kill_at = math.inf

    # Signals and the child

    def _on_signal(self, signum: signal.Signals) -> None:
        if signum == signal.SIGCHLD:
            return  # reaped right after
        if signum == self._refresh.reload_signal and self._resolved:
            if not self._terminating:
                self._refresh_soon(signum)
            return
        if self._child is None:  # before the child starts, or render --watch
            if signum in WATCH_TERMINATING:
                log.warning("signal", signal=signum.name, exit_code=128 + signum)
                self._leave(128 + signum)
            return
        log.info("signal", signal=signum.name, to="child process group", pid=self._child.pid)
        self._child.signal_group(signum)
        if signum in TERMINATING:
            self._terminating = True
            self._restart_at = math.inf
            self._next_round_at = math.inf
            if self._round is not None:
                self._kill_round()

    def _start_child(self) -> None:
        assert self._command is not None
        env = child_environment(self._env, list(self._current.values()))
        try:
            self._child = Child(self._command.path, self._command.argv, env, self._handled)
        except OSError as exc:
            raise command_error(exc, self._command.argv[0]) from None
        self._started_at = time.monotonic()
        log.info("started", command=self._command.argv[0], pid=self._child.pid)

    def _on_child_exit(self, code: int) -> None:
        assert self._child is not None
        if self._stopping and not self._terminating:
            log.info("stopped for restart", pid=self._child.pid, exit_code=code)
            self._stopping = False
            self._kill_at = math.inf
            self._start_child()
            return
        log.info("child exited", pid=self._child.pid, exit_code=code)
        self._leave(code)

    def _stop_for_restart(self) -> None:
        self._restart_at = math.inf
        assert self._child is not None
        log.info(
            "restarting",
            pid=self._child.pid,
            stop_signal=self._refresh.stop_signal.name,
            stop_timeout_s=self._refresh.stop_timeout_s,
        )
        self._stopping = True
        self._kill_at = time.monotonic() + self._refresh.stop_timeout_s
        self._child.signal_group(self._refresh.stop_signal)

    def _leave(self, code: int) -> None:
        if self._round is not None:
            self._kill_round()
        self._exit = code

    # Rounds

    def _schedule_first_round(self) -> None:
        if nothing_can_change(self._variables):
            return
        delay = first_round_delay(self._refresh.interval_s)
        self._next_round_at = time.monotonic() + delay
        log.info(
            "refresh",
            interval_s=self._refresh.interval_s,
            first_in_s=round(delay, 1),
            on_change=self._refresh.on_change,
            reload_signal=self._refresh.reload_signal.name if self._refresh.reload_signal else None,
        )

    def _schedule_next_round(self) -> float:
        delay = next_round_delay(self._refresh.interval_s, self._failed_rounds)
        self._next_round_at = min(time.monotonic() + delay, self._requested_at)
        return max(0.0, self._next_round_at - time.monotonic())

    def _refresh_soon(self, signum: signal.Signals) -> None:
        delay = random.uniform(0, min(ON_DEMAND_SPLAY_S, self._refresh.interval_s / 10))
        self._requested_at = min(self._requested_at, time.monotonic() + delay)
        self._next_round_at = min(self._next_round_at, self._requested_at)  # after the round under way, if any
        log.info("refresh requested", signal=signum.name, in_s=round(delay, 2))

    def _start_round(self) -> None:
        self._next_round_at = math.inf
        if time.monotonic() >= self._requested_at:
            self._requested_at = math.inf
        # The work runs in the fork at once, on the fork's copy of this state.
        self._round = Round(
            lambda: fetch_values(self._variables, self._env, self._settings, self._delivery, self._carried),
            self._handled,
        )
        self._round_killed_at = time.monotonic() + self._settings.timeout_s + ROUND_GRACE_S

    def _end_round(self) -> Round:
        """The round under way, reaped and no longer under way."""
        assert self._round is not None
        ended, self._round = self._round, None
        ended.wait()
        self._round_killed_at = math.inf
        return ended

    def _kill_round(self) -> None:
        assert self._round is not None
        self._round.kill()
        self._end_round()

    def _on_round_end(self) -> None:
        result = self._end_round().result()
        if not self._resolved:
            self._first = result
            return
        if isinstance(result, SidecarError):
            self._on_round_failed(result.message, result.fix)
            return
        try:
            self._on_refreshed(result)
        except Exception as error:  # a bug in handling a refresh must not take the running server down
            internal = InternalError.from_exception(error)
            self._on_round_failed(internal.message, internal.fix)

    def _accept(self, report: Report) -> None:
        """Take a round's report: its values are sensitive here too, its `carried` is for the next round."""
        _remember(report)
        self._carried = report.carried

    def _on_round_failed(self, error: str, fix: str | None) -> None:
        self._failed_rounds += 1
        delay = self._schedule_next_round()
        log.error(
            "refresh failed",
            error=error,
            fix=fix,
            action="keeping every current value and the running server",
            next_in_s=round(delay, 1),
        )

    def _on_refreshed(self, report: Report) -> None:
        self._accept(report)
        change, failures = compare(self._current, report.resolutions)
        log_failures(failures)
        for warning in (w for r in change.resolutions.values() for w in r.warnings):
            log.warning("warning", warning=warning)
        self._failed_rounds = self._failed_rounds + 1 if failures else 0
        if change.resolutions:
            self._apply(change)
        delay = self._schedule_next_round()
        log.info(
            "refreshed",
            fetches=report.fetches,
            token_requests=report.token_requests,
            changed=len(change.resolutions),
            failed=len({error.variable for error in failures}),
            ms=round(report.ms, 1),
            next_in_s=round(delay, 1),
        )

    def _apply(self, change: Change) -> None:
        if not apply_change(self._current, change, self._delivery):
            self._failed_rounds += 1
            return
        if self._child is not None:
            self._act(change)

    def _act(self, change: Change) -> None:
        """One action for the round's changes: nothing, the reload signal, or a restart."""
        assert self._child is not None
        mode, reload_signal = self._refresh.on_change, self._refresh.reload_signal
        restart = mode == "restart" or (
            mode == "auto" and (change.environment or (change.files and reload_signal is None))
        )
        if restart:
            if self._restart_at == math.inf and not self._stopping:
                self._restart_at = max(time.monotonic(), self._started_at + self._refresh.interval_s)
                waits = self._restart_at - time.monotonic()
                if waits > 0:
                    log.info("restart waits", in_s=round(waits, 1), reason="at most one restart per interval")
            return
        if change.environment:
            log.warning(
                "not applied",
                variables=sorted(name for name, r in change.resolutions.items() if r.file_path is None),
                reason=f"SIDECAR_ON_CHANGE={mode}: the running server keeps the environment it started with",
                fix="deliver these values as files ('?file') and re-read them on the reload signal, or set "
                "SIDECAR_ON_CHANGE=auto to restart the server on such a change.",
            )
        if change.files and mode in ("auto", "signal") and reload_signal is not None:
            log.info("reload", signal=reload_signal.name, pid=self._child.pid)
            self._child.signal(reload_signal)
