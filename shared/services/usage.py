"""Usage rating: a Kinesis batch of CDRs in, charges applied exactly once out.

The pure engine (:mod:`shared.rating`) does the arithmetic; this service does
the bookkeeping around it, against ports (:class:`RatingStore`,
:class:`AnomalySink`, :class:`~shared.events.EventPublisher`):

1. parse and validate every record; failures and records that cannot be placed
   go to the anomaly review queue with a reason (never dropped);
2. drop repeats inside the batch (same ``source#record_id``);
3. read each subscriber's :class:`RatingState` once (one ``BatchGetItem`` per
   100 subscribers); build missing states from the subscriber's profile, active
   plan and wallet (once per subscriber);
4. rate each subscriber's CDRs with the engine, in :class:`WriteUnit` chunks
   that the store packs into transactions of up to 100 items, each unit's state
   guarded by its version and each CDR by its dedup marker in the SAME
   transaction (DESIGN §6);
5. a cancelled transaction tells which markers already existed (duplicates:
   dropped), which states or wallets changed meanwhile (re-read); everything
   not yet written is re-planned and retried, a bounded number of times. What
   is still unwritten is reported as failed records, and redelivery then finds
   the markers of whatever did commit.

State layout and consistency rules: README "Usage rating".
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from pydantic import ValidationError

from shared.clock import Clock, isoformat, to_ist
from shared.cycles import cycle_containing
from shared.events import DomainEvent, EventPublisher
from shared.models import Plan, Subscriber, SubscriberType, Subscription
from shared.rating import (
    Cdr,
    QuotaExhausted,
    QuotaThresholdReached,
    RatedCdr,
    RatingSignal,
    UsageBalance,
    UsageType,
    rate,
)
from shared.validation import normalize_msisdn

# A CDR older than this is refused: its dedup marker may have expired (MARKER_TTL).
MAX_CDR_AGE = timedelta(days=60)
MARKER_TTL = timedelta(days=90)
FUTURE_TOLERANCE = timedelta(minutes=5)
TRANSACTION_ITEMS = 100  # DynamoDB's TransactWriteItems limit
# Room in one unit for CDR items (marker, late item): the rest is the state and the wallet.
UNIT_CDR_ITEMS = TRANSACTION_ITEMS - 2
MAX_ATTEMPTS = 6
KEEP_CLOSED_CYCLES = 2
# A warm container remembers this many dedup hashes it saw committed: a record the
# network re-sends shortly after is then dropped without a failed transaction.
RECENT_HASHES = 200_000
# A cancelled transaction with at least this share of duplicate markers looks like
# a replayed batch: probe every pending marker at once instead of failing on each.
REPLAY_SHARE = 0.1
ANOMALY_WINDOW = timedelta(hours=1)
ANOMALY_FLAG_THRESHOLD = 5  # anomalies for one MSISDN within one window
_TYPE_INDEX = {UsageType.DATA: 0, UsageType.VOICE: 1, UsageType.SMS: 2}
PREPAID = SubscriberType.PREPAID


class AnomalyReason(StrEnum):
    INVALID_RECORD = "INVALID_RECORD"
    UNKNOWN_MSISDN = "UNKNOWN_MSISDN"
    NO_ACTIVE_PLAN = "NO_ACTIVE_PLAN"
    TOO_OLD = "TOO_OLD"
    FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"
    CYCLE_UNAVAILABLE = "CYCLE_UNAVAILABLE"


# --- state ------------------------------------------------------------------------


@dataclass
class CycleUsage:
    """One billing cycle (postpaid) or plan validity period (prepaid) of one subscriber.

    ``balance.wallet_paise`` is not used here: the wallet lives on the state.
    ``closed`` is set by billing when it invoices the cycle (prepaid: when the plan
    period ends); CDRs rated into a closed cycle become late-usage items.
    """

    label: str
    start: datetime
    end: datetime
    plan: Plan
    balance: UsageBalance = field(default_factory=UsageBalance)
    closed: bool = False
    # IST date -> [data, voice, sms]; kept until a later cycle follows a closed one.
    daily: dict[str, list[int]] = field(default_factory=dict)
    late_records: int = 0

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass
class RatingState:
    """Everything rating needs for one MSISDN, in ONE item (one read, one write)."""

    msisdn: str
    user_id: str
    subscriber_type: SubscriberType
    bill_cycle_day: int
    subscription_id: str
    valid_until: datetime | None  # prepaid plan expiry
    wallet_paise: int  # prepaid: cached copy of the wallet item, checked on every debit
    cycles: dict[str, CycleUsage]
    version: int = 0  # 0: not stored yet

    def copy(self) -> RatingState:
        cycles = {
            label: replace(c, daily={d: list(v) for d, v in c.daily.items()})
            for label, c in self.cycles.items()
        }
        return replace(self, cycles=cycles)

    @property
    def prepaid(self) -> bool:
        return self.subscriber_type is PREPAID

    def latest(self) -> CycleUsage:
        return self.cycles[max(self.cycles, key=lambda label: self.cycles[label].start)]

    def forget_past_days(self) -> None:
        """A closed cycle with a later one after it keeps its balance (late CDRs,
        billing) but not its day counters: the usage report shows the latest
        cycle's, and every charged batch rewrites this state, paid per KB."""
        latest = self.latest()
        for cycle in self.cycles.values():
            if cycle.closed and cycle is not latest:
                cycle.daily = {}


@dataclass(frozen=True)
class RatingSources:
    """What a rating state is built from: the subscriber's own items."""

    subscriber: Subscriber
    subscription: Subscription | None
    plan: Plan | None
    wallet_paise: int


def build_state(msisdn: str, sources: RatingSources) -> RatingState | None:
    """A fresh state from the subscriber's items; None without a usable plan."""
    subscription, plan = sources.subscription, sources.plan
    if subscription is None or plan is None:
        return None
    subscriber = sources.subscriber
    state = RatingState(
        msisdn=msisdn,
        user_id=subscriber.user_id,
        subscriber_type=subscriber.subscriber_type,
        bill_cycle_day=subscriber.bill_cycle_day,
        subscription_id=subscription.subscription_id,
        valid_until=subscription.valid_until,
        wallet_paise=sources.wallet_paise if subscriber.subscriber_type is PREPAID else 0,
        cycles={},
    )
    _open_cycle_for(state, subscription, plan)
    return state


def refresh_state(state: RatingState, sources: RatingSources) -> RatingState:
    """The state after a plan change or renewal; counters of open cycles carry over.

    Prepaid: the old period closes and the new plan's validity starts a new cycle.
    Postpaid: the cycle stays; its plan snapshot becomes the new plan (the engine
    charges carried-over usage correctly, see shared.rating).
    """
    fresh = state.copy()
    fresh.wallet_paise = sources.wallet_paise if state.prepaid else 0
    subscription, plan = sources.subscription, sources.plan
    if subscription is None or plan is None:
        return fresh
    if subscription.subscription_id == state.subscription_id:
        if fresh.prepaid and _extended(state, subscription):
            _open_extension(fresh, subscription, plan)
        return fresh
    fresh.subscription_id = subscription.subscription_id
    fresh.valid_until = subscription.valid_until
    if fresh.prepaid:
        for cycle in fresh.cycles.values():
            cycle.closed = True
    _open_cycle_for(fresh, subscription, plan)
    _prune(fresh)
    fresh.forget_past_days()
    return fresh


def _open_cycle_for(state: RatingState, subscription: Subscription, plan: Plan) -> None:
    if state.prepaid:
        assert subscription.valid_until is not None, "prepaid plans expire"
        start, end = subscription.started_at, subscription.valid_until
        label = isoformat(start)
    else:
        cycle = cycle_containing(state.bill_cycle_day, subscription.started_at)
        start, end, label = cycle.start, cycle.end, cycle.label
    existing = state.cycles.get(label)
    if existing is not None:
        existing.plan = plan
        return
    state.cycles[label] = CycleUsage(label=label, start=start, end=end, plan=plan)


def _extended(state: RatingState, subscription: Subscription) -> bool:
    """A repeat purchase queued after the current period (payments' EXTEND): the same
    subscription, a later expiry."""
    return (
        state.valid_until is not None
        and subscription.valid_until is not None
        and subscription.valid_until > state.valid_until
    )


def _open_extension(state: RatingState, subscription: Subscription, plan: Plan) -> None:
    """The extension is a period of its own, with the plan's full quota, from the
    old expiry to the new one; the current period runs on to its end."""
    assert state.valid_until is not None
    assert subscription.valid_until is not None
    start, end = state.valid_until, subscription.valid_until
    label = isoformat(start)
    state.cycles[label] = CycleUsage(label=label, start=start, end=end, plan=plan)
    state.valid_until = end
    _prune(state)


def _prune(state: RatingState) -> None:
    """Keep every open cycle and the newest closed ones (late CDRs still find them)."""
    closed = sorted((c for c in state.cycles.values() if c.closed), key=lambda c: c.start)
    for cycle in closed[:-KEEP_CLOSED_CYCLES]:
        del state.cycles[cycle.label]


def place(state: RatingState, started_at: datetime) -> CycleUsage | None:
    """The cycle a CDR counts in (created for a new postpaid cycle), or None."""
    for cycle in state.cycles.values():
        if cycle.contains(started_at):
            return cycle
    if state.prepaid:
        return None
    latest = state.latest()
    if started_at < latest.end:
        return None  # before every cycle this state knows: not covered
    bounds = cycle_containing(state.bill_cycle_day, started_at)
    created = CycleUsage(label=bounds.label, start=bounds.start, end=bounds.end, plan=latest.plan)
    state.cycles[bounds.label] = created
    return created


def needs_refresh(state: RatingState, started_at: datetime) -> bool:
    """Prepaid usage after the known validity: a renewal or a new plan may cover it."""
    return state.prepaid and state.valid_until is not None and started_at >= state.valid_until


# --- units of work -----------------------------------------------------------------


@dataclass(frozen=True)
class LateUsage:
    """A CDR rated into a cycle that was already invoiced: carried to the next invoice."""

    user_id: str
    cycle_label: str
    cdr: Cdr
    billable_units: int
    charge_paise: int


@dataclass(frozen=True)
class WalletDebit:
    """Prepaid PAYG: the wallet must still hold ``expected_paise``; ``debit_paise`` comes off."""

    user_id: str
    expected_paise: int
    debit_paise: int


@dataclass
class WriteUnit:
    """One subscriber's share of one transaction: new state, markers, late items, wallet."""

    state: RatingState  # version already incremented
    expected_version: int  # 0: the state item must not exist yet
    cdrs: list[Cdr]  # every CDR of the unit: each gets its dedup marker
    late: list[LateUsage]  # those of them that fell in a closed cycle
    wallet: WalletDebit | None
    signals: list[tuple[str, RatingSignal]]  # (cycle label, signal)

    @property
    def item_count(self) -> int:
        return 1 + len(self.cdrs) + len(self.late) + (1 if self.wallet else 0)


@dataclass
class CommitResult:
    """What one ``commit`` achieved and what its cancelled transactions taught."""

    committed: list[WriteUnit] = field(default_factory=list)
    duplicates: set[str] = field(default_factory=set)  # dedup hashes whose marker existed
    stale_states: set[str] = field(default_factory=set)  # msisdns whose version moved
    stale_wallets: set[str] = field(default_factory=set)  # msisdns whose wallet moved

    @property
    def complete(self) -> bool:
        return not (self.duplicates or self.stale_states or self.stale_wallets)


@dataclass(frozen=True)
class Anomaly:
    reason: AnomalyReason
    message: str
    record_key: str  # the Kinesis event id (shard:sequence)
    data: str
    msisdn: str | None = None

    def body(self, detected_at: datetime) -> dict[str, object]:
        return {
            "reason": self.reason.value,
            "message": self.message,
            "msisdn": self.msisdn,
            "record_key": self.record_key,
            "record": self.data,
            "detected_at": isoformat(detected_at),
        }


@dataclass(frozen=True)
class InboundRecord:
    """A stream record: its id for failure reports, its key, its bytes."""

    sequence_number: str
    event_id: str
    data: bytes


@dataclass
class BatchOutcome:
    failed: list[str] = field(default_factory=list)  # sequence numbers to redeliver
    rated: int = 0
    duplicates: int = 0
    late: int = 0
    anomalies: int = 0
    transactions: int = 0


class RatingStore(Protocol):
    def load_states(self, msisdns: Collection[str]) -> dict[str, RatingState]: ...

    def load_sources(self, msisdns: Collection[str]) -> dict[str, RatingSources]:
        """Sources of each known MSISDN; an unknown MSISDN is absent from the result."""
        ...

    def wallet_balances(self, user_ids: Collection[str]) -> dict[str, int]: ...

    def existing_markers(self, dedup_hashes: Collection[str]) -> set[str]: ...

    def commit(self, units: Sequence[WriteUnit], *, marker_expires_at: datetime) -> CommitResult:
        """Write the units in transactions of up to 100 items, in order; stop at the
        first cancelled one and say why."""
        ...

    def count_anomalies(self, counts: Mapping[str, int], window: str) -> dict[str, int]:
        """Add to each MSISDN's anomaly count in the window; the new totals."""
        ...

    def flag(self, msisdn: str, user_id: str | None, count: int, window: str) -> None: ...


class AnomalySink(Protocol):
    def send(self, anomalies: Sequence[Anomaly], detected_at: datetime) -> None: ...


# --- the service ---------------------------------------------------------------------


@dataclass
class _Batch:
    """Working set of one ``rate_records`` call."""

    now: datetime
    anomalies: list[Anomaly] = field(default_factory=list)
    records_of: dict[str, list[InboundRecord]] = field(default_factory=dict)  # dedup hash ->
    pending: dict[str, dict[str, Cdr]] = field(default_factory=dict)  # msisdn -> hash -> cdr
    msisdn_of: dict[str, str] = field(default_factory=dict)  # dedup hash -> msisdn
    states: dict[str, RatingState] = field(default_factory=dict)
    signals: list[tuple[RatingState, str, RatingSignal]] = field(default_factory=list)
    outcome: BatchOutcome = field(default_factory=BatchOutcome)

    def add(self, dedup_hash: str, cdr: Cdr) -> None:
        self.pending.setdefault(cdr.msisdn, {})[dedup_hash] = cdr
        self.msisdn_of[dedup_hash] = cdr.msisdn

    def drop(self, dedup_hashes: Iterable[str]) -> None:
        """No longer pending: written, duplicate or refused."""
        for dedup_hash in dedup_hashes:
            msisdn = self.msisdn_of.get(dedup_hash, "")
            cdrs = self.pending.get(msisdn)
            if cdrs is None:
                continue
            cdrs.pop(dedup_hash, None)
            if not cdrs:
                del self.pending[msisdn]


class RatingService:
    def __init__(
        self, store: RatingStore, anomalies: AnomalySink, events: EventPublisher, clock: Clock
    ) -> None:
        self._store = store
        self._sink = anomalies
        self._events = events
        self._clock = clock
        self._recent = _RecentHashes(RECENT_HASHES)

    def rate_records(self, records: Sequence[InboundRecord]) -> BatchOutcome:
        batch = _Batch(now=self._clock.now())
        self._parse(batch, records)
        self._load_states(batch)
        self._write(batch)
        self._report_anomalies(batch)
        self._publish_signals(batch)
        outcome = batch.outcome
        outcome.anomalies = len(batch.anomalies)
        outcome.failed = [
            record.sequence_number
            for cdrs in batch.pending.values()
            for dedup_hash in cdrs
            for record in batch.records_of[dedup_hash]
        ]
        return outcome

    # 1-2: parse, validate, dedupe within the batch
    def _parse(self, batch: _Batch, records: Sequence[InboundRecord]) -> None:
        for record in records:
            cdr = self._valid_cdr(batch, record)
            if cdr is None:
                continue
            dedup_hash = cdr.dedup_hash
            seen = batch.records_of.setdefault(dedup_hash, [])
            seen.append(record)
            if len(seen) > 1 or dedup_hash in self._recent:
                batch.outcome.duplicates += 1
                continue
            batch.add(dedup_hash, cdr)

    def _valid_cdr(self, batch: _Batch, record: InboundRecord) -> Cdr | None:
        text = record.data.decode("utf-8", errors="replace")
        try:
            cdr = Cdr.model_validate_json(record.data)
        except ValidationError as error:
            batch.anomalies.append(
                Anomaly(
                    AnomalyReason.INVALID_RECORD,
                    _describe(error),
                    record.event_id,
                    text,
                    _msisdn_in(text),
                )
            )
            return None
        reason = None
        if cdr.started_at < batch.now - MAX_CDR_AGE:
            reason = AnomalyReason.TOO_OLD, f"started more than {MAX_CDR_AGE.days} days ago"
        elif cdr.started_at > batch.now + FUTURE_TOLERANCE:
            reason = AnomalyReason.FUTURE_TIMESTAMP, "started in the future"
        if reason is not None:
            batch.anomalies.append(Anomaly(*reason, record.event_id, text, cdr.msisdn))
            return None
        return cdr

    # 3: one read of each subscriber's state; build or refresh what is missing
    def _load_states(self, batch: _Batch) -> None:
        batch.states = self._store.load_states(list(batch.pending))
        missing = [m for m in batch.pending if m not in batch.states]
        stale = [
            msisdn
            for msisdn, state in batch.states.items()
            if any(needs_refresh(state, c.started_at) for c in batch.pending[msisdn].values())
        ]
        if not (missing or stale):
            return
        sources = self._store.load_sources(missing + stale)
        for msisdn in missing:
            found = sources.get(msisdn)
            state = build_state(msisdn, found) if found else None
            if state is None:
                reason = AnomalyReason.NO_ACTIVE_PLAN if found else AnomalyReason.UNKNOWN_MSISDN
                self._refuse(batch, msisdn, reason, "no subscriber" if not found else "no plan")
            else:
                batch.states[msisdn] = state
        for msisdn in stale:
            if msisdn in sources:
                batch.states[msisdn] = refresh_state(batch.states[msisdn], sources[msisdn])

    def _refuse(
        self, batch: _Batch, msisdn: str, reason: AnomalyReason, message: str, only: str = ""
    ) -> None:
        """Send a subscriber's pending CDRs (or just ``only``) to the anomaly queue."""
        cdrs = batch.pending.get(msisdn, {})
        hashes = [only] if only else list(cdrs)
        for dedup_hash in hashes:
            cdr = cdrs[dedup_hash]
            for record in batch.records_of[dedup_hash][:1]:
                batch.anomalies.append(
                    Anomaly(reason, message, record.event_id, cdr.model_dump_json(), msisdn)
                )
        batch.drop(hashes)

    # 4-5: rate, write, learn from cancellations, retry
    def _write(self, batch: _Batch) -> None:
        probed = False
        for _ in range(MAX_ATTEMPTS):
            if not batch.pending:
                return
            units = self._plan(batch)
            if not units:
                return
            result = self._store.commit(units, marker_expires_at=batch.now + MARKER_TTL)
            batch.outcome.transactions += 1
            self._apply(batch, result)
            if result.complete:
                continue
            if not probed and self._looks_like_replay(result, units):
                # Redelivery: find every already-applied CDR in one go.
                probed = True
                pending = [h for cdrs in batch.pending.values() for h in cdrs]
                found = self._store.existing_markers(pending)
                batch.outcome.duplicates += len(found)
                batch.drop(found)
            self._reload(batch, result)

    @staticmethod
    def _looks_like_replay(result: CommitResult, units: list[WriteUnit]) -> bool:
        failed_markers = sum(len(u.cdrs) for u in units) - sum(
            len(u.cdrs) for u in result.committed
        )
        return len(result.duplicates) >= max(2, REPLAY_SHARE * min(failed_markers, 100))

    def _apply(self, batch: _Batch, result: CommitResult) -> None:
        self._recent.add_all(result.duplicates)
        for unit in result.committed:
            self._recent.add_all(cdr.dedup_hash for cdr in unit.cdrs)
            state = unit.state
            batch.states[state.msisdn] = state
            batch.drop(cdr.dedup_hash for cdr in unit.cdrs)
            batch.outcome.rated += len(unit.cdrs)
            batch.outcome.late += len(unit.late)
            batch.signals += [(state, label, signal) for label, signal in unit.signals]
        batch.outcome.duplicates += len(result.duplicates)
        batch.drop(result.duplicates)

    def _reload(self, batch: _Batch, result: CommitResult) -> None:
        if result.stale_states:
            fresh = self._store.load_states(result.stale_states)
            batch.states.update(fresh)
        if result.stale_wallets:
            states = [batch.states[m] for m in result.stale_wallets if m in batch.states]
            balances = self._store.wallet_balances({s.user_id for s in states})
            for state in states:
                state.wallet_paise = balances.get(state.user_id, 0)

    def _plan(self, batch: _Batch) -> list[WriteUnit]:
        units: list[WriteUnit] = []
        for msisdn in list(batch.pending):
            state = batch.states.get(msisdn)
            if state is None:  # vanished between attempts: should not happen
                self._refuse(batch, msisdn, AnomalyReason.UNKNOWN_MSISDN, "state not found")
                continue
            units += self._units_for(batch, state, list(batch.pending[msisdn].values()))
        return units

    def _units_for(self, batch: _Batch, state: RatingState, cdrs: list[Cdr]) -> list[WriteUnit]:
        units: list[WriteUnit] = []
        chunk: list[tuple[CycleUsage, Cdr]] = []
        items = 0
        working = state.copy()
        for cdr in sorted(cdrs, key=lambda c: c.started_at):
            cycle = place(working, cdr.started_at)
            if cycle is None:
                reason = AnomalyReason.NO_ACTIVE_PLAN if working.prepaid else None
                self._refuse(
                    batch,
                    state.msisdn,
                    reason or AnomalyReason.CYCLE_UNAVAILABLE,
                    "no plan covers this time" if reason else "before every known cycle",
                    only=cdr.dedup_hash,
                )
                continue
            cost = 2 if cycle.closed else 1
            if items + cost > UNIT_CDR_ITEMS:
                units.append(_rate_unit(working, chunk))
                working = units[-1].state.copy()
                chunk, items = [], 0
                cycle = working.cycles[cycle.label]
            chunk.append((cycle, cdr))
            items += cost
        if chunk:
            units.append(_rate_unit(working, chunk))
        return units

    # 6-7: anomalies and events, after the charges are safe
    def _report_anomalies(self, batch: _Batch) -> None:
        if not batch.anomalies:
            return
        self._sink.send(batch.anomalies, batch.now)
        counts = Counter(a.msisdn for a in batch.anomalies if a.msisdn)
        if not counts:
            return
        window = _window_label(batch.now)
        totals = self._store.count_anomalies(dict(counts), window)
        flagged = []
        for msisdn, total in totals.items():
            if total - counts[msisdn] < ANOMALY_FLAG_THRESHOLD <= total:
                state = batch.states.get(msisdn)
                user_id = state.user_id if state else None
                self._store.flag(msisdn, user_id, total, window)
                flagged.append(_flag_event(msisdn, user_id, total, window, batch.now))
        if flagged:
            self._events.publish(flagged)

    def _publish_signals(self, batch: _Batch) -> None:
        events = [
            _signal_event(state, label, signal, batch.now) for state, label, signal in batch.signals
        ]
        if events:
            self._events.publish(events)


class _RecentHashes:
    """Dedup hashes known to be committed, oldest forgotten first (bounded memory)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._hashes: dict[str, None] = {}

    def __contains__(self, dedup_hash: str) -> bool:
        return dedup_hash in self._hashes

    def add_all(self, dedup_hashes: Iterable[str]) -> None:
        hashes = self._hashes
        for dedup_hash in dedup_hashes:
            hashes[dedup_hash] = None
        overflow = len(hashes) - self._capacity
        if overflow > 0:
            for stale in list(itertools.islice(hashes, overflow)):
                del hashes[stale]


def _rate_unit(state: RatingState, chunk: list[tuple[CycleUsage, Cdr]]) -> WriteUnit:
    """Rate one chunk of one subscriber's CDRs into a copy of ``state``."""
    new = state.copy()
    by_cycle: dict[str, list[Cdr]] = defaultdict(list)
    for cycle, cdr in chunk:
        by_cycle[cycle.label].append(cdr)
    late: list[LateUsage] = []
    signals: list[tuple[str, RatingSignal]] = []
    wallet_before = new.wallet_paise
    wallet_debit = charged = 0
    for label in sorted(by_cycle, key=lambda lb: new.cycles[lb].start):
        cycle = new.cycles[label]
        cdrs = by_cycle[label]
        balance = cycle.balance.model_copy(update={"wallet_paise": new.wallet_paise})
        result = rate(cycle.plan, balance, cdrs, subscriber_type=cycle.plan.type)
        new.wallet_paise = result.balance.wallet_paise if new.prepaid else 0
        cycle.balance = result.balance.model_copy(update={"wallet_paise": 0})
        charged += result.charge_paise
        wallet_debit += result.wallet_debit_paise
        if cycle.closed:
            cycle.late_records += len(cdrs)
            late += [
                LateUsage(new.user_id, label, cdr, rated.billable_units, rated.charge_paise)
                for cdr, rated in zip(cdrs, result.rated, strict=True)
            ]
        else:
            _add_daily(cycle, cdrs, result.rated)
            signals += [(label, signal) for signal in result.signals]
    new.forget_past_days()
    wallet = None
    if new.prepaid and charged:
        wallet = WalletDebit(new.user_id, wallet_before, wallet_debit)
    expected = new.version
    new.version += 1
    return WriteUnit(
        state=new,
        expected_version=expected,
        cdrs=[cdr for _, cdr in chunk],
        late=late,
        wallet=wallet,
        signals=signals,
    )


def _add_daily(cycle: CycleUsage, cdrs: list[Cdr], rated: Sequence[RatedCdr]) -> None:
    for cdr, outcome in zip(cdrs, rated, strict=True):
        day = to_ist(cdr.started_at).date().isoformat()
        counters = cycle.daily.get(day)
        if counters is None:
            counters = cycle.daily[day] = [0, 0, 0]
        counters[_TYPE_INDEX[outcome.usage_type]] += outcome.billable_units


def _window_label(now: datetime) -> str:
    seconds = int(ANOMALY_WINDOW.total_seconds())
    start = int(now.timestamp()) // seconds * seconds
    return isoformat(datetime.fromtimestamp(start, tz=now.tzinfo))


def _describe(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in error.errors()
    ]
    return "; ".join(problems)[:500]


def _msisdn_in(text: str) -> str | None:
    """The record's MSISDN if it has a valid one (so its anomalies can be counted)."""
    try:
        value = json.loads(text).get("msisdn")
        return normalize_msisdn(value) if isinstance(value, str) else None
    except (ValueError, AttributeError):
        return None


def _signal_event(
    state: RatingState, label: str, signal: RatingSignal, now: datetime
) -> DomainEvent:
    detail: dict[str, object] = {
        "user_id": state.user_id,
        "msisdn": state.msisdn,
        "subscriber_type": state.subscriber_type.value,
        "cycle": label,
        "usage_type": signal.usage_type.value,
        "used_units": signal.used_units,
        "included_units": signal.included_units,
    }
    if isinstance(signal, QuotaExhausted):
        detail["wallet_paise"] = signal.wallet_paise
        detail_type = "QuotaExhausted"
    else:
        assert isinstance(signal, QuotaThresholdReached)
        detail["percent"] = signal.percent
        detail_type = "QuotaThresholdReached"
    return DomainEvent(detail_type=detail_type, source="usage", occurred_at=now, detail=detail)


def _flag_event(
    msisdn: str, user_id: str | None, count: int, window: str, now: datetime
) -> DomainEvent:
    return DomainEvent(
        detail_type="SubscriberFlagged",
        source="usage",
        occurred_at=now,
        detail={
            "msisdn": msisdn,
            "user_id": user_id,
            "reason": "REPEATED_CDR_ANOMALIES",
            "anomaly_count": count,
            "window_start": window,
        },
    )


# --- the usage report (GET /users/{user_id}/usage) ------------------------------------


def current_cycle(state: RatingState, now: datetime) -> CycleUsage:
    """The cycle ``now`` falls in: a stored one, else an empty one on the current plan."""
    for cycle in state.cycles.values():
        if cycle.contains(now):
            return cycle
    latest = state.latest()
    if state.prepaid or now < latest.start:
        return latest  # prepaid plan expired: its last period is the most useful answer
    bounds = cycle_containing(state.bill_cycle_day, now)
    return CycleUsage(label=bounds.label, start=bounds.start, end=bounds.end, plan=latest.plan)
