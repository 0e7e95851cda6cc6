"""In-memory fakes of the service-control and disconnection ports, and a wired
world of both services.

``InMemoryServiceStore`` enforces the atomic rules of the DynamoDB adapters: a
save commits only while the profile's version is the one read (else
StaleState) and every guard's fact still holds (else GuardFailed), and then
writes the profile (version + 1), the history entry and the guards' effects
together, or nothing. ``mark_synced`` records the confirmed barring only for
the current version and never moves the version. The disconnection store
writes the same profiles under the same version rule.

Hooks (one-shot callables) let a test run a concurrent change at the exact
moment a race needs: between a read and the save, or while a barring order is
on its way to the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.auth import Principal, Role
from shared.clock import FixedClock
from shared.db import dormant_index_pk
from shared.errors import Forbidden, UserNotFound
from shared.events import InMemoryEventPublisher
from shared.models import Subscriber, SubscriberStatus, SubscriberType, Subscription
from shared.network import (
    UNRESTRICTED,
    BarringProfile,
    NetworkTransientError,
    ProvisioningResult,
    ServiceProfile,
)
from shared.service_control import BlockReason, ServiceState, barring_for
from shared.services.billing import IssueResult, Outcome
from shared.services.disconnection import (
    Disconnection,
    DisconnectionConfig,
    DisconnectionInProgress,
    DisconnectionNotFound,
    Disconnections,
)
from shared.services.service_control import (
    ActivePlanIs,
    EventOnce,
    Guard,
    GuardFailed,
    InvoiceFact,
    InvoiceStillUnpaid,
    OtpToConsume,
    ServiceControl,
    SimSwap,
    StaleState,
    StatusChange,
)
from tests.unit.activation.fakes import FakeNotifier, FakeWorkflows

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
USER = "u1"
MSISDN = "9876543210"
ICCID = "8991000000000000017"

OWNER = Principal(USER, frozenset({Role.SUBSCRIBER}))
OTHER_SUBSCRIBER = Principal("u2", frozenset({Role.SUBSCRIBER}))
AGENT = Principal("agent-7", frozenset({Role.AGENT}))
ADMIN = Principal("admin-1", frozenset({Role.ADMIN}))
SERVICE = Principal("scheduler", frozenset({Role.SERVICE}))

Hook = Callable[[], object]


def _take(hook: Hook | None) -> None:
    if hook is not None:
        hook()


# --- what billing and plans say ----------------------------------------------------


class FakeFacts:
    """Invoices and the active plan slot, as billing and plans would answer."""

    def __init__(self) -> None:
        self.invoices: dict[str, dict[str, InvoiceFact]] = {}
        self.plans: dict[str, Subscription] = {}

    # setup and the world moving on
    def add_invoice(
        self,
        invoice_id: str,
        *,
        user_id: str = USER,
        bill_date: date = date(2026, 10, 1),
        outstanding_paise: int = 70_682,
        overdue_notified: bool = False,
    ) -> InvoiceFact:
        fact = InvoiceFact(
            invoice_id=invoice_id,
            bill_date=bill_date,
            unpaid=True,
            overdue_notified=overdue_notified,
            outstanding_paise=outstanding_paise,
        )
        self.invoices.setdefault(user_id, {})[invoice_id] = fact
        return fact

    def notify_overdue(self, invoice_id: str, user_id: str = USER) -> None:
        """The grace period passed: billing sent InvoiceOverdue for it."""
        fact = self.invoices[user_id][invoice_id]
        self.invoices[user_id][invoice_id] = replace(fact, overdue_notified=True)

    def pay(self, invoice_id: str, user_id: str = USER) -> None:
        fact = self.invoices[user_id][invoice_id]
        self.invoices[user_id][invoice_id] = replace(fact, unpaid=False, outstanding_paise=0)

    def set_plan(self, subscription: Subscription) -> None:
        self.plans[subscription.user_id] = subscription

    # the Facts port
    def invoice(self, user_id: str, invoice_id: str) -> InvoiceFact | None:
        return self.invoices.get(user_id, {}).get(invoice_id)

    def unpaid_invoices(self, user_id: str) -> list[InvoiceFact]:
        return [f for f in self.invoices.get(user_id, {}).values() if f.unpaid]

    def active_plan(self, user_id: str) -> Subscription | None:
        return self.plans.get(user_id)


def prepaid_plan(
    started_at: datetime,
    valid_until: datetime | None,
    *,
    subscription_id: str = "sub-1",
    user_id: str = USER,
) -> Subscription:
    return Subscription(
        subscription_id=subscription_id,
        user_id=user_id,
        plan_id="PRE_DATA_299",
        plan_type=SubscriberType.PREPAID,
        price_paise=29_900,
        started_at=started_at,
        valid_until=valid_until,
    )


class FakeOtps:
    """Verified one-time passwords (the VerifiedOtps port). A verified OTP is usable
    until its window ends; the store's OtpToConsume guard uses it up."""

    def __init__(self, clock: FixedClock) -> None:
        self._clock = clock
        self.otps: dict[tuple[str, str], tuple[BlockReason, str, datetime]] = {}

    def verified(
        self,
        otp_id: str,
        reason: BlockReason,
        user_id: str = USER,
        window: timedelta = timedelta(minutes=10),
    ) -> str:
        self.otps[(user_id, otp_id)] = (reason, "VERIFIED", self._clock.now() + window)
        return otp_id

    def status(self, otp_id: str, user_id: str = USER) -> str:
        return self.otps[(user_id, otp_id)][1]

    def usable(self, user_id: str, otp_id: str) -> bool:
        found = self.otps.get((user_id, otp_id))
        return found is not None and found[1] == "VERIFIED" and self._clock.now() < found[2]

    def consume(self, user_id: str, otp_id: str) -> None:
        reason, _, until = self.otps[(user_id, otp_id)]
        self.otps[(user_id, otp_id)] = (reason, "USED", until)

    def check_verified(self, user_id: str, otp_id: str, reason: BlockReason) -> None:
        found = self.otps.get((user_id, otp_id))
        if found is None or found[0] is not reason or not self.usable(user_id, otp_id):
            raise Forbidden("the one-time password is not verified for this request")


@dataclass
class IccidClaim:
    user_id: str
    claim_status: str | None = "IN_USE"


# --- the stores ----------------------------------------------------------------------


class InMemoryServiceStore:
    """The ServiceStore port (and ServiceStates) over in-memory profiles."""

    def __init__(
        self,
        facts: FakeFacts,
        otps: FakeOtps,
        claims: dict[str, IccidClaim] | None = None,
    ) -> None:
        self._facts = facts
        self._otps = otps
        self.claims: dict[str, IccidClaim] = claims if claims is not None else {}
        self.states: dict[str, ServiceState] = {}
        self.applied_events: set[str] = set()  # the EventOnce markers
        self.changes: dict[str, list[StatusChange]] = {}  # oldest first
        self.before_save: Hook | None = None  # one-shot: a concurrent change lands first

    def put(self, state: ServiceState) -> ServiceState:
        """Setup: a profile as activation (or an earlier test step) left it."""
        self.states[state.user_id] = state
        return state

    def entries(self, user_id: str = USER) -> list[StatusChange]:
        return list(self.changes.get(user_id, []))

    # --- the port ---

    def load(self, user_id: str) -> ServiceState:
        try:
            return self.states[user_id]
        except KeyError:
            raise UserNotFound(f"no subscriber {user_id!r}") from None

    def save(
        self,
        before: ServiceState,
        after: ServiceState,
        change: StatusChange,
        guards: Sequence[Guard] = (),
    ) -> ServiceState:
        hook, self.before_save = self.before_save, None
        _take(hook)
        current = self.load(before.user_id)
        if current.version != before.version:
            raise StaleState(f"version {before.version} read, {current.version} stored")
        for guard in guards:
            if not self._holds(guard):
                raise GuardFailed(repr(guard))
        # every condition held: apply all of it
        for guard in guards:
            self._apply(guard)
        return self.write(
            current,
            change,
            status=after.status,
            reasons=after.reasons,
            dormant_since=after.dormant_since,
            iccid=after.iccid,
        )

    def mark_synced(self, user_id: str, version: int) -> bool:
        current = self.load(user_id)
        if current.version != version:
            return False
        self.states[user_id] = current.model_copy(update={"barring_version": version})
        return True

    def history(self, user_id: str, limit: int) -> list[StatusChange]:
        return list(reversed(self.changes.get(user_id, [])))[:limit]

    # --- shared with the disconnection store ---

    def write(
        self, expected: ServiceState, change: StatusChange | None, **updates: Any
    ) -> ServiceState:
        """A conditional write of profile attributes (what an UpdateItem with the
        version condition does): attributes not named keep their stored value."""
        current = self.load(expected.user_id)
        if current.version != expected.version:
            raise StaleState(f"version {expected.version} read, {current.version} stored")
        stored = current.model_copy(update={**updates, "version": current.version + 1})
        if change is not None and stored.barring_version is None:
            # As the DynamoDB store: from the first change on, unconfirmed is 0.
            stored = stored.model_copy(update={"barring_version": 0})
        self.states[stored.user_id] = stored
        if change is not None:
            self.changes.setdefault(stored.user_id, []).append(change)
        return stored

    # --- guards ---

    def _holds(self, guard: Guard) -> bool:
        if isinstance(guard, InvoiceStillUnpaid):
            fact = self._facts.invoice(guard.user_id, guard.invoice_id)
            return fact is not None and fact.unpaid
        if isinstance(guard, ActivePlanIs):
            active = self._facts.active_plan(guard.user_id)
            held = active.subscription_id if active is not None else None
            return held == guard.subscription_id
        if isinstance(guard, OtpToConsume):
            return self._otps.usable(guard.user_id, guard.otp_id)
        if isinstance(guard, EventOnce):
            return guard.event_id not in self.applied_events
        new = self.claims.get(guard.new_iccid)
        old = self.claims.get(guard.old_iccid) if guard.old_iccid else None
        return (
            new is not None
            and new.user_id == guard.user_id
            and new.claim_status == "PENDING_REPLACEMENT"
            and (guard.old_iccid is None or (old is not None and old.user_id == guard.user_id))
        )

    def _apply(self, guard: Guard) -> None:
        if isinstance(guard, EventOnce):
            self.applied_events.add(guard.event_id)
        elif isinstance(guard, OtpToConsume):
            self._otps.consume(guard.user_id, guard.otp_id)
        elif isinstance(guard, SimSwap):
            self.claims[guard.new_iccid].claim_status = "IN_USE"
            if guard.old_iccid:
                self.claims[guard.old_iccid].claim_status = "RETIRED"


class InMemoryDisconnectionStore:
    """The DisconnectionStore port, writing the same profiles as the service store."""

    def __init__(self, profiles: InMemoryServiceStore, facts: FakeFacts) -> None:
        self._profiles = profiles
        self._facts = facts
        self.records: dict[str, Disconnection] = {}
        self.released: dict[str, datetime] = {}  # msisdn -> end of its cooling-off
        self.queries: list[tuple[date, int]] = []
        self.holds = 0
        self.finalizes = 0
        self.before_open: Hook | None = None  # one-shot

    def open(self, record: Disconnection, state: ServiceState) -> None:
        hook, self.before_open = self.before_open, None
        _take(hook)
        current = self._profiles.load(record.user_id)
        if current.disconnection_id:
            raise DisconnectionInProgress(f"{current.disconnection_id} is open")
        self._profiles.write(state, None, disconnection_id=record.disconnection_id)
        self.records[record.disconnection_id] = record

    def get(self, disconnection_id: str) -> Disconnection:
        try:
            return self.records[disconnection_id]
        except KeyError:
            raise DisconnectionNotFound(f"no disconnection {disconnection_id!r}") from None

    def put(self, record: Disconnection) -> None:
        self.records[record.disconnection_id] = record

    def hold(self, record: Disconnection, state: ServiceState, change: StatusChange) -> None:
        self._profiles.write(state, change, status=SubscriberStatus.PENDING_DISCONNECT)
        self.records[record.disconnection_id] = record
        self.holds += 1

    def finalize(self, record: Disconnection, state: ServiceState, change: StatusChange) -> None:
        assert record.msisdn_released_at is not None, "the number's release time is set"
        self._profiles.write(
            state,
            change,
            status=SubscriberStatus.PERMANENT_DISCONNECTED,
            reasons=frozenset(),
            dormant_since=None,  # out of the inactivity index
        )
        self._facts.plans.pop(record.user_id, None)  # the active plan ended
        self.released[record.msisdn] = record.msisdn_released_at
        if state.iccid and state.iccid in self._profiles.claims:
            self._profiles.claims[state.iccid].claim_status = "RETIRED"
        self.records[record.disconnection_id] = record
        self.finalizes += 1

    def dormant_since_on(self, day: date, shard: int) -> Iterable[str]:
        self.queries.append((day, shard))
        wanted = f"DORMANT#{day.isoformat()}#{shard}"
        return [
            state.user_id
            for state in self._profiles.states.values()
            if state.dormant_since is not None
            and dormant_index_pk(state.dormant_since, state.user_id) == wanted
        ]


# --- the other ports -------------------------------------------------------------------


class FakeNetwork:
    """The HLR: records every order and shows each line's current barring.

    ``fail_next``: that many orders fail transiently before reaching the HLR.
    ``fail_after_effect``: that many barring orders take effect but their reply
    times out (the caller sees a transient error). ``during_apply``: a one-shot
    hook run while a barring order is in flight; the order lands after it.
    """

    def __init__(self) -> None:
        self.barring_orders: list[tuple[str, BarringProfile]] = []
        self.deprovisioned: list[str] = []
        self.shown: dict[str, BarringProfile] = {}
        self.fail_next = 0
        self.fail_after_effect = 0
        self.during_apply: Hook | None = None

    def profile_of(self, msisdn: str = MSISDN) -> BarringProfile:
        """What the line may do now (as provisioned until barred)."""
        return self.shown.get(msisdn, UNRESTRICTED)

    def provision(
        self,
        msisdn: str,  # noqa: ARG002
        iccid: str,  # noqa: ARG002
        profile: ServiceProfile,  # noqa: ARG002
        *,
        attempt: int,  # noqa: ARG002
    ) -> ProvisioningResult:
        return self._reply()

    def deprovision(self, msisdn: str) -> ProvisioningResult:
        self._transient()
        self.deprovisioned.append(msisdn)
        return self._reply()

    def apply_barring(self, msisdn: str, profile: BarringProfile) -> ProvisioningResult:
        self.barring_orders.append((msisdn, profile))
        self._transient()
        hook, self.during_apply = self.during_apply, None
        _take(hook)
        self.shown[msisdn] = profile
        if self.fail_after_effect:
            self.fail_after_effect -= 1
            raise NetworkTransientError("HLR timed out (the order was applied)")
        return self._reply()

    def _transient(self) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise NetworkTransientError("HLR link down")

    def _reply(self) -> ProvisioningResult:
        return ProvisioningResult(reference=f"HLR-{len(self.barring_orders)}")


class FakeSubscribers:
    def __init__(self) -> None:
        self.subscribers: dict[str, Subscriber] = {}
        self.wallets: dict[str, int] = {}

    def put(self, subscriber: Subscriber, wallet_paise: int = 0) -> None:
        self.subscribers[subscriber.user_id] = subscriber
        self.wallets[subscriber.user_id] = wallet_paise

    def get_subscriber(self, user_id: str) -> Subscriber:
        try:
            return self.subscribers[user_id]
        except KeyError:
            raise UserNotFound(f"no subscriber {user_id!r}") from None

    def wallet_balance(self, user_id: str) -> int:
        return self.wallets.get(user_id, 0)


class FakeFinalBilling:
    """Issues the final invoice once (an unpaid invoice in the facts)."""

    def __init__(self, facts: FakeFacts, amount_paise: int = 41_300) -> None:
        self._facts = facts
        self.amount_paise = amount_paise
        self.calls: list[tuple[str, datetime | None]] = []

    def final_invoice(self, user_id: str, until: datetime | None = None) -> IssueResult:
        self.calls.append((user_id, until))
        assert until is not None
        invoice_id = f"INV-{user_id}-{until.date().isoformat()}"
        if self._facts.invoice(user_id, invoice_id) is not None:
            return IssueResult(Outcome.ALREADY_ISSUED, invoice_id)
        self._facts.add_invoice(
            invoice_id,
            user_id=user_id,
            bill_date=until.date(),
            outstanding_paise=self.amount_paise,
        )
        return IssueResult(Outcome.ISSUED, invoice_id)


class FakeQueue:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, messages: list[dict[str, Any]]) -> int:
        self.messages.extend(messages)
        return len(messages)


# --- the wired world -------------------------------------------------------------------


def subscriber(
    subscriber_type: SubscriberType = SubscriberType.POSTPAID,
    *,
    user_id: str = USER,
    msisdn: str = MSISDN,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
) -> Subscriber:
    return Subscriber(
        user_id=user_id,
        msisdn=msisdn,
        subscriber_type=subscriber_type,
        state="KA",
        status=status,
        bill_cycle_day=1,
        created_at=T0 - timedelta(days=400),
        name="Asha Rao",
        email="asha@example.in",
        phone="9123456780",
        iccid=ICCID,
    )


@dataclass
class World:
    clock: FixedClock
    facts: FakeFacts
    otps: FakeOtps
    store: InMemoryServiceStore
    network: FakeNetwork
    events: InMemoryEventPublisher
    service: ServiceControl
    subscribers: FakeSubscribers
    billing: FakeFinalBilling
    disconnections_store: InMemoryDisconnectionStore
    starter: FakeWorkflows
    notifier: FakeNotifier
    disconnections: Disconnections
    config: DisconnectionConfig = field(default_factory=DisconnectionConfig)

    def state(self, user_id: str = USER) -> ServiceState:
        return self.store.load(user_id)

    def add_line(
        self,
        *,
        user_id: str = USER,
        status: SubscriberStatus = SubscriberStatus.ACTIVE,
        reasons: Iterable[BlockReason] = (),
        subscriber_type: SubscriberType = SubscriberType.POSTPAID,
        wallet_paise: int = 0,
        dormant_since: datetime | None = None,
        synced: bool = True,
    ) -> ServiceState:
        """A live line; ``synced``: the network shows its barring (as the last
        sync left it)."""
        reasons = frozenset(reasons)
        version = 3
        restricted = bool(reasons) or status is not SubscriberStatus.ACTIVE
        msisdn = MSISDN if user_id == USER else f"9{sum(user_id.encode()):09d}"
        state = ServiceState(
            user_id=user_id,
            msisdn=msisdn,
            iccid=ICCID if user_id == USER else None,
            status=status,
            reasons=reasons,
            version=version,
            barring_version=version if restricted and synced else None,
            dormant_since=dormant_since,
        )
        if restricted and synced:
            self.network.shown[msisdn] = barring_for(status, reasons)
        self.store.put(state)
        if state.iccid:
            self.store.claims[state.iccid] = IccidClaim(user_id)
        self.subscribers.put(
            subscriber(subscriber_type, user_id=user_id, msisdn=msisdn, status=status), wallet_paise
        )
        return state


def make_world(config: DisconnectionConfig | None = None) -> World:
    clock = FixedClock(T0)
    facts = FakeFacts()
    otps = FakeOtps(clock)
    store = InMemoryServiceStore(facts, otps)
    network = FakeNetwork()
    events = InMemoryEventPublisher()
    service = ServiceControl(
        store=store, facts=facts, network=network, events=events, clock=clock, otps=otps
    )
    subscribers = FakeSubscribers()
    billing = FakeFinalBilling(facts)
    disconnections_store = InMemoryDisconnectionStore(store, facts)
    starter = FakeWorkflows()
    notifier = FakeNotifier()
    config = config or DisconnectionConfig()
    disconnections = Disconnections(
        store=disconnections_store,
        states=store,
        subscribers=subscribers,
        facts=facts,
        billing=billing,
        network=network,
        sync=service,
        starter=starter,
        notifier=notifier,
        events=events,
        clock=clock,
        config=config,
    )
    return World(
        clock=clock,
        facts=facts,
        otps=otps,
        store=store,
        network=network,
        events=events,
        service=service,
        subscribers=subscribers,
        billing=billing,
        disconnections_store=disconnections_store,
        starter=starter,
        notifier=notifier,
        disconnections=disconnections,
        config=config,
    )
