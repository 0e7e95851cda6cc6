"""The local runtime's AWS usage meter: every request the system makes, and the
billing units AWS would charge for it (:mod:`infra.local.usage_units` has the
arithmetic).

Where it counts, one meter per runtime (``runtime.meter``):

* the WSGI shim in front of moto (:mod:`infra.local.moto_server`) hands every
  request and its response to :meth:`UsageMeter.observe`: handlers in workers,
  the pollers, the scheduler, the test process, and moto's own Step Functions
  interpreter (which calls AWS over HTTP) all come through it;
* the worker pools report every Lambda invocation with its duration
  (:meth:`UsageMeter.record_invocation`), the gateway every API request
  (:meth:`UsageMeter.record_api_request`);
* two things moto does without an HTTP request are hooked in moto while a meter
  is attached: Step Functions state transitions, and EventBridge rules sending
  to SQS targets.

Billed or not: the runtime's own machinery stands in for AWS services that poll
or deliver for you (Lambda's event source mappings, EventBridge's scheduler and
target delivery). Its boto3 clients carry :data:`RUNTIME_APP_ID` in their
User-Agent (:func:`runtime_client_config`); their requests are counted under
``requests`` and ``unbilled_requests`` but add no billing units. What AWS does
bill for those is not what the local loops do: Kinesis GetRecords by a mapping
is free, but a mapping's SQS polling IS billed (about 5 long-polling pollers per
queue, whatever the traffic; with 20 s polls roughly 650k ReceiveMessage per
queue-month when idle), and the local pollers poll every second and check queue
attributes to drain: a cost model prices that from the mappings, not from these
counts. The soak's own observation calls can carry the same marker.

``snapshot()`` is cheap and snapshots subtract (``after - before``), so a soak
reports per phase; ``to_dict()`` gives the JSON the cost model reads.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote

import boto3
import botocore.session
from botocore.config import Config
from werkzeug.wrappers import Request

from infra.local import usage_units
from infra.local.botocore_models import shared_loader
from infra.local.moto_speedups import stored_item, swapped, table_named
from infra.local.usage_units import ItemRef

logger = logging.getLogger("tbcss.local.meter")

RUNTIME_APP_ID = "tbcss-local-runtime"
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
RULE_TO_QUEUE = "SendMessage (EventBridge target)"  # moto's delivery, no HTTP request
UNMETERED_PATHS = ("/moto-api", "/_tbcss")  # moto's and the shim's own endpoints
# Set in a request's environ when the shim answered a resent TransactWriteItems
# with its first answer (infra/local/client_tokens.py): DynamoDB bills reads then.
REPLAYED_TRANSACTION = "tbcss.replayed_transaction"
_CREDENTIAL = re.compile(r"Credential=([^/,\s&]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
_RPC_V2_PATH = re.compile(r"^/service/[^/]+/operation/([^/?]+)")
# Signing names -> the keys the cost model reads.
_SERVICE_KEYS = {"states": "stepfunctions", "email": "ses", "execute-api": "apigateway"}
_JSON_REQUESTS = {
    "dynamodb": None,  # every operation
    "kinesis": frozenset({"PutRecord", "PutRecords"}),
    "sqs": frozenset({"SendMessage", "SendMessageBatch"}),
    "events": frozenset({"PutEvents"}),
}
_DYNAMODB_WRITES = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
)
_DYNAMODB_PAGES = frozenset({"Query", "Scan"})
# A write that fails on its condition is billed as a write of the item as it is.
_BILLED_WRITE_ERRORS = ("ConditionalCheckFailedException", "TransactionCanceledException")
_S3_LISTS = frozenset({"ListBuckets", "ListObjects", "ListObjectsV2", "ListObjectVersions"})
_S3_LIST_PARAMETERS = frozenset(
    {
        "list-type",
        "prefix",
        "delimiter",
        "marker",
        "max-keys",
        "continuation-token",
        "start-after",
        "encoding-type",
        "fetch-owner",
    }
)

# Integer counters (sums stay exact; to_dict converts):
READ_HALF_UNITS = "dynamodb_read_half_units"
LAMBDA_MB_MS = "lambda_mb_ms"
UNIT_NAMES = (
    "dynamodb_read_request_units",
    "dynamodb_write_request_units",
    "lambda_requests",
    "lambda_gb_seconds",
    "kinesis_put_payload_units",
    "sqs_requests",
    "eventbridge_events",
    "stepfunctions_state_transitions",
    "s3_tier1_requests",
    "s3_tier2_requests",
    "apigateway_requests",
)
# Unit name -> (counter, divisor) for the units reported as floats.
_FLOAT_UNITS = {
    "dynamodb_read_request_units": (READ_HALF_UNITS, 2),
    "dynamodb_write_request_units": ("dynamodb_write_request_units", 1),
    "lambda_gb_seconds": (LAMBDA_MB_MS, 1024 * 1000),
}

Key = tuple[str, ...]
Units = dict[str, int]


def runtime_client_config() -> Config:
    """boto3 client config for requests AWS would make on its own (pollers,
    scheduler, or a test's observation calls): counted, never billed."""
    return Config(user_agent_extra=RUNTIME_APP_ID)


def local_session(endpoint_url: str | None, *, billed: bool = False) -> boto3.session.Session:
    """A boto3 session at the runtime's moto. Unbilled (the default) for the
    runtime's own machinery (pollers, scheduler: AWS does that work itself) and a
    test's looking around; ``billed`` for what a client of the system would do.
    Against a local endpoint any credentials do: take the environment's or dummy
    ones, without walking the credential chain (whose instance-metadata probe
    costs seconds when nothing is configured). Not safe to share across threads."""
    if not endpoint_url:
        return boto3.session.Session()
    botocore_session = botocore.session.Session()
    botocore_session.register_component("data_loader", shared_loader())
    if not billed:
        botocore_session.set_default_client_config(runtime_client_config())
    return boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN"),
        botocore_session=botocore_session,
    )


def local_client(
    service: str,
    endpoint_url: str,
    region: str,
    *,
    billed: bool = False,
    config: Config | None = None,
) -> Any:
    """A client of a :func:`local_session`: ``local_client("sqs", url, region)``.
    Without a ``config`` of its own, one client per service and endpoint is made
    and shared: a boto3 client is thread-safe, and making one takes tens of ms."""
    if config is None:
        return _shared_client(service, endpoint_url, region, billed)
    session = local_session(endpoint_url, billed=billed)
    return session.client(  # type: ignore[call-overload]
        service, endpoint_url=endpoint_url, region_name=region, config=config
    )


@lru_cache(maxsize=64)
def _shared_client(service: str, endpoint_url: str, region: str, billed: bool) -> Any:
    session = local_session(endpoint_url, billed=billed)
    return session.client(service, endpoint_url=endpoint_url, region_name=region)  # type: ignore[call-overload]


# --- snapshots -------------------------------------------------------------------


@dataclass(frozen=True)
class UsageSnapshot:
    """Every count the meter keeps, at one moment; ``after - before`` is the usage between."""

    counts: Mapping[Key, int] = field(default_factory=dict)

    def __sub__(self, other: UsageSnapshot) -> UsageSnapshot:
        keys = set(self.counts) | set(other.counts)
        difference = {key: self.counts.get(key, 0) - other.counts.get(key, 0) for key in keys}
        return UsageSnapshot({key: value for key, value in difference.items() if value})

    def units(self) -> dict[str, int | float]:
        """The billing units (the cost model's ``units``), every name present."""
        units: dict[str, int | float] = {}
        for name in UNIT_NAMES:
            if name in _FLOAT_UNITS:
                counter, divisor = _FLOAT_UNITS[name]
                units[name] = self.counts.get(("units", counter), 0) / divisor
            else:
                units[name] = self.counts.get(("units", name), 0)
        return units

    def to_dict(self) -> dict[str, Any]:
        """``requests`` (service -> operation -> count, every request), its
        ``unbilled_requests`` subset (the runtime's own machinery), ``units``,
        and ``lambda_functions`` (name -> invocations, GB-s)."""
        functions: dict[str, dict[str, int | float]] = {}
        for (kind, name, what), value in self._entries("lambda"):
            del kind
            entry = functions.setdefault(name, {"invocations": 0, "gb_seconds": 0.0})
            if what == LAMBDA_MB_MS:
                entry["gb_seconds"] = value / (1024 * 1000)
            else:
                entry["invocations"] = value
        return {
            "requests": self._nested("requests"),
            "unbilled_requests": self._nested("unbilled_requests"),
            "units": self.units(),
            "lambda_functions": dict(sorted(functions.items())),
        }

    def _entries(self, kind: str) -> list[tuple[Key, int]]:
        return sorted((key, value) for key, value in self.counts.items() if key[0] == kind)

    def _nested(self, kind: str) -> dict[str, dict[str, int]]:
        nested: dict[str, dict[str, int]] = {}
        for (_, service, operation), value in self._entries(kind):
            nested.setdefault(service, {})[operation] = value
        return nested


# --- the meter -------------------------------------------------------------------


class UsageMeter:
    """Thread-safe counters: a lock and a Counter; the work happens outside the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Key] = Counter()

    def snapshot(self) -> UsageSnapshot:
        with self._lock:
            return UsageSnapshot(dict(self._counts))

    def _add(self, increments: Mapping[Key, int]) -> None:
        with self._lock:
            self._counts.update(increments)

    # recording -------------------------------------------------------------------

    def record_request(
        self, service: str, operation: str, *, billed: bool, units: Mapping[str, int] | None = None
    ) -> None:
        increments: dict[Key, int] = {("requests", service, operation): 1}
        if not billed:
            increments[("unbilled_requests", service, operation)] = 1
        else:
            increments.update({("units", name): value for name, value in (units or {}).items()})
        self._add(increments)

    def record_invocation(
        self, function_name: str, memory_mb: int, duration_seconds: float
    ) -> None:
        """One Lambda invocation (failed ones too). The duration is the worker's wall
        time for the request: the handler plus its calls to local moto, whose
        latency differs from AWS's (usually slower), and the init on a cold start."""
        mb_ms = usage_units.lambda_mb_milliseconds(duration_seconds, memory_mb)
        self._add(
            {
                ("units", "lambda_requests"): 1,
                ("units", LAMBDA_MB_MS): mb_ms,
                ("lambda", function_name, "invocations"): 1,
                ("lambda", function_name, LAMBDA_MB_MS): mb_ms,
            }
        )

    def record_api_request(self, label: str, *, billed: bool) -> None:
        """One request to the REST API; API Gateway bills only those it passes to the
        integration (not unauthorized ones, not unknown routes)."""
        units = {"apigateway_requests": 1} if billed else None
        self.record_request("apigateway", label, billed=billed, units=units)

    def record_transitions(self, count: int) -> None:
        self._add({("units", "stepfunctions_state_transitions"): count})

    # the moto shim ------------------------------------------------------------------

    def observe(self, environ: dict[str, Any]) -> MeteredCall | None:
        """Start metering one WSGI request to moto (None: not an AWS request).
        Reads (and puts back) the request body when the units need it."""
        path = environ.get("PATH_INFO", "")
        if path.startswith(UNMETERED_PATHS):
            return None
        service, region, access_key = _credential_scope(environ)
        operation = _operation(environ, service)
        billed = RUNTIME_APP_ID not in environ.get("HTTP_USER_AGENT", "")
        call = MeteredCall(self, service, operation, billed)
        if billed:
            call.prepare(environ, region, access_key)
        return call

    # moto internals without an HTTP request --------------------------------------------

    def attach(self) -> None:
        """Count what moto does in-process (state transitions, EventBridge to SQS)
        until :meth:`detach`; moto is process-wide, so is this."""
        _MOTO_HOOKS.attach(self)

    def detach(self) -> None:
        _MOTO_HOOKS.detach(self)


class MeteredCall:
    """One request to moto being metered: ``capture`` wraps start_response,
    ``finish`` takes the response (and returns it, buffered if it was read)."""

    def __init__(self, meter: UsageMeter, service: str, operation: str, billed: bool) -> None:
        self.service = service
        self.operation = operation
        self.billed = billed
        self._meter = meter
        self._status = 0
        self._request: Any = None
        self._stored: MotoStoredItems | None = None
        self._written: list[ItemRef] = []
        self._sizes_before: list[int] = []
        self._environ: dict[str, Any] = {}

    def prepare(self, environ: dict[str, Any], region: str, access_key: str) -> None:
        self._environ = environ
        wanted = _JSON_REQUESTS.get(self.service, frozenset())
        if wanted is not None and self.operation not in wanted:
            return
        try:
            self._request = json.loads(buffered_body(environ) or b"{}")
            if self.service == "dynamodb":
                self._stored = MotoStoredItems(access_key, region)
                self._written = usage_units.written_items(self.operation, self._request)
                self._sizes_before = [self._stored.size(ref) for ref in self._written]
        except Exception:  # metering never fails a request
            logger.warning("cannot meter %s %s", self.service, self.operation, exc_info=True)
            self._request = None

    def capture(self, start_response: Any) -> Any:
        def capturing(status: str, headers: Any, exc_info: Any = None) -> Any:
            self._status = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        return capturing

    def finish(self, response: Iterable[bytes]) -> Iterable[bytes]:
        body: bytes | None = None
        if self.billed and self._wants_response():
            body = _drain(response)
            response = [body]
        units: Units = {}
        if self.billed:
            try:
                units = self._units(body)
            except Exception:  # metering never fails a request
                logger.warning("cannot meter %s %s", self.service, self.operation, exc_info=True)
        self._meter.record_request(self.service, self.operation, billed=self.billed, units=units)
        return response

    def _wants_response(self) -> bool:
        if self.service == "dynamodb":
            return self.operation in _DYNAMODB_PAGES or self._status != 200
        return self.service == "sqs" and self.operation == "ReceiveMessage"

    def _units(self, body: bytes | None) -> Units:
        response = json.loads(body) if body else {}
        if self.service == "dynamodb":
            return self._dynamodb_units(response)
        if self.service == "s3":
            return _s3_units(self.operation)
        if self.service == "sqs":  # every call, failed ones too
            return {"sqs_requests": usage_units.sqs_billed_requests(self._sqs_payload(response))}
        return self._put_units()

    def _put_units(self) -> Units:
        """PutRecord(s) and PutEvents: the records and entries put."""
        if self._request is None or self._status != 200:
            return {}
        if self.service == "kinesis":
            records = self._request.get("Records") or [self._request]
            return {"kinesis_put_payload_units": usage_units.kinesis_payload_units(records)}
        if self.service == "events":
            entries = self._request.get("Entries", [])
            return {"eventbridge_events": usage_units.eventbridge_billed_events(entries)}
        return {}

    def _sqs_payload(self, response: Mapping[str, Any]) -> int:
        if self.operation == "ReceiveMessage":
            messages = response.get("Messages", [])
        elif self._request is not None:
            messages = self._request.get("Entries") or [self._request]
        else:
            return 0
        return sum(usage_units.sqs_message_bytes(message) for message in messages)

    def _dynamodb_units(self, response: Mapping[str, Any]) -> Units:
        if self._request is None or self._stored is None:
            return {}
        if self.operation in _DYNAMODB_WRITES:
            return self._write_units(response)
        if self._status != 200:
            return {}
        if self.operation in _DYNAMODB_PAGES:
            consistent = bool(self._request.get("ConsistentRead"))
            half_units = usage_units.page_read_half_units(response, consistent=consistent)
        else:
            half_units = sum(
                usage_units.read_half_units(
                    self._stored.size(ref),
                    consistent=ref.consistent,
                    transactional=ref.transactional,
                )
                for ref in usage_units.point_reads(self.operation, self._request)
            )
        return {READ_HALF_UNITS: half_units}

    def _write_units(self, response: Mapping[str, Any]) -> Units:
        error = str(response.get("__type", ""))
        if self._status != 200 and not error.endswith(_BILLED_WRITE_ERRORS):
            return {}
        assert self._stored is not None
        if self._environ.get(REPLAYED_TRANSACTION):
            # Nothing written again: DynamoDB reads the items to answer a resend.
            return {
                READ_HALF_UNITS: sum(
                    usage_units.read_half_units(size, consistent=True, transactional=True)
                    for size in self._sizes_before
                )
            }
        units = sum(
            usage_units.write_units(before, self._stored.size(ref), transactional=ref.transactional)
            for ref, before in zip(self._written, self._sizes_before, strict=True)
        )
        return {"dynamodb_write_request_units": units}


def _drain(response: Iterable[bytes]) -> bytes:
    try:
        return b"".join(response)
    finally:
        close = getattr(response, "close", None)
        if close is not None:
            close()


def buffered_body(environ: dict[str, Any]) -> bytes:
    """The request body, read once and put back for whoever reads it next."""
    body = Request(environ).get_data()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def _s3_units(operation: str) -> Units:
    """Tier 1: PUT, COPY, POST, LIST; DELETE is free; tier 2: GET, HEAD, the rest."""
    if operation.startswith("Delete") and "Objects" not in operation:
        return {}
    tier_one = operation in _S3_LISTS or operation.startswith(("Put", "Copy", "Post", "Create"))
    return {"s3_tier1_requests": 1} if tier_one else {"s3_tier2_requests": 1}


# --- what a request is --------------------------------------------------------------


def _credential_scope(environ: Mapping[str, Any]) -> tuple[str, str, str]:
    """(service, region, access key) from the SigV4 credential scope, in the
    Authorization header or a presigned URL's query."""
    scope = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", "")) or _CREDENTIAL.search(
        "Credential=" + unquote(_query(environ).get("X-Amz-Credential", ""))
    )
    if scope is None:
        return "unknown", "", ""
    access_key, region, signing_name = scope.groups()
    return _SERVICE_KEYS.get(signing_name, signing_name), region, access_key


def _operation(environ: dict[str, Any], service: str) -> str:
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return str(target).rsplit(".", 1)[-1]
    path = environ.get("PATH_INFO", "")
    rpc = _RPC_V2_PATH.match(path)
    if rpc:
        return rpc[1]
    action = _query(environ).get("Action") or _form_action(environ)
    if action:
        return action
    method = environ.get("REQUEST_METHOD", "GET")
    if service == "s3":
        return _s3_operation(method, path, environ)
    if service == "lambda" and INVOKE_PATH.match(path):
        return "Invoke"
    return f"{method} /{'/'.join(path.strip('/').split('/')[:2])}"


def _query(environ: Mapping[str, Any]) -> dict[str, str]:
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {name: values[0] for name, values in query.items()}


def _form_action(environ: dict[str, Any]) -> str | None:
    """The query protocol's ``Action`` (SNS, SES, ...), from a form-encoded body."""
    if not str(environ.get("CONTENT_TYPE", "")).startswith("application/x-www-form-urlencoded"):
        return None
    form = parse_qs(buffered_body(environ).decode("utf-8", "replace"))
    return form.get("Action", [None])[0]


def _s3_operation(method: str, path: str, environ: Mapping[str, Any]) -> str:
    """S3's REST API, path-style (how boto3 addresses a loopback endpoint)."""
    bucket, _, key = path.lstrip("/").partition("/")
    query = _query(environ)
    if not bucket:
        return "ListBuckets"
    if key:
        if method == "PUT":
            return "CopyObject" if "HTTP_X_AMZ_COPY_SOURCE" in environ else "PutObject"
        return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
            method, "PostObject"
        )
    if method == "GET" and set(query) <= _S3_LIST_PARAMETERS:
        return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    verb = {"PUT": "Put", "POST": "Post", "DELETE": "Delete", "HEAD": "Head"}.get(method, "Get")
    subresource = next(iter(sorted(query)), "")
    return f"{verb}Bucket{subresource.capitalize()}" if subresource else f"{verb}Bucket"


# --- moto's backend -------------------------------------------------------------------


class MotoStoredItems:
    """Item sizes from moto's DynamoDB backend (in this process): what a write
    left or found, what a point read read, whatever the request projected."""

    def __init__(self, access_key: str, region: str) -> None:
        # moto's imports are heavy: only once moto serves (it has loaded them by then).
        from moto.dynamodb.models import dynamodb_backends  # noqa: PLC0415
        from moto.iam.models import get_account_id_from  # noqa: PLC0415

        self._backend = dynamodb_backends[get_account_id_from(access_key)][region]

    def size(self, ref: ItemRef) -> int:
        table = table_named(self._backend, ref.table)
        found = stored_item(table, ref.key) if table is not None else None
        if found is None or found[2] is None:
            return 0
        return usage_units.item_size(found[2].to_json()["Attributes"])


class _MotoHooks:
    """Meters for what moto's interpreter and EventBridge do in-process: the
    patches stay while at least one meter is attached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._meters: tuple[UsageMeter, ...] = ()
        self._undo: list[Callable[[], None]] = []

    def attach(self, meter: UsageMeter) -> None:
        with self._lock:
            if not self._meters:
                self._undo = _moto_hooks(self)
            self._meters = (*self._meters, meter)

    def detach(self, meter: UsageMeter) -> None:
        with self._lock:
            self._meters = tuple(m for m in self._meters if m is not meter)
            if not self._meters:
                for undo in reversed(self._undo):
                    undo()
                self._undo = []

    def transitions(self, count: int) -> None:
        for meter in self._meters:
            meter.record_transitions(count)

    def rule_sent_to_queue(self, payload_bytes: int) -> None:
        units = {"sqs_requests": usage_units.sqs_billed_requests(payload_bytes)}
        for meter in self._meters:
            meter.record_request("sqs", RULE_TO_QUEUE, billed=True, units=units)


_MOTO_HOOKS = _MotoHooks()


def _moto_hooks(hooks: _MotoHooks) -> list[Callable[[], None]]:
    """Step Functions bills standard workflows per state transition: every state
    entered (``*StateEntered`` in the history, states inside Map and Parallel
    included) and every retry of a state (a retry enters no state again).
    EventBridge bills nothing for delivering to a rule's SQS target, SQS bills
    the message it receives; moto delivers it without an HTTP request."""
    from moto.events.models import Rule  # noqa: PLC0415
    from moto.stepfunctions.parser.asl.component.common.retry.retry_outcome import (  # noqa: PLC0415
        RetryOutcome,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.execute_state import (  # noqa: PLC0415
        ExecutionState,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_manager import (  # noqa: PLC0415
        EventManager,
    )

    add_event, handle_retry = EventManager.add_event, ExecutionState._handle_retry
    send_to_queue = Rule._send_to_sqs_queue

    def counting_add_event(manager: Any, *args: Any, **kwargs: Any) -> Any:
        kind = kwargs["event_type"] if "event_type" in kwargs else args[1]
        if str(getattr(kind, "value", kind)).endswith("StateEntered"):
            hooks.transitions(1)
        return add_event(manager, *args, **kwargs)

    def counting_retry(state: Any, *args: Any, **kwargs: Any) -> Any:
        outcome = handle_retry(state, *args, **kwargs)
        if outcome == RetryOutcome.CanRetry:
            hooks.transitions(1)
        return outcome

    def counting_send(rule: Any, resource_id: str, event: Any, *args: Any, **kwargs: Any) -> Any:
        result = send_to_queue(rule, resource_id, event, *args, **kwargs)
        hooks.rule_sent_to_queue(len(json.dumps(event, default=str).encode()))
        return result

    return [
        swapped(EventManager, "add_event", counting_add_event),
        swapped(ExecutionState, "_handle_retry", counting_retry),
        swapped(Rule, "_send_to_sqs_queue", counting_send),
    ]
