"""PID 1 duties: the child in a process group of its own, signals passed on, every zombie reaped.

Signals arrive through a pipe (`signal.set_wakeup_fd`): the Python handlers do nothing, the
interpreter's C handler writes each signal's number to the pipe the moment it arrives, and the
one loop (sidecar.refresh) reads them in order. No signal is lost between two checks, and no
code of ours runs inside a handler. The handlers are installed before the first resolution, so
before the child exists.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Mapping, Sequence

from sidecar import logs

log = logs.get_logger("sidecar")

# What an operator or the runtime may send that belongs to the child.
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
TERMINATING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# Python ignores these at start; a child must get the default behaviour back (as subprocess does).
RESTORED_IN_CHILD = (signal.SIGPIPE, signal.SIGXFSZ)
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def _ignore(_signum: int, _frame: object) -> None:
    """The wakeup pipe already has the signal's number: nothing to do here."""


class SignalPipe:
    """The signals the loop handles, readable as numbers from one file descriptor."""

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self._read, write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for signum in (*signals, signal.SIGCHLD):
            signal.signal(signum, _ignore)

    def fileno(self) -> int:
        return self._read

    def read(self) -> list[int]:
        """The signals that arrived since the last read, oldest first."""
        numbers = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._read, 512):
                numbers += chunk
        return list(numbers)


def become_subreaper() -> bool:
    """Adopt the orphans of the child's descendants (PID 1 does so already), so that they are reaped here."""
    if os.getpid() == 1:
        return False
    import ctypes  # here: `sidecar exec` imports this module for RESTORED_IN_CHILD alone

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("not a subreaper", error=os.strerror(ctypes.get_errno()))
        return False
    return True


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N for a process killed by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def reap() -> dict[int, int]:
    """Every child that has ended since the last call: pid -> exit code (128+N for signal N)."""
    ended = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended[pid] = exit_code(status)


class Child:
    """The supervised command, leader of its own process group."""

    def __init__(self, path: str, argv: Sequence[str], env: Mapping[str, str], handled: Iterable[int]) -> None:
        # posix_spawn, not fork: nothing of the supervisor's runs in the child before the exec.
        self.pid = os.posix_spawn(
            path,
            list(argv),
            dict(env),
            setpgroup=0,
            setsigdef=(*RESTORED_IN_CHILD, *handled),
        )
        self.exit_code: int | None = None

    def signal_group(self, signum: int) -> None:
        """Signal the child and everything it started (that has not left its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def signal(self, signum: int) -> None:
        """Signal the child alone: a reload signal is the server's own, its workers may die of it."""
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)
