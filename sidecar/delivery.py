"""Delivery as files: values written to an in-memory filesystem, never to disk, never through a link.

Each directory is opened once, before anything is fetched, by walking its path from `/` one
component at a time without following symbolic links (O_NOFOLLOW). Its owner, mode and filesystem
are checked on the open descriptor, and every later write, rename, removal and chown goes through
that descriptor (the *at() calls). Swapping the directory or a parent for a link after the check
changes nothing: the descriptor still names the directory that was checked.

A file is written atomically (a temporary file in the same directory, fsync, then rename over the
old one), mode 0400, owned by the user the server runs as, so a reader sees the old file or the new
one, never half of one, and files of a previous run are replaced, not appended to.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import stat
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar import logs
from sidecar.errors import ConfigurationError, MalformedReferenceError, SidecarError
from sidecar.references import FILE_NAME, FILE_NAME_RULE, Variable

if TYPE_CHECKING:
    from sidecar.environment import Resolution

log = logs.get_logger("sidecar")

MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
FILE_MODE = 0o400
DIRECTORY_MODE = 0o700  # a directory the sidecar creates for its files
PARENT_MODE = 0o777  # a missing parent, as `mkdir -p` makes it (the umask applies)
# What `NAME='value'` may start with in a file a POSIX shell sources: anything else is not an assignment.
SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def filesystem_type(descriptor: int) -> str | None:
    """The type of the filesystem an open descriptor is on: its mount id (fdinfo) looked up in mountinfo."""
    try:
        found = re.search(r"^mnt_id:\s*(\d+)", Path(f"/proc/self/fdinfo/{descriptor}").read_text(), re.MULTILINE)
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    if found is None:
        return None
    for line in mounts:
        fields = line.split(" ")
        if fields[0] == found[1]:
            return fields[fields.index("-") + 1]
    return None


@dataclass
class Directory:
    """A directory opened for delivery: every file operation goes through its descriptor.

    The descriptor stays open until the sidecar exits or execs (it is close-on-exec).
    """

    path: Path
    descriptor: int

    @property
    def identity(self) -> tuple[int, int]:
        info = os.fstat(self.descriptor)
        return info.st_dev, info.st_ino

    def write(self, name: str, data: bytes, owner: tuple[int, int] | None) -> None:
        """Write `data` to NAME as a whole (mode 0400, given owner), replacing any earlier file."""
        # A fixed-length temporary name: a 255-byte NAME must not make it too long.
        temporary = f".sidecar-{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(temporary, flags, FILE_MODE, dir_fd=self.descriptor)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
                if owner is not None:
                    os.fchown(file.fileno(), *owner)
            os.replace(temporary, name, src_dir_fd=self.descriptor, dst_dir_fd=self.descriptor)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=self.descriptor)
            raise

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.descriptor)


def _open_child(parent: int, name: str, path: Path, setting: str) -> int:
    try:
        return os.open(name, _OPEN_DIRECTORY, dir_fd=parent)
    except NotADirectoryError:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        what = "a symbolic link, which the sidecar never follows" if is_link else "not a directory"
        raise ConfigurationError(
            f"{setting} {path}: {name} is {what}.",
            fix=f"point {setting} at the real directory ({os.path.realpath(path)})."
            if is_link
            else f"point {setting} at a directory.",
        ) from None
    except PermissionError:
        raise ConfigurationError(
            f"{setting} {path}: {name} cannot be opened by the sidecar's user (uid {os.geteuid()}).",
            fix=f"make the path traversable by that user, or point {setting} elsewhere.",
        ) from None


def _check(directory: int, path: Path, setting: str, *, allow_disk: bool, owner: tuple[int, int] | None) -> None:
    """Refuse a directory another user could read or replace files in, or that is not in memory."""
    info = os.fstat(directory)
    me = os.geteuid()
    if info.st_uid not in {me, 0} | ({owner[0]} if owner else set()):
        raise ConfigurationError(
            f"{setting} {path} is owned by uid {info.st_uid}, not by the sidecar's user (uid {me}) or root; "
            "its owner could read or replace the files.",
            fix=f"point {setting} at a directory the sidecar's user owns, or at one that does not exist yet "
            "(the sidecar creates it, mode 0700).",
        )
    if info.st_mode & _OTHERS_WRITE and not info.st_mode & stat.S_ISVTX:
        raise ConfigurationError(
            f"{setting} {path} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o}), "
            "who could replace the files.",
            fix=f"chmod go-w {path}, or point {setting} at a subdirectory that does not exist yet "
            f"(the sidecar creates it, mode 0700), e.g. {path / 'secrets'}.",
        )
    if not os.access(".", os.W_OK | os.X_OK, dir_fd=directory, effective_ids=True):
        raise ConfigurationError(
            f"{setting} {path} is not writable by the sidecar's user (uid {me}).",
            fix="make the directory writable by that user (SIDECAR_FILES_OWNER needs root).",
        )
    _check_memory(directory, path, setting, allow_disk=allow_disk)


def _check_memory(directory: int, path: Path, setting: str, *, allow_disk: bool) -> None:
    fstype = filesystem_type(directory)
    if not allow_disk and fstype not in MEMORY_FILESYSTEMS:
        raise ConfigurationError(
            f"{setting} {path} is on a '{fstype or 'unknown'}' filesystem, not in memory; "
            "secrets would be written to disk.",
            fix=f"point {setting} at a tmpfs (e.g. /dev/shm, or a Kubernetes emptyDir with medium: Memory), "
            "or set SIDECAR_FILES_ALLOW_DISK=true to accept the disk.",
        )


def open_directory(
    path: Path, setting: str, *, create: bool, allow_disk: bool, owner: tuple[int, int] | None
) -> Directory | None:
    """Open PATH for delivery, creating what is missing; with create=False only inspect it.

    Inspecting a directory that does not exist yet checks the filesystem of its nearest existing
    parent and returns None (`check` creates nothing).
    """
    descriptor = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = path.parts[1:]
        for index, name in enumerate(parts):
            try:
                child = _open_child(descriptor, name, path, setting)
            except FileNotFoundError:
                if not create:
                    _check_memory(descriptor, path, setting, allow_disk=allow_disk)
                    os.close(descriptor)
                    return None
                mode = DIRECTORY_MODE if index == len(parts) - 1 else PARENT_MODE
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, mode, dir_fd=descriptor)
                child = _open_child(descriptor, name, path, setting)
            os.close(descriptor)
            descriptor = child
        _check(descriptor, path, setting, allow_disk=allow_disk, owner=owner)
        if create and owner is not None:
            os.fchown(descriptor, *owner)  # the server, running as the owner, must be able to enter it
    except OSError as exc:
        os.close(descriptor)
        raise ConfigurationError(
            f"{setting} {path} cannot be used: {exc.strerror}.",
            fix="make the directory writable by the sidecar's user (SIDECAR_FILES_OWNER needs root).",
        ) from None
    except BaseException:
        os.close(descriptor)
        raise
    return Directory(path, descriptor)


def env_file_text(variables: Iterable[tuple[str, str]]) -> bytes:
    """`NAME='value'` lines a POSIX shell can source (`set -a; . FILE; set +a`); every byte survives."""
    text = "".join(f"{name}={shlex.quote(value)}\n" for name, value in variables)
    return text.encode("utf-8", "surrogateescape")  # values carry the environment's bytes as surrogates


@dataclass
class Delivery:
    """Where values go besides CMD's environment: `?file` references, and render's --dir and --env-file.

    `prepare` runs before anything is fetched: it checks every name that becomes a path or a shell
    line and opens the directories; `write` runs only once everything resolved.
    """

    files_dir: Path  # where `?file` values go; with `render --dir`, that directory
    allow_disk: bool
    owner: tuple[int, int] | None
    every_variable_as_file: bool = False  # render --dir: each variable as files_dir/NAME too
    env_file: Path | None = None  # render --env-file
    create: bool = True  # False for `check`: inspect, create nothing
    _files: Directory | None = field(default=None, init=False)
    _env_dir: Directory | None = field(default=None, init=False)

    @property
    def files_setting(self) -> str:
        return "--dir" if self.every_variable_as_file else "SIDECAR_FILES_DIR"

    @property
    def values_reach_an_environment(self) -> bool:
        """False when render writes only per-variable files: no exec limit on a value's size applies."""
        return not self.every_variable_as_file or self.env_file is not None

    def file_name(self, variable: Variable) -> str | None:
        """The name of the file in files_dir that this variable's value (or path) goes to, if any."""
        for reference in variable.references:
            if reference.options.file:
                return reference.options.file_name or variable.name
        return variable.name if self.every_variable_as_file else None

    def prepare(self, variables: Sequence[Variable]) -> list[SidecarError]:
        writers: dict[str, list[str]] = {}  # file name in files_dir -> the variables whose value goes there
        for variable in variables:
            if file_name := self.file_name(variable):
                writers.setdefault(file_name, []).append(variable.name)
        errors = self._name_errors(variables) + self._collision_errors(writers)
        try:
            if writers:
                self._files = self._open(self.files_dir, self.files_setting)
        except SidecarError as error:  # reported for each variable that needs the directory
            errors += [error.for_variable(name) for names in writers.values() for name in names]
        try:
            if self.env_file is not None:
                self._env_dir = self._open(self.env_file.parent, "--env-file")
        except SidecarError as error:
            errors += [error.for_variable(variable.name) for variable in variables]
        if self._files and self._env_dir and self._files.identity == self._env_dir.identity:
            assert self.env_file is not None
            errors += [
                ConfigurationError(
                    f"--env-file {self.env_file} is also the file of {name}.",
                    variable=name,
                    fix="give --env-file another name or directory.",
                )
                for name in writers.get(self.env_file.name, ())
            ]
        return errors

    def _open(self, path: Path, setting: str) -> Directory | None:
        return open_directory(path, setting, create=self.create, allow_disk=self.allow_disk, owner=self.owner)

    def _name_errors(self, variables: Sequence[Variable]) -> list[SidecarError]:
        errors: list[SidecarError] = []
        for variable in variables:
            name = variable.name
            if self.env_file is not None and not SHELL_NAME.fullmatch(name):
                errors.append(
                    MalformedReferenceError(
                        "--env-file: the variable's name is not a shell name ([A-Za-z_][A-Za-z0-9_]*), so a shell "
                        "cannot source it.",
                        variable=name,
                        fix="rename the variable (e.g. '-' and '.' to '_'), or drop --env-file and read the file "
                        "--dir writes.",
                    )
                )
            if self.every_variable_as_file and not FILE_NAME.fullmatch(name):
                errors.append(
                    MalformedReferenceError(
                        f"--dir: the variable's name is not a file name ({FILE_NAME_RULE}).",
                        variable=name,
                        fix="rename the variable.",
                    )
                )
        return errors

    def _collision_errors(self, writers: dict[str, list[str]]) -> list[SidecarError]:
        return [
            MalformedReferenceError(
                f"{self.files_dir / file_name} would hold the values of {', '.join(names)}.",
                variable=name,
                fix="give each a file name of its own: file=NAME.",
            )
            for file_name, names in writers.items()
            if len(names) > 1
            for name in names
        ]

    def write(self, resolutions: Sequence[Resolution], changed: Collection[str] | None = None) -> None:
        """Write every file (removing those of optional values now missing), then the env file.

        `changed`: the variables whose files to rewrite (a refresh); the env file holds all of `resolutions`.
        """
        for resolution in resolutions:
            name = self.file_name(resolution.variable)
            if name is None or (changed is not None and resolution.variable.name not in changed):
                continue
            assert self._files is not None
            data = resolution.file_data
            if data is None and resolution.value is not None:
                data = resolution.value.encode("utf-8", "surrogateescape")
            self._write(self._files, name, data, variable=resolution.variable.name)
        if self.env_file is not None:
            assert self._env_dir is not None
            lines = [(r.variable.name, r.value) for r in resolutions if r.value is not None]
            self._write(self._env_dir, self.env_file.name, env_file_text(lines))
            log.info("env_file", path=str(self.env_file), variables=len(lines))

    def _write(self, directory: Directory, name: str, data: bytes | None, variable: str | None = None) -> None:
        try:
            if data is None:
                directory.remove(name)  # no stale secret outlives its source
            else:
                directory.write(name, data, self.owner)
        except OSError as exc:
            raise ConfigurationError(
                f"could not write {directory.path / name}: {exc.strerror}.",
                variable=variable,
                fix="make the directory writable by the sidecar's user (SIDECAR_FILES_OWNER needs root).",
            ) from None
        if data is not None and variable is not None:
            log.info("file", variable=variable, path=str(directory.path / name), length=len(data))
