"""What an audit record says about an event (shared/audit.py), and which API calls
become staff actions on the bus (shared/staff_actions.py).

Events are made by the real publishers (the plan service, service control's
status events, usage's fraud flag, the staff action of an API call) and
delivered as EventBridge envelopes, the way the audit queue receives them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.audit import ActorRole, AuditRecord, record_of_event, role_of_actor
from shared.auth import Principal
from shared.catalog import seed_plans
from shared.clock import FixedClock
from shared.events import DomainEvent, InMemoryEventPublisher
from shared.models import Subscriber, SubscriberStatus, SubscriberType
from shared.service_control import BlockReason, ServiceState
from shared.services.service_control import StatusChange, status_events
from shared.services.subscriptions import SubscriptionService
from shared.services.usage import _flag_event
from shared.staff_actions import staff_action
from tests.apigw import Caller, api_event
from tests.fakes import InMemoryPlanCatalog, InMemorySubscriptionStore
from tests.unit.audit.envelopes import delivered, delivered_one

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

# Personal data as it reaches code: phone numbers, Aadhaar and PAN numbers, an
# email, a UPI id, a card number, and a note an agent typed.
MSISDN = "9876543210"
PERSONAL = {
    "msisdn": MSISDN,
    "phone": "+919876543210",
    "alternate_phone": "+91-98765-43210",
    "email": "asha.rao@example.com",
    "aadhaar": "2345 6789 0123",
    "aadhaar_grouped": "2345-6789-0123",
    "pan": "ABCDE1234F",
    "vpa": "name@okbank",
    "card": "4111-1111-1111-1111",
    "note": "called from 9876543210, wants the line back today",
}


def record_json(record: AuditRecord) -> str:
    return record.model_dump_json()


# --- real events -----------------------------------------------------------------------


def test_a_plan_change_records_the_plan_before_and_the_amounts_after() -> None:
    store = InMemorySubscriptionStore()
    events = InMemoryEventPublisher()
    service = SubscriptionService(InMemoryPlanCatalog(seed_plans()), store, events, FixedClock(T0))
    store.put_subscriber(
        Subscriber(
            user_id="u1",
            msisdn=MSISDN,
            subscriber_type=SubscriberType.PREPAID,
            state="KA",
            status=SubscriberStatus.ACTIVE,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )
    store.credit_wallet("u1", 100_000)
    service.subscribe("u1", "PRE_SMART_299")
    changed = service.change_plan("u1", "PRE_VALUE_719")
    upgrade = delivered(*events.of_type("PlanChanged"))[-1]

    record = record_of_event(upgrade)

    assert record.action == "PlanChanged"
    assert (record.source, record.actor, record.role) == ("plans", "system:plans", "system")
    assert record.user_id == "u1"
    assert record.audit_id == upgrade["detail"]["event_id"]
    assert record.occurred_at == T0
    assert record.subject == {
        "plan_id": "PRE_VALUE_719",
        "subscription_id": changed.subscription_id,
    }
    assert record.before == {"plan_id": "PRE_SMART_299"}
    assert record.after["change_type"] == "UPGRADE"
    assert record.after["net_amount_paise"] == changed.net_amount_paise
    assert record.after["wallet_debit_paise"] == changed.wallet_debit_paise
    assert MSISDN not in record_json(record)


def test_an_agents_block_names_the_agent_and_the_status_it_left() -> None:
    state = ServiceState(
        user_id="u1",
        msisdn=MSISDN,
        status=SubscriberStatus.TEMP_BLOCKED,
        reasons=frozenset({BlockReason.AGENT, BlockReason.OVERDUE}),
    )
    change = StatusChange(
        at=T0,
        actor="agent:a1",
        cause="customer 9876543210 asked for a block",
        applied=frozenset({BlockReason.AGENT}),
        status_before=SubscriberStatus.ACTIVE,
        status_after=SubscriberStatus.TEMP_BLOCKED,
    )
    (blocked,) = delivered(*status_events(state, change))

    record = record_of_event(blocked)

    assert (record.action, record.source) == ("ServiceBlocked", "service_control")
    assert (record.actor, record.role) == ("agent:a1", ActorRole.AGENT)
    assert record.user_id == "u1"
    assert record.after == {
        "status": "TEMP_BLOCKED",
        "block_reasons": ["AGENT", "OVERDUE"],
        "applied": ["AGENT"],
    }
    assert MSISDN not in record_json(record)


def test_a_fraud_flag_keeps_the_reason_and_count_but_not_the_phone_number() -> None:
    flag = delivered_one(_flag_event(MSISDN, "u1", 7, "2026-11-25T09:00:00+00:00", T0))

    record = record_of_event(flag)

    assert record.action == "SubscriberFlagged"
    assert (record.actor, record.role) == ("system:usage", ActorRole.SYSTEM)
    assert record.after == {"reason": "REPEATED_CDR_ANOMALIES", "anomaly_count": 7}
    assert "msisdn" in record.omitted
    assert MSISDN not in record_json(record)


def test_an_event_without_its_own_id_and_time_takes_the_envelopes() -> None:
    envelope = delivered_one(
        DomainEvent(detail_type="PlanExpired", source="billing", occurred_at=T0, detail={})
    )
    del envelope["detail"]["event_id"], envelope["detail"]["occurred_at"]

    record = record_of_event(envelope)

    assert record.audit_id == envelope["id"]
    assert record.occurred_at == T0


def test_a_redelivered_event_is_the_same_record() -> None:
    event = DomainEvent(
        detail_type="InvoiceOverdue",
        source="billing",
        occurred_at=T0,
        detail={"user_id": "u1", "invoice_id": "INV-u1-2026-11-01", "total_paise": 70_682},
    )
    first, again = delivered(event, event)  # EventBridge gives each delivery its own id

    assert first["id"] != again["id"]
    assert record_of_event(first) == record_of_event(again)


@pytest.mark.parametrize(
    ("actor", "role"),
    [
        ("agent:a1", ActorRole.AGENT),
        ("admin:root", ActorRole.ADMIN),
        ("subscriber:u1", ActorRole.SUBSCRIBER),
        ("system:billing", ActorRole.SYSTEM),
        ("service:activation-workflow", ActorRole.SYSTEM),
        ("unknown:x", ActorRole.SYSTEM),
    ],
)
def test_the_role_is_read_from_the_actor(actor: str, role: ActorRole) -> None:
    assert role_of_actor(actor) is role


# --- personal data never enters a record -------------------------------------------------


def _event_with(detail: dict[str, Any]) -> dict[str, Any]:
    return delivered_one(
        DomainEvent(
            detail_type="ProfileUpdated",
            source="activation",
            occurred_at=T0,
            detail={"user_id": "u1", "activation_id": "act-1", **detail},
        )
    )


def test_personal_data_under_its_own_name_is_left_out_and_named() -> None:
    record = record_of_event(_event_with(PERSONAL))

    text = record_json(record)
    for name, value in PERSONAL.items():
        assert value not in text, name
        assert name in record.omitted
    assert record.subject == {"activation_id": "act-1"}


# Names whose values a record keeps when they are codes, ids or amounts.
KEPT_NAMES = ["status", "reason", "block_reasons", "payment_id", "previous_status", "change_type"]


@pytest.mark.parametrize("name", KEPT_NAMES)
@pytest.mark.parametrize("value", list(PERSONAL.values()), ids=list(PERSONAL))
def test_personal_data_under_a_kept_name_is_left_out_too(name: str, value: str) -> None:
    detail = {name: [value] if name == "block_reasons" else value}

    record = record_of_event(_event_with(detail))

    assert value not in record_json(record)
    assert record.omitted == (name,)


@given(hex_id=st.uuids().map(lambda u: u.hex))
def test_ids_keep_their_place_in_the_subject_whatever_digits_they_hold(hex_id: str) -> None:
    ids = {
        "payment_id": f"PAY-{hex_id[:20].upper()}",
        "disconnection_id": f"DISC-{hex_id[12:].upper()}",
        "subscription_id": hex_id,
    }
    record = record_of_event(_event_with(ids))

    assert record.subject == {"activation_id": "act-1", **ids}
    assert record.omitted == ()


# What code names its fields: ids, state, before-state, and anything else.
FIELD_NAMES = st.one_of(
    st.sampled_from(
        [
            *("status", "reason", "outcome", "amount_paise", "valid_until", "block_reasons"),
            *("invoice_id", "plan_id", "previous_plan_id", "from_status", "old_reason"),
            *("msisdn", "email", "name", "note", "vpa", "kyc_number", "address"),
        ]
    ),
    st.from_regex(r"[a-z][a-z0-9]{0,10}(_[a-z0-9]{1,8}){0,2}", fullmatch=True),
).filter(lambda name: name not in {"user_id", "actor", "action", "correlation_id"})
PERSONAL_VALUE = st.sampled_from(sorted(PERSONAL.values()))
# A personal value alone, inside a code-like string, or inside a sentence.
INJECTED = st.one_of(
    PERSONAL_VALUE,
    st.tuples(
        st.sampled_from(["ref", "X1", "tel", "u"]),
        st.sampled_from(["-", ":", "/", "#", "_", " "]),
        PERSONAL_VALUE,
    ).map("".join),
    st.tuples(PERSONAL_VALUE, st.sampled_from(["-x", " is new", "#1"])).map("".join),
)
SAFE_VALUE = st.one_of(
    st.integers(min_value=0, max_value=10**7),
    st.booleans(),
    st.sampled_from(["ACTIVE", "OVERDUE", "PRE_SMART_299", "INV-u1-2026-11-01", "2026-11-25"]),
)


@given(
    safe=st.dictionaries(FIELD_NAMES, SAFE_VALUE, max_size=6),
    personal=st.dictionaries(
        FIELD_NAMES,
        st.one_of(INJECTED, st.lists(INJECTED, min_size=1, max_size=3)),
        min_size=1,
        max_size=5,
    ),
)
def test_no_personal_value_anywhere_in_a_detail_reaches_the_record(
    safe: dict[str, Any], personal: dict[str, Any]
) -> None:
    detail = {**safe, **personal}

    record = record_of_event(_event_with(detail))

    text = record_json(record)
    for value in PERSONAL.values():
        assert value not in text
    assert set(personal) <= set(record.omitted)


# --- staff actions --------------------------------------------------------------------------

UNBLOCK = "/service-control/unblock/{user_id}"
AGENT = Caller("a1", "agent")


def _principal(caller: Caller) -> Principal:
    return Principal.from_context(caller.authorizer_context())


def _call(method: str, caller: Caller, **kwargs: Any) -> dict[str, Any]:
    return api_event(
        method,
        "/service-control/unblock/u1",
        resource=UNBLOCK,
        caller=caller,
        path_parameters={"user_id": "u1"},
        **kwargs,
    )


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_reads_are_not_staff_actions(method: str) -> None:
    assert staff_action(_call(method, AGENT), _principal(AGENT), 200, T0) is None


@pytest.mark.parametrize("caller", [Caller("u1", "subscriber"), Caller("wf", "service")])
def test_calls_by_subscribers_and_services_are_not_staff_actions(caller: Caller) -> None:
    event = _call("POST", caller, body={"reason": "AGENT"})

    assert staff_action(event, _principal(caller), 200, T0) is None


@pytest.mark.parametrize(
    ("caller", "method", "status", "actor"),
    [
        (AGENT, "POST", 200, "agent:a1"),
        (AGENT, "POST", 409, "agent:a1"),  # refused: still worth a record
        (Caller("root", "admin"), "DELETE", 204, "admin:root"),
        (Caller("lead", "agent,admin"), "PUT", 200, "admin:lead"),
    ],
)
def test_a_staff_call_is_announced_with_its_route_path_ids_and_status_but_no_body(
    caller: Caller, method: str, status: int, actor: str
) -> None:
    note = {"reason": "AGENT", "note": f"customer {MSISDN} called", "email": PERSONAL["email"]}
    event = _call(method, caller, body=note)

    action = staff_action(event, _principal(caller), status, T0)

    assert action is not None
    assert (action.source, action.detail_type) == ("api", "StaffActionPerformed")
    assert action.detail == {
        "actor": actor,
        "action": f"{method} {UNBLOCK}",
        "http_status": status,
        "user_id": "u1",
    }
    assert action.correlation_id == event["requestContext"]["requestId"]
    assert action.occurred_at == T0
    published = json.dumps(delivered_one(action))
    assert MSISDN not in published
    assert PERSONAL["email"] not in published


def test_only_the_ids_of_the_path_are_announced() -> None:
    event = api_event(
        "POST",
        "/lines/9876543210/invoices/INV-1/credit",
        resource="/lines/{msisdn}/invoices/{invoice_id}/credit",
        caller=AGENT,
        path_parameters={"msisdn": MSISDN, "invoice_id": "INV-1"},
    )

    action = staff_action(event, _principal(AGENT), 201, T0)

    assert action is not None
    assert action.detail["invoice_id"] == "INV-1"
    assert MSISDN not in json.dumps(action.detail)


def test_the_record_of_a_staff_action_names_the_call() -> None:
    event = _call("POST", AGENT, body={"reason": "AGENT"})
    action = staff_action(event, _principal(AGENT), 200, T0 + timedelta(seconds=3))
    assert action is not None

    record = record_of_event(delivered_one(action))

    assert record.action == f"POST {UNBLOCK}"
    assert (record.source, record.actor, record.role) == ("api", "agent:a1", ActorRole.AGENT)
    assert record.user_id == "u1"
    assert record.correlation_id == event["requestContext"]["requestId"]
    assert record.after == {"http_status": 200}
    assert record.occurred_at == T0 + timedelta(seconds=3)
    assert uuid.UUID(hex=record.audit_id)


def test_a_phone_number_typed_as_the_user_id_stays_out_of_the_record() -> None:
    """An agent who types the customer's number where the user id goes: the call
    is audited, its subject is not (an audit record can never be scrubbed)."""
    event = api_event(
        "POST",
        f"/service-control/block/{MSISDN}",
        resource="/service-control/block/{user_id}",
        caller=AGENT,
        path_parameters={"user_id": MSISDN},
    )
    action = staff_action(event, _principal(AGENT), 404, T0)
    assert action is not None

    record = record_of_event(delivered_one(action))

    assert record.user_id is None
    assert "user_id" in record.omitted
    assert (record.action, record.after) == (
        "POST /service-control/block/{user_id}",
        {"http_status": 404},
    )
    assert MSISDN not in record_json(record)


def test_an_actor_whose_name_is_personal_data_is_withheld() -> None:
    detail = {"actor": f"subscriber:{MSISDN}", "status": "TEMP_BLOCKED"}

    record = record_of_event(_event_with(detail))

    assert (record.actor, record.role) == ("subscriber:withheld", ActorRole.SUBSCRIBER)
    assert MSISDN not in record_json(record)
