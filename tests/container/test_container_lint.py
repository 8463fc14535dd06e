"""hadolint on the Dockerfiles and shellcheck on the shell scripts (tools from container-tools.sh)."""

from __future__ import annotations

import subprocess

import pytest
from container_helpers import REPO, TOOLS, unavailable

pytestmark = pytest.mark.container

DOCKERFILES = [REPO / "Dockerfile", REPO / "docker" / "example" / "Dockerfile"]
SCRIPTS = [REPO / "entrypoint.sh", TOOLS]


@pytest.fixture(scope="module")
def lint_tools() -> dict[str, str]:
    result = subprocess.run(
        ["sh", str(TOOLS), "lint-tools"],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        unavailable(f"docker/container-tools.sh lint-tools exited {result.returncode}: {result.stderr[-2000:]}")
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_is_clean(lint_tools: dict[str, str], dockerfile) -> None:
    result = subprocess.run(
        [lint_tools["HADOLINT"], "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_is_clean(lint_tools: dict[str, str], script) -> None:
    result = subprocess.run(
        [lint_tools["SHELLCHECK"], "--shell=sh", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
