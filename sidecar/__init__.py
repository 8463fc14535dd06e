"""Resolve Azure ML secret references with the endpoint's managed identity, then exec the scoring server."""

__version__ = "0.1.0"


# The library entry point, imported on first use: `sidecar --help` and `sidecar exec` need none of it.
_LIBRARY = ("load", "LoadError", "LoadResult", "Loaded")


def __getattr__(name: str) -> object:
    if name in _LIBRARY:
        from sidecar import library

        return getattr(library, name)
    if name == "SidecarError":
        from sidecar.errors import SidecarError

        return SidecarError
    raise AttributeError(f"module 'sidecar' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LIBRARY, "SidecarError"])
