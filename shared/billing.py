"""Pure invoice computation: no I/O, no clock. The bill-run worker gathers the
inputs (plan periods, the cycle's usage balance, late usage, one-time charges,
credit notes, the credit brought forward) and stores what :func:`build_invoice`
returns.

Rules (each one tested in tests/unit/billing):

1. Money is integer paise; every fractional amount is rounded half-up ONCE, at
   line level (:mod:`shared.money`). Totals are sums of rounded lines, so
   ``sum(lines) + sum(tax lines) == total`` exactly, always.
2. Rental is prorated TO THE SECOND over the cycle's length: a plan period
   overlapping the cycle by ``s`` seconds bills ``prorate(price, s, cycle.seconds)``,
   the very call (same seconds, same truncation of sub-second parts) that
   :mod:`shared.services.subscriptions` made to show the change, so the invoice
   repeats what the subscriber was told. A still-open period bills to cycle end.
   With n periods at one price P covering the cycle the lines sum to P plus at
   most n/2 paise of rounding (each line rounds by at most half a paisa).
3. GST: place of supply is the subscriber's state (their billing address, as
   for telecom services to unregistered recipients). Same state as the
   operator's registration: CGST 9 % + SGST 9 % (UTGST instead of SGST in a
   union territory without a legislature); otherwise IGST 18 %. Tax is computed
   ONCE on the invoice's taxable value, not per line: one rounding per tax line
   instead of one per line per tax, so the tax shown is the rate applied to the
   taxable value shown (an auditor can redo it with a calculator).
4. A credit note (CREDIT line) reduces the taxable value, and so the tax, of the
   invoice it lands on: its amount is the pre-tax value being reversed, and its
   tax is reversed exactly once, through the reduced taxable value. ADJUSTMENT
   lines (e.g. a credit brought forward) are money already taxed: they are not
   taxable, so they never reduce tax a second time.
5. Never a negative amount due. If credit notes exceed the taxable charges, the
   excess pre-tax credit is carried to the next invoice as a credit-note balance
   (the taxable value here becomes 0, never negative: a tax invoice shows no
   negative tax). If the total is still negative, the excess is carried as a
   money credit. Both carries appear as CARRY_FORWARD lines that bring the
   figures to zero, and on :attr:`Invoice.carried_forward`; the next invoice
   takes them back through ``brought_forward``.
6. Bill date = the cycle end (the bill-cycle day) as an IST date; due date =
   bill date + ``due_days`` (default 15). The invoice is overdue from 00:00 IST
   the day after the due date (:attr:`Invoice.due_at`).
7. The invoice id is ``INV-{user_id}-{cycle label}``: deterministic per
   subscriber and cycle, so reruns, redeliveries and an off-cycle final invoice
   for the same cycle collapse onto one item (the store's conditional put).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.clock import IST, to_ist
from shared.cycles import BillCycle
from shared.invoice_numbers import financial_year, parse_invoice_number
from shared.models import Subscriber, SubscriberType, Subscription
from shared.money import percent_of, prorate
from shared.rating import UsageBalance, UsageType
from shared.validation import gst_state_code, normalize_state_code

DEFAULT_DUE_DAYS = 15
CGST_BP = 900
SGST_BP = 900
IGST_BP = 1800
# UTs without a legislature levy UTGST in place of SGST (UTGST Act 2017, s. 2(8)).
UTGST_TERRITORIES = frozenset({"AN", "CH", "DH", "LA", "LD"})

PositivePaise = Annotated[int, Field(gt=0)]
NonNegativePaise = Annotated[int, Field(ge=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- lines -------------------------------------------------------------------------


class LineKind(StrEnum):
    RENTAL = "RENTAL"
    OVERAGE_DATA = "OVERAGE_DATA"
    OVERAGE_VOICE = "OVERAGE_VOICE"
    OVERAGE_SMS = "OVERAGE_SMS"
    LATE_USAGE = "LATE_USAGE"
    ONE_TIME = "ONE_TIME"
    CREDIT = "CREDIT"
    ADJUSTMENT = "ADJUSTMENT"
    CARRY_FORWARD = "CARRY_FORWARD"


class InvoiceLine(_Frozen):
    kind: LineKind
    description: str
    period_start: datetime | None = None
    period_end: datetime | None = None
    quantity: str | None = None
    amount_paise: int = Field(description="Positive: a charge; negative: a credit")
    taxable: bool
    plan_id: str | None = None


class TaxKind(StrEnum):
    CGST = "CGST"
    SGST = "SGST"
    UTGST = "UTGST"
    IGST = "IGST"


class TaxLine(_Frozen):
    kind: TaxKind
    rate_basis_points: int
    taxable_amount_paise: NonNegativePaise
    amount_paise: NonNegativePaise

    @property
    def rate_text(self) -> str:
        """The rate as people read it: 900 -> "9%", 950 -> "9.5%" (no float)."""
        whole, rest = divmod(self.rate_basis_points, 100)
        return f"{whole}%" if rest == 0 else f"{whole}.{rest:02d}".rstrip("0") + "%"


# --- inputs the store layer provides -----------------------------------------------


class LateUsageItem(_Frozen):
    """Usage rated into a cycle that was already invoiced (see shared.services.usage)."""

    cycle_label: str = Field(description="The original cycle, YYYY-MM-DD of its IST start")
    usage_type: UsageType
    charge_paise: NonNegativePaise


class OneTimeCharge(_Frozen):
    description: str
    amount_paise: PositivePaise
    taxable: bool = True


class CreditNote(_Frozen):
    """Issued by an admin against an invoice; amount is the pre-tax value reversed."""

    credit_note_id: str
    against_invoice_id: str
    amount_paise: PositivePaise
    reason: str


class Adjustment(_Frozen):
    """A signed correction of money already taxed (not taxable unless said so)."""

    description: str
    amount_paise: int
    taxable: bool = False


class CarryForward(_Frozen):
    """What a zero invoice could not use up, for the next invoice."""

    credit_note_paise: NonNegativePaise = Field(
        default=0, description="Pre-tax credit-note balance: reduces the next taxable value"
    )
    credit_paise: NonNegativePaise = Field(
        default=0, description="Money credit (tax already settled): not taxable"
    )

    @property
    def is_empty(self) -> bool:
        return self.credit_note_paise == 0 and self.credit_paise == 0


class BilledSubscriber(_Frozen):
    user_id: str
    name: str | None = None
    msisdn: str | None = None
    state: str = Field(description="State code of the billing address (place of supply)")

    @classmethod
    def of(cls, subscriber: Subscriber) -> BilledSubscriber:
        return cls(
            user_id=subscriber.user_id,
            name=subscriber.name,
            msisdn=subscriber.msisdn,
            state=normalize_state_code(subscriber.state),
        )


# --- the invoice -------------------------------------------------------------------


class Invoice(_Frozen):
    invoice_id: str
    invoice_number: str | None = Field(
        default=None, description="Assigned at issue from the FY counter (shared.invoice_numbers)"
    )
    subscriber: BilledSubscriber
    period_start: datetime = Field(description="UTC, inclusive")
    period_end: datetime = Field(description="UTC, exclusive")
    bill_date: date = Field(description="IST date")
    due_date: date = Field(description="IST date; overdue from the next day 00:00 IST")
    lines: tuple[InvoiceLine, ...]
    tax_lines: tuple[TaxLine, ...]
    subtotal_paise: int
    taxable_value_paise: NonNegativePaise
    tax_paise: NonNegativePaise
    total_paise: NonNegativePaise
    currency: Literal["INR"] = "INR"
    place_of_supply_state: str
    place_of_supply_gst_code: str
    credits_applied_paise: NonNegativePaise
    carried_forward: CarryForward = CarryForward()

    @model_validator(mode="after")
    def _figures_add_up(self) -> Invoice:
        # An invoice whose figures disagree cannot even be constructed.
        if self.subtotal_paise != sum(line.amount_paise for line in self.lines):
            raise ValueError("subtotal must equal the sum of the lines")
        if self.taxable_value_paise != _taxable_value(self.lines):
            raise ValueError("taxable value must equal the sum of the taxable lines")
        if self.tax_paise != sum(tax.amount_paise for tax in self.tax_lines):
            raise ValueError("tax must equal the sum of the tax lines")
        if self.total_paise != self.subtotal_paise + self.tax_paise:
            raise ValueError("total must equal subtotal plus tax")
        return self

    @property
    def due_at(self) -> datetime:
        """The first instant (UTC) the invoice is past due: 00:00 IST after the due date."""
        return datetime.combine(self.due_date + timedelta(days=1), time(), IST).astimezone(UTC)

    def with_number(self, invoice_number: str) -> Invoice:
        """The same invoice carrying its GST serial number (validated, same FY as the bill)."""
        parsed = parse_invoice_number(invoice_number)
        if parsed.financial_year != financial_year(self.bill_date):
            raise ValueError(f"{invoice_number} is not in the bill date's financial year")
        return self.model_copy(update={"invoice_number": invoice_number})


# --- ids -----------------------------------------------------------------------


def invoice_id_for(user_id: str, cycle: BillCycle) -> str:
    """Deterministic per subscriber and cycle: ``INV-{user_id}-{YYYY-MM-DD}``."""
    if not user_id:
        raise ValueError("user_id must not be empty")
    return f"INV-{user_id}-{cycle.label}"


# --- line builders -------------------------------------------------------------


def duration_text(seconds: int) -> str:
    """``31d`` or ``9d 13h 20m 5s``: the billed share of a cycle, exact to the second."""
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    parts = [
        f"{value}{unit}" for value, unit in ((days, "d"), (hrs, "h"), (mins, "m"), (secs, "s"))
    ]
    shown = [part for part in parts if not part.startswith("0")]
    return " ".join(shown) or "0s"


def _whole_seconds(start: datetime, end: datetime) -> int:
    # int() truncates like shared.services.subscriptions does: same seconds, same paise.
    return int((end - start).total_seconds())


def rental_lines(
    periods: Iterable[Subscription],
    cycle: BillCycle,
    *,
    until: datetime | None = None,
    plan_names: Mapping[str, str] | None = None,
) -> list[InvoiceLine]:
    """One RENTAL line per postpaid plan period overlapping ``[cycle.start, until or cycle.end)``.

    Prepaid periods are skipped: they were paid from the wallet when bought.
    ``until`` (an off-cycle final invoice) shortens the billed span, never the
    denominator: the rate per second stays the cycle's.
    """
    billed_end = cycle.end if until is None else min(max(until, cycle.start), cycle.end)
    names = plan_names or {}
    lines = []
    for period in sorted(periods, key=lambda p: p.started_at):
        if period.plan_type is not SubscriberType.POSTPAID:
            continue
        start = max(period.started_at, cycle.start)
        end = billed_end if period.ended_at is None else min(period.ended_at, billed_end)
        seconds = _whole_seconds(start, end)
        if seconds <= 0:
            continue
        name = names.get(period.plan_id, period.plan_id)
        share = "" if seconds == cycle.seconds else " (part of the cycle)"
        lines.append(
            InvoiceLine(
                kind=LineKind.RENTAL,
                description=f"{name} monthly rental{share}",
                period_start=start,
                period_end=end,
                quantity=f"{duration_text(seconds)} of {duration_text(cycle.seconds)}",
                amount_paise=prorate(period.price_paise, seconds, cycle.seconds),
                taxable=True,
                plan_id=period.plan_id,
            )
        )
    return lines


def _data_quantity(used_bytes: int) -> str:
    # Display only, integer arithmetic: hundredths of a GB, truncated.
    hundredths = used_bytes * 100 // (1024**3)
    return f"{hundredths // 100}.{hundredths % 100:02d} GB used"


def overage_lines(balance: UsageBalance, cycle: BillCycle) -> list[InvoiceLine]:
    """Postpaid overage accrued by rating this cycle; only the non-zero ones."""
    candidates = (
        (LineKind.OVERAGE_DATA, "Data beyond plan quota", balance.overage_data_paise,
         _data_quantity(balance.used_data_bytes)),
        (LineKind.OVERAGE_VOICE, "Voice beyond plan quota", balance.overage_voice_paise,
         f"{balance.used_voice_seconds // 60} min {balance.used_voice_seconds % 60} s used"),
        (LineKind.OVERAGE_SMS, "SMS beyond plan quota", balance.overage_sms_paise,
         f"{balance.used_sms} SMS used"),
    )  # fmt: skip
    return [
        InvoiceLine(
            kind=kind,
            description=description,
            period_start=cycle.start,
            period_end=cycle.end,
            quantity=quantity,
            amount_paise=amount,
            taxable=True,
        )
        for kind, description, amount, quantity in candidates
        if amount
    ]


def late_usage_lines(items: Iterable[LateUsageItem]) -> list[InvoiceLine]:
    """One line per (original cycle, usage type): the sum of integer charges, no rounding.

    Taxable: it was never on an invoice, so never taxed.
    """
    totals: dict[tuple[str, UsageType], list[int]] = defaultdict(lambda: [0, 0])
    for item in items:
        total = totals[(item.cycle_label, item.usage_type)]
        total[0] += item.charge_paise
        total[1] += 1
    return [
        InvoiceLine(
            kind=LineKind.LATE_USAGE,
            description=f"Late {usage_type.value.lower()} usage from cycle {label}",
            quantity=f"{count} record{'s' if count != 1 else ''}",
            amount_paise=amount,
            taxable=True,
        )
        for (label, usage_type), (amount, count) in sorted(totals.items())
        if amount
    ]


def one_time_lines(charges: Iterable[OneTimeCharge]) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            kind=LineKind.ONE_TIME,
            description=charge.description,
            amount_paise=charge.amount_paise,
            taxable=charge.taxable,
        )
        for charge in charges
    ]


def credit_note_lines(notes: Iterable[CreditNote]) -> list[InvoiceLine]:
    """Negative and taxable: they reduce the taxable value, hence the tax (rule 4)."""
    return [
        InvoiceLine(
            kind=LineKind.CREDIT,
            description=(
                f"Credit note {note.credit_note_id} against {note.against_invoice_id}: "
                f"{note.reason}"
            ),
            amount_paise=-note.amount_paise,
            taxable=True,
        )
        for note in notes
    ]


def adjustment_lines(adjustments: Iterable[Adjustment]) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            kind=LineKind.ADJUSTMENT,
            description=adjustment.description,
            amount_paise=adjustment.amount_paise,
            taxable=adjustment.taxable,
        )
        for adjustment in adjustments
        if adjustment.amount_paise
    ]


def brought_forward_lines(carry: CarryForward | None) -> list[InvoiceLine]:
    """The previous invoice's carry: a credit-note balance (taxable) and a money credit."""
    if carry is None:
        return []
    lines = []
    if carry.credit_note_paise:
        lines.append(
            InvoiceLine(
                kind=LineKind.CREDIT,
                description="Credit note balance brought forward",
                amount_paise=-carry.credit_note_paise,
                taxable=True,
            )
        )
    if carry.credit_paise:
        lines.append(
            InvoiceLine(
                kind=LineKind.ADJUSTMENT,
                description="Credit brought forward",
                amount_paise=-carry.credit_paise,
                taxable=False,
            )
        )
    return lines


# --- tax -------------------------------------------------------------------------


def gst(taxable_paise: int, subscriber_state: str, operator_state: str) -> list[TaxLine]:
    """GST on the invoice's taxable value; each tax line rounded half-up on its own."""
    if taxable_paise < 0:
        raise ValueError("taxable value must not be negative")
    place_of_supply = normalize_state_code(subscriber_state)
    registered = normalize_state_code(operator_state)
    if place_of_supply != registered:
        return [_tax(TaxKind.IGST, IGST_BP, taxable_paise)]
    state_tax = TaxKind.UTGST if registered in UTGST_TERRITORIES else TaxKind.SGST
    return [_tax(TaxKind.CGST, CGST_BP, taxable_paise), _tax(state_tax, SGST_BP, taxable_paise)]


def _tax(kind: TaxKind, basis_points: int, taxable_paise: int) -> TaxLine:
    return TaxLine(
        kind=kind,
        rate_basis_points=basis_points,
        taxable_amount_paise=taxable_paise,
        amount_paise=percent_of(taxable_paise, basis_points),
    )


def _taxable_value(lines: Iterable[InvoiceLine]) -> int:
    return sum(line.amount_paise for line in lines if line.taxable)


# --- assembly --------------------------------------------------------------------


def _carry_line(description: str, amount_paise: int, *, taxable: bool) -> InvoiceLine:
    return InvoiceLine(
        kind=LineKind.CARRY_FORWARD,
        description=description,
        amount_paise=amount_paise,
        taxable=taxable,
    )


def settle(
    charge_lines: Sequence[InvoiceLine], subscriber_state: str, operator_state: str
) -> tuple[list[InvoiceLine], list[TaxLine], CarryForward]:
    """Lines, tax lines and carry such that nothing is negative (rule 5)."""
    lines = list(charge_lines)
    carry_note = max(0, -_taxable_value(lines))
    if carry_note:
        lines.append(
            _carry_line("Credit note balance carried to next invoice", carry_note, taxable=True)
        )
    taxes = gst(_taxable_value(lines), subscriber_state, operator_state)
    total = sum(line.amount_paise for line in lines) + sum(tax.amount_paise for tax in taxes)
    carry_credit = max(0, -total)
    if carry_credit:
        lines.append(_carry_line("Credit carried to next invoice", carry_credit, taxable=False))
    return lines, taxes, CarryForward(credit_note_paise=carry_note, credit_paise=carry_credit)


def _credits_applied(lines: Iterable[InvoiceLine]) -> int:
    credits = sum(
        -line.amount_paise
        for line in lines
        if line.kind in (LineKind.CREDIT, LineKind.ADJUSTMENT) and line.amount_paise < 0
    )
    carried = sum(line.amount_paise for line in lines if line.kind is LineKind.CARRY_FORWARD)
    return credits - carried


def bill_date_for(cycle: BillCycle, until: datetime | None = None) -> date:
    """The bill-cycle day (cycle end) in IST, or the final invoice's cut-off day."""
    return to_ist(cycle.end if until is None else until).date()


def build_invoice(
    *,
    subscriber: BilledSubscriber,
    cycle: BillCycle,
    operator_state: str,
    periods: Sequence[Subscription] = (),
    usage: UsageBalance | None = None,
    late_usage: Sequence[LateUsageItem] = (),
    one_time: Sequence[OneTimeCharge] = (),
    credit_notes: Sequence[CreditNote] = (),
    adjustments: Sequence[Adjustment] = (),
    brought_forward: CarryForward | None = None,
    plan_names: Mapping[str, str] | None = None,
    due_days: int = DEFAULT_DUE_DAYS,
    until: datetime | None = None,
) -> Invoice:
    """The invoice draft for one subscriber and cycle (``until``: off-cycle final invoice)."""
    if due_days < 0:
        raise ValueError("due_days must not be negative")
    charges = [
        *rental_lines(periods, cycle, until=until, plan_names=plan_names),
        *(overage_lines(usage, cycle) if usage is not None else []),
        *late_usage_lines(late_usage),
        *one_time_lines(one_time),
        *credit_note_lines(credit_notes),
        *adjustment_lines(adjustments),
        *brought_forward_lines(brought_forward),
    ]
    lines, taxes, carry = settle(charges, subscriber.state, operator_state)
    subtotal = sum(line.amount_paise for line in lines)
    tax = sum(tax_line.amount_paise for tax_line in taxes)
    bill_date = bill_date_for(cycle, until)
    place_of_supply = normalize_state_code(subscriber.state)
    return Invoice(
        invoice_id=invoice_id_for(subscriber.user_id, cycle),
        subscriber=subscriber,
        period_start=cycle.start,
        period_end=cycle.end if until is None else min(max(until, cycle.start), cycle.end),
        bill_date=bill_date,
        due_date=bill_date + timedelta(days=due_days),
        lines=tuple(lines),
        tax_lines=tuple(taxes),
        subtotal_paise=subtotal,
        taxable_value_paise=_taxable_value(lines),
        tax_paise=tax,
        total_paise=subtotal + tax,
        place_of_supply_state=place_of_supply,
        place_of_supply_gst_code=gst_state_code(place_of_supply),
        credits_applied_paise=_credits_applied(lines),
        carried_forward=carry,
    )


class OperatorDetails(BaseModel):
    """The operator as its invoices name it: the GST supplier and where to pay."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    gstin: str
    address: tuple[str, ...]
    state: str
    upi_id: str
    payment_url: str
    late_fee_note: str = Field(
        default="A late fee applies to payments received after the due date."
    )
    support: str | None = None
