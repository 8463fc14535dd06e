"""The hand-written baseline: what a user writes from the Azure docs instead of the sidecar.

`python bench/baseline.py CMD [ARG...]`: ManagedIdentityCredential, one SecretClient per vault,
`get_secret` for each `keyvault:` reference in turn, a sequential ARM List Secrets POST for each
`azureml://connections/` reference, then execve(CMD). The SDKs' defaults stay as they are
(their own retry policy included).

The one thing a user would not write: `_EmulatorAdapter`, which connects to the local emulator
instead of the real hosts (TLS SNI and certificate checks keep the real names). It only changes
where the TCP connection goes.
"""

import os
import re
import sys

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from requests.adapters import HTTPAdapter

REFERENCE = re.compile(
    r"(?:\$\{\{)?(keyvault:https://([^/]+)/secrets/([^/}]+)|azureml://connections/([^/}]+)/?([^}]*))(?:\}\})?"
)


class _EmulatorAdapter(HTTPAdapter):
    """Route https://<any host> to the emulator's HTTPS port (bench plumbing, not part of the baseline)."""

    def __init__(self, address: str, port: int) -> None:
        self._address, self._port = address, port
        super().__init__(pool_maxsize=4)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host = host_params["host"]
        host_params = dict(host_params, host=self._address, port=self._port)
        return host_params, dict(pool_kwargs, server_hostname=host, assert_hostname=host)

    def send(self, request, *args, **kwargs):
        request.headers["Host"] = request.url.split("/")[2]
        return super().send(request, *args, **kwargs)


def _session() -> requests.Session:
    rule = os.environ["SIDECAR_CONNECT_TO"].split(",")[0]
    _, _, address, port = rule.split(":")
    session = requests.Session()
    session.mount("https://", _EmulatorAdapter(address, int(port)))
    return session


def main() -> None:
    session = _session()
    credential = ManagedIdentityCredential(client_id=os.environ.get("DEFAULT_IDENTITY_CLIENT_ID"))
    clients: dict[str, SecretClient] = {}
    workspace = (
        f"https://management.azure.com/subscriptions/{os.environ.get('AZUREML_ARM_SUBSCRIPTION')}"
        f"/resourceGroups/{os.environ.get('AZUREML_ARM_RESOURCEGROUP')}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{os.environ.get('AZUREML_ARM_WORKSPACE_NAME')}"
    )
    for name, value in list(os.environ.items()):
        match = REFERENCE.fullmatch(value)
        if not match:
            continue
        if match.group(2):
            vault = f"https://{match.group(2)}"
            if vault not in clients:
                transport = RequestsTransport(session=session, session_owner=False)
                clients[vault] = SecretClient(vault, credential, transport=transport)
            os.environ[name] = clients[vault].get_secret(match.group(3)).value
        else:
            token = credential.get_token("https://management.azure.com/.default").token
            response = session.post(
                f"{workspace}/connections/{match.group(4)}/listsecrets?api-version=2024-04-01",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            response.raise_for_status()
            properties = response.json()["properties"]
            kind, _, field = match.group(5).partition("/")
            if kind == "target":
                os.environ[name] = properties["target"]
            else:
                credentials = properties["credentials"]
                os.environ[name] = (credentials.get("keys") or credentials)[field]
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
