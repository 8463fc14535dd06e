"""Entry script for azmlinfsrv: the zero-downtime rotation recipe of `sidecar supervise`.

The recipe: deliver the secrets as files (`keyvault:https://<vault>.vault.azure.net/secrets/<name>?file`:
the variable holds the file's path), run the server under `sidecar supervise` with
SIDECAR_RELOAD_SIGNAL=HUP, and read the files in init(). When a value changes, the sidecar rewrites
its file, then sends HUP to azmlinfsrv's gunicorn master; the master starts new workers, which run
init() again and so read the new values, and stops the old ones gracefully (each finishes the
requests it holds). The master, its port and its listening socket stay: no request is refused.
Keep WORKER_PRELOAD (or gunicorn's --preload) off: with it the app is loaded once, in the master.

EXPECTED_FILES names (comma-separated) the variables that hold the files' paths. POST /score answers,
per name, the value's length (never the value, nor a hash of it), with the worker's pid, its parent's
(the gunicorn master) and how many times init() ran in this worker. An empty or blank file fails
init(): better no server than one without its credential.
"""

import json
import logging
import os

logger = logging.getLogger(__name__)

_secrets: dict[str, str] = {}  # variable name -> the value read from its file
_init_runs = 0


def _expected() -> list[str]:
    return [name.strip() for name in os.environ.get("EXPECTED_FILES", "").split(",") if name.strip()]


def init() -> None:
    global _init_runs
    _init_runs += 1
    values = {}
    for name in _expected():
        path = os.environ.get(name)
        if not path:
            raise RuntimeError(f"{name} is not set: it should hold the path of a secret file")
        with open(path, encoding="utf-8") as file:
            values[name] = file.read()
        if not values[name].strip():
            raise RuntimeError(f"the secret file of {name} ({path}) is empty or blank")
    _secrets.clear()
    _secrets.update(values)
    logger.info("score_files.py: init() #%d read %d secret file(s) in worker %d", _init_runs, len(values), os.getpid())


def run(raw_data: str) -> dict:
    if raw_data:
        json.loads(raw_data)  # the request body is not used; it must be JSON
    return {
        "lengths": {name: len(value) for name, value in _secrets.items()},
        "worker_pid": os.getpid(),
        "master_pid": os.getppid(),
        "init_runs": _init_runs,
    }
