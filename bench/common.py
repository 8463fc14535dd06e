"""Shared bench plumbing: the emulator, the environments, and timing one process to its CMD.

Time to exec: the harness reads the wall clock (time.time_ns) right before spawning, and CMD is
`date +%s%N`, which prints the same clock as its first act. The difference includes the spawn
itself and date's own start-up (about 1 ms); `marker_cost_ms` measures both by spawning date
directly, and every "time to exec" below has that median subtracted.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "docker" / "emulator"))

from azure_emulator.launcher import EmulatorProcess  # noqa: E402

PYTHON = sys.executable
SIDECAR = str(Path(sys.executable).parent / "sidecar")
ENTRYPOINT = str(ROOT / "entrypoint.sh")
MARKER = [shutil.which("date") or "/bin/date", "+%s%N"]

SUBSCRIPTION = "00000000-0000-4000-8000-0000000000a1"
WORKSPACE_ENV = {
    "AZUREML_ARM_SUBSCRIPTION": SUBSCRIPTION,
    "AZUREML_ARM_RESOURCEGROUP": "rg-ml",
    "AZUREML_ARM_WORKSPACE_NAME": "ws-main",
}
BENCH_VAULT = "bench-kv"
FLEET_VAULT = "fleet-kv"
VALUE_PREFIX = "fake-bench-"  # every bench value starts with this: output is checked for it
RUN_TIMEOUT_S = 180


def value_for(i: int) -> str:
    return f"{VALUE_PREFIX}{i:05d}-" + "x" * 24  # 40 characters, like an API key


def kv_ref(vault: str, i: int) -> str:
    return f"keyvault:https://{vault}.vault.azure.net/secrets/s-{i}"


def conn_ref(i: int) -> str:
    return f"azureml://connections/bench-conn-{i}/credentials/key"


def start_emulator(max_secrets: int, connections: int, fleet_secrets: int) -> EmulatorProcess:
    emu = EmulatorProcess()
    emu.start()
    setup_emulator(emu, max_secrets, connections, fleet_secrets)
    return emu


def setup_emulator(emu: EmulatorProcess, max_secrets: int, connections: int, fleet_secrets: int) -> None:
    emu.admin.reset()
    emu.admin.load(
        {
            "vaults": {
                BENCH_VAULT: {"secrets": {f"s-{i}": {"value": value_for(i)} for i in range(max_secrets)}},
                FLEET_VAULT: {"secrets": {f"s-{i}": {"value": value_for(i)} for i in range(fleet_secrets)}},
            },
            "workspaces": {
                "ws-main": {
                    "connections": {
                        f"bench-conn-{i}": {
                            "authType": "ApiKey",
                            "category": "ApiKey",
                            "target": f"https://bench-{i}.example.invalid/",
                            "credentials": {"key": value_for(100_000 + i)},
                        }
                        for i in range(connections)
                    }
                }
            },
            "identities": {
                "system": {
                    "roles": {
                        "Key Vault Secrets User": [
                            "contoso-kv",
                            "contoso-kv-cn",
                            "contoso-kv-gov",
                            BENCH_VAULT,
                            FLEET_VAULT,
                        ]
                    }
                }
            },
        }
    )


def set_latency(emu: EmulatorProcess, store_ms: int, token_ms: int) -> None:
    emu.admin.clear_faults()
    for kind, ms in (("keyvault", store_ms), ("arm", store_ms), ("imds", token_ms), ("msi", token_ms)):
        if ms:
            emu.admin.add_fault({"kind": kind, "latency_ms": ms})


def base_env(emu: EmulatorProcess, refs: dict[str, str] | None = None, extra: int = 0) -> dict[str, str]:
    """A container-like environment: PATH and friends, the emulator's variables, the workspace, the refs."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "HOSTNAME": "bench",
        **emu.env("imds"),
        **WORKSPACE_ENV,
    }
    env.update({f"PLAIN_{i}": f"value-{i}-" + "y" * 40 for i in range(extra)})
    env.update(refs or {})
    return env


@dataclass
class Run:
    ms: float  # spawn -> CMD's first clock read, marker cost NOT subtracted
    returncode: int
    maxrss_kb: int
    stderr: str


class Spawned:
    """One process, started now; `finish()` waits for it and reads when its CMD ran.

    stdout and stderr go to temporary files (no pipe can fill up and stall a replica). Peak RSS
    comes from wait4's rusage: Linux keeps the high-water mark of the image it replaced at exec.
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by finish()
        self._err = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by finish()
        self.started = time.time_ns()
        self.process = subprocess.Popen(argv, env=env, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL)

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> Run:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, rusage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.process.kill()
                pid, status, rusage = os.wait4(self.process.pid, 0)
                break
            time.sleep(0.002)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self._out.seek(0)
        self._err.seek(0)
        lines, stderr = self._out.read().split(), self._err.read()
        self._out.close()
        self._err.close()
        ok = self.process.returncode == 0 and lines
        ms = (int(lines[-1]) - self.started) / 1e6 if ok else float("nan")
        return Run(ms, self.process.returncode, rusage.ru_maxrss, stderr)


# Linux carries a process's peak RSS across fork and exec (the parent's image counts at the first
# exec), so a child of this harness would report at least the harness's own peak. Peak RSS is
# therefore measured through a small `python -S` forker: its child starts from the forker's ~10 MiB.
_FORKER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execve(sys.argv[1], sys.argv[1:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "sys.stderr.write(f'\\nBENCH_MAXRSS_KB={usage.ru_maxrss}\\n')\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def peak_rss_kb(argv: list[str], env: dict[str, str]) -> int:
    """Peak RSS (KiB) of `argv` over its whole life, the part before its exec of CMD included."""
    run = spawn_timed([PYTHON, "-S", "-c", _FORKER, *argv], env)
    for line in run.stderr.splitlines():
        if line.startswith("BENCH_MAXRSS_KB="):
            return int(line.split("=", 1)[1])
    return 0


def spawn_timed(argv: list[str], env: dict[str, str], timeout: float = RUN_TIMEOUT_S) -> Run:
    return Spawned(argv, env).finish(timeout)


def marker_cost_ms(runs: int) -> float:
    """Median time from spawn to the marker's clock read when the marker is spawned directly."""
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    return statistics.median(spawn_timed(MARKER, env).ms for _ in range(runs))


def leaked(text: str) -> int:
    """How many bench secret values appear in `text` (0 expected; values themselves are never printed)."""
    return text.count(VALUE_PREFIX)


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN (failed runs are reported separately)
    return statistics.median(values) if values else float("nan")


def fmt(ms: float) -> str:
    return "-" if ms != ms else f"{ms:,.1f}"


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def say(text: str) -> None:
    print(text, flush=True)
