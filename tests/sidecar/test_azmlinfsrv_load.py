"""`sidecar.load()` in a real scoring script under the real Azure ML inference server (azmlinfsrv).

docker/scoring-script/score.py calls load() in init(); the server runs from a venv of the example's pins
plus the sidecar's runtime lock, with the sidecar from this repository (PYTHONPATH), against the emulator.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azmlinfsrv_helpers import READY_TIMEOUT_S, REPO, WITH_SIDECAR, free_port, score, venv_or_skip
from sidecar_helpers import KV, WORKSPACE, assert_no_leak, kv

SCORE = REPO / "docker" / "scoring-script" / "score.py"
# gunicorn's exit code when a worker fails to boot (its WORKER_BOOT_ERROR): azmlinfsrv's, when init() raises.
WORKER_BOOT_ERROR = 3


@pytest.fixture(scope="module")
def venv() -> Path:
    return venv_or_skip(WITH_SIDECAR)


@contextlib.contextmanager
def azmlinfsrv(
    emulator, venv: Path, tmp_path: Path, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    port, log = free_port(), tmp_path / "azmlinfsrv.log"
    full_env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),  # gunicorn's control socket goes under $HOME
        "PYTHONPATH": str(REPO),
        **emulator.env("imds"),
        **WORKSPACE,
        **env,
    }
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(venv / "bin" / "azmlinfsrv"), "--entry_script", str(SCORE), "--port", str(port)],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield server, port, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_run_sees_the_values_init_resolved(emulator, venv, tmp_path, fixture_secret_values):
    env = {
        "DB_PASSWORD": kv("db-password"),
        "AOAI_KEY": "azureml://connections/aoai-conn/credentials/key",
        "URL": "postgres://app:${{keyvault:" + KV + "/secrets/db-password}}@db/app",
        "EXPECTED_SECRETS": "DB_PASSWORD,AOAI_KEY,URL",
    }
    with azmlinfsrv(emulator, venv, tmp_path, env) as (server, port, log):
        deadline = time.monotonic() + READY_TIMEOUT_S
        outcome = score(port, timeout=5.0)
        while not outcome.ok and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # azmlinfsrv takes about 2 s to start; the bound above fails the test
            outcome = score(port, timeout=5.0)
        assert outcome.ok, f"/score did not answer 200 ({outcome.describe()}); log:\n{log.read_text()[-4000:]}"
        answer = outcome.answer
    assert_no_leak(log.read_text(), fixture_secret_values)
    assert answer == {
        "DB_PASSWORD": {"length": len("fake-db-password-7Qx"), "still_a_reference": False},
        "AOAI_KEY": {"length": len("fake-aoai-key-123"), "still_a_reference": False},
        "URL": {"length": len("postgres://app:fake-db-password-7Qx@db/app"), "still_a_reference": False},
    }


def test_a_missing_secret_fails_init_with_the_sidecars_message_and_stops_the_server(
    emulator, venv, tmp_path, fixture_secret_values
):
    env = {"DB_PASSWORD": kv("db-password"), "GONE": kv("no-such-secret")}
    with azmlinfsrv(emulator, venv, tmp_path, env) as (server, _port, log):
        try:
            code = server.wait(timeout=READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"azmlinfsrv kept running after init() failed; log:\n{log.read_text()[-4000:]}")
    text = log.read_text()
    assert_no_leak(text, fixture_secret_values)
    assert code == WORKER_BOOT_ERROR, text[-4000:]
    assert "LoadError" in text and "GONE" in text and "not found" in text and "Fix:" in text, text[-4000:]
