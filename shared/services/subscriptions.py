"""Plan subscriptions: exactly one active plan per subscriber, changes take
effect now, prepaid purchases are paid from the wallet in the same atomic
write, and every change is prorated to the second (money rule: shared.money).

Buying the active prepaid plan again (a recharge, issue 8) follows the plan's
``repeat_purchase`` option: EXTEND adds the plan's validity after the current
period (the active slot's ``valid_until`` and ``price_paise`` grow by one
period, and the extension is recorded as a period of its own starting where
the current one ends); RESTART starts the plan again now, like an /upgrade to
itself."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from pydantic import Field

from shared.clock import Clock
from shared.cycles import cycle_containing
from shared.errors import (
    BackdatedChange,
    InvalidRequest,
    NoActivePlan,
    PlanNotAllowed,
    SamePlan,
    SubscriberNotActive,
)
from shared.events import DomainEvent, EventPublisher
from shared.models import (
    Frozen,
    Plan,
    RepeatPurchase,
    Subscriber,
    SubscriberStatus,
    SubscriberType,
    Subscription,
)
from shared.money import prorate

# A change stamped this far from the server's clock is client skew, not a backdating attempt.
CLOCK_SKEW_TOLERANCE = timedelta(seconds=60)
CAN_CHANGE_PLANS = frozenset({SubscriberStatus.ACTIVE, SubscriberStatus.TEMP_BLOCKED})


class PlanCatalog(Protocol):
    def get(self, plan_id: str) -> Plan: ...


class SubscriptionStore(Protocol):
    def get_subscriber(self, user_id: str) -> Subscriber: ...

    def get_active(self, user_id: str) -> Subscription | None: ...

    def start(self, subscription: Subscription, *, wallet_debit_paise: int) -> None:
        """Atomically: claim the active slot (free, or holding an expired plan at
        ``subscription.started_at``), record the period, debit the wallet.
        Raises ActivePlanExists or InsufficientBalance and changes nothing."""
        ...

    def change(self, *, old: Subscription, new: Subscription, wallet_delta_paise: int) -> None:
        """Atomically: replace ``old`` in the active slot by ``new`` (if ``old`` is
        still there), close old's period, open new's, apply the wallet delta
        (never below zero). Raises ConcurrentModification or InsufficientBalance."""
        ...

    def extend(
        self,
        *,
        old: Subscription,
        extended: Subscription,
        period: Subscription,
        wallet_debit_paise: int,
    ) -> None:
        """Atomically: replace ``old`` in the active slot by ``extended`` (same
        subscription, later ``valid_until``) if the slot still holds ``old`` with
        its validity unchanged, record the extension ``period``, debit the wallet.
        Raises ConcurrentModification or InsufficientBalance."""
        ...


class ChangeType(StrEnum):
    SUBSCRIBE = "SUBSCRIBE"
    UPGRADE = "UPGRADE"
    DOWNGRADE = "DOWNGRADE"
    EXTENDED = "EXTENDED"  # the active prepaid plan bought again: validity after the current
    RESTARTED = "RESTARTED"  # the active prepaid plan bought again: started again now


class ProrationLine(Frozen):
    plan_id: str
    description: str
    period_start: datetime
    period_end: datetime | None
    amount_paise: int = Field(description="Positive: a charge; negative: a credit")


class PlanChangeResult(Frozen):
    user_id: str
    subscription_id: str
    plan_id: str
    previous_plan_id: str | None
    change_type: ChangeType
    effective_at: datetime
    valid_until: datetime | None
    proration: list[ProrationLine]
    net_amount_paise: int = Field(description="Sum of the proration lines")
    wallet_debit_paise: int = Field(
        description="Taken from the prepaid wallet now; negative when credited; 0 postpaid"
    )
    billed_on_invoice: bool = Field(description="Postpaid: lines go on the next invoice")


class SubscriptionService:
    def __init__(
        self,
        catalog: PlanCatalog,
        store: SubscriptionStore,
        events: EventPublisher,
        clock: Clock,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._events = events
        self._clock = clock

    def subscribe(
        self, user_id: str, plan_id: str, effective_at: datetime | None = None
    ) -> PlanChangeResult:
        now = self._effective_now(effective_at)
        subscriber = self._changeable_subscriber(user_id)
        plan = self._plan_for(subscriber, plan_id)
        new = _new_subscription(subscriber, plan, now)
        if plan.type is SubscriberType.PREPAID:
            lines = [_purchase_line(plan, now, new.valid_until)]
        else:
            lines = [_postpaid_line(plan, subscriber, now, "from", now)]
        debit = plan.price_paise if plan.type is SubscriberType.PREPAID else 0
        self._store.start(new, wallet_debit_paise=debit)
        return self._announce(
            subscriber=subscriber,
            new=new,
            old=None,
            change_type=ChangeType.SUBSCRIBE,
            lines=lines,
            wallet_debit=debit,
        )

    def change_plan(
        self, user_id: str, plan_id: str, effective_at: datetime | None = None
    ) -> PlanChangeResult:
        """Upgrade or downgrade the active plan, now."""
        return self._change(user_id, plan_id, effective_at, restart=False)

    def recharge(self, user_id: str, plan_id: str) -> PlanChangeResult:
        """A prepaid plan bought with money already in the wallet (a paid recharge):
        started when no plan is valid, the active plan changed when it is another
        one, and the same plan extended or restarted per its ``repeat_purchase``."""
        active = self._store.get_active(user_id)
        if not _valid_at(active, self._clock.now()):
            return self.subscribe(user_id, plan_id)
        assert active is not None
        if active.plan_id != plan_id:
            return self.change_plan(user_id, plan_id)
        if self._catalog.get(plan_id).repeat_purchase is RepeatPurchase.RESTART:
            return self._change(user_id, plan_id, None, restart=True)
        return self.extend(user_id, plan_id)

    def extend(self, user_id: str, plan_id: str) -> PlanChangeResult:
        """The active prepaid plan again, after the current period: its quota and
        validity start when the current ones end."""
        now = self._clock.now()
        subscriber = self._changeable_subscriber(user_id)
        plan = self._plan_for(subscriber, plan_id)
        old = self._store.get_active(user_id)
        if not _valid_at(old, now):
            raise NoActivePlan("no active plan to extend; use /subscribe")
        assert old is not None
        if old.plan_id != plan.plan_id or old.valid_until is None:
            raise PlanNotAllowed(f"only the active prepaid plan ({old.plan_id}) can be extended")
        period = Subscription(
            subscription_id=uuid.uuid4().hex,
            user_id=user_id,
            plan_id=plan.plan_id,
            plan_type=plan.type,
            price_paise=plan.price_paise,
            started_at=old.valid_until,
            valid_until=old.valid_until + timedelta(days=plan.validity_days),
        )
        # The slot covers both periods at both prices: an /upgrade later credits
        # the unused part of the whole, pro rata to the second.
        extended = old.model_copy(
            update={
                "valid_until": period.valid_until,
                "price_paise": old.price_paise + plan.price_paise,
            }
        )
        self._store.extend(
            old=old, extended=extended, period=period, wallet_debit_paise=plan.price_paise
        )
        line = ProrationLine(
            plan_id=plan.plan_id,
            description=f"{plan.name}: {plan.validity_days} more days after the current period",
            period_start=old.valid_until,
            period_end=period.valid_until,
            amount_paise=plan.price_paise,
        )
        return self._announce(
            subscriber=subscriber,
            new=period,
            old=old,
            change_type=ChangeType.EXTENDED,
            lines=[line],
            wallet_debit=plan.price_paise,
            at=now,
        )

    def _change(
        self, user_id: str, plan_id: str, effective_at: datetime | None, *, restart: bool
    ) -> PlanChangeResult:
        now = self._effective_now(effective_at)
        subscriber = self._changeable_subscriber(user_id)
        plan = self._plan_for(subscriber, plan_id)
        old = self._store.get_active(user_id)
        if old is None or (old.valid_until is not None and old.valid_until <= now):
            raise NoActivePlan("no active plan to change; use /subscribe")
        if (old.plan_id == plan.plan_id) != restart:
            if restart:
                raise PlanNotAllowed(f"only the active plan ({old.plan_id}) can be restarted")
            raise SamePlan(f"{plan.plan_id} is already the active plan")
        new = _new_subscription(subscriber, plan, now)
        if plan.type is SubscriberType.PREPAID:
            lines = [_unused_credit_line(old, now), _purchase_line(plan, now, new.valid_until)]
            debit = plan.price_paise - (-lines[0].amount_paise)
        else:
            # The old period is billed at the price it was bought at, not today's catalog price.
            old_plan = self._catalog.get(old.plan_id).model_copy(
                update={"price_paise": old.price_paise}
            )
            lines = [
                _postpaid_line(old_plan, subscriber, old.started_at, "until", now),
                _postpaid_line(plan, subscriber, now, "from", now),
            ]
            debit = 0
        self._store.change(old=old, new=new, wallet_delta_paise=-debit)
        kind = ChangeType.UPGRADE if plan.price_paise >= old.price_paise else ChangeType.DOWNGRADE
        if restart:
            kind = ChangeType.RESTARTED
        return self._announce(
            subscriber=subscriber,
            new=new,
            old=old,
            change_type=kind,
            lines=lines,
            wallet_debit=debit,
        )

    def _effective_now(self, requested: datetime | None) -> datetime:
        now = self._clock.now()
        if requested is None:
            return now
        if requested.tzinfo is None:
            raise InvalidRequest("effective_at needs a UTC offset")
        if requested < now - CLOCK_SKEW_TOLERANCE:
            raise BackdatedChange("plan changes take effect now; backdating is not accepted")
        if requested > now + CLOCK_SKEW_TOLERANCE:
            raise InvalidRequest("plan changes take effect now; scheduling is not supported")
        return now

    def _changeable_subscriber(self, user_id: str) -> Subscriber:
        subscriber = self._store.get_subscriber(user_id)
        if subscriber.status not in CAN_CHANGE_PLANS:
            raise SubscriberNotActive(f"subscriber is {subscriber.status}; plans cannot change")
        return subscriber

    def _plan_for(self, subscriber: Subscriber, plan_id: str) -> Plan:
        plan = self._catalog.get(plan_id)
        if not plan.active:
            raise PlanNotAllowed(f"plan {plan_id} is no longer sold")
        if plan.type is not subscriber.subscriber_type:
            raise PlanNotAllowed(
                f"plan {plan_id} is {plan.type}; the subscriber is {subscriber.subscriber_type}"
            )
        return plan

    def _announce(
        self,
        *,
        subscriber: Subscriber,
        new: Subscription,
        old: Subscription | None,
        change_type: ChangeType,
        lines: list[ProrationLine],
        wallet_debit: int,
        at: datetime | None = None,
    ) -> PlanChangeResult:
        result = PlanChangeResult(
            user_id=subscriber.user_id,
            subscription_id=new.subscription_id,
            plan_id=new.plan_id,
            previous_plan_id=old.plan_id if old else None,
            change_type=change_type,
            effective_at=new.started_at,
            valid_until=new.valid_until,
            proration=lines,
            net_amount_paise=sum(line.amount_paise for line in lines),
            wallet_debit_paise=wallet_debit,
            billed_on_invoice=subscriber.subscriber_type is SubscriberType.POSTPAID,
        )
        self._events.publish(
            [
                DomainEvent(
                    detail_type="PlanChanged",
                    source="plans",
                    occurred_at=at or new.started_at,
                    detail={
                        "user_id": subscriber.user_id,
                        "subscriber_type": subscriber.subscriber_type.value,
                        "change_type": change_type.value,
                        "plan_id": new.plan_id,
                        "previous_plan_id": result.previous_plan_id,
                        "subscription_id": new.subscription_id,
                        "valid_until": new.valid_until.isoformat() if new.valid_until else None,
                        "net_amount_paise": result.net_amount_paise,
                        "wallet_debit_paise": wallet_debit,
                    },
                )
            ]
        )
        return result


def _valid_at(subscription: Subscription | None, now: datetime) -> bool:
    return subscription is not None and (
        subscription.valid_until is None or subscription.valid_until > now
    )


def _new_subscription(subscriber: Subscriber, plan: Plan, now: datetime) -> Subscription:
    prepaid = plan.type is SubscriberType.PREPAID
    return Subscription(
        subscription_id=uuid.uuid4().hex,
        user_id=subscriber.user_id,
        plan_id=plan.plan_id,
        plan_type=plan.type,
        price_paise=plan.price_paise,
        started_at=now,
        valid_until=now + timedelta(days=plan.validity_days) if prepaid else None,
    )


def _purchase_line(plan: Plan, now: datetime, valid_until: datetime | None) -> ProrationLine:
    return ProrationLine(
        plan_id=plan.plan_id,
        description=f"{plan.name}: {plan.validity_days} days from now",
        period_start=now,
        period_end=valid_until,
        amount_paise=plan.price_paise,
    )


def _unused_credit_line(old: Subscription, now: datetime) -> ProrationLine:
    """Prepaid: the unused part of the old plan, pro rata by remaining validity (to the second)."""
    assert old.valid_until is not None, "prepaid subscriptions always expire"
    total = int((old.valid_until - old.started_at).total_seconds())
    remaining = max(0, int((old.valid_until - now).total_seconds()))
    credit = prorate(old.price_paise, min(remaining, total), total)
    return ProrationLine(
        plan_id=old.plan_id,
        description=f"Credit for {remaining} unused of {total} seconds",
        period_start=now,
        period_end=old.valid_until,
        amount_paise=-credit,
    )


def _postpaid_line(
    plan: Plan, subscriber: Subscriber, start: datetime, direction: str, now: datetime
) -> ProrationLine:
    """Postpaid: the rental for the part of the current bill cycle this plan covers.

    ``direction`` "until" bills [max(start, cycle start), now); "from" bills [now, cycle end).
    """
    cycle = cycle_containing(subscriber.bill_cycle_day, now)
    if direction == "until":
        period_start, period_end = max(start, cycle.start), now
    else:
        period_start, period_end = now, cycle.end
    seconds = int((period_end - period_start).total_seconds())
    return ProrationLine(
        plan_id=plan.plan_id,
        description=f"{plan.name} rental for {seconds} of {cycle.seconds} seconds of the cycle",
        period_start=period_start,
        period_end=period_end,
        amount_paise=prorate(plan.price_paise, seconds, cycle.seconds),
    )
