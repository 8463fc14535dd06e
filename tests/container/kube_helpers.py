"""Replaying docker/kubernetes/*.yaml with `podman kube play` (podman 4.3): what a copy must change.

The examples are what a user deploys on AKS. podman is not Kubernetes, so the test plays a rewritten
copy; every rewrite is one function here, and says why:

- names: the Deployment gets a unique name (the pod is `<name>-pod-0`, its containers
  `<name>-pod-0-<container>`), replicas 1 (podman makes one pod per replica, all on one host);
- images: the test's own builds (the base image for the sidecar, the example app for the server);
- network: hostNetwork, so that the emulator on the host's loopback is reachable; the server's --port
  (and its probe) is a free port instead of 5001, and its `ports` go (podman refuses port mappings on
  the host network, where Kubernetes takes containerPort as information only);
- emptyDir with medium: Memory: podman 4.3 ignores `medium` and makes a volume on disk, which the
  sidecar rightly refuses (and of mode 0755, where kubelet's is 0777). A podman volume of type tmpfs
  does not do either: podman unmounts it when the init container exits, so the server would find it
  empty (podman issue #29555 says the same of later versions' medium: Memory). So each becomes a
  hostPath: a directory of mode 0777 on the host's /dev/shm (a tmpfs), which is what kubelet does too
  (a tmpfs on the node, bind-mounted into each container). Its sizeLimit is not applied;
- init containers: podman removes an init container once it has run ("once", its default), so its
  exit code could not be read; the annotation io.podman.annotations.init.container.type: always keeps
  it. podman also applies the pod's restartPolicy to init containers (a Deployment's Always would run
  `render` again after its success), so the copy has restartPolicy: Never: nothing is restarted, where
  kubelet would restart a failed init container with back-off and an exited server;
- workload identity: there is no mutating webhook in podman. `inject_workload_identity` does what
  the azure-workload-identity webhook does for a pod labelled azure.workload.identity/use: "true"
  (AZURE_CLIENT_ID from the service account's annotation, AZURE_TENANT_ID, AZURE_AUTHORITY_HOST,
  AZURE_FEDERATED_TOKEN_FILE and the token mounted at /var/run/secrets/azure/tokens, in every
  container not named in azure.workload.identity/skip-containers). The token is not a projected
  service-account token from an API server but one the emulator minted for
  system:serviceaccount:default:scoring, mounted read-only from a hostPath; the annotation's client id
  becomes the emulator's workload identity. The same containers get the emulator's address
  (SIDECAR_CONNECT_TO: the real Azure host names, sent to the emulator) and its CA (a hostPath file);
- native sidecars (secrets-sidecar.yaml only): see `native_sidecar_as_container`.

The tests add their own edits on top (EXPECTED_VARS for the example app's score.py, a 1 s refresh
interval, a missing secret), each commented where it is made.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

WORKLOAD_CLIENT_ID = "77777777-7777-4777-8777-777777777777"  # the emulator fixture's identity `workload`
ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-4000-8000-0000000000c1/"
)
SUBJECT = "system:serviceaccount:default:scoring"
# Where the azure-workload-identity webhook mounts the projected token, and the file's name.
TOKEN_DIR = "/var/run/secrets/azure/tokens"
TOKEN_FILE = f"{TOKEN_DIR}/azure-identity-token"
USE_LABEL = "azure.workload.identity/use"
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
SKIP_ANNOTATION = "azure.workload.identity/skip-containers"
INIT_TYPE_ANNOTATION = "io.podman.annotations.init.container.type"

Documents = list[dict[str, Any]]


def load(path: Path) -> Documents:
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


def deployment(documents: Documents) -> dict[str, Any]:
    [found] = [document for document in documents if document["kind"] == "Deployment"]
    return found


def pod_spec(documents: Documents) -> dict[str, Any]:
    return deployment(documents)["spec"]["template"]["spec"]


def containers(documents: Documents) -> Iterator[dict[str, Any]]:
    spec = pod_spec(documents)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def container(documents: Documents, name: str) -> dict[str, Any]:
    [found] = [item for item in containers(documents) if item["name"] == name]
    return found


def set_env(item: dict[str, Any], values: dict[str, str]) -> None:
    """Set (or replace) environment entries of one container, keeping their order."""
    env = [entry for entry in item.setdefault("env", []) if entry["name"] not in values]
    item["env"] = env + [{"name": name, "value": value} for name, value in values.items()]


def env_of(item: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: str(entry["value"]) for entry in item.get("env", [])}


def rename(documents: Documents, name: str) -> str:
    """A unique Deployment name and one replica; returns the pod's name (podman: `<name>-pod-0`)."""
    found = deployment(documents)
    found["metadata"]["name"] = name
    found["spec"]["replicas"] = 1
    return f"{name}-pod-0"


def keep_init_containers(documents: Documents) -> None:
    # podman 4.3 reads this annotation from the Deployment's own metadata (the template's is ignored).
    deployment(documents)["metadata"].setdefault("annotations", {})[INIT_TYPE_ANNOTATION] = "always"
    # podman applies the pod's restart policy to init containers too: with a Deployment's Always it starts
    # `render` again after its success, racing the server. kubelet runs an init container to success once.
    pod_spec(documents)["restartPolicy"] = "Never"


def memory_volumes(documents: Documents, directory: Callable[[str], Path]) -> None:
    """Every emptyDir with medium: Memory becomes a hostPath: `directory(name)`, a directory on a tmpfs."""
    for volume in pod_spec(documents)["volumes"]:
        empty_dir = volume.get("emptyDir")
        if empty_dir is not None and empty_dir.get("medium") == "Memory":
            del volume["emptyDir"]
            volume["hostPath"] = {"path": str(directory(volume["name"])), "type": "Directory"}


def host_network(documents: Documents) -> None:
    pod_spec(documents)["hostNetwork"] = True


def serve_on(item: dict[str, Any], port: int) -> None:
    """azmlinfsrv on `port` (host network: 5001 may be taken): in its command line and its probes."""
    # Leading "azmlinfsrv", or an "exec azmlinfsrv ..." at the end of a `sh -c` script.
    for key in ("args", "command"):
        words = item.get(key)
        if words and words[0] == "azmlinfsrv":
            if "--port" in words:
                words = words[: words.index("--port")] + words[words.index("--port") + 2 :]
            item[key] = [*words, "--port", str(port)]
            break
        if words and words[:2] == ["sh", "-c"] and "exec azmlinfsrv" in words[-1]:
            item[key] = [*words[:-1], f"{words[-1]} --port {port}"]
            break
    else:
        raise AssertionError(f"no azmlinfsrv command line in container {item['name']}")
    # With hostNetwork, Kubernetes takes containerPort as information; podman 4.3 refuses any port mapping.
    item.pop("ports", None)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if "httpGet" in item.get(probe, {}):
            item[probe]["httpGet"]["port"] = port


def inject_workload_identity(
    documents: Documents, *, client_id: str, tenant_id: str, authority_host: str, token_dir: Path
) -> list[str]:
    """What the azure-workload-identity webhook does to a labelled pod; returns the mutated containers.

    The service account's client id annotation is first set to `client_id` (the emulator's identity, as a
    user puts their own there)."""
    template = deployment(documents)["spec"]["template"]
    assert template["metadata"]["labels"].get(USE_LABEL) == "true", "the webhook mutates only labelled pods"
    spec = template["spec"]
    [account] = [
        document
        for document in documents
        if document["kind"] == "ServiceAccount" and document["metadata"]["name"] == spec["serviceAccountName"]
    ]
    account["metadata"]["annotations"][CLIENT_ID_ANNOTATION] = client_id
    skipped = set(template["metadata"].get("annotations", {}).get(SKIP_ANNOTATION, "").split(";"))
    spec["volumes"].append({"name": "azure-identity-token", "hostPath": {"path": str(token_dir), "type": "Directory"}})
    mutated = []
    for item in containers(documents):
        if item["name"] in skipped:
            continue
        set_env(
            item,
            {
                "AZURE_CLIENT_ID": account["metadata"]["annotations"][CLIENT_ID_ANNOTATION],
                "AZURE_TENANT_ID": tenant_id,
                "AZURE_FEDERATED_TOKEN_FILE": TOKEN_FILE,
                "AZURE_AUTHORITY_HOST": authority_host,
            },
        )
        item.setdefault("volumeMounts", []).append(
            {"name": "azure-identity-token", "mountPath": TOKEN_DIR, "readOnly": True}
        )
        mutated.append(item["name"])
    return mutated


def reach_emulator(documents: Documents, names: list[str], env: dict[str, str], ca_file: Path, ca_path: str) -> None:
    """The emulator's address and CA for the containers that call Azure (those the webhook mutated)."""
    pod_spec(documents)["volumes"].append({"name": "emulator-ca", "hostPath": {"path": str(ca_file), "type": "File"}})
    for name in names:
        item = container(documents, name)
        set_env(item, {**env, "REQUESTS_CA_BUNDLE": ca_path, "SSL_CERT_FILE": ca_path})
        item.setdefault("volumeMounts", []).append({"name": "emulator-ca", "mountPath": ca_path, "readOnly": True})


def native_sidecar_as_container(documents: Documents, name: str, ready_file: str, bound_s: int) -> None:
    """podman 4.3 has no native sidecars: it ignores an init container's restartPolicy and every startupProbe
    (later versions refuse probes on init containers), so `render --watch`, which never exits, would hold the
    pod in its init phase for ever. The sidecar becomes the pod's first regular container, and the startup
    probe's ordering (the server starts once the env file exists) becomes a bounded wait in front of the
    server's command."""
    spec = pod_spec(documents)
    sidecar = container(documents, name)
    assert sidecar.pop("restartPolicy") == "Always"
    probe = sidecar.pop("startupProbe")
    assert probe["exec"]["command"] == ["test", "-f", ready_file], probe
    spec["initContainers"] = [item for item in spec["initContainers"] if item["name"] != name]
    if not spec["initContainers"]:
        del spec["initContainers"]
    for server in spec["containers"]:
        command = [*server.get("command", []), *server.get("args", [])]
        wait = f"timeout {bound_s} sh -c 'until test -f {ready_file}; do sleep 0.1; done' || exit 1; exec "
        server["command"] = ["sh", "-c", wait + shlex.join(command)]
        server.pop("args", None)
    spec["containers"].insert(0, sidecar)


def write(documents: Documents, path: Path) -> Path:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    return path
