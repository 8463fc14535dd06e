"""entrypoint.sh on the host, under every POSIX shell found here: no container needed.

The fast path (no reference in the environment) must exec the command itself, in the same
process; any value that may hold a reference must take the slow path (`sidecar exec -- CMD`,
or `sidecar supervise -- CMD` with SIDECAR_MODE=supervise). Any other SIDECAR_MODE is refused
(78) on both paths. A fake `sidecar` on PATH records how it was called.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "entrypoint.sh"
SHELLS = [name for name in ("sh", "dash", "bash", "busybox") if shutil.which(name)]
KV = "https://contoso-kv.vault.azure.net/secrets/openai-key"

FAKE_SIDECAR = """#!/bin/sh
printf 'SIDECAR'
for arg in "$@"; do printf ' [%s]' "$arg"; done
echo
"""


def shell_command(shell: str) -> list[str]:
    return [shutil.which("busybox") or "busybox", "sh"] if shell == "busybox" else [shutil.which(shell) or shell]


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    sidecar = folder / "sidecar"
    sidecar.write_text(FAKE_SIDECAR, encoding="utf-8")
    sidecar.chmod(0o755)
    return folder


def run(shell: str, env: dict[str, str], *args: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*shell_command(shell), str(ENTRYPOINT), *args],
        env={"PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def run_in_place(shell: str, fake_bin: Path, env: dict[str, str], script: str) -> tuple[int, str]:
    """Run `entrypoint.sh sh -c SCRIPT` with a fake sidecar on PATH: the entrypoint's PID and what SCRIPT printed.

    The fake sidecar prints SIDECAR; the output must not hold it (no sidecar ran)."""
    process = subprocess.Popen(
        [*shell_command(shell), str(ENTRYPOINT), "sh", "-c", script],
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "SIDECAR" not in out
    return process.pid, out


@pytest.mark.parametrize("shell", SHELLS)
def test_no_reference_execs_the_command_in_the_same_process(shell: str, fake_bin: Path) -> None:
    env = {"PLAIN": "value", "TEMPLATE": "{{ jinja }} and $HOME and ${VAR}", "URL": "https://example.invalid/"}
    pid, out = run_in_place(shell, fake_bin, env, 'echo "$$"')
    assert out.strip() == str(pid), "the command did not get the entrypoint's PID (no exec)"


SLOW = {
    "platform": {"OPENAI_API_KEY": "${{keyvault:" + KV + "}}"},
    "embedded": {"DB_URL": "postgresql://app:${{keyvault:" + KV + "}}@db/app"},
    "escaped-literal": {"TEMPLATE": "$${{not a reference}}"},
    "deferred-keyvault": {"OPENAI_API_KEY": "keyvault:" + KV},
    "deferred-azureml": {"AOAI_KEY": "azureml://connections/aoai-conn/credentials/key"},
    "mixed-case": {"AOAI_KEY": "AzureML://connections/aoai-conn/target"},
    "second-line": {"MULTI": "first line\nkeyvault:" + KV + "\nthird"},
    "odd-name": {"odd-name.with.dots": "${{keyvault:" + KV + "}}"},
    "after-many": {**{f"VAR_{i}": "x" * 50 for i in range(200)}, "ZZ": "${{azureml://connections/c}}"},
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("case", sorted(SLOW))
def test_a_possible_reference_takes_the_sidecar(shell: str, case: str, fake_bin: Path) -> None:
    result = run(shell, SLOW[case], "server", "--flag", "two words", path=f"{fake_bin}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SIDECAR [exec] [--] [server] [--flag] [two words]"


@pytest.mark.parametrize("shell", SHELLS)
def test_sidecar_bin_overrides_path(shell: str, fake_bin: Path) -> None:
    result = run(shell, {"SIDECAR_BIN": str(fake_bin / "sidecar"), "K": "keyvault:" + KV}, "server")
    assert result.stdout.strip() == "SIDECAR [exec] [--] [server]", result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_no_sidecar_on_path_is_127_with_a_message(shell: str) -> None:
    result = run(shell, {"K": "keyvault:" + KV}, "server")
    assert result.returncode == 127
    assert "'sidecar' is not on PATH" in result.stderr and "SIDECAR_BIN" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_no_arguments_prints_usage_and_exits_64(shell: str) -> None:
    result = run(shell, {})
    assert result.returncode == 64
    assert result.stderr.startswith("usage: entrypoint.sh COMMAND")
    assert result.stdout == ""


# SIDECAR_MODE


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("mode", ["supervise", "Supervise", "SUPERVISE"])
@pytest.mark.parametrize("case", ["platform", "deferred-azureml", "second-line", "odd-name"])
def test_supervise_mode_runs_the_sidecar_s_supervise(shell: str, mode: str, case: str, fake_bin: Path) -> None:
    env = {**SLOW[case], "SIDECAR_MODE": mode}
    result = run(shell, env, "server", "--flag", "two words", "", "-- x", path=f"{fake_bin}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SIDECAR [supervise] [--] [server] [--flag] [two words] [] [-- x]"
    assert result.stderr == ""


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("mode", ["", "exec", "EXEC"])
def test_exec_mode_or_an_empty_one_keeps_sidecar_exec(shell: str, mode: str, fake_bin: Path) -> None:
    result = run(shell, {**SLOW["platform"], "SIDECAR_MODE": mode}, "server", path=f"{fake_bin}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SIDECAR [exec] [--] [server]"


@pytest.mark.parametrize("shell", SHELLS)
def test_supervise_mode_with_sidecar_bin(shell: str, fake_bin: Path) -> None:
    env = {"SIDECAR_BIN": str(fake_bin / "sidecar"), "SIDECAR_MODE": "supervise", "K": "keyvault:" + KV}
    result = run(shell, env, "server")
    assert result.stdout.strip() == "SIDECAR [supervise] [--] [server]", result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_supervise_mode_without_a_sidecar_is_127(shell: str) -> None:
    result = run(shell, {"SIDECAR_MODE": "supervise", "K": "keyvault:" + KV}, "server")
    assert result.returncode == 127
    assert "'sidecar' is not on PATH" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_supervise_mode_without_a_reference_still_execs_the_command_directly(shell: str, fake_bin: Path) -> None:
    """Nothing to resolve, nothing to keep current: no Python, the command keeps the entrypoint's PID."""
    env = {"SIDECAR_MODE": "supervise", "PLAIN": "value", "TEMPLATE": "{{ jinja }} and ${VAR}"}
    pid, out = run_in_place(shell, fake_bin, env, 'echo "$$ $SIDECAR_MODE"')
    # The same PID (an exec, no fork); on the fast path the SIDECAR_* settings stay, as documented.
    assert out.strip() == f"{pid} supervise", out


BAD_MODES = ["superviser", "supervise ", " exec", "Exec2", "run", "1", "supervise\nexec", "*", "$(id)"]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("mode", BAD_MODES, ids=repr)
@pytest.mark.parametrize("with_reference", [True, False], ids=["slow-path", "fast-path"])
def test_an_unknown_mode_is_refused_with_78_on_either_path(
    shell: str, mode: str, with_reference: bool, fake_bin: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    env = {"SIDECAR_MODE": mode, **(SLOW["platform"] if with_reference else {"PLAIN": "value"})}
    result = run(shell, env, "touch", str(marker), path=f"{fake_bin}:/usr/bin:/bin")
    assert result.returncode == 78, (result.stdout, result.stderr)
    assert result.stdout == "", "neither the sidecar nor the command may run"
    assert not marker.exists(), "the command ran"
    assert f"SIDECAR_MODE='{mode}'" in result.stderr
    assert "exec" in result.stderr and "supervise" in result.stderr
    assert result.stderr.startswith("entrypoint.sh: ")


@pytest.mark.parametrize("shell", SHELLS)
def test_no_arguments_is_64_whatever_the_mode(shell: str) -> None:
    for mode in ("supervise", "bogus"):
        result = run(shell, {"SIDECAR_MODE": mode})
        assert result.returncode == 64, (mode, result.stderr)
        assert result.stderr.startswith("usage: entrypoint.sh COMMAND")


def test_the_fast_path_costs_a_few_milliseconds() -> None:
    """Median wall time of the fast path against a bare `sh -c 'exec true'`, with a 4 KB environment."""
    env = {"PATH": "/usr/bin:/bin", **{f"AZUREML_SETTING_{i}": "v" * 40 for i in range(80)}}
    true = shutil.which("true") or "/bin/true"

    def median(command: list[str]) -> float:
        times = []
        for _ in range(25):
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, stdin=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    bare = median(["sh", "-c", f"exec {true}"])
    wrapped = median(["sh", str(ENTRYPOINT), true])
    overhead_ms = (wrapped - bare) * 1000
    print(f"entrypoint fast path: {wrapped * 1000:.2f} ms, bare sh: {bare * 1000:.2f} ms, +{overhead_ms:.2f} ms")
    assert overhead_ms < 25, f"the fast path costs {overhead_ms:.1f} ms more than a bare exec"


def test_entrypoint_is_executable_posix_sh() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
