"""Run the real `sidecar` as a subprocess against the emulator, and check every run for leaks."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sidecar_helpers import RECORDER, RUN_TIMEOUT_S, WORKSPACE, SidecarRun, fs_type, run_sidecar_process

# Under CI the property tests draw the same examples every run, so that a red run reproduces;
# local runs keep exploring (and keep what they found in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A fresh path on /dev/shm (a tmpfs), not created; removed afterwards."""
    path = Path("/dev/shm") / f"sidecar-test-{uuid.uuid4().hex}"
    assert fs_type(Path("/dev/shm")) == "tmpfs", "these tests need /dev/shm to be a tmpfs"
    yield path
    if path.is_symlink():
        path.unlink()
    shutil.rmtree(path, ignore_errors=True)


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
        run = run_sidecar_process(
            argv,
            full_env,
            [*fixture_secret_values, *extra_secret_values],
            timeout_s=RUN_TIMEOUT_S,
            late=f"sidecar did not finish within {RUN_TIMEOUT_S} s",
        )
        run.child = json.loads(record.read_text()) if record.exists() else None
        return run

    return run
