"""The shipped Kubernetes example stays consistent with the sidecar it documents."""

from __future__ import annotations

from pathlib import Path

import yaml

from sidecar.references import parse_variable

EXAMPLE = Path(__file__).resolve().parents[2] / "docker" / "kubernetes" / "secrets-init.yaml"


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
