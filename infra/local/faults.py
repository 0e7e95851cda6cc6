"""Fault injection at the adapter boundary of the local runtime's workers.

A :class:`FaultPlan` says how often each kind of fault hits the AWS requests
that handlers make. The runtime keeps the current plan in a JSON file in its
state dir (:func:`write_plan`); every worker process re-reads it when the file
changes (one ``stat`` per request, no AWS call), so a plan switched on or off
applies to the next request of every worker without a restart.

Inside a worker the faults are injected on botocore's ``before-send`` event of
every client the handler creates (boto3, PynamoDB and Powertools all create
botocore clients), after the request is serialized and signed and before it
goes on the wire. So botocore's own retry logic sees them as it would see
AWS's: throttles and timeouts are retried by the SDK (standard mode: 4 attempts
for DynamoDB, 3 for other services, with backoff and a per-client retry quota),
and only what survives the retries reaches the handler's code.

One draw per kind for every HTTP attempt, from a random stream seeded by the
plan's seed, the function and the worker's index in its pool: the same plan and
the same sequence of requests in a worker give the same faults.

Every injected fault is appended as one JSON line to the record file
(:func:`read_injected`), before it takes effect (a crash included).

Use through the runtime::

    runtime.set_faults(FaultPlan(seed=7, crash_rate=0.001, throttle_rate=0.05))
    ...  # the workload
    runtime.set_faults(None)
    runtime.injected_faults()  # Counter({FaultKind.THROTTLE: 812, ...})

Stdlib only at import time: worker_main loads this file by path, in processes
whose ``sys.path`` holds the function's code, not this project.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import json
import math
import os
import random
import re
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.awsrequest import AWSPreparedRequest, AWSResponse
    from botocore.httpsession import URLLib3Session

FAULTS_DIR = "faults"
PLAN_FILE = "plan.json"
RECORD_FILE = "injected.jsonl"
# What a worker process learns from its environment (set by infra/local/workers.py).
PLAN_VARIABLE = "TBCSS_LOCAL_FAULT_PLAN"
RECORD_VARIABLE = "TBCSS_LOCAL_FAULT_RECORD"
LOGICAL_ID_VARIABLE = "TBCSS_LOCAL_LOGICAL_ID"
WORKER_INDEX_VARIABLE = "TBCSS_LOCAL_WORKER_INDEX"
# A crashed worker exits as a Python runtime dying does: "exit status 1".
CRASH_EXIT_CODE = 1

DYNAMODB_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"
THROTTLE_MESSAGE = (
    "Throughput exceeds the current capacity of your table or index. DynamoDB is "
    "automatically scaling your table or index so please try again shortly. If "
    "exceptions persist, check if you have a hot key: "
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html"
)
CONFLICT_REASON_MESSAGE = "Transaction is ongoing for the item"
ATTEMPT_HEADER = "amz-sdk-request"  # "attempt=2; max=4", set by botocore's retry handler
ATTEMPT_PATTERN = re.compile(r"attempt=(\d+)")


class FaultKind(StrEnum):
    """In the order a request's draws are tested: the first that hits wins (but a
    crash the plan does not allow there, which gives way to the next)."""

    CRASH = "crash"
    TIMEOUT_BEFORE = "timeout_before"
    THROTTLE = "throttle"
    TRANSACTION_CONFLICT = "transaction_conflict"
    TIMEOUT_AFTER = "timeout_after"


@dataclass(frozen=True)
class FaultPlan:
    """Per-request probabilities of each fault, for the functions named.

    ``functions``: substrings of a function's physical name or logical id (any
    match selects it); empty selects every function. ``crash_functions``: the
    same, for the selected functions that may crash; empty lets every one.
    """

    seed: int = 0
    crash_rate: float = 0.0
    timeout_before_rate: float = 0.0
    throttle_rate: float = 0.0  # DynamoDB requests only
    transaction_conflict_rate: float = 0.0  # DynamoDB TransactWriteItems only
    timeout_after_rate: float = 0.0
    functions: tuple[str, ...] = ()
    # This many crashes by all workers together since the plan was set, then none
    # (None: no limit); one more if two workers draw a crash at the same moment.
    # Each crash costs real time (a batch's visibility timeout, an API key's claim
    # until the function's timeout): a short run proves crashes are survived
    # without paying for every one its rate would bring.
    crash_limit: int | None = None
    crash_functions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "functions", tuple(self.functions))
        object.__setattr__(self, "crash_functions", tuple(self.crash_functions))
        for kind in FaultKind:
            rate = self.rate(kind)
            if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
                raise ValueError(f"{kind}_rate must be within [0, 1], not {rate}")
        if self.crash_limit is not None and (
            isinstance(self.crash_limit, bool)
            or not isinstance(self.crash_limit, int)
            or self.crash_limit < 1
        ):
            raise ValueError(f"crash_limit must be a whole number from 1, not {self.crash_limit}")
        if any(not name for name in (*self.functions, *self.crash_functions)):
            raise ValueError("an empty function filter would select every function")

    def rate(self, kind: FaultKind) -> float:
        rate: float = getattr(self, f"{kind.value}_rate")
        return rate

    def targets(self, function_name: str, logical_id: str = "") -> bool:
        return _selects(self.functions, function_name, logical_id)

    def may_crash(self, function_name: str, logical_id: str = "") -> bool:
        return _selects(self.crash_functions, function_name, logical_id)

    def unmatched_filters(self, functions: Iterable[tuple[str, str]]) -> list[str]:
        """The filter entries that select none of ``(name, logical id)``: typos. A
        crash filter must select one of the functions the plan selects."""
        known = list(functions)
        selected = [function for function in known if self.targets(*function)]
        return [part for part in self.functions if not _selects_one(part, known)] + [
            part for part in self.crash_functions if not _selects_one(part, selected)
        ]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))  # tuples become lists

    @classmethod
    def from_json(cls, text: str) -> FaultPlan:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a fault plan is a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault plan fields: {sorted(unknown)}")
        return cls(**data)


def _selects(filters: tuple[str, ...], function_name: str, logical_id: str) -> bool:
    """Whether any filter is part of the name or logical id (no filters: yes)."""
    return not filters or any(part in function_name or part in logical_id for part in filters)


def _selects_one(part: str, functions: Iterable[tuple[str, str]]) -> bool:
    return any(_selects((part,), name, logical_id) for name, logical_id in functions)


def applies(kind: FaultKind, service: str, operation: str) -> bool:
    """Whether a request to ``service`` (botocore's service id, hyphenized) can get ``kind``."""
    if kind is FaultKind.THROTTLE:
        return service == "dynamodb"
    if kind is FaultKind.TRANSACTION_CONFLICT:
        return service == "dynamodb" and operation == "TransactWriteItems"
    return True


class FaultDice:
    """The decisions of one worker process, request by request.

    Every request draws once per kind, whatever applies to it, so the stream
    stays aligned with the request sequence: the same plan, stream name and
    requests give the same faults.
    """

    def __init__(self, plan: FaultPlan, stream: str) -> None:
        self.plan = plan
        # A str seed is hashed with SHA-512: the same stream in any process.
        self._random = random.Random(f"{plan.seed}/{stream}")  # noqa: S311 - dice

    def roll(
        self, service: str, operation: str, crash_allowed: Callable[[], bool] | None = None
    ) -> FaultKind | None:
        """The request's fault, if any. A crash drawn where ``crash_allowed()`` says
        no (asked only then) gives way to the next kind drawn."""
        draws = [(kind, self._random.random()) for kind in FaultKind]
        for kind, draw in draws:
            if draw < self.plan.rate(kind) and applies(kind, service, operation):
                if kind is FaultKind.CRASH and crash_allowed and not crash_allowed():
                    continue
                return kind
        return None

    def pick(self, count: int) -> int:
        """Which of ``count`` items a fault hits (a transaction's conflicting item)."""
        return self._random.randrange(count)


# --- the runtime's side: the plan file and the record --------------------------------


def plan_path(state_dir: Path) -> Path:
    return state_dir / FAULTS_DIR / PLAN_FILE


def record_path(state_dir: Path) -> Path:
    return state_dir / FAULTS_DIR / RECORD_FILE


def write_plan(state_dir: Path, plan: FaultPlan | None) -> None:
    """Make ``plan`` the workers' plan (None: no faults). Atomic: a worker reads
    the old plan or the new one, and every request after this returns sees the new."""
    path = plan_path(state_dir)
    if plan is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{PLAN_FILE}.{os.getpid()}.{threading.get_ident()}")
    temporary.write_text(plan.to_json())
    temporary.replace(path)  # a new inode: workers see the change whatever the mtime


def reset(state_dir: Path) -> None:
    """No plan and an empty record (a runtime starting in a reused state dir)."""
    write_plan(state_dir, None)
    record_path(state_dir).unlink(missing_ok=True)


@dataclass(frozen=True)
class InjectedFault:
    """One line of the record file."""

    at: float  # epoch seconds, real time
    function: str
    logical_id: str
    worker: str  # "<function>#<index in its pool>"
    request_id: str  # the Lambda invocation's
    kind: FaultKind
    service: str
    operation: str
    attempt: int  # botocore's attempt number for this API call (1 = first)


def read_injected(state_dir: Path) -> list[InjectedFault]:
    records = []
    for line in _lines(record_path(state_dir)):
        data = json.loads(line)
        records.append(InjectedFault(**{**data, "kind": FaultKind(data["kind"])}))
    return records


def count_by_kind(records: Iterable[InjectedFault]) -> Counter[FaultKind]:
    return Counter(record.kind for record in records)


# --- the worker's side: injection -------------------------------------------------------


class FaultInjector:
    """Reads the plan file, decides on each request and injects the fault."""

    def __init__(
        self,
        plan_file: Path,
        record_file: Path,
        *,
        function_name: str,
        logical_id: str = "",
        stream: str | None = None,
    ) -> None:
        self._plan_file = plan_file
        self._record_file = record_file
        self._function_name = function_name
        self._logical_id = logical_id
        self._stream = stream or f"{function_name}#pid{os.getpid()}"
        self._lock = threading.Lock()
        self._plan_key: tuple[int, int, int] | None = None
        self._dice: FaultDice | None = None
        self._request_id = ""
        self._http: URLLib3Session | None = None

    def begin_invocation(self, request_id: str) -> None:
        self._request_id = request_id

    def attach(self, client: Any) -> None:
        """Inject into one botocore client's requests."""
        client.meta.events.register(
            "before-send", self.before_send, unique_id="tbcss-local-fault-injection"
        )

    def before_send(
        self, request: AWSPreparedRequest, event_name: str = "", **_: Any
    ) -> AWSResponse | None:
        """botocore's ``before-send.<service>.<operation>`` handler: None sends the
        request as usual; a response or an exception stands for AWS's answer."""
        service, _dot, operation = event_name.partition(".")[2].partition(".")
        with self._lock:
            dice = self._current_dice()
            if dice is None:
                return None
            kind = dice.roll(service, operation, partial(self._may_crash, dice.plan))
            if kind is None:
                return None
            conflicting = (
                dice.pick(max(1, _transact_item_count(request)))
                if kind is FaultKind.TRANSACTION_CONFLICT
                else 0
            )
        self._record(kind, service, operation, request)
        return self._inject(kind, service, operation, request, conflicting)

    # plan
    def _current_dice(self) -> FaultDice | None:
        try:
            status = os.stat(self._plan_file)
            key: tuple[int, int, int] | None = (
                status.st_ino,
                status.st_mtime_ns,
                status.st_size,
            )
        except FileNotFoundError:
            key = None
        if key != self._plan_key:
            self._plan_key = key
            self._dice = self._load_dice() if key is not None else None
        return self._dice

    def _load_dice(self) -> FaultDice | None:
        try:
            plan = FaultPlan.from_json(self._plan_file.read_text())
        except (OSError, ValueError, TypeError) as error:
            # Replaced between stat and read (the next request rereads), or broken.
            print(f"tbcss faults: plan not read: {error}", file=sys.stderr)
            self._plan_key = None
            return None
        if not plan.targets(self._function_name, self._logical_id):
            return None
        return FaultDice(plan, self._stream)

    def _may_crash(self, plan: FaultPlan) -> bool:
        """This function is one the plan crashes, and its crashes are not spent."""
        return plan.may_crash(self._function_name, self._logical_id) and not (
            self._crashes_spent(plan)
        )

    def _crashes_spent(self, plan: FaultPlan) -> bool:
        """Whether the plan's crash limit is reached: crashes recorded (by any worker)
        since the plan file was written. Read only when a crash is drawn."""
        if plan.crash_limit is None:
            return False
        written = self._plan_key[1] / 1e9 if self._plan_key is not None else 0.0
        faults = [json.loads(line) for line in _lines(self._record_file)]
        crashes = [f for f in faults if f["kind"] == FaultKind.CRASH and f["at"] >= written]
        return len(crashes) >= plan.crash_limit

    # record
    def _record(
        self, kind: FaultKind, service: str, operation: str, request: AWSPreparedRequest
    ) -> None:
        fault = InjectedFault(
            at=time.time(),
            function=self._function_name,
            logical_id=self._logical_id,
            worker=self._stream,
            request_id=self._request_id,
            kind=kind,
            service=service,
            operation=operation,
            attempt=_attempt(request),
        )
        line = (json.dumps(dataclasses.asdict(fault)) + "\n").encode()
        self._record_file.parent.mkdir(parents=True, exist_ok=True)
        # One write on an O_APPEND descriptor: lines from concurrent workers never
        # interleave, and the line is in the file before a crash ends the process.
        descriptor = os.open(self._record_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)

    # injection
    def _inject(
        self,
        kind: FaultKind,
        service: str,
        operation: str,
        request: AWSPreparedRequest,
        conflicting: int,
    ) -> AWSResponse | None:
        from botocore.exceptions import ReadTimeoutError  # noqa: PLC0415 - see module doc

        if kind is FaultKind.CRASH:
            _crash(f"{service}.{operation}")
        if kind is FaultKind.TIMEOUT_BEFORE:
            raise ReadTimeoutError(endpoint_url=request.url)
        if kind is FaultKind.THROTTLE:
            return _dynamodb_error(
                request,
                "ProvisionedThroughputExceededException",
                {"message": THROTTLE_MESSAGE},
            )
        if kind is FaultKind.TRANSACTION_CONFLICT:
            return _transaction_conflict(request, conflicting)
        self._send(request)  # TIMEOUT_AFTER: AWS applies it, the answer is lost
        raise ReadTimeoutError(endpoint_url=request.url)

    def _send(self, request: AWSPreparedRequest) -> None:
        if self._http is None:
            from botocore.httpsession import URLLib3Session  # noqa: PLC0415 - see module doc

            self._http = URLLib3Session()
        response = self._http.send(request)
        _ = response.content  # read it all: the connection goes back to the pool


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _crash(where: str) -> None:
    print(f"tbcss faults: worker crashing before {where}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(CRASH_EXIT_CODE)


def _attempt(request: AWSPreparedRequest) -> int:
    match = ATTEMPT_PATTERN.search(str(request.headers.get(ATTEMPT_HEADER, "")))
    return int(match.group(1)) if match else 1


def _transact_item_count(request: AWSPreparedRequest) -> int:
    body = request.body
    if isinstance(body, bytes | str):
        try:
            items = json.loads(body).get("TransactItems", [])
        except ValueError:
            return 1
        return len(items) if isinstance(items, list) else 1
    return 1


def _transaction_conflict(request: AWSPreparedRequest, conflicting: int) -> AWSResponse:
    """DynamoDB's answer when another transaction holds one of the items: one
    cancellation reason per item, in request order, ``None`` for the others."""
    count = max(1, _transact_item_count(request))
    reasons: list[dict[str, str]] = [{"Code": "None"} for _ in range(count)]
    reasons[conflicting] = {"Code": "TransactionConflict", "Message": CONFLICT_REASON_MESSAGE}
    codes = ", ".join(reason["Code"] for reason in reasons)
    return _dynamodb_error(
        request,
        "TransactionCanceledException",
        {
            "Message": (
                "Transaction cancelled, please refer cancellation reasons for "
                f"specific reasons [{codes}]"
            ),
            "CancellationReasons": reasons,
        },
    )


def _dynamodb_error(
    request: AWSPreparedRequest, code: str, fields: Mapping[str, Any]
) -> AWSResponse:
    from botocore.awsrequest import AWSResponse  # noqa: PLC0415 - see module doc
    from botocore.compat import HTTPHeaders  # noqa: PLC0415

    body = json.dumps({"__type": DYNAMODB_ERROR_PREFIX + code, **fields}).encode()
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/x-amz-json-1.0"
    headers["Content-Length"] = str(len(body))
    headers["x-amzn-RequestId"] = uuid.uuid4().hex.upper()
    headers["x-amz-crc32"] = str(zlib.crc32(body) & 0xFFFFFFFF)  # botocore checks it
    return AWSResponse(request.url, 400, headers, _Body(body))


class _Body:
    """The ``raw`` of an :class:`AWSResponse` built here: what botocore reads."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: Any) -> Iterable[bytes]:
        yield self._content


# --- installing the injector in a worker process ------------------------------------------


def install_from_environment(environ: Mapping[str, str]) -> FaultInjector | None:
    """In a worker: inject into every botocore client created from now on (None
    when the runtime set no plan file). botocore is patched when the handler
    first imports it, so workers that never use AWS never pay for importing it."""
    plan_file = environ.get(PLAN_VARIABLE)
    record_file = environ.get(RECORD_VARIABLE)
    if not plan_file or not record_file:
        return None
    function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
    index = environ.get(WORKER_INDEX_VARIABLE)
    injector = FaultInjector(
        Path(plan_file),
        Path(record_file),
        function_name=function_name,
        logical_id=environ.get(LOGICAL_ID_VARIABLE, ""),
        stream=f"{function_name}#{index}" if index else None,
    )
    _after_import("botocore.session", lambda module: _patch_sessions(module, injector))
    return injector


def _patch_sessions(session_module: ModuleType, injector: FaultInjector) -> None:
    session_class = session_module.Session
    original: Callable[..., Any] = session_class.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        injector.attach(client)
        return client

    session_class.create_client = create_client


def _after_import(module_name: str, patch: Callable[[ModuleType], None]) -> None:
    """Run ``patch`` on the module once it is imported (at once if it already is)."""
    if module_name in sys.modules:
        patch(sys.modules[module_name])
        return
    sys.meta_path.insert(0, _PatchOnImport(module_name, patch))


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """A one-shot import hook: finds the module as usual, patches it once loaded."""

    def __init__(self, module_name: str, patch: Callable[[ModuleType], None]) -> None:
        self._module_name = module_name
        self._patch = patch

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        del target  # part of the finder protocol; not needed to find a module by path
        if fullname != self._module_name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PatchingLoader(spec.loader, self._patch)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, patch: Callable[[ModuleType], None]) -> None:
        self._inner = inner
        self._patch = patch

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module keeps its real loader (tracebacks read source through it).
        module.__loader__ = self._inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        self._inner.exec_module(module)
        self._patch(module)
