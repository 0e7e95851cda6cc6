"""Permanent disconnection: the request, the workflow's steps, the resume once
dues are paid, and the daily inactivity sweep.

The workflow (infra/service_control.py) runs: FinalBill -> CheckDues ->
(AwaitDues, end) | Deprovision -> Complete -> Notify. A USER_REQUEST with
earlier bills unpaid parks the line in PENDING_DISCONNECT (outgoing barred) and
ends; the payment that clears the dues starts the workflow again with
``resume`` (straight to CheckDues). The other reasons never wait (rules in
:mod:`shared.service_control`).

Dues = what is still owed on invoices issued before this disconnection's final
invoice. The final invoice itself is payable by its due date like any bill and
goes to collection if unpaid; it does not hold the number.

After PERMANENT_DISCONNECTED the MSISDN stays reserved to the old subscriber
for a cooling-off period (late CDRs still rate to them; nobody else gets the
number), then is released: its index item carries a TTL at the end of the period.

Every step records its outcome in the disconnection's history and is safe to
repeat (Step Functions retries, a re-driven execution).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from pydantic import Field

from shared.auth import Principal, Role, actor_of
from shared.clock import Clock, isoformat
from shared.errors import Conflict, NotFound
from shared.events import DomainEvent, EventPublisher
from shared.models import Frozen, Subscriber, SubscriberStatus, SubscriberType
from shared.money import format_inr
from shared.network import NetworkProvisioner
from shared.notifications import Notifier, render
from shared.service_control import (
    POLICIES,
    DisconnectReason,
    ServiceState,
    check_may_disconnect,
    ensure_controllable,
)
from shared.services.billing import IssueResult, Outcome
from shared.services.service_control import (
    Facts,
    StaleState,
    StatusChange,
    status_events,
)
from shared.validation import msisdn_to_e164

logger = Logger(child=True)

SOURCE = "service_control"
INVOICE_EXISTS = frozenset({Outcome.ISSUED, Outcome.ALREADY_ISSUED, Outcome.PUBLISHED})
SYSTEM = Principal("inactivity-sweep", frozenset({Role.SERVICE}))


class DisconnectionStatus(StrEnum):
    REQUESTED = "REQUESTED"
    FINAL_BILLED = "FINAL_BILLED"
    AWAITING_DUES = "AWAITING_DUES"
    DEPROVISIONED = "DEPROVISIONED"
    DISCONNECTED = "DISCONNECTED"
    ESCALATED = "ESCALATED"


class Decision(StrEnum):
    PROCEED = "PROCEED"
    AWAIT_DUES = "AWAIT_DUES"


class DisconnectionInProgress(Conflict):
    code = "DISCONNECTION_IN_PROGRESS"


class DisconnectionNotFound(NotFound):
    code = "DISCONNECTION_NOT_FOUND"


class StepEntry(Frozen):
    at: datetime
    step: str
    outcome: str
    detail: str = ""


class Disconnection(Frozen):
    """``DISC#<id>/DISC``: one disconnection's request and progress."""

    disconnection_id: str
    user_id: str
    msisdn: str
    subscriber_type: SubscriberType
    reason: DisconnectReason
    requested_by: str
    requested_at: datetime
    proof_reference: str | None = None
    note: str = ""
    status: DisconnectionStatus = DisconnectionStatus.REQUESTED
    final_invoice_id: str | None = None
    dues_paise: int = 0
    parks: int = Field(default=0, description="Times the line was parked awaiting dues")
    msisdn_released_at: datetime | None = None
    history: tuple[StepEntry, ...] = ()

    @property
    def untouched(self) -> bool:
        """Opened, and no step of its workflow recorded: the worker that opened it
        may have stopped before it started the workflow."""
        return self.status is DisconnectionStatus.REQUESTED and len(self.history) == 1

    def has_step(self, step: str, *, since_step: str | None = None) -> bool:
        """Whether ``step`` is recorded (after the latest ``since_step``, if given)."""
        entries = list(self.history)
        if since_step is not None:
            starts = [i for i, entry in enumerate(entries) if entry.step == since_step]
            entries = entries[starts[-1] + 1 :] if starts else entries
        return any(entry.step == step for entry in entries)

    def step(
        self, at: datetime, step: str, outcome: str, detail: str = "", **changes: Any
    ) -> Disconnection:
        entry = StepEntry(at=at, step=step, outcome=outcome, detail=detail)
        return self.model_copy(update={**changes, "history": (*self.history, entry)})


# --- ports ---------------------------------------------------------------------------


class DisconnectionStore(Protocol):
    def open(self, record: Disconnection, state: ServiceState) -> None:
        """One transaction: the record, and the profile's ``disconnection_id``
        (condition: the profile's version is ``state.version`` and no disconnection
        is open). Raises DisconnectionInProgress or StaleState."""
        ...

    def get(self, disconnection_id: str) -> Disconnection:
        """Raises DisconnectionNotFound."""
        ...

    def put(self, record: Disconnection) -> None:
        """Store the record's progress (status, fields, history)."""
        ...

    def hold(self, record: Disconnection, state: ServiceState, change: StatusChange) -> None:
        """The line waits for its dues: profile PENDING_DISCONNECT (condition on
        version), history entry, the record AWAITING_DUES. Raises StaleState."""
        ...

    def finalize(self, record: Disconnection, state: ServiceState, change: StatusChange) -> None:
        """One transaction: profile PERMANENT_DISCONNECTED (out of the bill-cycle
        and inactivity indexes), the active plan ended, the MSISDN index item
        expiring at ``record.msisdn_released_at``, the ICCID claim retired, the
        status history entry and the record DISCONNECTED. Raises StaleState."""
        ...

    def dormant_since_on(self, day: date, shard: int) -> Iterable[str]:
        """User ids whose inactivity clock started on this IST day."""
        ...


class ServiceStates(Protocol):
    def load(self, user_id: str) -> ServiceState: ...


class Subscribers(Protocol):
    def get_subscriber(self, user_id: str) -> Subscriber: ...

    def wallet_balance(self, user_id: str) -> int: ...


class FinalBilling(Protocol):
    def final_invoice(self, user_id: str, until: datetime | None = None) -> IssueResult: ...


class NetworkSync(Protocol):
    def sync_network(self, user_id: str) -> bool:
        """Bring the network's barring in line with the stored status."""
        ...


class WorkflowStarter(Protocol):
    def start(self, name: str, payload: dict[str, str]) -> None: ...


class TaskQueue(Protocol):
    def send(self, messages: list[dict[str, Any]]) -> int: ...


@dataclass(frozen=True)
class DisconnectionConfig:
    inactivity_days: int = 90
    cooling_off_days: int = 90
    shards: int = 8


class Disconnections:
    def __init__(
        self,
        *,
        store: DisconnectionStore,
        states: ServiceStates,
        subscribers: Subscribers,
        facts: Facts,
        billing: FinalBilling,
        network: NetworkProvisioner,
        sync: NetworkSync,
        starter: WorkflowStarter,
        notifier: Notifier,
        events: EventPublisher,
        clock: Clock,
        config: DisconnectionConfig = DisconnectionConfig(),
    ) -> None:
        self._store = store
        self._states = states
        self._subscribers = subscribers
        self._facts = facts
        self._billing = billing
        self._network = network
        self._sync = sync
        self._starter = starter
        self._notifier = notifier
        self._events = events
        self._clock = clock
        self._config = config

    # --- the request ---------------------------------------------------------------

    def request(
        self,
        principal: Principal,
        user_id: str,
        reason: DisconnectReason,
        *,
        proof_reference: str | None = None,
        note: str = "",
    ) -> Disconnection:
        check_may_disconnect(principal, user_id, reason, proof_reference)
        state = self._states.load(user_id)
        if state.disconnection_id:
            return self._repeat_or_refuse(state.disconnection_id, reason, actor_of(principal))
        ensure_controllable(state)
        subscriber = self._subscribers.get_subscriber(user_id)
        now = self._clock.now()
        record = Disconnection(
            disconnection_id=f"DISC-{uuid.uuid4().hex[:20].upper()}",
            user_id=user_id,
            msisdn=state.msisdn,
            subscriber_type=subscriber.subscriber_type,
            reason=reason,
            requested_by=actor_of(principal),
            requested_at=now,
            proof_reference=proof_reference,
            note=note,
        ).step(now, "Request", "ACCEPTED", reason.value)  # who: requested_by (staff only)
        try:
            self._store.open(record, state)
        except StaleState:
            raise DisconnectionInProgress("the subscriber changed meanwhile; try again") from None
        self._launch(record)
        return record

    def get(self, disconnection_id: str) -> Disconnection:
        return self._store.get(disconnection_id)

    def _repeat_or_refuse(
        self, disconnection_id: str, reason: DisconnectReason, actor: str
    ) -> Disconnection:
        """The same request again, before its workflow made progress (its start may
        have failed after the record was stored): start it (a no-op if it runs) and
        answer the same. Anything else is refused while one is open."""
        record = self._store.get(disconnection_id)
        if record.status is DisconnectionStatus.ESCALATED and actor.startswith("admin:"):
            return self._redrive(record)
        if record.untouched and record.reason is reason and record.requested_by == actor:
            self._launch(record)
            return record
        raise DisconnectionInProgress(
            f"disconnection {disconnection_id} is already under way",
            details={"disconnection_id": disconnection_id},
        )

    # --- workflow steps -------------------------------------------------------------

    def final_bill(self, disconnection_id: str) -> dict[str, str]:
        record = self._store.get(disconnection_id)
        if record.status is not DisconnectionStatus.REQUESTED:
            return {"final_invoice_id": record.final_invoice_id or ""}
        now = self._clock.now()
        if record.subscriber_type is SubscriberType.PREPAID:
            wallet = self._subscribers.wallet_balance(record.user_id)
            updated = record.step(
                now,
                "FinalBill",
                "NOT_BILLED",
                f"prepaid is paid in advance; wallet balance {wallet} paise is refundable",
                status=DisconnectionStatus.FINAL_BILLED,
            )
        else:
            # Rental stops at the request, whenever the workflow gets here.
            result = self._billing.final_invoice(record.user_id, until=record.requested_at)
            # NOTHING_TO_BILL: not a paisa since the last bill, so no invoice to point to.
            issued = result.outcome in INVOICE_EXISTS
            updated = record.step(
                now,
                "FinalBill",
                str(result.outcome.value),
                result.invoice_id,
                status=DisconnectionStatus.FINAL_BILLED,
                final_invoice_id=result.invoice_id if issued else None,
            )
        self._store.put(updated)
        return {"final_invoice_id": updated.final_invoice_id or ""}

    def check_dues(self, disconnection_id: str) -> dict[str, Any]:
        record = self._store.get(disconnection_id)
        dues = self._dues(record)
        # A line parked for its dues longer than the inactivity limit goes anyway.
        gone_quiet = self._inactive_too_long(self._states.load(record.user_id))
        waits = POLICIES[record.reason].waits_for_dues and dues > 0 and not gone_quiet
        decision = Decision.AWAIT_DUES if waits else Decision.PROCEED
        detail = f"{dues} paise outstanding" + ("" if waits or not dues else "; to collection")
        self._store.put(
            record.step(self._clock.now(), "CheckDues", decision.value, detail, dues_paise=dues)
        )
        return {"decision": decision.value, "dues_paise": dues}

    def await_dues(self, disconnection_id: str) -> dict[str, str]:
        """Park the line (PENDING_DISCONNECT, outgoing barred) and tell the customer
        what to pay. A retry after a failure part-way redoes what is missing."""
        record = self._store.get(disconnection_id)
        parked_again = record.has_step("CheckDues", since_step="AwaitDues")
        if record.status is not DisconnectionStatus.AWAITING_DUES or parked_again:
            record = self._hold(record)  # a new park: its own resume name and notice
        if not self._sync.sync_network(record.user_id):
            raise RuntimeError(f"the barring of {record.user_id} kept changing; retry the step")
        if not record.has_step("NotifyDues", since_step="AwaitDues"):
            sent = self._notify(
                record.user_id, "disconnection_dues", {"dues": format_inr(record.dues_paise)}
            )
            record = record.step(self._clock.now(), "NotifyDues", "SENT" if sent else "FAILED")
            self._store.put(record)
        return {"status": record.status.value}

    def _hold(self, record: Disconnection) -> Disconnection:
        state = self._states.load(record.user_id)
        now = self._clock.now()
        change = StatusChange(
            at=now,
            actor="system:Disconnection",
            cause=f"{record.disconnection_id}: {record.dues_paise} paise to clear first",
            status_before=state.status,
            status_after=SubscriberStatus.PENDING_DISCONNECT,
        )
        waiting = record.step(
            now,
            "AwaitDues",
            "PENDING_DISCONNECT",
            change.cause,
            status=DisconnectionStatus.AWAITING_DUES,
            parks=record.parks + 1,
        )
        self._store.hold(waiting, state, change)
        held = state.model_copy(update={"status": SubscriberStatus.PENDING_DISCONNECT})
        self._events.publish(status_events(held, change))
        return waiting

    def deprovision(self, disconnection_id: str) -> dict[str, str]:
        record = self._store.get(disconnection_id)
        if record.status in {DisconnectionStatus.DEPROVISIONED, DisconnectionStatus.DISCONNECTED}:
            return {"status": record.status.value}
        result = self._network.deprovision(record.msisdn)  # errors: the workflow retries
        self._store.put(
            record.step(
                self._clock.now(),
                "Deprovision",
                "SUCCEEDED",
                result.reference,
                status=DisconnectionStatus.DEPROVISIONED,
            )
        )
        return {"network_reference": result.reference}

    def complete(self, disconnection_id: str) -> dict[str, str]:
        record = self._store.get(disconnection_id)
        if record.status is DisconnectionStatus.DISCONNECTED:
            # A retry after the commit: announce again (consumers de-duplicate on the
            # event id, the disconnection's), rather than risk it never going out.
            self._events.publish([self._disconnected_event(record, self._clock.now())])
            return {"status": record.status.value}
        state = self._states.load(record.user_id)
        now = self._clock.now()
        released = now + timedelta(days=self._config.cooling_off_days)
        change = StatusChange(
            at=now,
            actor="system:Disconnection",
            cause=f"{record.disconnection_id}: {record.reason.value}",
            lifted=state.reasons,
            status_before=state.status,
            status_after=SubscriberStatus.PERMANENT_DISCONNECTED,
        )
        done = record.step(
            now,
            "Complete",
            "PERMANENT_DISCONNECTED",
            f"number released after {isoformat(released)}",
            status=DisconnectionStatus.DISCONNECTED,
            msisdn_released_at=released,
        )
        self._store.finalize(done, state, change)
        self._events.publish([self._disconnected_event(done, now)])
        return {"status": done.status.value}

    def notify(self, disconnection_id: str) -> dict[str, str]:
        record = self._store.get(disconnection_id)
        if record.has_step("Notify"):
            return {"status": "NOTIFIED"}
        sent = self._notify(
            record.user_id,
            "disconnection_done",
            {"reason": record.reason.value.replace("_", " ").lower()},
        )
        self._store.put(record.step(self._clock.now(), "Notify", "SENT" if sent else "FAILED"))
        return {"status": "NOTIFIED" if sent else "NOT_SENT"}

    def escalate(self, disconnection_id: str, error: dict[str, Any] | None) -> dict[str, str]:
        """Once per failure: a retried task finds it ESCALATED and only announces it
        again (the same event: one audit record), in case the first try stopped
        between the write and the announcement."""
        record = self._store.get(disconnection_id)
        if record.status is not DisconnectionStatus.ESCALATED:
            cause = str((error or {}).get("Cause") or (error or {}).get("Error") or "unknown")
            record = record.step(
                self._clock.now(),
                "Escalate",
                "ESCALATED",
                cause[:500],
                status=DisconnectionStatus.ESCALATED,
            )
            self._store.put(record)
            logger.error("disconnection escalated", extra={"disconnection_id": disconnection_id})
        # Numbered: a disconnection re-driven by an admin may escalate again.
        escalations = sum(1 for entry in record.history if entry.step == "Escalate")
        self._announce(record, "DisconnectionEscalated", str(escalations))
        return {"status": DisconnectionStatus.ESCALATED.value}

    # --- after the workflow: dues paid, inactivity ----------------------------------------

    def on_payment_succeeded(self, user_id: str) -> str:
        """A payment may have cleared what a parked USER_REQUEST waits for."""
        state = self._states.load(user_id)
        if not state.disconnection_id:
            return "no disconnection waiting"
        record = self._store.get(state.disconnection_id)
        if record.status is not DisconnectionStatus.AWAITING_DUES:
            return f"disconnection is {record.status.value}"
        dues = self._dues(record)
        if dues > 0:
            return f"{dues} paise still outstanding"
        return self._resume(record)

    def _redrive(self, record: Disconnection) -> Disconnection:
        """An admin sends an escalated disconnection through again once ops fixed
        the cause: from the dues check on (the final bill is done)."""
        attempt = sum(1 for entry in record.history if entry.step == "Escalate")
        redriven = record.step(
            self._clock.now(),
            "Redrive",
            "ACCEPTED",
            "sent through again by an admin",
            status=DisconnectionStatus.FINAL_BILLED,
        )
        self._store.put(redriven)
        name = f"{record.disconnection_id}-E{attempt}"
        self._starter.start(name, {"disconnection_id": record.disconnection_id, "resume": "true"})
        return redriven

    def _launch(self, record: Disconnection) -> None:
        """Announce the request and start its workflow. Both are safe to repeat: the
        event's id is the request's, and the execution is named after the
        disconnection (a repeated start of the running one changes nothing)."""
        self._announce(record, "DisconnectionRequested", "", actor=record.requested_by)
        self._starter.start(record.disconnection_id, {"disconnection_id": record.disconnection_id})

    def _resume(self, record: Disconnection) -> str:
        """One execution per parking: a repeated event starts the same name again,
        which Step Functions treats as the execution already started."""
        name = f"{record.disconnection_id}-R{record.parks}"
        self._starter.start(name, {"disconnection_id": record.disconnection_id, "resume": "true"})
        return f"resumed as {name}"

    def inactivity_sweep(self, day: date, queue: TaskQueue) -> dict[str, Any]:
        """The lines whose inactivity clock started more than ``inactivity_days``
        before ``day``, one message each."""
        started = day - timedelta(days=self._config.inactivity_days + 1)
        messages = [
            {"task": "inactivity", "user_id": user_id}
            for shard in range(self._config.shards)
            for user_id in self._store.dormant_since_on(started, shard)
        ]
        return {"messages": queue.send(messages)}

    def disconnect_if_inactive(self, user_id: str) -> str:
        state = self._states.load(user_id)
        if state.status is SubscriberStatus.PERMANENT_DISCONNECTED:
            return "already disconnected"
        if state.dormant_since is None or not self._inactive_too_long(state):
            return "not inactive long enough"
        if state.disconnection_id:
            record = self._store.get(state.disconnection_id)
            if record.status is DisconnectionStatus.AWAITING_DUES:
                return self._resume(record)  # CheckDues lets it go now
            if record.untouched:  # whoever opened it may have stopped before launching it
                self._launch(record)
            return "a disconnection is under way"
        record = self.request(
            SYSTEM,
            user_id,
            DisconnectReason.INACTIVITY,
            note=f"inactive since {isoformat(state.dormant_since)}",
        )
        return f"started {record.disconnection_id}"

    # --- internals ---------------------------------------------------------------

    def _inactive_too_long(self, state: ServiceState) -> bool:
        limit = timedelta(days=self._config.inactivity_days)
        return state.dormant_since is not None and self._clock.now() - state.dormant_since > limit

    def _dues(self, record: Disconnection) -> int:
        return sum(
            fact.outstanding_paise
            for fact in self._facts.unpaid_invoices(record.user_id)
            if fact.invoice_id != record.final_invoice_id
        )

    def _announce(self, record: Disconnection, kind: str, occurrence: str, **detail: str) -> None:
        """A step of the disconnection for the bus (the audit trail): ids and codes.
        The event id is the step's (``occurrence`` tells repeats apart), so a retry
        announces the same event."""
        self._events.publish(
            [
                DomainEvent(
                    detail_type=kind,
                    source=SOURCE,
                    occurred_at=self._clock.now(),
                    correlation_id=record.disconnection_id,
                    event_id="-".join(filter(None, (kind, record.disconnection_id, occurrence))),
                    detail={
                        "user_id": record.user_id,
                        "disconnection_id": record.disconnection_id,
                        "reason": record.reason.value,
                        "status": record.status.value,
                        **detail,
                    },
                )
            ]
        )

    def _disconnected_event(self, record: Disconnection, now: datetime) -> DomainEvent:
        return DomainEvent(
            detail_type="SubscriberDisconnected",
            source=SOURCE,
            occurred_at=now,
            correlation_id=record.disconnection_id,
            event_id=record.disconnection_id,
            detail={
                "user_id": record.user_id,
                "disconnection_id": record.disconnection_id,
                "reason": record.reason.value,
                "final_invoice_id": record.final_invoice_id,
                "dues_paise": record.dues_paise,
                "msisdn_released_at": isoformat(record.msisdn_released_at or now),
            },
        )

    def _notify(self, user_id: str, template: str, values: dict[str, str]) -> bool:
        """Email, and SMS to the alternate number: the line itself may be gone.
        A failed notification is logged, never a reason to fail the step."""
        subscriber = self._subscribers.get_subscriber(user_id)
        message = render(template, {"name": subscriber.name or "Customer", **values})
        try:
            if subscriber.email:
                self._notifier.send_email(
                    subscriber.email, message.email_subject, message.email_body
                )
            if subscriber.phone:
                self._notifier.send_sms(msisdn_to_e164(subscriber.phone), message.sms)
        except Exception:
            logger.warning("disconnection notice not sent", exc_info=True)
            return False
        return True
