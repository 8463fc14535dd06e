"""Run by test_emulator_clients.py in a child process, so the real, unmodified Azure clients read
the emulator's environment at construction. argv[1]: JSON list of operations; prints JSON results.

  ["secret", vault_url, name, version_or_null]  -> SecretClient.get_secret
  ["arm", url]                                  -> ManagedIdentityCredential token + POST listsecrets
"""

from __future__ import annotations

import json
import os
import sys

from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from sidecar.connect_to import parse_connect_to
from sidecar.session import new_session


def main() -> None:
    client_id = os.environ.get("PROBE_CLIENT_ID") or None
    credential = ManagedIdentityCredential(client_id=client_id)
    session = new_session(parse_connect_to(os.environ["SIDECAR_CONNECT_TO"]))
    results = []
    for operation in json.loads(sys.argv[1]):
        if operation[0] == "secret":
            _, vault_url, name, version = operation
            client = SecretClient(
                vault_url,
                credential,
                transport=RequestsTransport(session=session, session_owner=False),
                verify_challenge_resource=True,
            )
            secret = client.get_secret(name, version)
            results.append({"value": secret.value, "version": secret.properties.version, "id": secret.id})
        else:
            token = credential.get_token("https://management.azure.com/.default").token
            response = session.post(
                operation[1],
                params={"api-version": "2024-04-01"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            results.append({"status": response.status_code, "body": response.json()})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
