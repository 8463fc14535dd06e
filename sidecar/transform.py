"""Per-reference transforms, in order: JSON pointer, base64 decoding, PKCS#12 to PEM.

Messages name the reference and the option, never any part of the value: a
parser's own error text (jsonpointer's, json's) can quote the document, so it
is never passed on.
"""

from __future__ import annotations

import base64
import binascii
import json

from sidecar.errors import MalformedReferenceError, NotFoundError
from sidecar.references import Options
from sidecar.stores.base import Fetched

PKCS12_CONTENT_TYPE = "application/x-pkcs12"
PEM_CONTENT_TYPE = "application/x-pem-file"


def select_pointer(value: str, pointer: str, shown_pointer: str) -> str:
    """The part of a JSON value the pointer selects; messages show the pointer as `shown_pointer`."""
    from jsonpointer import JsonPointerException, resolve_pointer

    try:
        document = json.loads(value)
    except RecursionError:
        raise MalformedReferenceError(
            f"the value is JSON nested too deeply to read, so the JSON pointer '#{shown_pointer}' cannot apply.",
            fix="point the reference at a flatter JSON value.",
        ) from None
    except ValueError:
        raise MalformedReferenceError(
            f"the value is not JSON, so the JSON pointer '#{shown_pointer}' cannot apply.",
            fix="drop the '#...' pointer, or point the reference at a JSON value.",
        ) from None
    try:
        selected = resolve_pointer(document, pointer)
        return selected if isinstance(selected, str) else json.dumps(selected, separators=(",", ":"))
    except JsonPointerException:
        raise NotFoundError(
            f"the JSON pointer '#{shown_pointer}' matches nothing in the value.",
            fix="correct the pointer (RFC 6901: '/' between names, '~1' for '/', '~0' for '~').",
        ) from None
    except RecursionError:  # json.dumps of a deeply nested selection
        raise MalformedReferenceError(
            f"the part the JSON pointer '#{shown_pointer}' selects is nested too deeply to write out.",
            fix="point at a flatter part of the value.",
        ) from None


def decode_base64(value: str | bytes, option: str = "decode=base64") -> bytes:
    """Base64-decode for `option`, the option that needs it (named in the message)."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        fix = (
            "drop 'decode=base64'."
            if option == "decode=base64"
            else "point the reference at a Key Vault certificate's secret (base64 PKCS#12), or drop 'format=pem'."
        )
        raise MalformedReferenceError(f"the value is not valid base64, so '{option}' cannot apply.", fix=fix) from None


def pkcs12_to_pem(data: bytes) -> bytes:
    """A PFX (no password, as Key Vault stores a certificate's secret) as PEM: certificate, chain, key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, pkcs12

    try:
        key, certificate, chain = pkcs12.load_key_and_certificates(data, None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise MalformedReferenceError(
            "the value is not a PKCS#12 (PFX) certificate without a password, so 'format=pem' cannot apply.",
            fix="point the reference at a Key Vault certificate's secret, or drop 'format=pem'.",
        ) from None
    parts = [cert.public_bytes(Encoding.PEM) for cert in [certificate, *chain] if cert is not None]
    if key is not None:
        parts.append(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return b"".join(parts)


def apply_options(options: Options, value: str, fetched: Fetched) -> str | bytes:
    """The value after the reference's transforms: text, or bytes once decoded."""
    data: str | bytes = value
    if options.pointer is not None:
        data = select_pointer(value, options.pointer, options.shown_pointer)
    if options.decode == "base64":
        data = decode_base64(data)
    if options.format == "pem":
        if fetched.content_type == PEM_CONTENT_TYPE and isinstance(data, str):
            return data  # a certificate imported as PEM is stored as PEM already
        data = pkcs12_to_pem(data if isinstance(data, bytes) else decode_base64(data, "format=pem"))
    return data
