"""The sidecar's requests session: SIDECAR_CONNECT_TO rules below TLS and HTTP, proxies read once.

A module of its own so that requests (about 40 ms of imports) is only imported by a run that
fetches something; the rules themselves are parsed in `sidecar.connect_to` on every start.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies

from sidecar.connect_to import DEFAULT_PORTS, ConnectToRule, log


class ConnectToAdapter(HTTPAdapter):
    """A requests adapter that applies connect-to rules below TLS and HTTP."""

    def __init__(self, rules: list[ConnectToRule], *, announce: bool = True, **kwargs: object) -> None:
        self._rules = rules
        self._announce = log.warning if announce else log.debug  # a long-running sidecar warns in its first round
        self._announced: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _rule_for(self, url: str) -> tuple[ConnectToRule, str, int] | None:
        if not self._rules:
            return None
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
        for rule in self._rules:
            if rule.matches(host, port):
                return rule, host, port
        return None

    def build_connection_pool_key_attributes(self, request, verify, cert=None):  # type: ignore[no-untyped-def]
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        routed = self._rule_for(request.url)
        if routed:
            rule, host, _ = routed
            host_params = dict(host_params, host=rule.address, port=rule.address_port)
            if host_params["scheme"] == "https":
                pool_kwargs = dict(pool_kwargs, server_hostname=host, assert_hostname=host)
        return host_params, pool_kwargs

    def send(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        routed = self._rule_for(request.url)
        if routed:
            rule, host, port = routed
            request.headers["Host"] = urlsplit(request.url).netloc.rpartition("@")[2]
            with self._lock:
                first = (host, port) not in self._announced
                self._announced.add((host, port))
            if first:
                self._announce("connect_to", host=host, port=port, connects_to=f"{rule.address}:{rule.address_port}")
        return super().send(request, *args, **kwargs)


class Session(requests.Session):
    """A requests session that reads the proxy settings from the environment once per host.

    requests does it on every request, and it walks the whole environment twice to do it
    (urllib's getproxies_environment and proxy_bypass_environment): with 1,000 references in the
    environment that was over half of the sidecar's CPU time (py-spy). The environment does not
    change while the sidecar runs, so the answer per (scheme, host) is kept. Otherwise the same
    as requests.Session.merge_environment_settings (requests 2.32-2.34).
    """

    def __init__(self) -> None:
        super().__init__()
        self._environ_proxies: dict[tuple[str, str, Any], dict[str, str]] = {}
        self._environ_lock = threading.Lock()
        self._environ_ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
        if not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        no_proxy = proxies.get("no_proxy") if proxies is not None else None
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, no_proxy)
        with self._environ_lock:
            env_proxies = self._environ_proxies.get(key)
            if env_proxies is None:
                env_proxies = self._environ_proxies[key] = get_environ_proxies(url, no_proxy=no_proxy)
        if proxies is not None:
            for name, value in env_proxies.items():
                proxies.setdefault(name, value)
        if verify is True or verify is None:
            verify = self._environ_ca_bundle or verify
        return {
            "proxies": merge_setting(proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }


def new_session(rules: list[ConnectToRule], *, pool_maxsize: int = 10, announce: bool = True) -> requests.Session:
    """A requests session whose connections follow `rules` (none: a plain session) and pool per host.

    `announce`: log each redirected host as a warning (else at debug).
    """
    session = Session()
    adapter = ConnectToAdapter(rules, announce=announce, pool_connections=4, pool_maxsize=pool_maxsize)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
