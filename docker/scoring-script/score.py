"""An Azure ML scoring script that gets its secrets with `sidecar.load()`, for a deployment whose image
entrypoint is the inference server (azmlinfsrv) and cannot change.

The deployment names the secrets in its environment variables (the deferred form, which the platform
leaves alone; see the README, "Scoring scripts"). init() resolves them in os.environ before anything
reads them. If any reference fails, load() raises sidecar.SidecarError with every failure and its fix,
init() fails with it, and azmlinfsrv stops (exit 3): better no server than one without its credentials.

EXPECTED_SECRETS names (comma-separated) the variables run() reports on. POST /score answers, per name,
the value's length and whether it is still a reference: never the value, nor a hash of it.
"""

import logging
import os

import sidecar

logger = logging.getLogger(__name__)


def init() -> None:
    result = sidecar.load()  # os.environ, in place; settings from SIDECAR_* as for `sidecar exec`
    logger.info("secrets resolved: %s", ", ".join(sorted(result.variables)))


def run(raw_data: str) -> dict:
    names = [name.strip() for name in os.environ.get("EXPECTED_SECRETS", "").split(",") if name.strip()]
    report = {}
    for name in names:
        value = os.environ.get(name, "")
        report[name] = {
            "length": len(value),
            "still_a_reference": value.startswith(("keyvault:", "azureml://")) or "${{" in value,
        }
    return report
