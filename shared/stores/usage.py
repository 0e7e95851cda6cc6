"""Usage rating's items in the single table and the repository behind
:class:`shared.services.usage.RatingStore`.

| item | PK | SK |
|---|---|---|
| rating state (all rating needs, one item) | ``MSISDN#<msisdn>`` | ``RATING`` |
| plan snapshot (immutable, named by content) | ``PLANSNAP#<digest>`` | ``PLANSNAP`` |
| CDR dedup marker (TTL) | ``CDR#<dedup_hash>`` | ``CDR`` |
| late usage (for the next invoice) | ``USER#<id>`` | ``LATE#<cycle>#<dedup_hash>`` |
| anomaly count per window (TTL) | ``MSISDN#<msisdn>`` | ``ANOMALIES#<window start>`` |
| anomaly flag (agents see it) | ``MSISDN#<msisdn>`` | ``FLAG`` |

Why not DESIGN §5's ``BAL#<cycle>`` + ``USAGE#<day>`` items: rating one batch
would then read and write two or three items per subscriber (balance, day,
wallet), i.e. several requests per CDR. One state item per MSISDN names the plan
snapshots and holds the open cycles' counters and the day counters, so a batch needs one
``BatchGetItem`` per 100 subscribers and one ``Put`` per subscriber, packed with
the CDR markers into transactions of up to 100 items (issue 5 wins over §5).

The state is rewritten with every batch that charges the subscriber, and a
transactional write costs 2 write units per KB, so it is kept small: each cycle
names its plan snapshot by digest instead of carrying a copy (snapshots never
change; a container reads each once), counters at their defaults are left out
and the others stored under short names, times are epoch microseconds, and the
day counters are columns indexed by day of the cycle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import PutError, TransactWriteError
from pynamodb.transactions import TransactWrite

from shared.clock import to_ist
from shared.db import (
    ACTIVE_SUBSCRIPTION_SK,
    ActiveSubscriptionItem,
    Item,
    MsisdnItem,
    PlanItem,
    SubscriberItem,
    WalletItem,
    connection,
    user_pk,
)
from shared.models import Plan, SubscriberType
from shared.rating import UsageBalance
from shared.services.usage import (
    CommitResult,
    CycleUsage,
    LateUsage,
    RatingSources,
    RatingState,
    WalletDebit,
    WriteUnit,
)
from shared.services.usage_report import AnomalyFlag

RATING_SK = "RATING"
PLAN_SNAPSHOT_SK = "PLANSNAP"
FLAG_SK = "FLAG"
ANOMALY_COUNT_TTL_SECONDS = 7 * 24 * 3600


def msisdn_pk(msisdn: str) -> str:
    return f"MSISDN#{msisdn}"


def marker_pk(dedup_hash: str) -> str:
    return f"CDR#{dedup_hash}"


def snapshot_pk(digest: str) -> str:
    return f"PLANSNAP#{digest}"


class RatingStateItem(Item):
    """``MSISDN#<msisdn>`` / ``RATING``: see the module doc and README "Usage rating"."""

    user_id = UnicodeAttribute()
    subscriber_type = UnicodeAttribute()
    bill_cycle_day = NumberAttribute()
    subscription_id = UnicodeAttribute()
    valid_until = UnicodeAttribute(null=True)
    wallet_paise = NumberAttribute(default=0)
    # JSON: {cycle label: counters and the digest of its plan snapshot} (see _cycle_doc).
    cycles = UnicodeAttribute()
    # Only in states written before plan snapshots had items: {plan_id: plan JSON}.
    plans = UnicodeAttribute(null=True)
    version = NumberAttribute()


class PlanSnapshotItem(Item):
    """``PLANSNAP#<digest>`` / ``PLANSNAP``: a plan as some rating state charges by it."""

    plan = UnicodeAttribute()  # the Plan as JSON


class CdrMarkerItem(Item):
    """Claimed by a conditional put in the transaction that applies the CDR's charge."""

    user_id = UnicodeAttribute()
    expires_at = NumberAttribute()


class LateUsageItem(Item):
    """A CDR rated into an invoiced cycle: billing adds it to the next invoice."""

    user_id = UnicodeAttribute()
    msisdn = UnicodeAttribute()
    cycle = UnicodeAttribute()
    usage_type = UnicodeAttribute()
    record = UnicodeAttribute()  # the CDR as JSON
    billable_units = NumberAttribute()
    charge_paise = NumberAttribute()
    discrepancy = UnicodeAttribute(default="LATE_USAGE")
    status = UnicodeAttribute(default="PENDING_INVOICE")


class AnomalyCountItem(Item):
    anomalies = NumberAttribute(default=0)
    expires_at = NumberAttribute()


class AnomalyFlagItem(Item):
    user_id = UnicodeAttribute(null=True)
    reason = UnicodeAttribute()
    anomaly_count = NumberAttribute()
    window_start = UnicodeAttribute()
    flagged_at = UnicodeAttribute()


# --- (de)serialization of the state -------------------------------------------------


@lru_cache(maxsize=512)
def _plan(text: str) -> Plan:
    """Plans repeat across subscribers: validate each snapshot text once per process."""
    return Plan.model_validate_json(text)


@lru_cache(maxsize=512)
def snapshot_digest(plan: Plan) -> str:
    """The name of a plan snapshot: its content's digest, so equal plans share one item."""
    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()[:24]


# The stored name of each balance counter: part of the item format, so fixed here,
# never derived from the field names (a renamed field keeps its stored name; a
# new one needs a new, unused name). A counter at its default (0, false) is left
# out. The wallet is the state's, not the cycle's.
BALANCE_KEYS = {
    "used_data_bytes": "udb",
    "used_voice_seconds": "uvs",
    "used_sms": "us",
    "overage_data_paise": "odp",
    "overage_voice_paise": "ovp",
    "overage_sms_paise": "osp",
    "unbilled_paise": "up",
    "data_exhausted": "de",
    "voice_exhausted": "ve",
    "sms_exhausted": "se",
    "data_alert_percent": "dap",
    "voice_alert_percent": "vap",
    "sms_alert_percent": "sap",
}
BALANCE_FIELDS = {key: name for name, key in BALANCE_KEYS.items()}


def _balance_doc(balance: UsageBalance) -> dict[str, Any]:
    doc = balance.model_dump(exclude_defaults=True, exclude={"wallet_paise"})
    return {BALANCE_KEYS[name]: value for name, value in doc.items()}


def _balance_of(doc: dict[str, Any]) -> UsageBalance:
    # Our own document, written from a validated balance: no re-validation.
    return UsageBalance.model_construct(**{BALANCE_FIELDS[key]: v for key, v in doc.items()})


def _first_day(start: datetime) -> date:
    return to_ist(start).date()


def _daily_doc(cycle: CycleUsage) -> list[list[int]]:
    """Columns per usage type ([data, voice, sms]), indexed by day of the cycle:
    the most compact JSON for counters that grow by a day at a time."""
    first = _first_day(cycle.start)
    offsets = {(date.fromisoformat(day) - first).days: c for day, c in cycle.daily.items()}
    days = max(offsets, default=-1) + 1
    assert min(offsets, default=0) >= 0, "a CDR counts in the cycle it started in"
    columns: list[list[int]] = [[0] * days for _ in range(3)]
    for offset, counters in offsets.items():
        for column, value in zip(columns, counters, strict=True):
            column[offset] = value
    return columns


def _daily_of(start: datetime, columns: list[list[int]]) -> dict[str, list[int]]:
    first = _first_day(start)
    return {
        (first + timedelta(days=offset)).isoformat(): list(counters)
        for offset, counters in enumerate(zip(*columns, strict=True))
        if any(counters)
    }


def _microseconds(moment: datetime) -> int:
    """Exact: a prepaid period ends when its purchase said, to the microsecond."""
    return (moment - _EPOCH) // _MICROSECOND


def _moment(microseconds: int) -> datetime:
    return _EPOCH + microseconds * _MICROSECOND


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _cycle_doc(cycle: CycleUsage) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "start": _microseconds(cycle.start),
        "end": _microseconds(cycle.end),
        "plan": snapshot_digest(cycle.plan),
        "balance": _balance_doc(cycle.balance),
    }
    if cycle.daily:
        doc["daily"] = _daily_doc(cycle)
    if cycle.closed:
        doc["closed"] = True
    if cycle.late_records:
        doc["late"] = cycle.late_records
    return doc


def to_item(state: RatingState) -> RatingStateItem:
    """The state's item; its plans must be stored too (:func:`plan_snapshots`)."""
    return RatingStateItem(
        pk=msisdn_pk(state.msisdn),
        sk=RATING_SK,
        entity="RATING_STATE",
        user_id=state.user_id,
        subscriber_type=state.subscriber_type.value,
        bill_cycle_day=state.bill_cycle_day,
        subscription_id=state.subscription_id,
        valid_until=state.valid_until.isoformat() if state.valid_until else None,
        wallet_paise=state.wallet_paise,
        cycles=json.dumps(
            {label: _cycle_doc(c) for label, c in state.cycles.items()}, separators=(",", ":")
        ),
        version=state.version,
    )


def plan_snapshots(state: RatingState) -> dict[str, Plan]:
    """The plan snapshots a state's item names, by digest."""
    return {snapshot_digest(c.plan): c.plan for c in state.cycles.values()}


def snapshots_named(item: RatingStateItem) -> set[str]:
    """The digests of the plan snapshots an item names (none in a legacy item)."""
    docs = json.loads(item.cycles).values()
    return {doc["plan"] for doc in docs if "plan" in doc}


def from_item(item: RatingStateItem, snapshots: Mapping[str, Plan]) -> RatingState:
    """The state of an item; ``snapshots`` holds (at least) the plans it names."""
    legacy = {pid: _plan(text) for pid, text in json.loads(item.plans or "{}").items()}
    cycles = {}
    for label, doc in json.loads(item.cycles).items():
        if "plan" in doc:
            start, end = _moment(doc["start"]), _moment(doc["end"])
            plan = _snapshot(snapshots, doc["plan"], item)
            daily = _daily_of(start, doc.get("daily", []))
            balance = _balance_of(doc["balance"])
        else:  # written before plan snapshots had items
            start, end = datetime.fromisoformat(doc["start"]), datetime.fromisoformat(doc["end"])
            plan, daily = legacy[doc["plan_id"]], doc["daily"]
            balance = UsageBalance.model_construct(**doc["balance"])
        cycles[label] = CycleUsage(
            label=label,
            start=start,
            end=end,
            plan=plan,
            balance=balance,
            closed=doc.get("closed", False),
            daily=daily,
            late_records=doc.get("late", 0),
        )
    return RatingState(
        msisdn=item.pk.removeprefix("MSISDN#"),
        user_id=item.user_id,
        subscriber_type=SubscriberType(item.subscriber_type),
        bill_cycle_day=int(item.bill_cycle_day),
        subscription_id=item.subscription_id,
        valid_until=datetime.fromisoformat(item.valid_until) if item.valid_until else None,
        wallet_paise=int(item.wallet_paise),
        cycles=cycles,
        version=int(item.version),
    )


def _snapshot(snapshots: Mapping[str, Plan], digest: str, item: RatingStateItem) -> Plan:
    try:
        return snapshots[digest]
    except KeyError:
        raise LookupError(f"plan snapshot {digest} of rating state {item.pk} not found") from None


class _PlanSnapshots:
    """A container's plan snapshots: each read at most once and written at most once
    per container (they never change, and a digest names only one content)."""

    def __init__(self) -> None:
        self.known: dict[str, Plan] = {}
        self.stored: set[str] = set()

    def resolve(self, items: Iterable[RatingStateItem]) -> Mapping[str, Plan]:
        wanted = set().union(*(snapshots_named(item) for item in items))
        missing = [(snapshot_pk(d), PLAN_SNAPSHOT_SK) for d in wanted if d not in self.known]
        if not missing:
            return self.known
        for found in PlanSnapshotItem.batch_get(missing, consistent_read=True):
            digest = found.pk.removeprefix("PLANSNAP#")
            self.known[digest] = _plan(found.plan)
            self.stored.add(digest)
        return self.known

    def store(self, states: Iterable[RatingState]) -> None:
        """Write the snapshots the states name before the states that name them."""
        new: dict[str, Plan] = {}
        for state in states:
            new.update(plan_snapshots(state))
        for digest in self.stored.intersection(new):
            del new[digest]
        # One PutItem each (rating's role may put, never batch-write: that would
        # allow deletes); repeating one is harmless, the content is the same.
        for digest, plan in new.items():
            PlanSnapshotItem(
                pk=snapshot_pk(digest),
                sk=PLAN_SNAPSHOT_SK,
                entity="PLAN_SNAPSHOT",
                plan=plan.model_dump_json(),
            ).save()
        self.stored.update(new)
        self.known.update(new)


# --- the repository ------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """What one transaction item was, to read its cancellation reason."""

    kind: str  # "state", "marker", "late", "wallet"
    msisdn: str
    dedup_hash: str = ""


class _Transaction:
    """Items of one TransactWriteItems, remembered in the order PynamoDB sends them
    (condition checks, puts, updates), so cancellation reasons can be read back."""

    def __init__(self) -> None:
        self.units: list[WriteUnit] = []
        self.msisdns: set[str] = set()
        self.size = 0

    def fits(self, unit: WriteUnit, limit: int) -> bool:
        return self.size + unit.item_count <= limit and unit.state.msisdn not in self.msisdns

    def add(self, unit: WriteUnit) -> None:
        self.units.append(unit)
        self.msisdns.add(unit.state.msisdn)
        self.size += unit.item_count


class DynamoRatingStore:
    """Implements :class:`shared.services.usage.RatingStore` on the single table."""

    transaction_items = 100

    def __init__(self) -> None:
        self._snapshots = _PlanSnapshots()

    def save_plan_snapshots(self, states: Iterable[RatingState]) -> None:
        """The plans the states name, before the states (bulk seeding writes states
        itself; every write here calls this first)."""
        self._snapshots.store(states)

    # reads
    def load_states(self, msisdns: Collection[str]) -> dict[str, RatingState]:
        keys = [(msisdn_pk(m), RATING_SK) for m in msisdns]
        items = list(RatingStateItem.batch_get(keys, consistent_read=True))
        snapshots = self._snapshots.resolve(items)
        states = (from_item(item, snapshots) for item in items)
        return {state.msisdn: state for state in states}

    def load_state(self, msisdn: str) -> RatingState | None:
        return self.load_states([msisdn]).get(msisdn)

    def load_sources(self, msisdns: Collection[str]) -> dict[str, RatingSources]:
        """Four batch reads per 100 new subscribers (index, profile+plan slot, wallet,
        plans): paid once per subscriber, when its rating state is first built."""
        owners = {
            item.pk.removeprefix("MSISDN#"): item.user_id
            for item in MsisdnItem.batch_get([(msisdn_pk(m), "MSISDN") for m in msisdns])
        }
        users = set(owners.values())
        profiles = {
            p.user_id: p.to_domain()
            for p in SubscriberItem.batch_get([(user_pk(u), "PROFILE") for u in users])
        }
        active = {
            a.user_id: a.to_domain()
            for a in ActiveSubscriptionItem.batch_get(
                [(user_pk(u), ACTIVE_SUBSCRIPTION_SK) for u in users], consistent_read=True
            )
        }
        wallets = self.wallet_balances(users)
        plan_ids = {s.plan_id for s in active.values()}
        plans = {
            p.plan_id: p.to_domain()
            for p in PlanItem.batch_get([(f"PLAN#{pid}", "PLAN") for pid in plan_ids])
        }
        sources: dict[str, RatingSources] = {}
        for msisdn, user_id in owners.items():
            if user_id not in profiles:
                continue
            subscription = active.get(user_id)
            sources[msisdn] = RatingSources(
                subscriber=profiles[user_id],
                subscription=subscription,
                plan=plans.get(subscription.plan_id) if subscription else None,
                wallet_paise=wallets.get(user_id, 0),
            )
        return sources

    def wallet_balances(self, user_ids: Collection[str]) -> dict[str, int]:
        keys = [(user_pk(u), "WALLET") for u in user_ids]
        return {
            w.pk.removeprefix("USER#"): int(w.balance_paise)
            for w in WalletItem.batch_get(keys, consistent_read=True)
        }

    def existing_markers(self, dedup_hashes: Collection[str]) -> set[str]:
        keys = [(marker_pk(h), "CDR") for h in dedup_hashes]
        found = CdrMarkerItem.batch_get(keys, consistent_read=True, attributes_to_get=["PK"])
        return {item.pk.removeprefix("CDR#") for item in found}

    def msisdn_of(self, user_id: str) -> str | None:
        try:
            return str(SubscriberItem.get(user_pk(user_id), "PROFILE").msisdn)
        except SubscriberItem.DoesNotExist:
            return None

    def flag_of(self, msisdn: str) -> AnomalyFlag | None:
        try:
            item = AnomalyFlagItem.get(msisdn_pk(msisdn), FLAG_SK)
        except AnomalyFlagItem.DoesNotExist:
            return None
        return AnomalyFlag(item.reason, int(item.anomaly_count), item.window_start, item.flagged_at)

    # writes
    def commit(self, units: Sequence[WriteUnit], *, marker_expires_at: datetime) -> CommitResult:
        """Every transaction is tried, and each cancelled one teaches what moved
        or was already written: a batch of thousands of CDRs spans about a
        hundred, and concurrent plan changes may have moved states in many of
        them, or records re-sent by the network (which a fresh container does
        not remember) be spread over all of them."""
        result = CommitResult()
        expires = int(marker_expires_at.timestamp())
        self.save_plan_snapshots(unit.state for unit in units)
        for transaction in self._pack(units):
            slots = self._write(transaction, expires)
            if slots is None:
                result.committed += transaction.units
                continue
            self._learn(slots, result)
        return result

    def put_state(self, state: RatingState, expected_version: int) -> bool:
        """Replace a state outside rating (plan changes); False if the version moved."""
        self.save_plan_snapshots([state])
        item = to_item(state)
        try:
            item.save(condition=_version_is(expected_version))
        except PutError as error:
            if error.cause_response_code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def count_anomalies(self, counts: Mapping[str, int], window: str) -> dict[str, int]:
        expires = int(datetime.now(UTC).timestamp()) + ANOMALY_COUNT_TTL_SECONDS
        totals: dict[str, int] = {}
        for msisdn, count in counts.items():
            item = AnomalyCountItem(pk=msisdn_pk(msisdn), sk=f"ANOMALIES#{window}")
            item.update(
                actions=[
                    AnomalyCountItem.entity.set("ANOMALY_COUNT"),
                    AnomalyCountItem.anomalies.add(count),
                    AnomalyCountItem.expires_at.set(expires),
                ]
            )
            totals[msisdn] = int(item.anomalies)
        return totals

    def flag(self, msisdn: str, user_id: str | None, count: int, window: str) -> None:
        AnomalyFlagItem(
            pk=msisdn_pk(msisdn),
            sk=FLAG_SK,
            entity="ANOMALY_FLAG",
            user_id=user_id,
            reason="REPEATED_CDR_ANOMALIES",
            anomaly_count=count,
            window_start=window,
            flagged_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ).save()

    # transactions
    def _pack(self, units: Sequence[WriteUnit]) -> Iterable[_Transaction]:
        """Greedy, in order; one subscriber's units stay in order across transactions."""
        current = _Transaction()
        for unit in units:
            if not current.fits(unit, self.transaction_items):
                yield current
                current = _Transaction()
            current.add(unit)
        if current.units:
            yield current

    def _write(self, transaction: _Transaction, expires: int) -> list[tuple[_Slot, str]] | None:
        """Commit; None on success, else each item's slot with its cancellation code."""
        checks: list[_Slot] = []
        puts: list[_Slot] = []
        updates: list[_Slot] = []
        try:
            with TransactWrite(connection=connection()) as tx:
                self._add_units(tx, transaction, expires, checks, puts, updates)
        except TransactWriteError as error:
            if error.cause_response_code != "TransactionCanceledException":
                raise
            slots = checks + puts + updates
            codes = [reason.code if reason else "None" for reason in error.cancellation_reasons]
            return list(zip(slots, codes, strict=True))
        return None

    @staticmethod
    def _add_units(  # noqa: PLR0917 - the three slot lists mirror PynamoDB's three
        tx: TransactWrite,
        transaction: _Transaction,
        expires: int,
        checks: list[_Slot],
        puts: list[_Slot],
        updates: list[_Slot],
    ) -> None:
        for unit in transaction.units:
            msisdn = unit.state.msisdn
            tx.save(to_item(unit.state), condition=_version_is(unit.expected_version))
            puts.append(_Slot("state", msisdn))
            for cdr in unit.cdrs:
                tx.save(_marker(cdr.dedup_hash, unit.state.user_id, expires), condition=_absent())
                puts.append(_Slot("marker", msisdn, cdr.dedup_hash))
            for late in unit.late:
                tx.save(_late_item(unit.state.msisdn, late), condition=_absent())
                puts.append(_Slot("late", msisdn, late.cdr.dedup_hash))
            if unit.wallet is not None:
                _wallet_op(tx, unit.wallet, checks, updates, _Slot("wallet", msisdn))

    @staticmethod
    def _learn(slots: list[tuple[_Slot, str]], result: CommitResult) -> None:
        failed = [slot for slot, code in slots if code == "ConditionalCheckFailed"]
        for slot in failed:
            if slot.kind in ("marker", "late"):
                result.duplicates.add(slot.dedup_hash)
            elif slot.kind == "state":
                result.stale_states.add(slot.msisdn)
            else:
                result.stale_wallets.add(slot.msisdn)
        if not failed:
            # Cancelled for another reason (conflict with a concurrent transaction,
            # throttling): nothing learned; re-read the states and try again.
            result.stale_states.update(slot.msisdn for slot, _ in slots if slot.kind == "state")


def _version_is(expected: int) -> Any:
    if expected == 0:
        return RatingStateItem.pk.does_not_exist()
    return RatingStateItem.version == expected


def _absent() -> Any:
    return Item.pk.does_not_exist()


def _marker(dedup_hash: str, user_id: str, expires: int) -> CdrMarkerItem:
    return CdrMarkerItem(
        pk=marker_pk(dedup_hash), sk="CDR", entity="CDR_MARKER", user_id=user_id, expires_at=expires
    )


def _late_item(msisdn: str, late: LateUsage) -> LateUsageItem:
    return LateUsageItem(
        pk=user_pk(late.user_id),
        sk=f"LATE#{late.cycle_label}#{late.cdr.dedup_hash}",
        entity="LATE_USAGE",
        user_id=late.user_id,
        msisdn=msisdn,
        cycle=late.cycle_label,
        usage_type=late.cdr.usage_type.value,
        record=late.cdr.model_dump_json(),
        billable_units=late.billable_units,
        charge_paise=late.charge_paise,
    )


def _wallet_op(
    tx: TransactWrite,
    wallet: WalletDebit,
    checks: list[_Slot],
    updates: list[_Slot],
    slot: _Slot,
) -> None:
    """The wallet must hold exactly what rating assumed; then the debit comes off it."""
    unchanged = WalletItem.balance_paise == wallet.expected_paise
    if wallet.expected_paise == 0:
        unchanged = unchanged | WalletItem.pk.does_not_exist()
    if wallet.debit_paise == 0:
        tx.condition_check(WalletItem, user_pk(wallet.user_id), "WALLET", condition=unchanged)
        checks.append(slot)
        return
    item = WalletItem(pk=user_pk(wallet.user_id), sk="WALLET")
    tx.update(
        item, actions=[WalletItem.balance_paise.add(-wallet.debit_paise)], condition=unchanged
    )
    updates.append(slot)
