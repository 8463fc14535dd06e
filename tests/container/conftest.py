"""Real images and containers with podman: the base image, the example app, the drop-in recipe.

The session fixture `podman` runs docker/container-tools.sh (podman from Debian when root and
missing, a private containers.conf/storage.conf under the cache dir, the python:3.11-slim
stand-in), then `images` builds the base and example images (layers cached in the podman storage
under ~/.cache/sidecar-containers between runs).

The emulator runs as a host process (the shared `emulator_process` fixture, ephemeral loopback
ports) and the containers use `--network=host`, so SIDECAR_CONNECT_TO's loopback addresses and
the IMDS / MSI endpoints on 127.0.0.1 reach it; its CA is mounted read-only into the container.

Without podman and without root to install it, the tests skip and say why; under CI (CI=true)
that is a failure instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from container_helpers import (
    BASE_TAG,
    CONTAINER_CA,
    EXAMPLE_TAG,
    READY_TIMEOUT_S,
    REPO,
    SETUP_TIMEOUT_S,
    TOOLS,
    WORKSPACE_ENV,
    App,
    Images,
    Podman,
    env_args,
    free_port,
    unavailable,
)


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    if shutil.which("podman") is None and os.geteuid() != 0:
        unavailable("podman is not installed and this user is not root, so it cannot be installed")
    if shutil.which("sh") is None:
        unavailable("no POSIX sh to run docker/container-tools.sh")
    try:
        result = subprocess.run(
            ["sh", str(TOOLS), "setup"],
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"docker/container-tools.sh setup took more than {SETUP_TIMEOUT_S} s", pytrace=False)
    if result.returncode != 0:
        message = f"docker/container-tools.sh setup exited {result.returncode}:\n{result.stderr[-4000:]}"
        if os.geteuid() != 0:
            unavailable(f"{message}\n(not root: the setup cannot install podman or build the base stand-in)")
        pytest.fail(message, pytrace=False)
    env = dict(os.environ)
    for line in result.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            env[name] = value
    tool = Podman(env=env, cache=Path(env["SIDECAR_CONTAINERS_CACHE"]))
    yield tool
    for name in tool.created:
        # --volumes: the emulator image declares VOLUME /state (an anonymous volume per container)
        tool("rm", "--force", "--volumes", "--time", "0", name, check=False)
    # Layers of builds superseded more than 3 days ago; recent ones stay as the build cache.
    tool("image", "prune", "--force", "--filter", "until=72h", check=False)


@pytest.fixture(scope="session")
def images(podman: Podman) -> Images:
    podman.build(REPO, BASE_TAG)
    podman.build(REPO / "docker" / "example", EXAMPLE_TAG, "--build-arg", f"BASE={BASE_TAG}")
    return Images(base=BASE_TAG, example=EXAMPLE_TAG)


@pytest.fixture(scope="session")
def emulator_mount(emulator_process: Any, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`podman run` arguments that make the emulator's CA readable by the non-root user inside."""
    folder = tmp_path_factory.mktemp("emulator-ca")
    folder.chmod(0o755)
    ca = folder / "ca.pem"
    shutil.copyfile(emulator_process.ca_bundle, ca)
    ca.chmod(0o644)
    return ["-v", f"{ca}:{CONTAINER_CA}:ro"]


@pytest.fixture
def sidecar_env(emulator: Any) -> Callable[[str], dict[str, str]]:
    """sidecar_env(flavour): what a container needs to reach the host emulator ('imds' or 'azureml').

    Through the `emulator` fixture: the session's emulator, reset to its default fixture (no faults
    left over from other tests)."""

    def make(flavour: str = "imds") -> dict[str, str]:
        env = dict(emulator.env(flavour))
        env["REQUESTS_CA_BUNDLE"] = CONTAINER_CA
        env["SSL_CERT_FILE"] = CONTAINER_CA
        env.update(WORKSPACE_ENV)
        return env

    return make


@pytest.fixture
def start_app(podman: Podman, images: Images, emulator_mount: list[str]) -> Callable[..., App]:
    """start_app(env, *extra): the example image on a free host port, ready (its /score answers)."""

    def start(env: dict[str, str], *extra: str, image: str = images.example) -> App:
        name = podman.name()
        port = free_port()
        podman(
            "run",
            "--detach",
            "--name",
            name,
            "--network=host",
            *emulator_mount,
            *env_args(env),
            *extra,
            image,
            "azmlinfsrv",
            "--entry_script",
            "score.py",
            "--port",
            str(port),
        )
        app = App(name=name, port=port, podman=podman)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                app.score()
                return app
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            status = podman("container", "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if status not in {"running", "created", "configured", "initialized"}:
                pytest.fail(
                    f"container {name} is {status} (exit {podman.exit_code(name)}) before /score answered;"
                    f" logs:\n{podman.logs(name)[-4000:]}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"/score on port {port} did not answer within {READY_TIMEOUT_S} s; "
                    f"logs:\n{podman.logs(name)[-4000:]}",
                    pytrace=False,
                )
            time.sleep(0.1)

    return start
