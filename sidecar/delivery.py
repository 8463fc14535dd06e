"""Delivery as files: values written to an in-memory filesystem, never to disk.

A file is written atomically (a temporary file in the same directory, fsync,
then rename over the old one), mode 0400, owned by the user the server runs as,
so a reader sees the old file or the new one, never half of one, and files of
a previous run are replaced, not appended to.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path

from sidecar.errors import ConfigurationError

MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
FILE_MODE = 0o400
DIRECTORY_MODE = 0o700


def _unescape_mount_path(path: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as octal escapes.
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(escaped, char)
    return path


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem `path` (or its nearest existing parent) lives on, from mountinfo."""
    existing = path.resolve()
    while not existing.exists():
        existing = existing.parent
    best, best_type = "", None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(" ")
        mount_point = _unescape_mount_path(fields[4])
        fstype = fields[fields.index("-") + 1]
        inside = str(existing) == mount_point or str(existing).startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fstype
    return best_type


def check_directory(directory: Path, *, allow_disk: bool, setting: str) -> None:
    """Refuse a directory that is not on an in-memory filesystem, unless allowed."""
    if allow_disk:
        return
    fstype = filesystem_type(directory)
    if fstype not in MEMORY_FILESYSTEMS:
        raise ConfigurationError(
            f"{setting} {directory} is on a '{fstype or 'unknown'}' filesystem, not in memory; "
            "secrets would be written to disk.",
            fix=f"point {setting} at a tmpfs (e.g. /dev/shm, or a Kubernetes emptyDir with medium: Memory), "
            "or set SIDECAR_FILES_ALLOW_DISK=true to accept the disk.",
        )


def write_atomic(path: Path, data: bytes, owner: tuple[int, int] | None) -> None:
    """Write `data` to `path` as a whole (mode 0400, given owner), replacing any earlier file."""
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if owner is not None:
        os.chown(path.parent, *owner)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            if owner is not None:
                os.fchown(file.fileno(), *owner)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def env_file_text(variables: Iterable[tuple[str, str]]) -> bytes:
    """`NAME='value'` lines a POSIX shell can source (`set -a; . FILE; set +a`); newlines survive."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in variables).encode()
