"""In-memory fakes of the SubscriptionService ports.

``InMemorySubscriptionStore`` enforces the same atomic rules as
``shared.db.DynamoSubscriptionStore``'s transactions: one active slot (an
expired prepaid plan may be replaced), the old plan must still hold the slot
when it is changed, a period is written once and closed once, the wallet never
goes below zero, and a change applies completely or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

from shared.audit import AuditRecord
from shared.errors import (
    ActivePlanExists,
    ConcurrentModification,
    InsufficientBalance,
    PlanNotFound,
    UserNotFound,
)
from shared.models import Plan, Subscriber, Subscription
from shared.services.audit import InvalidCursor, Partition, Window


class InMemorySweepCheckpoints:
    """Like ``shared.stores.sweeps.DynamoSweepCheckpoints``: a checkpoint never moves back."""

    def __init__(self, done: dict[str, date] | None = None) -> None:
        self.done = dict(done or {})

    def last_done(self, sweep: str) -> date | None:
        return self.done.get(sweep)

    def mark_done(self, sweep: str, day: date) -> None:
        self.done[sweep] = max(day, self.done.get(sweep, day))


class InMemoryPlanCatalog:
    def __init__(self, plans: Iterable[Plan]) -> None:
        self._plans = {plan.plan_id: plan for plan in plans}

    def get(self, plan_id: str) -> Plan:
        try:
            return self._plans[plan_id]
        except KeyError:
            raise PlanNotFound(f"no plan {plan_id!r}") from None

    def list(self) -> list[Plan]:
        return list(self._plans.values())

    def put(self, plan: Plan) -> None:
        """Add or reprice a plan (what a catalog update does)."""
        self._plans[plan.plan_id] = plan


class InMemorySubscriptionStore:
    def __init__(self) -> None:
        self.subscribers: dict[str, Subscriber] = {}
        self.active: dict[str, Subscription] = {}
        self.periods: dict[str, dict[str, Subscription]] = {}  # user -> subscription_id -> period
        self.wallets: dict[str, int] = {}
        self.commits = 0  # successful atomic writes

    # --- setup helpers (what activation and payments do in the real system) ---

    def put_subscriber(self, subscriber: Subscriber) -> None:
        self.subscribers[subscriber.user_id] = subscriber

    def credit_wallet(self, user_id: str, amount_paise: int) -> None:
        if amount_paise <= 0:
            raise ValueError("a wallet credit must be positive")
        self.wallets[user_id] = self.wallets.get(user_id, 0) + amount_paise

    def wallet_balance(self, user_id: str) -> int:
        return self.wallets.get(user_id, 0)

    def history(self, user_id: str) -> list[Subscription]:
        return sorted(self.periods.get(user_id, {}).values(), key=lambda s: s.started_at)

    # --- the port ---

    def get_subscriber(self, user_id: str) -> Subscriber:
        try:
            return self.subscribers[user_id]
        except KeyError:
            raise UserNotFound(f"no subscriber {user_id!r}") from None

    def get_active(self, user_id: str) -> Subscription | None:
        return self.active.get(user_id)

    def start(self, subscription: Subscription, *, wallet_debit_paise: int) -> None:
        user = subscription.user_id
        current = self.active.get(user)
        slot_free = current is None or (
            current.valid_until is not None and current.valid_until <= subscription.started_at
        )
        if not slot_free:
            raise ActivePlanExists("a plan is already active; use /upgrade")
        self._check_new_period(subscription)
        self._check_wallet(user, -wallet_debit_paise)
        # every condition held: apply all of it
        self.active[user] = subscription
        self.periods.setdefault(user, {})[subscription.subscription_id] = subscription
        self._apply_wallet(user, -wallet_debit_paise)
        self.commits += 1

    def change(self, *, old: Subscription, new: Subscription, wallet_delta_paise: int) -> None:
        user = new.user_id
        current = self.active.get(user)
        if current is None or current.subscription_id != old.subscription_id:
            raise ConcurrentModification("the active plan changed meanwhile; try again")
        closing = self.periods.get(user, {}).get(old.subscription_id)
        if closing is None or closing.ended_at is not None:
            raise ConcurrentModification("a concurrent change won; try again")
        self._check_new_period(new)
        self._check_wallet(user, wallet_delta_paise)
        self.active[user] = new
        self.periods[user][old.subscription_id] = closing.model_copy(
            update={"ended_at": new.started_at}
        )
        self.periods[user][new.subscription_id] = new
        self._apply_wallet(user, wallet_delta_paise)
        self.commits += 1

    # --- conditions ---

    def _check_new_period(self, subscription: Subscription) -> None:
        if subscription.subscription_id in self.periods.get(subscription.user_id, {}):
            raise ConcurrentModification("a concurrent change won; try again")

    def _check_wallet(self, user_id: str, delta_paise: int) -> None:
        if delta_paise < 0 and self.wallets.get(user_id, 0) < -delta_paise:
            raise InsufficientBalance("the prepaid wallet does not cover this purchase")

    def _apply_wallet(self, user_id: str, delta_paise: int) -> None:
        if delta_paise:
            self.wallets[user_id] = self.wallets.get(user_id, 0) + delta_paise


class InMemoryAuditStore:
    """The audit store as ``shared.stores.audit.DynamoAuditStore`` behaves: a record
    is keyed by its UTC time and id and written once (appending it again changes
    nothing, whatever the content); a window is read from its day, user or actor
    partition in key order, ``limit`` records at a time, and a full page returns
    its last key even when nothing follows (DynamoDB's LastEvaluatedKey), so the
    last page of a query may be empty. A start key must be one this window's read
    could have returned, else InvalidCursor."""

    def __init__(self) -> None:
        self.records: dict[tuple[datetime, str], AuditRecord] = {}
        self.reads = 0

    def append(self, record: AuditRecord) -> bool:
        key = (record.occurred_at.astimezone(UTC), record.audit_id)
        if key in self.records:
            return False
        self.records[key] = record
        return True

    def read(
        self, window: Window, limit: int, after: dict[str, str] | None
    ) -> tuple[list[AuditRecord], dict[str, str] | None]:
        self.reads += 1
        rows = sorted(
            (key, record)
            for key, record in self.records.items()
            if _in_partition(record, window) and window.start <= key[0] < window.end
        )
        if after is not None:
            start = _start_key(window, after)
            rows = [(key, record) for key, record in rows if key > start]
        page = rows[:limit]
        if len(page) < limit:
            return [record for _, record in page], None
        (at, audit_id), _ = page[-1]
        last = {"partition": _partition_key(window), "at": at.isoformat(), "id": audit_id}
        return [record for _, record in page], last


def _partition_key(window: Window) -> str:
    return f"{window.partition.value}#{window.value}"


def _in_partition(record: AuditRecord, window: Window) -> bool:
    if window.partition is Partition.DAY:
        return record.occurred_at.astimezone(UTC).date().isoformat() == window.value
    if window.partition is Partition.USER:
        return record.user_id == window.value
    return record.actor == window.value


def _start_key(window: Window, after: dict[str, str]) -> tuple[datetime, str]:
    """DynamoDB refuses a start key of another partition or outside the range."""
    try:
        at = datetime.fromisoformat(after["at"])
        in_window = (
            set(after) == {"partition", "at", "id"}
            and after["partition"] == _partition_key(window)
            and window.start <= at <= window.end
        )
    except (KeyError, TypeError, ValueError):
        in_window = False
    if not in_window:
        raise InvalidCursor("the cursor belongs to another query")
    return at, after["id"]
