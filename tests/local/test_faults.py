"""Fault injection at the workers' AWS boundary (infra/local/faults.py): the plan,
what each kind does to a botocore client, and what the runtime makes of a
worker that crashed (function error, new worker, retries by the callers)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from infra.local import faults
from infra.local.deploy import Deployment
from infra.local.faults import FaultDice, FaultInjector, FaultKind, FaultPlan, InjectedFault
from infra.local.meter import local_client
from infra.local.runtime import LocalRuntime
from tests.local.conftest import function_named
from tests.local.test_stepfunctions import _wait_for_end

DEADLINE_SECONDS = 20
FIXTURE_KINESIS_RETRIES = 2  # tests/local/fixture/app.py
STREAM = "test#1"  # the in-process injector's random stream


# --- the plan and its dice ------------------------------------------------------------


def test_a_plan_round_trips_through_json() -> None:
    plan = FaultPlan(
        seed=7,
        crash_rate=0.01,
        throttle_rate=0.2,
        functions=("Rating", "Api"),
        crash_functions=("Rating",),
    )

    assert FaultPlan.from_json(plan.to_json()) == plan
    assert json.loads(plan.to_json())["functions"] == ["Rating", "Api"]
    assert json.loads(plan.to_json())["crash_functions"] == ["Rating"]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('{"crash_rate": 1.5}', "crash_rate must be within"),
        ('{"throttle_rate": -0.1}', "throttle_rate must be within"),
        ('{"crash_rate": NaN}', "crash_rate must be within"),
        ('{"typo_rate": 1}', "unknown fault plan fields"),
        ('{"functions": [""]}', "empty function filter"),
        ('{"crash_functions": [""]}', "empty function filter"),
        ('{"crash_limit": 0}', "crash_limit must be a whole number from 1"),
        ('{"crash_limit": 2.5}', "crash_limit must be a whole number from 1"),
        ('{"crash_limit": true}', "crash_limit must be a whole number from 1"),
    ],
)
def test_a_plan_refuses_what_it_cannot_mean(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        FaultPlan.from_json(text)


def test_the_same_seed_and_calls_give_the_same_faults() -> None:
    plan = FaultPlan(seed=42, crash_rate=0.1, timeout_before_rate=0.1, throttle_rate=0.3)
    calls = [("dynamodb", "PutItem"), ("sqs", "SendMessage"), ("dynamodb", "Query")] * 100

    def faults_of(dice: FaultDice) -> list[FaultKind | None]:
        return [dice.roll(service, operation) for service, operation in calls]

    first = faults_of(FaultDice(plan, "rating#1"))

    assert faults_of(FaultDice(plan, "rating#1")) == first
    assert faults_of(FaultDice(plan, "rating#2")) != first  # each worker its own stream
    assert faults_of(FaultDice(dataclasses.replace(plan, seed=43), "rating#1")) != first
    assert {FaultKind.CRASH, FaultKind.TIMEOUT_BEFORE, FaultKind.THROTTLE} <= set(first)


def test_throttles_hit_dynamodb_and_conflicts_its_transactions_only() -> None:
    dice = FaultDice(FaultPlan(throttle_rate=1.0, transaction_conflict_rate=1.0), "w#1")

    assert dice.roll("sqs", "SendMessage") is None
    assert dice.roll("dynamodb", "PutItem") is FaultKind.THROTTLE
    conflicts = FaultDice(FaultPlan(transaction_conflict_rate=1.0), "w#1")
    assert conflicts.roll("dynamodb", "PutItem") is None
    assert conflicts.roll("dynamodb", "TransactWriteItems") is FaultKind.TRANSACTION_CONFLICT


def test_the_function_filter_matches_names_and_logical_ids() -> None:
    plan = FaultPlan(crash_rate=1.0, functions=("Rating", "BillingApi"))

    assert plan.targets("TbCss-UsageRatingFn-1A2B", "UsageRatingFnABC")
    assert plan.targets("TbCss-x-1", "BillingApiFn123")
    assert not plan.targets("TbCss-UsageApiFn-9", "UsageApiFn9")
    assert FaultPlan().targets("anything")
    assert plan.unmatched_filters([("TbCss-UsageRatingFn-1A2B", "UsageRatingFnABC")]) == [
        "BillingApi"
    ]


def test_the_crash_filter_narrows_crashes_to_the_functions_it_names() -> None:
    plan = FaultPlan(crash_rate=1.0, functions=("Rating", "Api"), crash_functions=("Rating",))

    assert plan.may_crash("TbCss-UsageRatingFn-1A2B", "UsageRatingFnABC")
    assert not plan.may_crash("TbCss-x-1", "BillingApiFn123")
    assert FaultPlan().may_crash("anything")
    deployed = [("TbCss-UsageRatingFn-1A2B", "UsageRatingFnABC"), ("TbCss-x-1", "BillingApiFn1")]
    assert FaultPlan(crash_functions=("Rtaing",)).unmatched_filters(deployed) == ["Rtaing"]
    # Deployed, but outside the plan's functions: it could never crash.
    outside = FaultPlan(functions=("Rating",), crash_functions=("BillingApi",))
    assert outside.unmatched_filters(deployed) == ["BillingApi"]


def test_a_crash_the_plan_does_not_allow_gives_way_to_the_next_kind_drawn() -> None:
    plan = FaultPlan(crash_rate=1.0, timeout_before_rate=1.0)
    asked: list[str] = []

    def refuse() -> bool:
        asked.append("crash?")
        return False

    assert FaultDice(plan, STREAM).roll("dynamodb", "PutItem", refuse) is FaultKind.TIMEOUT_BEFORE
    assert (
        FaultDice(dataclasses.replace(plan, crash_rate=0.0), STREAM).roll(
            "dynamodb", "PutItem", refuse
        )
        is FaultKind.TIMEOUT_BEFORE
    )
    assert asked == ["crash?"]  # asked only when a crash was drawn


# --- one botocore client with the injector, against the runtime's moto -----------------------


@pytest.fixture
def table(deployment: Deployment) -> str:
    return next(iter(deployment.tables.values()))


@pytest.fixture
def injected_client(
    tmp_path: Path, runtime: LocalRuntime, deployment: Deployment
) -> Callable[[FaultPlan], Any]:
    """A DynamoDB client whose requests get ``plan``'s faults (two attempts per call)."""

    def client(plan: FaultPlan) -> Any:
        faults.write_plan(tmp_path, plan)
        injector = FaultInjector(
            faults.plan_path(tmp_path),
            faults.record_path(tmp_path),
            function_name="test",
            stream=STREAM,
        )
        dynamodb = local_client(
            "dynamodb",
            runtime.endpoint_url,
            deployment.region,
            billed=True,
            config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
        )
        injector.attach(dynamodb)
        return dynamodb

    return client


def _item(pk: str) -> dict[str, Any]:
    return {"PK": {"S": pk}}


def _stored(aws: Any, table: str, pk: str) -> bool:
    return "Item" in aws("dynamodb").get_item(TableName=table, Key=_item(pk))


def test_a_throttle_is_retried_by_botocore_then_surfaces_with_the_real_code(
    injected_client: Callable[[FaultPlan], Any], aws: Any, table: str, tmp_path: Path
) -> None:
    pk = f"THROTTLED#{uuid.uuid4()}"

    with pytest.raises(ClientError) as caught:
        injected_client(FaultPlan(throttle_rate=1.0)).put_item(TableName=table, Item=_item(pk))

    error = caught.value.response
    assert error["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["ResponseMetadata"]["RetryAttempts"] == 1
    records = faults.read_injected(tmp_path)
    assert [(r.kind, r.operation, r.attempt) for r in records] == [
        (FaultKind.THROTTLE, "PutItem", 1),
        (FaultKind.THROTTLE, "PutItem", 2),
    ]
    assert not _stored(aws, table, pk)


def test_a_transaction_conflict_names_one_item_among_the_cancellation_reasons(
    injected_client: Callable[[FaultPlan], Any], aws: Any, table: str
) -> None:
    keys = [f"TX#{uuid.uuid4()}" for _ in range(3)]

    with pytest.raises(ClientError) as caught:
        injected_client(FaultPlan(transaction_conflict_rate=1.0)).transact_write_items(
            TransactItems=[{"Put": {"TableName": table, "Item": _item(pk)}} for pk in keys]
        )

    error = caught.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    codes = [reason["Code"] for reason in error["CancellationReasons"]]
    assert sorted(codes) == ["None", "None", "TransactionConflict"]
    assert error["ResponseMetadata"]["RetryAttempts"] == 0  # not retried by the SDK
    assert not any(_stored(aws, table, pk) for pk in keys)


def test_a_timeout_before_the_request_leaves_nothing_written(
    injected_client: Callable[[FaultPlan], Any], aws: Any, table: str
) -> None:
    pk = f"LOST#{uuid.uuid4()}"

    with pytest.raises(ReadTimeoutError):
        injected_client(FaultPlan(timeout_before_rate=1.0)).put_item(
            TableName=table, Item=_item(pk)
        )

    assert not _stored(aws, table, pk)


def test_a_timeout_after_the_request_leaves_the_item_written(
    injected_client: Callable[[FaultPlan], Any], aws: Any, table: str
) -> None:
    pk = f"APPLIED#{uuid.uuid4()}"

    with pytest.raises(ReadTimeoutError):
        injected_client(FaultPlan(timeout_after_rate=1.0)).put_item(TableName=table, Item=_item(pk))

    assert _stored(aws, table, pk)


def test_a_plan_whose_crashes_are_spent_lets_requests_through(
    injected_client: Callable[[FaultPlan], Any],
    aws: Any,
    table: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(where: str) -> None:  # in this process: a failure, not the end of pytest
        raise AssertionError(f"crashed before {where}")

    monkeypatch.setattr(faults, "_crash", crash)
    client = injected_client(FaultPlan(crash_rate=1.0, crash_limit=1))
    spent = {
        **dataclasses.asdict(_crash_record()),
        "at": time.time() + 1,  # after the plan was written: it counts against it
    }
    faults.record_path(tmp_path).write_text(json.dumps(spent) + "\n")
    pk = f"SPARED#{uuid.uuid4()}"

    client.put_item(TableName=table, Item=_item(pk))

    assert _stored(aws, table, pk)
    assert len(faults.read_injected(tmp_path)) == 1


def test_crashes_recorded_before_the_plan_do_not_count_against_its_limit(
    tmp_path: Path,
) -> None:
    earlier = dataclasses.asdict(_crash_record())  # recorded at 0, long before the plan
    faults.record_path(tmp_path).parent.mkdir(parents=True)
    faults.record_path(tmp_path).write_text(json.dumps(earlier) + "\n")
    faults.write_plan(tmp_path, FaultPlan(crash_rate=1.0, crash_limit=1))
    injector = FaultInjector(
        faults.plan_path(tmp_path), faults.record_path(tmp_path), function_name="test"
    )
    dice = injector._current_dice()
    assert dice is not None

    assert not injector._crashes_spent(dice.plan)


def _crash_record() -> InjectedFault:
    return InjectedFault(
        at=0.0,
        function="another",
        logical_id="Another",
        worker="another#1",
        request_id="r-1",
        kind=FaultKind.CRASH,
        service="dynamodb",
        operation="PutItem",
        attempt=1,
    )


def test_a_conditional_put_whose_answer_was_lost_fails_its_condition_on_the_retry(
    injected_client: Callable[[FaultPlan], Any], aws: Any, table: str
) -> None:
    # A seed whose first request is applied but times out, and whose retry goes through.
    plan = next(
        plan
        for plan in (FaultPlan(seed=seed, timeout_after_rate=0.5) for seed in range(1000))
        if _first_two(plan) == [FaultKind.TIMEOUT_AFTER, None]
    )
    pk = f"ONCE#{uuid.uuid4()}"

    with pytest.raises(ClientError) as caught:
        injected_client(plan).put_item(
            TableName=table, Item=_item(pk), ConditionExpression="attribute_not_exists(PK)"
        )

    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert _stored(aws, table, pk)  # written by the very call that reports it failed


def test_a_transaction_whose_answer_was_lost_succeeds_on_the_sdks_resend(
    injected_client: Callable[[FaultPlan], Any], aws: Any, table: str
) -> None:
    """botocore resends it with the ClientRequestToken it filled in: DynamoDB answers
    with the first run's success and applies nothing twice (conditions included)."""
    plan = next(
        plan
        for plan in (FaultPlan(seed=seed, timeout_after_rate=0.5) for seed in range(1000))
        if _first_two(plan, "TransactWriteItems") == [FaultKind.TIMEOUT_AFTER, None]
    )
    pk = f"ONCE#{uuid.uuid4()}"
    put = {"TableName": table, "Item": _item(pk), "ConditionExpression": "attribute_not_exists(PK)"}

    injected_client(plan).transact_write_items(TransactItems=[{"Put": put}])

    assert _stored(aws, table, pk)


def _first_two(plan: FaultPlan, operation: str = "PutItem") -> list[FaultKind | None]:
    dice = FaultDice(plan, STREAM)
    return [dice.roll("dynamodb", operation) for _ in range(2)]


# --- faults in the runtime's workers ------------------------------------------------------


@pytest.fixture
def faulty(runtime: LocalRuntime) -> Iterator[LocalRuntime]:
    """The session's runtime; its fault plan is off again after the test."""
    try:
        yield runtime
    finally:
        runtime.set_faults(None)


def _new_records(runtime: LocalRuntime, before: int) -> list[InjectedFault]:
    return runtime.fault_records()[before:]


def _invoke(runtime: LocalRuntime, function: str, payload: Any) -> Any:
    assert runtime.invoker is not None
    return runtime.invoker.invoke(function, payload)


def test_a_crash_is_a_function_error_and_the_next_invocation_gets_a_new_worker(
    faulty: LocalRuntime, deployment: Deployment
) -> None:
    echo = function_named(deployment, "Echo")
    before = len(faulty.fault_records())
    faulty.set_faults(FaultPlan(crash_rate=1.0, functions=("Echo",)))

    crashed = _invoke(faulty, echo, {"n": 1})

    assert crashed.function_error == "Unhandled"
    assert crashed.payload["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exit status 1" in crashed.payload["errorMessage"]
    # This invocation's own record: an asynchronous Echo left by another test of
    # the session's runtime (a retry, a schedule) may crash in the same window.
    (record,) = [
        r for r in _new_records(faulty, before) if r.request_id == crashed.payload["requestId"]
    ]
    assert (record.kind, record.function, record.operation) == (FaultKind.CRASH, echo, "PutItem")
    assert faulty.injected_faults()[FaultKind.CRASH] >= 1

    faulty.set_faults(None)
    recorded = len(faulty.fault_records())
    assert _invoke(faulty, echo, {"n": 2}).payload["event"] == {"n": 2}
    assert len(faulty.fault_records()) == recorded  # no fault without a plan


def test_a_plan_stops_crashing_workers_at_its_crash_limit(
    faulty: LocalRuntime, deployment: Deployment
) -> None:
    echo = function_named(deployment, "Echo")
    faulty.set_faults(FaultPlan(crash_rate=1.0, crash_limit=1, functions=("Echo",)))

    crashed = _invoke(faulty, echo, {"n": 1})
    spared = _invoke(faulty, echo, {"n": 2})

    assert crashed.function_error == "Unhandled"
    assert spared.function_error is None
    assert spared.payload["event"] == {"n": 2}


def test_a_function_outside_the_crash_filter_gets_its_other_faults_but_no_crash(
    faulty: LocalRuntime, deployment: Deployment
) -> None:
    echo = function_named(deployment, "Echo")
    before = len(faulty.fault_records())
    plan = FaultPlan(
        crash_rate=1.0,
        timeout_before_rate=1.0,
        functions=("Echo", "Slow"),
        crash_functions=("Slow",),
    )
    faulty.set_faults(plan)

    result = _invoke(faulty, echo, {"n": 4})

    # Every draw crashes, then times out: the crash is passed over, the timeout is not.
    assert result.payload["errorType"] == "ReadTimeoutError"
    kinds = [r.kind for r in _new_records(faulty, before) if r.function == echo]
    assert kinds == [FaultKind.TIMEOUT_BEFORE] * 4


def test_only_the_functions_named_get_faults(faulty: LocalRuntime, deployment: Deployment) -> None:
    before = len(faulty.fault_records())
    faulty.set_faults(FaultPlan(crash_rate=1.0, functions=("Slow",)))

    result = _invoke(faulty, function_named(deployment, "Echo"), {"n": 3})

    assert result.ok
    assert _new_records(faulty, before) == []


def test_a_filter_that_matches_no_function_is_refused(faulty: LocalRuntime) -> None:
    with pytest.raises(ValueError, match="Nope"):
        faulty.set_faults(FaultPlan(crash_rate=1.0, functions=("Echo", "Nope")))


def test_a_handler_sees_the_timeout_although_its_write_was_applied(
    faulty: LocalRuntime, deployment: Deployment, aws: Any, table: str
) -> None:
    before = len(faulty.fault_records())
    faulty.set_faults(FaultPlan(timeout_after_rate=1.0, functions=("Echo",)))

    result = _invoke(faulty, function_named(deployment, "Echo"), {"n": 4})

    assert result.payload["errorType"] == "ReadTimeoutError"
    assert _stored(aws, table, f"CALL#{result.payload['requestId']}")
    # botocore's standard mode: four attempts at a DynamoDB call, each applied.
    attempts = [r.attempt for r in _new_records(faulty, before)]
    assert attempts == [1, 2, 3, 4]


def test_a_crash_in_a_workflow_step_fails_the_lambda_task(
    faulty: LocalRuntime, deployment: Deployment, aws: Any
) -> None:
    sfn = aws("stepfunctions")
    (machine,) = deployment.state_machines.values()
    faulty.set_faults(FaultPlan(crash_rate=1.0, functions=("Echo",)))

    execution = sfn.start_execution(
        stateMachineArn=machine, name=f"crash-{uuid.uuid4()}", input=json.dumps({"n": 5})
    )
    described = _wait_for_end(sfn, execution["executionArn"])

    # The name a Retry or Catch on the task matches (States.ALL does).
    assert described["status"] == "FAILED"
    assert described["error"] == "Runtime.ExitError"


def test_the_kinesis_poller_retries_a_crashed_batch_then_gives_up(
    faulty: LocalRuntime, deployment: Deployment, aws: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (stream,) = aws("kinesis").list_streams()["StreamNames"]
    echo = function_named(deployment, "Echo")
    faulty.set_faults(FaultPlan(crash_rate=1.0, functions=("Echo",)))
    marker = f"crash-me-{uuid.uuid4()}"
    caplog.set_level(logging.WARNING, logger="tbcss.local.pollers")

    aws("kinesis").put_record(StreamName=stream, Data=marker.encode(), PartitionKey="p")

    gave_up = _wait_for(lambda: "giving up on 1 record(s)" in caplog.text)
    assert gave_up, caplog.text
    assert f"after {FIXTURE_KINESIS_RETRIES + 1} invocation(s)" in caplog.text
    assert echo in caplog.text


def test_a_failed_asynchronous_invocation_is_retried_twice(
    faulty: LocalRuntime, deployment: Deployment
) -> None:
    assert faulty.invoker is not None
    echo = function_named(deployment, "Echo")
    before = len(faulty.fault_records())
    faulty.set_faults(FaultPlan(crash_rate=1.0, functions=("Echo",)))

    faulty.invoker.invoke(echo, {"n": 6}, "Event")

    assert _wait_for(lambda: len(_new_records(faulty, before)) >= 3)
    time.sleep(0.5)
    requests = {r.request_id for r in _new_records(faulty, before)}
    assert len(requests) == 3  # three invocations, none after the last


def _wait_for(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
