"""`EmulatorProcess`: run the emulator as a real subprocess on ephemeral ports (tests, demos, benches)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from azure_emulator.admin import AdminClient
from azure_emulator.fixture import DEFAULT_FIXTURE

EMULATOR_DIR = Path(__file__).resolve().parent.parent  # docker/emulator: `python <it>` runs __main__.py
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class EmulatorError(RuntimeError):
    """The emulator did not start; the message includes its stderr."""


class EmulatorProcess:
    """Context manager: start the emulator, wait for its ready line, stop it on exit.

    Attributes after start: http_url, https_port, ca_bundle, imds_authority, msi_endpoint,
    msi_secret, connect_to, tenant_id, fixture_path, admin (an AdminClient).
    """

    def __init__(
        self,
        fixture: str | Path | None = None,
        *,
        state_dir: str | Path | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.fixture_path = Path(fixture or DEFAULT_FIXTURE).resolve()
        self.state_dir = state_dir
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._final_stderr = ""
        self._lines: queue.Queue[str | None] = queue.Queue()

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        command = [sys.executable, str(EMULATOR_DIR), "--fixture", str(self.fixture_path)]
        command += ["--http-port", "0", "--https-port", "0"]
        if self.state_dir is not None:
            command += ["--state-dir", str(self.state_dir)]
        command += self.extra_args
        # stderr goes to a file so it can never fill a pipe and block the emulator.
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._stderr, text=True, encoding="utf-8"
        )
        threading.Thread(target=self._read_stdout, name="emulator-stdout", daemon=True).start()
        try:
            ready = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.http_url: str = ready["http_url"]
        self.https_port: int = ready["https_port"]
        self.ca_bundle: str = ready["ca_bundle"]
        self.imds_authority: str = ready["imds_authority"]
        self.msi_endpoint: str = ready["msi_endpoint"]
        self.msi_secret: str = ready["msi_secret"]
        self.connect_to: str = ready["connect_to"]
        self.tenant_id: str = ready["tenant_id"]
        self.admin = AdminClient(self.http_url)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if self._stderr is not None:
            self._final_stderr = self.stderr_text()
            self._stderr.close()
            self._stderr = None

    def stderr_text(self) -> str:
        """What the emulator wrote on stderr so far (all of it, once stopped)."""
        if self._stderr is None:
            return self._final_stderr
        self._stderr.seek(0)
        return self._stderr.read()

    def env(self, flavour: str = "imds") -> dict[str, str]:
        """Environment variables a client process needs to reach this emulator.

        flavour "imds": AZURE_POD_IDENTITY_AUTHORITY_HOST; "azureml": MSI_ENDPOINT and MSI_SECRET;
        "workload": AZURE_AUTHORITY_HOST and AZURE_TENANT_ID, what the workload identity webhook injects
        besides AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE, which are the caller's (the identity and its
        service-account token). All: the CA bundle (REQUESTS_CA_BUNDLE, SSL_CERT_FILE) and SIDECAR_CONNECT_TO.
        """
        variables = {
            "REQUESTS_CA_BUNDLE": self.ca_bundle,
            "SSL_CERT_FILE": self.ca_bundle,
            "SIDECAR_CONNECT_TO": self.connect_to,
        }
        if flavour == "imds":
            variables["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = self.imds_authority
        elif flavour == "azureml":
            variables["MSI_ENDPOINT"] = self.msi_endpoint
            variables["MSI_SECRET"] = self.msi_secret
        elif flavour == "workload":
            # The real authority host: SIDECAR_CONNECT_TO sends it to the emulator, TLS keeps its name.
            variables["AZURE_AUTHORITY_HOST"] = "https://login.microsoftonline.com/"
            variables["AZURE_TENANT_ID"] = self.tenant_id
        else:
            raise ValueError(f"flavour must be 'imds', 'azureml' or 'workload', got {flavour!r}")
        return variables

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output: the process exited

    def _wait_ready(self) -> dict[str, Any]:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while True:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
                if line is None:
                    self.process.wait(STOP_TIMEOUT_S)
                    raise EmulatorError(
                        f"the emulator exited with status {self.process.returncode} before it was ready; "
                        f"stderr:\n{self.stderr_text()}"
                    )
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict) and message.get("event") == "ready":
                    return message
        except queue.Empty:
            raise EmulatorError(
                f"the emulator printed no ready line within {READY_TIMEOUT_S:g} s; stderr:\n{self.stderr_text()}"
            ) from None
