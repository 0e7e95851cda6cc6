"""Entry point of the local Lambda workers: a zygote process that forks one
worker per warm container; each worker imports one function's handler once and
runs one invocation per request.

The zygote (one per runtime) imports the third-party packages handlers use
(:data:`PRELOAD`) once, then forks a worker for every spawn request on its
control socket (Lambda SnapStart goes further: it snapshots the function's own
init too). It runs in the runtime's state directory. A worker
still imports its function's own code, from the function's code directory and
with the function's environment: that import is its init phase. The zygote
reaps its workers and writes each one's exit code to the status pipe the runtime
sent with the spawn request.

Spawn request: {"handler", "cwd", "env"} with the descriptors of :data:`SPAWN_FDS`;
answer {"pid"}. Worker protocol: one JSON object per line on the request fd, one
JSON object per line on the response fd. The first response line, unasked,
{"init": "done"}, marks the end of init; a failed init is retried, and reported,
by the first invocation, as in Lambda. stdout and stderr stay free for the
handler's logs, which the runtime forwards. Before the handler loads, the
runtime's fault injection (infra/local/faults.py) hooks every botocore client
the handler will create.

Request:  {"request_id", "payload", "clock_offset_seconds", "deadline_epoch_ms"}
Response: {"ok": true, "result": ...}
      or {"ok": false, "error": {errorMessage, errorType, stackTrace}}
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from infra.local.faults import FaultInjector

Handler = Callable[[Any, Any], Any]
# Loaded by path: this process imports from the function's code, not from this project.
FAULTS_FILE = Path(__file__).with_name("faults.py")
FAULTS_MODULE = "tbcss_local_faults"
MODELS_FILE = Path(__file__).with_name("botocore_models.py")
MODELS_MODULE = "tbcss_local_botocore_models"
# What the handlers import from site-packages, heaviest first. Never project code:
# each worker imports that from its own code directory, with its own environment.
# These read a few variables at import (Powertools' AWS_EXECUTION_ENV and
# POWERTOOLS_DEBUG, PYNAMODB_CONFIG): the zygote's, which no template sets.
PRELOAD = (
    "boto3",
    "botocore.session",
    "botocore.client",
    "s3transfer.manager",
    "aws_lambda_powertools",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.event_handler.openapi.params",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.idempotency",
    "aws_lambda_powertools.utilities.data_classes",
    "pydantic",
    "pydantic_settings",
    "pynamodb.models",
    "pynamodb.transactions",
    "jwt",
    "cryptography.hazmat.primitives.ciphers.aead",
    "reportlab.platypus",
)
# What the handlers' clients talk to: the zygote decodes their botocore models once.
CLIENT_SERVICES = (
    "dynamodb",
    "events",
    "sqs",
    "ssm",
    "kms",
    "secretsmanager",
    "s3",
    "sns",
    "ses",
    "stepfunctions",
    "lambda",
)
# A spawn request's descriptors, in order (see Zygote in workers.py).
SPAWN_FDS = ("request", "response", "stdout", "stderr", "status")
SPAWN_MESSAGE_BYTES = 1 << 16


class LocalLambdaContext:
    """The attributes and method of Lambda's Python context object."""

    def __init__(self, request_id: str, deadline_epoch_ms: int) -> None:
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = os.environ["TBCSS_LOCAL_FUNCTION_ARN"]
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_epoch_ms = deadline_epoch_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_epoch_ms - int(time.time() * 1000))


def load_handler(spec: str) -> Handler:
    module_name, _, function_name = spec.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module_name), function_name)
    return handler


def lambda_error(error: BaseException, error_type: str | None = None) -> dict[str, Any]:
    # The first frame is this runtime calling the handler; Lambda's trace starts below it.
    frames = traceback.format_tb(error.__traceback__)[1:]
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "requestId": "",
        "stackTrace": [frame.rstrip("\n") for frame in frames],
    }


def _apply_clock_offset(seconds: float) -> None:
    """Every handler sees the runtime's (movable) time through shared.clock.
    Code without shared/ (a foreign asset) simply runs on real time."""
    try:
        from shared.clock import apply_offset  # noqa: PLC0415 - optional, see above
    except ImportError:
        return
    apply_offset(seconds)


def install_faults() -> FaultInjector | None:
    """The runtime's fault injection (infra/local/faults.py), switched by its plan file."""
    module = _load_by_path(FAULTS_MODULE, FAULTS_FILE)
    injector: FaultInjector | None = module.install_from_environment(os.environ)
    return injector


def _load_by_path(name: str, path: Path) -> ModuleType:
    """A module of infra/local, from its file: a worker's ``sys.path`` holds the
    function's code, not this project."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class Worker:
    def __init__(self, handler_spec: str, faults: FaultInjector | None = None) -> None:
        self._handler_spec = handler_spec
        self._handler: Handler | None = None
        self._faults = faults

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        _apply_clock_offset(float(request.get("clock_offset_seconds", 0.0)))
        if self._faults is not None:
            self._faults.begin_invocation(request["request_id"])
        context = LocalLambdaContext(request["request_id"], int(request["deadline_epoch_ms"]))
        try:
            handler = self._loaded()
        except Exception as error:  # the init phase failing is a Lambda error too
            return {"ok": False, "error": lambda_error(error, "Runtime.ImportModuleError")}
        try:
            result = handler(request["payload"], context)
        except Exception as error:  # the handler's exception is the invocation's result
            return {"ok": False, "error": lambda_error(error)}
        return {"ok": True, "result": result}

    def initialize(self) -> None:
        """Lambda's init phase: import the handler before the first invocation."""
        try:
            self._loaded()
        except Exception:  # reported by the invocation that retries it
            traceback.print_exc()

    def _loaded(self) -> Handler:
        if self._handler is None:
            self._handler = load_handler(self._handler_spec)
        return self._handler


def serve(requests: TextIO, responses: TextIO, worker: Worker) -> None:
    for line in requests:
        response = worker.handle(json.loads(line))
        try:
            encoded = json.dumps(response)
        except (TypeError, ValueError) as error:
            encoded = json.dumps(
                {"ok": False, "error": lambda_error(error, "Runtime.MarshalError")}
            )
        sys.stdout.flush()
        sys.stderr.flush()
        responses.write(encoded + "\n")
        responses.flush()


def run_worker(request_fd: int, response_fd: int, handler_spec: str) -> None:
    with (
        os.fdopen(request_fd, "r", encoding="utf-8") as requests,
        os.fdopen(response_fd, "w", encoding="utf-8") as responses,
    ):
        worker = Worker(handler_spec, install_faults())
        worker.initialize()
        sys.stderr.flush()
        responses.write(json.dumps({"init": "done"}) + "\n")
        responses.flush()
        serve(requests, responses, worker)


# --- the zygote --------------------------------------------------------------------


def preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as error:  # each worker imports it again, and says why
            print(f"zygote: {name} not preloaded: {error!r}", file=sys.stderr)
    try:
        models = _load_by_path(MODELS_MODULE, MODELS_FILE)
        models.share_with_every_session()
        models.decode_models(CLIENT_SERVICES)
    except Exception as error:  # each worker decodes what is missing, as botocore does
        print(f"zygote: botocore models not decoded beforehand: {error!r}", file=sys.stderr)


def zygote(control: socket.socket) -> None:
    """Fork a worker per spawn request until the runtime closes ``control``;
    reap them and write each one's exit code to its status pipe."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
    status_fds: dict[int, int] = {}  # worker pid -> its status pipe's write end
    while True:
        ready, _, _ = select.select([control.fileno(), wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 512)
        _reap(status_fds)
        if control.fileno() not in ready:
            continue
        message, fds, flags, _ = socket.recv_fds(control, SPAWN_MESSAGE_BYTES, len(SPAWN_FDS))
        if not message:
            # The runtime is gone. Idle workers end when their request pipes close;
            # the runtime kills busy ones before it closes this socket.
            return
        try:
            spawn = _spawn_request(message, fds, flags)
            pid = os.fork()
        except (OSError, ValueError) as error:  # refused: the runtime raises it
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"error": repr(error)}).encode())
            continue
        if pid == 0:
            zygote_fds = [control.fileno(), wake_read, wake_write, *status_fds.values()]
            _become_worker(spawn, fds, zygote_fds)
        status_fds[pid] = fds[-1]
        for fd in fds[:-1]:
            os.close(fd)
        control.send(json.dumps({"pid": pid}).encode())


def _spawn_request(message: bytes, fds: list[int], flags: int) -> dict[str, Any]:
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != len(SPAWN_FDS):
        raise ValueError(f"a spawn request is one message and {len(SPAWN_FDS)} descriptors")
    spawn: dict[str, Any] = json.loads(message)
    return spawn


def _reap(status_fds: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status_fds.pop(pid, None)
        if fd is None:
            continue
        # The runtime may have stopped listening (it gave up waiting): nothing to tell.
        with contextlib.suppress(OSError):
            os.write(fd, f"{os.waitstatus_to_exitcode(status)}\n".encode())
        os.close(fd)


def _become_worker(spawn: dict[str, Any], fds: list[int], zygote_fds: list[int]) -> None:
    """In the forked child: the function's environment, directory and output, then
    the worker's loop; ends the process with the loop's exit code. ``zygote_fds``:
    the zygote's own descriptors (its control socket, its wakeup pipe, the other
    workers' status pipes), closed."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        request_fd, response_fd, stdout_fd, stderr_fd, status_fd = fds
        for fd in (*zygote_fds, status_fd):
            os.close(fd)
        for fd, target in ((stdout_fd, 1), (stderr_fd, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(spawn["env"])
        time.tzset()
        # CPython reseeds ``random`` in a forked child: no two workers share retry jitter.
        os.chdir(spawn["cwd"])
        sys.path.insert(0, spawn["cwd"])  # the function's code, as Lambda's task root
        run_worker(request_fd, response_fd, spawn["handler"])
        code = 0
    except SystemExit as exit_request:  # as the interpreter ends on sys.exit()
        if exit_request.code is None or isinstance(exit_request.code, int):
            code = exit_request.code or 0
        else:
            print(exit_request.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def main() -> None:
    # Ctrl-C reaches the whole process group; the runtime, not the terminal, stops workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Started by file path: nothing is imported from this file's directory.
    del sys.path[0]
    preload()
    zygote(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    main()
