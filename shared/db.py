"""The single DynamoDB table (DESIGN.md §5): PynamoDB item models and the
repositories that implement the services' store ports.

Every item has ``PK``/``SK``; ``GSI1``/``GSI2`` serve listings and sharded
sweeps. All multi-item changes go through one ``TransactWriteItems`` whose
conditions, not earlier reads, decide whether the change may happen.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from pydantic import BaseModel
from pynamodb.attributes import (
    BooleanAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.connection import Connection, TableConnection
from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from shared.clock import IST
from shared.errors import (
    ActivePlanExists,
    ConcurrentModification,
    InsufficientBalance,
    PlanNotFound,
    UserNotFound,
)
from shared.models import OverageRates, Plan, Subscriber, SubscriberType, Subscription
from shared.settings import get_settings

# Key attribute names, shared with the CDK table definition (infra/) and test fixtures.
PK, SK = "PK", "SK"
GSI1, GSI1PK, GSI1SK = "GSI1", "GSI1PK", "GSI1SK"
GSI2, GSI2PK, GSI2SK = "GSI2", "GSI2PK", "GSI2SK"
TTL_ATTRIBUTE = "expires_at"
# Bill-cycle sweeps query GSI2 by "CYCLE#<day>#<shard>"; shards spread one day's subscribers.
CYCLE_SHARDS = 8
ACTIVE_SUBSCRIPTION_SK = "SUB#ACTIVE"


def user_pk(user_id: str) -> str:
    return f"USER#{user_id}"


class _TableMeta:
    table_name = get_settings().table_name
    region = get_settings().aws_region


class Gsi1(GlobalSecondaryIndex["Item"]):
    class Meta:
        index_name = GSI1
        projection = AllProjection()

    gsi1pk = UnicodeAttribute(hash_key=True, attr_name=GSI1PK)
    gsi1sk = UnicodeAttribute(range_key=True, attr_name=GSI1SK)


class Gsi2(GlobalSecondaryIndex["Item"]):
    class Meta:
        index_name = GSI2
        projection = AllProjection()

    gsi2pk = UnicodeAttribute(hash_key=True, attr_name=GSI2PK)
    gsi2sk = UnicodeAttribute(range_key=True, attr_name=GSI2SK)


class Item(Model):
    """Base of every item in the table."""

    class Meta(_TableMeta):
        pass

    pk = UnicodeAttribute(hash_key=True, attr_name=PK)
    sk = UnicodeAttribute(range_key=True, attr_name=SK)
    entity = UnicodeAttribute()

    @classmethod
    def _get_connection(cls) -> TableConnection:
        """PynamoDB gives each model class its own botocore session and client, and
        each loads DynamoDB's service model again: about 100 ms per model class a
        container first uses. They share the process's one client instead
        (botocore clients are thread-safe; only creating them is not)."""
        table = super()._get_connection()
        if table.connection._client is None:
            table.connection._client = connection().client
        return table


def bind_table(table_name: str, region: str | None = None) -> None:
    """Point every item model at another table (tests, the local runtime)."""
    _TableMeta.table_name = table_name
    if region:
        _TableMeta.region = region
    connection.cache_clear()  # first: a model connected meanwhile takes the new client
    models: list[type[Model]] = [Item, *_all_subclasses(Item)]
    for model in models:
        model._connection = None  # PynamoDB caches the table name in the connection


def current_table() -> tuple[str, str]:
    """The table name and region the models are bound to now."""
    return _TableMeta.table_name, _TableMeta.region


def _all_subclasses(cls: type[Model]) -> Iterable[type[Model]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


@lru_cache(maxsize=1)
def connection() -> Connection:
    """One connection (one botocore client) per process for transactions: creating
    a client costs about 100 ms, too much to pay on every request."""
    return Connection(region=_TableMeta.region)


CONDITION_FAILED = "ConditionalCheckFailedException"
# A transaction cancelled because another one held one of its items wrote nothing
# and may be sent again as it is (AWS's advice): this many sends in all.
CONFLICT_ATTEMPTS = 3
CONFLICT_BACKOFF_SECONDS = 0.02  # before the second send; doubles after


def transact(build: Callable[[TransactWrite], None]) -> None:
    """One TransactWriteItems of the items ``build`` adds (once: PynamoDB adds a
    version increment to an update's actions), sent by :func:`send_transaction`.
    Raises TransactWriteError as PynamoDB does."""
    tx = TransactWrite(connection=connection())
    build(tx)
    send_transaction(lambda: tx.__exit__(None, None, None))  # PynamoDB's exit commits


def send_transaction(send: Callable[[], None]) -> None:
    """``send`` (one TransactWriteItems), sent again while only a concurrent
    transaction cancels it: a change must not fail, or wait minutes for a queue's
    redelivery, because another writer held one of its items for a moment."""
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            send()
            return
        except TransactWriteError as error:
            if attempt + 1 == CONFLICT_ATTEMPTS or not _cancelled_by_conflict(error):
                raise
        backoff = CONFLICT_BACKOFF_SECONDS * 2**attempt
        # Jittered, so two writers that conflicted do not meet again in step.
        time.sleep(backoff / 2 + random.uniform(0, backoff / 2))  # noqa: S311 - not a secret


def _cancelled_by_conflict(error: TransactWriteError) -> bool:
    """Cancelled for a concurrent transaction only: no condition failed."""
    codes = {reason.code for reason in error.cancellation_reasons if reason is not None}
    return "TransactionConflict" in codes and "ConditionalCheckFailed" not in codes


def conditional_update(item: Model, actions: list[Any], condition: Condition) -> bool:
    """One conditional UpdateItem: True when applied (the item then holds the stored
    values), False when its condition did not hold; other errors propagate."""
    try:
        item.update(actions=actions, condition=condition)
    except UpdateError as error:
        if error.cause_response_code == CONDITION_FAILED:
            return False
        raise
    return True


class InGsi1(Item):
    """Base of the item types that may carry GSI1 keys (set only while indexed)."""

    gsi1 = Gsi1()
    gsi1pk = UnicodeAttribute(attr_name=GSI1PK, null=True)
    gsi1sk = UnicodeAttribute(attr_name=GSI1SK, null=True)


# --- plans -----------------------------------------------------------------


class PlanItem(InGsi1):
    plan_id = UnicodeAttribute()
    name = UnicodeAttribute()
    type = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    price_paise = NumberAttribute()
    price_includes_gst = BooleanAttribute()
    validity_days = NumberAttribute()
    data_bytes = NumberAttribute()
    voice_seconds = NumberAttribute(null=True)
    sms = NumberAttribute()
    overage = MapAttribute[str, Any]()
    renewal_rule = UnicodeAttribute()
    repeat_purchase = UnicodeAttribute(default="EXTEND")  # items stored before issue 8: EXTEND
    active = BooleanAttribute(default=True)

    @classmethod
    def from_domain(cls, plan: Plan) -> PlanItem:
        fields = plan.model_dump(mode="json", exclude={"overage"})
        return cls(
            pk=f"PLAN#{plan.plan_id}",
            sk="PLAN",
            entity="PLAN",
            gsi1pk="PLAN",
            gsi1sk=f"{plan.type.value}#{plan.price_paise:012d}#{plan.plan_id}",
            overage=plan.overage.model_dump(),
            **fields,
        )

    def to_domain(self) -> Plan:
        values = _domain_values(self, Plan)
        values["overage"] = OverageRates(**self.overage.as_dict())
        return Plan.model_validate(values)


def _domain_values(item: Model, model: type[BaseModel]) -> dict[str, Any]:
    """The item's attributes that the domain model declares, NULL ones as None.

    PynamoDB leaves an attribute stored as absent (``None``) out of
    ``attribute_values``; the domain models require such fields explicitly
    (``voice_seconds`` None = unlimited, ``valid_until`` None = postpaid).
    """
    names = item.get_attributes().keys() & model.model_fields.keys()
    return {name: _plain(item.attribute_values.get(name)) for name in names}


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as floats through PynamoDB: whole ones are ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class DynamoPlanCatalog:
    def get(self, plan_id: str) -> Plan:
        try:
            return PlanItem.get(f"PLAN#{plan_id}", "PLAN").to_domain()
        except PlanItem.DoesNotExist:
            raise PlanNotFound(f"no plan {plan_id!r}") from None

    def list(self) -> list[Plan]:
        """The whole catalog in one GSI query, postpaid then prepaid, cheapest first."""
        return [cast(PlanItem, item).to_domain() for item in PlanItem.gsi1.query("PLAN")]

    def save_all(self, plans: Iterable[Plan]) -> int:
        count = 0
        with PlanItem.batch_write() as batch:
            for plan in plans:
                batch.save(PlanItem.from_domain(plan))
                count += 1
        return count


# --- subscribers, wallets, subscriptions ----------------------------------


class SubscriberItem(InGsi1):
    """``USER#<id>/PROFILE``. GSI2: the bill-cycle index (postpaid); GSI1: the
    inactivity index ``DORMANT#<IST date>#<shard>`` while the line is blocked for an
    unpaid bill or an expired plan (service control)."""

    gsi2 = Gsi2()
    gsi2pk = UnicodeAttribute(attr_name=GSI2PK, null=True)
    gsi2sk = UnicodeAttribute(attr_name=GSI2SK, null=True)
    user_id = UnicodeAttribute()
    msisdn = UnicodeAttribute()
    subscriber_type = UnicodeAttribute()
    state = UnicodeAttribute()
    status = UnicodeAttribute()
    bill_cycle_day = NumberAttribute()
    created_at = UTCDateTimeAttribute()
    version = VersionAttribute()
    # Activation (issue 4): contact details, the SIM, and the sealed KYC record (JSON
    # of shared.kyc.SealedKyc: ciphertext and mask only, never the number).
    name = UnicodeAttribute(null=True)
    email = UnicodeAttribute(null=True)
    phone = UnicodeAttribute(null=True)
    iccid = UnicodeAttribute(null=True)
    activation_id = UnicodeAttribute(null=True)
    kyc = UnicodeAttribute(null=True)
    # Service control (issue 7): active block reasons, the version whose barring the
    # network confirmed, the start of the inactivity clock, the open disconnection.
    block_reasons = UnicodeSetAttribute(null=True)
    barring_version = NumberAttribute(null=True)
    dormant_since = UTCDateTimeAttribute(null=True)
    disconnection_id = UnicodeAttribute(null=True)

    @classmethod
    def from_domain(cls, subscriber: Subscriber) -> SubscriberItem:
        item = cls(
            pk=user_pk(subscriber.user_id),
            sk="PROFILE",
            entity="SUBSCRIBER",
            **subscriber.model_dump(mode="python"),
        )
        if subscriber.subscriber_type is SubscriberType.POSTPAID:
            shard = hash_shard(subscriber.user_id)
            item.gsi2pk = f"CYCLE#{subscriber.bill_cycle_day:02d}#{shard}"
            item.gsi2sk = user_pk(subscriber.user_id)
        return item

    def to_domain(self) -> Subscriber:
        return Subscriber.model_validate(_domain_values(self, Subscriber))


def expiry_index_pk(valid_until: datetime, user_id: str) -> str:
    """GSI1 partition of a prepaid plan expiring on an IST date (the expiry sweep's index)."""
    day = valid_until.astimezone(IST).date().isoformat()
    return f"EXPIRES#{day}#{hash_shard(user_id)}"


def dormant_index_pk(since: datetime, user_id: str) -> str:
    """GSI1 partition of a line whose inactivity clock started on an IST date."""
    day = since.astimezone(IST).date().isoformat()
    return f"DORMANT#{day}#{hash_shard(user_id)}"


def hash_shard(user_id: str) -> int:
    """A stable shard for a user id (Python's hash() is salted per process)."""
    return sum(user_id.encode()) % CYCLE_SHARDS


class MsisdnItem(Item):
    user_id = UnicodeAttribute()


class WalletItem(Item):
    balance_paise = NumberAttribute(default=0)


class _SubscriptionFields(Item):
    subscription_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    plan_id = UnicodeAttribute()
    plan_type = UnicodeAttribute()
    price_paise = NumberAttribute()
    started_at = UTCDateTimeAttribute()
    valid_until = UTCDateTimeAttribute(null=True)
    ended_at = UTCDateTimeAttribute(null=True)

    def to_domain(self) -> Subscription:
        return Subscription.model_validate(_domain_values(self, Subscription))


class ActiveSubscriptionItem(_SubscriptionFields, InGsi1):
    """``SUB#ACTIVE``: the one active plan. Claimed by a conditional put.

    A prepaid plan is in the expiry index (GSI1 ``EXPIRES#<IST date>#<shard>``)
    until the expiry sweep has renewed or expired it (issue 6). Taken out to
    expire, it is ``expiry_unannounced`` until PlanExpired has reached the bus.
    """

    period_sk = UnicodeAttribute()
    expiry_unannounced = BooleanAttribute(null=True)


class SubscriptionPeriodItem(_SubscriptionFields):
    """``SUB#<started_at>#<id>``: one period of the history billing prorates from."""


def _period_sk(subscription: Subscription) -> str:
    return f"SUB#{subscription.started_at.isoformat()}#{subscription.subscription_id}"


def _subscription_fields(subscription: Subscription) -> dict[str, Any]:
    return {"entity": "SUBSCRIPTION", **subscription.model_dump(mode="python")}


class DynamoSubscriptionStore:
    """Implements :class:`shared.services.subscriptions.SubscriptionStore`."""

    def get_subscriber(self, user_id: str) -> Subscriber:
        try:
            return SubscriberItem.get(user_pk(user_id), "PROFILE").to_domain()
        except SubscriberItem.DoesNotExist:
            raise UserNotFound(f"no subscriber {user_id!r}") from None

    def put_subscriber(self, subscriber: Subscriber) -> None:
        """Create a profile with its MSISDN index entry (fails if either exists)."""
        profile = SubscriberItem.from_domain(subscriber)
        msisdn = MsisdnItem(
            pk=f"MSISDN#{subscriber.msisdn}",
            sk="MSISDN",
            entity="MSISDN",
            user_id=subscriber.user_id,
        )

        def build(tx: TransactWrite) -> None:
            tx.save(profile, condition=SubscriberItem.pk.does_not_exist())
            tx.save(msisdn, condition=MsisdnItem.pk.does_not_exist())

        transact(build)

    def get_active(self, user_id: str) -> Subscription | None:
        try:
            item = ActiveSubscriptionItem.get(user_pk(user_id), ACTIVE_SUBSCRIPTION_SK)
        except ActiveSubscriptionItem.DoesNotExist:
            return None
        return item.to_domain()

    def history(self, user_id: str) -> list[Subscription]:
        query = SubscriptionPeriodItem.query(
            user_pk(user_id),
            SubscriptionPeriodItem.sk.startswith("SUB#2"),  # periods, not SUB#ACTIVE
        )
        return [item.to_domain() for item in query]

    def wallet_balance(self, user_id: str) -> int:
        try:
            return int(WalletItem.get(user_pk(user_id), "WALLET").balance_paise)
        except WalletItem.DoesNotExist:
            return 0

    def credit_wallet(self, user_id: str, amount_paise: int) -> None:
        if amount_paise <= 0:
            raise ValueError("a wallet credit must be positive")
        wallet = WalletItem(pk=user_pk(user_id), sk="WALLET")
        wallet.update(
            actions=[WalletItem.entity.set("WALLET"), WalletItem.balance_paise.add(amount_paise)]
        )

    def start(self, subscription: Subscription, *, wallet_debit_paise: int) -> None:
        slot_free = ActiveSubscriptionItem.pk.does_not_exist() | (
            ActiveSubscriptionItem.valid_until <= subscription.started_at
        )
        slot_error = ActivePlanExists("a plan is already active; use /upgrade")
        with _transaction(slot_error=slot_error, debits_wallet=wallet_debit_paise > 0) as tx:
            tx.save(self._active_item(subscription), condition=slot_free)
            tx.save(self._period_item(subscription), condition=Item.pk.does_not_exist())
            _apply_wallet_delta(tx, subscription.user_id, -wallet_debit_paise)

    def change(self, *, old: Subscription, new: Subscription, wallet_delta_paise: int) -> None:
        still_old = ActiveSubscriptionItem.subscription_id == old.subscription_id
        slot_error = ConcurrentModification("the active plan changed meanwhile; try again")
        with _transaction(slot_error=slot_error, debits_wallet=wallet_delta_paise < 0) as tx:
            tx.save(self._active_item(new), condition=still_old)
            closing = SubscriptionPeriodItem(pk=user_pk(old.user_id), sk=_period_sk(old))
            tx.update(
                closing,
                actions=[SubscriptionPeriodItem.ended_at.set(new.started_at)],
                condition=SubscriptionPeriodItem.ended_at.does_not_exist(),
            )
            tx.save(self._period_item(new), condition=Item.pk.does_not_exist())
            _apply_wallet_delta(tx, new.user_id, wallet_delta_paise)

    def extend(
        self,
        *,
        old: Subscription,
        extended: Subscription,
        period: Subscription,
        wallet_debit_paise: int,
    ) -> None:
        unchanged = (ActiveSubscriptionItem.subscription_id == old.subscription_id) & (
            ActiveSubscriptionItem.valid_until == old.valid_until
        )
        slot_error = ConcurrentModification("the active plan changed meanwhile; try again")
        with _transaction(slot_error=slot_error, debits_wallet=wallet_debit_paise > 0) as tx:
            # The slot moves to the new expiry's day in the expiry index.
            tx.save(self._active_item(extended), condition=unchanged)
            tx.save(self._period_item(period), condition=Item.pk.does_not_exist())
            _apply_wallet_delta(tx, extended.user_id, -wallet_debit_paise)

    @staticmethod
    def _active_item(subscription: Subscription) -> ActiveSubscriptionItem:
        item = ActiveSubscriptionItem(
            pk=user_pk(subscription.user_id),
            sk=ACTIVE_SUBSCRIPTION_SK,
            period_sk=_period_sk(subscription),
            **_subscription_fields(subscription),
        )
        if subscription.valid_until is not None:
            item.gsi1pk = expiry_index_pk(subscription.valid_until, subscription.user_id)
            item.gsi1sk = user_pk(subscription.user_id)
        return item

    @staticmethod
    def _period_item(subscription: Subscription) -> SubscriptionPeriodItem:
        return SubscriptionPeriodItem(
            pk=user_pk(subscription.user_id),
            sk=_period_sk(subscription),
            **_subscription_fields(subscription),
        )


def _apply_wallet_delta(tx: TransactWrite, user_id: str, delta_paise: int) -> None:
    """Debit (never below zero) or credit the wallet; the LAST item of the transaction."""
    if delta_paise == 0:
        return
    wallet = WalletItem(pk=user_pk(user_id), sk="WALLET")
    condition: Condition | None = None
    if delta_paise < 0:
        condition = WalletItem.balance_paise >= -delta_paise
    tx.update(
        wallet,
        actions=[WalletItem.entity.set("WALLET"), WalletItem.balance_paise.add(delta_paise)],
        condition=condition,
    )


class _transaction:
    """A TransactWrite whose cancellation is translated into domain errors.

    Convention: item 0 is the slot whose condition decides the change; a wallet
    debit, when present, is the last item.
    """

    def __init__(
        self,
        *,
        slot_error: Exception,
        debits_wallet: bool,
        item_errors: Mapping[int, Exception] | None = None,
    ) -> None:
        self._tx = TransactWrite(connection=connection())
        self._slot_error = slot_error
        self._debits_wallet = debits_wallet
        # Further items whose failed condition has its own meaning (by position).
        self._item_errors = dict(item_errors or {})

    def __enter__(self) -> TransactWrite:
        return self._tx.__enter__()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:  # commits (PynamoDB's exit) unless the block raised
            send_transaction(lambda: self._tx.__exit__(exc_type, exc, tb))
        except TransactWriteError as error:
            raise self._domain_error(error) from error

    def _domain_error(self, error: TransactWriteError) -> Exception:
        failed = [
            reason is not None and reason.code == "ConditionalCheckFailed"
            for reason in error.cancellation_reasons
        ]
        if failed and failed[0]:
            return self._slot_error
        for index, item_error in sorted(self._item_errors.items()):
            if index < len(failed) and failed[index]:
                return item_error
        if failed and failed[-1] and self._debits_wallet:
            return InsufficientBalance("the prepaid wallet does not cover this purchase")
        if any(failed) or error.cause_response_code == "TransactionCanceledException":
            return ConcurrentModification("a concurrent change won; try again")
        return error
