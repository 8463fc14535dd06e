"""Zero-downtime rotation with the real Azure ML inference server (azmlinfsrv 1.5.1, gunicorn 27).

The recipe (docker/example/score_files.py): values as files (`?file`), SIDECAR_RELOAD_SIGNAL=HUP,
init() reads the files. `sidecar supervise` starts azmlinfsrv, which runs gunicorn in-process: the
sidecar's child is the gunicorn master. On a rotation the sidecar rewrites the file and sends HUP
to the master alone; gunicorn starts a new worker (init() reads the new value) and stops the old one
gracefully. Under a steady load (a request every 25 ms), no request fails: the requests that arrive
while the new worker boots and runs init() wait in the listening socket's backlog (0.2-0.6 s here,
about init()'s duration more with a slow init()). The restart path (SIDECAR_ON_CHANGE=restart: TERM,
wait, a new server) is measured alongside, not held to zero: 13-18 requests refused here.

The venv is built once per requirements file (about 10 s, .cache/azmlinfsrv-*); each test takes
a few seconds. No value is compared or printed: /score answers lengths.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from azmlinfsrv_helpers import Load, Outcome, free_port, supervised_azmlinfsrv, venv_or_skip, wait_ready
from sidecar_helpers import kv
from supervise_helpers import Supervised

OLD_LENGTH = len("fake-db-password-7Qx")  # db-password in the default fixture
NEW_VALUE = "fake-rotated-db-password-for-azmlinfsrv"
assert len(NEW_VALUE) != OLD_LENGTH
ROTATION_WAIT_S = 30.0  # rounds every 1-1.1 s, then a worker's (or a server's) start
AFTER_ROTATION = 20  # successful responses with the new value before the load stops


@pytest.fixture(scope="session")
def azmlinfsrv_venv() -> Path:
    return venv_or_skip()


def recipe_env(shm_dir: Path, **settings: str) -> dict[str, str]:
    return {
        "DB_PASSWORD": kv("db-password", options="?file"),
        "OPENAI_API_KEY": kv("openai-key", options="?file"),  # unchanged throughout
        "EXPECTED_FILES": "DB_PASSWORD,OPENAI_API_KEY",
        "SIDECAR_FILES_DIR": str(shm_dir),
        **settings,
    }


def new_length(outcome: Outcome) -> bool:
    return outcome.answer["lengths"]["DB_PASSWORD"] == len(NEW_VALUE)


def rotate_under_load(run: Supervised, emulator: Any, port: int) -> Load:
    """A steady load; the rotation; the load kept up until AFTER_ROTATION answers carry the new value."""
    with Load(port) as load:
        run.wait_for(lambda: len(load.successes()) >= 20, "20 answers before the rotation")
        run.add_secrets(NEW_VALUE)
        emulator.admin.add_version("contoso-kv", "db-password", NEW_VALUE)
        run.wait_for(
            lambda: load.successes(new_length), "an answer with the new value's length", timeout=ROTATION_WAIT_S
        )
        run.wait_for(
            lambda: len(load.successes(new_length)) >= AFTER_ROTATION, f"{AFTER_ROTATION} answers with the new length"
        )
    return load


def test_hup_rotates_a_file_secret_without_failing_a_request(
    emulator, tmp_path, fixture_secret_values, shm_dir, azmlinfsrv_venv
):
    port = free_port()
    env = recipe_env(shm_dir, SIDECAR_RELOAD_SIGNAL="HUP")
    with supervised_azmlinfsrv(emulator, tmp_path, azmlinfsrv_venv, port, fixture_secret_values, env) as run:
        first = wait_ready(run, port)
        [started] = run.events("started")
        master = started["pid"]
        assert first.answer["master_pid"] == master  # the sidecar's child is gunicorn's master
        assert first.answer["lengths"] == {"DB_PASSWORD": OLD_LENGTH, "OPENAI_API_KEY": len("fake-openai-key-v1")}

        load = rotate_under_load(run, emulator, port)
        print(f"\nHUP: {load.summary()}")

        failures = load.failures()
        assert not failures, f"{len(failures)} request(s) failed: {load.summary()}"
        answers = [outcome.answer for outcome in load.successes()]
        assert {answer["master_pid"] for answer in answers} == {master}  # one master throughout
        old_workers = {a["worker_pid"] for a in answers if a["lengths"]["DB_PASSWORD"] == OLD_LENGTH}
        new_workers = {a["worker_pid"] for a in answers if a["lengths"]["DB_PASSWORD"] == len(NEW_VALUE)}
        assert old_workers and new_workers and not old_workers & new_workers  # the workers were replaced
        assert all(a["init_runs"] == 1 for a in answers)  # each worker ran init() once, the new ones too
        assert {a["lengths"]["OPENAI_API_KEY"] for a in answers} == {len("fake-openai-key-v1")}
        # Once the new value has been served, the old one never is again.
        first_new = min(outcome.done for outcome in load.successes(new_length))
        assert all(new_length(outcome) for outcome in load.successes(lambda o: o.sent > first_new))

        assert len(run.events("started")) == 1 and not run.events("restarting")
        assert [(e["signal"], e["pid"]) for e in run.events("reload")] == [("SIGHUP", master)]
        assert (shm_dir / "DB_PASSWORD").stat().st_size == len(NEW_VALUE)
        assert oct((shm_dir / "DB_PASSWORD").stat().st_mode & 0o777) == "0o400"

        # TERM to the sidecar goes to the server's process group; gunicorn stops and exits 0.
        run.signal(signal.SIGTERM)
        assert run.wait_exit() == 0
        assert run.events("child exited", pid=master, exit_code=0)


def test_restart_rotates_too_with_a_new_master(
    emulator, tmp_path, fixture_secret_values, shm_dir, azmlinfsrv_venv, record_property
):
    """SIDECAR_ON_CHANGE=restart: TERM to the server's group, wait, a new server. Failures are measured only."""
    port = free_port()
    env = recipe_env(shm_dir, SIDECAR_ON_CHANGE="restart")
    with supervised_azmlinfsrv(emulator, tmp_path, azmlinfsrv_venv, port, fixture_secret_values, env) as run:
        wait_ready(run, port)
        load = rotate_under_load(run, emulator, port)
        failures = load.failures()
        print(f"\nrestart: {load.summary()}")
        record_property("failed_requests", len(failures))

        first, second = (event["pid"] for event in run.events("started"))
        assert first != second
        assert run.events("stopped for restart", pid=first, exit_code=0)
        answers = [outcome.answer for outcome in load.successes()]
        assert {a["master_pid"] for a in answers if a["lengths"]["DB_PASSWORD"] == OLD_LENGTH} == {first}
        assert {a["master_pid"] for a in answers if a["lengths"]["DB_PASSWORD"] == len(NEW_VALUE)} == {second}
        assert not run.events("reload")
        # Requests sent while no server listened were refused (or reset); how many depends on the start time.
        assert all(outcome.error for outcome in failures), load.summary()

        run.signal(signal.SIGTERM)
        assert run.wait_exit() == 0


def test_a_failing_init_during_hup_halts_the_server_and_the_sidecar_exits_with_its_code(
    emulator, tmp_path, fixture_secret_values, shm_dir, azmlinfsrv_venv
):
    """The new worker's init() raises (here: a blank secret file): gunicorn halts the whole server.

    With one worker (azmlinfsrv's default) it exits 3 (WORKER_BOOT_ERROR), and so does the sidecar;
    the server is not started again. (With WORKER_COUNT=2, gunicorn's halt raises again: exit 1.)
    """
    port = free_port()
    env = recipe_env(shm_dir, SIDECAR_RELOAD_SIGNAL="HUP")
    with supervised_azmlinfsrv(emulator, tmp_path, azmlinfsrv_venv, port, fixture_secret_values, env) as run:
        wait_ready(run, port)
        [started] = run.events("started")
        emulator.admin.add_version("contoso-kv", "db-password", " ")  # Key Vault refuses ""
        assert run.wait_exit() == 3  # gunicorn's WORKER_BOOT_ERROR, passed on by azmlinfsrv and the sidecar
        assert run.events("reload", signal="SIGHUP", pid=started["pid"])
        assert run.events("child exited", pid=started["pid"], exit_code=3)
        assert "Worker failed to boot" in run.log() + run.stdout_path.read_text(errors="replace")
        assert len(run.events("started")) == 1
