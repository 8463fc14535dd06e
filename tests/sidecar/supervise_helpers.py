"""A long-running sidecar (supervise, render --watch) under test: started, watched through its logs, stopped.

Every wait is bounded and fails with what was awaited and the sidecar's log; nothing sleeps to
synchronise. Whatever the sidecar printed is checked for secret values when it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from sidecar_helpers import WORKSPACE, assert_no_leak

PROBE = Path(__file__).with_name("child_probe.py")
WAIT_S = 30.0  # any one awaited event; rounds come every 1-2 s in these tests
POLL_S = 0.02


class Supervised:
    def __init__(self, argv: list[str], env: dict[str, str], directory: Path, secrets: Collection[str]) -> None:
        self.stdout_path = directory / "sidecar.stdout"
        self.stderr_path = directory / "sidecar.stderr"
        self.events_path = directory / "child.events"
        self._secrets = set(secrets)
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
        self.pid = self.process.pid

    def add_secrets(self, *values: str) -> None:
        """Values the test puts into the store later (new versions): they must not appear either."""
        self._secrets.update(values)

    # What happened

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def events(self, name: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """The sidecar's JSON log events, optionally only those with this event name and fields."""
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if (name is None or event.get("event") == name) and all(event.get(k) == v for k, v in match.items()):
                    found.append(event)
        return found

    def child_events(self, name: str | None = None, path: Path | None = None) -> list[dict[str, Any]]:
        path = path or self.events_path
        if not path.exists():
            return []
        events = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [event for event in events if name is None or event["event"] == name]

    # Waiting

    def wait_for(self, check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        """Poll `check` until it returns something true, at most `timeout` seconds."""
        end = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > end:
                self._leak_check()
                raise AssertionError(f"waited {timeout:g} s for {what}; the sidecar's log:\n{self.log()[-6000:]}")
            time.sleep(POLL_S)

    def wait_event(self, name: str, count: int = 1, **match: Any) -> list[dict[str, Any]]:
        return self.wait_for(
            lambda: (found := self.events(name, **match)) and len(found) >= count and found,
            f"{count} '{name}' event(s) {match or ''}",
        )

    def wait_child(self, name: str, count: int = 1, path: Path | None = None) -> list[dict[str, Any]]:
        return self.wait_for(
            lambda: (found := self.child_events(name, path)) and len(found) >= count and found,
            f"{count} '{name}' event(s) of the child",
        )

    def wait_rounds(self, count: int) -> None:
        """Until `count` more rounds have ended (refreshed or failed) from now."""
        done = len(self.events("refreshed")) + len(self.events("refresh failed", variable=None))
        self.wait_for(
            lambda: len(self.events("refreshed")) + len(self.events("refresh failed", variable=None)) >= done + count,
            f"{count} more refresh round(s)",
        )

    # Ending

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self._leak_check()
            raise AssertionError(
                f"the sidecar did not exit within {timeout:g} s; its log:\n{self.log()[-6000:]}"
            ) from None
        self._leak_check()
        return code

    def stop(self) -> None:
        """Kill whatever is left: the sidecar, and every child it started (each leads a group of its own)."""
        groups = {self.pid} | {event["pgid"] for event in self.child_events("start")}
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        self.process.wait()
        self._leak_check()

    def _leak_check(self) -> None:
        assert_no_leak(self.stdout_path.read_text(errors="replace") + self.log(), self._secrets)


def supervise_argv(command: str, cmd: list[str] | None = None, *args: str) -> list[str]:
    argv = [sys.executable, "-m", "sidecar", command, *args]
    return argv + (["--", *cmd] if cmd is not None else [])


def probe(directory: Path, *args: str) -> list[str]:
    """The child_probe command, recording into DIRECTORY/child.events (Supervised.child_events)."""
    return [sys.executable, str(PROBE), str(directory / "child.events"), *args]


@contextlib.contextmanager
def supervised(
    emulator: Any,
    tmp_path: Path,
    secrets: Collection[str],
    env: dict[str, str],
    *,
    command: str = "supervise",
    cmd: list[str] | None = None,
    args: tuple[str, ...] = (),
    interval: str = "1",
) -> Iterator[Supervised]:
    """Start the sidecar against the emulator (refresh every `interval` s), JSON logs; kill whatever is left."""
    full_env = {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "HOME": str(tmp_path),
        **emulator.env("imds"),
        **WORKSPACE,
        "SIDECAR_REFRESH_INTERVAL": interval,
        **env,
    }
    run = Supervised(supervise_argv(command, cmd, *args), full_env, tmp_path, secrets)
    try:
        yield run
    finally:
        run.stop()
