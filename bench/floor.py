"""The floor: the least a Python process must do to start CMD with one Key Vault secret.

`python bench/floor.py CMD [ARG...]`: interpreter start, the stdlib modules the path needs
(ssl, http.client, json), one token request to IMDS, one TLS connection and one GET to the
vault with that token (no challenge round trip: the audience is known from the host), then
execve(CMD). It handles the first `keyvault:` reference in the environment only, whatever N is:
with unlimited parallelism, N fetches cost one round trip, so this is the unavoidable part.

Bench-only and deliberately naive (no retries, no checks beyond TLS verification).
"""

import http.client
import json
import os
import socket
import ssl
import sys
from urllib.parse import quote, urlsplit


def main() -> None:
    env = dict(os.environ)
    name, reference = next((k, v) for k, v in env.items() if "keyvault:" in v)
    url = reference[reference.index("keyvault:") + len("keyvault:") :].removesuffix("}}")
    parts = urlsplit(url)
    host, secret = parts.hostname, parts.path.split("/")[2]

    imds = urlsplit(env["AZURE_POD_IDENTITY_AUTHORITY_HOST"])
    connection = http.client.HTTPConnection(imds.hostname, imds.port, timeout=30)
    connection.request(
        "GET",
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + quote("https://vault.azure.net", safe=""),
        headers={"Metadata": "true"},
    )
    token = json.loads(connection.getresponse().read())["access_token"]

    # SIDECAR_CONNECT_TO's Key Vault rule: HOST:PORT:ADDRESS:PORT2 (the emulator).
    rule = next(r for r in env["SIDECAR_CONNECT_TO"].split(",") if r.startswith("*.vault.azure.net:"))
    _, _, address, port = rule.split(":")
    context = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    vault = http.client.HTTPSConnection(host, timeout=30)
    vault.sock = context.wrap_socket(socket.create_connection((address, int(port))), server_hostname=host)
    vault.request("GET", f"/secrets/{secret}?api-version=7.4", headers={"Authorization": f"Bearer {token}"})
    response = vault.getresponse()
    if response.status != 200:
        sys.exit(f"floor: HTTP {response.status}")
    env[name] = json.loads(response.read())["value"]
    os.execve(sys.argv[1] if "/" in sys.argv[1] else _which(sys.argv[1], env), sys.argv[1:], env)


def _which(command: str, env: dict) -> str:
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory, command)
        if os.access(path, os.X_OK):
            return path
    sys.exit(f"floor: {command} not found")


if __name__ == "__main__":
    main()
