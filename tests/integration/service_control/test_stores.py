"""Service control's DynamoDB adapters on moto: one transaction per change, its
guards, the network sync mark, the inactivity index and the disconnection
record's transactions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shared import db
from shared.clock import IST
from shared.errors import ConcurrentModification
from shared.models import SubscriberStatus, SubscriberType
from shared.service_control import BlockReason, DisconnectReason, ServiceState
from shared.services.billing import InvoiceStatus
from shared.services.disconnection import (
    Disconnection,
    DisconnectionInProgress,
    DisconnectionNotFound,
    DisconnectionStatus,
)
from shared.services.service_control import (
    ActivePlanIs,
    Guard,
    GuardFailed,
    InvoiceStillUnpaid,
    OtpToConsume,
    SimSwap,
    StaleState,
    StatusChange,
)
from shared.stores.otp import OtpStatus
from shared.stores.service_control import (
    DynamoDisconnectionStore,
    DynamoFacts,
    DynamoServiceStore,
)
from tests.integration.conftest import T0, Aws, ConflictingTransactions
from tests.integration.service_control.conftest import (
    MakeLine,
    put_claim,
    put_invoice,
    put_otp,
    start_plan,
)

AGENT = frozenset({BlockReason.AGENT})


@pytest.fixture
def states(aws: Aws) -> DynamoServiceStore:
    return DynamoServiceStore()


@pytest.fixture
def discs(aws: Aws) -> DynamoDisconnectionStore:
    return DynamoDisconnectionStore()


def profile(aws: Aws, user_id: str) -> dict[str, Any]:
    [item] = [i for i in aws.items(db.user_pk(user_id)) if i["SK"]["S"] == "PROFILE"]
    return item


def status_keys(aws: Aws, user_id: str) -> list[str]:
    return [sk for sk in aws.sort_keys(db.user_pk(user_id)) if sk.startswith("STATUS#")]


def change_of(
    before: ServiceState, after: ServiceState, at: datetime = T0, actor: str = "agent:a1"
) -> StatusChange:
    return StatusChange(
        at=at,
        actor=actor,
        cause="test",
        applied=after.reasons - before.reasons,
        lifted=before.reasons - after.reasons,
        status_before=before.status,
        status_after=after.status,
    )


def apply(
    states: DynamoServiceStore,
    user_id: str,
    reasons: frozenset[BlockReason],
    *,
    at: datetime = T0,
    guards: tuple[Guard, ...] = (),
    **updates: Any,
) -> ServiceState:
    before = states.load(user_id)
    after = before.with_reasons(reasons).model_copy(update=updates)
    return states.save(before, after, change_of(before, after, at), guards)


# --- save ------------------------------------------------------------------------------


def test_save_stores_reasons_status_history_and_the_next_version(
    aws: Aws, line: MakeLine, states: DynamoServiceStore
) -> None:
    line("u1")
    before = states.load("u1")
    assert (before.status, before.reasons, before.barring_version) == (
        SubscriberStatus.ACTIVE,
        frozenset(),
        None,
    )

    stored = apply(states, "u1", frozenset({BlockReason.AGENT, BlockReason.FRAUD_SUSPECTED}))

    assert stored.version == before.version + 1
    assert states.load("u1") == stored
    assert stored.status is SubscriberStatus.TEMP_BLOCKED
    assert set(profile(aws, "u1")["block_reasons"]["SS"]) == {"AGENT", "FRAUD_SUSPECTED"}
    [entry] = states.history("u1", 10)
    assert entry.applied == {BlockReason.AGENT, BlockReason.FRAUD_SUSPECTED}
    assert (entry.status_before, entry.status_after) == (
        SubscriberStatus.ACTIVE,
        SubscriberStatus.TEMP_BLOCKED,
    )
    assert (entry.actor, entry.at) == ("agent:a1", T0)


def test_lifting_the_last_reason_removes_the_set_and_reactivates(
    aws: Aws, line: MakeLine, states: DynamoServiceStore
) -> None:
    line("u1")
    apply(states, "u1", AGENT)
    stored = apply(states, "u1", frozenset(), at=T0 + timedelta(minutes=1))

    assert states.load("u1") == stored
    assert stored.status is SubscriberStatus.ACTIVE
    assert stored.reasons == frozenset()
    assert "block_reasons" not in profile(aws, "u1")
    assert states.history("u1", 1)[0].lifted == AGENT


def test_a_stale_version_raises_and_writes_nothing(
    aws: Aws, line: MakeLine, states: DynamoServiceStore
) -> None:
    line("u1")
    stale = states.load("u1")
    current = apply(states, "u1", AGENT)
    after = stale.with_reasons({BlockReason.THEFT})

    with pytest.raises(StaleState):
        states.save(stale, after, change_of(stale, after))

    assert states.load("u1") == current
    assert len(states.history("u1", 10)) == 1


def test_a_load_of_an_unknown_subscriber_is_not_found(states: DynamoServiceStore) -> None:
    from shared.errors import UserNotFound  # noqa: PLC0415

    with pytest.raises(UserNotFound):
        states.load("nobody")


# --- guards ----------------------------------------------------------------------------


def _invoice_paid(store: db.DynamoSubscriptionStore) -> Guard:
    del store
    return InvoiceStillUnpaid("u1", put_invoice("u1", "2026-11-05", InvoiceStatus.PAID))


def _invoice_missing(store: db.DynamoSubscriptionStore) -> Guard:
    del store
    return InvoiceStillUnpaid("u1", "INV-u1-2026-10-05")


def _plan_replaced(store: db.DynamoSubscriptionStore) -> Guard:
    start_plan(store, "u1", "SUB-NEW")
    return ActivePlanIs("u1", "SUB-OLD")


def _plan_bought(store: db.DynamoSubscriptionStore) -> Guard:
    start_plan(store, "u1", "SUB-NEW")
    return ActivePlanIs("u1", None)


def _otp_not_verified(store: db.DynamoSubscriptionStore) -> Guard:
    del store
    put_otp("u1", "OTP1", status=OtpStatus.SENT, verified_until=None)
    return OtpToConsume("u1", "OTP1")


def _otp_expired(store: db.DynamoSubscriptionStore) -> Guard:
    del store
    put_otp("u1", "OTP1", verified_until=T0 - timedelta(seconds=1))
    return OtpToConsume("u1", "OTP1")


def _otp_used(store: db.DynamoSubscriptionStore) -> Guard:
    del store
    put_otp("u1", "OTP1", status=OtpStatus.USED)
    return OtpToConsume("u1", "OTP1")


def _sim_claimed_by_another(store: db.DynamoSubscriptionStore) -> Guard:
    del store
    put_claim("8991NEW", "someone-else", "PENDING_REPLACEMENT")
    return SimSwap("u1", "8991NEW", None)


def _sim_already_in_use(store: db.DynamoSubscriptionStore) -> Guard:
    del store
    put_claim("8991NEW", "u1", "IN_USE")
    return SimSwap("u1", "8991NEW", None)


@pytest.mark.parametrize(
    "failing",
    [
        _invoice_paid,
        _invoice_missing,
        _plan_replaced,
        _plan_bought,
        _otp_not_verified,
        _otp_expired,
        _otp_used,
        _sim_claimed_by_another,
        _sim_already_in_use,
    ],
)
def test_a_guard_that_no_longer_holds_fails_the_change_and_writes_nothing(
    aws: Aws,
    line: MakeLine,
    states: DynamoServiceStore,
    store: db.DynamoSubscriptionStore,
    failing: Callable[[db.DynamoSubscriptionStore], Guard],
) -> None:
    line("u1")
    guard = failing(store)
    before = states.load("u1")
    items_before = aws.items(db.user_pk("u1"))

    with pytest.raises(GuardFailed):
        apply(states, "u1", frozenset({BlockReason.OVERDUE}), guards=(guard,))

    assert states.load("u1") == before
    assert aws.items(db.user_pk("u1")) == items_before


def test_guards_that_hold_commit_with_the_change(
    aws: Aws, line: MakeLine, states: DynamoServiceStore, store: db.DynamoSubscriptionStore
) -> None:
    old_iccid = line("u1").iccid
    invoice_id = put_invoice("u1", "2026-11-05", InvoiceStatus.OVERDUE)
    plan = start_plan(store, "u1", "SUB-1")
    put_otp("u1", "OTP1")
    put_claim("8991NEW", "u1", "PENDING_REPLACEMENT")
    guards: tuple[Guard, ...] = (
        InvoiceStillUnpaid("u1", invoice_id),
        ActivePlanIs("u1", plan.subscription_id),
        OtpToConsume("u1", "OTP1"),
        SimSwap("u1", "8991NEW", old_iccid),
    )

    stored = apply(states, "u1", frozenset({BlockReason.OVERDUE}), guards=guards, iccid="8991NEW")

    assert states.load("u1") == stored
    assert stored.iccid == "8991NEW"
    [otp] = [i for i in aws.items(db.user_pk("u1")) if i["SK"]["S"] == "OTP#OTP1"]
    assert otp["status"]["S"] == OtpStatus.USED
    assert aws.items("ICCID#8991NEW")[0]["claim_status"]["S"] == "IN_USE"
    assert aws.items(f"ICCID#{old_iccid}")[0]["claim_status"]["S"] == "RETIRED"


def test_a_repeated_request_after_its_twin_committed_is_stale_not_a_guard_failure(
    line: MakeLine, states: DynamoServiceStore
) -> None:
    """Both the version and the (now used) OTP fail: the caller must re-read and
    find the block already applied, not report an error."""
    line("u1")
    put_otp("u1", "OTP1")
    before = states.load("u1")
    after = before.with_reasons({BlockReason.LOST_SIM})
    guards = (OtpToConsume("u1", "OTP1"),)
    states.save(before, after, change_of(before, after), guards)

    with pytest.raises(StaleState):
        states.save(before, after, change_of(before, after), guards)

    assert len(states.history("u1", 10)) == 1


# --- network sync mark, history ------------------------------------------------------


def test_mark_synced_records_the_version_without_moving_it(
    line: MakeLine, states: DynamoServiceStore
) -> None:
    line("u1")
    stored = apply(states, "u1", AGENT)
    assert not stored.network_in_sync

    assert states.mark_synced("u1", stored.version)

    synced = states.load("u1")
    assert synced.version == stored.version
    assert synced.barring_version == stored.version
    assert synced.network_in_sync


def test_mark_synced_fails_once_the_version_moved(
    line: MakeLine, states: DynamoServiceStore
) -> None:
    line("u1")
    first = apply(states, "u1", AGENT)
    apply(states, "u1", frozenset(), at=T0 + timedelta(seconds=1))

    assert not states.mark_synced("u1", first.version)

    # Never confirmed: 0 (not absent, which would read as "never barred").
    assert states.load("u1").barring_version == 0
    assert not states.load("u1").network_in_sync


def test_history_is_newest_first_and_limited(line: MakeLine, states: DynamoServiceStore) -> None:
    line("u1")
    apply(states, "u1", AGENT, at=T0)
    apply(states, "u1", AGENT | {BlockReason.THEFT}, at=T0 + timedelta(hours=1))
    apply(states, "u1", frozenset({BlockReason.THEFT}), at=T0 + timedelta(hours=1))  # same second

    history = states.history("u1", 10)
    assert [(e.applied, e.lifted) for e in history] == [
        (frozenset(), AGENT),
        (frozenset({BlockReason.THEFT}), frozenset()),
        (AGENT, frozenset()),
    ]
    assert [e.lifted for e in states.history("u1", 1)] == [AGENT]


# --- the inactivity index ----------------------------------------------------------------


def test_the_dormant_index_lists_the_line_while_its_clock_runs(
    aws: Aws, line: MakeLine, states: DynamoServiceStore, discs: DynamoDisconnectionStore
) -> None:
    line("u1")
    since = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)  # already the 25th in IST
    shard = db.hash_shard("u1")
    ist_day = since.astimezone(IST).date()
    assert ist_day == date(2026, 11, 25)

    apply(states, "u1", frozenset({BlockReason.PLAN_EXPIRED}), dormant_since=since)
    assert list(discs.dormant_since_on(ist_day, shard)) == ["u1"]
    assert list(discs.dormant_since_on(date(2026, 11, 24), shard)) == []
    assert states.load("u1").dormant_since == since

    apply(states, "u1", frozenset(), at=T0 + timedelta(minutes=1), dormant_since=None)
    assert list(discs.dormant_since_on(ist_day, shard)) == []
    assert "GSI1PK" not in profile(aws, "u1")


# --- disconnection -------------------------------------------------------------------


def record_for(state: ServiceState, disconnection_id: str = "DISC-1") -> Disconnection:
    return Disconnection(
        disconnection_id=disconnection_id,
        user_id=state.user_id,
        msisdn=state.msisdn,
        subscriber_type=SubscriberType.POSTPAID,
        reason=DisconnectReason.USER_REQUEST,
        requested_by=f"subscriber:{state.user_id}",
        requested_at=T0,
    ).step(T0, "Request", "ACCEPTED")


def test_open_stores_the_record_and_marks_the_profile_once(
    line: MakeLine, states: DynamoServiceStore, discs: DynamoDisconnectionStore
) -> None:
    line("u1")
    state = states.load("u1")
    record = record_for(state)

    discs.open(record, state)

    opened = states.load("u1")
    assert opened.disconnection_id == "DISC-1"
    assert opened.version == state.version  # nothing for the network to show
    assert discs.get("DISC-1") == record
    with pytest.raises(DisconnectionInProgress):
        discs.open(record_for(opened, "DISC-2"), opened)
    with pytest.raises(DisconnectionNotFound):
        discs.get("DISC-2")


def test_open_on_a_moved_version_is_stale(
    line: MakeLine, states: DynamoServiceStore, discs: DynamoDisconnectionStore
) -> None:
    line("u1")
    state = states.load("u1")
    apply(states, "u1", AGENT)

    with pytest.raises(StaleState):
        discs.open(record_for(state), state)

    assert states.load("u1").disconnection_id is None
    with pytest.raises(DisconnectionNotFound):
        discs.get("DISC-1")


def test_put_stores_progress(line: MakeLine, discs: DynamoDisconnectionStore) -> None:
    line("u1")
    record = record_for(DynamoServiceStore().load("u1"))
    discs.open(record, DynamoServiceStore().load("u1"))
    billed = record.step(
        T0, "FinalBill", "ISSUED", status=DisconnectionStatus.FINAL_BILLED, final_invoice_id="X"
    )

    discs.put(billed)

    assert discs.get("DISC-1") == billed


def test_hold_parks_the_line_pending_disconnect_keeping_its_reasons(
    line: MakeLine, states: DynamoServiceStore, discs: DynamoDisconnectionStore
) -> None:
    line("u1")
    apply(states, "u1", AGENT)
    state = states.load("u1")
    record = record_for(state)
    discs.open(record, state)
    state = states.load("u1")
    change = StatusChange(
        at=T0,
        actor="system:Disconnection",
        cause="dues",
        status_before=state.status,
        status_after=SubscriberStatus.PENDING_DISCONNECT,
    )
    waiting = record.step(T0, "AwaitDues", "PENDING", status=DisconnectionStatus.AWAITING_DUES)

    discs.hold(waiting, state, change)

    held = states.load("u1")
    assert (held.status, held.reasons, held.version) == (
        SubscriberStatus.PENDING_DISCONNECT,
        AGENT,
        state.version + 1,
    )
    assert discs.get("DISC-1").status is DisconnectionStatus.AWAITING_DUES
    assert states.history("u1", 1)[0].status_after is SubscriberStatus.PENDING_DISCONNECT
    with pytest.raises(StaleState):
        discs.hold(waiting, state, change)


def _finalize(
    states: DynamoServiceStore, discs: DynamoDisconnectionStore, user_id: str
) -> tuple[Disconnection, ServiceState, StatusChange]:
    state = states.load(user_id)
    record = record_for(state)
    discs.open(record, state)
    state = states.load(user_id)
    released = T0 + timedelta(days=90)
    done = record.step(
        T0, "Complete", "DONE", status=DisconnectionStatus.DISCONNECTED, msisdn_released_at=released
    )
    change = StatusChange(
        at=T0,
        actor="system:Disconnection",
        cause="DISC-1: USER_REQUEST",
        lifted=state.reasons,
        status_before=state.status,
        status_after=SubscriberStatus.PERMANENT_DISCONNECTED,
    )
    discs.finalize(done, state, change)
    return done, state, change


def test_finalize_disconnects_ends_the_plan_and_cools_the_number_off(
    aws: Aws,
    line: MakeLine,
    states: DynamoServiceStore,
    discs: DynamoDisconnectionStore,
    store: db.DynamoSubscriptionStore,
) -> None:
    subscriber = line("u1")
    plan = start_plan(store, "u1", "SUB-1", at=T0 - timedelta(days=20))
    apply(states, "u1", frozenset({BlockReason.OVERDUE}), dormant_since=T0 - timedelta(days=2))
    assert "GSI2PK" in profile(aws, "u1")

    done, _, _ = _finalize(states, discs, "u1")

    final = states.load("u1")
    assert final.status is SubscriberStatus.PERMANENT_DISCONNECTED
    assert final.reasons == frozenset()
    assert final.dormant_since is None
    raw = profile(aws, "u1")
    assert {"GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK", "block_reasons"}.isdisjoint(raw)
    assert store.get_active("u1") is None
    [period] = store.history("u1")
    assert (period.subscription_id, period.ended_at) == (plan.subscription_id, T0)
    [number] = aws.items(f"MSISDN#{subscriber.msisdn}")
    assert number["expires_at"]["N"] == str(int((T0 + timedelta(days=90)).timestamp()))
    assert number["status"]["S"] == "COOLING_OFF"
    assert number["user_id"]["S"] == "u1"  # still theirs while it cools off
    assert aws.items(f"ICCID#{subscriber.iccid}")[0]["claim_status"]["S"] == "RETIRED"
    assert discs.get("DISC-1") == done
    assert states.history("u1", 1)[0].lifted == {BlockReason.OVERDUE}


def test_finalize_twice_is_harmless(
    line: MakeLine, states: DynamoServiceStore, discs: DynamoDisconnectionStore
) -> None:
    line("u1")
    done, stale_state, change = _finalize(states, discs, "u1")
    final = states.load("u1")

    discs.finalize(done, stale_state, change)  # a retry with the state it read before
    discs.finalize(done, final, change)  # a retry that re-read

    assert states.load("u1") == final
    assert len(states.history("u1", 10)) == 1


def test_finalize_without_a_plan_frees_nothing_more(
    line: MakeLine,
    states: DynamoServiceStore,
    discs: DynamoDisconnectionStore,
    store: db.DynamoSubscriptionStore,
) -> None:
    line("u1", SubscriberType.PREPAID)

    _finalize(states, discs, "u1")

    assert states.load("u1").status is SubscriberStatus.PERMANENT_DISCONNECTED
    assert store.get_active("u1") is None


# --- facts ---------------------------------------------------------------------------


def test_facts_read_unpaid_invoices_and_what_is_outstanding(
    line: MakeLine, store: db.DynamoSubscriptionStore
) -> None:
    line("u1")
    line("u2")
    overdue = put_invoice(
        "u1",
        "2026-10-05",
        InvoiceStatus.OVERDUE,
        total_paise=50_000,
        credited_paise=10_000,
        overdue_notified=True,
    )
    issued = put_invoice("u1", "2026-11-05", total_paise=30_000)
    put_invoice("u1", "2026-09-05", InvoiceStatus.PAID)
    put_invoice("u1", "2026-08-05", InvoiceStatus.ISSUED, total_paise=100, paid_paise=100)
    put_invoice("u2", "2026-11-05")
    facts = DynamoFacts()

    unpaid = {fact.invoice_id: fact for fact in facts.unpaid_invoices("u1")}

    assert set(unpaid) == {overdue, issued, "INV-u1-2026-08-05"}
    # A credit note is a CREDIT line on the next invoice: this one still owes its total.
    assert unpaid[overdue].outstanding_paise == 50_000
    assert unpaid[overdue].overdue_notified
    assert unpaid[overdue].bill_date == date(2026, 10, 5)
    assert unpaid[issued].outstanding_paise == 30_000
    assert not unpaid[issued].overdue_notified
    assert unpaid["INV-u1-2026-08-05"].outstanding_paise == 0  # paid, not yet marked PAID

    paid = facts.invoice("u1", "INV-u1-2026-09-05")
    assert paid is not None
    assert not paid.unpaid
    assert facts.invoice("u1", overdue) == unpaid[overdue]
    assert facts.invoice("u1", "INV-u1-2025-01-05") is None
    assert facts.invoice("u1", "INV-u2-2026-11-05") is None  # someone else's
    assert facts.invoice("u1", "not-an-invoice") is None

    assert facts.active_plan("u1") is None
    plan = start_plan(store, "u1", "SUB-1")
    assert facts.active_plan("u1") == plan


def test_a_moved_version_wins_over_a_failed_condition_check(
    line: MakeLine, states: DynamoServiceStore, store: db.DynamoSubscriptionStore
) -> None:
    """Condition checks go first in the transaction; the profile still decides."""
    line("u1")
    stale = states.load("u1")
    apply(states, "u1", AGENT)
    start_plan(store, "u1", "SUB-NEW")
    after = stale.with_reasons({BlockReason.PLAN_EXPIRED})

    with pytest.raises(StaleState):
        states.save(stale, after, change_of(stale, after), (ActivePlanIs("u1", None),))


# --- transaction conflicts ------------------------------------------------------------


def test_a_change_cancelled_by_a_concurrent_transaction_is_sent_again_and_commits(
    line: MakeLine,
    states: DynamoServiceStore,
    conflicts: Callable[[int], ConflictingTransactions],
) -> None:
    line("u1")
    before = states.load("u1")
    hook = conflicts(db.CONFLICT_ATTEMPTS - 1)

    stored = apply(states, "u1", AGENT)

    assert hook.cancelled == db.CONFLICT_ATTEMPTS - 1
    assert stored.version == before.version + 1
    assert states.load("u1") == stored
    assert len(states.history("u1", 10)) == 1


def test_a_change_that_keeps_meeting_conflicts_is_a_concurrent_modification(
    line: MakeLine,
    states: DynamoServiceStore,
    conflicts: Callable[[int], ConflictingTransactions],
) -> None:
    line("u1")
    before = states.load("u1")
    hook = conflicts(db.CONFLICT_ATTEMPTS)

    with pytest.raises(ConcurrentModification):
        apply(states, "u1", AGENT)

    assert hook.cancelled == db.CONFLICT_ATTEMPTS
    assert states.load("u1") == before
    assert states.history("u1", 10) == []


def test_a_failed_condition_is_never_sent_again(
    line: MakeLine,
    states: DynamoServiceStore,
    conflicts: Callable[[int], ConflictingTransactions],
) -> None:
    """A stale version answers at once: sending it again could only fail again."""
    line("u1")
    stale = states.load("u1")
    apply(states, "u1", AGENT)
    hook = conflicts(0)
    after = stale.with_reasons({BlockReason.THEFT})

    with pytest.raises(StaleState):
        states.save(stale, after, change_of(stale, after))

    assert hook.sent == 1
