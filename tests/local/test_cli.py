"""``tbcss`` as a user runs it: a subprocess, one readable line on failure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
# The real app's synthesized assembly is cached here between runs.
CLI_STATE_DIR = ROOT / ".tbcss" / "tests-cli"
READY_TIMEOUT_SECONDS = 60


def tbcss(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args, "--state-dir", str(state_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_token_prints_a_jwt(tmp_path: Path) -> None:
    done = tbcss("token", "--sub", "demo-prepaid", "--role", "subscriber", state_dir=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.count(".") == 2
    assert (tmp_path / "jwks.json").is_file()


def test_a_busy_port_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = tbcss("local", "up", "--port", str(port), state_dir=tmp_path)

    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0
    assert "cannot listen" in done.stderr


def test_a_context_without_a_value_fails_in_one_line(tmp_path: Path) -> None:
    done = tbcss("local", "up", "--context", "inactivity_days", state_dir=tmp_path)

    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0
    assert "KEY=VALUE" in done.stderr


def test_info_without_a_runtime_fails_in_one_line(tmp_path: Path) -> None:
    done = tbcss("local", "info", state_dir=tmp_path)

    assert done.returncode != 0
    assert "no local runtime is running" in done.stderr


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.cli",
            "local",
            "up",
            "--quiet",
            "--port",
            str(port),
            "--state-dir",
            str(CLI_STATE_DIR),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    for line in process.stdout:
        if "runtime ready" in line or time.monotonic() > deadline:
            break
    yield process, f"http://127.0.0.1:{port}"
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)


@pytest.mark.e2e
def test_up_serves_the_real_api_with_a_local_token(
    running: tuple[subprocess.Popen[str], str],
) -> None:
    _, api = running
    token = tbcss(
        "token", "--sub", "demo-prepaid", "--role", "subscriber", state_dir=CLI_STATE_DIR
    ).stdout.strip()

    plans = requests.get(f"{api}/plans", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    anonymous = requests.get(f"{api}/plans", timeout=30)
    openapi = requests.get(f"{api}/openapi.json", timeout=60).json()

    assert plans.status_code == 200
    assert len(plans.json()["plans"]) >= 5  # the seeded catalog
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "UNAUTHORIZED"
    assert openapi["paths"]["/plans"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in openapi["paths"]["/health"]["get"]


@pytest.mark.e2e
def test_clock_advance_and_info_reach_the_running_runtime(
    running: tuple[subprocess.Popen[str], str],
) -> None:
    _, api = running

    advanced = tbcss("local", "clock", "advance", "--days", "2", state_dir=CLI_STATE_DIR)
    info = tbcss("local", "info", state_dir=CLI_STATE_DIR)
    health = requests.get(f"{api}/health", timeout=30).json()

    assert advanced.returncode == 0, advanced.stderr
    assert "offset 2.00 days" in advanced.stdout
    assert '"aws_endpoint_url"' in info.stdout
    assert health["time"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 86400))


@pytest.mark.e2e
def test_sigint_stops_everything(running: tuple[subprocess.Popen[str], str]) -> None:
    process, _ = running

    process.send_signal(signal.SIGINT)

    assert process.wait(timeout=20) == 0
    assert not (CLI_STATE_DIR / "runtime.json").exists()
    assert processes_working_in(CLI_STATE_DIR) == []  # no worker left behind


def processes_working_in(directory: Path) -> list[int]:
    """Pids whose cwd is under ``directory`` (workers run in their code asset there)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if entry.name.isdigit() and cwd.startswith(str(directory)):
            found.append(int(entry.name))
    return found
