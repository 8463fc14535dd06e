"""Example entry script for azmlinfsrv: reports which secrets arrived.

POST /score answers, for every name in EXPECTED_VARS (comma-separated),
whether the variable is set, its length, and whether it still looks like an
unresolved reference: never a value. It also names any SIDECAR_* setting that
reached the server (the sidecar removes them) and the server's user id.
"""

import json
import logging
import os

logger = logging.getLogger(__name__)


def _expected() -> list[str]:
    return [name.strip() for name in os.environ.get("EXPECTED_VARS", "").split(",") if name.strip()]


def _unresolved(value: str) -> bool:
    return "${{" in value or value.startswith(("keyvault:", "azureml://"))


def _report() -> dict:
    secrets = {}
    for name in _expected():
        value = os.environ.get(name)
        secrets[name] = {
            "present": value is not None,
            "length": len(value) if value is not None else 0,
            "unresolved": value is not None and _unresolved(value),
        }
    return {
        "secrets": secrets,
        "sidecar_settings": sorted(name for name in os.environ if name.startswith("SIDECAR_")),
        "uid": os.getuid(),
    }


def init() -> None:
    report = _report()
    arrived = sorted(name for name, s in report["secrets"].items() if s["present"] and not s["unresolved"])
    missing = sorted(set(report["secrets"]) - set(arrived))
    logger.info("score.py: secrets arrived: %s; missing or unresolved: %s", arrived, missing)


def run(raw_data: str) -> dict:
    if raw_data:
        json.loads(raw_data)  # the request body is not used; it must be JSON
    return _report()
