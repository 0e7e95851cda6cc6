"""Entry point of a local Lambda worker process: imports one function's handler
once (a warm container) and runs one invocation per request.

Protocol: one JSON object per line on the request fd, one JSON object per line
on the response fd. The first response line, unasked, {"init": "done"}, marks
the end of init (the handler's import, as a Lambda container's init phase); a
failed init is retried, and reported, by the first invocation, as in Lambda.
stdout and stderr stay free for the handler's logs, which the runtime forwards.
Before the handler loads, the runtime's fault injection (infra/local/faults.py)
hooks every botocore client the handler will create.

Request:  {"request_id", "payload", "clock_offset_seconds", "deadline_epoch_ms"}
Response: {"ok": true, "result": ...}
      or {"ok": false, "error": {errorMessage, errorType, stackTrace}}
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from infra.local.faults import FaultInjector

Handler = Callable[[Any, Any], Any]
# Loaded by path: this process imports from the function's code, not from this project.
FAULTS_FILE = Path(__file__).with_name("faults.py")
FAULTS_MODULE = "tbcss_local_faults"


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
    spec = importlib.util.spec_from_file_location(FAULTS_MODULE, FAULTS_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {FAULTS_FILE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[FAULTS_MODULE] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    injector: FaultInjector | None = module.install_from_environment(os.environ)
    return injector


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


def main() -> None:
    # Ctrl-C reaches the whole process group; the runtime, not the terminal, stops workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    request_fd, response_fd, handler_spec = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
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


if __name__ == "__main__":
    # Started by file path: import from the function's code directory (the cwd),
    # never from this file's directory.
    sys.path[0] = os.getcwd()
    main()
