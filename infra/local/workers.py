"""Run each function's real handler in worker processes, like warm Lambda containers.

One small pool per function: a worker starts on the first invocation, is
reused afterwards, and a second concurrent invocation gets a second worker (up
to ``max_workers_per_function``), so concurrent requests do not serialize. As
in Lambda, a new worker's init (importing the handler) has its own time limit
and the function's timeout starts with the invocation. A worker that overruns
either is killed and replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from infra.local import faults
from infra.local.contracts import Clock, InvocationResult, InvocationType
from infra.local.deploy import Deployment, FunctionSpec
from infra.local.meter import UsageMeter

logger = logging.getLogger("tbcss.local.workers")

WORKER_MAIN = Path(__file__).with_name("worker_main.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MAX_WORKERS_PER_FUNCTION = 4
# Lambda's limit on a new execution environment's init phase, apart from the
# function's timeout: several cold starts at once on a busy machine must not
# eat the first invocations' time.
INIT_TIMEOUT_SECONDS = 10.0
# Lambda retries a failed asynchronous invocation twice, about 1 and 2 minutes
# later; locally seconds, as the local workflows' retry intervals are.
ASYNC_RETRY_DELAYS_SECONDS = (1.0, 2.0)
# Variables a worker inherits from the runtime's own environment; the rest is Lambda's.
INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


class UnknownFunction(KeyError):
    """No function of the deployment has this name or ARN."""


@dataclass(frozen=True)
class LocalSettings:
    """What every worker gets on top of its template environment."""

    endpoint_url: str
    region: str
    state_dir: Path
    auth_environment: dict[str, str]  # JWT_ISSUER, JWT_AUDIENCE, JWKS_URL (local issuer)


def worker_environment(spec: FunctionSpec, settings: LocalSettings) -> dict[str, str]:
    """The template environment plus Lambda's own variables and the local overrides."""
    code_dir = spec.code_dir or str(PROJECT_ROOT)
    inherited = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
    return {
        **inherited,
        **spec.environment,
        "PYTHONPATH": code_dir,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TZ": "UTC",
        "LAMBDA_TASK_ROOT": code_dir,
        "_HANDLER": spec.handler,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{uuid.uuid4().hex}",
        "TBCSS_LOCAL_FUNCTION_ARN": spec.arn,
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_ENDPOINT_URL": settings.endpoint_url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_SESSION_TOKEN": "local",
        "POWERTOOLS_TRACE_DISABLED": "1",
        faults.PLAN_VARIABLE: str(faults.plan_path(settings.state_dir)),
        faults.RECORD_VARIABLE: str(faults.record_path(settings.state_dir)),
        faults.LOGICAL_ID_VARIABLE: spec.logical_id,
        **settings.auth_environment,
    }


class WorkerProcess:
    """One warm container: a subprocess running worker_main for one handler.
    ``index`` numbers the function's workers in start order (fault injection
    seeds each worker's random stream with it)."""

    def __init__(
        self, spec: FunctionSpec, settings: LocalSettings, log: LogSink, index: int = 0
    ) -> None:
        self.spec = spec
        request_read, self._request_write = os.pipe()
        self._response_read, response_write = os.pipe()
        self._process = subprocess.Popen(  # noqa: S603 - our interpreter, our script
            [
                sys.executable,
                str(WORKER_MAIN),
                str(request_read),
                str(response_write),
                spec.handler,
            ],
            cwd=spec.code_dir or PROJECT_ROOT,
            env={**worker_environment(spec, settings), faults.WORKER_INDEX_VARIABLE: str(index)},
            pass_fds=(request_read, response_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.close(request_read)
        os.close(response_write)
        self._requests = os.fdopen(self._request_write, "w", encoding="utf-8")
        self._responses = os.fdopen(self._response_read, "r", encoding="utf-8")
        self._initialized = False
        for stream in (self._process.stdout, self._process.stderr):
            assert stream is not None
            log.follow(spec.name, stream)

    def run(self, request: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
        """Send one invocation (its deadline set as it is sent, after a new
        worker's init) and wait for its answer; raises TimeoutError (InitTimedOut
        before the init ended) or EOFError (the process died), and leaves the
        worker unusable then."""
        if not self._initialized:
            self._read_line(INIT_TIMEOUT_SECONDS, InitTimedOut)  # worker_main's init report
            self._initialized = True
        deadline_epoch_ms = int((time.time() + timeout_seconds) * 1000)
        request = {**request, "deadline_epoch_ms": deadline_epoch_ms}
        self._requests.write(json.dumps(request) + "\n")
        self._requests.flush()
        answer: dict[str, Any] = json.loads(self._read_line(timeout_seconds, TimeoutError))
        return answer

    def _read_line(self, timeout_seconds: float, overrun: type[TimeoutError]) -> str:
        ready, _, _ = select.select([self._responses], [], [], timeout_seconds)
        if not ready:
            raise overrun
        line = self._responses.readline()
        if not line:
            raise EOFError(_exit_description(self._process.wait()))
        return line

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        for stream in (self._requests, self._responses):
            with contextlib.suppress(OSError):
                stream.close()
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()


class InitTimedOut(TimeoutError):
    """A new worker did not finish importing its handler within the init limit."""


class LogSink:
    """Forwards worker output to the runtime's log (prefixed with the function)
    and appends it to ``<state>/logs/<function>.log``."""

    def __init__(self, log_dir: Path, echo: Callable[[str], None] | None = None) -> None:
        self._log_dir = log_dir
        self._echo = echo
        self._lock = threading.Lock()
        log_dir.mkdir(parents=True, exist_ok=True)

    def follow(self, function_name: str, stream: IO[bytes]) -> None:
        thread = threading.Thread(
            target=self._pump,
            args=(function_name, stream),
            daemon=True,
            name=f"log-{function_name}",
        )
        thread.start()

    def note(self, function_name: str, line: str) -> None:
        """A line from the platform rather than the handler, as Lambda writes
        "Task timed out" into the function's log stream."""
        with (self._log_dir / f"{function_name}.log").open("a", encoding="utf-8") as log_file:
            log_file.write(line + "\n")
        self._echoed(function_name, line)

    def _pump(self, function_name: str, stream: IO[bytes]) -> None:
        path = self._log_dir / f"{function_name}.log"
        with path.open("a", encoding="utf-8") as log_file:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log_file.write(line + "\n")
                log_file.flush()
                self._echoed(function_name, line)

    def _echoed(self, function_name: str, line: str) -> None:
        if self._echo is not None:
            with self._lock:
                self._echo(f"[{function_name}] {line}")


class FunctionPool:
    """The warm workers of one function."""

    def __init__(
        self, spec: FunctionSpec, settings: LocalSettings, log: LogSink, max_workers: int
    ) -> None:
        self.spec = spec
        self._settings = settings
        self._log = log
        self._max_workers = max_workers
        self._idle: list[WorkerProcess] = []
        self._all: set[WorkerProcess] = set()  # busy ones too: stop() must reach them
        self._count = 0
        self._started = 0  # workers ever started: the next one's index
        self._closed = False
        self._available = threading.Condition()

    def acquire(self) -> WorkerProcess:
        with self._available:
            while not self._idle and self._count >= self._max_workers:
                self._available.wait()
            if self._closed:
                raise RuntimeError("the runtime is stopping")
            dead: WorkerProcess | None = None
            if self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                # Died between invocations: Lambda starts a new container in its place.
                self._all.discard(worker)
                dead = worker
            else:
                self._count += 1
            self._started += 1
            index = self._started
        if dead is not None:
            dead.stop()
        try:
            worker = WorkerProcess(self.spec, self._settings, self._log, index)
        except Exception:
            self.discard(None)
            raise
        with self._available:
            self._all.add(worker)
        return worker

    def release(self, worker: WorkerProcess) -> None:
        with self._available:
            if self._closed:
                worker.stop()
            else:
                self._idle.append(worker)
            self._available.notify()

    def discard(self, worker: WorkerProcess | None) -> None:
        if worker is not None:
            worker.stop()
        with self._available:
            if worker is not None:
                self._all.discard(worker)
            self._count -= 1
            self._available.notify()

    def size(self) -> int:
        return self._count

    def close(self) -> None:
        with self._available:
            self._closed = True
            workers, self._idle = list(self._all), []
            self._available.notify_all()
        for worker in workers:
            worker.stop()


class WorkerInvoker:
    """Implements :class:`infra.local.contracts.Invoker` with worker pools."""

    def __init__(
        self,
        deployment: Deployment,
        settings: LocalSettings,
        *,
        clock: Clock | None = None,
        echo: Callable[[str], None] | None = None,
        max_workers_per_function: int = DEFAULT_MAX_WORKERS_PER_FUNCTION,
        meter: UsageMeter | None = None,
    ) -> None:
        self.deployment = deployment
        self._meter = meter
        self._settings = settings
        self._clock = clock
        self._log = LogSink(settings.state_dir / "logs", echo)
        self._max_workers = max_workers_per_function
        self._pools: dict[str, FunctionPool] = {}
        self._pools_lock = threading.Lock()
        self._background = ThreadPoolExecutor(max_workers=16, thread_name_prefix="lambda-event")
        self._stopping = threading.Event()

    def knows(self, function_name: str) -> bool:
        return self.deployment.has_function(function_name)

    def invoke(
        self,
        function_name: str,
        payload: Any,
        invocation_type: InvocationType = "RequestResponse",
    ) -> InvocationResult:
        pool = self._pool(function_name)
        if invocation_type == "Event":
            self._background.submit(self._run_logged, pool, payload)
            return InvocationResult(payload=None)
        return self._run(pool, payload)

    def _pool(self, function_name: str) -> FunctionPool:
        try:
            spec = self.deployment.function(function_name)
        except KeyError:
            raise UnknownFunction(function_name) from None
        with self._pools_lock:
            if spec.name not in self._pools:
                self._pools[spec.name] = FunctionPool(
                    spec, self._settings, self._log, self._max_workers
                )
            return self._pools[spec.name]

    def _run_logged(self, pool: FunctionPool, payload: Any) -> None:
        # Asynchronous invocations have no caller to tell: retry as Lambda does, log.
        attempts = len(ASYNC_RETRY_DELAYS_SECONDS) + 1
        for attempt, delay in enumerate((0.0, *ASYNC_RETRY_DELAYS_SECONDS), start=1):
            if self._stopping.wait(delay):
                return
            result = self._run(pool, payload)
            if result.ok:
                return
            logger.warning(
                "async invocation of %s failed (attempt %d of %d): %s",
                pool.spec.name,
                attempt,
                attempts,
                result.payload,
            )
        logger.warning("async invocation of %s dropped after %d attempts", pool.spec.name, attempts)

    def _run(self, pool: FunctionPool, payload: Any) -> InvocationResult:
        spec = pool.spec
        request_id = str(uuid.uuid4())
        offset = self._clock.offset_seconds() if self._clock is not None else 0.0
        worker = pool.acquire()
        request = {"request_id": request_id, "payload": payload, "clock_offset_seconds": offset}
        try:
            answer = self._timed(worker, request, spec)
        except TimeoutError as overrun:
            pool.discard(worker)
            phase, limit = (
                ("Init", INIT_TIMEOUT_SECONDS)
                if isinstance(overrun, InitTimedOut)
                else ("Task", spec.timeout_seconds)
            )
            return self._failed(
                spec, request_id, f"{phase} timed out after {limit:.2f} seconds", "Sandbox.Timedout"
            )
        except (EOFError, OSError, ValueError) as error:
            pool.discard(worker)
            return self._failed(
                spec, request_id, f"RequestId: {request_id} Error: {error}", "Runtime.ExitError"
            )
        pool.release(worker)
        if answer.get("ok"):
            return InvocationResult(payload=answer.get("result"))
        error_payload = {**answer["error"], "requestId": request_id}
        return InvocationResult(payload=error_payload, function_error="Unhandled")

    def _failed(
        self, spec: FunctionSpec, request_id: str, message: str, error_type: str
    ) -> InvocationResult:
        self._log.note(spec.name, f"{request_id} {message}")
        return _error(message, error_type, request_id)

    def _timed(self, worker: WorkerProcess, request: dict[str, Any], spec: FunctionSpec) -> Any:
        """``worker.run``, metered: Lambda bills the time in the handler, failed
        or timed out too, and a new worker's init (billed since August 2025),
        not the wait for a free worker."""
        started = time.perf_counter()
        try:
            return worker.run(request, spec.timeout_seconds)
        finally:
            if self._meter is not None:
                seconds = time.perf_counter() - started
                self._meter.record_invocation(spec.name, spec.memory_mb, seconds)

    def pool_sizes(self) -> dict[str, int]:
        with self._pools_lock:
            return {name: pool.size() for name, pool in self._pools.items()}

    def stop(self) -> None:
        self._stopping.set()
        self._background.shutdown(wait=False, cancel_futures=True)
        with self._pools_lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()


def _exit_description(code: int) -> str:
    """How Lambda words a runtime process that ended mid-invocation."""
    if code < 0:
        name = signal.strsignal(-code) or f"signal {-code}"
        return f"Runtime exited with error: signal: {name.lower()}"
    return f"Runtime exited with error: exit status {code}"


def _error(message: str, error_type: str, request_id: str) -> InvocationResult:
    payload = {"errorMessage": message, "errorType": error_type, "requestId": request_id}
    return InvocationResult(payload=payload, function_error="Unhandled")
