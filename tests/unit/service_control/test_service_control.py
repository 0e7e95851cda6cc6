"""ServiceControl against in-memory ports: the API's blocks and unblocks, the
reactions to billing, plan and usage events (duplicates, stale and out-of-order
events, races with payments), and keeping the network's barring in step."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import DomainError, Forbidden, UserNotFound
from shared.models import SubscriberStatus
from shared.network import UNRESTRICTED, BarringProfile, DataAccess, NetworkTransientError
from shared.service_control import (
    BlockReason,
    DuesOutstanding,
    NotControllable,
    ReasonNotManual,
    barring_for,
)
from shared.services.billing import ist_midnight
from tests.unit.service_control.fakes import (
    ADMIN,
    AGENT,
    MSISDN,
    OWNER,
    T0,
    USER,
    World,
    make_world,
    prepaid_plan,
)

R = BlockReason
BARRED = BarringProfile(outgoing_barred=True, data=DataAccess.BARRED)
THROTTLED = BarringProfile(data=DataAccess.THROTTLED)
INV_OCT = "INV-u1-2026-10-01"
INV_NOV = "INV-u1-2026-11-01"


@pytest.fixture
def world() -> World:
    return make_world()


def detail(world: World, detail_type: str, index: int = -1) -> dict[str, Any]:
    return world.events.of_type(detail_type)[index].detail


def overdue_invoice(world: World, invoice_id: str = INV_OCT, **kwargs: Any) -> None:
    world.facts.add_invoice(invoice_id, overdue_notified=True, **kwargs)


def valid_plan(world: World, *, subscription_id: str = "sub-1", days_left: int = 20) -> None:
    world.facts.set_plan(
        prepaid_plan(
            T0 - timedelta(days=8),
            T0 + timedelta(days=days_left),
            subscription_id=subscription_id,
        )
    )


def expired_plan(world: World) -> None:
    world.facts.set_plan(prepaid_plan(T0 - timedelta(days=30), T0 - timedelta(hours=2)))


# --- the API: blocks and unblocks ----------------------------------------------------


def test_an_agent_block_bars_outgoing_and_data_keeps_incoming_and_is_recorded(
    world: World,
) -> None:
    world.add_line()

    view = world.service.block(AGENT, USER, R.AGENT, note="customer travelling, asked to pause")

    assert view.status is SubscriberStatus.TEMP_BLOCKED
    assert view.block_reasons == [R.AGENT]
    assert view.barring == {"outgoing_barred": True, "data": "BARRED", "incoming_allowed": True}
    assert view.network_in_sync
    assert world.network.profile_of(MSISDN) == BARRED
    [entry] = world.store.entries()
    assert entry.actor == "agent:agent-7"
    assert entry.cause == "customer travelling, asked to pause"
    assert entry.applied == {R.AGENT}
    assert (entry.status_before, entry.status_after) == (
        SubscriberStatus.ACTIVE,
        SubscriberStatus.TEMP_BLOCKED,
    )
    assert detail(world, "ServiceBlocked") == {
        "user_id": USER,
        "status": "TEMP_BLOCKED",
        "block_reasons": ["AGENT"],
        "actor": "agent:agent-7",
        "applied": ["AGENT"],
    }


def test_blocking_again_for_the_same_reason_changes_nothing(world: World) -> None:
    world.add_line()
    world.service.block(AGENT, USER, R.AGENT)
    orders = len(world.network.barring_orders)

    again = world.service.block(ADMIN, USER, R.AGENT)

    assert not again.changed
    assert again.status is SubscriberStatus.TEMP_BLOCKED
    assert len(world.store.entries()) == 1
    assert len(world.events.events) == 1
    assert len(world.network.barring_orders) == orders


def test_an_admin_unblock_reactivates_and_unrestricts_the_line(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.AGENT})

    view = world.service.unblock(ADMIN, USER, R.AGENT, note="back from travel")

    assert view.status is SubscriberStatus.ACTIVE
    assert view.block_reasons == []
    assert view.network_in_sync
    assert world.network.profile_of(MSISDN) == UNRESTRICTED
    event = detail(world, "ServiceUnblocked")
    assert event["actor"] == "admin:admin-1"
    assert "cause" not in event  # the agent's note stays in the history, off the bus
    assert event["lifted"] == ["AGENT"]
    assert event["status"] == "ACTIVE"


def test_lifting_one_of_two_reasons_keeps_the_line_blocked(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.AGENT, R.QUOTA_EXHAUSTED})

    view = world.service.unblock(AGENT, USER, R.AGENT)

    assert view.status is SubscriberStatus.TEMP_BLOCKED
    assert view.block_reasons == [R.QUOTA_EXHAUSTED]
    # Only the throttle is left: calls work again, data stays slow.
    assert world.network.profile_of(MSISDN) == THROTTLED


def test_lifting_a_reason_that_is_not_there_changes_nothing(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.AGENT})

    view = world.service.unblock(AGENT, USER, R.THEFT)

    assert not view.changed
    assert view.block_reasons == [R.AGENT]
    assert world.store.entries() == []
    assert world.events.events == []


def test_status_shows_reasons_barring_and_history_newest_first(world: World) -> None:
    world.add_line()
    world.service.block(AGENT, USER, R.AGENT, note="first")
    world.clock.advance(timedelta(minutes=5))
    world.service.block(AGENT, USER, R.FRAUD_SUSPECTED, note="second")

    view = world.service.status(USER)

    assert view.block_reasons == [R.AGENT, R.FRAUD_SUSPECTED]
    assert view.barring["outgoing_barred"] is True
    assert [h.cause for h in view.history] == ["second", "first"]
    assert view.history[0].at == T0 + timedelta(minutes=5)


def test_the_status_of_an_unknown_user_is_not_found(world: World) -> None:
    with pytest.raises(UserNotFound):
        world.service.status("nobody")


@pytest.mark.parametrize("reason", [R.OVERDUE, R.PLAN_EXPIRED, R.QUOTA_EXHAUSTED])
def test_nobody_applies_a_fact_backed_reason_by_hand(world: World, reason: BlockReason) -> None:
    world.add_line()

    with pytest.raises(ReasonNotManual):
        world.service.block(ADMIN, USER, reason)

    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.network.barring_orders == []


def test_the_owner_blocks_a_lost_sim_with_a_verified_otp_which_is_then_used_up(
    world: World,
) -> None:
    world.add_line()
    otp = world.otps.verified("otp-1", R.LOST_SIM)

    view = world.service.block(OWNER, USER, R.LOST_SIM, otp_id=otp)

    assert view.status is SubscriberStatus.TEMP_BLOCKED
    assert world.network.profile_of(MSISDN) == BARRED
    assert world.store.entries()[0].actor == "subscriber:u1"
    assert world.otps.status(otp) == "USED"
    # The same OTP cannot authorize another block.
    world.service.unblock(AGENT, USER, R.LOST_SIM)
    with pytest.raises(Forbidden):
        world.service.block(OWNER, USER, R.LOST_SIM, otp_id=otp)
    assert world.state().status is SubscriberStatus.ACTIVE


@pytest.mark.parametrize(
    ("reason", "otp_reason", "user_id"),
    [
        (R.LOST_SIM, None, USER),  # no OTP at all
        (R.LOST_SIM, R.THEFT, USER),  # verified for another reason
        (R.THEFT, R.THEFT, "u2"),  # someone else's line
        (R.AGENT, R.AGENT, USER),  # owners may block only a lost or stolen SIM
        (R.FRAUD_SUSPECTED, R.FRAUD_SUSPECTED, USER),
    ],
)
def test_the_owner_is_refused_without_a_verified_otp_for_their_own_lost_or_stolen_sim(
    world: World, reason: BlockReason, otp_reason: BlockReason | None, user_id: str
) -> None:
    world.add_line(user_id=user_id)
    otp_id = world.otps.verified("otp-1", otp_reason) if otp_reason else None

    with pytest.raises(Forbidden):
        world.service.block(OWNER, user_id, reason, otp_id=otp_id)

    assert world.state(user_id).status is SubscriberStatus.ACTIVE
    if otp_id:
        assert world.otps.status(otp_id) == "VERIFIED"


def test_an_expired_otp_is_refused(world: World) -> None:
    world.add_line()
    otp = world.otps.verified("otp-1", R.THEFT)
    world.clock.advance(timedelta(minutes=11))

    with pytest.raises(Forbidden):
        world.service.block(OWNER, USER, R.THEFT, otp_id=otp)


def test_an_otp_that_lapses_between_its_check_and_the_commit_is_a_client_error(
    world: World,
) -> None:
    """The OTP guard can fail at commit (the verified window ends after the
    check). The caller must get a domain error (4xx), not an internal error."""
    world.add_line()
    otp = world.otps.verified("otp-1", R.THEFT, window=timedelta(seconds=1))
    world.store.before_save = lambda: world.clock.advance(timedelta(seconds=2))

    with pytest.raises(DomainError):
        world.service.block(OWNER, USER, R.THEFT, otp_id=otp)

    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.store.entries() == []


def test_an_agent_cannot_lift_overdue_while_dues_remain_but_an_admin_can(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.OVERDUE})
    overdue_invoice(world)

    with pytest.raises(DuesOutstanding) as refused:
        world.service.unblock(AGENT, USER, R.OVERDUE)
    assert refused.value.status == 409
    assert world.state().reasons == {R.OVERDUE}

    view = world.service.unblock(ADMIN, USER, R.OVERDUE, note="goodwill extension")
    assert view.status is SubscriberStatus.ACTIVE
    assert world.network.profile_of(MSISDN) == UNRESTRICTED


def test_an_agent_lifts_overdue_once_no_overdue_bill_is_left(world: World) -> None:
    """The payment's event was lost: the bill is paid but the block stayed."""
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.OVERDUE})
    overdue_invoice(world)
    world.facts.pay(INV_OCT)
    # A new bill that is not past its grace period yet does not count as dues.
    world.facts.add_invoice(INV_NOV, bill_date=date(2026, 11, 1))

    view = world.service.unblock(AGENT, USER, R.OVERDUE)

    assert view.status is SubscriberStatus.ACTIVE


def test_an_agent_lifts_plan_expired_only_once_a_valid_plan_is_active(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.PLAN_EXPIRED})
    expired_plan(world)
    with pytest.raises(DuesOutstanding):
        world.service.unblock(AGENT, USER, R.PLAN_EXPIRED)

    valid_plan(world, subscription_id="sub-2")
    assert world.service.unblock(AGENT, USER, R.PLAN_EXPIRED).status is SubscriberStatus.ACTIVE


def test_only_an_admin_lifts_quota_exhausted_by_hand(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.QUOTA_EXHAUSTED})
    valid_plan(world)

    with pytest.raises(DuesOutstanding):
        world.service.unblock(AGENT, USER, R.QUOTA_EXHAUSTED)
    assert world.service.unblock(ADMIN, USER, R.QUOTA_EXHAUSTED).status is SubscriberStatus.ACTIVE


def test_an_agent_applies_fraud_suspected_but_only_an_admin_lifts_it(world: World) -> None:
    world.add_line()
    world.service.block(AGENT, USER, R.FRAUD_SUSPECTED, note="SIM box pattern")

    with pytest.raises(Forbidden):
        world.service.unblock(AGENT, USER, R.FRAUD_SUSPECTED)
    assert world.state().reasons == {R.FRAUD_SUSPECTED}

    assert world.service.unblock(ADMIN, USER, R.FRAUD_SUSPECTED).status is SubscriberStatus.ACTIVE


def test_a_subscriber_cannot_unblock_even_their_own_line(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.LOST_SIM})

    with pytest.raises(Forbidden):
        world.service.unblock(OWNER, USER, R.LOST_SIM)
    assert world.state().reasons == {R.LOST_SIM}


@pytest.mark.parametrize(
    "status",
    [
        SubscriberStatus.PENDING,
        SubscriberStatus.KYC_REJECTED,
        SubscriberStatus.PERMANENT_DISCONNECTED,
    ],
)
def test_the_api_refuses_lines_that_are_not_live_with_a_conflict(
    world: World, status: SubscriberStatus
) -> None:
    world.add_line(status=status)

    with pytest.raises(NotControllable) as blocked:
        world.service.block(AGENT, USER, R.AGENT)
    with pytest.raises(NotControllable) as unblocked:
        world.service.unblock(ADMIN, USER, R.AGENT)

    assert blocked.value.status == unblocked.value.status == 409
    assert world.state().status is status
    assert world.store.entries() == []
    assert world.network.barring_orders == []


def test_a_block_under_pending_disconnect_is_recorded_and_the_status_stays(
    world: World,
) -> None:
    world.add_line(status=SubscriberStatus.PENDING_DISCONNECT)

    view = world.service.block(AGENT, USER, R.THEFT)

    assert view.status is SubscriberStatus.PENDING_DISCONNECT
    assert view.block_reasons == [R.THEFT]
    assert world.network.profile_of(MSISDN) == BARRED


def test_a_failing_network_leaves_the_block_stored_and_the_view_out_of_sync(
    world: World,
) -> None:
    world.add_line()
    world.network.fail_next = 100

    view = world.service.block(AGENT, USER, R.THEFT)

    assert view.status is SubscriberStatus.TEMP_BLOCKED
    assert not view.network_in_sync
    assert world.state().reasons == {R.THEFT}
    assert not world.service.status(USER).network_in_sync
    assert world.network.profile_of(MSISDN) == UNRESTRICTED  # nothing reached the HLR

    world.network.fail_next = 0
    assert world.service.sync_network(USER)
    assert world.network.profile_of(MSISDN) == BARRED
    assert world.service.status(USER).network_in_sync


def test_a_barring_that_timed_out_after_taking_effect_is_undone_by_the_unblock(
    world: World,
) -> None:
    """The HLR applied the bar but its reply timed out: the store never learnt
    that the line was barred. Unblocking must still leave the line unrestricted."""
    world.add_line()
    world.network.fail_after_effect = 1
    blocked = world.service.block(AGENT, USER, R.AGENT)
    assert not blocked.network_in_sync
    assert world.network.profile_of(MSISDN) == BARRED

    view = world.service.unblock(AGENT, USER, R.AGENT)

    assert view.status is SubscriberStatus.ACTIVE
    assert world.network.profile_of(MSISDN) == UNRESTRICTED


# --- reactions: InvoiceOverdue and payments ---------------------------------------------


def test_invoice_overdue_blocks_once_with_its_cause(world: World) -> None:
    world.add_line()
    overdue_invoice(world, bill_date=date(2026, 10, 1))

    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")

    state = world.state()
    assert state.status is SubscriberStatus.TEMP_BLOCKED
    assert state.reasons == {R.OVERDUE}
    assert state.dormant_since == ist_midnight(date(2026, 10, 1))  # the inactivity clock
    assert world.network.profile_of(MSISDN) == BARRED
    assert state.network_in_sync
    [entry] = world.store.entries()
    assert entry.actor == "system:InvoiceOverdue"
    assert INV_OCT in entry.cause
    assert "evt-1" in entry.cause
    event = detail(world, "ServiceBlocked")
    assert event["actor"] == "system:InvoiceOverdue"
    assert event["applied"] == ["OVERDUE"]


def test_a_duplicate_invoice_overdue_changes_nothing(world: World) -> None:
    world.add_line()
    overdue_invoice(world)
    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")
    orders = len(world.network.barring_orders)

    assert world.service.on_invoice_overdue(USER, INV_OCT, "evt-1") == "no change"

    assert len(world.store.entries()) == 1
    assert len(world.events.events) == 1
    assert len(world.network.barring_orders) == orders


def test_a_second_overdue_invoice_keeps_the_earliest_inactivity_start(world: World) -> None:
    world.add_line()
    overdue_invoice(world, INV_OCT, bill_date=date(2026, 10, 1))
    overdue_invoice(world, INV_NOV, bill_date=date(2026, 11, 1))
    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")

    assert world.service.on_invoice_overdue(USER, INV_NOV, "evt-2") == "no change"

    assert world.state().dormant_since == ist_midnight(date(2026, 10, 1))
    assert len(world.store.entries()) == 1


def test_a_late_invoice_overdue_for_a_paid_invoice_does_not_block(world: World) -> None:
    world.add_line()
    overdue_invoice(world)
    world.facts.pay(INV_OCT)
    world.service.on_payment_succeeded(USER, "evt-pay", top_up=False)  # arrived first

    outcome = world.service.on_invoice_overdue(USER, INV_OCT, "evt-late")

    assert outcome.startswith("stale")
    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.store.entries() == []
    assert world.events.events == []
    assert world.network.profile_of(MSISDN) == UNRESTRICTED


def test_invoice_overdue_for_an_unknown_invoice_does_not_block(world: World) -> None:
    world.add_line()

    assert world.service.on_invoice_overdue(USER, "INV-u1-2026-09-01", "evt-1").startswith("stale")
    assert world.state().status is SubscriberStatus.ACTIVE


def test_paying_one_of_two_overdue_invoices_keeps_the_block_until_both_are_paid(
    world: World,
) -> None:
    world.add_line()
    overdue_invoice(world, INV_OCT, bill_date=date(2026, 10, 1))
    overdue_invoice(world, INV_NOV, bill_date=date(2026, 11, 1))
    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")

    world.facts.pay(INV_OCT)
    assert world.service.on_payment_succeeded(USER, "pay-1", top_up=False) == "nothing to lift"
    assert world.state().reasons == {R.OVERDUE}
    assert world.network.profile_of(MSISDN) == BARRED

    world.facts.pay(INV_NOV)
    world.service.on_payment_succeeded(USER, "pay-2", top_up=False)

    state = world.state()
    assert state.status is SubscriberStatus.ACTIVE
    assert state.dormant_since is None  # the inactivity clock stops
    assert world.network.profile_of(MSISDN) == UNRESTRICTED
    event = detail(world, "ServiceUnblocked")
    assert event["actor"] == "system:PaymentSucceeded"
    assert event["lifted"] == ["OVERDUE"]


def test_a_payment_lifts_overdue_while_a_newer_bill_is_still_within_its_grace(
    world: World,
) -> None:
    world.add_line()
    overdue_invoice(world)
    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")
    world.facts.add_invoice(INV_NOV, bill_date=date(2026, 11, 1))  # issued, not overdue

    world.facts.pay(INV_OCT)
    world.service.on_payment_succeeded(USER, "pay-1", top_up=False)

    assert world.state().status is SubscriberStatus.ACTIVE


def test_a_duplicate_payment_event_changes_nothing(world: World) -> None:
    world.add_line()
    overdue_invoice(world)
    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")
    world.facts.pay(INV_OCT)
    world.service.on_payment_succeeded(USER, "pay-1", top_up=False)
    entries, events = len(world.store.entries()), len(world.events.events)

    assert world.service.on_payment_succeeded(USER, "pay-1", top_up=False) == "nothing to lift"

    assert len(world.store.entries()) == entries
    assert len(world.events.events) == events


def test_a_top_up_lifts_the_throttle_but_not_an_overdue_block_with_dues(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.QUOTA_EXHAUSTED, R.OVERDUE})
    overdue_invoice(world)

    world.service.on_payment_succeeded(USER, "topup-1", top_up=True)

    assert world.state().reasons == {R.OVERDUE}
    assert world.network.profile_of(MSISDN) == BARRED


def test_a_bill_payment_that_is_not_a_top_up_keeps_the_throttle(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.QUOTA_EXHAUSTED})

    assert world.service.on_payment_succeeded(USER, "pay-1", top_up=False) == "nothing to lift"

    assert world.state().reasons == {R.QUOTA_EXHAUSTED}


def test_a_top_up_reactivates_a_throttled_line(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.QUOTA_EXHAUSTED})

    world.service.on_payment_succeeded(USER, "topup-1", top_up=True)

    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.network.profile_of(MSISDN) == UNRESTRICTED


# --- reactions: plans and quota ---------------------------------------------------------


def test_plan_expired_blocks_once_and_starts_the_inactivity_clock(world: World) -> None:
    world.add_line()
    expired_plan(world)
    valid_until = T0 - timedelta(hours=2)

    world.service.on_plan_expired(USER, "sub-1", valid_until, "evt-1")

    state = world.state()
    assert state.reasons == {R.PLAN_EXPIRED}
    assert state.dormant_since == valid_until
    assert world.network.profile_of(MSISDN) == BARRED
    assert detail(world, "ServiceBlocked")["actor"] == "system:PlanExpired"

    assert world.service.on_plan_expired(USER, "sub-1", valid_until, "evt-1") == "no change"
    assert len(world.store.entries()) == 1


def test_plan_expired_after_a_renewal_does_not_block(world: World) -> None:
    world.add_line()
    valid_plan(world, subscription_id="sub-2")  # renewed before the event arrived

    outcome = world.service.on_plan_expired(USER, "sub-1", T0 - timedelta(hours=2), "evt-1")

    assert outcome.startswith("stale")
    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.events.events == []


def test_a_plan_bought_between_the_read_and_the_block_wins(world: World) -> None:
    world.add_line()
    expired_plan(world)
    world.store.before_save = lambda: valid_plan(world, subscription_id="sub-2")

    outcome = world.service.on_plan_expired(USER, "sub-1", T0 - timedelta(hours=2), "evt-1")

    assert outcome.startswith("stale")
    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.network.profile_of(MSISDN) == UNRESTRICTED


def test_plan_changed_lifts_plan_expired_and_the_throttle(world: World) -> None:
    world.add_line(
        status=SubscriberStatus.TEMP_BLOCKED, reasons={R.PLAN_EXPIRED, R.QUOTA_EXHAUSTED}
    )
    valid_plan(world, subscription_id="sub-2")

    world.service.on_plan_changed(USER, "evt-pc")

    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.network.profile_of(MSISDN) == UNRESTRICTED
    event = detail(world, "ServiceUnblocked")
    assert event["actor"] == "system:PlanChanged"
    assert event["lifted"] == ["PLAN_EXPIRED", "QUOTA_EXHAUSTED"]


def test_plan_changed_keeps_an_overdue_block_while_dues_remain(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.PLAN_EXPIRED, R.OVERDUE})
    valid_plan(world, subscription_id="sub-2")
    overdue_invoice(world)

    world.service.on_plan_changed(USER, "evt-pc")

    assert world.state().reasons == {R.OVERDUE}


def test_a_recharge_payment_lifts_plan_expired_only_once_the_plan_is_valid(
    world: World,
) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.PLAN_EXPIRED})
    expired_plan(world)

    # The payment event came before the plan started: nothing to lift yet...
    assert world.service.on_payment_succeeded(USER, "pay-1", top_up=False) == "nothing to lift"
    assert world.state().reasons == {R.PLAN_EXPIRED}

    # ...and the plan's own event lifts it.
    valid_plan(world, subscription_id="sub-2")
    world.service.on_plan_changed(USER, "evt-pc")
    assert world.state().status is SubscriberStatus.ACTIVE


def test_a_recharge_payment_after_the_plan_started_reactivates(world: World) -> None:
    world.add_line(status=SubscriberStatus.TEMP_BLOCKED, reasons={R.PLAN_EXPIRED})
    valid_plan(world, subscription_id="sub-2")

    world.service.on_payment_succeeded(USER, "pay-1", top_up=False)

    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.state().dormant_since is None


def test_data_quota_exhausted_throttles_data_only(world: World) -> None:
    world.add_line()
    valid_plan(world)

    world.service.on_quota_exhausted(USER, "DATA", T0 - timedelta(minutes=1), "evt-q")

    state = world.state()
    assert state.status is SubscriberStatus.TEMP_BLOCKED
    assert state.reasons == {R.QUOTA_EXHAUSTED}
    assert state.dormant_since is None  # a throttled line is not dormant
    assert world.network.profile_of(MSISDN) == THROTTLED
    assert detail(world, "ServiceBlocked")["actor"] == "system:QuotaExhausted"

    again = world.service.on_quota_exhausted(USER, "DATA", T0 - timedelta(minutes=1), "evt-q")
    assert again == "no change"
    assert len(world.store.entries()) == 1


@pytest.mark.parametrize("usage_type", ["VOICE", "SMS"])
def test_voice_and_sms_exhaustion_do_not_throttle(world: World, usage_type: str) -> None:
    world.add_line()
    valid_plan(world)

    outcome = world.service.on_quota_exhausted(USER, usage_type, T0, "evt-q")

    assert outcome.startswith("ignored")
    assert world.state().status is SubscriberStatus.ACTIVE


def test_quota_exhausted_from_before_the_current_plan_period_is_ignored(world: World) -> None:
    world.add_line()
    valid_plan(world)  # started 8 days ago

    outcome = world.service.on_quota_exhausted(USER, "DATA", T0 - timedelta(days=9), "evt-old")

    assert outcome.startswith("stale")
    assert world.state().status is SubscriberStatus.ACTIVE


def test_quota_exhausted_without_a_valid_plan_does_not_throttle(world: World) -> None:
    world.add_line()
    expired_plan(world)

    assert world.service.on_quota_exhausted(USER, "DATA", T0, "evt-q").startswith("stale")
    assert world.state().reasons == frozenset()


def test_a_plan_renewed_between_the_read_and_the_throttle_wins(world: World) -> None:
    world.add_line()
    valid_plan(world)
    world.store.before_save = lambda: valid_plan(world, subscription_id="sub-2")

    outcome = world.service.on_quota_exhausted(USER, "DATA", T0 - timedelta(minutes=1), "evt")

    assert outcome.startswith("stale")
    assert world.state().status is SubscriberStatus.ACTIVE


# --- reactions on lines that are not live, or pending disconnection ---------------------


@pytest.mark.parametrize(
    "status",
    [
        SubscriberStatus.PENDING,
        SubscriberStatus.KYC_REJECTED,
        SubscriberStatus.PERMANENT_DISCONNECTED,
    ],
)
def test_reactions_leave_lines_that_are_not_live_alone(
    world: World, status: SubscriberStatus
) -> None:
    world.add_line(status=status)
    overdue_invoice(world)
    expired_plan(world)

    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")
    world.service.on_plan_expired(USER, "sub-1", T0 - timedelta(hours=2), "evt-2")
    world.service.on_payment_succeeded(USER, "evt-3", top_up=True)
    world.service.on_plan_changed(USER, "evt-4")

    assert world.state().status is status
    assert world.state().reasons == frozenset()
    assert world.store.entries() == []
    assert world.events.events == []
    assert world.network.barring_orders == []


def test_under_pending_disconnect_reasons_follow_events_but_the_line_stays_barred(
    world: World,
) -> None:
    world.add_line(status=SubscriberStatus.PENDING_DISCONNECT)
    overdue_invoice(world)

    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")
    assert world.state().reasons == {R.OVERDUE}
    assert world.state().status is SubscriberStatus.PENDING_DISCONNECT

    world.facts.pay(INV_OCT)
    world.service.on_payment_succeeded(USER, "pay-1", top_up=False)

    state = world.state()
    assert state.reasons == frozenset()
    assert state.status is SubscriberStatus.PENDING_DISCONNECT
    assert world.network.profile_of(MSISDN) == BARRED


# --- races and the network --------------------------------------------------------------


def test_an_invoice_paid_between_the_reaction_read_and_its_save_leaves_the_line_active(
    world: World,
) -> None:
    """The payment lands (and its own reaction finds nothing to lift) after the
    overdue reaction read the invoice as unpaid, before its write: the guard
    fails, so the line is never blocked."""
    world.add_line()
    overdue_invoice(world)

    def payment_lands() -> None:
        world.facts.pay(INV_OCT)
        world.service.on_payment_succeeded(USER, "pay-1", top_up=False)

    world.store.before_save = payment_lands

    outcome = world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")

    assert outcome.startswith("stale")
    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.store.entries() == []
    assert world.events.of_type("ServiceBlocked") == []
    assert world.network.profile_of(MSISDN) == UNRESTRICTED


def test_a_block_that_commits_before_the_payment_is_lifted_by_the_payment(
    world: World,
) -> None:
    world.add_line()
    overdue_invoice(world)
    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")

    world.facts.pay(INV_OCT)
    world.service.on_payment_succeeded(USER, "pay-1", top_up=False)

    assert world.state().status is SubscriberStatus.ACTIVE
    assert [profile for _, profile in world.network.barring_orders] == [BARRED, UNRESTRICTED]
    assert world.network.profile_of(MSISDN) == UNRESTRICTED
    assert world.state().network_in_sync


def test_a_payment_lifting_while_the_bar_is_on_its_way_ends_unrestricted(world: World) -> None:
    """The overdue block committed and its barring order is in flight; the
    payment lifts the block and its own (faster) sync reaches the HLR first.
    The network must end up showing the later state: unrestricted."""
    world.add_line()
    overdue_invoice(world)

    def payment_lands() -> None:
        world.facts.pay(INV_OCT)
        world.service.on_payment_succeeded(USER, "pay-1", top_up=False)

    world.network.during_apply = payment_lands

    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")

    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.network.profile_of(MSISDN) == UNRESTRICTED


def test_sync_converges_when_another_change_lands_during_apply_barring(world: World) -> None:
    """The throttle's order is in flight when an agent's THEFT block commits (and
    its own sync fails): the first sync finds its version stale and applies the
    newer, stricter profile."""
    world.add_line()
    valid_plan(world)

    def agent_blocks() -> None:
        world.network.fail_next = 1
        world.service.block(AGENT, USER, R.THEFT)

    world.network.during_apply = agent_blocks

    world.service.on_quota_exhausted(USER, "DATA", T0 - timedelta(minutes=1), "evt-q")

    state = world.state()
    assert state.reasons == {R.QUOTA_EXHAUSTED, R.THEFT}
    assert state.network_in_sync
    assert world.network.profile_of(MSISDN) == BARRED


def test_a_concurrent_change_between_read_and_save_is_retried_on_fresh_state(
    world: World,
) -> None:
    world.add_line()
    overdue_invoice(world)
    world.store.before_save = lambda: world.service.block(AGENT, USER, R.THEFT)

    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")

    assert world.state().reasons == {R.OVERDUE, R.THEFT}
    assert [e.applied for e in world.store.entries()] == [{R.THEFT}, {R.OVERDUE}]
    assert world.network.profile_of(MSISDN) == BARRED


def test_a_reaction_whose_network_call_fails_stores_the_block_and_its_retry_syncs(
    world: World,
) -> None:
    world.add_line()
    overdue_invoice(world)
    world.network.fail_next = 1

    with pytest.raises(NetworkTransientError):  # the queue redelivers the event
        world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")
    assert world.state().reasons == {R.OVERDUE}
    assert not world.state().network_in_sync

    assert world.service.on_invoice_overdue(USER, INV_OCT, "evt-1") == "no change"

    assert world.network.profile_of(MSISDN) == BARRED
    assert world.state().network_in_sync
    assert len(world.store.entries()) == 1
    assert len(world.events.of_type("ServiceBlocked")) == 1


def test_a_lift_does_not_erase_a_block_for_a_bill_that_went_overdue_meanwhile(
    world: World,
) -> None:
    """The payment of October's bill reads the dues (November's bill is not yet
    past its grace) and lifts OVERDUE; before its write, November's bill goes
    overdue and its reaction finds OVERDUE still set, so it changes nothing.
    November's bill is overdue and unpaid: the line must stay blocked."""
    world.add_line()
    overdue_invoice(world, INV_OCT, bill_date=date(2026, 10, 1))
    world.facts.add_invoice(INV_NOV, bill_date=date(2026, 11, 1))
    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")

    def november_goes_overdue() -> None:
        world.facts.notify_overdue(INV_NOV)
        world.service.on_invoice_overdue(USER, INV_NOV, "evt-2")

    world.facts.pay(INV_OCT)
    world.store.before_save = november_goes_overdue
    world.service.on_payment_succeeded(USER, "pay-1", top_up=False)

    assert world.state().reasons == {R.OVERDUE}
    assert world.network.profile_of(MSISDN) == BARRED


# --- any sequence of changes ------------------------------------------------------------

MANUAL = [R.LOST_SIM, R.THEFT, R.FRAUD_SUSPECTED, R.AGENT]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("block"), st.sampled_from(MANUAL)),
        st.tuples(st.just("unblock"), st.sampled_from(list(BlockReason))),
        st.tuples(st.just("overdue"), st.just(R.OVERDUE)),
        st.tuples(st.just("quota"), st.just(R.QUOTA_EXHAUSTED)),
        st.tuples(st.just("top_up"), st.just(R.QUOTA_EXHAUSTED)),
    ),
    max_size=15,
)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_any_sequence_of_blocks_lifts_and_events_keeps_status_barring_and_history_right(
    sequence: list[tuple[str, BlockReason]],
) -> None:
    world = make_world()
    world.add_line()
    valid_plan(world)
    overdue_invoice(world)  # stays unpaid: top-ups never lift OVERDUE
    expected: set[BlockReason] = set()
    changes = 0
    for number, (step, reason) in enumerate(sequence):
        before = set(expected)
        if step == "block":
            world.service.block(AGENT, USER, reason)
            expected.add(reason)
        elif step == "unblock":
            world.service.unblock(ADMIN, USER, reason)
            expected.discard(reason)
        elif step == "overdue":
            world.service.on_invoice_overdue(USER, INV_OCT, f"evt-o-{number}")
            expected.add(reason)
        elif step == "quota":
            world.service.on_quota_exhausted(USER, "DATA", T0, f"evt-q-{number}")
            expected.add(reason)
        else:
            world.service.on_payment_succeeded(USER, "evt-t", top_up=True)
            expected.discard(reason)
        state = world.state()
        shown = world.network.profile_of(MSISDN)
        assert state.reasons == expected
        assert (state.status is SubscriberStatus.TEMP_BLOCKED) == bool(expected)
        assert shown == barring_for(state.status, state.reasons)
        assert shown.incoming_allowed
        assert (shown.data is DataAccess.THROTTLED) == (expected == {R.QUOTA_EXHAUSTED})
        assert state.network_in_sync
        history = world.store.entries()
        if expected != before:
            changes += 1
            assert history[-1].applied == expected - before
            assert history[-1].lifted == before - expected
        # One history entry and one event per real change; repeats add none.
        assert len(history) == len(world.events.events) == changes


def test_a_redelivered_overdue_event_does_not_undo_an_admins_goodwill_lift(world: World) -> None:
    world.add_line()
    overdue_invoice(world)
    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")
    world.service.unblock(ADMIN, USER, R.OVERDUE, note="promise to pay by Friday")

    world.service.on_invoice_overdue(USER, INV_OCT, "evt-1")  # the same event again

    assert world.state().status is SubscriberStatus.ACTIVE
    assert world.network.profile_of(MSISDN) == UNRESTRICTED


def test_a_repeated_plan_changed_does_not_lift_a_throttle_applied_after_it(world: World) -> None:
    world.add_line()
    valid_plan(world)
    world.service.on_plan_changed(USER, "evt-plan", T0)
    world.clock.advance(timedelta(hours=5))
    world.service.on_quota_exhausted(USER, "DATA", world.clock.now(), "evt-quota")

    world.service.on_plan_changed(USER, "evt-plan", T0)  # redelivered, from before the throttle

    assert world.state().reasons == {R.QUOTA_EXHAUSTED}


def test_an_extension_queued_after_the_period_does_not_lift_the_throttle(world: World) -> None:
    world.add_line()
    valid_plan(world)
    world.service.on_quota_exhausted(USER, "DATA", world.clock.now(), "evt-quota")
    world.clock.advance(timedelta(hours=1))

    world.service.on_plan_changed(USER, "evt-extend", world.clock.now(), new_quota_now=False)

    assert world.state().reasons == {R.QUOTA_EXHAUSTED}
