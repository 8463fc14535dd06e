"""Resolve Azure ML secret references with the endpoint's managed identity, then exec the scoring server."""

__version__ = "0.1.0"
