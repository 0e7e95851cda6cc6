"""The pure service-control rules: status and barring per reason set, who may
apply or lift which reason, and who may start which disconnection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.auth import Principal
from shared.errors import DomainError, Forbidden, InvalidRequest
from shared.models import SubscriberStatus
from shared.network import UNRESTRICTED, BarringProfile, DataAccess
from shared.service_control import (
    BlockReason,
    DisconnectReason,
    DuesOutstanding,
    NotControllable,
    ReasonNotManual,
    ServiceState,
    barring_for,
    check_may_apply,
    check_may_disconnect,
    check_may_lift,
    ensure_controllable,
)
from tests.unit.service_control.fakes import (
    ADMIN,
    AGENT,
    MSISDN,
    OTHER_SUBSCRIBER,
    OWNER,
    SERVICE,
    USER,
)

R = BlockReason
BARRED = BarringProfile(outgoing_barred=True, data=DataAccess.BARRED)
THROTTLED = BarringProfile(data=DataAccess.THROTTLED)


def state(
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    reasons: frozenset[BlockReason] = frozenset(),
    *,
    version: int = 4,
    barring_version: int | None = None,
) -> ServiceState:
    return ServiceState(
        user_id=USER,
        msisdn=MSISDN,
        status=status,
        reasons=reasons,
        version=version,
        barring_version=barring_version,
    )


# --- status and barring ------------------------------------------------------------


@pytest.mark.parametrize("reason", list(BlockReason))
def test_any_single_reason_blocks_an_active_line_and_lifting_it_reactivates(
    reason: BlockReason,
) -> None:
    blocked = state().with_reasons({reason})
    assert blocked.status is SubscriberStatus.TEMP_BLOCKED
    assert blocked.reasons == {reason}
    assert blocked.with_reasons(set()).status is SubscriberStatus.ACTIVE


def test_the_line_stays_blocked_while_any_reason_remains() -> None:
    blocked = state().with_reasons({R.OVERDUE, R.THEFT})
    still = blocked.with_reasons(blocked.reasons - {R.OVERDUE})
    assert still.status is SubscriberStatus.TEMP_BLOCKED
    assert still.with_reasons(set()).status is SubscriberStatus.ACTIVE


@pytest.mark.parametrize(
    "status", [SubscriberStatus.PENDING_DISCONNECT, SubscriberStatus.PERMANENT_DISCONNECTED]
)
def test_reasons_never_change_a_status_the_disconnection_workflow_set(
    status: SubscriberStatus,
) -> None:
    assert state(status).with_reasons({R.AGENT}).status is status
    assert state(status, frozenset({R.AGENT})).with_reasons(set()).status is status


@pytest.mark.parametrize("reason", [r for r in BlockReason if r is not BlockReason.QUOTA_EXHAUSTED])
def test_every_reason_but_quota_bars_outgoing_and_data_and_keeps_incoming(
    reason: BlockReason,
) -> None:
    profile = barring_for(SubscriberStatus.TEMP_BLOCKED, {reason})
    assert profile == BARRED
    assert profile.incoming_allowed


def test_quota_exhausted_only_throttles_data() -> None:
    profile = barring_for(SubscriberStatus.TEMP_BLOCKED, {R.QUOTA_EXHAUSTED})
    assert profile == THROTTLED
    assert not profile.outgoing_barred
    assert profile.incoming_allowed


def test_quota_exhausted_with_another_reason_is_fully_barred() -> None:
    assert barring_for(SubscriberStatus.TEMP_BLOCKED, {R.QUOTA_EXHAUSTED, R.OVERDUE}) == BARRED


def test_an_active_line_is_unrestricted_and_a_pending_disconnect_line_barred() -> None:
    assert barring_for(SubscriberStatus.ACTIVE, set()) == UNRESTRICTED
    pending = barring_for(SubscriberStatus.PENDING_DISCONNECT, set())
    assert pending == BARRED
    assert pending.incoming_allowed
    # A throttle alone does not loosen a line waiting for its disconnection.
    assert barring_for(SubscriberStatus.PENDING_DISCONNECT, {R.QUOTA_EXHAUSTED}) == BARRED


operations = st.lists(st.tuples(st.booleans(), st.sampled_from(list(BlockReason))), max_size=30)


@settings(max_examples=300)
@given(operations)
def test_any_sequence_of_applies_and_lifts_gives_the_status_and_barring_of_its_reasons(
    ops: list[tuple[bool, BlockReason]],
) -> None:
    current = state()
    expected: set[BlockReason] = set()
    for apply, reason in ops:
        if apply:
            expected.add(reason)
            current = current.with_reasons(current.reasons | {reason})
        else:
            expected.discard(reason)
            current = current.with_reasons(current.reasons - {reason})
        profile = barring_for(current.status, current.reasons)
        assert current.reasons == expected
        assert (current.status is SubscriberStatus.TEMP_BLOCKED) == bool(expected)
        assert (current.status is SubscriberStatus.ACTIVE) == (not expected)
        assert profile.incoming_allowed
        assert (profile.data is DataAccess.THROTTLED) == (expected == {R.QUOTA_EXHAUSTED})
        assert profile.outgoing_barred == bool(expected - {R.QUOTA_EXHAUSTED})
        assert profile.unrestricted == (not expected)


@settings(max_examples=100)
@given(operations)
def test_under_pending_disconnect_reasons_come_and_go_but_the_line_stays_barred(
    ops: list[tuple[bool, BlockReason]],
) -> None:
    current = state(SubscriberStatus.PENDING_DISCONNECT)
    for apply, reason in ops:
        reasons = current.reasons | {reason} if apply else current.reasons - {reason}
        current = current.with_reasons(reasons)
        assert current.status is SubscriberStatus.PENDING_DISCONNECT
        assert barring_for(current.status, current.reasons) == BARRED


def test_network_in_sync_follows_the_confirmed_barring_version() -> None:
    # Never barred: in sync only while the line is as provisioned.
    assert state().network_in_sync
    assert not state(SubscriberStatus.TEMP_BLOCKED, frozenset({R.AGENT})).network_in_sync
    blocked = state(SubscriberStatus.TEMP_BLOCKED, frozenset({R.AGENT}), barring_version=4)
    assert blocked.network_in_sync
    assert not blocked.model_copy(update={"version": 5}).network_in_sync


@pytest.mark.parametrize(
    ("status", "controllable"),
    [
        (SubscriberStatus.ACTIVE, True),
        (SubscriberStatus.TEMP_BLOCKED, True),
        (SubscriberStatus.PENDING_DISCONNECT, True),
        (SubscriberStatus.PENDING, False),
        (SubscriberStatus.KYC_REJECTED, False),
        (SubscriberStatus.PERMANENT_DISCONNECTED, False),
    ],
)
def test_only_live_lines_are_controllable(status: SubscriberStatus, controllable: bool) -> None:
    if controllable:
        ensure_controllable(state(status))
    else:
        with pytest.raises(NotControllable) as refused:
            ensure_controllable(state(status))
        assert refused.value.status == 409


# --- who may apply and lift what -------------------------------------------------------

VERIFIED_OWNER = "owner with a verified OTP"
CALLERS: dict[str, tuple[Principal, bool]] = {
    "admin": (ADMIN, False),
    "agent": (AGENT, False),
    VERIFIED_OWNER: (OWNER, True),
    "owner": (OWNER, False),
    "service": (SERVICE, False),
}
OK = None

# reason -> caller -> the error (None: allowed). Written out, not derived.
MAY_APPLY: dict[BlockReason, dict[str, type[DomainError] | None]] = {
    R.OVERDUE: dict.fromkeys(CALLERS, ReasonNotManual),
    R.PLAN_EXPIRED: dict.fromkeys(CALLERS, ReasonNotManual),
    R.QUOTA_EXHAUSTED: dict.fromkeys(CALLERS, ReasonNotManual),
    R.LOST_SIM: {"admin": OK, "agent": OK, VERIFIED_OWNER: OK, "owner": Forbidden,
                 "service": Forbidden},
    R.THEFT: {"admin": OK, "agent": OK, VERIFIED_OWNER: OK, "owner": Forbidden,
              "service": Forbidden},
    R.FRAUD_SUSPECTED: {"admin": OK, "agent": OK, VERIFIED_OWNER: Forbidden,
                        "owner": Forbidden, "service": Forbidden},
    R.AGENT: {"admin": OK, "agent": OK, VERIFIED_OWNER: Forbidden, "owner": Forbidden,
              "service": Forbidden},
}  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "caller"), [(reason, caller) for reason in BlockReason for caller in CALLERS]
)
def test_who_may_apply_each_reason(reason: BlockReason, caller: str) -> None:
    principal, verified = CALLERS[caller]
    expected = MAY_APPLY[reason][caller]
    if expected is None:
        check_may_apply(principal, reason, owner_verified=verified)
    else:
        with pytest.raises(expected):
            check_may_apply(principal, reason, owner_verified=verified)


def test_fact_backed_reasons_are_refused_as_input_errors_not_permissions() -> None:
    with pytest.raises(ReasonNotManual) as refused:
        check_may_apply(ADMIN, R.OVERDUE, owner_verified=False)
    assert refused.value.status == 422
    assert refused.value.code == "REASON_APPLIED_BY_SYSTEM"


LIFTERS: dict[str, Principal] = {"admin": ADMIN, "agent": AGENT, "owner": OWNER, "service": SERVICE}


def agent_may_lift(reason: BlockReason, fact_holds: bool) -> type[DomainError] | None:
    if reason is R.FRAUD_SUSPECTED:
        return Forbidden  # the fraud team's call
    if reason in {R.OVERDUE, R.PLAN_EXPIRED, R.QUOTA_EXHAUSTED} and fact_holds:
        return DuesOutstanding
    return OK


# (reason, fact still holds) -> caller -> the error (None: allowed).
MAY_LIFT: dict[tuple[BlockReason, bool], dict[str, type[DomainError] | None]] = {
    (reason, holds): {
        "admin": OK,
        "agent": agent_may_lift(reason, holds),
        "owner": Forbidden,
        "service": Forbidden,
    }
    for reason in BlockReason
    for holds in (False, True)
}


@pytest.mark.parametrize(
    ("reason", "fact_holds", "caller"),
    [(reason, holds, caller) for (reason, holds) in MAY_LIFT for caller in LIFTERS],
)
def test_who_may_lift_each_reason(reason: BlockReason, fact_holds: bool, caller: str) -> None:
    expected = MAY_LIFT[(reason, fact_holds)][caller]
    if expected is None:
        check_may_lift(LIFTERS[caller], reason, fact_holds=fact_holds)
    else:
        with pytest.raises(expected):
            check_may_lift(LIFTERS[caller], reason, fact_holds=fact_holds)


def test_an_agent_lifting_overdue_while_dues_remain_gets_a_conflict() -> None:
    with pytest.raises(DuesOutstanding) as refused:
        check_may_lift(AGENT, R.OVERDUE, fact_holds=True)
    assert refused.value.status == 409
    assert refused.value.code == "DUES_OUTSTANDING"


# --- who may start a disconnection ------------------------------------------------------

DISCONNECTERS: dict[str, Principal] = {
    "owner": OWNER,
    "other subscriber": OTHER_SUBSCRIBER,
    "agent": AGENT,
    "admin": ADMIN,
    "service": SERVICE,
}
D = DisconnectReason
ALLOWED_TO_DISCONNECT: dict[DisconnectReason, set[str]] = {
    D.USER_REQUEST: {"owner", "agent", "admin"},
    D.FRAUD: {"admin"},
    D.PORT_OUT: {"agent", "admin"},
    D.DECEASED: {"agent", "admin"},
    D.INACTIVITY: {"service"},
}
NEEDS_PROOF = {D.FRAUD, D.PORT_OUT, D.DECEASED}


@pytest.mark.parametrize(
    ("reason", "caller"),
    [(reason, caller) for reason in DisconnectReason for caller in DISCONNECTERS],
)
def test_who_may_request_each_disconnection(reason: DisconnectReason, caller: str) -> None:
    principal = DISCONNECTERS[caller]
    if caller in ALLOWED_TO_DISCONNECT[reason]:
        check_may_disconnect(principal, USER, reason, "CASE-2026-0042")
    else:
        with pytest.raises(Forbidden):
            check_may_disconnect(principal, USER, reason, "CASE-2026-0042")


@pytest.mark.parametrize("reason", sorted(NEEDS_PROOF))
@pytest.mark.parametrize("proof", [None, "", "   "])
def test_fraud_port_out_and_deceased_need_a_proof_reference(
    reason: DisconnectReason, proof: str | None
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_may_disconnect(ADMIN, USER, reason, proof)
    assert refused.value.status == 422


@pytest.mark.parametrize("reason", [D.USER_REQUEST, D.INACTIVITY])
def test_user_request_and_inactivity_need_no_proof(reason: DisconnectReason) -> None:
    caller = OWNER if reason is D.USER_REQUEST else SERVICE
    check_may_disconnect(caller, USER, reason, None)


def test_a_matching_subject_without_the_subscriber_role_is_not_the_owner() -> None:
    roleless = Principal(USER, frozenset())
    with pytest.raises(Forbidden):
        check_may_disconnect(roleless, USER, D.USER_REQUEST, None)
