"""Workers forked by the zygote: each one a container of its own, the zygote
surviving what happens to any of them."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.deploy import FunctionSpec
from infra.local.workers import LocalSettings, LogSink, WorkerProcess, Zygote

FIXTURE_CODE = Path(__file__).parent / "fixture" / "functions"


def spec(handler: str = "handlers.slow") -> FunctionSpec:
    return FunctionSpec(
        logical_id="Slow",
        name="zygote-test-slow",
        arn="arn:aws:lambda:ap-south-1:123456789012:function:zygote-test-slow",
        handler=handler,
        environment={"FIXTURE_FUNCTION": "Slow"},
        timeout_seconds=5,
        memory_mb=128,
        code_dir=str(FIXTURE_CODE),
    )


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    zygote = Zygote(tmp_path)
    yield zygote
    zygote.stop()


def start(zygote: Zygote, tmp_path: Path, handler: str = "handlers.slow") -> WorkerProcess:
    settings = LocalSettings("http://127.0.0.1:1", "ap-south-1", tmp_path, {})
    return WorkerProcess(spec(handler), settings, LogSink(tmp_path / "logs"), zygote)


def call(worker: WorkerProcess) -> dict[str, object]:
    request = {"request_id": "r-1", "payload": {"seconds": 0}, "clock_offset_seconds": 0}
    answer = worker.run(request, timeout_seconds=5)
    assert answer["ok"], answer
    result: dict[str, object] = answer["result"]
    return result


def test_a_worker_whose_exit_no_one_awaits_leaves_the_others_warm(
    zygote: Zygote, tmp_path: Path
) -> None:
    warm, abandoned = start(zygote, tmp_path), start(zygote, tmp_path)
    call(warm)
    call(abandoned)
    os.close(abandoned._status)  # as stop() does when it gives up waiting
    abandoned._exited = True
    os.kill(abandoned.pid, signal.SIGKILL)
    wait_until_reaped(abandoned.pid)

    fresh = start(zygote, tmp_path)  # the same zygote, which reaped it, forks this one

    assert call(fresh)["pid"] == fresh.pid
    assert warm.alive()
    assert call(warm)["pid"] == warm.pid
    for worker in (fresh, warm):
        worker.stop()
        assert not worker.alive()


def wait_until_reaped(pid: int) -> None:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"worker {pid} was not reaped"
        time.sleep(0.02)


def test_a_handler_that_exits_reports_its_exit_status(zygote: Zygote, tmp_path: Path) -> None:
    worker = start(zygote, tmp_path, handler="handlers.exit_with")
    request = {"request_id": "r-1", "payload": {"code": 3}, "clock_offset_seconds": 0}

    with pytest.raises(EOFError, match="exit status 3"):
        worker.run(request, timeout_seconds=5)
    assert not worker.alive()


def test_a_spawn_after_stop_is_refused(zygote: Zygote, tmp_path: Path) -> None:
    zygote.stop()

    with pytest.raises(RuntimeError, match="stopping"):
        start(zygote, tmp_path)


def test_a_worker_finds_the_botocore_models_already_decoded(zygote: Zygote, tmp_path: Path) -> None:
    worker = start(zygote, tmp_path, handler="handlers.models_decoded")

    assert call(worker) == {"dynamodb_model_decoded": True}
