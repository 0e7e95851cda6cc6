"""Test doubles for the local event runtime: a recording Invoker and a minimal
Deployment built by hand (no CDK synth)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.local.clock import LocalClock
from infra.local.contracts import InvocationResult, InvocationType
from infra.local.deploy import (
    Deployment,
    EventSourceMappingSpec,
    FunctionSpec,
    RuleSpec,
    TargetSpec,
)

REGION = "ap-south-1"
ACCOUNT = "123456789012"

Behaviour = Callable[[str, Any], InvocationResult]


def succeed(_function: str, _payload: Any) -> InvocationResult:
    return InvocationResult(payload=None)


def handler_error(message: str = "boom") -> InvocationResult:
    return InvocationResult(
        payload={"errorMessage": message, "errorType": "RuntimeError", "stackTrace": []},
        function_error="Unhandled",
    )


def item_failures(identifiers: list[str]) -> InvocationResult:
    return InvocationResult(
        payload={"batchItemFailures": [{"itemIdentifier": item} for item in identifiers]}
    )


@dataclass
class Call:
    function_name: str
    payload: Any
    invocation_type: InvocationType
    clock_epoch: float | None  # what a handler would see as "now"


@dataclass
class FakeInvoker:
    """Records every invocation; ``behaviour`` decides each result."""

    behaviour: Behaviour = succeed
    clock: LocalClock | None = None
    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def invoke(
        self,
        function_name: str,
        payload: Any,
        invocation_type: InvocationType = "RequestResponse",
    ) -> InvocationResult:
        seen = self.clock.now_epoch() if self.clock else None
        with self._lock:
            self.calls.append(Call(function_name, payload, invocation_type, seen))
        return self.behaviour(function_name, payload)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)


def function(logical_id: str) -> FunctionSpec:
    name = f"tbcss-{logical_id}"
    return FunctionSpec(
        logical_id=logical_id,
        name=name,
        arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        handler="functions.x.handler.handler",
        environment={},
        timeout_seconds=3,
        memory_mb=128,
    )


def mapping(
    source_arn: str,
    *,
    function_name: str = "tbcss-Consumer",
    batch_size: int = 10,
    window: int = 0,
    bisect: bool = False,
    retries: int | None = 2,
    on_failure: str | None = None,
    report: bool = False,
    starting_position: str | None = "TRIM_HORIZON",
    source_url: str | None = None,
) -> EventSourceMappingSpec:
    kind = source_arn.split(":")[2]
    return EventSourceMappingSpec(
        logical_id=f"Mapping{kind.title()}",
        function_name=function_name,
        source_arn=source_arn,
        source_kind=kind,
        batch_size=batch_size,
        max_batching_window_seconds=window,
        bisect_on_error=bisect,
        maximum_retry_attempts=retries,
        maximum_record_age_seconds=None,
        on_failure_destination_arn=on_failure,
        report_batch_item_failures=report,
        enabled=True,
        starting_position=starting_position if kind == "kinesis" else None,
        source_url=source_url,
    )


def rule(name: str, schedule: str, targets: list[TargetSpec], *, enabled: bool = True) -> RuleSpec:
    return RuleSpec(
        logical_id=name,
        name=name,
        bus_name="default",
        event_pattern=None,
        schedule_expression=schedule,
        enabled=enabled,
        targets=targets,
    )


def deployment(
    *,
    mappings: list[EventSourceMappingSpec] | None = None,
    rules: list[RuleSpec] | None = None,
    functions: list[FunctionSpec] | None = None,
) -> Deployment:
    return Deployment(
        stack_name="tbcss-test",
        region=REGION,
        account=ACCOUNT,
        endpoint_url="",
        template={},
        physical_ids={},
        functions={spec.logical_id: spec for spec in functions or []},
        event_source_mappings=mappings or [],
        rules=rules or [],
        state_machines={},
        queues={},
        streams={},
        tables={},
        buses={},
        api_name=None,
        stage_name=None,
        routes=[],
        gateway_responses={},
        outputs={},
    )
