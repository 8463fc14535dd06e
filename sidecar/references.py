"""Parse secret references out of environment values.

Two forms, one meaning:

* platform form, exactly Azure ML's syntax, anywhere inside a value:
  ``${{keyvault:https://<vault>.vault.azure.net/secrets/<name>[/<version>]}}`` and
  ``${{azureml://connections/<conn>[/target|/credentials/<name>|/metadata/<name>]}}``;
  ``$${{`` stands for a literal ``${{``;
* deferred form: the same URI as the whole value, without ``${{ }}``, which the
  platform leaves for the container to resolve.

Nothing here touches the network. Messages never echo a value that is not a
reference, since it may be a secret a user typed in, nor the parts of a reference
that may hold one: a URL's user part, a `default=`, and the text after a stray `&`
or `#` (the tail of a default that was not percent-encoded). See `shown`. Where the
platform has resolved the platform form (SIDECAR_PLATFORM_FORM=pass), a value that
only starts like a reference is not echoed either: it may be a secret (`_unquoted`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar, Literal
from urllib.parse import unquote, urlsplit

from sidecar.clouds import VAULT_SUFFIXES, Cloud, cloud_for_vault_host
from sidecar.errors import ConfigurationError, MalformedReferenceError, SidecarError

KEYVAULT_SCHEME = "keyvault:"
CONNECTION_PREFIX = "azureml://connections/"
OPEN, CLOSE, ESCAPED_OPEN = "${{", "}}", "$${{"

# Every pattern is applied with fullmatch: `$` would let a trailing newline through.
_VAULT_NAME = re.compile(r"[a-z][a-z0-9-]{1,22}[a-z0-9]")
_SECRET_PATH = re.compile(r"/secrets/(?P<name>[0-9A-Za-z-]{1,127})(?:/(?P<version>[^/]*))?/?")
_VERSION = re.compile(r"[0-9a-fA-F]{32}")
_CONNECTION_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}")
_FIELD_NAME = re.compile(r"[^/\s{}$?#&]+")


OPTION_NAMES = ("optional", "default", "decode", "format", "file")
# One path component in a files directory: never '.', '..', hidden, or with a '/'; at most NAME_MAX bytes.
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
FILE_NAME_RULE = "1-255 letters, digits, '.', '_' or '-', not starting with '.'"


def shown(uri: str) -> str:
    """A reference as messages may show it: without a URL's user part and without its options.

    A password in `https://user:pw@vault...` and a `default=` (or its tail after a stray `&`/`#`)
    must not reach a log line or the check table; the options are shown by `Options.__str__`
    once they parsed.
    """
    base = re.split(r"[?#]", uri, maxsplit=1)[0]
    has_options = len(base) < len(uri)
    scheme, sep, rest = base.partition("://")
    authority, slash, path = rest.partition("/")
    if sep and "@" in authority:
        base = f"{scheme}://<user>@{authority.rpartition('@')[2]}{slash}{path}"
    return base + ("?<options>" if has_options else "")


@dataclass(frozen=True)
class Options:
    """Per-reference options: the deferred form's `?query` and `#fragment`.

    `optional`: a missing secret, version, connection or name gives `default`, or no variable.
    `default=V`: the value when missing (percent-encoded; implies optional).
    `#/json/pointer`: RFC 6901 selection inside a JSON value.
    `decode=base64`: base64-decode the value.
    `format=pem`: a PKCS#12 (PFX) certificate to PEM: certificate chain, then key.
    `file` / `file=NAME`: write the value to a file; the variable holds its path.
    """

    optional: bool = False
    default: str | None = None
    pointer: str | None = None
    decode: str | None = None
    format: str | None = None
    file: bool = False
    file_name: str | None = None

    def __str__(self) -> str:
        """The options as written, with a default shown by length only: it may be sensitive."""
        items = []
        if self.optional and self.default is None:
            items.append("optional")
        if self.default is not None:
            items.append(f"default=<{len(self.default)} chars>")
        items += [f"{name}={getattr(self, name)}" for name in ("decode", "format") if getattr(self, name)]
        if self.file:
            items.append(f"file={self.file_name}" if self.file_name else "file")
        text = "?" + "&".join(items) if items else ""
        return text + (f"#{self.shown_pointer}" if self.pointer is not None else "")

    @property
    def shown_pointer(self) -> str:
        """The pointer as messages show it: by length only next to a default, whose raw '#' it may be the tail of."""
        assert self.pointer is not None
        return f"<{len(self.pointer)} chars>" if self.default is not None else self.pointer


NO_OPTIONS = Options()


def parse_options(query: str, fragment: str | None) -> Options:
    values: dict[str, str | None] = {}
    for position, item in enumerate(filter(None, query.split("&")), start=1):
        name, has_value, value = item.partition("=")
        if name not in OPTION_NAMES:
            # Not echoed: an unknown option is often the tail of a default with a raw '&'.
            raise MalformedReferenceError(
                f"option {position} is not one of: {', '.join(OPTION_NAMES)}.",
                fix="correct the option; inside a default, write '&' as %26 and '#' as %23.",
            )
        if name in values:
            raise MalformedReferenceError(f"option '{name}' is given twice.")
        values[name] = unquote(value) if has_value else None
    if "optional" in values and values["optional"] is not None:
        raise MalformedReferenceError("option 'optional' takes no value (write 'default=...' for a fallback).")
    if "default" in values and values["default"] is None:
        raise MalformedReferenceError("option 'default' needs a value: default=VALUE (percent-encoded).")
    for name, allowed in (("decode", "base64"), ("format", "pem")):
        if name in values and values[name] != allowed:
            raise MalformedReferenceError(f"option '{name}' must be '{name}={allowed}'.")
    file_name = values.get("file")
    if file_name is not None and not FILE_NAME.fullmatch(file_name):
        raise MalformedReferenceError(
            f"the name in 'file=' ({len(file_name)} chars) is not a file name: {FILE_NAME_RULE}."
        )
    pointer = None
    if fragment is not None:
        pointer = unquote(fragment)
        if not pointer.startswith("/"):
            # Not echoed: text after a '#' is often the tail of a default with a raw '#'.
            raise MalformedReferenceError(
                "the JSON pointer after '#' must start with '/' (RFC 6901).",
                fix="correct the pointer; inside a default, write '#' as %23.",
            )
    return Options(
        optional="optional" in values or "default" in values,
        default=values.get("default"),
        pointer=pointer,
        decode=values.get("decode"),
        format=values.get("format"),
        file="file" in values,
        file_name=file_name,
    )


def split_options(uri: str) -> tuple[str, Options]:
    """`<reference>[?options][#pointer]` -> the reference and its options."""
    base, has_fragment, fragment = uri.partition("#")
    base, _, query = base.partition("?")
    return base, parse_options(query, fragment if has_fragment else None)


@dataclass(frozen=True)
class KeyVaultReference:
    store: ClassVar[str] = "keyvault"
    vault_url: str  # https://<vault><suffix>, lower-case host
    name: str
    version: str | None
    cloud: Cloud
    options: Options = NO_OPTIONS

    def __str__(self) -> str:
        version = f"/{self.version}" if self.version else ""
        return f"{KEYVAULT_SCHEME}{self.vault_url}/secrets/{self.name}{version}{self.options}"

    @property
    def location(self) -> str:
        return self.vault_url

    @property
    def can_change(self) -> bool:
        """Whether another read may answer differently: a pinned version never changes."""
        return self.version is None


@dataclass(frozen=True)
class ConnectionReference:
    store: ClassVar[str] = "connection"
    connection: str
    part: Literal["connection", "target", "credentials", "metadata"]
    field: str | None = None
    options: Options = NO_OPTIONS

    def __str__(self) -> str:
        suffix = {"connection": "", "target": "/target"}.get(self.part, f"/{self.part}/{self.field}")
        return f"{CONNECTION_PREFIX}{self.connection}{suffix}{self.options}"

    @property
    def location(self) -> str:
        return self.connection

    can_change: ClassVar[bool] = True  # a connection's credentials are edited in place


Reference = KeyVaultReference | ConnectionReference


@dataclass(frozen=True)
class Variable:
    """One environment variable whose value the sidecar rewrites: literal text and references, in order."""

    name: str
    form: Literal["platform", "deferred"]
    parts: tuple[str | Reference, ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(part for part in self.parts if not isinstance(part, str))


def is_deferred(value: str) -> bool:
    """Whether the value is (or is meant to be) a deferred reference: the whole value, without ${{ }}."""
    return value.startswith(KEYVAULT_SCHEME) or value.startswith(CONNECTION_PREFIX)


def parse_keyvault(uri: str) -> KeyVaultReference:
    url = uri[len(KEYVAULT_SCHEME) :]
    display = shown(uri)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError:
        raise MalformedReferenceError(
            f"reference '{display}' has an invalid vault URL (a bad port or a bad [IPv6] host)."
        ) from None
    host = (parts.hostname or "").lower()
    if parts.scheme != "https":
        raise MalformedReferenceError(f"reference '{display}' must use an https:// vault URL.")
    if "@" in parts.netloc or port not in (None, 443) or parts.netloc.endswith(":"):
        raise MalformedReferenceError(f"reference '{display}' must not carry a user or a port in its vault URL.")
    cloud = cloud_for_vault_host(host)
    if cloud is None:
        raise ConfigurationError(
            f"reference '{display}' names host '{host}', which is not a Key Vault host of a known cloud; "
            "no token is sent to it.",
            fix="use a vault URL ending in " + ", ".join(VAULT_SUFFIXES) + ".",
        )
    vault = host[: -len(cloud.vault_suffix)]
    if not _VAULT_NAME.fullmatch(vault):
        raise MalformedReferenceError(
            f"reference '{display}': '{vault}' is not a valid vault name (3-24 letters, digits, -)."
        )
    match = _SECRET_PATH.fullmatch(parts.path)
    if not match:
        raise MalformedReferenceError(
            f"reference '{display}' must have the path /secrets/<name>[/<version>] (name: 1-127 letters, digits, -)."
        )
    version = match["version"] or None
    if version is not None and not _VERSION.fullmatch(version):
        raise MalformedReferenceError(f"reference '{display}': the version is not 32 hexadecimal characters.")
    return KeyVaultReference(f"https://{host}", match["name"], version.lower() if version else None, cloud)


def parse_connection(uri: str) -> ConnectionReference:
    segments = uri[len(CONNECTION_PREFIX) :].split("/")
    name, rest = segments[0], segments[1:]
    if not _CONNECTION_NAME.fullmatch(name):
        raise MalformedReferenceError(
            f"reference '{uri}': '{name}' is not a valid connection name (3-33 letters, digits, _ or -)."
        )
    if not rest:
        return ConnectionReference(name, "connection")
    if rest == ["target"]:
        return ConnectionReference(name, "target")
    if len(rest) == 2 and rest[0] in ("credentials", "metadata") and _FIELD_NAME.fullmatch(rest[1]):
        return ConnectionReference(name, rest[0], rest[1])  # type: ignore[arg-type]
    raise MalformedReferenceError(
        f"reference '{uri}' must be azureml://connections/<name>[/target|/credentials/<key>|/metadata/<key>]."
    )


def parse_reference(uri: str) -> Reference:
    if "?" in uri or "#" in uri:
        raise MalformedReferenceError(
            f"reference '{shown(uri)}' has options ('?' or '#'); options belong to the deferred form only "
            "(the whole value, without ${{ }})."
        )
    if uri.startswith(KEYVAULT_SCHEME):
        return parse_keyvault(uri)
    if uri.startswith(CONNECTION_PREFIX):
        return parse_connection(uri)
    raise MalformedReferenceError(
        f"'{shown(uri)}' is not a reference: expected keyvault:https://... or azureml://connections/..."
    )


def parse_platform_value(value: str) -> tuple[str | Reference, ...]:
    """Split a value into literal text and `${{...}}` references; `$${{` is a literal `${{`."""
    parts: list[str | Reference] = []
    text: list[str] = []
    pos = 0
    while True:
        start = value.find(OPEN, pos)
        if start < 0:
            text.append(value[pos:])
            break
        if start > pos and value[start - 1] == "$":
            text.append(value[pos : start - 1] + OPEN)
            pos = start + len(OPEN)
            continue
        text.append(value[pos:start])
        end = value.find(CLOSE, start + len(OPEN))
        if end < 0:
            raise MalformedReferenceError(
                f"'{OPEN}' at offset {start} has no closing '{CLOSE}'. Write '{ESCAPED_OPEN}' for a literal '{OPEN}'."
            )
        inner = value[start + len(OPEN) : end].strip()
        if not (inner.startswith(KEYVAULT_SCHEME) or inner.startswith(CONNECTION_PREFIX)):
            raise MalformedReferenceError(
                f"the '{OPEN}...{CLOSE}' at offset {start} is not a keyvault: or azureml://connections/ reference. "
                f"Write '{ESCAPED_OPEN}' for a literal '{OPEN}'."
            )
        if text_so_far := "".join(text):
            parts.append(text_so_far)
        text = []
        parts.append(parse_reference(inner))
        pos = end + len(CLOSE)
    if tail := "".join(text):
        parts.append(tail)
    return tuple(parts)


def parse_deferred(value: str) -> Reference:
    """A whole-value reference, with its options."""
    base = re.split(r"[?#]", value, maxsplit=1)[0]
    try:
        _, options = split_options(value)
        return replace(parse_reference(base), options=options)
    except SidecarError as error:
        error.reference = error.reference or shown(value)
        raise


def parse_variable(name: str, value: str, *, platform_form: bool = True) -> Variable | None:
    """The variable's parts, or None when the value holds no reference and no escape.

    Without `platform_form` (SIDECAR_PLATFORM_FORM=pass) a `${{` is never parsed: the platform has
    already replaced every reference in that form with its secret, which may itself contain `${{`.
    """
    if is_deferred(value):
        reference = parse_deferred(value)
        if reference.options.file and reference.options.file_name is None and not FILE_NAME.fullmatch(name):
            raise MalformedReferenceError(
                f"'file' names the file after the variable, but the variable's name is not a file name "
                f"({FILE_NAME_RULE}).",
                reference=str(reference),
                fix="name the file: file=NAME.",
            )
        return Variable(name, "deferred", (reference,))
    if not platform_form or OPEN not in value:
        return None
    return Variable(name, "platform", parse_platform_value(value))


def _unquoted(error: SidecarError, name: str) -> SidecarError:
    """A deferred-form failure that does not quote the value: where the platform resolves references, a value
    that starts like a reference may be a secret it put there."""
    return type(error)(
        f"the value starts with '{KEYVAULT_SCHEME}' or '{CONNECTION_PREFIX}' but is not a valid deferred reference. "
        "It is not shown: with SIDECAR_PLATFORM_FORM=pass it may be a secret the platform resolved.",
        variable=name,
        fix=f"if the platform resolved {name} (its deployment value is ${{{{...}}}}), list {name} in SIDECAR_LITERAL; "
        "otherwise run `sidecar check` on the reference where it is not a secret (e.g. locally) to see what is "
        "wrong with it.",
    )


def parse_environment(
    env: Mapping[str, str], *, literal: Iterable[str] = (), platform_form: bool = True, skip_prefix: str = "SIDECAR_"
) -> tuple[list[Variable], list[SidecarError]]:
    """Every variable to rewrite, and every malformed one (each error names its variable).

    `platform_form`: whether `${{...}}` is the sidecar's to resolve (see `parse_variable`).
    """
    literal = frozenset(literal)
    variables: list[Variable] = []
    errors: list[SidecarError] = []
    for name in sorted(env):
        if name in literal or name.startswith(skip_prefix):
            continue
        try:
            variable = parse_variable(name, env[name], platform_form=platform_form)
        except SidecarError as error:
            if not platform_form:
                error = _unquoted(error, name)
            error.variable = name
            if not error.fix and isinstance(error, MalformedReferenceError):
                error.fix = f"correct the reference, or list {name} in SIDECAR_LITERAL to pass the value on as it is."
                if not is_deferred(env[name]):
                    error.fix += (
                        " Where the platform has already resolved ${{...}} (a managed online endpoint), the value "
                        "may be a secret it put there: set SIDECAR_PLATFORM_FORM=pass."
                    )
            errors.append(error)
            continue
        if variable is not None:
            variables.append(variable)
    return variables, errors
