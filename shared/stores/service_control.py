"""Service control's items in the single table and the adapters behind the ports
of :mod:`shared.services.service_control` and :mod:`shared.services.disconnection`.

| item | PK | SK | notes |
|---|---|---|---|
| profile (shared.db) | ``USER#<id>`` | ``PROFILE`` | reasons, versions, dormant_since (1) |
| status history | ``USER#<id>`` | ``STATUS#<at>#<version>`` | one per change |
| disconnection | ``DISC#<id>`` | ``DISC`` | the record as JSON |
| MSISDN index (shared.db) | ``MSISDN#<msisdn>`` | ``MSISDN`` | TTL once disconnected |
| ICCID claim (activation) | ``ICCID#<iccid>`` | ``ICCID`` | ``claim_status`` |

(1) GSI1 ``DORMANT#<IST day>#<shard>`` / ``USER#<id>`` while ``dormant_since`` is set.

Every change of the profile is one TransactWriteItems: the profile (condition: its
version is the one read; the version + 1), its history entry, and the items the
change depends on or carries along (guards, the SIM claims, the plan, the number).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import assert_never, cast

from pynamodb.attributes import (
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from shared.clock import isoformat
from shared.db import (
    ACTIVE_SUBSCRIPTION_SK,
    ActiveSubscriptionItem,
    DynamoSubscriptionStore,
    Item,
    MsisdnItem,
    SubscriberItem,
    SubscriptionPeriodItem,
    conditional_update,
    dormant_index_pk,
    transact,
    user_pk,
)
from shared.errors import ConcurrentModification, UserNotFound
from shared.models import SubscriberStatus, Subscription
from shared.service_control import BlockReason, ServiceState
from shared.services.billing import (
    UNPAID,
    InvoiceNotFound,
    InvoiceStatus,
    outstanding_paise,
    parse_invoice_id,
)
from shared.services.disconnection import (
    Disconnection,
    DisconnectionInProgress,
    DisconnectionNotFound,
)
from shared.services.service_control import (
    ActivePlanIs,
    EventOnce,
    Guard,
    GuardFailed,
    InvoiceFact,
    InvoiceStillUnpaid,
    OtpToConsume,
    SimSwap,
    StaleState,
    StatusChange,
)
from shared.stores.activation import ICCID_SK, IccidClaimItem, iccid_pk, msisdn_pk
from shared.stores.billing import InvoiceItem, invoice_sk
from shared.stores.otp import OtpItem, OtpStatus, otp_sk

PROFILE_SK = "PROFILE"
STATUS_PREFIX = "STATUS#"
DISCONNECTION_SK = "DISC"
MSISDN_SK = "MSISDN"
COOLING_OFF = "COOLING_OFF"

# ICCID claim statuses (absent: in use since activation).
PENDING_REPLACEMENT = "PENDING_REPLACEMENT"
IN_USE = "IN_USE"
RETIRED = "RETIRED"

_UNPAID = tuple(sorted(status.value for status in UNPAID))


def disconnection_pk(disconnection_id: str) -> str:
    return f"DISC#{disconnection_id}"


def status_sk(at: datetime, version: int) -> str:
    """Time first, for people reading the table; then the profile version the change
    produced, which is unique (the transaction is conditional on it) and orders the
    changes made within one second."""
    return f"{STATUS_PREFIX}{isoformat(at)}#{version:010d}"


# --- items ----------------------------------------------------------------------------


class _Profile(Item):
    """The profile as the target of service control's updates, which name
    SubscriberItem's attributes. Not SubscriberItem itself: PynamoDB adds
    ``version + 1`` to every update of a model with a VersionAttribute, and
    mark_synced and open must leave the version alone (the network's barring is
    confirmed per version); the other writes set it explicitly."""


class StatusChangeItem(Item):
    user_id = UnicodeAttribute()
    at = UTCDateTimeAttribute()
    actor = UnicodeAttribute()
    cause = UnicodeAttribute()
    applied = ListAttribute[str](default=list)
    lifted = ListAttribute[str](default=list)
    status_before = UnicodeAttribute()
    status_after = UnicodeAttribute()

    def to_domain(self) -> StatusChange:
        return StatusChange(
            at=self.at,
            actor=self.actor,
            cause=self.cause,
            applied=frozenset(BlockReason(reason) for reason in self.applied or ()),
            lifted=frozenset(BlockReason(reason) for reason in self.lifted or ()),
            status_before=SubscriberStatus(self.status_before),
            status_after=SubscriberStatus(self.status_after),
        )


class EventMarkItem(Item):
    """``EVENT#<event_id>/EVENT``: this domain event already changed a status."""

    expires_at = NumberAttribute()  # TTL: redeliveries come within days, not months


EVENT_MARK_TTL = timedelta(days=30)


class DisconnectionItem(Item):
    user_id = UnicodeAttribute()
    status = UnicodeAttribute()
    reason = UnicodeAttribute()
    record = UnicodeAttribute()  # the Disconnection as JSON; the rest is for people


class MsisdnReleaseMark(MsisdnItem):
    """Service control's attributes of the MSISDN index item: the number cools off
    (still the old subscriber's: late CDRs rate to them) until the TTL removes it."""

    status = UnicodeAttribute(null=True)
    released_at = UTCDateTimeAttribute(null=True)
    expires_at = NumberAttribute(null=True)  # TTL, epoch seconds


# --- one transaction, its cancellation translated -----------------------------------------


@dataclass(frozen=True)
class _Op:
    rank: int  # PynamoDB sends condition checks, then deletes, puts, updates
    add: Callable[[TransactWrite], None]
    error: Exception | None


class _Writes:
    """The items of one TransactWriteItems, each conditional one with the error its
    failed condition means.

    shared.db's ``_transaction`` maps errors by position, but PynamoDB reorders the
    items by kind, and the profile must win over the guards: a request repeated
    after its twin committed fails both its version and its (consumed) OTP, and
    must re-read (StaleState) and find nothing to do rather than fail. So the
    errors rank in the order they were added, the profile's first.
    """

    def __init__(self) -> None:
        self._ops: list[_Op] = []
        self._errors: list[Exception] = []

    def check(
        self, model: type[Model], key: tuple[str, str], condition: Condition, error: Exception
    ) -> None:
        self._add(0, lambda tx: tx.condition_check(model, *key, condition=condition), error)

    def delete(
        self, item: Model, condition: Condition | None = None, error: Exception | None = None
    ) -> None:
        self._add(1, lambda tx: tx.delete(item, condition=condition), error)

    def put(
        self, item: Model, condition: Condition | None = None, error: Exception | None = None
    ) -> None:
        self._add(2, lambda tx: tx.save(item, condition=condition), error)

    def update(
        self,
        item: Model,
        actions: list[Action],
        condition: Condition | None = None,
        error: Exception | None = None,
    ) -> None:
        self._add(3, lambda tx: tx.update(item, actions=actions, condition=condition), error)

    def _add(
        self, rank: int, add: Callable[[TransactWrite], None], error: Exception | None
    ) -> None:
        self._ops.append(_Op(rank, add, error))
        if error is not None:
            self._errors.append(error)

    def commit(self) -> None:
        ordered = sorted(self._ops, key=lambda op: op.rank)  # stable within a kind

        def build(tx: TransactWrite) -> None:
            for op in ordered:
                op.add(tx)

        try:
            transact(build)
        except TransactWriteError as error:
            meaning = self._meaning(ordered, error)
            if meaning is error:
                raise
            raise meaning from error

    def _meaning(self, ordered: list[_Op], error: TransactWriteError) -> Exception:
        failed = [
            op.error
            for op, reason in zip(ordered, error.cancellation_reasons, strict=False)
            if reason is not None and reason.code == "ConditionalCheckFailed"
        ]
        named = [item_error for item_error in failed if item_error is not None]
        if named:
            return min(named, key=self._errors.index)
        if failed or error.cause_response_code == "TransactionCanceledException":
            return ConcurrentModification("a concurrent change won; try again")
        return error


def _profile(user_id: str) -> _Profile:
    return _Profile(user_pk(user_id), PROFILE_SK)


def _record_change(
    writes: _Writes, state: ServiceState, actions: list[Action], change: StatusChange
) -> int:
    """The profile update (condition: still ``state.version``; the version + 1) and
    its history entry, added first so that a moved version decides the outcome.
    Returns the new version."""
    version = state.version + 1
    writes.update(
        _profile(state.user_id),
        [
            *actions,
            SubscriberItem.version.set(version),
            # From the first change on, "never confirmed" is 0, not absent: a bar whose
            # confirmation was lost must not look in sync once the reasons are gone.
            SubscriberItem.barring_version.set(SubscriberItem.barring_version | 0),
        ],
        condition=_at_version(state),
        error=StaleState(f"the profile of {state.user_id} changed meanwhile"),
    )
    writes.put(
        StatusChangeItem(
            user_pk(state.user_id),
            status_sk(change.at, version),
            entity="STATUS_CHANGE",
            user_id=state.user_id,
            at=change.at,
            actor=change.actor,
            cause=change.cause,
            applied=sorted(reason.value for reason in change.applied),
            lifted=sorted(reason.value for reason in change.lifted),
            status_before=change.status_before.value,
            status_after=change.status_after.value,
        )
    )
    return version


def _at_version(state: ServiceState) -> Condition:
    condition: Condition = SubscriberItem.version == state.version
    if not state.version:  # never written through PynamoDB's VersionAttribute (starts at 1)
        condition = SubscriberItem.version.does_not_exist()
    return condition


def _load_state(user_id: str) -> ServiceState:
    try:
        item = SubscriberItem.get(user_pk(user_id), PROFILE_SK, consistent_read=True)
    except SubscriberItem.DoesNotExist:
        raise UserNotFound(f"no subscriber {user_id!r}") from None
    return ServiceState(
        user_id=item.user_id,
        msisdn=item.msisdn,
        iccid=item.iccid,
        status=SubscriberStatus(item.status),
        reasons=frozenset(BlockReason(reason) for reason in item.block_reasons or ()),
        version=int(item.version or 0),
        barring_version=None if item.barring_version is None else int(item.barring_version),
        dormant_since=item.dormant_since,
        disconnection_id=item.disconnection_id,
    )


def _plan_is(subscription_id: str | None) -> Condition:
    condition: Condition = ActiveSubscriptionItem.subscription_id == subscription_id
    if subscription_id is None:
        condition = ActiveSubscriptionItem.pk.does_not_exist()
    return condition


# --- ServiceStore ---------------------------------------------------------------------


class DynamoServiceStore:
    """Implements :class:`shared.services.service_control.ServiceStore` and
    :class:`shared.services.disconnection.ServiceStates`."""

    def load(self, user_id: str) -> ServiceState:
        return _load_state(user_id)

    def save(
        self,
        before: ServiceState,
        after: ServiceState,
        change: StatusChange,
        guards: Sequence[Guard] = (),
    ) -> ServiceState:
        user_id = before.user_id
        actions: list[Action] = [SubscriberItem.status.set(after.status.value)]
        if after.reasons:
            actions.append(SubscriberItem.block_reasons.set({r.value for r in after.reasons}))
        else:  # a DynamoDB set cannot be empty
            actions.append(SubscriberItem.block_reasons.remove())
        if after.iccid and after.iccid != before.iccid:
            actions.append(SubscriberItem.iccid.set(after.iccid))
        if after.dormant_since is None:
            actions += [
                SubscriberItem.dormant_since.remove(),
                SubscriberItem.gsi1pk.remove(),
                SubscriberItem.gsi1sk.remove(),
            ]
        else:
            actions += [
                SubscriberItem.dormant_since.set(after.dormant_since),
                SubscriberItem.gsi1pk.set(dormant_index_pk(after.dormant_since, user_id)),
                SubscriberItem.gsi1sk.set(user_pk(user_id)),
            ]
        writes = _Writes()
        version = _record_change(writes, before, actions, change)
        for guard in guards:
            self._guard(writes, guard, change.at)
        writes.commit()
        barring = 0 if before.barring_version is None else before.barring_version
        return after.model_copy(update={"version": version, "barring_version": barring})

    @staticmethod
    def _guard(writes: _Writes, guard: Guard, now: datetime) -> None:
        failed = GuardFailed(f"{guard} no longer holds")
        if isinstance(guard, InvoiceStillUnpaid):
            try:
                _, label = parse_invoice_id(guard.invoice_id)
            except InvoiceNotFound:
                raise failed from None
            writes.check(
                InvoiceItem,
                (user_pk(guard.user_id), invoice_sk(label, guard.invoice_id)),
                InvoiceItem.status.is_in(*_UNPAID),
                failed,
            )
        elif isinstance(guard, ActivePlanIs):
            writes.check(
                ActiveSubscriptionItem,
                (user_pk(guard.user_id), ACTIVE_SUBSCRIPTION_SK),
                _plan_is(guard.subscription_id),
                failed,
            )
        elif isinstance(guard, OtpToConsume):
            writes.update(
                OtpItem(user_pk(guard.user_id), otp_sk(guard.otp_id)),
                [OtpItem.status.set(OtpStatus.USED)],
                condition=(OtpItem.status == OtpStatus.VERIFIED) & (OtpItem.verified_until > now),
                error=failed,
            )
        elif isinstance(guard, SimSwap):
            writes.update(
                IccidClaimItem(iccid_pk(guard.new_iccid), ICCID_SK),
                [IccidClaimItem.claim_status.set(IN_USE)],
                condition=(IccidClaimItem.user_id == guard.user_id)
                & (IccidClaimItem.claim_status == PENDING_REPLACEMENT),
                error=failed,
            )
            if guard.old_iccid:
                writes.update(
                    IccidClaimItem(iccid_pk(guard.old_iccid), ICCID_SK),
                    [IccidClaimItem.claim_status.set(RETIRED)],
                    condition=IccidClaimItem.user_id == guard.user_id,
                    error=failed,
                )
        elif isinstance(guard, EventOnce):
            writes.put(
                EventMarkItem(
                    f"EVENT#{guard.event_id}",
                    "EVENT",
                    entity="EVENT_APPLIED",
                    expires_at=int((now + EVENT_MARK_TTL).timestamp()),
                ),
                condition=EventMarkItem.pk.does_not_exist(),
                error=failed,
            )
        else:
            assert_never(guard)

    def mark_synced(self, user_id: str, version: int) -> bool:
        return conditional_update(
            _profile(user_id),
            [SubscriberItem.barring_version.set(version)],
            SubscriberItem.version == version,
        )

    def history(self, user_id: str, limit: int) -> list[StatusChange]:
        query = StatusChangeItem.query(
            user_pk(user_id),
            StatusChangeItem.sk.startswith(STATUS_PREFIX),
            scan_index_forward=False,
            limit=limit,
        )
        return [item.to_domain() for item in query]


# --- Facts ----------------------------------------------------------------------------

# What an InvoiceFact needs: not the invoice document (the JSON of every line).
_FACT_ATTRIBUTES = [
    "invoice_id",
    "status",
    "bill_date",
    "total_paise",
    "paid_paise",
    "overdue_notified",
]


class DynamoFacts:
    """Implements :class:`shared.services.service_control.Facts` over billing's
    invoices and the active plan slot."""

    def __init__(self, plans: DynamoSubscriptionStore | None = None) -> None:
        self._plans = plans or DynamoSubscriptionStore()

    def invoice(self, user_id: str, invoice_id: str) -> InvoiceFact | None:
        try:
            owner, label = parse_invoice_id(invoice_id)
        except InvoiceNotFound:
            return None
        if owner != user_id:
            return None
        try:
            item = InvoiceItem.get(
                user_pk(user_id),
                invoice_sk(label, invoice_id),
                consistent_read=True,
                attributes_to_get=_FACT_ATTRIBUTES,
            )
        except InvoiceItem.DoesNotExist:
            return None
        return _fact(item)

    def unpaid_invoices(self, user_id: str) -> list[InvoiceFact]:
        query = InvoiceItem.query(
            user_pk(user_id),
            InvoiceItem.sk.startswith("INV#"),
            filter_condition=InvoiceItem.status.is_in(*_UNPAID),
            consistent_read=True,
            attributes_to_get=_FACT_ATTRIBUTES,
        )
        return [_fact(item) for item in query]

    def active_plan(self, user_id: str) -> Subscription | None:
        return self._plans.get_active(user_id)


def _fact(item: InvoiceItem) -> InvoiceFact:
    return InvoiceFact(
        invoice_id=item.invoice_id,
        bill_date=date.fromisoformat(item.bill_date),
        unpaid=item.status in _UNPAID,
        overdue_notified=bool(item.overdue_notified),
        outstanding_paise=outstanding_paise(
            InvoiceStatus(item.status), int(item.total_paise), int(item.paid_paise or 0)
        ),
    )


# --- DisconnectionStore ---------------------------------------------------------------


class DynamoDisconnectionStore:
    """Implements :class:`shared.services.disconnection.DisconnectionStore`."""

    def open(self, record: Disconnection, state: ServiceState) -> None:
        writes = _Writes()
        # The version is left alone: nothing the network shows changes.
        writes.update(
            _profile(state.user_id),
            [SubscriberItem.disconnection_id.set(record.disconnection_id)],
            condition=_at_version(state) & SubscriberItem.disconnection_id.does_not_exist(),
            error=StaleState(f"the profile of {state.user_id} changed meanwhile"),
        )
        writes.put(_record_item(record), condition=DisconnectionItem.pk.does_not_exist())
        try:
            writes.commit()
        except StaleState:
            current = _load_state(state.user_id)
            if current.disconnection_id:
                raise DisconnectionInProgress(
                    f"disconnection {current.disconnection_id} is already under way",
                    details={"disconnection_id": current.disconnection_id},
                ) from None
            raise

    def get(self, disconnection_id: str) -> Disconnection:
        try:
            item = DisconnectionItem.get(
                disconnection_pk(disconnection_id), DISCONNECTION_SK, consistent_read=True
            )
        except DisconnectionItem.DoesNotExist:
            raise DisconnectionNotFound(f"no disconnection {disconnection_id!r}") from None
        return Disconnection.model_validate_json(item.record)

    def put(self, record: Disconnection) -> None:
        _record_item(record).save()

    def hold(self, record: Disconnection, state: ServiceState, change: StatusChange) -> None:
        writes = _Writes()
        status = SubscriberItem.status.set(SubscriberStatus.PENDING_DISCONNECT.value)
        _record_change(writes, state, [status], change)
        writes.put(_record_item(record))
        writes.commit()

    def finalize(self, record: Disconnection, state: ServiceState, change: StatusChange) -> None:
        if state.status is SubscriberStatus.PERMANENT_DISCONNECTED:
            return  # an earlier attempt committed
        if record.msisdn_released_at is None:
            raise ValueError("a finalized disconnection needs msisdn_released_at")
        writes = _Writes()
        _record_change(
            writes,
            state,
            [
                SubscriberItem.status.set(SubscriberStatus.PERMANENT_DISCONNECTED.value),
                SubscriberItem.block_reasons.remove(),
                SubscriberItem.dormant_since.remove(),  # out of the inactivity index
                SubscriberItem.gsi1pk.remove(),
                SubscriberItem.gsi1sk.remove(),
                SubscriberItem.gsi2pk.remove(),  # out of the bill-cycle index
                SubscriberItem.gsi2sk.remove(),
            ],
            change,
        )
        self._end_plan(writes, state.user_id, change.at)
        released = record.msisdn_released_at
        writes.update(
            MsisdnReleaseMark(msisdn_pk(state.msisdn), MSISDN_SK),
            [
                MsisdnReleaseMark.status.set(COOLING_OFF),
                MsisdnReleaseMark.released_at.set(released),
                MsisdnReleaseMark.expires_at.set(int(released.timestamp())),
            ],
            condition=MsisdnReleaseMark.user_id == state.user_id,
        )
        if state.iccid:
            writes.update(
                IccidClaimItem(iccid_pk(state.iccid), ICCID_SK),
                [IccidClaimItem.claim_status.set(RETIRED)],
                condition=IccidClaimItem.user_id == state.user_id,
            )
        writes.put(_record_item(record))
        try:
            writes.commit()
        except StaleState:
            if _load_state(state.user_id).status is SubscriberStatus.PERMANENT_DISCONNECTED:
                return
            raise

    @staticmethod
    def _end_plan(writes: _Writes, user_id: str, at: datetime) -> None:
        """The active plan slot freed and its period closed. Conditional on the slot
        as read: a plan bought meanwhile cancels the step (retried), so no period
        is left open."""
        try:
            active = ActiveSubscriptionItem.get(
                user_pk(user_id), ACTIVE_SUBSCRIPTION_SK, consistent_read=True
            )
        except ActiveSubscriptionItem.DoesNotExist:
            writes.check(
                ActiveSubscriptionItem,
                (user_pk(user_id), ACTIVE_SUBSCRIPTION_SK),
                _plan_is(None),
                ConcurrentModification("a plan was bought meanwhile; try again"),
            )
            return
        writes.delete(
            ActiveSubscriptionItem(user_pk(user_id), ACTIVE_SUBSCRIPTION_SK),
            condition=_plan_is(active.subscription_id),
            error=ConcurrentModification("the active plan changed meanwhile; try again"),
        )
        period = SubscriptionPeriodItem(user_pk(user_id), active.period_sk)
        writes.update(
            period,
            # Kept if already closed: ending the line does not rewrite its history.
            [SubscriptionPeriodItem.ended_at.set(SubscriptionPeriodItem.ended_at | at)],
            condition=SubscriptionPeriodItem.pk.exists(),
        )

    def dormant_since_on(self, day: date, shard: int) -> Iterable[str]:
        for item in SubscriberItem.gsi1.query(
            f"DORMANT#{day.isoformat()}#{shard}", attributes_to_get=["user_id"]
        ):
            yield cast(SubscriberItem, item).user_id


def _record_item(record: Disconnection) -> DisconnectionItem:
    return DisconnectionItem(
        disconnection_pk(record.disconnection_id),
        DISCONNECTION_SK,
        entity="DISCONNECTION",
        user_id=record.user_id,
        status=record.status.value,
        reason=record.reason.value,
        record=record.model_dump_json(),
    )
