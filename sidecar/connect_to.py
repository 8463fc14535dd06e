"""`SIDECAR_CONNECT_TO`: curl `--connect-to` for the sidecar's HTTP session.

A request for HOST:PORT opens its TCP connection to ADDRESS:PORT2 instead, while
TLS SNI, certificate verification and the Host header keep HOST. That lets local
runs and tests reach the emulator with the references unchanged and with TLS
verification on. ADDRESS must be a loopback IP literal (127.0.0.0/8, ::1), so
the setting can never send a token to another machine: a name such as
`localhost` is refused, since /etc/hosts can point it anywhere. The requests
session that applies the rules is in `sidecar.session`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sidecar import logs
from sidecar.errors import ConfigurationError

log = logs.get_logger("sidecar.connect_to")

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
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _parse_port(text: str, what: str, *, optional: bool) -> int | None:
    if not text and optional:
        return None
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
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
                raise ValueError(f"ADDRESS {address!r} is not a loopback IP address (127.0.0.1, ::1)")
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
                fix=f"write {SETTING}=HOST:PORT:ADDRESS:PORT2[,...] with a loopback IP ADDRESS, "
                "e.g. '*.vault.azure.net:443:127.0.0.1:8443'.",
            ) from None
    return rules
