"""docker/kubernetes/*.yaml run for real with `podman kube play`: the images, the commands, the mounts and the
security settings as written, against the host emulator with a workload identity.

podman is not Kubernetes: kube_helpers.py lists every rewrite of the copy the test plays, and why. Where
podman cannot show what Kubernetes does, the assert messages and comments say so:

- init containers run in order before the regular ones (podman does this itself), but a failing one is not
  retried with back-off as kubelet does (Init:CrashLoopBackOff): `podman kube play` fails once, naming the
  init container's exit code, and the server is never started;
- native sidecars (restartPolicy: Always on an init container, startup probes) do not exist in podman 4.3:
  the sidecar is played as a regular container and the server waits for the env file itself;
- no API server: no service-account token is ever mounted (automountServiceAccountToken cannot be shown to
  matter), and the workload identity webhook is replayed by the test (kube_helpers.inject_workload_identity);
- readiness and startup probes are ignored by podman 4.3 (`podman inspect` shows no healthcheck for them):
  the test polls /score itself.

Every wait is bounded and polls. Everything podman printed (kube play, logs, inspect) is checked for the
fixture's values, the rotated value and the minted service-account token.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kube_helpers as kube
import pytest
from container_helpers import (
    CONTAINER_CA,
    KNOWN_VALUES,
    REPO,
    Images,
    Podman,
    free_port,
    post_score,
    sidecar_events,
    wait_for,
)

pytestmark = pytest.mark.container

KUBERNETES = REPO / "docker" / "kubernetes"
INIT_EXAMPLE = KUBERNETES / "secrets-init.yaml"
SIDECAR_EXAMPLE = KUBERNETES / "secrets-sidecar.yaml"
SUPERVISE_EXAMPLE = KUBERNETES / "secrets-supervise.yaml"
SHM = Path("/dev/shm")  # a tmpfs on Linux hosts, where the emptyDirs with medium: Memory go
PLAY_TIMEOUT_S = 120  # kube play returns once the containers have started (after the init containers' ends)
WAIT_S = 60.0
ROTATION_BOUND_S = 60.0
ROTATED = "fake-db-password-rotated-in-a-pod"
ENDPOINT = "https://contoso-aoai.openai.azure.com/"  # aoai-conn's target in the emulator fixture
SIDECAR_EXIT_NOT_FOUND = 66  # sidecar/errors.py: a secret that does not exist


@dataclass
class Played:
    """One `podman kube play` of a rewritten example."""

    podman: Podman
    pod: str
    result: subprocess.CompletedProcess[str]
    port: int
    secrets: set[str]
    outputs: list[str] = field(default_factory=list)

    def name(self, container: str) -> str:
        return f"{self.pod}-{container}"

    def state(self, container: str, key: str) -> str:
        """One field of the container's State (a Go template path, e.g. FinishedAt.UnixNano)."""
        template = f"{{{{.State.{key}}}}}"
        return self.podman("container", "inspect", "--format", template, self.name(container)).stdout.strip()

    def logs(self, container: str) -> str:
        return self.podman.logs(self.name(container))

    def all_logs(self) -> str:
        names = self.podman("ps", "--all", "--filter", f"pod={self.pod}", "--format", "{{.Names}}").stdout.split()
        return "\n".join(f"== {name}\n{self.podman.logs(name)}" for name in names)

    def sh(self, container: str, script: str) -> str:
        """A script in the running container (what the container itself sees); its stdout."""
        result = self.podman("exec", self.name(container), "sh", "-c", script)
        self.outputs.append(result.stdout + result.stderr)
        return result.stdout

    def score(self) -> dict[str, Any] | None:
        try:
            return post_score(self.port)
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return None

    def wait_for_score(self) -> dict[str, Any]:
        return wait_for(self.score, f"/score on port {self.port}", WAIT_S, self.all_logs)

    def assert_no_leak(self) -> None:
        """No secret value, rotated value or token in kube play's output, any container's logs or inspect."""
        names = self.podman("ps", "--all", "--filter", f"pod={self.pod}", "--format", "{{.Names}}").stdout.split()
        text = self.result.stdout + self.result.stderr + "".join(self.outputs)
        for name in names:
            text += self.podman.logs(name) + json.dumps(self.podman.inspect(name))
        leaked = sorted(value for value in self.secrets if value in text)
        assert not leaked, f"secret values in podman's output: {len(leaked)} (first starts {leaked[0][:6]!r})"


@pytest.fixture
def play(
    podman: Podman,
    images: Images,
    emulator: Any,
    fixture_secret_values: set[str],
    tmp_path: Path,
) -> Iterator[Callable[..., Played]]:
    """play(example, edit=None): the example rewritten for podman (kube_helpers), `edit` applied last."""
    pods: list[str] = []
    directories: list[Path] = []

    def memory_dir(name: str) -> Path:
        """An emptyDir with medium: Memory as kubelet makes it: a directory of mode 0777 on a tmpfs."""
        path = SHM / name
        path.mkdir()
        path.chmod(0o777)  # not subject to the umask, as mkdir's mode is
        directories.append(path)
        return path

    # The token the emulator's cluster issuer minted for system:serviceaccount:default:scoring, readable by
    # uid 10001 inside, as kubelet's projected token is (mode 0644 in the webhook's volume).
    token_dir = tmp_path / "tokens"
    token_dir.mkdir(mode=0o755)
    assertion = emulator.admin.mint_assertion(issuer=kube.ISSUER, subject=kube.SUBJECT, expires_in=3600)["assertion"]
    (token_dir / Path(kube.TOKEN_FILE).name).write_text(assertion, encoding="utf-8")
    (token_dir / Path(kube.TOKEN_FILE).name).chmod(0o644)
    ca_file = tmp_path / "ca" / "ca.pem"
    ca_file.parent.mkdir(mode=0o755)
    shutil.copyfile(emulator.ca_bundle, ca_file)
    ca_file.chmod(0o644)
    workload = emulator.env("workload")

    def run(example: Path, edit: Callable[[kube.Documents], None] | None = None) -> Played:
        documents = kube.load(example)
        name = f"sidecar-test-{uuid.uuid4().hex[:10]}"
        pod = kube.rename(documents, name)
        pods.append(pod)
        kube.host_network(documents)
        kube.keep_init_containers(documents)
        kube.memory_volumes(documents, lambda volume: memory_dir(f"{name}-{volume}"))
        for item in kube.containers(documents):
            item["image"] = images.base if item["image"].startswith("sidecar:") else images.example
        mutated = kube.inject_workload_identity(
            documents,
            client_id=kube.WORKLOAD_CLIENT_ID,
            tenant_id=workload["AZURE_TENANT_ID"],
            authority_host=workload["AZURE_AUTHORITY_HOST"],
            token_dir=token_dir,
        )
        kube.reach_emulator(
            documents, mutated, {"SIDECAR_CONNECT_TO": workload["SIDECAR_CONNECT_TO"]}, ca_file, CONTAINER_CA
        )
        port = free_port()
        kube.serve_on(kube.container(documents, "server"), port)
        if edit is not None:
            edit(documents)
        path = kube.write(documents, tmp_path / f"{name}.yaml")
        try:
            result = podman("kube", "play", str(path), check=False, timeout=PLAY_TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            result = subprocess.CompletedProcess(error.cmd, -1, "", f"timed out after {PLAY_TIMEOUT_S} s")
        played = Played(podman, pod, result, port, secrets={*fixture_secret_values, assertion, ROTATED})
        if result.returncode == -1:
            played.assert_no_leak()
            pytest.fail(f"podman kube play {example.name}: {result.stderr}; logs:\n{played.all_logs()[-4000:]}")
        return played

    yield run
    for pod in pods:
        podman("pod", "rm", "--force", "--time", "0", pod, check=False)
    for path in directories:
        # The files are the container user's: without root, only podman's user namespace may remove them.
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            podman("unshare", "rm", "-rf", str(path), check=False)


def expect_server(documents: kube.Documents, names: list[str]) -> None:
    """The example app's score.py reports the length of each EXPECTED_VARS variable (never its value)."""
    kube.set_env(kube.container(documents, "server"), {"EXPECTED_VARS": ",".join(names)})


def lengths(report: dict[str, Any]) -> dict[str, int]:
    return {name: entry["length"] for name, entry in report["secrets"].items() if entry["present"]}


def assert_locked_down(played: Played, container: str) -> None:
    """What the container sees of its own settings: user, root filesystem, capabilities, no token."""
    view = played.sh(
        container,
        "id -u; id -g; touch /probe 2>/dev/null && echo writable || echo read-only; "
        "grep CapEff /proc/self/status | cut -f2; grep NoNewPrivs /proc/self/status | cut -f2; "
        "test -e /var/run/secrets/kubernetes.io && echo api-token || echo no-api-token",
    ).split()
    assert view == ["10001", "10001", "read-only", "0000000000000000", "1", "no-api-token"], (container, view)


BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def assert_as_deployed(played: Played, example: Path, container: str) -> None:
    """podman applied the example's security context and memory limit (read with podman inspect: this works
    for an init container that has exited too)."""
    info = played.podman.inspect(played.name(container))
    limit = kube.container(kube.load(example), container)["resources"]["limits"]["memory"]
    expected = int(limit[:-2]) * BINARY_SUFFIXES[limit[-2:]]
    seen = {
        "user": info["Config"]["User"],
        "read-only root": info["HostConfig"]["ReadonlyRootfs"],
        "capabilities": info["EffectiveCaps"] or [],
        "no-new-privileges": "no-new-privileges" in (info["HostConfig"]["SecurityOpt"] or []),
        "memory limit": info["HostConfig"]["Memory"],
    }
    assert seen == {
        "user": "10001:10001",
        "read-only root": True,
        "capabilities": [],
        "no-new-privileges": True,
        "memory limit": expected,
    }, container


def test_the_init_container_renders_into_memory_and_the_server_starts_after_it(
    play: Callable[..., Played], emulator: Any
) -> None:
    names = ["AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "DB_PASSWORD", "FEATURE_FLAGS"]
    started = time.monotonic()
    played = play(INIT_EXAMPLE, lambda documents: expect_server(documents, names))
    print(f"podman kube play of secrets-init.yaml: {time.monotonic() - started:.1f} s")
    assert played.result.returncode == 0, played.result.stderr[-4000:] + played.all_logs()[-4000:]
    # podman ran the init container to its end before it started the server, as kubelet does.
    assert played.state("secrets", "Status") == "exited" and played.state("secrets", "ExitCode") == "0"
    finished = int(played.state("secrets", "FinishedAt.UnixNano"))
    assert finished <= int(played.state("server", "StartedAt.UnixNano")), "the server started before the init"
    report = played.wait_for_score()
    # The server sourced the env file the init container wrote (FEATURE_FLAGS: its default, {}).
    assert lengths(report) == {
        "AZURE_OPENAI_API_KEY": len(KNOWN_VALUES["OPENAI_API_KEY"]),
        "AZURE_OPENAI_ENDPOINT": len(ENDPOINT),
        "DB_PASSWORD": len(KNOWN_VALUES["DB_PASSWORD"]),
        "FEATURE_FLAGS": len("{}"),
    }, report
    assert report["uid"] == 10001 and report["sidecar_settings"] == [], report
    # The server's view of the volume: a tmpfs (the rewritten emptyDir), the sidecar's 0700 directory, 0400 files.
    view = played.sh(
        "server",
        "stat -f -c %T /run/secrets/app; stat -c %a:%u /run/secrets/app/values /run/secrets/app/values/DB_PASSWORD; "
        "test -w /run/secrets/app && echo writable || echo read-only",
    ).split()
    assert view == ["tmpfs", "700:10001", "400:10001", "read-only"], view
    assert_locked_down(played, "server")
    assert_as_deployed(played, INIT_EXAMPLE, "server")
    assert_as_deployed(played, INIT_EXAMPLE, "secrets")
    # azure.workload.identity/skip-containers: the server got neither the token nor the variables.
    server_env = {entry.partition("=")[0] for entry in played.podman.inspect(played.name("server"))["Config"]["Env"]}
    assert not server_env & {"AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"}, server_env
    assert played.sh("server", f"test -e {kube.TOKEN_DIR} && echo token || echo none").split() == ["none"]
    # The sidecar exchanged the service-account token at Entra, for the identity the annotation names.
    [identity] = sidecar_events(played.logs("secrets"), "identity")
    assert (identity["flavour"], identity["client_id"]) == ("workload_identity", kube.WORKLOAD_CLIENT_ID), identity
    assert set(emulator.admin.counters()["token_requests"]) == {kube.WORKLOAD_CLIENT_ID}
    played.assert_no_leak()


def test_a_failing_reference_keeps_the_server_from_starting(play: Callable[..., Played]) -> None:
    def missing_secret(documents: kube.Documents) -> None:
        kube.set_env(
            kube.container(documents, "secrets"),
            {"DB_PASSWORD": "keyvault:https://contoso-kv.vault.azure.net/secrets/no-such-secret"},
        )

    played = play(INIT_EXAMPLE, missing_secret)
    # kubelet would restart the init container with back-off and keep the pod in Init:Error/CrashLoopBackOff;
    # podman does not retry: kube play fails once and names the init container's exit code.
    assert played.result.returncode != 0, played.result.stdout
    code = int(played.state("secrets", "ExitCode"))
    assert code == SIDECAR_EXIT_NOT_FOUND, played.logs("secrets")[-4000:]
    assert f"exited with code {code}" in played.result.stderr, played.result.stderr[-4000:]
    [failed] = sidecar_events(played.logs("secrets"), "failed")
    assert failed["exit_code"] == code and "DB_PASSWORD" in json.dumps(failed), failed
    # The server was created and never started.
    assert played.state("server", "Status") in {"created", "configured"}, played.state("server", "Status")
    assert played.state("server", "StartedAt.IsZero") == "true"
    assert played.logs("server") == ""
    played.assert_no_leak()


def test_the_native_sidecar_keeps_the_files_current(play: Callable[..., Played], emulator: Any) -> None:
    documents = kube.load(SIDECAR_EXAMPLE)
    command = kube.container(documents, "secrets")["command"]
    values = command[command.index("--dir") + 1]
    env_file = command[command.index("--env-file") + 1]

    def as_podman_runs_it(documents: kube.Documents) -> None:
        # No native sidecars in podman 4.3 (kube_helpers.native_sidecar_as_container): a regular container,
        # and the server waits for the env file as the startup probe would make kubelet wait.
        kube.native_sidecar_as_container(documents, "secrets", env_file, int(WAIT_S))
        # The smallest interval, so that a rotation shows within the test's bound (the example's is 300 s).
        kube.set_env(kube.container(documents, "secrets"), {"SIDECAR_REFRESH_INTERVAL": "1"})

    played = play(SIDECAR_EXAMPLE, as_podman_runs_it)
    assert played.result.returncode == 0, played.result.stderr[-4000:] + played.all_logs()[-4000:]
    played.wait_for_score()  # the server started once the env file was there
    assert played.state("secrets", "Status") == "running", played.logs("secrets")[-4000:]

    def server_view() -> list[str]:
        """Modes, owner and lengths the server container sees (read-only mount, same user): never a value."""
        return played.sh(
            "server",
            f"set -a; . {env_file}; set +a; cd {values}; "
            'echo "$(stat -f -c %T .) $(stat -c %a .) $(stat -c %a:%u DB_PASSWORD)" "${#DB_PASSWORD}" '
            '"$(wc -c <DB_PASSWORD)" "${#AZURE_OPENAI_API_KEY}" "${#AZURE_OPENAI_ENDPOINT}"',
        ).split()

    openai, endpoint = len(KNOWN_VALUES["OPENAI_API_KEY"]), len(ENDPOINT)
    before = len(KNOWN_VALUES["DB_PASSWORD"])
    assert server_view() == ["tmpfs", "700", "400:10001", *map(str, (before, before, openai, endpoint))]
    assert_locked_down(played, "server")
    assert_locked_down(played, "secrets")
    assert_as_deployed(played, SIDECAR_EXAMPLE, "server")
    assert_as_deployed(played, SIDECAR_EXAMPLE, "secrets")
    assert played.sh("server", f"test -e {kube.TOKEN_DIR} && echo token || echo none").split() == ["none"]

    emulator.admin.add_version("contoso-kv", "db-password", ROTATED)
    after = len(ROTATED)
    expected = ["tmpfs", "700", "400:10001", *map(str, (after, after, openai, endpoint))]
    wait_for(lambda: server_view() == expected, "the rewritten files", ROTATION_BOUND_S, played.all_logs)
    assert [event["variable"] for event in sidecar_events(played.logs("secrets"), "changed")] == ["DB_PASSWORD"]
    # Only the workload identity was used, through Entra (no IMDS).
    assert set(emulator.admin.counters()["token_requests"]) == {kube.WORKLOAD_CLIENT_ID}
    # kubelet stops a native sidecar after the server, with SIGTERM; podman stops the pod's containers
    # together. Either way the sidecar leaves with 128+15.
    played.podman("pod", "stop", "--time", "10", played.pod)
    assert played.state("secrets", "ExitCode") == "143", played.logs("secrets")[-4000:]
    played.assert_no_leak()


def test_the_supervise_deployment_runs_the_server_under_the_sidecar(play: Callable[..., Played], emulator: Any) -> None:
    names = ["AZURE_OPENAI_API_KEY", "DB_PASSWORD", "AZURE_OPENAI_ENDPOINT"]
    played = play(SUPERVISE_EXAMPLE, lambda documents: expect_server(documents, names))
    assert played.result.returncode == 0, played.result.stderr[-4000:] + played.all_logs()[-4000:]
    report = played.wait_for_score()
    assert lengths(report) == {
        "AZURE_OPENAI_API_KEY": len(KNOWN_VALUES["OPENAI_API_KEY"]),
        "DB_PASSWORD": len(KNOWN_VALUES["DB_PASSWORD"]),
        "AZURE_OPENAI_ENDPOINT": len(ENDPOINT),
    }, report
    # SIDECAR_MODE and SIDECAR_REFRESH_INTERVAL stay with the sidecar.
    assert report["uid"] == 10001 and report["sidecar_settings"] == [], report
    # The image's entrypoint chose supervise: PID 1 is the sidecar, the server its child.
    pid1 = played.sh("server", "tr '\\0' ' ' </proc/1/cmdline")
    assert "sidecar supervise -- azmlinfsrv" in pid1, pid1
    assert_locked_down(played, "server")
    assert_as_deployed(played, SUPERVISE_EXAMPLE, "server")
    [identity] = sidecar_events(played.logs("server"), "identity")
    assert (identity["flavour"], identity["client_id"]) == ("workload_identity", kube.WORKLOAD_CLIENT_ID), identity
    assert set(emulator.admin.counters()["token_requests"]) == {kube.WORKLOAD_CLIENT_ID}
    # SIGTERM to PID 1 (what kubelet sends): the sidecar passes it on and leaves with the server's code.
    played.podman("pod", "stop", "--time", "10", played.pod)
    assert played.state("server", "ExitCode") == "0", played.logs("server")[-4000:]
    played.assert_no_leak()
