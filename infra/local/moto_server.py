"""moto in server mode on a loopback port, with a Lambda Invoke shim in front.

``POST /2015-03-31/functions/<name>/invocations`` runs the function's real
handler through the runtime's invoker (worker processes), whoever calls it:
boto3, the AWS CLI, or moto's own Step Functions interpreter (which calls AWS
at ``http://localhost:$MOTO_PORT``; :meth:`MotoServer.start` sets that variable
to the real port). ``GET /_tbcss/sms`` lists the SMS moto's SNS has "sent"
(how a developer reads an OTP locally). A TransactWriteItems resent with its
ClientRequestToken gets its first answer again, as from DynamoDB
(:mod:`infra.local.client_tokens`). Every other request goes to moto's WSGI app.

The shim also meters every AWS request (:mod:`infra.local.meter`), and the server
installs :mod:`infra.local.moto_speedups` for its lifetime (a soak-sized table
would make moto crawl otherwise).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import requests
from werkzeug.wrappers import Request, Response

from infra.local import moto_speedups
from infra.local.client_tokens import TRANSACT_WRITE_ITEMS, TransactionTokens
from infra.local.contracts import InvocationType, Invoker
from infra.local.meter import INVOKE_PATH, UsageMeter, buffered_body
from infra.local.serving import LOOPBACK, ThreadedServer

SMS_PATH = "/_tbcss/sms"
LOCAL_NUMBER_DIGITS = 10  # an Indian mobile number without its country code
MOTO_CONFIG = {"lambda": {"use_docker": False}, "stepfunctions": {"execute_state_machine": True}}
JSON = "application/json"

WsgiApp = Any  # a WSGI callable; werkzeug's own types are not exported
PutEventsListener = Callable[[list[dict[str, Any]]], object]
PUT_EVENTS_TARGET = "AWSEvents.PutEvents"


DYNAMODB_WRITES = frozenset(
    f"DynamoDB_20120810.{operation}"
    for operation in (
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
    )
)


class InvokeShim:
    """WSGI middleware: Lambda Invoke goes to the invoker, the rest to moto;
    every AWS request is metered when there is a meter."""

    def __init__(self, moto_app: WsgiApp, meter: UsageMeter | None = None) -> None:
        self._moto_app = moto_app
        self._meter = meter
        self._invoker: Invoker | None = None
        self._known: set[str] | None = None
        self._put_events_listener: PutEventsListener | None = None
        self._table_writes = threading.Lock()
        self._transaction_tokens = TransactionTokens()

    def on_put_events(self, listener: PutEventsListener) -> None:
        """``listener`` gets the entries of every PutEvents moto accepted."""
        self._put_events_listener = listener

    def set_invoker(self, invoker: Invoker, function_names: Iterable[str]) -> None:
        """Called once the stack is deployed; before that, moto answers Invoke."""
        self._known = set(function_names)
        self._invoker = invoker

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self._exclusive(environ):
            call = self._meter.observe(environ) if self._meter is not None else None
            if call is None:
                return self._dispatch(environ, start_response)
            return call.finish(self._dispatch(environ, call.capture(start_response)))

    def _exclusive(self, environ: dict[str, Any]) -> AbstractContextManager[object]:
        """Table writes run one at a time, as they would on one table: a cancelled
        transaction puts back the items it saved (moto_speedups), which would undo
        a write made meanwhile; and the meter reads an item's size before and after
        a write. The response is complete (a list) before the lock is released."""
        if environ.get("HTTP_X_AMZ_TARGET") in DYNAMODB_WRITES:
            return self._table_writes
        return nullcontext()

    def _dispatch(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        match = INVOKE_PATH.match(environ.get("PATH_INFO", ""))
        if match and environ.get("REQUEST_METHOD") == "POST" and self._invoker is not None:
            response = self._invoke(Request(environ), unquote(match["name"]))
            return response(environ, start_response)
        if self._put_events_listener and environ.get("HTTP_X_AMZ_TARGET") == PUT_EVENTS_TARGET:
            return self._put_events(environ, start_response)
        if environ.get("PATH_INFO") == SMS_PATH and environ.get("REQUEST_METHOD") == "GET":
            return _sent_sms(Request(environ))(environ, start_response)
        if environ.get("HTTP_X_AMZ_TARGET") == TRANSACT_WRITE_ITEMS:  # under the write lock
            return list(self._transaction_tokens(self._moto_app, environ, start_response))
        if environ.get("HTTP_X_AMZ_TARGET") in DYNAMODB_WRITES:
            return list(self._moto_app(environ, start_response))  # under the write lock
        return self._moto_app(environ, start_response)  # type: ignore[no-any-return]

    def _put_events(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Let moto store and route the events, then hand them to the listener on
        another thread: EventBridge delivers asynchronously, after PutEvents returns."""
        body = buffered_body(environ)
        status: list[str] = []

        def capture(code: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(code)
            return start_response(code, headers, exc_info)

        response: Iterable[bytes] = self._moto_app(environ, capture)
        if status and status[0].startswith("200") and self._put_events_listener:
            entries = [_entry_for_delivery(e) for e in json.loads(body).get("Entries", [])]
            threading.Thread(
                target=self._put_events_listener, args=(entries,), daemon=True, name="events"
            ).start()
        return response

    def _invoke(self, request: Request, name_or_arn: str) -> Response:
        assert self._invoker is not None
        function_name = _function_name(name_or_arn)
        if self._known is not None and function_name not in self._known:
            return _not_found(name_or_arn)
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            return Response(status=204)
        if invocation_type not in ("RequestResponse", "Event"):
            return _lambda_error(400, "InvalidParameterValueException", "bad InvocationType")
        try:
            payload = json.loads(request.get_data() or b"{}")
        except ValueError:
            return _lambda_error(400, "InvalidRequestContentException", "could not parse payload")
        kind: InvocationType = "Event" if invocation_type == "Event" else "RequestResponse"
        result = self._invoker.invoke(function_name, payload, kind)
        if kind == "Event":
            return Response(status=202, headers={"X-Amz-Executed-Version": "$LATEST"})
        headers = {"X-Amz-Executed-Version": "$LATEST", "Content-Type": JSON}
        if result.function_error:
            headers["X-Amz-Function-Error"] = result.function_error
        return Response(json.dumps(result.payload), status=200, headers=headers)


def _sent_sms(request: Request) -> Response:
    """``[{"to": "+919876500001", "text": "..."}]``, oldest first, from moto's SNS
    backend in this process (moto keeps SMS to phone numbers there, sends none).
    ``?region=`` narrows to one region (default: every region used so far);
    ``?to=`` to one number, with or without its country code."""
    from moto.core.models import DEFAULT_ACCOUNT_ID  # noqa: PLC0415 - moto loads with the server
    from moto.sns.models import sns_backends  # noqa: PLC0415

    region, to = request.args.get("region"), request.args.get("to")
    regions = sns_backends[DEFAULT_ACCOUNT_ID]
    try:
        backends = [regions[region]] if region else list(regions.values())
    except KeyError:
        body = json.dumps({"message": f"unknown region {region!r}"})
        return Response(body, status=400, headers={"Content-Type": JSON})
    sent = [
        {"to": number, "text": text}
        for backend in backends
        for number, text in list(backend.sms_messages.values())
        if not to or _same_number(number, to)
    ]
    return Response(json.dumps(sent), status=200, headers={"Content-Type": JSON})


def _same_number(number: str, wanted: str) -> bool:
    """``+919876500001`` is ``9876500001`` too (a local number matches its E.164 form)."""
    have, want = re.sub(r"\D", "", number), re.sub(r"\D", "", wanted)
    if not want:
        return False
    return have == want or (len(want) >= LOCAL_NUMBER_DIGITS and have.endswith(want))


def _entry_for_delivery(entry: dict[str, Any]) -> dict[str, Any]:
    """The JSON protocol sends ``Time`` as epoch seconds; delivery wants a datetime."""
    moment = entry.get("Time")
    if isinstance(moment, int | float):
        return {**entry, "Time": datetime.fromtimestamp(moment, UTC)}
    return entry


def _function_name(name_or_arn: str) -> str:
    """Name, partial ARN (account:function:name) or full ARN, with or without a qualifier."""
    parts = name_or_arn.split(":")
    if "function" in parts:
        return parts[parts.index("function") + 1]
    return parts[0]


def _not_found(name: str) -> Response:
    return _lambda_error(404, "ResourceNotFoundException", f"Function not found: {name}")


def _lambda_error(status: int, error_type: str, message: str) -> Response:
    body = json.dumps({"Type": "User", "message": message})
    headers = {"x-amzn-ErrorType": error_type, "Content-Type": JSON}
    return Response(body, status=status, headers=headers)


def configure_moto(endpoint_url: str, *, execute_state_machines: bool = True) -> None:
    """No Docker for Lambda; Step Functions really executes definitions."""
    config = {**MOTO_CONFIG, "stepfunctions": {"execute_state_machine": execute_state_machines}}
    response = requests.post(f"{endpoint_url}/moto-api/config", json=config, timeout=10)
    response.raise_for_status()


def _quiet_moto() -> None:
    """moto warns once per resource type its CloudFormation skips, on every
    parse; Deployment.differences lists those types once instead."""
    logging.getLogger("moto").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"moto\.cloudformation.*")


class MotoServer:
    """moto + the Invoke shim, served by a threaded werkzeug server on loopback.
    While it runs, moto has the speedups installed and ``meter`` (if any) attached."""

    def __init__(
        self, port: int = 0, host: str = LOOPBACK, meter: UsageMeter | None = None
    ) -> None:
        self._host = host
        self._requested_port = port
        self._server: ThreadedServer | None = None
        self.shim: InvokeShim | None = None
        self.meter = meter

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> None:
        _quiet_moto()
        # moto's imports are heavy (about a second): only when the server starts.
        from moto.moto_server.werkzeug_app import (  # noqa: PLC0415
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        class QuietRequestHandler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                """One line per AWS call would drown the handlers' logs."""

        moto_speedups.install()
        if self.meter is not None:
            self.meter.attach()
        self.shim = InvokeShim(DomainDispatcherApplication(create_backend_app), self.meter)
        self._server = ThreadedServer(
            self.shim,
            port=self._requested_port,
            name="moto-server",
            host=self._host,
            request_handler=QuietRequestHandler,
        )
        self._server.start()
        # The Step Functions interpreter calls AWS at localhost:$MOTO_PORT.
        os.environ["MOTO_PORT"] = str(self.port)
        self.configure()

    def configure(self) -> None:
        configure_moto(self.endpoint_url)

    def set_invoker(self, invoker: Invoker, function_names: Iterable[str]) -> None:
        assert self.shim is not None, "start() first"
        self.shim.set_invoker(invoker, function_names)

    def on_put_events(self, listener: PutEventsListener) -> None:
        assert self.shim is not None, "start() first"
        self.shim.on_put_events(listener)

    def stop(self) -> None:
        if self.shim is not None:
            if self._server is not None:
                self._server.stop()
            # moto keeps its state in this process's globals: a runtime started later
            # in the same process (tests) must not find this one's stack and tables.
            from moto.core.base_backend import BackendDict  # noqa: PLC0415 - loaded by start()

            BackendDict.reset()
            if self.meter is not None:
                self.meter.detach()
            moto_speedups.uninstall()
        self._server = None
        self.shim = None
