"""Permanent disconnection against in-memory ports: the request and its policy,
the workflow's steps in their order (final bill, dues check, wait or
de-provision, complete, notify), the resume after the dues are paid, and the
inactivity sweep."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest

from shared.auth import Principal
from shared.errors import Forbidden, InvalidRequest
from shared.models import SubscriberStatus, SubscriberType
from shared.network import BarringProfile, DataAccess, NetworkTransientError
from shared.service_control import BlockReason, DisconnectReason, NotControllable
from shared.services.billing import ist_midnight
from shared.services.disconnection import (
    Decision,
    Disconnection,
    DisconnectionConfig,
    DisconnectionInProgress,
    DisconnectionNotFound,
    DisconnectionStatus,
)
from tests.unit.service_control.fakes import (
    ADMIN,
    AGENT,
    MSISDN,
    OTHER_SUBSCRIBER,
    OWNER,
    SERVICE,
    T0,
    USER,
    FakeQueue,
    World,
    make_world,
)

D = DisconnectReason
BARRED = BarringProfile(outgoing_barred=True, data=DataAccess.BARRED)
INV_OCT = "INV-u1-2026-10-01"
INV_NOV = "INV-u1-2026-11-01"
PROOF = "CASE-2026-0042"
COOLING_OFF = timedelta(days=90)


@pytest.fixture
def world() -> World:
    return make_world()


def request(world: World, reason: D = D.USER_REQUEST) -> Disconnection:
    caller = {D.USER_REQUEST: OWNER, D.FRAUD: ADMIN, D.INACTIVITY: SERVICE}.get(reason, AGENT)
    proof = PROOF if reason in {D.FRAUD, D.PORT_OUT, D.DECEASED} else None
    return world.disconnections.request(caller, USER, reason, proof_reference=proof)


def run_workflow(world: World, disconnection_id: str, *, resume: bool = False) -> str:
    """What the state machine does: FinalBill -> CheckDues -> (AwaitDues, end) |
    Deprovision -> Complete -> Notify; a resume starts at CheckDues."""
    flow = world.disconnections
    if not resume:
        flow.final_bill(disconnection_id)
    if flow.check_dues(disconnection_id)["decision"] == Decision.AWAIT_DUES.value:
        return flow.await_dues(disconnection_id)["status"]
    flow.deprovision(disconnection_id)
    status = flow.complete(disconnection_id)["status"]
    flow.notify(disconnection_id)
    return status


def record(world: World, disconnection_id: str) -> Disconnection:
    return world.disconnections.get(disconnection_id)


def steps(world: World, disconnection_id: str) -> list[tuple[str, str]]:
    return [(e.step, e.outcome) for e in record(world, disconnection_id).history]


# --- the request -----------------------------------------------------------------------


def test_the_owner_requests_a_disconnection_and_its_workflow_starts(world: World) -> None:
    world.add_line()

    started = world.disconnections.request(OWNER, USER, D.USER_REQUEST, note="moving abroad")

    assert started.status is DisconnectionStatus.REQUESTED
    assert started.requested_by == "subscriber:u1"
    assert started.requested_at == T0
    assert started.msisdn == MSISDN
    assert started.subscriber_type is SubscriberType.POSTPAID
    assert world.state().disconnection_id == started.disconnection_id
    assert world.starter.started == {
        started.disconnection_id: {"disconnection_id": started.disconnection_id}
    }
    assert steps(world, started.disconnection_id) == [("Request", "ACCEPTED")]


@pytest.mark.parametrize(
    ("principal", "reason", "proof", "error"),
    [
        (OTHER_SUBSCRIBER, D.USER_REQUEST, None, Forbidden),
        (AGENT, D.FRAUD, PROOF, Forbidden),
        (OWNER, D.PORT_OUT, PROOF, Forbidden),
        (AGENT, D.INACTIVITY, None, Forbidden),
        (ADMIN, D.FRAUD, None, InvalidRequest),
        (AGENT, D.DECEASED, " ", InvalidRequest),
        (AGENT, D.PORT_OUT, None, InvalidRequest),
    ],
)
def test_a_request_outside_its_reasons_policy_opens_nothing(
    world: World,
    principal: Principal,
    reason: D,
    proof: str | None,
    error: type[Exception],
) -> None:
    world.add_line()

    with pytest.raises(error):
        world.disconnections.request(principal, USER, reason, proof_reference=proof)

    assert world.state().disconnection_id is None
    assert world.starter.started == {}


@pytest.mark.parametrize(
    ("principal", "reason"),
    [(ADMIN, D.FRAUD), (AGENT, D.PORT_OUT), (AGENT, D.DECEASED), (ADMIN, D.USER_REQUEST)],
)
def test_staff_requests_carry_their_proof_and_actor(
    world: World, principal: Principal, reason: D
) -> None:
    world.add_line()

    started = world.disconnections.request(principal, USER, reason, proof_reference=PROOF)

    assert started.proof_reference == PROOF
    assert started.requested_by.split(":")[0] in {"agent", "admin"}
    assert started.disconnection_id in world.starter.started


def test_a_second_request_is_refused_while_one_is_under_way(world: World) -> None:
    world.add_line()
    first = request(world)

    with pytest.raises(DisconnectionInProgress) as refused:
        world.disconnections.request(ADMIN, USER, D.FRAUD, proof_reference=PROOF)

    assert refused.value.status == 409
    assert refused.value.details == {"disconnection_id": first.disconnection_id}
    assert list(world.starter.started) == [first.disconnection_id]


@pytest.mark.parametrize(
    "status",
    [
        SubscriberStatus.PENDING,
        SubscriberStatus.KYC_REJECTED,
        SubscriberStatus.PERMANENT_DISCONNECTED,
    ],
)
def test_a_line_that_is_not_live_cannot_be_disconnected(
    world: World, status: SubscriberStatus
) -> None:
    world.add_line(status=status)

    with pytest.raises(NotControllable):
        request(world)
    assert world.starter.started == {}


def test_a_profile_changing_under_the_request_is_a_conflict_to_retry(world: World) -> None:
    world.add_line()
    world.disconnections_store.before_open = lambda: world.service.block(
        AGENT, USER, BlockReason.AGENT
    )

    with pytest.raises(DisconnectionInProgress):
        request(world)

    assert world.state().disconnection_id is None
    assert world.starter.started == {}
    assert request(world).disconnection_id in world.starter.started  # the retry goes through


def test_a_request_whose_workflow_failed_to_start_starts_it_when_repeated(
    world: World,
) -> None:
    """Step Functions was unreachable after the disconnection was opened. The
    caller retries; the line must not be left with a disconnection that never
    runs (and every later request refused as 'in progress')."""
    world.add_line()
    world.starter.fail_next = True
    with pytest.raises(ConnectionError):
        request(world)

    request(world)

    open_id = world.state().disconnection_id
    assert open_id is not None
    assert any(p["disconnection_id"] == open_id for p in world.starter.started.values())


def test_an_unknown_disconnection_is_not_found(world: World) -> None:
    with pytest.raises(DisconnectionNotFound):
        world.disconnections.get("DISC-NOPE")


# --- the workflow ------------------------------------------------------------------------


def test_a_postpaid_disconnection_runs_every_step_in_order(world: World) -> None:
    world.add_line()
    started = request(world)
    world.clock.advance(timedelta(minutes=3))  # the workflow runs a little later
    disc_id = started.disconnection_id

    assert world.disconnections.final_bill(disc_id) == {"final_invoice_id": "INV-u1-2026-11-25"}
    assert world.billing.calls == [(USER, T0)]  # rental stops at the request
    # The final invoice is unpaid, but it is not a due that holds the line.
    assert world.disconnections.check_dues(disc_id) == {"decision": "PROCEED", "dues_paise": 0}
    world.disconnections.deprovision(disc_id)
    assert world.network.deprovisioned == [MSISDN]
    assert world.disconnections.complete(disc_id) == {"status": "DISCONNECTED"}

    done = record(world, disc_id)
    now = T0 + timedelta(minutes=3)
    assert done.status is DisconnectionStatus.DISCONNECTED
    assert done.final_invoice_id == "INV-u1-2026-11-25"
    assert done.msisdn_released_at == now + COOLING_OFF
    assert steps(world, disc_id) == [
        ("Request", "ACCEPTED"),
        ("FinalBill", "ISSUED"),
        ("CheckDues", "PROCEED"),
        ("Deprovision", "SUCCEEDED"),
        ("Complete", "PERMANENT_DISCONNECTED"),
    ]
    state = world.state()
    assert state.status is SubscriberStatus.PERMANENT_DISCONNECTED
    assert world.disconnections_store.released == {MSISDN: now + COOLING_OFF}
    assert world.facts.active_plan(USER) is None
    entry = world.store.entries()[-1]
    assert entry.actor == "system:Disconnection"
    assert entry.status_after is SubscriberStatus.PERMANENT_DISCONNECTED
    [event] = world.events.of_type("SubscriberDisconnected")
    assert event.correlation_id == disc_id
    assert event.detail == {
        "user_id": USER,
        "disconnection_id": disc_id,
        "reason": "USER_REQUEST",
        "final_invoice_id": "INV-u1-2026-11-25",
        "dues_paise": 0,
        "msisdn_released_at": "2027-02-23T10:03:00+00:00",
    }


def test_the_cooling_off_period_is_configuration() -> None:
    world = make_world(DisconnectionConfig(cooling_off_days=30))
    world.add_line()
    disc_id = request(world).disconnection_id

    run_workflow(world, disc_id)

    assert record(world, disc_id).msisdn_released_at == T0 + timedelta(days=30)
    assert world.disconnections_store.released[MSISDN] == T0 + timedelta(days=30)


def test_the_customer_is_told_by_email_and_on_their_alternate_number(world: World) -> None:
    world.add_line()
    disc_id = request(world).disconnection_id

    run_workflow(world, disc_id)

    [(to, _subject, body)] = world.notifier.emails
    [(number, sms)] = world.notifier.sms
    assert to == "asha@example.in"
    assert number == "+919123456780"  # not the line that was just disconnected
    assert body
    assert sms


def test_a_prepaid_final_bill_issues_nothing_and_records_the_refundable_wallet(
    world: World,
) -> None:
    world.add_line(subscriber_type=SubscriberType.PREPAID, wallet_paise=12_350)
    disc_id = request(world).disconnection_id

    assert world.disconnections.final_bill(disc_id) == {"final_invoice_id": ""}

    assert world.billing.calls == []
    final = record(world, disc_id).history[-1]
    assert (final.step, final.outcome) == ("FinalBill", "NOT_BILLED")
    assert "12350" in final.detail
    assert record(world, disc_id).status is DisconnectionStatus.FINAL_BILLED
    assert run_workflow(world, disc_id, resume=True) == "DISCONNECTED"


def test_a_user_request_with_unpaid_bills_waits_in_pending_disconnect(world: World) -> None:
    world.add_line()
    world.facts.add_invoice(INV_OCT, outstanding_paise=70_682)  # not even overdue yet
    disc_id = request(world).disconnection_id

    assert run_workflow(world, disc_id) == "AWAITING_DUES"

    waiting = record(world, disc_id)
    assert waiting.status is DisconnectionStatus.AWAITING_DUES
    assert waiting.dues_paise == 70_682
    assert ("CheckDues", "AWAIT_DUES") in steps(world, disc_id)
    state = world.state()
    assert state.status is SubscriberStatus.PENDING_DISCONNECT
    assert state.network_in_sync
    assert world.network.profile_of(MSISDN) == BARRED  # incoming still allowed
    assert world.network.deprovisioned == []
    entry = world.store.entries()[-1]
    assert entry.status_after is SubscriberStatus.PENDING_DISCONNECT
    assert entry.actor == "system:Disconnection"
    [(_to, _subject, body)] = world.notifier.emails
    [(_number, sms)] = world.notifier.sms
    assert "₹706.82" in body
    assert "₹706.82" in sms
    assert world.events.of_type("SubscriberDisconnected") == []


def test_paying_the_dues_resumes_the_disconnection_once(world: World) -> None:
    world.add_line()
    world.facts.add_invoice(INV_OCT)
    disc_id = request(world).disconnection_id
    run_workflow(world, disc_id)

    world.facts.pay(INV_OCT)
    outcome = world.disconnections.on_payment_succeeded(USER)

    assert outcome == f"resumed as {disc_id}-R1"
    assert world.starter.started[f"{disc_id}-R1"] == {
        "disconnection_id": disc_id,
        "resume": "true",
    }
    assert run_workflow(world, disc_id, resume=True) == "DISCONNECTED"
    assert world.state().status is SubscriberStatus.PERMANENT_DISCONNECTED
    assert world.network.deprovisioned == [MSISDN]


def test_a_duplicate_payment_event_does_not_start_a_second_resume(world: World) -> None:
    """PaymentSucceeded is delivered at least once: the copy arrives while the
    resumed execution has not yet got past CheckDues. One resume only."""
    world.add_line()
    world.facts.add_invoice(INV_OCT)
    disc_id = request(world).disconnection_id
    run_workflow(world, disc_id)
    world.facts.pay(INV_OCT)
    world.disconnections.on_payment_succeeded(USER)

    world.disconnections.on_payment_succeeded(USER)

    resumes = [name for name in world.starter.started if name != disc_id]
    assert resumes == [f"{disc_id}-R1"]


def test_a_payment_that_leaves_dues_outstanding_does_not_resume(world: World) -> None:
    world.add_line()
    world.facts.add_invoice(INV_OCT, outstanding_paise=50_000)
    world.facts.add_invoice(INV_NOV, outstanding_paise=30_000)
    disc_id = request(world).disconnection_id
    run_workflow(world, disc_id)
    assert record(world, disc_id).dues_paise == 80_000

    world.facts.pay(INV_OCT)

    assert world.disconnections.on_payment_succeeded(USER) == "30000 paise still outstanding"
    assert list(world.starter.started) == [disc_id]
    assert world.state().status is SubscriberStatus.PENDING_DISCONNECT


def test_payments_without_a_waiting_disconnection_start_nothing(world: World) -> None:
    world.add_line()
    assert world.disconnections.on_payment_succeeded(USER) == "no disconnection waiting"

    disc_id = request(world).disconnection_id
    world.disconnections.final_bill(disc_id)
    assert world.disconnections.on_payment_succeeded(USER) == "disconnection is FINAL_BILLED"
    assert list(world.starter.started) == [disc_id]


@pytest.mark.parametrize("reason", [D.FRAUD, D.PORT_OUT, D.DECEASED, D.INACTIVITY])
def test_other_reasons_disconnect_despite_dues_which_go_to_collection(
    world: World, reason: D
) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={BlockReason.OVERDUE})
    world.facts.add_invoice(INV_OCT, outstanding_paise=70_682, overdue_notified=True)
    disc_id = request(world, reason).disconnection_id

    assert run_workflow(world, disc_id) == "DISCONNECTED"

    done = record(world, disc_id)
    assert done.dues_paise == 70_682
    check = next(e for e in done.history if e.step == "CheckDues")
    assert check.outcome == "PROCEED"
    assert "to collection" in check.detail
    state = world.state()
    assert state.status is SubscriberStatus.PERMANENT_DISCONNECTED
    assert state.reasons == frozenset()
    assert world.store.entries()[-1].lifted == {BlockReason.OVERDUE}
    [event] = world.events.of_type("SubscriberDisconnected")
    assert event.detail["reason"] == reason.value
    assert event.detail["dues_paise"] == 70_682


# --- steps are safe to repeat ---------------------------------------------------------------


def test_every_step_repeated_does_its_work_once(world: World) -> None:
    world.add_line()
    disc_id = request(world).disconnection_id
    flow = world.disconnections

    first = flow.final_bill(disc_id)
    assert flow.final_bill(disc_id) == first
    assert len(world.billing.calls) == 1
    assert flow.check_dues(disc_id) == flow.check_dues(disc_id)
    flow.deprovision(disc_id)
    flow.deprovision(disc_id)
    assert world.network.deprovisioned == [MSISDN]
    flow.complete(disc_id)
    assert flow.complete(disc_id) == {"status": "DISCONNECTED"}
    assert world.disconnections_store.finalizes == 1
    # A repeated Complete announces again, under the same event id (consumers de-duplicate).
    announced = world.events.of_type("SubscriberDisconnected")
    assert {event.event_id for event in announced} == {disc_id}
    assert [s for s, _ in steps(world, disc_id)].count("FinalBill") == 1
    assert [s for s, _ in steps(world, disc_id)].count("Complete") == 1


def test_await_dues_repeated_holds_and_notifies_once(world: World) -> None:
    world.add_line()
    world.facts.add_invoice(INV_OCT)
    disc_id = request(world).disconnection_id
    run_workflow(world, disc_id)

    assert world.disconnections.await_dues(disc_id) == {"status": "AWAITING_DUES"}

    assert world.disconnections_store.holds == 1
    assert len(world.notifier.emails) == 1


def test_a_deprovision_that_failed_transiently_succeeds_on_the_retry(world: World) -> None:
    world.add_line()
    disc_id = request(world).disconnection_id
    world.disconnections.final_bill(disc_id)
    world.disconnections.check_dues(disc_id)
    world.network.fail_next = 1

    with pytest.raises(NetworkTransientError):
        world.disconnections.deprovision(disc_id)
    assert record(world, disc_id).status is DisconnectionStatus.FINAL_BILLED

    world.disconnections.deprovision(disc_id)
    assert record(world, disc_id).status is DisconnectionStatus.DEPROVISIONED
    assert world.network.deprovisioned == [MSISDN]


def test_await_dues_retried_after_a_network_failure_still_bars_and_notifies(
    world: World,
) -> None:
    """The hold committed, then the barring call failed, so the step fails and
    Step Functions retries it. The retry must still bar the line and tell the
    customer what to pay."""
    world.add_line()
    world.facts.add_invoice(INV_OCT)
    disc_id = request(world).disconnection_id
    world.disconnections.final_bill(disc_id)
    world.disconnections.check_dues(disc_id)
    world.network.fail_next = 1

    with pytest.raises(NetworkTransientError):
        world.disconnections.await_dues(disc_id)
    world.disconnections.await_dues(disc_id)

    assert world.state().status is SubscriberStatus.PENDING_DISCONNECT
    assert world.network.profile_of(MSISDN) == BARRED
    assert len(world.notifier.emails) == 1
    assert len(world.notifier.sms) == 1


def test_notify_repeated_tells_the_customer_once(world: World) -> None:
    world.add_line()
    disc_id = request(world).disconnection_id
    run_workflow(world, disc_id)

    world.disconnections.notify(disc_id)

    assert len(world.notifier.emails) == 1
    assert len(world.notifier.sms) == 1


def test_a_failing_notifier_does_not_fail_the_step(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.add_line()
    disc_id = request(world).disconnection_id

    def down(*_args: object) -> str:
        raise ConnectionError("SES unreachable")

    monkeypatch.setattr(world.notifier, "send_email", down)

    assert run_workflow(world, disc_id) == "DISCONNECTED"
    assert world.disconnections.notify(disc_id) == {"status": "NOTIFIED"}


def test_escalate_records_the_failure_cause(world: World) -> None:
    world.add_line()
    disc_id = request(world).disconnection_id

    result = world.disconnections.escalate(
        disc_id, {"Error": "NetworkPermanentError", "Cause": "HLR rejected the order"}
    )

    assert result == {"status": "ESCALATED"}
    assert record(world, disc_id).status is DisconnectionStatus.ESCALATED
    assert record(world, disc_id).history[-1].detail == "HLR rejected the order"


def test_a_retried_escalation_is_one_step_and_one_event(world: World) -> None:
    """Step Functions may run the Escalate task again: the trail and the compliance
    report must see one escalation, announced under one event id."""
    world.add_line()
    disc_id = request(world).disconnection_id
    error = {"Error": "NetworkPermanentError", "Cause": "HLR rejected the order"}

    world.disconnections.escalate(disc_id, error)
    world.disconnections.escalate(disc_id, error)

    steps = [entry.step for entry in record(world, disc_id).history]
    assert steps.count("Escalate") == 1
    announced = world.events.of_type("DisconnectionEscalated")
    assert len(announced) == 2  # announced again in case the first try stopped short
    assert {event.event_id for event in announced} == {f"DisconnectionEscalated-{disc_id}-1"}
    assert announced[0].detail["status"] == "ESCALATED"


# --- inactivity --------------------------------------------------------------------------


def dormant_line(world: World, user_id: str, since: datetime) -> None:
    world.add_line(
        user_id=user_id,
        status=SubscriberStatus.TEMP_BLOCKED,
        reasons={BlockReason.PLAN_EXPIRED},
        subscriber_type=SubscriberType.PREPAID,
        dormant_since=since,
    )


def test_the_sweep_takes_the_lines_dormant_since_the_day_past_the_inactivity_period(
    world: World,
) -> None:
    today = date(2027, 3, 1)
    for user_id, days_ago in [("u91", 91), ("u90", 90), ("u92", 92), ("u93", 93)]:
        dormant_line(world, user_id, ist_midnight(today - timedelta(days=days_ago)))
    queue = FakeQueue()

    # u92 and u93 were due on earlier days: those days' runs took them.
    result = world.disconnections.inactivity_sweep(today, queue)

    assert {day for day, _ in world.disconnections_store.queries} == {today - timedelta(days=91)}
    assert len(world.disconnections_store.queries) == 8  # every shard of the day
    assert [m["user_id"] for m in queue.messages] == ["u91"]
    assert all(m["task"] == "inactivity" for m in queue.messages)
    assert result == {"messages": 1}


@pytest.mark.parametrize(("days", "disconnects"), [(89, False), (90, False), (91, True)])
def test_a_line_is_disconnected_for_inactivity_only_after_more_than_the_limit(
    world: World, days: int, disconnects: bool
) -> None:
    dormant_line(world, USER, T0 - timedelta(days=days))

    outcome = world.disconnections.disconnect_if_inactive(USER)

    assert outcome.startswith("started") is disconnects
    assert bool(world.starter.started) is disconnects
    if disconnects:
        opened = record(world, world.state().disconnection_id or "")
        assert opened.reason is D.INACTIVITY
        assert opened.requested_by == "service:inactivity-sweep"


def test_the_inactivity_limit_is_configuration() -> None:
    world = make_world(DisconnectionConfig(inactivity_days=30))
    dormant_line(world, USER, T0 - timedelta(days=31))

    assert world.disconnections.disconnect_if_inactive(USER).startswith("started")


def test_a_line_is_never_disconnected_for_inactivity_twice(world: World) -> None:
    dormant_line(world, USER, T0 - timedelta(days=100))
    world.disconnections.disconnect_if_inactive(USER)
    disc_id = world.state().disconnection_id or ""

    # A retried sweep, or a run by hand, sends the same line again.
    assert world.disconnections.disconnect_if_inactive(USER) == "a disconnection is under way"
    run_workflow(world, disc_id)
    world.clock.advance(timedelta(days=1))
    world.disconnections.disconnect_if_inactive(USER)

    assert list(world.starter.started) == [disc_id]
    assert world.state().status is SubscriberStatus.PERMANENT_DISCONNECTED


def test_an_inactivity_disconnection_whose_workflow_did_not_start_starts_on_the_retry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task's first run opened the disconnection, then stopped before it
    announced the request and started the workflow (the bus failed, or the worker
    died): the queue's redelivery does both, rather than find 'a disconnection
    under way' that nothing runs."""
    dormant_line(world, USER, T0 - timedelta(days=100))
    publish = world.events.publish

    def unreachable(events: Any) -> None:
        monkeypatch.setattr(world.events, "publish", publish)  # once
        raise ConnectionError("the bus did not answer")

    monkeypatch.setattr(world.events, "publish", unreachable)
    with pytest.raises(ConnectionError):
        world.disconnections.disconnect_if_inactive(USER)
    opened = world.state().disconnection_id or ""
    assert (world.starter.started, world.events.of_type("DisconnectionRequested")) == ({}, [])

    world.disconnections.disconnect_if_inactive(USER)

    assert list(world.starter.started) == [opened]
    assert [e.event_id for e in world.events.of_type("DisconnectionRequested")] == [
        f"DisconnectionRequested-{opened}"
    ]
    run_workflow(world, opened)
    assert world.state().status is SubscriberStatus.PERMANENT_DISCONNECTED


def test_an_active_line_is_never_inactive(world: World) -> None:
    world.add_line()

    assert world.disconnections.disconnect_if_inactive(USER) == "not inactive long enough"
    assert world.starter.started == {}


def test_a_line_left_waiting_for_dues_past_the_inactivity_limit_is_disconnected(
    world: World,
) -> None:
    """The owner asked to close the line but never paid the overdue bill: the line
    sits in PENDING_DISCONNECT holding the number. Once the bill is more than
    inactivity_days old, the sweep must get it disconnected like any dormant line."""
    bill_date = date(2026, 10, 1)
    world.add_line(
        status=SubscriberStatus.TEMP_BLOCKED,
        reasons={BlockReason.OVERDUE},
        dormant_since=ist_midnight(bill_date),
    )
    world.facts.add_invoice(INV_OCT, bill_date=bill_date, overdue_notified=True)
    disc_id = request(world).disconnection_id
    assert run_workflow(world, disc_id) == "AWAITING_DUES"
    world.clock.advance(timedelta(days=90))  # > 90 days after the bill date

    world.disconnections.disconnect_if_inactive(USER)

    assert len(world.starter.started) == 2  # the original run, and the one that ends it
