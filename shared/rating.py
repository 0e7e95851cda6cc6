"""The pure rating engine: CDRs in, charges, a new cycle balance and signals out.

No I/O here. The usage handler reads the plan and the cycle balance, claims each
CDR's dedup key in the same transaction that stores the new balance (DESIGN §6),
and calls :func:`rate_batch` once per Kinesis batch.

Rounding rule (the heart of order independence)
-----------------------------------------------
1. Each CDR's raw usage is rounded UP to whole pulses of the plan: a 61 s call on
   a 60 s pulse bills 120 s; 15 KB on a 10 KB pulse bills 20 KB; SMS count as is
   (their pulse is one message). This depends on the CDR alone.
2. Quota is consumed in billable units. The cycle charge for a usage type is a
   function of the CUMULATIVE billable usage ``u`` only::

       charge(u) = paise_per_pulse * ceil(max(0, u - included) / pulse)

   The ceiling matters when the included quota is not a whole number of pulses:
   the partial pulse that straddles the end of the quota is charged whole.
   Unlimited (``None``) never charges; an included quota of 0 makes all usage
   overage.
3. A CDR is charged ``charge(u_after) - charge(u_before)``. Over a cycle the sum
   telescopes to ``charge(total billable)``, and the total billable usage is a
   sum of per-CDR amounts, so the cycle's charge does not depend on the order in
   which CDRs arrive (a Hypothesis property in tests/unit_rating proves it).
   Money is whole paise throughout: ``pulses * paise_per_pulse`` is exact, so
   the half-up rule of :mod:`shared.money` never has to round here.

Prepaid overage is paid from the wallet while it lasts; what it cannot cover is
``unbilled_paise``, kept on the balance (service control blocks on it) and never
forgotten. The final wallet is ``max(0, wallet - charge)`` and the unbilled
amount ``max(0, charge - wallet)`` whatever the order. Postpaid overage accrues
in ``overage_*_paise`` for the invoice; postpaid quota never "exhausts".

Decisions taken beyond the brief (with reasons)
-----------------------------------------------
- Zero-byte DATA sessions are accepted: networks emit them (a context opened
  with no traffic, interim records), they are valid records and rate to 0.
  Sending them to the anomaly queue would only add noise. VOICE needs > 0 s and
  SMS a count >= 1, as the feed contract says.
- ``source`` may not contain ``#``: the dedup key ``source#record_id`` is then
  unambiguous (``a#b`` + ``c`` and ``a`` + ``b#c`` cannot collide).
- Quantities are strict integers (no ``"60"`` strings, no ``60.0``, no bools):
  they carry money, and a feed that sends anything else is broken, which is
  what the anomaly queue is for. Unknown extra fields are ignored, because the
  network's CDR format grows fields the engine does not need.
- ``started_at`` must be an ISO-8601 string with an offset (or an aware
  datetime); bare epoch numbers are rejected. It is stored in UTC.
- Thresholds (80 % and 100 %) are signalled for every metered type with a
  positive included quota, not only data; a CDR that jumps past both emits both.
- ``QuotaExhausted`` is checked for every type after every CDR (not only the
  CDR's own type), because a debit for one type can leave the wallet unable to
  pay the next pulse of another. Used units only grow and the wallet only
  shrinks while rating, so the condition is monotone and the final flags are
  order independent too. :meth:`UsageBalance.credit_wallet` (a top-up) settles
  unbilled charges first and re-arms the flag of a type the wallet can pay for
  again, so a later exhaustion is signalled again: "once per type per cycle"
  holds between top-ups.
- :func:`rate_batch` is generic over the grouping key: pass ``user_id``, or
  ``(user_id, cycle_label)`` when a batch straddles a cycle boundary.
- ``RatedCdr`` also carries ``usage_type`` and ``overage_pulses`` (so
  ``charge_paise == overage_pulses * paise_per_pulse`` can be checked), and
  ``overage_*_paise`` counts prepaid PAYG spend too (wallet + unbilled), which
  the usage API shows as "overage so far". A postpaid wallet is never touched.
- Speed: validation happens once, when a ``Cdr`` is built; the loop in
  :func:`rate` works on plain ints in slotted per-type meters, emits NamedTuples
  and frozen slotted dataclasses, and builds the new balance with
  ``model_copy`` (no re-validation: every value is an int derived from a
  validated plan and balance). bench/rating_engine.py measures it.
- A balance belongs to one plan. If a plan changes mid-cycle and the caller
  carries ``used_*`` over, usage need not be a whole number of the new pulses;
  the ceiling in rule 2 still charges correctly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NamedTuple, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from shared.models import NonNegativeInt, Plan, SubscriberType
from shared.validation import normalize_msisdn

DEDUP_HASH_HEX_CHARS = 32  # 128 bits of sha256: collisions are not a concern
THRESHOLD_PERCENTS = (80, 100)


class UsageType(StrEnum):
    DATA = "DATA"
    VOICE = "VOICE"
    SMS = "SMS"


_QUANTITY_FIELDS: dict[UsageType, frozenset[str]] = {
    UsageType.DATA: frozenset({"bytes_up", "bytes_down"}),
    UsageType.VOICE: frozenset({"duration_seconds"}),
    UsageType.SMS: frozenset({"count"}),
}
_ALL_QUANTITY_FIELDS = frozenset(name for names in _QUANTITY_FIELDS.values() for name in names)


class Cdr(BaseModel):
    """One record of the network's CDR feed (API.md), validated."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    record_id: Annotated[str, Field(min_length=1, max_length=128)]
    source: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^#]+$")]
    msisdn: str
    usage_type: UsageType
    started_at: AwareDatetime
    bytes_up: Annotated[StrictInt, Field(ge=0)] | None = None
    bytes_down: Annotated[StrictInt, Field(ge=0)] | None = None
    duration_seconds: Annotated[StrictInt, Field(gt=0)] | None = None
    count: Annotated[StrictInt, Field(ge=1)] | None = None
    called_number: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    roaming: StrictBool = False

    @field_validator("msisdn")
    @classmethod
    def _normalize_msisdn(cls, value: str) -> str:
        return normalize_msisdn(value)

    @field_validator("started_at", mode="before")
    @classmethod
    def _iso_timestamp_only(cls, value: Any) -> Any:
        # Lax pydantic would read 1700000000 as an epoch; the feed promises ISO-8601.
        if not isinstance(value, str | datetime):
            raise ValueError("started_at must be an ISO-8601 timestamp with an offset")
        return value

    @field_validator("started_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _quantities_match_type(self) -> Cdr:
        present = {name for name in _ALL_QUANTITY_FIELDS if getattr(self, name) is not None}
        expected = _QUANTITY_FIELDS[self.usage_type]
        if present != expected:
            raise ValueError(
                f"{self.usage_type} record needs exactly {sorted(expected)}, got {sorted(present)}"
            )
        return self

    @property
    def quantity(self) -> int:
        """Raw usage in the type's unit: bytes, seconds or messages."""
        usage_type = self.usage_type
        if usage_type is UsageType.DATA:
            return (self.bytes_up or 0) + (self.bytes_down or 0)
        if usage_type is UsageType.VOICE:
            return self.duration_seconds or 0
        return self.count or 0

    @property
    def dedup_key(self) -> str:
        return f"{self.source}#{self.record_id}"

    @property
    def dedup_hash(self) -> str:
        """Short stable hash of :attr:`dedup_key`, for ``CDR#<hash>`` storage keys."""
        digest = hashlib.sha256(self.dedup_key.encode("utf-8")).hexdigest()
        return digest[:DEDUP_HASH_HEX_CHARS]


class RemainingQuota(NamedTuple):
    """Included units left; ``None`` means unlimited."""

    data_bytes: int
    voice_seconds: int | None
    sms: int


class UsageBalance(BaseModel):
    """One subscriber's usage in one cycle (or prepaid validity period).

    ``used_*`` are cumulative billable units (pulse-rounded), including overage.
    ``overage_*_paise`` is everything charged beyond the quota this cycle: the
    invoice amount for postpaid, PAYG spend (wallet + unbilled) for prepaid.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    used_data_bytes: NonNegativeInt = 0
    used_voice_seconds: NonNegativeInt = 0
    used_sms: NonNegativeInt = 0
    overage_data_paise: NonNegativeInt = 0
    overage_voice_paise: NonNegativeInt = 0
    overage_sms_paise: NonNegativeInt = 0
    wallet_paise: NonNegativeInt = Field(default=0, description="Prepaid PAYG balance available")
    unbilled_paise: NonNegativeInt = Field(
        default=0, description="Prepaid charges the wallet could not cover"
    )
    data_exhausted: bool = False
    voice_exhausted: bool = False
    sms_exhausted: bool = False
    data_alert_percent: Annotated[int, Field(ge=0, le=100)] = 0
    voice_alert_percent: Annotated[int, Field(ge=0, le=100)] = 0
    sms_alert_percent: Annotated[int, Field(ge=0, le=100)] = 0

    @property
    def overage_paise(self) -> int:
        return self.overage_data_paise + self.overage_voice_paise + self.overage_sms_paise

    def remaining(self, plan: Plan) -> RemainingQuota:
        voice = plan.voice_seconds
        return RemainingQuota(
            data_bytes=max(0, plan.data_bytes - self.used_data_bytes),
            voice_seconds=None if voice is None else max(0, voice - self.used_voice_seconds),
            sms=max(0, plan.sms - self.used_sms),
        )

    def credit_wallet(self, plan: Plan, amount_paise: int) -> UsageBalance:
        """A prepaid top-up: settles unbilled charges first, the rest goes to the wallet.

        Re-arms ``*_exhausted`` for each type whose next pulse the wallet can pay again.
        """
        if amount_paise < 0:
            raise ValueError("a top-up cannot be negative")
        settled = min(amount_paise, self.unbilled_paise)
        wallet = self.wallet_paise + amount_paise - settled
        rates = _rates(plan)
        return self.model_copy(
            update={
                "wallet_paise": wallet,
                "unbilled_paise": self.unbilled_paise - settled,
                "data_exhausted": self.data_exhausted and wallet < rates[0],
                "voice_exhausted": self.voice_exhausted and wallet < rates[1],
                "sms_exhausted": self.sms_exhausted and wallet < rates[2],
            }
        )


def _rates(plan: Plan) -> tuple[int, int, int]:
    overage = plan.overage
    return (overage.data_paise_per_pulse, overage.voice_paise_per_pulse, overage.sms_paise_each)


class RatedCdr(NamedTuple):
    """The outcome for one CDR. Units are bytes / seconds / messages."""

    dedup_key: str
    usage_type: UsageType
    billable_units: int  # raw usage rounded up to whole pulses
    units_within_quota: int
    overage_units: int  # billable_units - units_within_quota
    overage_pulses: int  # pulses this CDR added to the cycle charge
    charge_paise: int  # overage_pulses * paise_per_pulse
    wallet_debit_paise: int  # prepaid: paid from the wallet
    unbilled_paise: int  # prepaid: what the wallet could not cover


@dataclass(frozen=True, slots=True)
class QuotaThresholdReached:
    usage_type: UsageType
    percent: int
    used_units: int
    included_units: int
    dedup_key: str  # the CDR that crossed it


@dataclass(frozen=True, slots=True)
class QuotaExhausted:
    """Prepaid: quota used up and the wallet cannot pay the next pulse."""

    usage_type: UsageType
    used_units: int
    included_units: int
    wallet_paise: int
    dedup_key: str  # the CDR after which it happened


RatingSignal = QuotaThresholdReached | QuotaExhausted


@dataclass(frozen=True, slots=True)
class RatingResult:
    balance: UsageBalance
    rated: tuple[RatedCdr, ...]
    signals: tuple[RatingSignal, ...]

    @property
    def charge_paise(self) -> int:
        return sum(r.charge_paise for r in self.rated)

    @property
    def wallet_debit_paise(self) -> int:
        return sum(r.wallet_debit_paise for r in self.rated)

    @property
    def unbilled_paise(self) -> int:
        return sum(r.unbilled_paise for r in self.rated)


def overage_pulses(cumulative: int, included: int | None, pulse: int) -> int:
    """Pulses charged for a cumulative billable usage: rule 2 of the module doc."""
    if included is None or cumulative <= included:
        return 0
    return -(-(cumulative - included) // pulse)


@dataclass(slots=True)
class _Meter:
    """Running state of one usage type during one :func:`rate` call (plain ints)."""

    usage_type: UsageType
    included: int | None
    pulse: int
    paise_per_pulse: int
    used: int
    overage_paise: int
    alert_percent: int
    exhausted: bool

    def consume(self, raw: int) -> tuple[int, int, int]:
        """Adds one CDR; returns (billable units, units within quota, overage pulses)."""
        pulse = self.pulse
        billable = -(-raw // pulse) * pulse
        before = self.used
        after = before + billable
        self.used = after
        included = self.included
        if included is None:
            return billable, billable, 0
        within = min(after, included) - min(before, included)
        pulses = overage_pulses(after, included, pulse) - overage_pulses(before, included, pulse)
        self.overage_paise += pulses * self.paise_per_pulse
        return billable, within, pulses

    def thresholds_crossed(self) -> list[int]:
        included = self.included
        if not included or self.alert_percent >= THRESHOLD_PERCENTS[-1]:
            return []  # unlimited, zero quota (all overage), or already fully signalled
        crossed = [
            percent
            for percent in THRESHOLD_PERCENTS
            if self.alert_percent < percent and self.used * 100 >= included * percent
        ]
        if crossed:
            self.alert_percent = crossed[-1]
        return crossed

    def can_exhaust(self) -> bool:
        """Whether this meter could ever signal exhaustion (prepaid only)."""
        return not self.exhausted and self.included is not None and self.paise_per_pulse > 0

    def exhausted_with(self, wallet: int) -> bool:
        return (
            self.included is not None
            and self.used >= self.included
            and (wallet < self.paise_per_pulse)
        )


def _meters(plan: Plan, balance: UsageBalance) -> tuple[_Meter, _Meter, _Meter]:
    rates = plan.overage
    data = _Meter(
        usage_type=UsageType.DATA,
        included=plan.data_bytes,
        pulse=rates.data_pulse_bytes,
        paise_per_pulse=rates.data_paise_per_pulse,
        used=balance.used_data_bytes,
        overage_paise=balance.overage_data_paise,
        alert_percent=balance.data_alert_percent,
        exhausted=balance.data_exhausted,
    )
    voice = _Meter(
        usage_type=UsageType.VOICE,
        included=plan.voice_seconds,
        pulse=rates.voice_pulse_seconds,
        paise_per_pulse=rates.voice_paise_per_pulse,
        used=balance.used_voice_seconds,
        overage_paise=balance.overage_voice_paise,
        alert_percent=balance.voice_alert_percent,
        exhausted=balance.voice_exhausted,
    )
    sms = _Meter(
        usage_type=UsageType.SMS,
        included=plan.sms,
        pulse=1,  # one message
        paise_per_pulse=rates.sms_paise_each,
        used=balance.used_sms,
        overage_paise=balance.overage_sms_paise,
        alert_percent=balance.sms_alert_percent,
        exhausted=balance.sms_exhausted,
    )
    return data, voice, sms


class _Rating:
    """One subscriber-cycle being rated: the state :func:`rate` threads through CDRs."""

    __slots__ = ("by_type", "meters", "prepaid", "rated", "signals", "unbilled", "wallet", "watch")

    def __init__(self, plan: Plan, balance: UsageBalance, *, prepaid: bool) -> None:
        self.meters = _meters(plan, balance)
        self.by_type = {meter.usage_type: meter for meter in self.meters}
        self.prepaid = prepaid
        # Postpaid has no wallet: the stored value is left untouched.
        self.wallet = balance.wallet_paise
        self.unbilled = balance.unbilled_paise
        self.rated: list[RatedCdr] = []
        self.signals: list[RatingSignal] = []
        self.watch = [meter for meter in self.meters if prepaid and meter.can_exhaust()]

    def apply(self, cdr: Cdr) -> None:
        meter = self.by_type[cdr.usage_type]
        dedup_key = cdr.dedup_key
        billable, within, pulses = meter.consume(cdr.quantity)
        charge = pulses * meter.paise_per_pulse
        debit = unbilled = 0
        if self.prepaid and charge:
            debit = min(charge, self.wallet)
            unbilled = charge - debit
            self.wallet -= debit
            self.unbilled += unbilled
        self.rated.append(
            RatedCdr(
                dedup_key,
                meter.usage_type,
                billable,
                within,
                billable - within,
                pulses,
                charge,
                debit,
                unbilled,
            )
        )
        if meter.alert_percent < THRESHOLD_PERCENTS[-1]:
            self._signal_thresholds(meter, dedup_key)
        if self.watch:
            self._signal_exhaustion(dedup_key)

    def _signal_thresholds(self, meter: _Meter, dedup_key: str) -> None:
        for percent in meter.thresholds_crossed():
            assert meter.included is not None  # thresholds need a finite quota
            self.signals.append(
                QuotaThresholdReached(
                    meter.usage_type, percent, meter.used, meter.included, dedup_key
                )
            )

    def _signal_exhaustion(self, dedup_key: str) -> None:
        # Every watched type, not just this CDR's: a debit can starve another type.
        wallet = self.wallet
        for meter in self.watch:
            if meter.exhausted_with(wallet):
                break
        else:
            return  # the common case: nothing new, and nothing allocated
        for meter in [m for m in self.watch if m.exhausted_with(wallet)]:
            assert meter.included is not None  # exhausted_with needs a finite quota
            meter.exhausted = True
            self.watch.remove(meter)
            self.signals.append(
                QuotaExhausted(meter.usage_type, meter.used, meter.included, wallet, dedup_key)
            )

    def result(self, balance: UsageBalance) -> RatingResult:
        data, voice, sms = self.meters
        # Values are ints derived from a validated balance and plan; skip re-validation.
        new_balance = balance.model_copy(
            update={
                "used_data_bytes": data.used,
                "used_voice_seconds": voice.used,
                "used_sms": sms.used,
                "overage_data_paise": data.overage_paise,
                "overage_voice_paise": voice.overage_paise,
                "overage_sms_paise": sms.overage_paise,
                "wallet_paise": self.wallet,
                "unbilled_paise": self.unbilled,
                "data_exhausted": data.exhausted,
                "voice_exhausted": voice.exhausted,
                "sms_exhausted": sms.exhausted,
                "data_alert_percent": data.alert_percent,
                "voice_alert_percent": voice.alert_percent,
                "sms_alert_percent": sms.alert_percent,
            }
        )
        return RatingResult(new_balance, tuple(self.rated), tuple(self.signals))


def rate(
    plan: Plan,
    balance: UsageBalance,
    cdrs: Iterable[Cdr],
    *,
    subscriber_type: SubscriberType,
) -> RatingResult:
    """Rates ``cdrs`` in the given order, each once, against one subscriber-cycle.

    The caller guarantees the CDRs are new (dedup) and belong to this balance.
    Inputs are not mutated: the result carries a new balance.
    """
    if plan.type is not subscriber_type:
        raise ValueError(f"a {subscriber_type} subscriber cannot be rated on {plan.type} plan")
    rating = _Rating(plan, balance, prepaid=subscriber_type is SubscriberType.PREPAID)
    apply = rating.apply
    for cdr in cdrs:
        apply(cdr)
    return rating.result(balance)


K = TypeVar("K", bound=Hashable)


def rate_batch(
    plans_by_user: Mapping[K, Plan],
    balances_by_user: Mapping[K, UsageBalance],
    cdrs: Iterable[tuple[K, Cdr]],
) -> dict[K, RatingResult]:
    """Groups a batch by key (keeping each group's order) and rates each group.

    The key is whatever identifies one balance: ``user_id``, or
    ``(user_id, cycle_label)`` for a batch that straddles a cycle boundary. Every
    key needs a plan and a balance; the subscriber type is the plan's type.
    """
    groups: dict[K, list[Cdr]] = {}
    for key, cdr in cdrs:
        group = groups.get(key)
        if group is None:
            groups[key] = [cdr]
        else:
            group.append(cdr)
    missing = [key for key in groups if key not in plans_by_user or key not in balances_by_user]
    if missing:
        raise KeyError(f"no plan or balance for {len(missing)} key(s), e.g. {missing[:3]!r}")
    results: dict[K, RatingResult] = {}
    for key, group in groups.items():
        plan = plans_by_user[key]
        results[key] = rate(plan, balances_by_user[key], group, subscriber_type=plan.type)
    return results
