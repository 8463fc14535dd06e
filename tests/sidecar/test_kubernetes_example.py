"""The shipped Kubernetes examples stay consistent with the sidecar they document.

secrets-init.yaml: `sidecar render` as a plain init container (resolve once, at start).
secrets-sidecar.yaml: `sidecar render --watch` as a native sidecar container (an init container
with restartPolicy: Always) that rewrites the files when a value changes; tests/container
replays it with podman (test_container_supervise).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sidecar.references import parse_variable
from sidecar.settings import load_refresh_settings, load_settings

KUBERNETES = Path(__file__).resolve().parents[2] / "docker" / "kubernetes"
EXAMPLE = KUBERNETES / "secrets-init.yaml"
SIDECAR_EXAMPLE = KUBERNETES / "secrets-sidecar.yaml"


def test_init_container_renders_to_an_in_memory_volume_the_server_reads():
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]["template"]["spec"]
    volume = next(volume for volume in spec["volumes"] if volume["name"] == "secrets")
    assert volume["emptyDir"]["medium"] == "Memory"
    init = spec["initContainers"][0]
    assert init["command"][:2] == ["sidecar", "render"]
    directory = Path(init["command"][init["command"].index("--dir") + 1])
    env_file = Path(init["command"][init["command"].index("--env-file") + 1])
    mount = Path(init["volumeMounts"][0]["mountPath"])
    # kubelet makes an emptyDir 0777, which the sidecar refuses: both go to a subdirectory it creates.
    assert directory.parent == mount and env_file.parent == directory and env_file.name.startswith(".")
    server = spec["containers"][0]
    assert server["volumeMounts"][0] == {"name": "secrets", "mountPath": str(mount), "readOnly": True}
    assert str(env_file) in server["command"][-1]
    references = [parse_variable(item["name"], item["value"]) for item in init["env"]]
    assert sum(variable is not None for variable in references) == 4, "every reference in the example parses"


def _sidecar_example():
    """The pod spec, the sidecar container and the server container of secrets-sidecar.yaml."""
    spec = yaml.safe_load(SIDECAR_EXAMPLE.read_text())["spec"]["template"]["spec"]
    [sidecar] = spec["initContainers"]
    [server] = spec["containers"]
    return spec, sidecar, server


def _option(command, name):
    return Path(command[command.index(name) + 1])


def test_native_sidecar_watches_and_renders_to_an_in_memory_volume_the_server_reads():
    spec, sidecar, server = _sidecar_example()
    # A native sidecar: an init container that keeps running (Kubernetes 1.29+), started before the server.
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"][:3] == ["sidecar", "render", "--watch"]
    volume = next(volume for volume in spec["volumes"] if volume["name"] == "secrets")
    assert volume["emptyDir"]["medium"] == "Memory"
    directory = _option(sidecar["command"], "--dir")
    env_file = _option(sidecar["command"], "--env-file")
    [mount] = [m for m in sidecar["volumeMounts"] if m["name"] == "secrets"]
    assert not mount.get("readOnly")
    mount_path = Path(mount["mountPath"])
    # kubelet makes an emptyDir 0777, which the sidecar refuses: both go to a subdirectory it creates.
    assert directory.parent == mount_path and env_file.parent == directory and env_file.name.startswith(".")
    # The server starts only once every file is there: the env file is written last.
    assert sidecar["startupProbe"]["exec"]["command"] == ["test", "-f", str(env_file)]
    assert {"name": "secrets", "mountPath": str(mount_path), "readOnly": True} in server["volumeMounts"]
    # The server reads the files the sidecar keeps current, and holds no reference itself.
    assert {"name": "SECRETS_DIR", "value": str(directory)} in server["env"]
    assert all(parse_variable(item["name"], str(item["value"])) is None for item in server["env"])


def test_native_sidecar_references_can_change_and_its_settings_are_valid():
    _, sidecar, _ = _sidecar_example()
    env = {item["name"]: str(item["value"]) for item in sidecar["env"]}
    variables = [variable for name, value in env.items() if (variable := parse_variable(name, value))]
    assert len(variables) == 3, "every reference in the example parses"
    # Nothing pinned to a version: each one is read again every interval (else --watch would have nothing to do).
    assert all(reference.can_change for variable in variables for reference in variable.references)
    settings = load_settings(env)  # raises on any invalid SIDECAR_* setting
    assert settings.client_id == env["SIDECAR_CLIENT_ID"]
    assert not isinstance(settings.workspace, Exception), settings.workspace  # the connection needs it
    assert load_refresh_settings(env).interval_s == float(env["SIDECAR_REFRESH_INTERVAL"])


def test_native_sidecar_example_is_locked_down():
    spec, sidecar, server = _sidecar_example()
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0 and pod["seccompProfile"]["type"] == "RuntimeDefault"
    # The identity comes from IMDS: no Kubernetes API token in the pod.
    assert spec["automountServiceAccountToken"] is False
    for container in (sidecar, server):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        # Both as the user that owns the files (mode 0400 in a 0700 directory): the pod's, never overridden.
        assert "runAsUser" not in context and "runAsGroup" not in context, container["name"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], container["name"]
    # Every writable path of the server is an in-memory emptyDir (gunicorn needs a writable /tmp).
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for mount in server["volumeMounts"]:
        assert volumes[mount["name"]]["emptyDir"]["medium"] == "Memory", mount
    assert any(mount["mountPath"] == "/tmp" for mount in server["volumeMounts"])
