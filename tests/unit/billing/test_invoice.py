"""Invoice assembly: GST (hand-computed), credit notes, carry forward, dates,
deterministic ids, and the lines + taxes = total property."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.billing import (
    Adjustment,
    BilledSubscriber,
    CarryForward,
    CreditNote,
    Invoice,
    LateUsageItem,
    LineKind,
    OneTimeCharge,
    TaxKind,
    build_invoice,
    gst,
    invoice_id_for,
    late_usage_lines,
    overage_lines,
)
from shared.cycles import cycle_containing
from shared.models import Subscriber, SubscriberStatus, SubscriberType, Subscription
from shared.rating import UsageBalance, UsageType
from tests.unit.billing.builders import ist, period

MAY_2026 = cycle_containing(1, ist(2026, 5, 10))  # 1 May - 1 June IST, 31 days
KA = BilledSubscriber(user_id="u1", name="Asha Rao", msisdn="9800000001", state="KA")
MH = BilledSubscriber(user_id="u2", name="Ravi Patil", msisdn="9800000002", state="MH")
RENTAL_599 = period(59900, ist(2026, 1, 1))


def invoice(subscriber: BilledSubscriber = KA, **kwargs: object) -> Invoice:
    return build_invoice(
        subscriber=subscriber,
        cycle=MAY_2026,
        operator_state="KA",
        periods=[RENTAL_599],
        **kwargs,  # type: ignore[arg-type]
    )


# --- GST -----------------------------------------------------------------------------


def test_intra_state_cgst_and_sgst_each_rounded_on_the_taxable_value() -> None:
    """KA operator, KA subscriber. Rental 599.00 + data overage 12.39 = 611.39 taxable.
    CGST 9 % = 55.0251 -> 55.03, SGST the same; total 611.39 + 110.06 = 721.45."""
    bill = invoice(usage=UsageBalance(overage_data_paise=1239))
    assert bill.taxable_value_paise == 61139
    assert [(t.kind, t.rate_basis_points, t.amount_paise) for t in bill.tax_lines] == [
        (TaxKind.CGST, 900, 5503),
        (TaxKind.SGST, 900, 5503),
    ]
    assert bill.tax_paise == 11006
    assert bill.total_paise == 72145
    assert (bill.place_of_supply_state, bill.place_of_supply_gst_code) == ("KA", "29")


def test_inter_state_igst() -> None:
    """KA operator, MH subscriber: IGST 18 % of 611.39 = 110.0502 -> 110.05 (one rounding,
    so a paisa less than CGST + SGST on the same value)."""
    bill = invoice(MH, usage=UsageBalance(overage_data_paise=1239))
    assert [(t.kind, t.rate_basis_points, t.amount_paise) for t in bill.tax_lines] == [
        (TaxKind.IGST, 1800, 11005),
    ]
    assert bill.total_paise == 72144
    assert (bill.place_of_supply_state, bill.place_of_supply_gst_code) == ("MH", "27")


@pytest.mark.parametrize(
    ("subscriber_state", "operator_state", "kinds"),
    [
        ("KA", "KA", [TaxKind.CGST, TaxKind.SGST]),
        ("ka", "IN-KA", [TaxKind.CGST, TaxKind.SGST]),
        ("TG", "TS", [TaxKind.CGST, TaxKind.SGST]),  # old code of the same state
        ("MH", "KA", [TaxKind.IGST]),
        ("CH", "CH", [TaxKind.CGST, TaxKind.UTGST]),  # UT without a legislature
        ("DL", "DL", [TaxKind.CGST, TaxKind.SGST]),  # Delhi has a legislature
        ("DL", "HR", [TaxKind.IGST]),
    ],
)
def test_tax_kinds_follow_place_of_supply(
    subscriber_state: str, operator_state: str, kinds: list[TaxKind]
) -> None:
    assert [line.kind for line in gst(10000, subscriber_state, operator_state)] == kinds


def test_gst_refuses_a_negative_taxable_value_and_unknown_states() -> None:
    with pytest.raises(ValueError, match="negative"):
        gst(-1, "KA", "KA")
    with pytest.raises(ValueError, match="state"):
        gst(100, "XX", "KA")


# --- credits -------------------------------------------------------------------------


def test_credit_note_reduces_the_taxable_value_and_the_tax() -> None:
    """Rental 599.00 less credit note 100.00 = 499.00 taxable; CGST = SGST = 44.91;
    total 587.82, i.e. exactly 118.00 (100 + its 18 % tax) below the uncredited bill."""
    plain = invoice()
    credited = invoice(
        credit_notes=[CreditNote(credit_note_id="CN-7", against_invoice_id="INV-u1-2026-04-01",
                                 amount_paise=10000, reason="Network outage 3-5 April")]
    )  # fmt: skip
    assert plain.total_paise == 59900 + 5391 + 5391
    assert credited.taxable_value_paise == 49900
    assert [t.amount_paise for t in credited.tax_lines] == [4491, 4491]
    assert credited.total_paise == 58882
    assert plain.total_paise - credited.total_paise == 11800
    assert credited.credits_applied_paise == 10000
    [credit_line] = [line for line in credited.lines if line.kind is LineKind.CREDIT]
    assert credit_line.amount_paise == -10000
    assert "CN-7" in credit_line.description
    assert "INV-u1-2026-04-01" in credit_line.description


def test_money_credit_brought_forward_is_not_taxed_again() -> None:
    bill = invoice(brought_forward=CarryForward(credit_paise=5000))
    assert bill.taxable_value_paise == 59900
    assert bill.total_paise == invoice().total_paise - 5000
    assert bill.credits_applied_paise == 5000


def test_credit_notes_beyond_the_charges_carry_a_pre_tax_balance_forward() -> None:
    """Credit note 1,000.00 against 599.00 rental: zero invoice, no negative tax,
    401.00 pre-tax credit-note balance carried; next month it reduces the taxable value."""
    bill = invoice(
        credit_notes=[CreditNote(credit_note_id="CN-8", against_invoice_id="INV-u1-2026-04-01",
                                 amount_paise=100000, reason="Goodwill")]
    )  # fmt: skip
    assert bill.total_paise == 0
    assert bill.taxable_value_paise == 0
    assert [t.amount_paise for t in bill.tax_lines] == [0, 0]
    assert bill.carried_forward == CarryForward(credit_note_paise=40100)
    assert bill.credits_applied_paise == 59900
    assert bill.lines[-1].kind is LineKind.CARRY_FORWARD

    june = build_invoice(
        subscriber=KA,
        cycle=cycle_containing(1, ist(2026, 6, 10)),  # 30 days
        operator_state="KA",
        periods=[RENTAL_599],
        brought_forward=bill.carried_forward,
    )
    assert june.taxable_value_paise == 59900 - 40100
    assert june.total_paise == 19800 + 1782 + 1782


def test_money_credit_beyond_the_total_becomes_a_zero_invoice() -> None:
    """599.00 + 107.82 GST = 706.82 against a 1,000.00 credit: 293.18 carried."""
    bill = invoice(brought_forward=CarryForward(credit_paise=100000))
    assert bill.total_paise == 0
    assert bill.tax_paise == 10782
    assert bill.carried_forward == CarryForward(credit_paise=29318)
    assert bill.credits_applied_paise == 70682


def test_a_negative_total_is_never_due_even_with_both_kinds_of_credit() -> None:
    bill = invoice(
        credit_notes=[CreditNote(credit_note_id="CN", against_invoice_id="I", amount_paise=70000,
                                 reason="r")],
        adjustments=[Adjustment(description="Refund of deposit", amount_paise=-25000)],
    )  # fmt: skip
    assert bill.total_paise == 0
    assert bill.carried_forward == CarryForward(credit_note_paise=10100, credit_paise=25000)


# --- other lines ---------------------------------------------------------------------


def test_overage_lines_only_for_non_zero_amounts() -> None:
    balance = UsageBalance(
        used_data_bytes=3 * 1024**3 + 512 * 1024**2, overage_data_paise=2500, overage_sms_paise=150
    )
    lines = overage_lines(balance, MAY_2026)
    assert [(line.kind, line.amount_paise) for line in lines] == [
        (LineKind.OVERAGE_DATA, 2500),
        (LineKind.OVERAGE_SMS, 150),
    ]
    assert lines[0].quantity == "3.50 GB used"
    assert all(line.taxable for line in lines)


def test_late_usage_is_grouped_per_original_cycle_and_type() -> None:
    items = [
        LateUsageItem(cycle_label="2026-04-01", usage_type=UsageType.VOICE, charge_paise=120),
        LateUsageItem(cycle_label="2026-03-01", usage_type=UsageType.DATA, charge_paise=999),
        LateUsageItem(cycle_label="2026-04-01", usage_type=UsageType.VOICE, charge_paise=60),
    ]
    lines = late_usage_lines(items)
    assert [(line.description, line.amount_paise, line.quantity) for line in lines] == [
        ("Late data usage from cycle 2026-03-01", 999, "1 record"),
        ("Late voice usage from cycle 2026-04-01", 180, "2 records"),
    ]
    assert all(line.kind is LineKind.LATE_USAGE and line.taxable for line in lines)


def test_one_time_charges_taxable_unless_said_otherwise() -> None:
    bill = invoice(
        one_time=[
            OneTimeCharge(description="SIM replacement", amount_paise=2500),
            OneTimeCharge(description="Government levy", amount_paise=1000, taxable=False),
        ]
    )
    assert bill.taxable_value_paise == 59900 + 2500
    assert bill.subtotal_paise == 59900 + 2500 + 1000


# --- dates and ids -------------------------------------------------------------------


def test_bill_date_is_the_cycle_day_and_due_date_follows_after_15_days() -> None:
    bill = invoice()
    assert bill.bill_date == date(2026, 6, 1)
    assert bill.due_date == date(2026, 6, 16)
    assert bill.due_at == datetime(2026, 6, 16, 18, 30, tzinfo=UTC)  # 17 June 00:00 IST
    assert bill.period_start == ist(2026, 5, 1)
    assert bill.period_end == ist(2026, 6, 1)
    assert invoice(due_days=7).due_date == date(2026, 6, 8)


def test_invoice_id_is_deterministic_per_subscriber_and_cycle() -> None:
    assert invoice_id_for("u1", MAY_2026) == "INV-u1-2026-05-01"
    assert invoice_id_for("u1", MAY_2026) == invoice_id_for("u1", MAY_2026)
    assert invoice_id_for("u2", MAY_2026) != invoice_id_for("u1", MAY_2026)
    june = cycle_containing(1, ist(2026, 6, 2))
    assert invoice_id_for("u1", june) != invoice_id_for("u1", MAY_2026)
    assert invoice() == invoice()  # a rerun builds the very same invoice
    with pytest.raises(ValueError, match="user_id"):
        invoice_id_for("", MAY_2026)


def test_final_invoice_shares_the_cycle_invoice_id() -> None:
    final = invoice(until=ist(2026, 5, 11))
    assert final.invoice_id == invoice().invoice_id
    assert final.bill_date == date(2026, 5, 11)
    assert final.period_end == ist(2026, 5, 11)
    assert final.lines[0].amount_paise == 19323  # 59900 * 10/31 = 19322.58 -> 19323


def test_billed_subscriber_from_profile() -> None:
    profile = Subscriber(
        user_id="u9",
        msisdn="9800000009",
        subscriber_type=SubscriberType.POSTPAID,
        state="tg",
        status=SubscriberStatus.ACTIVE,
        created_at=ist(2026, 1, 1),
        name="Meera",
    )
    assert BilledSubscriber.of(profile) == BilledSubscriber(
        user_id="u9", name="Meera", msisdn="9800000009", state="TS"
    )


def test_invoice_number_must_match_the_bill_dates_financial_year() -> None:
    bill = invoice()  # bill date 1 June 2026: FY 2026-27
    assert bill.with_number("TB/2627/00000042").invoice_number == "TB/2627/00000042"
    with pytest.raises(ValueError, match="financial year"):
        bill.with_number("TB/2526/00000042")


def test_an_invoice_whose_figures_disagree_cannot_be_built() -> None:
    data = invoice().model_dump()
    data["total_paise"] += 1
    with pytest.raises(ValidationError, match="total must equal"):
        Invoice.model_validate(data)


# --- the property --------------------------------------------------------------------

paise = st.integers(1, 5_000_000)
late_items = st.builds(
    LateUsageItem,
    cycle_label=st.sampled_from(["2026-03-01", "2026-04-01"]),
    usage_type=st.sampled_from(list(UsageType)),
    charge_paise=st.integers(0, 100_000),
)
credit_notes = st.builds(
    CreditNote,
    credit_note_id=st.just("CN"),
    against_invoice_id=st.just("INV"),
    amount_paise=paise,
    reason=st.just("r"),
)
adjustments = st.builds(
    Adjustment,
    description=st.just("adj"),
    amount_paise=st.integers(-5_000_000, 5_000_000),
    taxable=st.booleans(),
)
one_time = st.builds(OneTimeCharge, description=st.just("fee"), amount_paise=paise,
                     taxable=st.booleans())  # fmt: skip
balances = st.builds(
    UsageBalance,
    overage_data_paise=st.integers(0, 1_000_000),
    overage_voice_paise=st.integers(0, 1_000_000),
    overage_sms_paise=st.integers(0, 100_000),
)
carries = st.builds(CarryForward, credit_note_paise=st.integers(0, 1_000_000),
                    credit_paise=st.integers(0, 1_000_000))  # fmt: skip


@st.composite
def rental_periods(draw: st.DrawFn) -> list[Subscription]:
    """0-3 consecutive plan periods covering the tail of the May cycle."""
    prices = draw(st.lists(st.integers(1, 500_000), max_size=3))
    fractions = draw(st.lists(st.integers(1, 999), min_size=2, max_size=2, unique=True))
    cuts = sorted(MAY_2026.start + timedelta(seconds=MAY_2026.seconds * f // 1000)
                  for f in fractions)  # fmt: skip
    starts = [MAY_2026.start - timedelta(days=2), *cuts][: len(prices)]
    ends: list[datetime | None] = [*starts[1:], None][: len(starts)]
    return [period(p, s, e, subscription_id=str(i))
            for i, (p, s, e) in enumerate(zip(prices, starts, ends, strict=True))]  # fmt: skip


@st.composite
def any_invoice(draw: st.DrawFn) -> tuple[BilledSubscriber, Invoice]:
    subscriber = draw(st.sampled_from([KA, MH]))
    bill = build_invoice(
        subscriber=subscriber,
        cycle=MAY_2026,
        operator_state="KA",
        periods=draw(rental_periods()),
        usage=draw(st.none() | balances),
        late_usage=draw(st.lists(late_items, max_size=4)),
        one_time=draw(st.lists(one_time, max_size=3)),
        credit_notes=draw(st.lists(credit_notes, max_size=3)),
        adjustments=draw(st.lists(adjustments, max_size=3)),
        brought_forward=draw(st.none() | carries),
    )
    return subscriber, bill


@settings(max_examples=400, deadline=None)
@given(any_invoice())
def test_lines_plus_taxes_equal_the_total_for_any_mix_of_lines(
    drawn: tuple[BilledSubscriber, Invoice],
) -> None:
    subscriber, bill = drawn
    lines_total = sum(line.amount_paise for line in bill.lines)
    tax_total = sum(tax.amount_paise for tax in bill.tax_lines)
    assert lines_total + tax_total == bill.total_paise
    assert bill.total_paise >= 0
    assert bill.tax_paise >= 0

    # Tax is the rate applied once to the taxable value that the invoice shows...
    assert bill.tax_lines == tuple(gst(bill.taxable_value_paise, subscriber.state, "KA"))
    # ...which is the taxable charges net of credit notes, floored at zero (rule 5).
    charged = [line for line in bill.lines if line.kind is not LineKind.CARRY_FORWARD]
    net_taxable = sum(line.amount_paise for line in charged if line.taxable)
    assert bill.taxable_value_paise == max(0, net_taxable)
    # Nothing vanishes: what is due plus what is carried is what was charged net of credits.
    due_before_carry = sum(line.amount_paise for line in charged) + bill.tax_paise
    carried = bill.carried_forward
    assert bill.total_paise - carried.credit_paise - carried.credit_note_paise == due_before_carry
    assert bill.credits_applied_paise >= 0
