"""Service control: temporary blocks and their lifting, from the API and from
domain events, and keeping the network's barring in step with them.

Every change is one conditional write on the subscriber's profile (its
``version``) together with a history entry naming who or what caused it, and
the *guards* that make a block depend on the fact behind it still holding at
commit time: an ``InvoiceOverdue`` block commits only while that invoice is
still unpaid, so a payment that lands between our read and our write wins.

Events are at-least-once and may arrive in any order, so a reaction never
trusts its event: it re-reads the facts (is the invoice still unpaid, is a
plan valid now) and does nothing when they no longer hold. Applying a reason
twice, or lifting one that is gone, changes nothing.

The network is told the desired barring profile after the commit, and the
profile version it confirmed is recorded; :meth:`ServiceControl.sync_network`
repeats until the confirmed version is the current one, so two changes racing
each other end with the network showing the later one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from pydantic import Field

from shared.auth import Principal, Role, actor_of
from shared.clock import Clock, isoformat
from shared.errors import ConcurrentModification, Conflict
from shared.events import DomainEvent, EventPublisher
from shared.models import Frozen, SubscriberStatus, Subscription
from shared.network import LineNotProvisioned, NetworkProvisioner
from shared.service_control import (
    FACT_BACKED,
    PAYMENT_RELATED,
    SIM_COMPROMISED,
    BlockReason,
    ServiceState,
    barring_for,
    check_may_apply,
    check_may_lift,
    ensure_controllable,
)
from shared.services.billing import ist_midnight

logger = Logger(child=True)

SOURCE = "service_control"
SAVE_ATTEMPTS = 5  # re-reads after a concurrent change to the profile
SYNC_ATTEMPTS = 5
THROTTLE_LOOKBACK = 50  # history entries searched for when the throttle began
_EVER = datetime.min.replace(tzinfo=UTC)


class StatusChange(Frozen):
    """One entry of the status history: what changed, who or what caused it."""

    at: datetime
    actor: str = Field(description="'agent:<id>', 'subscriber:<id>' or 'system:<event>'")
    cause: str = Field(description="Why: a note, an invoice id, an event id")
    applied: frozenset[BlockReason] = frozenset()
    lifted: frozenset[BlockReason] = frozenset()
    status_before: SubscriberStatus
    status_after: SubscriberStatus


# --- guards: facts a change depends on, checked in its transaction --------------------


@dataclass(frozen=True)
class InvoiceStillUnpaid:
    user_id: str
    invoice_id: str


@dataclass(frozen=True)
class ActivePlanIs:
    """The active plan slot still holds this subscription (None: still empty)."""

    user_id: str
    subscription_id: str | None


@dataclass(frozen=True)
class OtpToConsume:
    """A verified one-time password, used up by the change it authorizes."""

    user_id: str
    otp_id: str


@dataclass(frozen=True)
class SimSwap:
    """The new SIM's claim (held PENDING_REPLACEMENT by this user) goes IN_USE and
    the old SIM's claim is RETIRED, with the profile's new ICCID."""

    user_id: str
    new_iccid: str
    old_iccid: str | None


@dataclass(frozen=True)
class EventOnce:
    """A domain event changes the status at most once: a marker keyed by the
    publisher's event id, written with the change. A redelivery after someone
    lifted the block by hand (an admin's goodwill) must not block again."""

    event_id: str


Guard = InvoiceStillUnpaid | ActivePlanIs | OtpToConsume | SimSwap | EventOnce


class GuardFailed(Exception):
    """A guarded fact stopped holding before the change committed."""


class StaleState(Exception):
    """The profile changed since it was read (version moved)."""


class NetworkOutOfSync(Exception):
    """The barring kept changing under the sync; the event is retried."""


class OtpNoLongerUsable(Conflict):
    code = "OTP_NOT_USABLE"


# --- ports --------------------------------------------------------------------------


class ServiceStore(Protocol):
    def load(self, user_id: str) -> ServiceState:
        """Raises UserNotFound."""
        ...

    def save(
        self,
        before: ServiceState,
        after: ServiceState,
        change: StatusChange,
        guards: Sequence[Guard] = (),
    ) -> ServiceState:
        """One transaction: the profile (condition: version unchanged), the history
        entry, the guards' condition checks. Returns the state as stored (new
        version). Raises StaleState or GuardFailed and writes nothing."""
        ...

    def mark_synced(self, user_id: str, version: int) -> bool:
        """Record that the network shows the barring of ``version``, if that is
        still the current version (without changing the version)."""
        ...

    def history(self, user_id: str, limit: int) -> list[StatusChange]:
        """Newest first."""
        ...


@dataclass(frozen=True)
class InvoiceFact:
    invoice_id: str
    bill_date: date
    unpaid: bool
    overdue_notified: bool  # InvoiceOverdue was sent: the grace has passed
    outstanding_paise: int


class Facts(Protocol):
    """What billing and plans say now (read, never written, by service control)."""

    def invoice(self, user_id: str, invoice_id: str) -> InvoiceFact | None: ...

    def unpaid_invoices(self, user_id: str) -> list[InvoiceFact]: ...

    def active_plan(self, user_id: str) -> Subscription | None: ...


class TaskQueue(Protocol):
    def send(self, messages: list[dict[str, Any]]) -> int: ...


class VerifiedOtps(Protocol):
    def check_verified(self, user_id: str, otp_id: str, reason: BlockReason) -> None:
        """Raises a DomainError unless the OTP is verified, unused, unexpired and
        was requested for this reason."""
        ...


# --- results ------------------------------------------------------------------------


class ServiceView(Frozen):
    user_id: str
    status: SubscriberStatus
    block_reasons: list[BlockReason]
    barring: dict[str, Any]
    network_in_sync: bool
    changed: bool = True
    history: list[StatusChange] = []


@dataclass(frozen=True)
class Change:
    """What a caller asks for: reasons to apply and to lift."""

    actor: str
    cause: str
    apply: frozenset[BlockReason] = frozenset()
    lift: frozenset[BlockReason] = frozenset()
    guards: tuple[Guard, ...] = ()
    dormant_since: datetime | None = None  # start the inactivity clock (earliest wins)


class ServiceControl:
    def __init__(
        self,
        *,
        store: ServiceStore,
        facts: Facts,
        network: NetworkProvisioner,
        events: EventPublisher,
        clock: Clock,
        otps: VerifiedOtps | None = None,
        retries: TaskQueue | None = None,
    ) -> None:
        self._store = store
        self._facts = facts
        self._network = network
        self._events = events
        self._clock = clock
        self._otps = otps
        self._retries = retries

    # --- API ---------------------------------------------------------------------

    def status(self, user_id: str, history_limit: int = 20) -> ServiceView:
        state = self._store.load(user_id)
        history = self._store.history(user_id, history_limit) if history_limit else []
        return self._view(state, history=history)

    def block(
        self,
        principal: Principal,
        user_id: str,
        reason: BlockReason,
        *,
        note: str = "",
        otp_id: str | None = None,
    ) -> ServiceView:
        owner_verified = False
        guards: tuple[Guard, ...] = ()
        is_staff = principal.has_any({Role.AGENT, Role.ADMIN})
        owner_with_otp = not is_staff and otp_id and principal.subject == user_id
        if owner_with_otp and self._otps is not None and reason in SIM_COMPROMISED:
            assert otp_id is not None
            self._otps.check_verified(user_id, otp_id, reason)
            owner_verified = True
            guards = (OtpToConsume(user_id, otp_id),)
        check_may_apply(principal, reason, owner_verified=owner_verified)
        change = Change(
            actor=actor_of(principal),
            cause=note or f"{reason.value} requested",
            apply=frozenset({reason}),
            guards=guards,
        )
        try:
            state, changed = self._change(user_id, change, controllable_only=True)
        except GuardFailed:
            raise OtpNoLongerUsable(
                "the one-time password expired or was used; ask for a new one"
            ) from None
        self._sync_after_api(state)
        return self._view(self._store.load(user_id), changed=changed)

    def unblock(
        self, principal: Principal, user_id: str, reason: BlockReason, *, note: str = ""
    ) -> ServiceView:
        state = self._store.load(user_id)
        ensure_controllable(state)
        fact_holds = reason in FACT_BACKED and self._fact_holds(user_id, reason)
        check_may_lift(principal, reason, fact_holds=fact_holds)
        change = Change(
            actor=actor_of(principal),
            cause=note or f"{reason.value} lifted",
            lift=frozenset({reason}),
        )
        state, changed = self._change(user_id, change, controllable_only=True)
        self._sync_after_api(state)
        return self._view(self._store.load(user_id), changed=changed)

    # --- reactions to events ---------------------------------------------------------

    def on_invoice_overdue(self, user_id: str, invoice_id: str, event_id: str | None) -> str:
        """``event_id`` None: our own re-check, not a delivered event."""
        fact = self._facts.invoice(user_id, invoice_id)
        if fact is None or not fact.unpaid:
            return self._settle(user_id, "stale: invoice no longer unpaid")
        once = (EventOnce(event_id),) if event_id else ()
        change = Change(
            actor="system:InvoiceOverdue",
            cause=f"{invoice_id} unpaid after the grace period (event {event_id or 'recheck'})",
            apply=frozenset({BlockReason.OVERDUE}),
            guards=(InvoiceStillUnpaid(user_id, invoice_id), *once),
            dormant_since=ist_midnight(fact.bill_date),
        )
        return self._react(user_id, change)

    def on_plan_expired(
        self, user_id: str, subscription_id: str, valid_until: datetime, event_id: str
    ) -> str:
        active = self._facts.active_plan(user_id)
        if _plan_valid(active, self._clock.now()):
            return self._settle(user_id, "stale: a valid plan is active")
        change = Change(
            actor="system:PlanExpired",
            cause=f"plan {subscription_id} expired at {isoformat(valid_until)} (event {event_id})",
            apply=frozenset({BlockReason.PLAN_EXPIRED}),
            guards=(
                ActivePlanIs(user_id, active.subscription_id if active else None),
                EventOnce(event_id),
            ),
            dormant_since=valid_until,
        )
        return self._react(user_id, change)

    def on_quota_exhausted(
        self, user_id: str, usage_type: str, occurred_at: datetime, event_id: str
    ) -> str:
        if usage_type != "DATA":
            # Voice and SMS beyond quota and wallet are refused by online charging
            # call by call; only data has a throttled mode to put the line in.
            return self._settle(user_id, f"ignored: {usage_type} exhaustion is not throttled")
        active = self._facts.active_plan(user_id)
        if not _plan_valid(active, self._clock.now()) or (
            active is not None and active.started_at > occurred_at
        ):
            return self._settle(user_id, "stale: a newer plan period began")
        assert active is not None
        change = Change(
            actor="system:QuotaExhausted",
            cause=f"data quota of {active.plan_id} used up (event {event_id})",
            apply=frozenset({BlockReason.QUOTA_EXHAUSTED}),
            guards=(ActivePlanIs(user_id, active.subscription_id), EventOnce(event_id)),
        )
        return self._react(user_id, change)

    def on_plan_changed(
        self,
        user_id: str,
        event_id: str,
        occurred_at: datetime | None = None,
        *,
        new_quota_now: bool = True,
    ) -> str:
        """A plan purchase, renewal or change: a new period with a new quota. An
        extension (a repeat purchase queued after the current period) brings no data
        now, so it leaves a throttle alone."""
        refill = (occurred_at or self._clock.now()) if new_quota_now else None
        return self._lift_resolved(
            user_id, "system:PlanChanged", f"event {event_id}", refill_at=refill
        )

    def on_payment_succeeded(
        self, user_id: str, event_id: str, *, top_up: bool, occurred_at: datetime | None = None
    ) -> str:
        """Bills paid lift OVERDUE once none is left; a top-up lifts the throttle."""
        refill = (occurred_at or self._clock.now()) if top_up else None
        return self._lift_resolved(
            user_id, "system:PaymentSucceeded", f"event {event_id}", refill_at=refill
        )

    # --- the network ------------------------------------------------------------------

    def sync_network(self, user_id: str) -> bool:
        """Make the network show the current barring. True when it does (or when
        there is no line to bar any more); raises the network's errors."""
        raced = False
        for _ in range(SYNC_ATTEMPTS):
            state = self._store.load(user_id)
            if state.status in _NO_LINE or (state.network_in_sync and not raced):
                return True
            profile = barring_for(state.status, state.reasons)
            try:
                self._network.apply_barring(state.msisdn, profile)
            except LineNotProvisioned:
                if state.disconnection_id:
                    return True  # de-provisioned by its disconnection: nothing to bar
                raise
            if self._store.mark_synced(user_id, state.version):
                return True
            # Another change landed while our call was on its way; its own sync may
            # have reached the network before ours did, so apply the latest again.
            raced = True
        return False

    # --- internals -----------------------------------------------------------------

    def _lift_resolved(
        self, user_id: str, actor: str, cause: str, *, refill_at: datetime | None
    ) -> str:
        """``refill_at``: when new quota or wallet money arrived (None: none did)."""
        state = self._store.load(user_id)
        resolved = {
            reason
            for reason in state.reasons & PAYMENT_RELATED
            if not self._fact_holds(user_id, reason)
        }
        if (
            refill_at is not None
            and BlockReason.QUOTA_EXHAUSTED in state.reasons
            and refill_at >= self._throttled_at(user_id)
        ):
            resolved.add(BlockReason.QUOTA_EXHAUSTED)
        if not resolved:
            return self._settle(user_id, "nothing to lift")
        outcome = self._react(user_id, Change(actor=actor, cause=cause, lift=frozenset(resolved)))
        if BlockReason.OVERDUE in resolved:
            self._reblock_if_overdue_meanwhile(user_id)
        return outcome

    def _reblock_if_overdue_meanwhile(self, user_id: str) -> None:
        """A lift cannot guard "no bill went overdue meanwhile" (a query, not an
        item). So look again after it committed: a bill whose notice went out
        before this read is blocked for here; one whose notice goes out after it
        brings its own InvoiceOverdue, which finds OVERDUE lifted and blocks."""
        for fact in self._facts.unpaid_invoices(user_id):
            if fact.overdue_notified:
                self.on_invoice_overdue(user_id, fact.invoice_id, None)
                return

    def _throttled_at(self, user_id: str) -> datetime:
        """When the current throttle was applied: a refill from before it (a late or
        repeated PlanChanged, an old top-up) does not lift it."""
        for change in self._store.history(user_id, THROTTLE_LOOKBACK):
            if BlockReason.QUOTA_EXHAUSTED in change.applied:
                return change.at
        return _EVER

    def _fact_holds(self, user_id: str, reason: BlockReason) -> bool:
        if reason is BlockReason.OVERDUE:
            return any(f.overdue_notified for f in self._facts.unpaid_invoices(user_id))
        if reason is BlockReason.PLAN_EXPIRED:
            return not _plan_valid(self._facts.active_plan(user_id), self._clock.now())
        # QUOTA_EXHAUSTED: only rating knows; a top-up or a new plan period ends it.
        return reason is BlockReason.QUOTA_EXHAUSTED

    def _react(self, user_id: str, change: Change) -> str:
        """An event's change; a guard that fails means the fact ended meanwhile."""
        try:
            state, changed = self._change(user_id, change, controllable_only=False)
        except GuardFailed:
            return self._settle(user_id, "stale: the fact ended before the change committed")
        self._sync_or_retry(user_id)
        if not changed:
            return "no change"
        return f"{state.status.value} {sorted(reason.value for reason in state.reasons)}"

    def _sync_or_retry(self, user_id: str) -> None:
        if not self.sync_network(user_id):
            raise NetworkOutOfSync(f"the barring of {user_id} kept changing during the sync")

    def _settle(self, user_id: str, outcome: str) -> str:
        """No change to make; still make sure the network matches (a retry of an
        event whose sync failed last time lands here)."""
        self._sync_or_retry(user_id)
        return outcome

    def _sync_after_api(self, state: ServiceState) -> None:
        self.sync_soon(state.user_id)

    def sync_soon(self, user_id: str) -> bool:
        """After an API change: the change is stored whatever the network says. If
        the barring cannot be applied now, a sync task goes on the queue (retried,
        then DLQ) and the answer shows network_in_sync false: a stolen SIM must not
        keep working because the HLR was busy for a moment."""
        try:
            if self.sync_network(user_id):
                return True
        except Exception:
            logger.warning("network barring not applied yet", exc_info=True)
        if self._retries is not None:
            self._retries.send([{"task": "sync", "user_id": user_id}])
        return False

    def _change(
        self, user_id: str, change: Change, *, controllable_only: bool
    ) -> tuple[ServiceState, bool]:
        for _ in range(SAVE_ATTEMPTS):
            before = self._store.load(user_id)
            if controllable_only:
                ensure_controllable(before)
            elif before.status not in _REACTS_TO:
                return before, False  # not live (pending activation, disconnected)
            reasons = (before.reasons | change.apply) - change.lift
            dormant = _dormant_since(before, reasons, change.dormant_since)
            if reasons == before.reasons and dormant == before.dormant_since:
                return before, False
            after = before.with_reasons(reasons).model_copy(update={"dormant_since": dormant})
            record = StatusChange(
                at=self._clock.now(),
                actor=change.actor,
                cause=change.cause,
                applied=reasons - before.reasons,
                lifted=before.reasons - reasons,
                status_before=before.status,
                status_after=after.status,
            )
            try:
                stored = self._store.save(before, after, record, change.guards)
            except StaleState:
                continue
            self._announce(stored, record)
            return stored, True
        raise ConcurrentModification(f"the status of {user_id} kept changing; try again")

    def _announce(self, state: ServiceState, change: StatusChange) -> None:
        self._events.publish(status_events(state, change))

    def _view(
        self,
        state: ServiceState,
        *,
        changed: bool = True,
        history: list[StatusChange] | None = None,
    ) -> ServiceView:
        return ServiceView(
            user_id=state.user_id,
            status=state.status,
            block_reasons=sorted(state.reasons),
            barring=barring_for(state.status, state.reasons).model_dump(mode="json"),
            network_in_sync=state.network_in_sync or state.status in _NO_LINE,
            changed=changed,
            history=history or [],
        )


def status_events(state: ServiceState, change: StatusChange) -> list[DomainEvent]:
    """ServiceBlocked / ServiceUnblocked of one stored change. Ids and codes only:
    an agent's free-text note stays in the status history, off the bus."""
    common = {
        "user_id": state.user_id,
        "status": state.status.value,
        "block_reasons": sorted(state.reasons),
        "actor": change.actor,
    }
    kinds = []
    if change.applied or change.status_after is SubscriberStatus.PENDING_DISCONNECT:
        kinds.append(("ServiceBlocked", {**common, "applied": sorted(change.applied)}))
    if change.lifted and change.status_after is not SubscriberStatus.PERMANENT_DISCONNECTED:
        kinds.append(("ServiceUnblocked", {**common, "lifted": sorted(change.lifted)}))
    return [
        DomainEvent(detail_type=kind, source=SOURCE, occurred_at=change.at, detail=detail)
        for kind, detail in kinds
    ]


# Reactions leave alone lines that are not live: pending activation, rejected, gone.
_REACTS_TO = frozenset(
    {SubscriberStatus.ACTIVE, SubscriberStatus.TEMP_BLOCKED, SubscriberStatus.PENDING_DISCONNECT}
)
_NO_LINE = frozenset(
    {
        SubscriberStatus.PENDING,
        SubscriberStatus.KYC_REJECTED,
        SubscriberStatus.PERMANENT_DISCONNECTED,
    }
)


def _plan_valid(plan: Subscription | None, now: datetime) -> bool:
    return plan is not None and (plan.valid_until is None or plan.valid_until > now)


def _dormant_since(
    before: ServiceState, reasons: frozenset[BlockReason], started: datetime | None
) -> datetime | None:
    """The inactivity clock runs while the line is blocked for an unpaid bill or an
    expired plan, from the earliest such start; it stops when both are lifted."""
    if not reasons & PAYMENT_RELATED:
        return None
    candidates = [moment for moment in (before.dormant_since, started) if moment is not None]
    return min(candidates) if candidates else None
