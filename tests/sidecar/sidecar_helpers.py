"""Shared by the sidecar tests: fixture names, reference builders, the run record and the leak check."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORDER = Path(__file__).with_name("record_env.py")
README = Path(__file__).resolve().parents[2] / "README.md"
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


def kv(name: str, version: str = "", *, vault: str = KV, options: str = "") -> str:
    """A deferred Key Vault reference."""
    return f"keyvault:{vault}/secrets/{name}" + (f"/{version}" if version else "") + options


def platform(uri: str) -> str:
    """The same reference in the platform form."""
    return "${{" + uri + "}}"


def fs_type(path: Path) -> str:
    """The filesystem type by coreutils, independent of the sidecar's own detection."""
    return subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def documented_exit_codes() -> set[int]:
    """The codes in the README's exit-code table (`| 65 | ...`, `| 126 / 127 | ...`)."""
    section = README.read_text().split("### Exit codes", 1)[1].split("\n### ", 1)[0]
    cells = re.findall(r"^\| ([0-9][0-9 /]*) \|", section, re.MULTILINE)
    return {int(code) for cell in cells for code in cell.split("/")}


def run_sidecar_process(
    argv: list[str], env: dict[str, str], secrets: Collection[str], *, timeout_s: float, late: str
) -> SidecarRun:
    """Run the sidecar, check everything it printed for `secrets`, and parse its JSON log events.

    A run still going after timeout_s is killed (its output checked all the same) and fails with `late`.
    """
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        assert_no_leak(stdout + stderr, secrets)
        raise AssertionError(f"{late}; stderr:\n{stderr}") from None
    assert_no_leak(stdout + stderr, secrets)
    events = []
    for line in stderr.splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return SidecarRun(process.returncode, stdout, stderr, process.pid, None, events)


# Writes os.environb to argv[1], NUL-separated, so that a test compares bytes.
DUMP_ENVIRONMENT = (
    "import os, sys; open(sys.argv[1], 'wb').write(b'\\0'.join(k + b'=' + v for k, v in os.environb.items()))"
)


def sourced_environment(env_file: Path, tmp_path: Path) -> tuple[dict[bytes, bytes], str]:
    """What a POSIX shell exports after `set -a; . FILE`, as bytes, and what it printed on stderr."""
    dump = tmp_path / f"dump-{uuid.uuid4().hex}"
    script = 'set -a; . "$1"; set +a; exec "$2" -c "$3" "$4"'
    done = subprocess.run(
        ["sh", "-c", script, "sh", str(env_file), sys.executable, DUMP_ENVIRONMENT, str(dump)],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, "sourcing the env file failed"
    pairs = [item.partition(b"=") for item in dump.read_bytes().split(b"\0") if item]
    return {name: value for name, _, value in pairs}, done.stderr
