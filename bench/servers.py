"""Start and stop the servers under test as subprocesses, and write their configuration."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.deliveries import WEBHOOK_SECRET
from bench.environment import CLOCK_TICKS, ROOT

HOST = "127.0.0.1"
ZENDESK_EMAIL = "bot@example.com"
ZENDESK_TOKEN = "bench-token"
AGENT_KEY = "bench-agent-key-0123456789abcdef"
LINK_SECRET = "bench-link-secret-0123456789abcdef"
CTI_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CARRYOVER = Path(sys.executable).with_name("carryover")  # the console script of this venv


def free_port() -> int:
    """Return a TCP port that is free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def write_config(
    directory: Path,
    name: str,
    port: int,
    zendesk_url: str,
    worker: bool,
    salesforce: dict[str, Any] | None = None,
) -> Path:
    """Write a Carryover config.yaml: a fresh SQLite store, Zendesk, optionally Salesforce."""
    config: dict[str, Any] = {
        "public_url": f"http://{HOST}:{port}",
        "database_url": f"sqlite:///{directory / name}.db",
        "worker": {"enabled": worker},
        "allow_private_upstreams": True,  # the fake upstreams listen on 127.0.0.1
        "integrations": {
            "zendesk": {
                "url": zendesk_url,
                "email": ZENDESK_EMAIL,
                "api_token": ZENDESK_TOKEN,
                "webhook_secret": WEBHOOK_SECRET,
            }
        },
    }
    if salesforce is not None:
        config["integrations"]["salesforce"] = dict(salesforce)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def write_phone_config(
    directory: Path, name: str, port: int, database_url: str, worker: bool = True
) -> Path:
    """Write a Carryover config.yaml for the phone features: a given store, CTI, agent key."""
    config: dict[str, Any] = {
        "public_url": f"http://{HOST}:{port}",
        "database_url": database_url,
        "secret_key": LINK_SECRET,
        "agent_api_keys": [AGENT_KEY],
        "worker": {"enabled": worker},
        "integrations": {"cti": {"secret": CTI_SECRET}},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class Server:
    """A server process under test: started, waited for, measured, stopped."""

    def __init__(self, name: str, command: list[str], port: int, log_dir: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )

    @classmethod
    def carryover(cls, config: Path, port: int, log_dir: Path, name: str) -> Server:
        """Run the real `carryover serve` with the given configuration."""
        command = [str(CARRYOVER), "serve", "--config", str(config), "--host", HOST,
                   "--port", str(port)]  # fmt: skip
        return cls(name, command, port, log_dir)

    @classmethod
    def bare(cls, port: int, log_dir: Path) -> Server:
        """Run the bare Flask baseline under the same waitress settings."""
        command = [sys.executable, "-m", "bench.serve_bare", "--host", HOST, "--port", str(port)]
        return cls("bare", command, port, log_dir)

    def wait_ready(self, timeout: float = 30.0) -> Server:
        """Block until the server accepts connections; fail with its log if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {self.port}:\n{self.log_tail()}")

    def wait_output(self, words: str, timeout: float = 30.0) -> Server:
        """Block until the process says `words` (a process without a port: a worker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            if words in self.log_tail():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not say {words!r}:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """Return the user + system CPU time the process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the server's output."""
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
