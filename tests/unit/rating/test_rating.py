"""The rating engine (shared.rating): hand-computed examples, then Hypothesis properties."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.catalog import seed_plans
from shared.models import Plan, SubscriberType
from shared.rating import (
    Cdr,
    QuotaExhausted,
    QuotaThresholdReached,
    RatingResult,
    UsageBalance,
    UsageType,
    rate,
    rate_batch,
)

KB = 1024
MB = 1024 * KB
AT = datetime(2025, 3, 1, 4, 30, tzinfo=UTC)
PREPAID = SubscriberType.PREPAID
POSTPAID = SubscriberType.POSTPAID
_record_ids = itertools.count()


def make_plan(
    subscriber_type: SubscriberType = POSTPAID,
    *,
    data_bytes: int = 0,
    voice_seconds: int | None = 0,
    sms: int = 0,
    data_paise_per_pulse: int = 1,
    data_pulse_bytes: int = 10 * KB,
    voice_paise_per_pulse: int = 50,
    voice_pulse_seconds: int = 60,
    sms_paise_each: int = 100,
) -> Plan:
    prepaid = subscriber_type is PREPAID
    return Plan(
        plan_id="TEST_PLAN",
        name="test",
        type=subscriber_type,
        price_paise=100,
        price_includes_gst=prepaid,
        validity_days=30,
        data_bytes=data_bytes,
        voice_seconds=voice_seconds,
        sms=sms,
        overage={
            "data_paise_per_pulse": data_paise_per_pulse,
            "data_pulse_bytes": data_pulse_bytes,
            "voice_paise_per_pulse": voice_paise_per_pulse,
            "voice_pulse_seconds": voice_pulse_seconds,
            "sms_paise_each": sms_paise_each,
        },
        renewal_rule="MANUAL_RECHARGE" if prepaid else "MONTHLY_BILL_CYCLE",
    )


def cdr(usage_type: UsageType, quantity: int, record_id: str | None = None) -> Cdr:
    fields: dict[str, Any] = {
        UsageType.DATA: {"bytes_up": quantity // 3, "bytes_down": quantity - quantity // 3},
        UsageType.VOICE: {"duration_seconds": quantity},
        UsageType.SMS: {"count": quantity},
    }[usage_type]
    return Cdr(
        record_id=record_id or f"r{next(_record_ids)}",
        source="MSC-TEST",
        msisdn="9876543210",
        usage_type=usage_type,
        started_at=AT,
        **fields,
    )


def data(n: int) -> Cdr:
    return cdr(UsageType.DATA, n)


def voice(n: int) -> Cdr:
    return cdr(UsageType.VOICE, n)


def sms(n: int) -> Cdr:
    return cdr(UsageType.SMS, n)


def exhausted(result: RatingResult) -> list[QuotaExhausted]:
    return [s for s in result.signals if isinstance(s, QuotaExhausted)]


def charges(result: RatingResult) -> list[int]:
    return [r.charge_paise for r in result.rated]


# --- hand-computed examples -------------------------------------------------------------


def test_voice_per_second_pulse_straddling_the_quota() -> None:
    plan = make_plan(voice_seconds=100, voice_pulse_seconds=1, voice_paise_per_pulse=2)
    result = rate(plan, UsageBalance(), [voice(70), voice(50)], subscriber_type=POSTPAID)
    second = result.rated[1]
    assert (second.billable_units, second.units_within_quota, second.overage_units) == (50, 30, 20)
    assert (second.overage_pulses, second.charge_paise) == (20, 40)
    assert result.balance.used_voice_seconds == 120
    assert result.balance.overage_voice_paise == 40


def test_voice_per_minute_pulse_rounds_each_call_up() -> None:
    plan = make_plan(voice_seconds=120, voice_pulse_seconds=60, voice_paise_per_pulse=50)
    result = rate(plan, UsageBalance(), [voice(61), voice(1), voice(150)], subscriber_type=POSTPAID)
    # 61 s -> 120 s (the whole quota); 1 s -> 60 s = 1 pulse; 150 s -> 180 s = 3 pulses.
    assert [r.billable_units for r in result.rated] == [120, 60, 180]
    assert charges(result) == [0, 50, 150]
    assert result.balance.used_voice_seconds == 360
    assert result.balance.overage_voice_paise == 200


def test_quota_that_is_not_a_whole_number_of_pulses_charges_the_straddling_pulse() -> None:
    plan = make_plan(voice_seconds=90, voice_pulse_seconds=60, voice_paise_per_pulse=50)
    result = rate(plan, UsageBalance(), [voice(61), voice(30)], subscriber_type=POSTPAID)
    # 120 s billed: 30 s beyond 90 -> ceil(30/60) = 1 pulse; then 180 s: ceil(90/60) = 2 pulses.
    assert [r.units_within_quota for r in result.rated] == [90, 0]
    assert [r.overage_units for r in result.rated] == [30, 60]
    assert charges(result) == [50, 50]


def test_data_per_10kb_pulse_with_zero_quota() -> None:
    plan = make_plan(data_bytes=0, data_pulse_bytes=10 * KB, data_paise_per_pulse=1)
    result = rate(plan, UsageBalance(), [data(15 * KB), data(1), data(0)], subscriber_type=POSTPAID)
    assert [r.billable_units for r in result.rated] == [20 * KB, 10 * KB, 0]
    assert charges(result) == [2, 1, 0]
    assert result.balance.used_data_bytes == 30 * KB


def test_data_per_mb_pulse_straddling_the_quota() -> None:
    plan = make_plan(data_bytes=1 * MB, data_pulse_bytes=MB, data_paise_per_pulse=50)
    result = rate(plan, UsageBalance(), [data(MB + MB // 2)], subscriber_type=POSTPAID)
    (rated,) = result.rated
    assert (rated.billable_units, rated.units_within_quota, rated.overage_units) == (
        2 * MB,
        MB,
        MB,
    )
    assert rated.charge_paise == 50


def test_sms_count_as_is() -> None:
    plan = make_plan(sms=3, sms_paise_each=100)
    result = rate(plan, UsageBalance(), [sms(2), sms(2), sms(1)], subscriber_type=POSTPAID)
    assert [r.units_within_quota for r in result.rated] == [2, 1, 0]
    assert charges(result) == [0, 100, 100]
    assert result.balance.remaining(plan).sms == 0


def test_unlimited_voice_never_charges_and_has_no_remaining_figure() -> None:
    plan = make_plan(PREPAID, voice_seconds=None, voice_paise_per_pulse=50)
    result = rate(plan, UsageBalance(), [voice(10**7)], subscriber_type=PREPAID)
    assert charges(result) == [0]
    assert result.balance.used_voice_seconds == 10**7 // 60 * 60 + 60  # pulse-rounded
    assert result.balance.remaining(plan).voice_seconds is None
    assert [s for s in result.signals if s.usage_type is UsageType.VOICE] == []
    assert not result.balance.voice_exhausted


def test_prepaid_wallet_covers_partly_then_quota_exhausted_exactly_once() -> None:
    plan = make_plan(
        PREPAID, data_bytes=MB, data_pulse_bytes=MB, data_paise_per_pulse=50, voice_seconds=None,
        sms=10,
    )  # fmt: skip
    balance = UsageBalance(wallet_paise=120)
    first = rate(plan, balance, [data(MB), data(MB), data(MB)], subscriber_type=PREPAID)
    assert charges(first) == [0, 50, 50]
    assert first.balance.wallet_paise == 20
    # 20 paise cannot pay the next 50-paise pulse: exhausted after the third CDR.
    (signal,) = exhausted(first)
    assert signal.usage_type is UsageType.DATA
    assert signal.dedup_key == first.rated[2].dedup_key
    assert signal.wallet_paise == 20

    second = rate(plan, first.balance, [data(MB), data(MB)], subscriber_type=PREPAID)
    assert [(r.wallet_debit_paise, r.unbilled_paise) for r in second.rated] == [(20, 30), (0, 50)]
    assert exhausted(second) == []  # already signalled this cycle
    assert second.balance.wallet_paise == 0
    assert second.balance.unbilled_paise == 80
    assert second.balance.overage_data_paise == 200
    assert second.balance.data_exhausted
    assert not second.balance.sms_exhausted  # SMS quota is untouched


def test_using_up_the_quota_exactly_with_an_empty_wallet_exhausts_without_a_charge() -> None:
    plan = make_plan(PREPAID, voice_seconds=None, sms=2, sms_paise_each=100)
    result = rate(plan, UsageBalance(wallet_paise=99), [sms(1), sms(1)], subscriber_type=PREPAID)
    assert charges(result) == [0, 0]
    # The quota is gone and 99 paise cannot pay a 100-paise SMS: blocked before any overage.
    assert [(s.usage_type, s.dedup_key) for s in exhausted(result)] == [
        (UsageType.SMS, result.rated[1].dedup_key)
    ]


def test_a_debit_for_one_type_can_exhaust_another() -> None:
    plan = make_plan(
        PREPAID, data_pulse_bytes=MB, data_paise_per_pulse=50, voice_pulse_seconds=1,
        voice_paise_per_pulse=1, sms=5,
    )  # fmt: skip
    result = rate(plan, UsageBalance(wallet_paise=50), [data(MB)], subscriber_type=PREPAID)
    assert {s.usage_type for s in exhausted(result)} == {UsageType.DATA, UsageType.VOICE}
    assert result.balance.voice_exhausted
    assert not result.balance.sms_exhausted


def test_postpaid_overage_accrues_for_the_invoice_and_never_exhausts() -> None:
    plan = next(p for p in seed_plans() if p.plan_id == "POST_BASIC_399")
    balance = UsageBalance(used_voice_seconds=59_990)
    result = rate(plan, balance, [voice(75), sms(101)], subscriber_type=POSTPAID)
    # 75 s -> 120 s; 60,110 s is 110 s over 60,000 -> 2 minutes at 50 paise.
    assert charges(result) == [100, 150]  # 101 SMS, 100 included, 1 at 150 paise
    assert result.balance.overage_voice_paise == 100
    assert result.balance.overage_sms_paise == 150
    assert result.balance.overage_paise == 250
    assert result.balance.wallet_paise == 0
    assert result.balance.unbilled_paise == 0
    assert [(r.wallet_debit_paise, r.unbilled_paise) for r in result.rated] == [(0, 0), (0, 0)]
    assert exhausted(result) == []


def test_thresholds_signal_80_and_100_percent_once_each() -> None:
    plan = make_plan(data_bytes=10 * MB, data_pulse_bytes=MB)
    result = rate(
        plan, UsageBalance(), [data(8 * MB), data(MB), data(5 * MB)], subscriber_type=POSTPAID
    )
    thresholds = [s for s in result.signals if isinstance(s, QuotaThresholdReached)]
    assert [(s.percent, s.dedup_key) for s in thresholds] == [
        (80, result.rated[0].dedup_key),
        (100, result.rated[2].dedup_key),
    ]
    again = rate(plan, result.balance, [data(MB)], subscriber_type=POSTPAID)
    assert again.signals == ()


def test_one_cdr_jumping_past_both_thresholds_signals_both() -> None:
    plan = make_plan(sms=10)
    result = rate(plan, UsageBalance(), [sms(12)], subscriber_type=POSTPAID)
    assert [s.percent for s in result.signals if isinstance(s, QuotaThresholdReached)] == [80, 100]


def test_top_up_settles_unbilled_first_and_rearms_exhaustion() -> None:
    plan = make_plan(PREPAID, sms_paise_each=100)
    drained = rate(plan, UsageBalance(wallet_paise=100), [sms(3)], subscriber_type=PREPAID)
    assert (drained.balance.wallet_paise, drained.balance.unbilled_paise) == (0, 200)
    assert drained.balance.sms_exhausted
    topped = drained.balance.credit_wallet(plan, 350)
    assert (topped.wallet_paise, topped.unbilled_paise) == (150, 0)
    assert not topped.sms_exhausted
    again = rate(plan, topped, [sms(1)], subscriber_type=PREPAID)
    assert [s.usage_type for s in exhausted(again)] == [UsageType.SMS]


def test_small_top_up_does_not_rearm() -> None:
    plan = make_plan(PREPAID, sms_paise_each=100)
    drained = rate(plan, UsageBalance(), [sms(1)], subscriber_type=PREPAID).balance
    assert drained.credit_wallet(plan, 150).sms_exhausted  # 50 left after settling 100
    with pytest.raises(ValueError, match="negative"):
        drained.credit_wallet(plan, -1)


def test_inputs_are_not_mutated() -> None:
    plan = make_plan(PREPAID, sms_paise_each=100)
    balance = UsageBalance(wallet_paise=500)
    cdrs = [sms(2), sms(3)]
    snapshot = list(cdrs)
    rate(plan, balance, cdrs, subscriber_type=PREPAID)
    assert balance == UsageBalance(wallet_paise=500)
    assert cdrs == snapshot


def test_plan_type_must_match_subscriber_type() -> None:
    with pytest.raises(ValueError, match="cannot be rated"):
        rate(make_plan(POSTPAID), UsageBalance(), [], subscriber_type=PREPAID)


def test_rate_batch_groups_by_key_in_arrival_order() -> None:
    prepaid = make_plan(PREPAID, sms_paise_each=100)
    postpaid = make_plan(POSTPAID, voice_seconds=60)
    a1, b1, a2, b2 = sms(1), voice(61), sms(2), voice(1)
    results = rate_batch(
        {"a": prepaid, "b": postpaid},
        {"a": UsageBalance(wallet_paise=150), "b": UsageBalance()},
        [("a", a1), ("b", b1), ("a", a2), ("b", b2)],
    )
    assert results["a"] == rate(
        prepaid, UsageBalance(wallet_paise=150), [a1, a2], subscriber_type=PREPAID
    )
    assert results["b"] == rate(postpaid, UsageBalance(), [b1, b2], subscriber_type=POSTPAID)
    assert [r.dedup_key for r in results["a"].rated] == [a1.dedup_key, a2.dedup_key]


def test_rate_batch_refuses_keys_without_plan_or_balance() -> None:
    plan = make_plan()
    with pytest.raises(KeyError, match="no plan or balance"):
        rate_batch({"a": plan}, {}, [("a", sms(1))])


def test_remaining_is_never_negative() -> None:
    plan = make_plan(data_bytes=MB, voice_seconds=60, sms=1)
    over = UsageBalance(used_data_bytes=5 * MB, used_voice_seconds=600, used_sms=9)
    assert tuple(over.remaining(plan)) == (0, 0, 0)
    assert tuple(UsageBalance().remaining(plan)) == (MB, 60, 1)


# --- properties --------------------------------------------------------------------------

PULSES_BYTES = st.one_of(st.sampled_from([1, 10 * KB, MB]), st.integers(1, 50_000))
PULSES_SECONDS = st.one_of(st.sampled_from([1, 60]), st.integers(1, 120))
RATES = st.integers(0, 100)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    return make_plan(
        draw(st.sampled_from([PREPAID, POSTPAID])),
        data_bytes=draw(st.integers(0, 5 * MB)),
        voice_seconds=draw(st.none() | st.integers(0, 3_000)),
        sms=draw(st.integers(0, 20)),
        data_paise_per_pulse=draw(RATES),
        data_pulse_bytes=draw(PULSES_BYTES),
        voice_paise_per_pulse=draw(RATES),
        voice_pulse_seconds=draw(PULSES_SECONDS),
        sms_paise_each=draw(RATES),
    )


def usage_records() -> st.SearchStrategy[Cdr]:
    return st.one_of(
        st.integers(0, 3 * MB).map(data),
        st.integers(1, 2_000).map(voice),
        st.integers(1, 5).map(sms),
    )


CDR_LISTS = st.lists(usage_records(), max_size=30)
WALLETS = st.sampled_from([0, 1, 50]) | st.integers(0, 5_000)  # empty and near-empty often


def ceil_div(numerator: int, denominator: int) -> int:
    return math.ceil(Fraction(numerator, denominator))


def pulse_and_rate(plan: Plan, usage_type: UsageType) -> tuple[int | None, int, int]:
    o = plan.overage
    return {
        UsageType.DATA: (plan.data_bytes, o.data_pulse_bytes, o.data_paise_per_pulse),
        UsageType.VOICE: (plan.voice_seconds, o.voice_pulse_seconds, o.voice_paise_per_pulse),
        UsageType.SMS: (plan.sms, 1, o.sms_paise_each),
    }[usage_type]


def expected_overage(plan: Plan, cdrs: Sequence[Cdr], usage_type: UsageType) -> int:
    """The cycle charge computed from scratch, without the engine's incremental steps."""
    included, pulse, paise = pulse_and_rate(plan, usage_type)
    billable = sum(ceil_div(c.quantity, pulse) * pulse for c in cdrs if c.usage_type == usage_type)
    if included is None:
        return 0
    return paise * ceil_div(max(0, billable - included), pulse)


def rate_fresh(plan: Plan, wallet: int, cdrs: Sequence[Cdr]) -> RatingResult:
    return rate(plan, UsageBalance(wallet_paise=wallet), cdrs, subscriber_type=plan.type)


def signal_kinds(result: RatingResult) -> set[tuple[str, UsageType, int]]:
    return {(type(s).__name__, s.usage_type, getattr(s, "percent", 0)) for s in result.signals}


@given(plan=plans(), wallet=WALLETS, cdrs=CDR_LISTS, data=st.data())
def test_order_of_cdrs_does_not_change_charges_or_balance(
    plan: Plan, wallet: int, cdrs: list[Cdr], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(cdrs))
    original = rate_fresh(plan, wallet, cdrs)
    reordered = rate_fresh(plan, wallet, shuffled)
    assert reordered.balance == original.balance
    assert reordered.charge_paise == original.charge_paise
    assert reordered.unbilled_paise == original.unbilled_paise
    assert signal_kinds(reordered) == signal_kinds(original)


@given(plan=plans(), wallet=WALLETS, cdrs=CDR_LISTS)
def test_overage_matches_an_independent_computation(
    plan: Plan, wallet: int, cdrs: list[Cdr]
) -> None:
    balance = rate_fresh(plan, wallet, cdrs).balance
    assert balance.overage_data_paise == expected_overage(plan, cdrs, UsageType.DATA)
    assert balance.overage_voice_paise == expected_overage(plan, cdrs, UsageType.VOICE)
    assert balance.overage_sms_paise == expected_overage(plan, cdrs, UsageType.SMS)


@given(plan=plans(), wallet=WALLETS, cdrs=CDR_LISTS)
def test_quota_and_pulses_per_cdr(plan: Plan, wallet: int, cdrs: list[Cdr]) -> None:
    result = rate_fresh(plan, wallet, cdrs)
    within: dict[UsageType, int] = dict.fromkeys(UsageType, 0)
    for record, rated in zip(cdrs, result.rated, strict=True):
        _, pulse, paise = pulse_and_rate(plan, record.usage_type)
        assert rated.dedup_key == record.dedup_key
        assert rated.billable_units % pulse == 0
        assert 0 <= rated.billable_units - record.quantity < pulse
        assert rated.units_within_quota + rated.overage_units == rated.billable_units
        assert rated.charge_paise == rated.overage_pulses * paise
        within[record.usage_type] += rated.units_within_quota
    remaining = result.balance.remaining(plan)
    assert within[UsageType.DATA] == plan.data_bytes - remaining.data_bytes
    assert within[UsageType.SMS] == plan.sms - remaining.sms
    assert min(remaining.data_bytes, remaining.sms) >= 0
    if plan.voice_seconds is None:
        assert remaining.voice_seconds is None
        assert result.balance.overage_voice_paise == 0
    else:
        assert remaining.voice_seconds is not None
        assert 0 <= within[UsageType.VOICE] == plan.voice_seconds - remaining.voice_seconds


@given(plan=plans(), wallet=WALLETS, cdrs=CDR_LISTS)
def test_money_is_conserved(plan: Plan, wallet: int, cdrs: list[Cdr]) -> None:
    result = rate_fresh(plan, wallet, cdrs)
    total = result.charge_paise
    assert total == result.balance.overage_paise
    if plan.type is PREPAID:
        assert result.wallet_debit_paise + result.unbilled_paise == total
        assert result.balance.wallet_paise == max(0, wallet - total) >= 0
        assert result.balance.unbilled_paise == max(0, total - wallet)
    else:
        assert result.wallet_debit_paise == result.unbilled_paise == 0
        assert result.balance.wallet_paise == wallet  # postpaid has no PAYG wallet
        assert exhausted(result) == []


@given(plan=plans().filter(lambda p: p.type is PREPAID), wallet=WALLETS, cdrs=CDR_LISTS)
def test_exhaustion_is_signalled_at_most_once_per_type_and_matches_final_state(
    plan: Plan, wallet: int, cdrs: list[Cdr]
) -> None:
    result = rate_fresh(plan, wallet, cdrs)
    types = [s.usage_type for s in exhausted(result)]
    assert len(types) == len(set(types))
    balance = result.balance
    flags = {
        UsageType.DATA: balance.data_exhausted,
        UsageType.VOICE: balance.voice_exhausted,
        UsageType.SMS: balance.sms_exhausted,
    }
    used = {
        UsageType.DATA: balance.used_data_bytes,
        UsageType.VOICE: balance.used_voice_seconds,
        UsageType.SMS: balance.used_sms,
    }
    for usage_type, flag in flags.items():
        included, _, paise = pulse_and_rate(plan, usage_type)
        condition = included is not None and used[usage_type] >= included
        assert flag == (bool(cdrs) and condition and balance.wallet_paise < paise)
        assert flag == (usage_type in types)


@settings(max_examples=150)
@given(plan=plans(), wallet=WALLETS, cdrs=CDR_LISTS, data=st.data())
def test_two_batches_equal_one(
    plan: Plan, wallet: int, cdrs: list[Cdr], data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(cdrs)))
    whole = rate_fresh(plan, wallet, cdrs)
    first = rate_fresh(plan, wallet, cdrs[:split])
    second = rate(plan, first.balance, cdrs[split:], subscriber_type=plan.type)
    assert second.balance == whole.balance
    assert first.rated + second.rated == whole.rated
    assert first.signals + second.signals == whole.signals
