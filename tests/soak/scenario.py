"""The simulated month, played phase by phase against the running system.

1. setup: the subscribers (half prepaid, half postpaid, bill-cycle day 1) with
   their plans from the 1st. The clock starts then, or (the quick profile) on the
   month's last live days: the quiet days before are skipped (workload.Profile).
2. activations: new lines through the real workflow; the network fails some
   attempts for a while and one line in eight for good (escalated).
3. rating: the month's CDRs in clock steps; mid-month (the quick profile: on
   its first live day), a tenth of the postpaid subscribers change plan (their
   client replays the request once).
4. bill run: the clock reaches the next 1st; the scheduled bill run invoices.
5. late CDRs: records of the closed cycle arrive after it was billed.
6. payments: most subscribers pay on time (UPI or card) through a gateway that
   declines, times out, loses webhooks and reports debits failed.
7. overdue: the clock passes due date + grace; the unpaid are blocked (billing's
   terms compressed to days: workload.Profile's invoice_due_days and
   overdue_grace_days).
8. reactivation: most of the blocked pay and get their service back.
9. disconnections: some subscribers close their line (a final bill each).
10. settle: faults off; janitors and reconciliation finish what is in flight.

Faults at the workers' adapter boundary (crashes mid-batch, DynamoDB throttling
and transaction conflicts, timeouts before and after a request was applied) are
on from phase 2 to phase 9. Each phase's AWS usage is metered on its own.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

from infra.local.faults import FaultPlan
from shared.simulation import FailureKnobs, GatewayKnobs, SimulatorKnobs
from tests.activation_data import activation_body
from tests.e2e.conftest import wait_for
from tests.soak.system import (
    AGENT,
    SoakSystem,
    in_parallel,
    in_parallel_by_item,
    timed,
)
from tests.soak.workload import Profile, Workload

ACTIVATION_SERIAL_BASE = 9_200_000_000
ACTIVATION_FINAL = frozenset({"ACTIVE", "KYC_REJECTED", "ESCALATED"})
DISCONNECTION_FINAL = frozenset({"DISCONNECTED", "ESCALATED"})
PAYMENT_FINAL = frozenset({"SUCCEEDED", "FAILED", "REFUNDED"})
# Ends that leave the bill unpaid: declined, or captured and given back (the
# gateway reported the debit failed): the subscriber pays again.
NOT_PAID = frozenset({"FAILED", "REFUNDED"})
# A subscriber tries a declined payment again, up to this many times. About one
# payment in eight does not pay (the gateway's faults); with 4 tries some payer of
# the full soak's ~850 failed all of them in about one run in seven.
PAYMENT_ATTEMPTS = 8
JANITOR_STEP = timedelta(minutes=20)  # the payments janitor runs every 15 minutes

# The adapter-boundary faults, per AWS call of a handler. Throttles cost what they
# cost in AWS (the SDK backs off up to seconds), so the bigger run gets fewer per call.
FAULTS = {
    "quick": FaultPlan(
        seed=20261126,
        # Rates that make a run without some kind unlikely: 4 to 18 of each kind but
        # crashes a run over eight runs (the test fails a run that proved nothing
        # about one). The crash hits a rating batch, at one of its requests, once:
        # Kinesis hands the batch straight back, where a crashed SQS batch waits out
        # its 5 s visibility timeout and a keyed API call its function's 10 s timeout
        # (its idempotency claim holds the key), real time a one-minute run cannot
        # spare. UsageRating makes some 35 to 45 requests a run (estimated from one
        # run's injected timeouts): a run without a crash is rarer than 1 in 20,000.
        # The full profile crashes some 30 times, in any function.
        crash_rate=0.25,
        crash_limit=1,
        crash_functions=("UsageRating",),
        throttle_rate=0.005,
        transaction_conflict_rate=0.08,
        timeout_before_rate=0.005,
        timeout_after_rate=0.005,
    ),
    "full": FaultPlan(
        seed=20261126,
        crash_rate=0.0005,
        throttle_rate=0.001,
        transaction_conflict_rate=0.005,
        timeout_before_rate=0.0005,
        timeout_after_rate=0.0005,
    ),
}


# The simulated partners' own faults: network provisioning and the payment gateway.
def partner_faults(profile: Profile) -> SimulatorKnobs:
    return SimulatorKnobs(
        network=FailureKnobs(transient_failure_rate=0.1, timeout_rate=0.05, timeout_ms=50),
        gateway=GatewayKnobs(
            permanent_failure_rate=0.05,  # declined
            transient_failure_rate=0.05,  # fails before the gateway records anything
            timeout_rate=0.05,  # captured, the answer lost
            debit_fail_rate=0.02,  # captured, the webhook says FAILED
            lost_webhook_rate=0.05,
            webhook_delay_seconds=profile.webhook_delay_seconds,
        ),
    )


@dataclass
class Outcome:
    """What the run did, for the invariants and the report."""

    activations: dict[str, str] = field(default_factory=dict)  # activation_id -> user_id
    activation_status: dict[str, str] = field(default_factory=dict)  # id -> final status
    disconnection_status: dict[str, str] = field(default_factory=dict)  # id -> final status
    activated_lines: dict[str, str] = field(default_factory=dict)  # user_id -> msisdn
    plan_changes: dict[str, str] = field(default_factory=dict)  # user_id -> plan_id
    replay_mismatches: list[str] = field(default_factory=list)
    lost_answers: list[str] = field(default_factory=list)  # committed, answer lost, retried
    invoices: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # user -> invoices
    payments: list[str] = field(default_factory=list)
    # user -> what paying looked like: invoices seen, payments and their ends
    payment_trail: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    declined_payments: int = 0
    disconnections: dict[str, str] = field(default_factory=dict)  # disconnection_id -> user
    blocked_after_overdue: set[str] = field(default_factory=set)
    unpaid_at_overdue: set[str] = field(default_factory=set)
    unpaid_at_end: set[str] = field(default_factory=set)  # postpaid lines with an open bill
    final_status: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # the blocked
    seconds: dict[str, float] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)  # phase -> metered AWS usage
    faults: Counter[str] = field(default_factory=Counter)
    client_retries: int = 0


class Month:
    def __init__(self, workload: Workload, system: SoakSystem) -> None:
        self.workload = workload
        self.system = system
        self.outcome = Outcome()
        self._owner = {line.user_id: (line.user_id, "subscriber") for line in workload.lines}
        self._unused_scripts = dict(workload.behaviour.first_payment_scripts)

    def play(self) -> Outcome:
        phases = (
            ("setup", self.setup),
            ("activations", self.activations),
            ("rating", self.rating),
            ("bill_run", self.bill_run),
            ("late_cdrs", self.late_cdrs),
            ("payments", self.payments_on_time),
            ("overdue", self.overdue),
            ("reactivation", self.reactivation),
            ("disconnections", self.disconnections),
            ("settle", self.settle),
        )
        for name, phase in phases:
            before = self.system.runtime.meter.snapshot()
            with timed(name, self.outcome.seconds):
                phase()
            self.outcome.usage[name] = (self.system.runtime.meter.snapshot() - before).to_dict()
        self.outcome.faults = Counter(
            {str(k): n for k, n in self.system.runtime.injected_faults().items()}
        )
        self.outcome.client_retries = self.system.client_retries
        return self.outcome

    # --- phases ------------------------------------------------------------------

    def setup(self) -> None:
        self.system.seed(self.workload.lines, since=self.workload.plans_from)
        self.system.settle()
        self.system.set_knobs(partner_faults(self.workload.profile))
        self.system.runtime.set_faults(FAULTS[self.workload.profile.name])

    def activations(self) -> None:
        scripts = self.workload.activation_scripts

        def activate(index: int) -> None:
            postpaid = index % 2 == 1
            body = activation_body(
                ACTIVATION_SERIAL_BASE + index,
                network_script=scripts[index],
                plan_id="POST_BASIC_399" if postpaid else "PRE_VALUE_719",
                subscriber_type="postpaid" if postpaid else "prepaid",
            )
            accepted = self.system.post("/activate-sim", AGENT, body)
            assert accepted.status_code == 202, accepted.text
            self.outcome.activations[accepted.json()["activation_id"]] = accepted.json()["user_id"]
            self.outcome.activated_lines[accepted.json()["user_id"]] = body["msisdn"]

        in_parallel(activate, range(len(scripts)))
        for activation_id in self.outcome.activations:
            self.outcome.activation_status[activation_id] = wait_for(
                partial(self._activation_final, activation_id),
                timeout=300,
                what=f"activation {activation_id} in a final state",
            )

    def _activation_final(self, activation_id: str) -> str | None:
        status = str(self.system.get(f"/activations/{activation_id}", AGENT)["status"])
        return status if status in ACTIVATION_FINAL else None

    def rating(self) -> None:
        steps = self.workload.steps
        for number, step in enumerate(steps):
            self.system.advance_to(step.until)
            self.system.send_cdrs(step.records)
            if number == len(steps) // 2 - 1 or len(steps) == 1:
                self._change_plans()
        self.system.settle()

    def _change_plans(self) -> None:
        def change(item: tuple[str, str]) -> None:
            user_id, plan_id = item
            key = str(uuid.uuid4())
            body = {"user_id": user_id, "plan_id": plan_id}
            first = self.system.call("POST", "/upgrade", self._owner[user_id], body, key)
            self.outcome.plan_changes[user_id] = plan_id
            if first.status_code == 409 and '"SAME_PLAN"' in first.text:
                # The change committed, then the worker died before the key kept its
                # answer: the retry finds the plan already changed. Nothing doubled.
                self.outcome.lost_answers.append(f"/upgrade {user_id}")
                return
            assert first.status_code == 200, first.text
            replay = self.system.call("POST", "/upgrade", self._owner[user_id], body, key)
            if (replay.status_code, replay.json()) != (first.status_code, first.json()):
                self.outcome.replay_mismatches.append(f"/upgrade {user_id}")

        in_parallel(change, sorted(self.workload.behaviour.plan_changes.items()))

    def bill_run(self) -> None:
        self.system.advance_to(self.workload.month_end + timedelta(minutes=5))
        self.system.settle()

    def late_cdrs(self) -> None:
        for step in self.workload.steps:
            self.system.send_cdrs(step.late)
        self.system.settle()

    def payments_on_time(self) -> None:
        self._load_invoices()
        self._pay(sorted(self.workload.behaviour.pays_on_time))

    def overdue(self) -> None:
        due = max(
            invoice["due_date"]
            for invoices in self.outcome.invoices.values()
            for invoice in invoices
        )
        self.system.advance_to(
            _ist_day_after(due, days=self.workload.profile.overdue_grace_days + 1)
        )
        self.system.settle()
        self.outcome.unpaid_at_overdue = self._unpaid_postpaid()
        # Every postpaid line: one blocked without an open bill must show too.
        statuses = in_parallel_by_item(self._service_status, self.outcome.invoices)
        for user_id, status in statuses.items():
            if status["status"] == "TEMP_BLOCKED" and "OVERDUE" in status["block_reasons"]:
                self.outcome.blocked_after_overdue.add(user_id)

    def _service_status(self, user_id: str) -> dict[str, Any]:
        return dict(self.system.get(f"/service-control/status/{user_id}", AGENT))

    def reactivation(self) -> None:
        self._pay(sorted(self.workload.behaviour.pays_after_block & self._unpaid_postpaid()))

    def disconnections(self) -> None:
        def close(user_id: str) -> None:
            body = {"reason": "USER_REQUEST"}
            accepted = self.system.post(
                f"/service-control/disconnect/{user_id}", self._owner[user_id], body
            )
            if accepted.status_code == 409 and "DISCONNECTION_IN_PROGRESS" in accepted.text:
                # An attempt that crashed after starting it: the answer names it.
                started = accepted.json()["error"]["details"]["disconnection_id"]
            else:
                assert accepted.status_code == 202, accepted.text
                started = accepted.json()["disconnection_id"]
            self.outcome.disconnections[started] = user_id

        in_parallel(close, self.workload.behaviour.disconnects)
        self.system.settle()

    def settle(self) -> None:
        self.system.runtime.set_faults(None)
        self.system.set_knobs(SimulatorKnobs())
        for _ in range(6):  # janitors reconcile what the gateway left hanging
            self.system.advance_to(self.system.now() + JANITOR_STEP)
            self.system.settle()
        self.outcome.unpaid_at_end = self._unpaid_postpaid()
        blocked = sorted(self.outcome.blocked_after_overdue)
        for user_id, status in in_parallel_by_item(self._service_status, blocked).items():
            self.outcome.final_status[user_id] = (status["status"], status["block_reasons"])
        for disconnection_id in self.outcome.disconnections:
            self.outcome.disconnection_status[disconnection_id] = wait_for(
                partial(self._disconnection_final, disconnection_id),
                timeout=300,
                what=f"disconnection {disconnection_id} in a final state",
            )

    def _disconnection_final(self, disconnection_id: str) -> str | None:
        path = f"/service-control/disconnections/{disconnection_id}"
        status = str(self.system.get(path, AGENT)["status"])
        return status if status in DISCONNECTION_FINAL else None

    # --- payments ------------------------------------------------------------------

    def _load_invoices(self) -> None:
        postpaid = [line.user_id for line in self.workload.lines if line.postpaid]
        self.outcome.invoices = in_parallel_by_item(self._invoices, postpaid)

    def _unpaid_postpaid(self) -> set[str]:
        invoices_by_user = in_parallel_by_item(self._invoices, self.outcome.invoices)
        return {
            user_id
            for user_id, invoices in invoices_by_user.items()
            if any(invoice["status"] in ("ISSUED", "OVERDUE") for invoice in invoices)
        }

    def _invoices(self, user_id: str) -> list[dict[str, Any]]:
        answer = self.system.get(f"/users/{user_id}/invoices", self._owner[user_id])
        return list(answer["invoices"])

    def _pay(self, user_ids: list[str]) -> None:
        """Each subscriber pays every open invoice, and pays again (a new key) while
        a bill stays open after a declined or refunded payment, up to PAYMENT_ATTEMPTS
        times. A hanging payment is left to the gateway's webhook and the janitor
        (the clock moves so they run), never paid twice."""
        owing = sorted(user_ids)
        for _ in range(PAYMENT_ATTEMPTS):
            started = in_parallel_by_item(self._pay_open_invoices, owing)
            statuses = self._await_payments([p for ids in started.values() for p in ids])
            for user_id, payment_ids in started.items():
                trail = self.outcome.payment_trail[user_id]
                trail += [f"{p}: {statuses.get(p, 'not final')}" for p in payment_ids]
            self.outcome.declined_payments += sum(s in NOT_PAID for s in statuses.values())
            # Paid again: a payment did not pay and none hangs (one may still capture).
            owing = [
                user_id
                for user_id, payment_ids in started.items()
                if all(p in statuses for p in payment_ids)
                and any(statuses[p] in NOT_PAID for p in payment_ids)
            ]
            if not owing:
                return

    def _pay_open_invoices(self, user_id: str) -> list[str]:
        owner = self._owner[user_id]
        started = []
        trail = self.outcome.payment_trail[user_id]
        for invoice in self._invoices(user_id):
            trail.append(
                f"{invoice['invoice_id']} {invoice['status']} at {self.system.now():%d %H:%M}"
            )
            if invoice["status"] not in ("ISSUED", "OVERDUE"):
                continue
            script = self._unused_scripts.pop(user_id, None)  # the first payment's only
            card = script is None and len(self.outcome.payments) % 3 == 0
            body: dict[str, Any] = {
                "user_id": user_id,
                "invoice_id": invoice["invoice_id"],
                "method": "CARD" if card else "UPI",
            }
            body.update(
                # Letters before the hex digits: "tok_" and 16 hex digits alone were
                # all digits and Luhn-valid once in 13,000, a card number to the API.
                {"token": f"tok_soak{uuid.uuid4().hex[:16]}"}
                if card
                else {"vpa": f"{script or 'soak'}@okaxis"}
            )
            accepted = self.system.post("/payments", owner, body)
            if accepted.status_code == 409 and '"INVOICE_NOT_PAYABLE"' in accepted.text:
                trail.append("not payable")  # paid in full meanwhile (a late webhook)
                continue
            assert accepted.status_code == 202, accepted.text
            started.append(accepted.json()["payment_id"])
            self.outcome.payments.append(accepted.json()["payment_id"])
        if not started:
            trail.append("nothing paid")
        return started

    def _payment_status(self, payment_id: str) -> str:
        return str(self.system.get(f"/payments/{payment_id}", AGENT)["status"])

    def _await_payments(self, payment_ids: list[str]) -> dict[str, str]:
        # The webhooks first: the gateway sends them through a queue (after the full
        # profile's real-time delay), signed with the clock at their sending. Were
        # the clock to move on while one is on its way, the API would take it for a
        # replay (401), and it would come back only after the visibility timeout.
        self.system.settle()
        statuses: dict[str, str] = {}
        for _ in range(12):
            open_ids = [payment_id for payment_id in payment_ids if payment_id not in statuses]
            for payment_id, status in in_parallel_by_item(self._payment_status, open_ids).items():
                if status in PAYMENT_FINAL:
                    statuses[payment_id] = status
            if len(statuses) == len(payment_ids):
                break
            self.system.advance_to(self.system.now() + JANITOR_STEP)
            self.system.settle()
        return statuses


def _ist_day_after(day: str, days: int) -> Any:
    """00:05 IST, ``days`` after the IST date ``day``, as a UTC datetime."""
    start = datetime.combine(date.fromisoformat(day) + timedelta(days=days), datetime.min.time())
    return (start - timedelta(hours=5, minutes=25)).replace(tzinfo=UTC)
