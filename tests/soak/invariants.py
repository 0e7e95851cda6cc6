"""The end state of the soak against the reference: each check returns the
violations it found (empty: it holds), so one run reports every broken rule.

Read from the table itself (one Scan after the run), the DLQs and the API, never
from the services' code: an invoice is checked by adding up its own lines, usage
by re-rating the deduplicated input (tests/soak/reference.py).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.db import PK, SK
from shared.stores.usage import BALANCE_KEYS
from tests.soak.reference import USAGE_TYPES, Reference, catalog
from tests.soak.workload import Workload

GST_BASIS_POINTS = 1800
# Where the rating state item keeps each used-units counter.
USED_FIELD = {
    "DATA": BALANCE_KEYS["used_data_bytes"],
    "VOICE": BALANCE_KEYS["used_voice_seconds"],
    "SMS": BALANCE_KEYS["used_sms"],
}
OPEN_PAYMENT = frozenset({"PENDING", "RECONCILING"})
SHOWN = 8  # violations listed per check; the count says how many there were


@dataclass
class EndState:
    """The table's items that the invariants read, grouped."""

    markers: int = 0
    rating_states: list[dict[str, Any]] = field(default_factory=list)
    late_usage: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    payments: list[dict[str, Any]] = field(default_factory=list)
    gateway: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, items: Iterable[dict[str, Any]]) -> EndState:
        state = cls()
        for item in items:
            pk, sk = str(item[PK]), str(item[SK])
            if pk.startswith("CDR#") and sk == "CDR":
                state.markers += 1
            elif sk == "RATING":
                state.rating_states.append(item)
            elif sk.startswith("LATE#"):
                state.late_usage.append(item)
            elif sk.startswith("INV#"):
                state.invoices.append(item)
            elif sk.startswith("PAY#"):
                state.payments.append(item)
            elif pk.startswith("GWSIM#"):
                state.gateway.append(item)
            elif sk == "PROFILE":
                state.profiles[str(item.get("user_id", pk))] = item
        return state


def usage_exactly_once(end: EndState, reference: Reference) -> list[str]:
    """No CDR lost, none counted twice: one marker per unique rated record, and
    each subscriber's units over every cycle kept equal the reference's (a late
    record counts in its closed cycle too, besides its late-usage item)."""
    problems = []
    if end.markers != reference.rated_records:
        problems.append(
            f"{end.markers} CDR markers for {reference.rated_records} unique rated records"
        )
    system: dict[str, Counter[str]] = defaultdict(Counter)
    for state in end.rating_states:
        for cycle in json.loads(state["cycles"]).values():
            for usage_type in USAGE_TYPES:
                system[state["user_id"]][usage_type] += int(
                    cycle["balance"].get(USED_FIELD[usage_type], 0)
                )
    for user_id in sorted(set(system) | set(reference.units)):
        for usage_type in USAGE_TYPES:
            got, want = system[user_id][usage_type], reference.units[user_id][usage_type]
            if got != want:
                problems.append(f"{user_id} {usage_type}: rated {got}, reference {want}")
    return problems


def late_usage_kept(
    end: EndState, workload: Workload, reference: Reference, on_time: Reference
) -> list[str]:
    """Usage of a postpaid cycle that arrived after its bill run is kept, once,
    for the next invoice: the late items hold exactly what arrived late."""
    kept: dict[str, Counter[str]] = defaultdict(Counter)
    for late in end.late_usage:
        kept[late["user_id"]][late["usage_type"]] += int(late["billable_units"])
    problems = []
    for line in workload.lines:
        if not line.postpaid:
            continue
        for usage_type in USAGE_TYPES:
            arrived_late = (
                reference.units[line.user_id][usage_type] - on_time.units[line.user_id][usage_type]
            )
            if kept[line.user_id][usage_type] != arrived_late:
                problems.append(
                    f"{line.user_id} {usage_type}: late items {kept[line.user_id][usage_type]}, "
                    f"arrived late {arrived_late}"
                )
    return problems


def invoices_add_up(end: EndState) -> list[str]:
    """Every invoice = its lines + tax, the tax is GST on its taxable lines, and
    what was paid against it is what the payments applied."""
    applied: Counter[str] = Counter()
    for item in end.payments:
        payment = json.loads(item["record"])
        if payment.get("invoice_id"):
            applied[payment["invoice_id"]] += int(payment["applied_paise"])
    problems = []
    for item in end.invoices:
        invoice = json.loads(item["document"])
        name = invoice["invoice_id"]
        lines = sum(int(line["amount_paise"]) for line in invoice["lines"])
        taxes = [int(tax["amount_paise"]) for tax in invoice["tax_lines"]]
        if lines != invoice["subtotal_paise"] or sum(taxes) != invoice["tax_paise"]:
            problems.append(f"{name}: lines {lines} / taxes {sum(taxes)} vs its subtotal and tax")
        if invoice["total_paise"] != lines + sum(taxes) or item["total_paise"] != lines + sum(
            taxes
        ):
            problems.append(f"{name}: total {invoice['total_paise']} != lines {lines} + tax")
        gst = invoice["taxable_value_paise"] * GST_BASIS_POINTS / 10_000
        if abs(sum(taxes) - gst) > len(taxes):  # each tax line rounds once
            problems.append(
                f"{name}: tax {sum(taxes)} is not 18% of {invoice['taxable_value_paise']}"
            )
        if int(item["paid_paise"]) != applied[name]:
            problems.append(f"{name}: paid {item['paid_paise']}, payments applied {applied[name]}")
        paid_in_full = int(item["paid_paise"]) >= int(item["total_paise"])
        if (item["status"] == "PAID") != paid_in_full:
            problems.append(f"{name}: status {item['status']} with {item['paid_paise']} paid")
    return problems


def one_invoice_per_cycle(end: EndState, workload: Workload, closed: set[str]) -> list[str]:
    """Each postpaid line has exactly one invoice for the month (a final bill
    besides it for a line that closed), none twice under retries."""
    per_user: dict[str, Counter[str]] = defaultdict(Counter)
    for item in end.invoices:
        invoice = json.loads(item["document"])
        per_user[item["user_id"]][invoice["period_start"]] += 1
    problems = []
    month = workload.month_start
    for line in workload.lines:
        if not line.postpaid:
            continue
        periods = per_user[line.user_id]
        twice = [start for start, count in periods.items() if count > 1]
        if twice:
            problems.append(f"{line.user_id}: {len(twice)} cycle(s) invoiced twice")
        if not any(datetime.fromisoformat(start) == month for start in periods):
            problems.append(f"{line.user_id}: no invoice for the month")
        if line.user_id in closed and sum(periods.values()) < 2:
            problems.append(f"{line.user_id}: closed without a final bill")
    return problems


def overage_as_rated(
    end: EndState, workload: Workload, on_time: Reference, changed: set[str]
) -> list[str]:
    """The month's overage lines charge what the reference usage exceeds the plan
    by, pulse by pulse (plans unchanged in the month; late usage excluded)."""
    plans = catalog()
    by_user = {
        line.user_id: line
        for line in workload.lines
        if line.postpaid and line.user_id not in changed
    }
    problems = []
    charged_somewhere = False
    for item in end.invoices:
        line = by_user.get(str(item["user_id"]))
        invoice = json.loads(item["document"])
        if line is None or datetime.fromisoformat(invoice["period_start"]) != workload.month_start:
            continue
        charged: Counter[str] = Counter()
        for invoice_line in invoice["lines"]:
            if invoice_line["kind"].startswith("OVERAGE_"):
                charged[invoice_line["kind"].removeprefix("OVERAGE_")] += invoice_line[
                    "amount_paise"
                ]
        plan = plans[line.plan_id]
        for usage_type in USAGE_TYPES:
            want = _overage(plan, usage_type, on_time.units[line.user_id][usage_type])
            charged_somewhere = charged_somewhere or want > 0
            if charged[usage_type] != want:
                problems.append(
                    f"{invoice['invoice_id']} {usage_type}: charged {charged[usage_type]}, "
                    f"reference {want}"
                )
    if not charged_somewhere:
        problems.append("no invoice had overage to check: the workload proves nothing here")
    return problems


def _overage(plan: dict[str, Any], usage_type: str, units: int) -> int:
    overage = plan["overage"]
    if usage_type == "DATA":
        included, pulse, price = (
            plan["data_bytes"],
            overage["data_pulse_bytes"],
            overage["data_paise_per_pulse"],
        )
    elif usage_type == "VOICE":
        if plan["voice_seconds"] is None:
            return 0
        included, pulse = plan["voice_seconds"], overage["voice_pulse_seconds"]
        price = overage["voice_paise_per_pulse"]
    else:
        included, pulse, price = plan["sms"], 1, overage["sms_paise_each"]
    return int(price * math.ceil(max(0, units - included) / pulse))


def money_balances(end: EndState) -> list[str]:
    """Money captured = money applied + money refunded, payment by payment and in
    total, with no payment left open."""
    captured: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    for txn in end.gateway:
        captured[str(txn["merchant_reference"])] += int(txn["captured_paise"])
        refunded[str(txn["merchant_reference"])] += int(txn.get("refunded_paise", 0))
    problems = []
    accounted = 0
    for item in end.payments:
        payment = json.loads(item["record"])
        name = payment["payment_id"]
        if payment["status"] in OPEN_PAYMENT:
            problems.append(f"{name}: still {payment['status']} after the run settled")
        settled = int(payment["applied_paise"]) + int(payment["refunded_paise"])
        accounted += settled
        if settled != captured[name]:
            problems.append(
                f"{name}: gateway captured {captured[name]}, applied + refunded {settled}"
            )
        if int(payment["refunded_paise"]) != refunded[name]:
            problems.append(
                f"{name}: refunded {payment['refunded_paise']}, gateway {refunded[name]}"
            )
    if sum(captured.values()) != accounted:
        problems.append(f"captured {sum(captured.values())} != applied + refunded {accounted}")
    return problems


def anomalies_kept(anomaly_bodies: Iterable[str], reference: Reference) -> list[str]:
    """Records for numbers no subscriber holds are not dropped: each one reaches
    the anomaly review queue (at least once: they have no dedup marker)."""
    queued = set()
    for body in anomaly_bodies:
        try:
            record = json.loads(json.loads(body)["record"])
        except (ValueError, KeyError, TypeError):
            continue
        queued.add(f"{record.get('source')}#{record.get('record_id')}")
    missing = sorted(reference.unknown_records - queued)
    if not missing:
        return []
    return [f"{len(missing)} unknown-number record(s) not in the anomaly queue: {missing[:3]}"]


def report(checks: dict[str, list[str]]) -> str:
    text = []
    for name, problems in checks.items():
        text.append(f"{name}: {'holds' if not problems else f'{len(problems)} violation(s)'}")
        text += [f"    {problem}" for problem in problems[:SHOWN]]
    return "\n".join(text)
