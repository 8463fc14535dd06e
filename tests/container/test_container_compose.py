"""docker/compose.yaml: its structure (no engine needed), then its topology run with podman.

There is no Docker engine nor Compose here, so the second test replays the compose file's own
settings with podman: a network with DNS aliases, the emulator image (built from its Dockerfile)
on port 443 with its CA in a shared volume, the example app trusting that CA, and the
references left exactly as they are in Azure (https://contoso-kv.vault.azure.net/...).
"""

from __future__ import annotations

import re
import time
import urllib.error
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from container_helpers import KNOWN_VALUES, REPO, Images, Podman, env_args, free_port, post_score, read_env_file

COMPOSE = REPO / "docker" / "compose.yaml"
READY_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def app_environment(compose: dict[str, Any]) -> dict[str, str]:
    """The app's environment as Compose gives it: env_file, then environment, $$ unescaped."""
    app = compose["services"]["app"]
    env: dict[str, str] = {}
    for name in app.get("env_file", []):
        env.update(read_env_file(COMPOSE.parent / name))
    for name, value in app.get("environment", {}).items():
        env[name] = str(value).replace("$$", "$")
    return env


def test_compose_structure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"base", "emulator", "app"} <= set(services)
    app, emulator = services["app"], services["emulator"]
    assert "127.0.0.1:5001:5001" in app["ports"]
    assert app["build"]["additional_contexts"][app["build"]["args"]["BASE"]] == "service:base"
    # Compose interpolates ${...}: a literal reference must be written $${{ in the file.
    for name, value in app.get("environment", {}).items():
        assert not re.search(r"(?<!\$)\$\{\{", str(value)), f"{name}: write $${{ in compose.yaml"
    env = app_environment(compose)
    # Every host a reference names is a network alias of the emulator.
    aliases = set(emulator["networks"]["azure"]["aliases"])
    hosts = {
        urlparse(match).hostname
        for value in env.values()
        for match in re.findall(r"https://[^\s/}]+", value.replace("keyvault:", " "))
    }
    assert hosts and hosts <= aliases, hosts - aliases
    if any("azureml://" in value for value in env.values()):
        assert "management.azure.com" in aliases
        assert {"AZUREML_ARM_SUBSCRIPTION", "AZUREML_ARM_RESOURCEGROUP", "AZUREML_ARM_WORKSPACE_NAME"} <= set(env)
    # The CA the emulator writes is the one the app trusts, through the shared volume.
    ca_out = emulator["command"][emulator["command"].index("--ca-out") + 1]
    shared = {v.split(":")[0]: v.split(":")[1] for v in emulator["volumes"]}
    app_mounts = {v.split(":")[0]: v.split(":")[1] for v in app["volumes"]}
    (volume,) = [name for name, target in shared.items() if ca_out.startswith(target + "/")]
    in_app = app_mounts[volume] + ca_out[len(shared[volume]) :]
    assert env["REQUESTS_CA_BUNDLE"] == in_app and env["SSL_CERT_FILE"] == in_app
    assert "--https-port" in emulator["command"] and "443" in emulator["command"]
    # The identity endpoint is the emulator, by service name.
    assert env["AZURE_POD_IDENTITY_AUTHORITY_HOST"].startswith("http://emulator:")
    assert set(env["EXPECTED_VARS"].split(",")) <= set(env)


@pytest.fixture
def topology(podman: Podman) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    network, volume = f"sidecar-test-net-{suffix}", f"sidecar-test-ca-{suffix}"
    podman("network", "create", network)
    podman("volume", "create", volume)
    yield network, volume
    for name in list(podman.created):
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False)
    podman("volume", "rm", "--force", volume, check=False)
    podman("network", "rm", "--force", network, check=False)


@pytest.mark.container
def test_compose_topology_with_podman(
    compose: dict[str, Any], podman: Podman, images: Images, topology: tuple[str, str]
) -> None:
    network, volume = topology
    services = compose["services"]
    emulator_image = "localhost/azure-emulator:test"
    podman.build(COMPOSE.parent / services["emulator"]["build"]["context"], emulator_image)

    def mounts(service: dict[str, Any]) -> list[str]:
        args = []
        for spec in service.get("volumes", []):
            source, target, *mode = spec.split(":")
            assert source in compose["volumes"], f"{spec}: only the shared named volume is replayed"
            args += ["-v", ":".join([volume, target, *mode])]
        return args

    init = services["emulator-ca-init"]
    podman(
        "run", "--rm", "--user", init["user"], "--network", "none", *mounts(init),
        "--entrypoint", init["entrypoint"][0], emulator_image, *init["entrypoint"][1:],
    )  # fmt: skip

    emulator = services["emulator"]
    emulator_name = podman.name()
    alias_args = []
    for alias in ["emulator", *emulator["networks"]["azure"]["aliases"]]:
        alias_args += ["--network-alias", alias]
    sysctls = [arg for key, value in emulator["sysctls"].items() for arg in ("--sysctl", f"{key}={value}")]
    podman(
        "run", "--detach", "--name", emulator_name, "--network", network, *alias_args, *sysctls,
        *mounts(emulator), emulator_image, *emulator["command"],
    )  # fmt: skip
    health = emulator["healthcheck"]["test"][1:]
    deadline = time.monotonic() + READY_TIMEOUT_S
    while podman("exec", emulator_name, *health, check=False).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail(f"the emulator is not healthy:\n{podman.logs(emulator_name)[-3000:]}", pytrace=False)
        time.sleep(0.2)

    app = services["app"]
    env = app_environment(compose)
    app_name = podman.name()
    port = free_port()
    podman(
        "run", "--detach", "--name", app_name, "--network", network, "-p", f"127.0.0.1:{port}:5001",
        *mounts(app), *env_args(env), images.example,
    )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            report = post_score(port)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status = podman("container", "inspect", "--format", "{{.State.Status}}", app_name).stdout.strip()
            if status == "exited" or time.monotonic() > deadline:
                pytest.fail(
                    f"the app did not answer /score ({status}):\n{podman.logs(app_name)[-3000:]}\n"
                    f"emulator:\n{podman.logs(emulator_name)[-2000:]}",
                    pytrace=False,
                )
            time.sleep(0.1)
    expected = {name: len(KNOWN_VALUES[name]) for name in env["EXPECTED_VARS"].split(",")}
    got = {name: entry["length"] for name, entry in report["secrets"].items() if not entry["unresolved"]}
    assert got == expected, report
    assert report["sidecar_settings"] == []


def test_env_files_use_both_forms() -> None:
    folder = REPO / "docker" / "example"
    platform, deferred = read_env_file(folder / "platform.env"), read_env_file(folder / "deferred.env")
    assert all("${{" in value for value in platform.values())
    assert all(value.startswith(("keyvault:", "azureml://")) for value in deferred.values())
    assert set(deferred) <= set(platform) <= set(KNOWN_VALUES)
    assert Path(folder / "score.py").is_file()
