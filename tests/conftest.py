"""Shared pytest fixtures: the local Azure emulator (docker/emulator), one process per session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EMULATOR_DIR = Path(__file__).resolve().parent.parent / "docker" / "emulator"
if str(EMULATOR_DIR) not in sys.path:
    sys.path.insert(0, str(EMULATOR_DIR))

from azure_emulator.fixture import DEFAULT_FIXTURE, secret_values  # noqa: E402
from azure_emulator.launcher import EmulatorProcess  # noqa: E402


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    """One emulator on the default fixture for the whole session."""
    with EmulatorProcess() as process:
        yield process


@pytest.fixture
def emulator(emulator_process: EmulatorProcess) -> EmulatorProcess:
    """The session's emulator, reset to the default fixture (no faults, counters and log cleared)."""
    emulator_process.admin.reset()
    return emulator_process


@pytest.fixture(scope="session")
def fixture_secret_values() -> set[str]:
    """Every secret value, credential and key in the default fixture (for leak tests)."""
    return secret_values(DEFAULT_FIXTURE)
