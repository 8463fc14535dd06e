"""`SIDECAR_CONNECT_TO`: curl `--connect-to` for the sidecar's HTTP session.

A request for HOST:PORT opens its TCP connection to ADDRESS:PORT2 instead, while
TLS SNI, certificate verification and the Host header keep HOST. That lets local
runs and tests reach the emulator with the references unchanged and with TLS
verification on. ADDRESS must be loopback, so the setting can never send a
token to another machine.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from sidecar.errors import ConfigurationError

if TYPE_CHECKING:
    import requests

# requests (~40 ms of imports) is only imported once a session is made: settings import this
# module on every start, including the ones with no reference to fetch.

log = structlog.get_logger("sidecar.connect_to")

DEFAULT_PORTS = {"https": 443, "http": 80}
SETTING = "SIDECAR_CONNECT_TO"


@dataclass(frozen=True)
class ConnectToRule:
    host: str  # "" matches every host; "*.example.net" matches every host under example.net
    port: int | None  # None matches every port
    address: str
    address_port: int

    def matches(self, host: str, port: int) -> bool:
        host = host.lower()
        if self.port is not None and self.port != port:
            return False
        if not self.host:
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host

    def __str__(self) -> str:
        port = "" if self.port is None else self.port
        return f"{self.host}:{port}:{self.address}:{self.address_port}"


def _split_address(field: str) -> tuple[str, str]:
    """Split 'ADDRESS:PORT' where ADDRESS may be a bracketed IPv6 literal."""
    if field.startswith("["):
        end = field.find("]")
        if end < 0 or field[end + 1 : end + 2] != ":":
            raise ValueError("an IPv6 ADDRESS is written [::1]:PORT")
        return field[1:end], field[end + 2 :]
    address, sep, port = field.partition(":")
    if not sep:
        raise ValueError("expected ADDRESS:PORT2 after HOST:PORT")
    return address, port


def _is_loopback(address: str) -> bool:
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _parse_port(text: str, what: str, *, optional: bool) -> int | None:
    if not text and optional:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{what} {text!r} is not a port number")
    return int(text)


def parse_connect_to(setting: str) -> list[ConnectToRule]:
    """Parse `HOST:PORT:ADDRESS:PORT2[,...]`; raise ConfigurationError naming the bad entry."""
    rules = []
    for entry in filter(None, (part.strip() for part in setting.split(","))):
        try:
            host, sep1, rest = entry.partition(":")
            port_text, sep2, target = rest.partition(":")
            if not (sep1 and sep2):
                raise ValueError("expected HOST:PORT:ADDRESS:PORT2")
            address, address_port = _split_address(target)
            if not _is_loopback(address):
                raise ValueError(f"ADDRESS {address!r} is not a loopback address")
            rules.append(
                ConnectToRule(
                    host=host.lower(),
                    port=_parse_port(port_text, "PORT", optional=True),
                    address=address,
                    address_port=_parse_port(address_port, "PORT2", optional=False),
                )
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"{SETTING} entry {entry!r} is invalid: {exc}.",
                fix=f"write {SETTING}=HOST:PORT:ADDRESS:PORT2[,...] with a loopback ADDRESS, "
                "e.g. '*.vault.azure.net:443:127.0.0.1:8443'.",
            ) from None
    return rules


@functools.cache
def _classes() -> tuple[type, type]:
    """The requests-based classes, defined on first use (see the note on imports above)."""
    import requests
    from requests.adapters import HTTPAdapter
    from requests.sessions import merge_setting
    from requests.utils import get_environ_proxies

    class ConnectToAdapter(HTTPAdapter):
        """A requests adapter that applies connect-to rules below TLS and HTTP."""

        def __init__(self, rules: list[ConnectToRule], **kwargs: object) -> None:
            self._rules = rules
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
                    log.warning("connect_to", host=host, port=port, connects_to=f"{rule.address}:{rule.address_port}")
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

    return Session, ConnectToAdapter


def __getattr__(name: str) -> Any:
    if name == "ConnectToAdapter":  # the adapter class stays importable by its name
        return _classes()[1]
    raise AttributeError(name)


def new_session(rules: list[ConnectToRule], *, pool_maxsize: int = 10) -> requests.Session:
    """A requests session whose connections follow `rules` (none: a plain session) and pool per host."""
    session_class, adapter_class = _classes()
    session = session_class()
    adapter = adapter_class(rules, pool_connections=4, pool_maxsize=pool_maxsize)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
