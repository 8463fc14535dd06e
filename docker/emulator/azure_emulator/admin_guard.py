"""Keeps web pages out of the admin API: it can mint tokens and change what the emulator answers.

- DNS rebinding: a page on the attacker's name, re-resolved to 127.0.0.1, reaches the listener with
  that name in the Host header; so the Host must be a loopback address, `localhost`, the address the
  emulator advertises, or a name given with `--admin-host`.
- Cross-site requests: a page can POST to any address, but without a CORS preflight (which the
  emulator never grants) not with `Content-Type: application/json`; so every request other than GET
  must carry it, even one without a body. And browsers mark requests from pages with `Origin` or
  `Sec-Fetch-Site`, which no legitimate client of the admin API sends.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection

from azure_emulator.web import Request, Response, json_response

JSON = "application/json"
LOCAL_NAMES = frozenset({"localhost"})
BARE_HOST = re.compile(r"[^\s:/\[\]@?#]+")  # a Host header's name part: no scheme, port or path
FROM_OTHER_SITES = frozenset({"cross-site", "same-site"})  # Sec-Fetch-Site values for another site's page


def refusal(request: Request, admin_hosts: Collection[str]) -> Response | None:
    """The error for an admin request a web page could have made, or None when it may be served."""
    if not host_allowed(request.host, admin_hosts):
        return _refuse(
            403,
            f"Host {request.host!r} is not allowed: the admin API answers loopback addresses, localhost and "
            "names given with --admin-host (DNS-rebinding protection).",
        )
    if request.headers.get("Origin") is not None:
        return _refuse(403, "requests with an Origin header come from web pages and are refused (CSRF protection).")
    if (request.headers.get("Sec-Fetch-Site") or "").lower() in FROM_OTHER_SITES:
        return _refuse(403, "requests a browser marks Sec-Fetch-Site cross-site or same-site are refused.")
    content_type = request.headers.get("Content-Type") or ""
    if request.method != "GET" and content_type.partition(";")[0].strip().lower() != JSON:
        return _refuse(
            415,
            f"{request.method} needs Content-Type: {JSON}, even without a body (CSRF protection); "
            f"got {content_type or 'none'!r}.",
        )
    return None


def host_allowed(host: str, admin_hosts: Collection[str]) -> bool:
    """host: the Host header's name (Request.host); admin_hosts: canonical_host values."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in LOCAL_NAMES or host in admin_hosts
    return address.is_loopback or str(address) in admin_hosts


def canonical_host(name: str) -> str:
    """name as host_allowed compares it: an IP address in standard form, a host name in lower case.

    ValueError if it is not a bare host name or address (a scheme or a port would never match)."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        if BARE_HOST.fullmatch(name):
            return name.lower()
    raise ValueError(f"{name!r} is not a bare host name or IP address (no scheme, no port)")


def _refuse(status: int, reason: str) -> Response:
    return json_response(status, {"error": f"admin API: {reason}"})
