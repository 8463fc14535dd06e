"""Helpers for the emulator's own tests: raw HTTP(S) sessions and tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests
from azure_emulator.launcher import EmulatorProcess

from sidecar.connect_to import parse_connect_to
from sidecar.session import new_session


@pytest.fixture
def https(emulator: EmulatorProcess) -> Iterator[requests.Session]:
    """A session that reaches the emulated Key Vault/ARM hosts with TLS verification on."""
    session = new_session(parse_connect_to(emulator.connect_to))
    session.verify = emulator.ca_bundle
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify
    with session:
        yield session


@pytest.fixture
def token(emulator: EmulatorProcess) -> Callable[..., str]:
    """token(resource, client_id=None): a token from the emulated IMDS."""

    def get(resource: str, client_id: str | None = None) -> str:
        params = {"api-version": "2018-02-01", "resource": resource}
        if client_id:
            params["client_id"] = client_id
        response = requests.get(
            emulator.imds_authority + "/metadata/identity/oauth2/token",
            params=params,
            headers={"Metadata": "true"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    return get
