"""SIDECAR_MODE=supervise in real containers: the sidecar stays as PID 1, the server is its child.

The example image (azmlinfsrv, whose /score reports each EXPECTED_VARS variable's length, never
its value) runs against the host emulator with SIDECAR_REFRESH_INTERVAL=1 (the smallest interval
accepted): a secret rotated in the emulator reaches the server through a restart, `podman stop`
ends the container with the server's own exit code, and the process tree is sidecar -> server.
Every wait is bounded and polls; nothing sleeps to synchronise. Whatever the containers printed
(and `podman inspect`) is checked for every secret value, the rotated ones included.
"""

from __future__ import annotations

import json
import time
import urllib.error
import uuid
from collections.abc import Callable, Collection, Iterator
from typing import Any

import pytest
import yaml
from container_helpers import KNOWN_VALUES, REPO, App, Images, Podman, env_args, read_env_file, sidecar_events, wait_for

pytestmark = pytest.mark.container

EXAMPLE = REPO / "docker" / "example"
SUPERVISE = {"SIDECAR_MODE": "supervise", "SIDECAR_REFRESH_INTERVAL": "1"}
# Rotated value of db-password: another length than the fixture's, so that /score shows the change.
ROTATED = "fake-db-password-rotated-in-a-container"
ROTATION_BOUND_S = 60.0  # a round every ~1 s, then a restart of azmlinfsrv (a few seconds)
STOP_BOUND_S = 5.0  # the sidecar passes TERM on, gunicorn stops its workers, the sidecar follows
WAIT_S = 60.0
# What azmlinfsrv (gunicorn's arbiter) exits with after SIGTERM, as the sidecar's child: measured, and
# the same as when it is PID 1 itself (test_container_images.test_podman_stop_ends_the_server_through_sigterm).
AZMLINFSRV_TERM_EXIT = 0


def assert_no_leak(podman: Podman, name: str, secrets: Collection[str], *more: str) -> None:
    """The leak check of test_container_images: no secret value in podman logs/inspect (nor in `more`)."""
    text = podman.logs(name) + json.dumps(podman.inspect(name)) + "".join(more)
    leaked = sorted(value for value in secrets if value in text)
    assert not leaked, f"secret values in podman logs/inspect: {len(leaked)} (first starts {leaked[0][:6]!r})"


def lengths(report: dict[str, Any]) -> dict[str, int]:
    return {
        name: entry["length"]
        for name, entry in report["secrets"].items()
        if entry["present"] and not entry["unresolved"]
    }


def score_or_none(app: App) -> dict[str, Any] | None:
    """/score's answer, or None while the server restarts (refused, reset, timed out)."""
    try:
        return app.score()
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def processes_inside(podman: Podman, name: str) -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) of every process in the container, read from /proc inside it.

    (One line per process: this very script's command line has newlines, so whitespace is collapsed.)"""
    script = (
        "import os\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        stat = open(f'/proc/{pid}/stat').read()\n"
        "        args = ' '.join(open(f'/proc/{pid}/cmdline', 'rb').read().decode().replace('\\0', ' ').split())\n"
        "    except OSError:\n"
        "        continue\n"
        "    print(pid, stat.rpartition(')')[2].split()[1], args)\n"
    )
    listing = podman("exec", name, "python3", "-c", script).stdout
    table = {}
    for line in listing.splitlines():
        pid, ppid, args = [*line.split(None, 2), ""][:3]
        table[int(pid)] = (int(ppid), args)
    return table


def stop_when_done(podman: Podman, names: list[str]) -> None:
    """A supervised container keeps reading the shared emulator every second: none may outlive its test
    (later tests count the emulator's requests)."""
    for name in names:
        podman("stop", "--time", "10", name, check=False)


@pytest.fixture
def supervised_app(start_app: Any, sidecar_env: Any, podman: Podman) -> Iterator[Callable[..., App]]:
    """The example app under `sidecar supervise`, with every secret of platform.env, ready."""
    names: list[str] = []

    def start(**extra: str) -> App:
        app = start_app({**sidecar_env("imds"), **read_env_file(EXAMPLE / "platform.env"), **SUPERVISE, **extra})
        names.append(app.name)
        return app

    yield start
    stop_when_done(podman, names)


def test_a_rotated_secret_reaches_the_server(
    supervised_app: Any, emulator: Any, podman: Podman, fixture_secret_values: set[str]
) -> None:
    app: App = supervised_app()
    before = lengths(app.score())
    assert before == {name: len(value) for name, value in KNOWN_VALUES.items()}, before
    version = emulator.admin.add_version("contoso-kv", "db-password", ROTATED)
    # DB_PASSWORD is the secret itself; DB_URL embeds it in longer text (the platform form).
    expected = {
        **before,
        "DB_PASSWORD": len(ROTATED),
        "DB_URL": len(KNOWN_VALUES["DB_URL"].replace(KNOWN_VALUES["DB_PASSWORD"], ROTATED)),
    }
    assert expected["DB_PASSWORD"] != before["DB_PASSWORD"]

    def rotated() -> dict[str, int] | None:
        report = score_or_none(app)
        return report and lengths(report) == expected and lengths(report)

    started = time.monotonic()
    wait_for(rotated, "/score to report the rotated lengths", ROTATION_BOUND_S, lambda: podman.logs(app.name))
    print(f"rotation reached /score in {time.monotonic() - started:.1f} s")
    logs = podman.logs(app.name)
    changed = sidecar_events(logs, "changed")
    assert {event["variable"] for event in changed} == {"DB_PASSWORD", "DB_URL"}, changed
    assert all(event["versions"] == [version] for event in changed), changed
    # One change, one restart (the values are in the environment: no signal could change them).
    assert len(sidecar_events(logs, "restarting")) == 1, logs[-4000:]
    stopped = sidecar_events(logs, "stopped for restart")
    assert len(stopped) == 1 and stopped[0]["exit_code"] == AZMLINFSRV_TERM_EXIT, stopped
    assert len(sidecar_events(logs, "started")) == 2
    # The container itself never restarted: still the same PID 1, still running.
    assert podman.inspect(app.name)["State"]["Status"] == "running"
    assert app.score()["sidecar_settings"] == []  # SIDECAR_* stay out of the restarted server too
    podman("stop", "--time", "10", app.name)
    assert_no_leak(podman, app.name, {*fixture_secret_values, ROTATED})


def test_podman_stop_ends_the_container_with_the_server_s_exit_code(
    supervised_app: Any, podman: Podman, fixture_secret_values: set[str]
) -> None:
    app: App = supervised_app()
    pid = wait_for(
        lambda: sidecar_events(podman.logs(app.name), "started"), "the sidecar's 'started' event", WAIT_S,
        lambda: podman.logs(app.name),
    )[0]["pid"]  # fmt: skip
    started = time.monotonic()
    podman("stop", "--time", "10", app.name)  # SIGTERM to PID 1: the sidecar
    elapsed = time.monotonic() - started
    waited = podman("wait", app.name).stdout.strip()
    code = podman.exit_code(app.name)
    logs = podman.logs(app.name)
    print(f"azmlinfsrv under the sidecar: exit code {code} after SIGTERM, podman stop took {elapsed:.2f} s")
    assert code != 137, f"killed at the stop timeout, not ended by SIGTERM:\n{logs[-4000:]}"
    assert waited == str(code)
    # The sidecar passed TERM to the server's process group and left with the server's own exit code.
    forwarded = sidecar_events(logs, "signal")
    assert [(e["signal"], e.get("to"), e.get("pid")) for e in forwarded] == [("SIGTERM", "child process group", pid)], (
        forwarded
    )
    [exited] = sidecar_events(logs, "child exited")
    assert (exited["pid"], exited["exit_code"]) == (pid, code), exited
    assert code == AZMLINFSRV_TERM_EXIT, f"azmlinfsrv exited {code} after SIGTERM:\n{logs[-4000:]}"
    assert "Handling signal: term" in logs  # gunicorn's arbiter got it
    assert elapsed < STOP_BOUND_S, f"podman stop took {elapsed:.2f} s (bound {STOP_BOUND_S} s)"
    assert_no_leak(podman, app.name, fixture_secret_values)


# sh as PID 1 would ignore SIGTERM (no handler, see test_a_server_without_a_sigterm_handler_needs_init);
# under the sidecar it gets it: killed by it (128+15), or its trap's exit code.
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        pytest.param("echo child-ready; exec sleep 600", 143, id="no-handler-143"),
        pytest.param('trap "exit 7" TERM; echo child-ready; sleep 600 & wait $!', 7, id="trap-exit-7"),
    ],
)
def test_the_container_exits_with_the_child_s_code_or_128_plus_its_signal(
    podman: Podman,
    images: Images,
    emulator_mount: list[str],
    sidecar_env: Any,
    fixture_secret_values: set[str],
    request: pytest.FixtureRequest,
    script: str,
    expected: int,
) -> None:
    name = podman.name()
    request.addfinalizer(lambda: stop_when_done(podman, [name]))
    env = {
        **sidecar_env("imds"),
        **SUPERVISE,
        "OPENAI_API_KEY": "${{keyvault:https://contoso-kv.vault.azure.net/secrets/openai-key}}",
    }
    podman(
        "run", "--detach", "--name", name, "--network=host", *emulator_mount, *env_args(env),
        images.base, "sh", "-c", script,
    )  # fmt: skip
    wait_for(lambda: "child-ready" in podman.logs(name), "the child's 'child-ready'", WAIT_S, lambda: podman.logs(name))
    started = time.monotonic()
    podman("stop", "--time", "10", name)
    elapsed = time.monotonic() - started
    assert podman.exit_code(name) == expected, podman.logs(name)[-4000:]
    assert elapsed < STOP_BOUND_S, f"podman stop took {elapsed:.2f} s"
    assert_no_leak(podman, name, fixture_secret_values)


def test_the_sidecar_is_pid_1_and_the_server_its_child(
    supervised_app: Any, podman: Podman, fixture_secret_values: set[str]
) -> None:
    app: App = supervised_app()
    table = processes_inside(podman, app.name)
    ppid, args = table[1]
    assert ppid == 0 and "sidecar supervise -- azmlinfsrv" in args, table
    # The server (gunicorn's arbiter, in azmlinfsrv) is PID 1's child; its workers (the same command
    # line) are its children. A refresh round is a fork of the sidecar, with the sidecar's command line.
    servers = {pid: parent for pid, (parent, args) in table.items() if "azmlinfsrv" in args and "sidecar" not in args}
    children = [pid for pid, parent in servers.items() if parent == 1]
    assert len(children) == 1, f"azmlinfsrv is not (once) PID 1's child: {table}"
    [server] = children
    workers = [pid for pid, parent in servers.items() if parent == server]
    assert workers and set(servers) == {server, *workers}, table
    # The same from outside, with `podman top` (the host's view of the container's PID namespace).
    top = podman("top", app.name, "pid", "ppid", "user", "args").stdout.splitlines()[1:]
    rows = {int(pid): (int(parent), user, rest) for pid, parent, user, rest in (line.split(None, 3) for line in top)}
    assert "sidecar supervise" in rows[1][2] and rows[server][0] == 1, top
    users = {user for _, user, _ in rows.values()}
    assert users and users <= {"app", "10001"}, top  # non-root, the sidecar included
    assert_no_leak(podman, app.name, fixture_secret_values, "\n".join(top), json.dumps(table))


# The Kubernetes native sidecar (docker/kubernetes/secrets-sidecar.yaml), replayed with podman: its
# command and environment as written, the emptyDir as a shared tmpfs volume of mode 0777, a
# read-only root filesystem, no capability, the same non-root user in both containers.

K8S_SIDECAR = REPO / "docker" / "kubernetes" / "secrets-sidecar.yaml"
APP_USER = "10001:10001"
LOCKED_DOWN = ["--read-only", "--read-only-tmpfs=false", "--cap-drop=all", "--security-opt=no-new-privileges"]


def test_the_kubernetes_render_watch_sidecar_rewrites_the_files_on_rotation(
    podman: Podman,
    images: Images,
    emulator_mount: list[str],
    sidecar_env: Any,
    emulator: Any,
    fixture_secret_values: set[str],
    request: pytest.FixtureRequest,
) -> None:
    [deployment] = [d for d in yaml.safe_load_all(K8S_SIDECAR.read_text(encoding="utf-8")) if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    sidecar = next(c for c in spec["initContainers"] if c.get("restartPolicy") == "Always")
    server = spec["containers"][0]
    mount = next(m["mountPath"] for m in sidecar["volumeMounts"] if m["name"] == "secrets")
    assert mount == next(m["mountPath"] for m in server["volumeMounts"] if m["name"] == "secrets")
    command = sidecar["command"]
    values = command[command.index("--dir") + 1]
    probe = sidecar["startupProbe"]["exec"]["command"]
    env = {**{item["name"]: item["value"] for item in sidecar["env"]}, **sidecar_env("imds")}
    env["SIDECAR_REFRESH_INTERVAL"] = "1"

    volume, name = f"sidecar-test-{uuid.uuid4().hex[:10]}", podman.name()

    def clean_up() -> None:
        stop_when_done(podman, [name])
        podman("rm", "--force", "--time", "0", name, check=False)
        podman("volume", "rm", "--force", volume, check=False)

    request.addfinalizer(clean_up)
    # An emptyDir with medium: Memory, as kubelet makes it: a tmpfs of mode 0777.
    podman("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", "o=mode=0777", volume)
    podman(
        "run", "--detach", "--name", name, "--network=host", "--user", APP_USER, *LOCKED_DOWN,
        "-v", f"{volume}:{mount}", *emulator_mount, *env_args(env),
        "--entrypoint", command[0], images.base, *command[1:],
    )  # fmt: skip
    wait_for(
        lambda: podman("exec", name, *probe, check=False).returncode == 0, "the startup probe to pass", WAIT_S,
        lambda: podman.logs(name),
    )  # fmt: skip

    def server_view() -> list[str]:
        """What the server container sees (read-only mount, same user): lengths and modes, never a value."""
        script = (
            f"set -a; . {values}/.env; set +a; cd {values}; "
            'echo "$(stat -c %a .) $(stat -c %a:%u DB_PASSWORD)" "${#DB_PASSWORD}" "$(wc -c <DB_PASSWORD)" '
            '"${#AZURE_OPENAI_API_KEY}" "$(wc -c <AZURE_OPENAI_API_KEY)" "${#AZURE_OPENAI_ENDPOINT}"'
        )
        result = podman(
            "run", "--rm", "--user", APP_USER, *LOCKED_DOWN, "-v", f"{volume}:{mount}:ro", images.base, "sh", "-c",
            script,
        )  # fmt: skip
        return result.stdout.split()

    endpoint = len("https://contoso-aoai.openai.azure.com/")
    openai = len(KNOWN_VALUES["OPENAI_API_KEY"])
    before = len(KNOWN_VALUES["DB_PASSWORD"])
    assert server_view() == ["700", "400:10001", *map(str, (before, before, openai, openai, endpoint))]
    rss = podman("exec", name, "grep", "VmRSS", "/proc/1/status").stdout.split()[1]
    print(f"render --watch as PID 1: VmRSS {int(rss) // 1024} MiB")

    emulator.admin.add_version("contoso-kv", "db-password", ROTATED)
    after = len(ROTATED)
    expected = ["700", "400:10001", *map(str, (after, after, openai, openai, endpoint))]
    wait_for(lambda: server_view() == expected, "the rewritten files", ROTATION_BOUND_S, lambda: podman.logs(name))
    assert [event["variable"] for event in sidecar_events(podman.logs(name), "changed")] == ["DB_PASSWORD"]
    # kubelet stops a sidecar container with SIGTERM once the server has stopped: 128+15.
    podman("stop", "--time", "10", name)
    assert podman.exit_code(name) == 143, podman.logs(name)[-4000:]
    assert_no_leak(podman, name, {*fixture_secret_values, ROTATED})
