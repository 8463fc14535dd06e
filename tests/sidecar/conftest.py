"""Run the real `sidecar` as a subprocess against the emulator, and check every run for leaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

RECORDER = Path(__file__).with_name("record_env.py")
SUBSCRIPTION = "00000000-0000-4000-8000-0000000000a1"
WORKSPACE = {
    "AZUREML_ARM_SUBSCRIPTION": SUBSCRIPTION,
    "AZUREML_ARM_RESOURCEGROUP": "rg-ml",
    "AZUREML_ARM_WORKSPACE_NAME": "ws-main",
}
SYSTEM_ID = "11111111-1111-4111-8111-111111111111"
USER_ID = "22222222-2222-4222-8222-222222222222"
NOROLES_ID = "33333333-3333-4333-8333-333333333333"
KV = "https://contoso-kv.vault.azure.net"
RUN_TIMEOUT_S = 90
TOKEN_PREFIX = "emu1."  # every token the emulator issues starts with this


@dataclass
class SidecarRun:
    returncode: int
    stdout: str
    stderr: str
    pid: int
    child: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def child_env(self) -> dict[str, str]:
        assert self.child is not None, f"CMD did not run (exit {self.returncode}); stderr:\n{self.stderr}"
        return self.child["env"]

    def failures(self) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("event") == "failed"]

    def failure_for(self, variable: str) -> dict[str, Any]:
        found = [event for event in self.failures() if event.get("variable") == variable]
        assert found, f"no failure logged for {variable}; stderr:\n{self.stderr}"
        return found[0]


def leak_candidates(values: Iterable[str]) -> set[str]:
    """Each value as it could appear in output: raw, JSON-escaped, and each long-enough line of it."""
    candidates = set()
    for value in values:
        candidates.add(value)
        candidates.add(json.dumps(value)[1:-1])
        candidates.update(line for line in value.splitlines() if len(line) >= 6)
        candidates.update(part for part in value.split("\x00") if len(part) >= 6)
    return {candidate for candidate in candidates if len(candidate) >= 4}


def assert_no_leak(text: str, values: Iterable[str]) -> None:
    leaked = sorted(candidate for candidate in leak_candidates(values) if candidate in text)
    if TOKEN_PREFIX in text:
        leaked.append("an access token")
    # Name how many leaked, never which: the assertion message is output too.
    assert not leaked, f"{len(leaked)} secret value(s) appeared in captured output"


@pytest.fixture
def run_sidecar(emulator, tmp_path, fixture_secret_values) -> Callable[..., SidecarRun]:
    counter = iter(range(1_000_000))

    def run(
        env: dict[str, str] | None = None,
        *,
        flavour: str = "imds",
        command: str = "exec",
        cmd: list[str] | None = None,
        workspace: bool = True,
        extra_secret_values: Iterable[str] = (),
        check_args: tuple[str, ...] = (),
    ) -> SidecarRun:
        record = tmp_path / f"child-{next(counter)}.json"
        full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **emulator.env(flavour)}
        if workspace:
            full_env.update(WORKSPACE)
        full_env.update(env or {})
        argv = [sys.executable, "-m", "sidecar", command]
        if command == "exec":
            argv += ["--", *(cmd if cmd is not None else [sys.executable, str(RECORDER), str(record)])]
        else:
            argv += list(check_args)
        process = subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"sidecar did not finish within {RUN_TIMEOUT_S} s; stderr:\n{stderr}")
        assert_no_leak(stdout + stderr, [*fixture_secret_values, *extra_secret_values])
        events = []
        for line in stderr.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        child = json.loads(record.read_text()) if record.exists() else None
        return SidecarRun(process.returncode, stdout, stderr, process.pid, child, events)

    return run
