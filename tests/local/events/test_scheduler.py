"""The scheduler: cron and rate rules fired in time order as the clock moves,
each delivery seeing its occurrence's time, never twice; rules due at the same
moment fire at once, as on AWS."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.local.clock import LocalClock
from infra.local.contracts import InvocationResult
from infra.local.deploy import TargetSpec
from infra.local.scheduler import Scheduler, TargetDelivery
from tests.local.events.support import (
    ACCOUNT,
    REGION,
    FakeInvoker,
    deployment,
    function,
    handler_error,
    rule,
)

HOUR = 3600
DAY = 24 * HOUR
# Runtime start in these tests: half past midnight UTC, in the future so the
# clock's offset is positive.
START = datetime(2030, 1, 1, 0, 30, tzinfo=UTC)

BILL_RUN = function("BillRunFunction")
SWEEP = function("SweepFunction")
EXPIRY = function("ExpiryFunction")
# The midnight sweeps' schedule: 00:00 IST, due at the same moment every day.
MIDNIGHT_IST = "cron(30 18 * * ? *)"
# How long a delivery waits for its same-moment peers before the test gives up.
PEER_WAIT_SECONDS = 5.0


def _clock_at(moment: datetime) -> LocalClock:
    return LocalClock(offset_seconds=moment.timestamp() - time.time())


def _lambda_target(spec: Any) -> TargetSpec:
    return TargetSpec(id="Target0", arn=spec.arn)


def _scheduler(rules: list[Any], invoker: FakeInvoker, clock: LocalClock) -> Scheduler:
    return Scheduler(
        deployment(rules=rules, functions=[BILL_RUN, SWEEP, EXPIRY]),
        invoker,
        clock,
        endpoint_url=None,
        region=REGION,
    )


def _event_time(payload: dict[str, Any]) -> datetime:
    return datetime.strptime(payload["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def test_two_days_fire_every_occurrence_once_in_order_at_its_own_time() -> None:
    clock = _clock_at(START)
    invoker = FakeInvoker(clock=clock)
    scheduler = _scheduler(
        [
            rule("BillRun", "cron(0 3 * * ? *)", [_lambda_target(BILL_RUN)]),
            rule("Hourly", "rate(1 hour)", [_lambda_target(SWEEP)]),
        ],
        invoker,
        clock,
    )

    lines = scheduler.advance(2 * DAY)

    calls = invoker.snapshot()
    bill_runs = [_event_time(c.payload) for c in calls if c.function_name == BILL_RUN.name]
    hourly = [_event_time(c.payload) for c in calls if c.function_name == SWEEP.name]
    assert bill_runs == [datetime(2030, 1, 1, 3, tzinfo=UTC), datetime(2030, 1, 2, 3, tzinfo=UTC)]
    assert hourly == [START + timedelta(hours=k) for k in range(1, 49)]
    times = [_event_time(c.payload) for c in calls]
    assert times == sorted(times)
    for call in calls:
        occurrence = _event_time(call.payload).timestamp()
        assert call.clock_epoch is not None
        assert occurrence <= call.clock_epoch < occurrence + 1.0  # the handler's "now"
        assert call.invocation_type == "RequestResponse"
    assert len(lines) == 50
    assert lines[0] == "2030-01-01T01:30:00Z rule Hourly -> SweepFunction ok"
    assert "2030-01-01T03:00:00Z rule BillRun -> BillRunFunction ok" in lines
    assert clock.now() >= START + timedelta(days=2)


def test_a_long_jump_fires_only_a_frequent_rules_latest_occurrences() -> None:
    """A month of a 15-minute rule is thousands of invocations: only the latest
    ones fire, so the state after the jump is what the rule leaves at its end."""
    clock = _clock_at(START)
    invoker = FakeInvoker(clock=clock)
    scheduler = Scheduler(
        deployment(
            rules=[
                rule("Janitor", "rate(15 minutes)", [_lambda_target(SWEEP)]),
                rule("BillRun", "cron(0 3 * * ? *)", [_lambda_target(BILL_RUN)]),
            ],
            functions=[BILL_RUN, SWEEP],
        ),
        invoker,
        clock,
        endpoint_url=None,
        region=REGION,
        max_occurrences_per_rule=8,
    )

    scheduler.advance(3 * DAY)

    calls = invoker.snapshot()
    janitor = [_event_time(c.payload) for c in calls if c.function_name == SWEEP.name]
    end = START + timedelta(days=3)
    assert janitor == [end - timedelta(minutes=15 * k) for k in range(7, -1, -1)]
    # A rule under the cap fires every occurrence.
    assert len([c for c in calls if c.function_name == BILL_RUN.name]) == 3


def test_scheduled_event_has_eventbridge_shape() -> None:
    clock = _clock_at(START)
    invoker = FakeInvoker(clock=clock)
    scheduler = _scheduler(
        [rule("BillRun", "cron(0 3 * * ? *)", [_lambda_target(BILL_RUN)])], invoker, clock
    )

    scheduler.advance(DAY)

    (call,) = invoker.snapshot()
    event = call.payload
    assert event["version"] == "0"
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["account"] == ACCOUNT
    assert event["region"] == REGION
    assert event["time"] == "2030-01-01T03:00:00Z"
    assert event["resources"] == [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/BillRun"]
    assert event["detail"] == {}
    assert event["id"]


def test_advancing_twice_never_fires_an_occurrence_again() -> None:
    clock = _clock_at(START)
    invoker = FakeInvoker(clock=clock)
    scheduler = _scheduler(
        [
            rule("Hourly", "rate(1 hour)", [_lambda_target(SWEEP)]),
            rule("BillRun", "cron(0 3 * * ? *)", [_lambda_target(BILL_RUN)]),
        ],
        invoker,
        clock,
    )

    first = scheduler.advance(3 * HOUR)
    second = scheduler.advance(3 * HOUR)
    assert scheduler.advance(0) == []

    times = [(c.function_name, _event_time(c.payload)) for c in invoker.snapshot()]
    assert len(times) == len(set(times)) == 7  # 6 hourly + the 03:00 bill run
    assert len(first) == 4  # 01:30, 02:30, 03:00, 03:30
    assert len(second) == 3


def test_last_day_of_month_cron() -> None:
    clock = _clock_at(START)
    invoker = FakeInvoker(clock=clock)
    scheduler = _scheduler(
        [rule("MonthEnd", "cron(30 18 L * ? *)", [_lambda_target(BILL_RUN)])], invoker, clock
    )

    scheduler.advance(120 * DAY)  # to 2030-05-01

    assert [_event_time(c.payload).date().isoformat() for c in invoker.snapshot()] == [
        "2030-01-31",
        "2030-02-28",
        "2030-03-31",
        "2030-04-30",
    ]


def test_constant_input_and_input_transformer_replace_the_event() -> None:
    clock = _clock_at(START)
    invoker = FakeInvoker(clock=clock)
    constant = TargetSpec(id="a", arn=BILL_RUN.arn, input='{"job": "overdue-sweep"}')
    transformed = TargetSpec(
        id="b",
        arn=SWEEP.arn,
        input_transformer={
            "InputPathsMap": {"at": "$.time", "rule": "$.resources[0]"},
            "InputTemplate": '{"scheduled_for": "<at>", "rule": "<rule>", "kind": "daily"}',
        },
    )
    scheduler = _scheduler(
        [rule("Daily", "cron(0 1 * * ? *)", [constant, transformed])], invoker, clock
    )

    scheduler.advance(DAY)

    payloads = {c.function_name: c.payload for c in invoker.snapshot()}
    assert payloads[BILL_RUN.name] == {"job": "overdue-sweep"}
    assert payloads[SWEEP.name] == {
        "scheduled_for": "2030-01-01T01:00:00Z",
        "rule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/Daily",
        "kind": "daily",
    }


def test_a_failing_target_is_reported_and_does_not_stop_the_others() -> None:
    clock = _clock_at(START)

    def bill_run_fails(name: str, _payload: Any) -> InvocationResult:
        return handler_error("no table") if name == BILL_RUN.name else InvocationResult(None)

    invoker = FakeInvoker(bill_run_fails, clock=clock)
    scheduler = _scheduler(
        [rule("Both", "rate(1 day)", [_lambda_target(BILL_RUN), _lambda_target(SWEEP)])],
        invoker,
        clock,
    )

    lines = scheduler.advance(DAY)

    assert lines == [
        "2030-01-02T00:30:00Z rule Both -> BillRunFunction error: RuntimeError: no table",
        "2030-01-02T00:30:00Z rule Both -> SweepFunction ok",
    ]


def test_disabled_and_pattern_rules_are_not_fired() -> None:
    clock = _clock_at(START)
    invoker = FakeInvoker(clock=clock)
    pattern_rule = rule("OnPayment", "", [_lambda_target(SWEEP)])
    scheduler = _scheduler(
        [rule("Off", "rate(1 hour)", [_lambda_target(SWEEP)], enabled=False), pattern_rule],
        invoker,
        clock,
    )

    assert scheduler.advance(DAY) == []
    assert scheduler.rule_names == []


def test_sqs_target_receives_the_scheduled_event(aws: dict[str, Any]) -> None:
    sqs = aws["sqs"]
    url = sqs.create_queue(QueueName="sweeps")["QueueUrl"]
    clock = _clock_at(START)
    target = TargetSpec(id="q", arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:sweeps")
    scheduler = _scheduler([rule("Sweep", "rate(12 hours)", [target])], FakeInvoker(), clock)

    lines = scheduler.advance(DAY)

    assert lines == [
        "2030-01-01T12:30:00Z rule Sweep -> sweeps ok",
        "2030-01-02T00:30:00Z rule Sweep -> sweeps ok",
    ]
    bodies = [
        json.loads(m["Body"])
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    ]
    assert sorted(body["time"] for body in bodies) == [
        "2030-01-01T12:30:00Z",
        "2030-01-02T00:30:00Z",
    ]


def test_background_thread_fires_as_time_passes() -> None:
    clock = _clock_at(START)
    invoker = FakeInvoker(clock=clock)
    scheduler = Scheduler(
        deployment(rules=[rule("Minutely", "rate(1 minute)", [_lambda_target(SWEEP)])]),
        invoker,
        clock,
        endpoint_url=None,
        region=REGION,
        tick_seconds=0.02,
    )
    scheduler.start()
    try:
        clock.advance(150)  # someone moved the clock without the scheduler
        deadline = time.monotonic() + 3
        while len(invoker.snapshot()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        scheduler.stop()

    calls = invoker.snapshot()
    assert [_event_time(c.payload) for c in calls] == [
        START + timedelta(minutes=1),
        START + timedelta(minutes=2),
    ]
    assert {c.invocation_type for c in calls} == {"Event"}


def test_negative_advance_is_refused() -> None:
    scheduler = _scheduler([], FakeInvoker(), _clock_at(START))
    with pytest.raises(ValueError, match="forward"):
        scheduler.advance(-1)


def test_rules_due_at_the_same_moment_are_all_in_flight_at_once() -> None:
    """Each delivery waits for the other two: fired one after another they would
    time out waiting."""
    clock = _clock_at(START)
    peers = threading.Barrier(3, timeout=PEER_WAIT_SECONDS)

    def wait_for_peers(_name: str, _payload: Any) -> InvocationResult:
        peers.wait()
        return InvocationResult(None)

    scheduler = _scheduler(
        [
            rule("Expiry", MIDNIGHT_IST, [_lambda_target(EXPIRY)]),
            rule("Sweeps", MIDNIGHT_IST, [_lambda_target(SWEEP), _lambda_target(BILL_RUN)]),
        ],
        FakeInvoker(wait_for_peers, clock=clock),
        clock,
    )

    assert scheduler.advance(DAY) == [
        "2030-01-01T18:30:00Z rule Expiry -> ExpiryFunction ok",
        "2030-01-01T18:30:00Z rule Sweeps -> SweepFunction ok",
        "2030-01-01T18:30:00Z rule Sweeps -> BillRunFunction ok",
    ]


def test_lines_keep_template_order_when_a_later_rule_finishes_first() -> None:
    clock = _clock_at(START)
    sweep_done = threading.Event()
    finished: list[str] = []

    def bill_run_outlasts_sweep(name: str, _payload: Any) -> InvocationResult:
        if name == BILL_RUN.name and not sweep_done.wait(PEER_WAIT_SECONDS):
            return handler_error("the sweep never ran alongside")
        finished.append(name)
        if name == SWEEP.name:
            sweep_done.set()
        return InvocationResult(None)

    scheduler = _scheduler(
        [
            rule("BillRun", MIDNIGHT_IST, [_lambda_target(BILL_RUN)]),
            rule("Sweep", MIDNIGHT_IST, [_lambda_target(SWEEP)]),
        ],
        FakeInvoker(bill_run_outlasts_sweep, clock=clock),
        clock,
    )

    lines = scheduler.advance(DAY)

    assert finished == [SWEEP.name, BILL_RUN.name]
    assert lines == [
        "2030-01-01T18:30:00Z rule BillRun -> BillRunFunction ok",
        "2030-01-01T18:30:00Z rule Sweep -> SweepFunction ok",
    ]


def test_a_delivery_that_raises_leaves_the_others_of_its_moment_their_result() -> None:
    clock = _clock_at(START)
    peers = threading.Barrier(2, timeout=PEER_WAIT_SECONDS)

    def bill_run_crashes(name: str, _payload: Any) -> InvocationResult:
        peers.wait()
        if name == BILL_RUN.name:
            raise RuntimeError("worker crashed")
        return InvocationResult(None)

    scheduler = _scheduler(
        [
            rule("BillRun", MIDNIGHT_IST, [_lambda_target(BILL_RUN)]),
            rule("Sweep", MIDNIGHT_IST, [_lambda_target(SWEEP)]),
        ],
        FakeInvoker(bill_run_crashes, clock=clock),
        clock,
    )

    assert scheduler.advance(DAY) == [
        "2030-01-01T18:30:00Z rule BillRun -> BillRunFunction error: RuntimeError: worker crashed",
        "2030-01-01T18:30:00Z rule Sweep -> SweepFunction ok",
    ]


def test_a_moment_that_raises_does_not_make_the_next_advance_fire_earlier_ones_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _clock_at(START)
    invoker = FakeInvoker(clock=clock)
    scheduler = _scheduler([rule("Sweep", MIDNIGHT_IST, [_lambda_target(SWEEP)])], invoker, clock)
    labels = iter(["SweepFunction", RuntimeError("the log line could not be made")])

    def label(_delivery: TargetDelivery, _target: TargetSpec) -> str:
        answer = next(labels, "SweepFunction")
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(TargetDelivery, "label", label)

    with pytest.raises(RuntimeError):
        scheduler.advance(2 * DAY)  # the first midnight fires, the second raises
    lines = scheduler.advance(DAY)

    assert lines == [
        "2030-01-02T18:30:00Z rule Sweep -> SweepFunction ok",
        "2030-01-03T18:30:00Z rule Sweep -> SweepFunction ok",
    ]
    times = [_event_time(call.payload) for call in invoker.calls]
    assert times.count(datetime(2030, 1, 1, 18, 30, tzinfo=UTC)) == 1


@dataclass(frozen=True)
class _Run:
    moment: datetime
    started: float
    ended: float


def test_moments_fire_one_after_another_in_time_order() -> None:
    """A moment's deliveries all end before the next moment's start, each seeing
    its own moment on the clock."""
    clock = _clock_at(START)
    runs: list[_Run] = []
    runs_lock = threading.Lock()

    def take_a_while(_name: str, payload: Any) -> InvocationResult:
        started = time.monotonic()
        time.sleep(0.05)
        with runs_lock:
            runs.append(_Run(_event_time(payload), started, time.monotonic()))
        return InvocationResult(None)

    invoker = FakeInvoker(take_a_while, clock=clock)
    scheduler = _scheduler(
        [
            rule("Expiry", MIDNIGHT_IST, [_lambda_target(EXPIRY)]),
            rule("Overdue", MIDNIGHT_IST, [_lambda_target(BILL_RUN)]),
            rule("Late", "cron(0 19 * * ? *)", [_lambda_target(SWEEP)]),
        ],
        invoker,
        clock,
    )

    scheduler.advance(2 * DAY)

    moments = [_event_time(call.payload) for call in invoker.snapshot()]
    assert sorted(set(moments)) == [
        datetime(2030, 1, 1, 18, 30, tzinfo=UTC),
        datetime(2030, 1, 1, 19, 0, tzinfo=UTC),
        datetime(2030, 1, 2, 18, 30, tzinfo=UTC),
        datetime(2030, 1, 2, 19, 0, tzinfo=UTC),
    ]
    assert moments == sorted(moments)
    for earlier in runs:
        for later in runs:
            if earlier.moment < later.moment:
                assert earlier.ended <= later.started
    for call in invoker.snapshot():
        occurrence = _event_time(call.payload).timestamp()
        assert call.clock_epoch is not None
        assert occurrence <= call.clock_epoch < occurrence + 1.0
