"""Audit records as the audit consumer makes them: domain events (built by the
services' own functions where they are public, else with the detail the service
publishes) delivered through the real publisher and ``record_of_event``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from shared.audit import AuditRecord, record_of_event
from shared.auth import Principal, Role
from shared.clock import isoformat
from shared.events import DomainEvent
from shared.models import SubscriberStatus
from shared.service_control import BlockReason, ServiceState
from shared.services.service_control import StatusChange, status_events
from shared.staff_actions import staff_action
from tests.apigw import Caller, api_event
from tests.unit.audit.envelopes import delivered


def records(*events: DomainEvent) -> list[AuditRecord]:
    """The audit records of ``events`` as the bus delivers them to the consumer."""
    return [record_of_event(envelope) for envelope in delivered(*events)]


def activated(at: datetime, user_id: str, subscriber_type: str = "prepaid") -> DomainEvent:
    return DomainEvent(
        detail_type="SubscriberActivated",
        source="activation",
        occurred_at=at,
        correlation_id=f"ACT-{user_id}",
        detail={
            "user_id": user_id,
            "activation_id": f"ACT-{user_id}",
            "subscriber_type": subscriber_type,
            "plan_id": "PRE_SMART_299",
            "subscription_id": f"SUB-{user_id}",
        },
    )


def activation_step(kind: str, at: datetime, user_id: str) -> DomainEvent:
    """KycRejected / ActivationEscalated (ActivationService._step_event)."""
    return DomainEvent(
        detail_type=kind,
        source="activation",
        occurred_at=at,
        correlation_id=f"ACT-{user_id}",
        event_id=f"{kind}-ACT-{user_id}",
        detail={
            "user_id": user_id,
            "activation_id": f"ACT-{user_id}",
            "subscriber_type": "postpaid",
        },
    )


def status_change(
    at: datetime,
    user_id: str,
    *,
    applied: set[BlockReason] | None = None,
    lifted: set[BlockReason] | None = None,
    reasons_after: set[BlockReason] | None = None,
    status_after: SubscriberStatus | None = None,
    actor: str = "system:InvoiceOverdue",
) -> list[DomainEvent]:
    """ServiceBlocked / ServiceUnblocked, by service control's own ``status_events``."""
    reasons = frozenset(reasons_after if reasons_after is not None else applied or ())
    after = status_after or (SubscriberStatus.TEMP_BLOCKED if reasons else SubscriberStatus.ACTIVE)
    state = ServiceState(user_id=user_id, msisdn="9876500001", status=after, reasons=reasons)
    change = StatusChange(
        at=at,
        actor=actor,
        cause="a note that stays off the bus",
        applied=frozenset(applied or ()),
        lifted=frozenset(lifted or ()),
        status_before=SubscriberStatus.ACTIVE,
        status_after=after,
    )
    return status_events(state, change)


def disconnection(kind: str, at: datetime, user_id: str, reason: str) -> DomainEvent:
    """DisconnectionRequested / DisconnectionEscalated / SubscriberDisconnected."""
    detail: dict[str, Any] = {
        "user_id": user_id,
        "disconnection_id": f"DISC-{user_id}",
        "reason": reason,
    }
    if kind == "DisconnectionRequested":
        detail["actor"] = f"subscriber:{user_id}"
    elif kind == "DisconnectionEscalated":
        detail["status"] = "ESCALATED"
    else:
        detail |= {
            "final_invoice_id": f"INV-{user_id}-final",
            "dues_paise": 0,
            "msisdn_released_at": isoformat(at),
        }
    return DomainEvent(detail_type=kind, source="service_control", occurred_at=at, detail=detail)


def invoice_issued(at: datetime, user_id: str, total_paise: int, tax_paise: int) -> DomainEvent:
    invoice_id = f"INV-{user_id}-2026-11-01"
    return DomainEvent(
        detail_type="InvoiceIssued",
        source="billing",
        occurred_at=at,
        correlation_id=invoice_id,
        detail={
            "user_id": user_id,
            "invoice_id": invoice_id,
            "invoice_number": "TB/2627/00000001",
            "bill_date": "2026-11-01",
            "due_date": "2026-11-16",
            "period_start": "2026-09-30T18:30:00+00:00",
            "period_end": "2026-10-31T18:30:00+00:00",
            "total_paise": total_paise,
            "tax_paise": tax_paise,
            "currency": "INR",
            "link": f"/invoices/{invoice_id}/pdf",
        },
    )


def credit_note(at: datetime, user_id: str, amount_paise: int) -> DomainEvent:
    return DomainEvent(
        detail_type="CreditNoteIssued",
        source="billing",
        occurred_at=at,
        detail={
            "user_id": user_id,
            "invoice_id": f"INV-{user_id}-2026-11-01",
            "credit_note_id": f"CN-{uuid.uuid4().hex[:12].upper()}",
            "amount_paise": amount_paise,
        },
    )


def staff_call(
    at: datetime, actor: Caller, method: str, resource: str, status: int, **path: str
) -> DomainEvent:
    """The announcement of one API call (shared.staff_actions, as shared.web makes it)."""
    event = api_event(method, resource.format(**path), resource=resource, path_parameters=path)
    principal = Principal(actor.sub, frozenset(Role(role) for role in actor.roles.split(",")))
    announced = staff_action(event, principal, status, at)
    assert announced is not None, "a staff call that changes state is announced"
    return announced
