"""End-to-end: `tbcss local up` in a subprocess on free ports, driven over real
HTTP and real AWS APIs (boto3 against the runtime's moto endpoint), as a
client or an operator would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.local.meter import local_client

ROOT = Path(__file__).resolve().parents[2]
READY = "TB-CSS local runtime ready:"
START_TIMEOUT_SECONDS = 180
# The session runtime's INACTIVITY_DAYS (90 in production): the sweep's test then
# moves the clock by days, not a quarter (the 90-day rule is unit and handler tested).
# Each day walked fires every daily sweep once (about a second), so: as few as work.
INACTIVITY_DAYS = 3


@dataclass
class LocalSystem:
    """A running `tbcss local up` and how to talk to it."""

    process: subprocess.Popen[str]
    state_dir: Path
    output: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    log_start: dict[str, int] = field(default_factory=dict)  # handler log sizes at start

    def handler_logs(self) -> list[str]:
        """Every line the functions wrote since this runtime started: each worker's
        stdout and stderr go to <state>/logs/<function>.log (appended across runs;
        ``output`` has only the runtime's own lines), a moment after they are written."""
        lines: list[str] = []
        for path in sorted((self.state_dir / "logs").glob("*.log")):
            with path.open("rb") as log:
                log.seek(self.log_start.get(path.name, 0))
                lines += log.read().decode("utf-8", "replace").splitlines()
        return lines

    @property
    def api_url(self) -> str:
        return str(self.info["api_url"])

    def cli(self, *args: str) -> str:
        """Run a `tbcss` command against this runtime; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "infra.cli", *args, "--state-dir", str(self.state_dir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    def token(self, sub: str, role: str) -> str:
        return self.cli("token", "--sub", sub, "--role", role).strip()

    def aws(self, service: str) -> Any:
        endpoint = self.info["aws_endpoint_url"]
        return local_client(service, endpoint, self.info["region"], billed=True)

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        return requests.get(self.api_url + path, headers=_auth(token), timeout=30, **kwargs)

    def post(
        self, path: str, body: Any, token: str | None = None, key: str | None = None
    ) -> requests.Response:
        headers = _auth(token)
        if key:
            headers["Idempotency-Key"] = key
        return requests.post(self.api_url + path, json=body, headers=headers, timeout=30)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_local_system(state_dir: Path, *extra: str) -> LocalSystem:
    command = [sys.executable, "-m", "infra.cli", "local", "up", "--quiet"]
    command += ["--port", str(free_port()), "--state-dir", str(state_dir), *extra]
    log_start = {log.name: log.stat().st_size for log in (state_dir / "logs").glob("*.log")}
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    system = LocalSystem(process, state_dir, log_start=log_start)
    ready = threading.Event()

    def read_output() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            system.output.append(line.rstrip())
            if line.startswith(READY):
                ready.set()

    threading.Thread(target=read_output, daemon=True).start()
    if not ready.wait(START_TIMEOUT_SECONDS):
        stop_local_system(system)
        pytest.fail("runtime did not become ready:\n" + "\n".join(system.output[-40:]))
    system.info = json.loads(system.cli("local", "info"))
    return system


def stop_local_system(system: LocalSystem) -> int:
    """Ctrl-C, as a user would; the exit code."""
    system.process.send_signal(signal.SIGINT)
    try:
        return system.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        system.process.kill()
        return system.process.wait()


@pytest.fixture(scope="session")
def local_system() -> Iterator[LocalSystem]:
    """The real TB-CSS stack (app.py), seeded with the catalog and demo users.
    The service-control tests move its clock by about two weeks (and a line idle
    for INACTIVITY_DAYS is disconnected): every test on it takes times relative
    to its clock, so their order does not matter. One runtime for all of them:
    each start costs ten-odd seconds (the audit trail has its own, for its counts)."""
    system = start_local_system(
        ROOT / ".tbcss" / "e2e", "--context", f"inactivity_days={INACTIVITY_DAYS}"
    )
    yield system
    assert stop_local_system(system) == 0, "\n".join(system.output[-20:])


@pytest.fixture(scope="session")
def fixture_system() -> Iterator[LocalSystem]:
    """The small fixture stack with a stream, a queue, rules and a state machine,
    standing in for the modules that will own such resources."""
    system = start_local_system(
        ROOT / ".tbcss" / "e2e-fixture", "--app", "tests.local.fixture.app:build_app", "--no-seed"
    )
    yield system
    assert stop_local_system(system) == 0, "\n".join(system.output[-20:])


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
