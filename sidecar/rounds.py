"""One resolution round in a short-lived forked process, so that the resident process stays small.

A long-running sidecar (supervise, render --watch) holds no SDK: azure-identity, msal,
azure-keyvault-secrets and requests would double its memory and leave threads behind. Each round
forks; the fork imports them, fetches, sends its report back through a pipe and exits, and its
memory goes with it. What the round needs (the parsed variables, the settings, the tokens and
pinned results carried from the last round) it inherits from the fork; only the report crosses
the pipe, pickled (both ends are this program, and the pipe is private to them).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
from collections.abc import Callable, Iterable

from sidecar.errors import InternalError, SidecarError
from sidecar.pipeline import Report
from sidecar.supervisor import exit_code


class Round:
    """A round under way: its pid, and the pipe its report comes through."""

    def __init__(self, work: Callable[[], Report], handled: Iterable[int]) -> None:
        handled = list(handled)
        read, write = os.pipe()
        # Blocked across the fork: until the round has let go of the supervisor's handlers and signal
        # pipe, a signal it got would read as the supervisor's own. Pending ones arrive when unblocked.
        signal.pthread_sigmask(signal.SIG_BLOCK, handled)
        try:
            pid = os.fork()
            if pid == 0:  # the round
                os.close(read)
                _run(work, write, handled)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        os.close(write)
        os.set_blocking(read, False)
        self.pid = pid
        self._pipe: int | None = read
        self._data = bytearray()
        self.exit_code: int | None = None  # set by the loop's reaper, or by wait()

    def fileno(self) -> int:
        assert self._pipe is not None
        return self._pipe

    def read(self) -> bool:
        """Take what the pipe holds; True once the round has closed it (sent everything, or died)."""
        assert self._pipe is not None
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._pipe, 1 << 16):
                self._data += chunk
            os.close(self._pipe)
            self._pipe = None
            return True
        return False

    def result(self) -> Report | SidecarError:
        """The round's report, or why there is none (after `read` returned True)."""
        if not self._data:
            return InternalError(
                f"the resolution round (pid {self.pid}) ended without a report (exit code {self.exit_code}).",
                fix="check the log lines above; if nothing explains it, report this as a sidecar bug.",
            )
        try:
            result = pickle.loads(self._data)
        except Exception:  # cut short: the round was killed while it sent its report
            result = None
        finally:
            self._data.clear()  # the values live on in the report only
        if not isinstance(result, Report | SidecarError):
            return InternalError(
                f"the resolution round (pid {self.pid}) sent an incomplete report (exit code {self.exit_code}).",
                fix="check the log lines above (a round killed by the system, e.g. out of memory?).",
            )
        return result

    def wait(self) -> None:
        """Reap the round, unless the loop's reaper already did (and set `exit_code`)."""
        if self.exit_code is None:
            self.exit_code = exit_code(os.waitpid(self.pid, 0)[1])

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None


def _run(work: Callable[[], Report], pipe: int, handled: Iterable[int]) -> None:
    """The forked round: do the work, send the report (or the error), and leave without cleanup."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for signum in handled:  # a signal to the round ends it; the loop sees it gone
            signal.signal(signum, signal.SIG_DFL)
        os.setpgid(0, 0)  # out of the supervisor's process group: a signal to that group is not for the round
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        try:
            result: Report | SidecarError = work()
        except SidecarError as error:
            result = error
        except Exception as error:
            result = InternalError.from_exception(error)
        data = memoryview(pickle.dumps(result))
        while data:
            data = data[os.write(pipe, data) :]
    except BaseException:
        code = InternalError.exit_code
    finally:
        os._exit(code)  # never return into the supervisor's loop; fetch threads a deadline left are dropped
