"""Run each function's real handler in worker processes, like warm Lambda containers.

One small pool per function: a worker starts on the first invocation, is
reused afterwards, and a second concurrent invocation gets a second worker (up
to ``max_workers_per_function``), so concurrent requests do not serialize. As
in Lambda, a new worker's init (importing the handler) has its own time limit
and the function's timeout starts with the invocation. A worker that overruns
either is killed and replaced.

Workers are forked by one zygote process (worker_main.py) that has imported the
handlers' third-party packages once: a cold start pays for the function's own
code only, which keeps the many concurrent cold starts of a test run or a soak
off the machine's few cores.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from infra.local import faults
from infra.local.contracts import Clock, InvocationResult, InvocationType
from infra.local.deploy import Deployment, FunctionSpec
from infra.local.meter import UsageMeter
from infra.local.worker_main import SPAWN_FDS, SPAWN_MESSAGE_BYTES

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
# The interpreter settings a worker shares with the zygote it is forked from.
INTERPRETER_VARIABLES = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "TZ": "UTC"}
EXIT_WAIT_SECONDS = 10.0
SPAWN_TIMEOUT_SECONDS = 30.0


class UnknownFunction(KeyError):
    """No function of the deployment has this name or ARN."""


@dataclass(frozen=True)
class LocalSettings:
    """What every worker gets on top of its template environment."""

    endpoint_url: str
    region: str
    state_dir: Path
    auth_environment: dict[str, str]  # JWT_ISSUER, JWT_AUDIENCE, JWKS_URL (local issuer)


def inherited_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}


def worker_environment(spec: FunctionSpec, settings: LocalSettings) -> dict[str, str]:
    """The template environment plus Lambda's own variables and the local overrides."""
    code_dir = spec.code_dir or str(PROJECT_ROOT)
    return {
        **inherited_environment(),
        **spec.environment,
        "PYTHONPATH": code_dir,
        **INTERPRETER_VARIABLES,
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


class Zygote:
    """The process every worker is forked from (worker_main.py), started on the
    first spawn (again if it died) and stopped with the invoker. It runs in
    ``directory`` (the runtime's state), where a leftover one is easy to find."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def spawn(self, handler: str, cwd: str, env: dict[str, str], fds: Sequence[int]) -> int:
        """Fork a worker for ``handler`` with the descriptors of SPAWN_FDS; its pid."""
        if len(fds) != len(SPAWN_FDS):
            raise ValueError(f"a spawn takes {len(SPAWN_FDS)} descriptors: {SPAWN_FDS}")
        message = json.dumps({"handler": handler, "cwd": cwd, "env": env}).encode()
        with self._lock:
            if self._stopped:
                raise RuntimeError("the runtime is stopping")
            try:
                control = self._running()
                socket.send_fds(control, [message], list(fds))
                answer = control.recv(SPAWN_MESSAGE_BYTES)
                if not answer:
                    raise EOFError("the worker zygote exited")
            except BaseException:
                self._close()  # a reply left unread would answer the next spawn
                raise
        reply = json.loads(answer)
        if "error" in reply:
            raise RuntimeError(f"the worker zygote refused a spawn: {reply['error']}")
        pid: int = reply["pid"]
        return pid

    def _running(self) -> socket.socket:
        if self._process is not None and self._process.poll() is not None:
            self._close()
        if self._control is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with theirs:
                self._process = subprocess.Popen(  # noqa: S603 - our interpreter, our script
                    [sys.executable, str(WORKER_MAIN), str(theirs.fileno())],
                    cwd=self._directory,
                    env={**inherited_environment(), **INTERPRETER_VARIABLES},
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
            ours.settimeout(SPAWN_TIMEOUT_SECONDS)  # its preload included, on a busy machine
            self._control = ours
        return self._control

    def stop(self) -> None:
        """After the workers: the zygote reports their exits until it ends."""
        with self._lock:
            self._stopped = True
            self._close()

    def _close(self) -> None:
        if self._control is not None:
            self._control.close()  # the zygote's cue to exit
            self._control = None
        if self._process is not None:
            try:
                self._process.wait(EXIT_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


class WorkerProcess:
    """One warm container: a worker forked by the zygote for one handler.
    ``index`` numbers the function's workers in start order (fault injection
    seeds each worker's random stream with it)."""

    def __init__(
        self,
        spec: FunctionSpec,
        settings: LocalSettings,
        log: LogSink,
        zygote: Zygote,
        index: int = 0,
    ) -> None:
        self.spec = spec
        pipes = {name: os.pipe() for name in SPAWN_FDS}
        # The worker reads requests and writes the rest; the zygote writes the status.
        theirs = [pipes["request"][0]] + [pipes[name][1] for name in SPAWN_FDS[1:]]
        ours = [pipes["request"][1]] + [pipes[name][0] for name in SPAWN_FDS[1:]]
        environment = {
            **worker_environment(spec, settings),
            faults.WORKER_INDEX_VARIABLE: str(index),
        }
        try:
            self.pid = zygote.spawn(
                spec.handler, spec.code_dir or str(PROJECT_ROOT), environment, theirs
            )
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        request_write, response_read, stdout_read, stderr_read, self._status = ours
        self._requests = os.fdopen(request_write, "w", encoding="utf-8")
        self._responses = os.fdopen(response_read, "r", encoding="utf-8")
        self._exit_code: int | None = None
        self._exited = False
        self._initialized = False
        for output in (stdout_read, stderr_read):
            log.follow(spec.name, os.fdopen(output, "rb"))

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
        if not _readable(self._responses.fileno(), timeout_seconds):
            raise overrun
        line = self._responses.readline()
        if not line:
            raise EOFError(_exit_description(self._wait(EXIT_WAIT_SECONDS)))
        return line

    def alive(self) -> bool:
        return not self._exited and not _readable(self._status, 0)

    def _wait(self, timeout_seconds: float) -> int | None:
        """The exit code the zygote reported (None: it could not say)."""
        if not self._exited and _readable(self._status, timeout_seconds):
            report = os.read(self._status, 64).strip()
            self._exit_code = int(report) if report else None
            self._exited = True
        return self._exit_code

    def stop(self) -> None:
        for stream in (self._requests, self._responses):
            with contextlib.suppress(OSError):
                stream.close()
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self._wait(EXIT_WAIT_SECONDS)
        self._exited = True
        with contextlib.suppress(OSError):
            os.close(self._status)


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
        self,
        spec: FunctionSpec,
        settings: LocalSettings,
        log: LogSink,
        zygote: Zygote,
        max_workers: int,
    ) -> None:
        self.spec = spec
        self._settings = settings
        self._log = log
        self._zygote = zygote
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
            worker = WorkerProcess(self.spec, self._settings, self._log, self._zygote, index)
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
        self._zygote = Zygote(settings.state_dir)
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
                    spec, self._settings, self._log, self._zygote, self._max_workers
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
        self._zygote.stop()


def _readable(fd: int, timeout_seconds: float) -> bool:
    """Data or EOF on ``fd`` within the time (poll: a busy runtime's descriptors
    pass select()'s limit of 1024)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout_seconds * 1000))


def _exit_description(code: int | None) -> str:
    """How Lambda words a runtime process that ended mid-invocation."""
    if code is None:
        return "Runtime exited with error: exit status unknown"
    if code < 0:
        name = signal.strsignal(-code) or f"signal {-code}"
        return f"Runtime exited with error: signal: {name.lower()}"
    return f"Runtime exited with error: exit status {code}"


def _error(message: str, error_type: str, request_id: str) -> InvocationResult:
    payload = {"errorMessage": message, "errorType": error_type, "requestId": request_id}
    return InvocationResult(payload=payload, function_error="Unhandled")
