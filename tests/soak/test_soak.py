"""Issue 10's soak: a simulated month on the local runtime under faults, then the
invariants against the reference computed from the deduplicated input.

``TBCSS_SOAK_PROFILE=quick`` (the default, in `make test`): 32 subscribers,
1,200 CDRs, the month's last day and the days to the overdue blocks on the clock,
one crash (a rating batch's); under a minute alone on 2 cores. ``full`` (`make soak`):
2,000 subscribers, 100,000 CDRs, the whole month, 25 to 40 minutes. Either way the
run's metered AWS usage, per phase, goes to ``bench/results/soak-usage-<profile>.json``
for the cost model (`make bench-cost`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.soak import invariants
from tests.soak.reference import compute
from tests.soak.scenario import ACTIVATION_FINAL, Month, Outcome
from tests.soak.system import SoakSystem, next_month_start
from tests.soak.workload import Workload, build, profile_from_environment

ROOT = Path(__file__).resolve().parents[2]
FAULT_KINDS = ("crash", "throttle", "transaction_conflict", "timeout_before", "timeout_after")


def test_a_month_under_faults_loses_nothing_and_counts_nothing_twice() -> None:
    profile = profile_from_environment()
    month_start = next_month_start(datetime.now(UTC))
    month_end = next_month_start(month_start + timedelta(days=1))
    workload = build(profile, month_start, month_end)
    state_dir = ROOT / ".tbcss" / f"soak-{profile.name}"
    with SoakSystem(state_dir, start_at=workload.live_from, profile=profile) as system:
        outcome = Month(workload, system).play()
        _write_usage(workload, outcome)
        print(_summary(workload, outcome))
        checks = _checks(system, workload, outcome)
    print(invariants.report(checks))
    assert all(not problems for problems in checks.values()), invariants.report(checks)
    missing = [kind for kind in FAULT_KINDS if not outcome.faults.get(kind)]
    assert not missing, f"no {missing} fault was injected: the run proved nothing about them"
    assert outcome.blocked_after_overdue, "no subscriber was blocked for an overdue bill"
    assert outcome.declined_payments, "the gateway declined nothing: its faults were off"


def _checks(system: SoakSystem, workload: Workload, outcome: Outcome) -> dict[str, list[str]]:
    on_time = [record for step in workload.steps for record in step.records]
    late = [record for step in workload.steps for record in step.late]
    reference = compute(workload.lines, on_time + late)
    reference_on_time = compute(workload.lines, on_time)
    end = invariants.EndState.of(system.items())
    closed = set(outcome.disconnections.values())
    return {
        "no CDR lost, none counted twice": invariants.usage_exactly_once(end, reference),
        "late usage kept for the next invoice": invariants.late_usage_kept(
            end, workload, reference, reference_on_time
        ),
        "every invoice = lines + tax": invariants.invoices_add_up(end),
        "one invoice per line and cycle": invariants.one_invoice_per_cycle(end, workload, closed),
        "overage as re-rated": invariants.overage_as_rated(
            end, workload, reference_on_time, set(outcome.plan_changes)
        ),
        "captured = applied + refunded": invariants.money_balances(end),
        "activations final": [
            f"{a}: {s}" for a, s in outcome.activation_status.items() if s not in ACTIVATION_FINAL
        ],
        "disconnections final": [
            f"{d}: {s}" for d, s in outcome.disconnection_status.items() if s != "DISCONNECTED"
        ],
        "blocked for an overdue bill until paid": [
            f"{user}: {status} {reasons}; paying: {outcome.payment_trail.get(user)}"
            for user, (status, reasons) in outcome.final_status.items()
            if (status == "ACTIVE" and not reasons) != (user in workload.behaviour.pays_after_block)
        ],
        "the unpaid, and only they, blocked": [
            f"{user}: blocked without an open bill"
            for user in sorted(outcome.blocked_after_overdue - outcome.unpaid_at_overdue)
        ]
        + [
            f"{user}: an open bill, not blocked; paying: {outcome.payment_trail.get(user)}"
            for user in sorted(outcome.unpaid_at_overdue - outcome.blocked_after_overdue)
        ],
        "every bill paid but the non-payers'": [
            f"{user}: a bill still open; paying: {outcome.payment_trail.get(user)}"
            for user in outcome.unpaid_at_end - set(workload.behaviour.disconnects)  # final bills
            if user in workload.behaviour.pays_on_time | workload.behaviour.pays_after_block
        ]
        + [
            f"{user}: never paid, yet nothing open"
            for user in _never_paying(workload)
            if user not in outcome.unpaid_at_end
        ],
        "unknown numbers kept for review": invariants.anomalies_kept(
            system.anomaly_bodies(), reference
        ),
        "nothing unexplained in a DLQ": [
            f"{queue}: {len(bodies)} message(s), e.g. {bodies[0][:300]}"
            for queue, bodies in system.dead_letters().items()
        ],
        "idempotent replays": outcome.replay_mismatches,
    }


def _never_paying(workload: Workload) -> set[str]:
    behaviour = workload.behaviour
    postpaid = {line.user_id for line in workload.lines if line.postpaid}
    closing = set(behaviour.disconnects)
    return postpaid - behaviour.pays_on_time - behaviour.pays_after_block - closing


def _write_usage(workload: Workload, outcome: Outcome) -> None:
    phases: dict[str, Any] = outcome.usage
    total: dict[str, Any] = {"requests": {}, "units": {}}
    for usage in phases.values():
        for service, operations in usage["requests"].items():
            bucket = total["requests"].setdefault(service, {})
            for operation, count in operations.items():
                bucket[operation] = bucket.get(operation, 0) + count
        for unit, value in usage["units"].items():
            total["units"][unit] = total["units"].get(unit, 0) + value
    lines = workload.lines
    document = {
        "profile": workload.profile.name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "subscribers": len(lines),
        "prepaid": sum(1 for line in lines if not line.postpaid),
        "postpaid": sum(1 for line in lines if line.postpaid),
        "simulated_days": (workload.month_end - workload.month_start).days,
        # Days on the clock before the bill run: the daily sweeps ran on these only.
        "live_days": workload.profile.live_days or (workload.month_end - workload.month_start).days,
        "cdrs_sent": workload.cdrs_sent,
        "cdrs_unique": compute(lines, workload.all_records).rated_records,
        "seconds": outcome.seconds,
        "faults": dict(outcome.faults),
        "phases": phases,
        "total": total,
    }
    folder = ROOT / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"soak-usage-{workload.profile.name}.json"
    path.write_text(json.dumps(document, indent=2))


def _summary(workload: Workload, outcome: Outcome) -> str:
    return "\n".join(
        [
            f"soak ({workload.profile.name}): {len(workload.lines)} subscribers, "
            f"{workload.cdrs_sent} CDRs sent, {len(outcome.activations)} activations, "
            f"{len(outcome.plan_changes)} plan changes, {len(outcome.payments)} payments "
            f"({outcome.declined_payments} declined or refunded), "
            f"{len(outcome.blocked_after_overdue)} blocked overdue, "
            f"{len(outcome.disconnections)} disconnections",
            f"faults injected: {dict(outcome.faults)}; client retries "
            f"{outcome.client_retries}; answers lost after a commit {len(outcome.lost_answers)}",
            f"phase seconds: {outcome.seconds}",
        ]
    )
