"""The real Azure ML inference server (azmlinfsrv) under `sidecar supervise`: its venv, the server, a load.

The server runs from a virtualenv of docker/example/requirements.txt (the example image's pins),
built once under .cache/ and reused while that file is unchanged. The load posts to /score on a
fixed schedule, each request on a new connection and its own thread (an open loop: a stalled
server does not slow the schedule down), and records every outcome. Nothing here ever holds a
secret value: /score answers lengths.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from supervise_helpers import Supervised, supervised

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "docker" / "example" / "requirements.txt"
# For a scoring script that calls sidecar.load(): the server's pins plus the sidecar's runtime lock (no conflict:
# the shared packages have the same pins); the sidecar itself comes from the repository (PYTHONPATH).
WITH_SIDECAR = (REQUIREMENTS, REPO / "requirements.txt")
ENTRY_SCRIPT = REPO / "docker" / "example" / "score_files.py"
COMPLETE = ".complete"  # written last into a venv that installed completely, before it is renamed into place
INSTALL_TIMEOUT_S = 900
READY_TIMEOUT_S = 60.0  # azmlinfsrv's start: about 2 s here
REQUEST_TIMEOUT_S = 30.0  # far above any stall; a request that takes this long counts as failed


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def venv_path(requirements: tuple[Path, ...] = (REQUIREMENTS,)) -> Path:
    """.cache/azmlinfsrv-<sha256 of the requirements>-py<X><Y>: a venv is tied to its interpreter's version."""
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in requirements)).hexdigest()[:16]
    return REPO / ".cache" / f"azmlinfsrv-{digest}-py{sys.version_info.major}{sys.version_info.minor}"


def _relocate_scripts(bin_dir: Path, old: Path, new: Path) -> None:
    """Point the scripts' interpreter lines (pip writes absolute ones) at the venv's final place."""
    for script in bin_dir.iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        content = script.read_bytes()
        if content.startswith(b"#!") and bytes(old) in content[:1024]:
            script.write_bytes(content.replace(bytes(old), bytes(new)))


class VenvUnavailable(RuntimeError):
    """The venv could not be built (no package index?); the message says why, with pip's last lines."""


def build_venv(requirements: tuple[Path, ...] = (REQUIREMENTS,)) -> Path:
    """The azmlinfsrv venv: reused when complete, else built in a temporary directory and renamed into place.

    Installing needs PyPI (or the pip configuration's index); VenvUnavailable says why it failed.
    The bench (bench/rotation.py) builds the same venv through this function.
    """
    final = venv_path(requirements)
    if (final / COMPLETE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".building", dir=final.parent))
    try:
        steps = [
            [sys.executable, "-m", "venv", str(building)],
            [
                str(building / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-input",
                "--disable-pip-version-check",
                "--no-deps",
                *(argument for path in requirements for argument in ("-r", str(path))),
            ],
        ]
        for step in steps:
            try:
                done = subprocess.run(
                    step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL
                )
            except subprocess.TimeoutExpired:
                raise VenvUnavailable(f"'{' '.join(step[-4:])}' took more than {INSTALL_TIMEOUT_S} s") from None
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
                raise VenvUnavailable(
                    f"creating the azmlinfsrv venv failed (exit {done.returncode}) at {step[2:4]}:\n{tail}"
                )
        _relocate_scripts(building / "bin", building, final)
        pins = "".join(path.read_text() for path in requirements)
        (building / COMPLETE).write_text(f"{pins}\n# built with {sys.version}\n")
        try:
            os.rename(building, final)
        except OSError:
            if not (final / COMPLETE).is_file():  # not another session's complete venv: a broken leftover
                shutil.rmtree(final)
                os.rename(building, final)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def venv_or_skip(requirements: tuple[Path, ...] = (REQUIREMENTS,)) -> Path:
    """build_venv() for a test: without the venv, the test fails under CI and is skipped elsewhere."""
    try:
        return build_venv(requirements)
    except VenvUnavailable as error:
        if in_ci():
            pytest.fail(f"the azmlinfsrv tests cannot run under CI: {error}", pytrace=False)
        pytest.skip(f"the azmlinfsrv venv could not be installed (no network?): {error}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The load


@dataclass
class Outcome:
    sent: float  # time.monotonic() when the request was sent
    done: float  # ...and when its outcome was known
    status: int | None  # the HTTP status, None when there was no response
    error: str | None  # the exception's type when there was no response (refused, reset, timeout)
    answer: dict[str, Any] | None  # /score's JSON answer, for a 200

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.answer is not None

    @property
    def latency_s(self) -> float:
        return self.done - self.sent

    def describe(self) -> str:
        return self.error or f"HTTP {self.status}"


def score(port: int, timeout: float = REQUEST_TIMEOUT_S) -> Outcome:
    """One POST /score on a new connection; never raises."""
    sent = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/score", body=b"{}", headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
        answer = json.loads(body) if response.status == 200 else None
        return Outcome(sent, time.monotonic(), response.status, None, answer)
    except (OSError, http.client.HTTPException, ValueError) as error:
        return Outcome(sent, time.monotonic(), None, type(error).__name__, None)
    finally:
        connection.close()


class Load:
    """POST /score every `period_s` (each request on its own thread), recording every outcome."""

    def __init__(self, port: int, period_s: float = 0.025, threads: int = 64) -> None:
        self._port = port
        self._period_s = period_s
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="load")
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._stopping = threading.Event()
        self._scheduler = threading.Thread(target=self._schedule, name="load-scheduler", daemon=True)

    def __enter__(self) -> Load:
        self._scheduler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _schedule(self) -> None:
        start = time.monotonic()
        count = 0
        while not self._stopping.wait(max(0.0, start + count * self._period_s - time.monotonic())):
            self._pool.submit(self._one)
            count += 1

    def _one(self) -> None:
        outcome = score(self._port)
        with self._lock:
            self._outcomes.append(outcome)

    def stop(self) -> None:
        """Stop sending and wait for every request under way."""
        self._stopping.set()
        if self._scheduler.is_alive():
            self._scheduler.join()
        self._pool.shutdown(wait=True)

    def outcomes(self) -> list[Outcome]:
        """Every outcome so far, in the order the requests were sent."""
        with self._lock:
            return sorted(self._outcomes, key=lambda outcome: outcome.sent)

    def successes(self, where: Callable[[Outcome], bool] = lambda _: True) -> list[Outcome]:
        return [outcome for outcome in self.outcomes() if outcome.ok and where(outcome)]

    def failures(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes() if not outcome.ok]

    def summary(self) -> str:
        """Counts, failure kinds and latencies: no value, ever (the answers hold lengths only)."""
        outcomes = self.outcomes()
        kinds: dict[str, int] = {}
        for outcome in self.failures():
            kinds[outcome.describe()] = kinds.get(outcome.describe(), 0) + 1
        latencies = sorted(outcome.latency_s for outcome in outcomes)
        median = latencies[len(latencies) // 2] if latencies else 0.0
        return (
            f"{len(outcomes)} requests, {len(outcomes) - len(self.failures())} ok, {len(self.failures())} failed "
            f"{kinds}; latency median {median * 1000:.0f} ms, max {max(latencies, default=0.0) * 1000:.0f} ms"
        )


# The server under the sidecar


def wait_ready(run: Supervised, port: int, timeout: float = READY_TIMEOUT_S) -> Outcome:
    """Until /score answers 200; fails at once if the sidecar exits first."""

    def answered() -> Outcome | None:
        code = run.process.poll()
        if code is not None:
            raise AssertionError(f"the sidecar exited {code} before /score answered; its log:\n{run.log()[-6000:]}")
        outcome = score(port, timeout=5.0)
        return outcome if outcome.ok else None

    return run.wait_for(answered, f"POST /score on port {port} to answer 200", timeout=timeout)


@contextlib.contextmanager
def supervised_azmlinfsrv(
    emulator: Any, tmp_path: Path, venv: Path, port: int, secrets: set[str], env: dict[str, str]
) -> Iterator[Supervised]:
    """`python -m sidecar supervise -- <venv>/bin/azmlinfsrv --entry_script score_files.py --port PORT`.

    HOME is the test's own directory (supervised() sets it): gunicorn 27 opens its control socket
    under $HOME/.gunicorn when XDG_RUNTIME_DIR is unset, so servers started side by side do not collide.
    Whatever is left at the end is killed: every server the sidecar started leads a process group.
    """
    cmd = [str(venv / "bin" / "azmlinfsrv"), "--entry_script", str(ENTRY_SCRIPT), "--port", str(port)]
    full_env = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", **env}
    with supervised(emulator, tmp_path, secrets, full_env, cmd=cmd) as run:
        try:
            yield run
        finally:
            if run.process.poll() is None:  # an exited sidecar has waited for its server already
                for event in run.events("started"):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(event["pid"], signal.SIGKILL)
