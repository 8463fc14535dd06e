"""The base image and the example scoring app, run with podman against the host emulator."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from container_helpers import (
    APP_UID,
    KNOWN_VALUES,
    REPO,
    App,
    Images,
    Podman,
    env_args,
    read_env_file,
)

pytestmark = pytest.mark.container

EXAMPLE = REPO / "docker" / "example"
STOP_BOUND_S = 2.0
FAIL_BOUND_S = 90.0


def expected_lengths(names: list[str]) -> dict[str, int]:
    return {name: len(KNOWN_VALUES[name]) for name in names}


def reported_lengths(report: dict[str, Any]) -> dict[str, int]:
    return {
        name: entry["length"]
        for name, entry in report["secrets"].items()
        if entry["present"] and not entry["unresolved"]
    }


@pytest.mark.parametrize(
    ("env_file", "flavour"),
    [("platform.env", "imds"), ("deferred.env", "azureml")],
    ids=["platform-form-imds", "deferred-form-azureml-msi"],
)
def test_score_sees_the_injected_secrets(start_app: Any, sidecar_env: Any, env_file: str, flavour: str) -> None:
    references = read_env_file(EXAMPLE / env_file)
    names = sorted(references)
    app: App = start_app({**sidecar_env(flavour), **references, "EXPECTED_VARS": ",".join(names)})
    report = app.score()
    assert reported_lengths(report) == expected_lengths(names), report
    # The sidecar's own settings do not reach the server.
    assert report["sidecar_settings"] == [], report
    assert report["uid"] == APP_UID


def test_the_server_is_pid_1_and_no_sidecar_is_left(start_app: Any, sidecar_env: Any, podman: Podman) -> None:
    app: App = start_app({**sidecar_env("imds"), **read_env_file(EXAMPLE / "platform.env")})
    processes = app.processes()
    by_pid = {pid: args for pid, _, args in processes}
    assert "1" in by_pid, processes
    assert "azmlinfsrv" in by_pid["1"], f"PID 1 is not the scoring server: {processes}"
    assert not [args for _, _, args in processes if "sidecar" in args], processes
    # The same from inside: every process's command line, from /proc.
    listing = podman(
        "exec",
        app.name,
        "sh",
        "-c",
        'for d in /proc/[0-9]*; do printf "%s " "${d#/proc/}"; tr "\\0" " " <"$d/cmdline"; echo; done',
    ).stdout
    lines = [line for line in listing.splitlines() if line.strip()]
    first = [line for line in lines if line.startswith("1 ")]
    assert first and "azmlinfsrv" in first[0], listing
    assert not [line for line in lines if "/opt/sidecar" in line or "sidecar exec" in line], listing


def test_podman_stop_ends_the_server_through_sigterm(start_app: Any, sidecar_env: Any, podman: Podman) -> None:
    app: App = start_app({**sidecar_env("imds"), **read_env_file(EXAMPLE / "platform.env")})
    started = time.monotonic()
    podman("stop", "--time", "10", app.name)
    elapsed = time.monotonic() - started
    code = podman.exit_code(app.name)
    logs = podman.logs(app.name)
    assert code != 137, f"the server was killed after the stop timeout, not ended by SIGTERM:\n{logs[-3000:]}"
    assert code == 0, f"gunicorn's own exit status after SIGTERM is 0, got {code}:\n{logs[-3000:]}"
    assert elapsed < STOP_BOUND_S, f"podman stop took {elapsed:.2f} s (bound {STOP_BOUND_S} s)"
    assert "Handling signal: term" in logs


@pytest.mark.parametrize(
    ("reference", "code", "fix"),
    [
        ("${{keyvault:https://contoso-kv.vault.azure.net/secrets/no-such-secret}}", 66, None),
        ("${{keyvault:https://restricted-kv.vault.azure.net/secrets/other}}", 77, "Key Vault Secrets User"),
    ],
    ids=["missing-secret-66", "permission-denied-77"],
)
def test_a_failed_reference_stops_the_container_from_starting(
    podman: Podman,
    images: Images,
    emulator_mount: list[str],
    sidecar_env: Any,
    reference: str,
    code: int,
    fix: str | None,
) -> None:
    name = podman.name()
    env = {
        **sidecar_env("imds"),
        "OPENAI_API_KEY": "${{keyvault:https://contoso-kv.vault.azure.net/secrets/openai-key}}",
        "BROKEN_SECRET": reference,
    }
    podman("run", "--detach", "--name", name, "--network=host", *emulator_mount, *env_args(env), images.example)
    exit_code = podman.wait_exited(name, FAIL_BOUND_S)
    logs = podman.logs(name)
    assert exit_code == code, f"expected the sidecar's exit code {code}, got {exit_code}:\n{logs[-3000:]}"
    assert "gunicorn" not in logs and "azmlinfsrv" not in logs, f"the server started:\n{logs[-3000:]}"
    events = []
    for line in logs.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    failed = [e for e in events if isinstance(e, dict) and e.get("variable") == "BROKEN_SECRET"]
    assert failed, f"no JSON log line names the variable BROKEN_SECRET:\n{logs[-3000:]}"
    assert failed[0].get("exit_code") == code, failed[0]
    assert failed[0].get("fix"), f"the failure line gives no fix: {failed[0]}"
    if fix:
        assert fix in failed[0]["fix"], failed[0]
    assert "fake-openai-key" not in logs


def test_runs_as_non_root_and_leaks_no_secret(
    start_app: Any, sidecar_env: Any, podman: Podman, fixture_secret_values: set[str]
) -> None:
    app: App = start_app({**sidecar_env("imds"), **read_env_file(EXAMPLE / "platform.env")})
    assert app.score()["uid"] == APP_UID
    users = {user for _, user, _ in app.processes()}
    assert users and "root" not in users and "0" not in users, users
    inspected = podman.inspect(app.name)
    assert inspected["Config"]["User"] == f"{APP_UID}:{APP_UID}"
    podman("stop", "--time", "10", app.name)
    text = podman.logs(app.name) + json.dumps(podman.inspect(app.name))
    leaked = sorted(value for value in fixture_secret_values if value in text)
    assert not leaked, f"secret values in podman logs/inspect: {len(leaked)} (first starts {leaked[0][:6]!r})"


def test_no_reference_takes_the_fast_path_without_python(podman: Podman, images: Images) -> None:
    # SIDECAR_BIN points nowhere: had the entrypoint started the sidecar, the exec would fail (127).
    probe = 'echo "pid=$$"'
    fast = podman("run", "--rm", "-e", "SIDECAR_BIN=/nonexistent/sidecar", images.base, "sh", "-c", probe, check=False)
    assert fast.returncode == 0, fast.stderr
    assert fast.stdout.strip() == "pid=1", fast.stdout
    # The same with a reference (an odd variable name and a multi-line value): the slow path.
    for env in (
        ["-e", "odd-name.x=${{keyvault:https://contoso-kv.vault.azure.net/secrets/openai-key}}"],
        ["-e", "MULTI=line one\n${{keyvault:https://contoso-kv.vault.azure.net/secrets/openai-key}}"],
        ["-e", "DEFERRED=keyvault:https://contoso-kv.vault.azure.net/secrets/openai-key"],
    ):
        slow = podman(
            "run", "--rm", "-e", "SIDECAR_BIN=/nonexistent/sidecar", *env, images.base, "sh", "-c", probe,
            check=False,
        )  # fmt: skip
        assert slow.returncode == 127, (env, slow.returncode, slow.stdout, slow.stderr)
        assert "pid=" not in slow.stdout


def test_no_command_prints_usage_and_exits_64(podman: Podman, images: Images) -> None:
    result = podman("run", "--rm", images.base, check=False)
    assert result.returncode == 64, (result.stdout, result.stderr)
    assert "usage: entrypoint.sh COMMAND" in result.stderr


def test_the_build_adds_no_certificate(podman: Podman, images: Images) -> None:
    """The host's CA bundle is mounted at build time only: the images keep the base's bundle."""
    bundle = "/etc/ssl/certs/ca-certificates.crt"

    def digest(image: str) -> str:
        out = podman("run", "--rm", "--entrypoint", "cat", image, bundle).stdout
        return hashlib.sha256(out.encode()).hexdigest()

    base = digest("docker.io/library/python:3.11-slim")
    assert digest(images.base) == base
    assert digest(images.example) == base


def test_drop_in_entrypoint_in_a_plain_image(
    podman: Podman,
    images: Images,
    emulator_mount: list[str],
    sidecar_env: Any,
    tmp_path: Path,
) -> None:
    """The README's drop-in recipe: the sidecar venv and entrypoint.sh copied into another image."""
    shutil.copy(REPO / "entrypoint.sh", tmp_path / "entrypoint.sh")
    (tmp_path / "Dockerfile").write_text(
        f"FROM docker.io/library/python:3.11-slim\n"
        f"COPY --from={images.base} /opt/sidecar /opt/sidecar\n"
        "RUN ln -s /opt/sidecar/bin/sidecar /usr/local/bin/sidecar\n"
        "COPY --chmod=0755 entrypoint.sh /entrypoint.sh\n"
        'ENTRYPOINT ["/entrypoint.sh"]\n'
        'CMD ["sh", "-c", "echo pid=$$ openai=${#OPENAI_API_KEY} aoai=${#AOAI_KEY} plain=$PLAIN"]\n',
        encoding="utf-8",
    )
    tag = "localhost/sidecar-dropin:test"
    podman.build(tmp_path, tag)
    env = {
        **sidecar_env("imds"),
        "OPENAI_API_KEY": "${{keyvault:https://contoso-kv.vault.azure.net/secrets/openai-key}}",
        "AOAI_KEY": "azureml://connections/aoai-conn/credentials/key",
        "PLAIN": "kept",
    }
    result = podman("run", "--rm", "--network=host", *emulator_mount, *env_args(env), tag, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = f"pid=1 openai={len(KNOWN_VALUES['OPENAI_API_KEY'])} aoai={len(KNOWN_VALUES['AOAI_KEY'])} plain=kept"
    assert result.stdout.strip() == expected
    # Without references it needs no sidecar at all.
    fast = podman("run", "--rm", "-e", "SIDECAR_BIN=/nonexistent", tag, "sh", "-c", "echo pid=$$", check=False)
    assert (fast.returncode, fast.stdout.strip()) == (0, "pid=1"), fast.stderr


def wait_for_log(podman: Podman, name: str, needle: str, timeout: float = 60) -> str:
    """Bounded polling of `podman logs` until a line contains needle."""
    deadline = time.monotonic() + timeout
    while True:
        logs = podman.logs(name)
        if needle in logs:
            return logs
        if time.monotonic() > deadline:
            pytest.fail(f"no {needle!r} in the logs of {name} after {timeout:g} s:\n{logs[-3000:]}", pytrace=False)
        time.sleep(0.1)


def test_drop_in_with_runsvdir_like_a_curated_image(
    podman: Podman,
    images: Images,
    emulator_mount: list[str],
    sidecar_env: Any,
    tmp_path: Path,
) -> None:
    """The README's curated-image recipe: the sidecar pip-installed from the lock and a wheel
    into its own venv, ENTRYPOINT entrypoint.sh, CMD runsvdir /var/runit, a non-root user; the
    services that runsvdir starts inherit the resolved environment."""
    source = tmp_path / "src"
    shutil.copytree(REPO / "sidecar", source / "sidecar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", source)
    readme = REPO / "README.md"
    (source / "README.md").write_text(readme.read_text(encoding="utf-8") if readme.exists() else "")
    shutil.copy(REPO / "requirements.txt", tmp_path)
    shutil.copy(REPO / "entrypoint.sh", tmp_path)
    run_script = '#!/bin/sh\\necho "service openai=${#OPENAI_API_KEY} user=$(id -un)"\\nexec sleep 600\\n'
    (tmp_path / "Dockerfile").write_text(
        "FROM docker.io/library/python:3.11-slim AS wheel\n"
        "COPY src /src\n"
        "RUN python3 -m pip wheel --no-cache-dir --disable-pip-version-check --no-deps -w /dist /src\n"
        "\n"
        "# A stand-in for the curated image: runit, a non-root dockeruser, a service in /var/runit.\n"
        "FROM docker.io/library/python:3.11-slim\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends runit"
        " && rm -rf /var/lib/apt/lists/* && useradd --no-log-init --create-home dockeruser"
        f" && mkdir -p /var/runit/app && printf '{run_script}' >/var/runit/app/run"
        " && chmod 0755 /var/runit/app/run && chown -R dockeruser /var/runit\n"
        "# The recipe.\n"
        "USER root\n"
        "COPY requirements.txt /tmp/sidecar/requirements.txt\n"
        "RUN python3 -m venv /opt/sidecar && /opt/sidecar/bin/pip install --no-cache-dir"
        " --disable-pip-version-check --no-deps -r /tmp/sidecar/requirements.txt\n"
        "COPY --from=wheel /dist/ /tmp/sidecar/\n"
        "RUN /opt/sidecar/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps"
        " /tmp/sidecar/aml_secret_sidecar-*.whl && ln -s /opt/sidecar/bin/sidecar /usr/local/bin/sidecar"
        " && rm -rf /tmp/sidecar\n"
        "COPY --chmod=0755 entrypoint.sh /entrypoint.sh\n"
        "USER dockeruser\n"
        'ENTRYPOINT ["/entrypoint.sh"]\n'
        'CMD ["runsvdir", "/var/runit"]\n',
        encoding="utf-8",
    )
    tag = "localhost/sidecar-runit:test"
    podman.build(tmp_path, tag)
    name = podman.name()
    env = {**sidecar_env("imds"), "OPENAI_API_KEY": "keyvault:https://contoso-kv.vault.azure.net/secrets/openai-key"}
    podman("run", "--detach", "--name", name, "--network=host", *emulator_mount, *env_args(env), tag)
    logs = wait_for_log(podman, name, "service openai=")
    expected = f"service openai={len(KNOWN_VALUES['OPENAI_API_KEY'])} user=dockeruser"
    assert expected in logs, logs[-3000:]
    top = podman("top", name, "pid", "args").stdout
    assert re.search(r"^\s*1\s+runsvdir /var/runit", top, re.MULTILINE), top
    started = time.monotonic()
    podman("stop", "--time", "10", name)
    elapsed = time.monotonic() - started
    assert podman.exit_code(name) == 0
    assert elapsed < STOP_BOUND_S, f"podman stop took {elapsed:.2f} s"


def test_a_server_without_a_sigterm_handler_needs_init(podman: Podman, images: Images) -> None:
    """As PID 1, `sleep` ignores SIGTERM (no handler): killed at the timeout (137). With --init
    (catatonit as PID 1) the signal reaches it and it ends at once (143)."""
    bare, init = podman.name(), podman.name()
    podman("run", "--detach", "--name", bare, images.base, "sleep", "600")
    podman("run", "--detach", "--init", "--name", init, images.base, "sleep", "600")
    for name in (bare, init):
        top = podman("top", name, "pid", "args").stdout
        assert "sleep 600" in top, top
    podman("stop", "--time", "1", bare)
    assert podman.exit_code(bare) == 137
    started = time.monotonic()
    podman("stop", "--time", "10", init)
    elapsed = time.monotonic() - started
    assert podman.exit_code(init) == 143
    assert elapsed < STOP_BOUND_S, f"podman stop --init took {elapsed:.2f} s"
