"""The shipped Kubernetes examples stay consistent with the sidecar they document.

secrets-init.yaml: `sidecar render` as a plain init container (resolve once, at start).
secrets-sidecar.yaml: `sidecar render --watch` as a native sidecar container (an init container
with restartPolicy: Always) that rewrites the files when a value changes.
secrets-supervise.yaml: the base image's entrypoint with SIDECAR_MODE=supervise, one container.
All three use workload identity (a ServiceAccount `scoring` annotated with the client id, the pod
labelled for the webhook). tests/container/test_container_kubernetes.py runs each of them with
`podman kube play`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar import workload
from sidecar.identity import identity_flavour
from sidecar.references import parse_variable
from sidecar.settings import load_refresh_settings, load_settings

KUBERNETES = Path(__file__).resolve().parents[2] / "docker" / "kubernetes"
EXAMPLE = KUBERNETES / "secrets-init.yaml"
SIDECAR_EXAMPLE = KUBERNETES / "secrets-sidecar.yaml"
SUPERVISE_EXAMPLE = KUBERNETES / "secrets-supervise.yaml"
EXAMPLES = [EXAMPLE, SIDECAR_EXAMPLE, SUPERVISE_EXAMPLE]
# What the azure-workload-identity webhook injects besides AZURE_CLIENT_ID (the service account's annotation).
WEBHOOK_ENV = {
    "AZURE_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/",
    "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
}
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
SKIP_ANNOTATION = "azure.workload.identity/skip-containers"


def _documents(path: Path) -> dict[str, dict[str, Any]]:
    """The example's documents by kind (one of each)."""
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document]
    kinds = {document["kind"]: document for document in documents}
    assert len(kinds) == len(documents), f"{path.name}: one document per kind"
    return kinds


def _spec(path: Path) -> dict[str, Any]:
    return _documents(path)["Deployment"]["spec"]["template"]["spec"]


def _sidecar_example():
    """The pod spec, the sidecar container and the server container of secrets-sidecar.yaml."""
    spec = _spec(SIDECAR_EXAMPLE)
    [sidecar] = spec["initContainers"]
    [server] = spec["containers"]
    return spec, sidecar, server


def _option(command, name):
    return Path(command[command.index(name) + 1])


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: str(item["value"]) for item in container.get("env", [])}


def _webhook_env(path: Path) -> dict[str, str]:
    """What the webhook adds to each container it mutates, the client id from the example's service account."""
    account = _documents(path)["ServiceAccount"]
    return {"AZURE_CLIENT_ID": account["metadata"]["annotations"][CLIENT_ID_ANNOTATION], **WEBHOOK_ENV}


def _sidecar_container(path: Path) -> dict[str, Any]:
    """The container that runs the sidecar: the init/native sidecar container, or the supervise one."""
    spec = _spec(path)
    return (spec.get("initContainers") or spec["containers"])[0]


def test_init_container_renders_to_an_in_memory_volume_the_server_reads():
    spec = _spec(EXAMPLE)
    volume = next(volume for volume in spec["volumes"] if volume["name"] == "secrets")
    assert volume["emptyDir"]["medium"] == "Memory"
    [init] = spec["initContainers"]
    assert "restartPolicy" not in init, "a plain init container: it runs to its end before the server starts"
    assert init["command"][:2] == ["sidecar", "render"] and "--watch" not in init["command"]
    directory = _option(init["command"], "--dir")
    env_file = _option(init["command"], "--env-file")
    mount = Path(init["volumeMounts"][0]["mountPath"])
    # kubelet makes an emptyDir 0777, which the sidecar refuses: both go to a subdirectory it creates.
    assert directory.parent == mount and env_file.parent == directory and env_file.name.startswith(".")
    [server] = spec["containers"]
    assert {"name": "secrets", "mountPath": str(mount), "readOnly": True} in server["volumeMounts"]
    assert str(env_file) in server["command"][-1]
    references = [parse_variable(item["name"], item["value"]) for item in init["env"]]
    assert sum(variable is not None for variable in references) == 4, "every reference in the example parses"


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


def test_native_sidecar_references_can_change():
    _, sidecar, _ = _sidecar_example()
    env = _env(sidecar)
    variables = [variable for name, value in env.items() if (variable := parse_variable(name, value))]
    assert len(variables) == 3, "every reference in the example parses"
    # Nothing pinned to a version: each one is read again every interval (else --watch would have nothing to do).
    assert all(reference.can_change for variable in variables for reference in variable.references)
    assert load_refresh_settings(env).interval_s == float(env["SIDECAR_REFRESH_INTERVAL"])


def test_supervise_runs_the_server_under_the_base_image_s_entrypoint():
    spec = _spec(SUPERVISE_EXAMPLE)
    [server] = spec["containers"]
    assert "initContainers" not in spec, "one container: the sidecar is PID 1 of the server's own"
    # No command: it would replace the image's ENTRYPOINT (entrypoint.sh), and nothing would resolve the references.
    assert "command" not in server and server["args"][0] == "azmlinfsrv"
    env = _env(server)
    assert env["SIDECAR_MODE"] == "supervise"
    variables = [variable for name, value in env.items() if (variable := parse_variable(name, value))]
    assert len(variables) == 3, "every reference in the example parses"
    assert load_refresh_settings(env).interval_s == float(env["SIDECAR_REFRESH_INTERVAL"])
    port = int(server["args"][server["args"].index("--port") + 1])
    assert server["readinessProbe"]["httpGet"]["port"] == port == server["ports"][0]["containerPort"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_settings_load_with_what_the_webhook_injects(path: Path):
    """The sidecar's environment plus the webhook's: valid settings, workload identity, the annotation's client id."""
    env = {**_env(_sidecar_container(path)), **_webhook_env(path)}
    settings = load_settings(env)  # raises on any invalid SIDECAR_* setting
    assert not isinstance(settings.workspace, Exception), settings.workspace  # the connection references need it
    assert identity_flavour(env)[0] == "workload_identity"
    # No SIDECAR_CLIENT_ID / DEFAULT_IDENTITY_CLIENT_ID: the client id is the service account's annotation.
    assert settings.client_id is None
    identity = workload.load(env, settings.client_id, settings.client_id_source, list(settings.connect_to))
    assert (identity.client_id, identity.client_id_source) == (env["AZURE_CLIENT_ID"], "AZURE_CLIENT_ID")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_the_pod_uses_workload_identity_and_no_api_token(path: Path):
    documents = _documents(path)
    account = documents["ServiceAccount"]
    template = documents["Deployment"]["spec"]["template"]
    spec = template["spec"]
    assert spec["serviceAccountName"] == account["metadata"]["name"] == "scoring"
    assert CLIENT_ID_ANNOTATION in account["metadata"]["annotations"]
    # The webhook mutates only pods with the label, a string "true" (a YAML boolean is not a label value).
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    # No Kubernetes API token anywhere: the workload identity token is a projected volume of its own.
    assert account["automountServiceAccountToken"] is False and spec["automountServiceAccountToken"] is False
    # The token goes only where the sidecar runs: skip-containers names every other container.
    sidecar = _sidecar_container(path)["name"]
    others = {item["name"] for item in [*spec.get("initContainers", []), *spec["containers"]]} - {sidecar}
    skipped = set(filter(None, template["metadata"].get("annotations", {}).get(SKIP_ANNOTATION, "").split(";")))
    assert skipped == others, f"{path.name}: skip-containers {sorted(skipped)}, other containers {sorted(others)}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_container_is_locked_down(path: Path):
    spec = _spec(path)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0 and pod["seccompProfile"]["type"] == "RuntimeDefault"
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    for container in containers:
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
    server = next(container for container in containers if container["name"] == "server")
    for mount in server["volumeMounts"]:
        assert volumes[mount["name"]]["emptyDir"]["medium"] == "Memory", mount
    assert any(mount["mountPath"] == "/tmp" for mount in server["volumeMounts"])
