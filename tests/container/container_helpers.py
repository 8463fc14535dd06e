"""Helpers for the container tests (podman, images, the example app); fixtures in conftest.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "docker" / "container-tools.sh"
BASE_TAG = "localhost/sidecar-base:test"
EXAMPLE_TAG = "localhost/sidecar-example:test"
APP_UID = 10001
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONTAINER_CA = "/run/sidecar-test/ca.pem"
SETUP_TIMEOUT_S = 540
BUILD_TIMEOUT_S = 540
READY_TIMEOUT_S = 60
COMMAND_TIMEOUT_S = 120

WORKSPACE_ENV = {
    "AZUREML_ARM_SUBSCRIPTION": "00000000-0000-4000-8000-0000000000a1",
    "AZUREML_ARM_RESOURCEGROUP": "rg-ml",
    "AZUREML_ARM_WORKSPACE_NAME": "ws-main",
}

# What the default emulator fixture serves (docker/emulator/fixture.yaml): the tests compare
# lengths reported by the example's /score route with these, never the values themselves.
KNOWN_VALUES = {
    "OPENAI_API_KEY": "fake-openai-key-v3",
    "DB_PASSWORD": "fake-db-password-7Qx",
    "AOAI_KEY": "fake-aoai-key-123",
    "CUSTOM_API_KEY": "fake-custom-api-key",
    "DB_URL": "postgresql://app:fake-db-password-7Qx@db.internal:5432/app",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip with the reason, or fail under CI, where the container tests must always run."""
    if in_ci():
        pytest.fail(f"container tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as `podman run --env-file` reads them (taken literally, # comments)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Podman:
    env: dict[str, str]
    cache: Path
    created: list[str] = field(default_factory=list)

    def __call__(
        self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"podman {' '.join(args[:3])} ... exited {result.returncode}\n"
                f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}",
                pytrace=False,
            )
        return result

    def build(self, context: Path, tag: str, *extra: str) -> None:
        args = ["build", "--pull=never", "--layers", "-t", tag, *extra]
        if HOST_CA_BUNDLE.is_file():
            # A TLS-intercepting proxy's CA, for pip in RUN: mounted at build time, never copied.
            args += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        self(*args, str(context), timeout=BUILD_TIMEOUT_S)

    def name(self) -> str:
        name = f"sidecar-test-{uuid.uuid4().hex[:10]}"
        self.created.append(name)
        return name

    def inspect(self, name: str) -> dict[str, Any]:
        return json.loads(self("container", "inspect", name).stdout)[0]

    def exit_code(self, name: str) -> int:
        return int(self("container", "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())

    def logs(self, name: str) -> str:
        result = self("logs", name)
        return result.stdout + result.stderr

    def wait_exited(self, name: str, timeout: float) -> int:
        """Bounded polling until the container has exited; its exit code."""
        deadline = time.monotonic() + timeout
        while True:
            status = self("container", "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if status in {"exited", "stopped"}:
                return self.exit_code(name)
            if time.monotonic() > deadline:
                pytest.fail(
                    f"container {name} still {status!r} after {timeout:g} s; logs:\n{self.logs(name)[-4000:]}",
                    pytrace=False,
                )
            time.sleep(0.05)


@dataclass(frozen=True)
class Images:
    base: str
    example: str


def env_args(env: dict[str, str]) -> list[str]:
    args = []
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    return args


def post_score(port: int, timeout: float = 5) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/score",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class App:
    name: str
    port: int
    podman: Podman

    def score(self) -> dict[str, Any]:
        return post_score(self.port)

    def processes(self) -> list[tuple[str, str, str]]:
        """(pid, user, args) of every process in the container, from `podman top`."""
        out = self.podman("top", self.name, "pid", "user", "args").stdout.splitlines()[1:]
        rows = []
        for line in out:
            parts = [*line.split(None, 2), "", ""][:3]
            rows.append((parts[0], parts[1], parts[2].strip()))
        return rows


POLL_S = 0.1


def wait_for(check: Callable[[], Any], what: str, timeout: float, logs: Callable[[], str]) -> Any:
    """Poll `check` until it returns something true, at most `timeout` seconds; fail naming `what`, with logs."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}; logs:\n{logs()[-4000:]}", pytrace=False)
        time.sleep(POLL_S)


def sidecar_events(logs: str, name: str | None = None) -> list[dict[str, Any]]:
    """The sidecar's JSON log lines (stderr, in `podman logs`), optionally only one event."""
    events = []
    for line in logs.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and (name is None or event.get("event") == name):
            events.append(event)
    return events
