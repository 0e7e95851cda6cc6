"""The soak's input: a month of subscribers, CDRs and customer behaviour, all
decided by one seed so a failing run can be replayed exactly.

Pure: no AWS, no clock. The driver (tests/soak/system.py) plays it against the
local runtime; the reference (tests/soak/reference.py) computes what the system
must end up holding from the same input, deduplicated, without the system's code.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from infra.cdr import FeedMix, generate
from tests.activation_data import iccid

SEED = 20261126
PREPAID_PLANS = ("PRE_VALUE_719", "PRE_ANNUAL_2999")  # valid for the whole simulated month
POSTPAID_PLANS = ("POST_BASIC_399", "POST_PLUS_599", "POST_BUSINESS_1499")
# Plan changes stay within one family (upgrade or downgrade), as subscribers make them.
PLAN_CHANGES = {
    "POST_BASIC_399": "POST_PLUS_599",
    "POST_PLUS_599": "POST_BASIC_399",
    "POST_BUSINESS_1499": "POST_PLUS_599",
}
PREPAID_WALLET_PAISE = 4_000_00  # the dearest plan (₹2,999) and some PAYG headroom
DUPLICATE_RATE = 0.05
OUT_OF_ORDER_RATE = 0.10
LATE_RATE = 0.02  # held back and sent after the bill run: usage of a closed cycle
UNKNOWN_RATE = 0.002
HEAVY_SMS = 150
FIRST_PAYMENT_SCRIPTS = ("decline", "debitfail")  # UPI VPAs that script the gateway
SOAK_MSISDN_PREFIX = "8"  # seeded lines: 8 + 9 digits (activations use 7..., unknowns 60...)


@dataclass(frozen=True)
class Profile:
    """How big a run is. ``quick`` fits the test suite's minute; ``full`` is issue 10's."""

    name: str
    subscribers: int
    cdrs: int  # records sent, duplicates and late ones included
    usage_steps: int  # the month is played in this many clock steps
    activations: int  # new lines through the real activation workflow
    disconnections: int
    plan_change_rate: float = 0.10  # of postpaid subscribers, mid-month
    pay_on_time_rate: float = 0.65  # of invoices; the rest go overdue
    pay_after_block_rate: float = 0.6  # of the overdue ones: reactivated by payment
    # The month's last days played on the clock (None: the whole month). The lines
    # and their plans still date from the 1st and the month's usage is all sent; the
    # days before are skipped with their daily sweeps, which find nothing to do then
    # (no bill, expiry or overdue before the next 1st) and cost most of a small run.
    live_days: int | None = None
    # Billing terms, compressed as the month is (15 and 7 days as deployed by
    # default): a bill falls due this many days after its bill date, and is overdue,
    # its line blocked, the grace days after that. Every day on the clock costs the
    # daily sweeps' real time.
    invoice_due_days: int = 3
    overdue_grace_days: int = 2
    # The gateway's webhooks follow the API's answer by this much real time; with 0
    # they race it (either may land first) and no payment round waits for them.
    webhook_delay_seconds: int = 1


PROFILES = {
    "quick": Profile(
        "quick",
        subscribers=32,
        cdrs=1_200,
        usage_steps=2,
        activations=4,
        disconnections=3,
        live_days=1,
        invoice_due_days=1,
        overdue_grace_days=1,
        webhook_delay_seconds=0,
    ),
    "full": Profile(
        "full", subscribers=2_000, cdrs=100_000, usage_steps=6, activations=24, disconnections=20
    ),
}


def profile_from_environment() -> Profile:
    name = os.environ.get("TBCSS_SOAK_PROFILE", "quick")
    if name not in PROFILES:
        raise SystemExit(f"TBCSS_SOAK_PROFILE={name!r}: choose one of {sorted(PROFILES)}")
    return PROFILES[name]


@dataclass(frozen=True)
class Line:
    """A seeded subscriber: an active line with a plan from the month's start."""

    user_id: str
    msisdn: str
    iccid: str
    subscriber_type: str  # prepaid / postpaid
    plan_id: str

    @property
    def postpaid(self) -> bool:
        return self.subscriber_type == "postpaid"


@dataclass(frozen=True)
class UsageStep:
    """Records to send once the clock reaches ``until``; ``late`` ones are held back."""

    until: datetime
    records: tuple[bytes, ...]
    late: tuple[bytes, ...]


@dataclass(frozen=True)
class Behaviour:
    """What each postpaid subscriber does with the month's bill."""

    plan_changes: dict[str, str]  # user_id -> new plan_id, mid-month
    pays_on_time: frozenset[str]
    pays_after_block: frozenset[str]
    disconnects: tuple[str, ...]  # user_ids closing their line (USER_REQUEST) at the end
    # user_id -> the gateway scenario its first payment scripts (shared.payment_gateway),
    # so a run always meets a decline and a failed debit, whatever the random ones do.
    first_payment_scripts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    profile: Profile
    month_start: datetime
    month_end: datetime
    lines: tuple[Line, ...]
    steps: tuple[UsageStep, ...]
    behaviour: Behaviour
    activation_scripts: tuple[str, ...] = field(default=())  # the network's script per activation

    @property
    def plans_from(self) -> datetime:
        """When the seeded lines' plans began: a minute into the month."""
        return self.month_start + timedelta(minutes=1)

    @property
    def live_from(self) -> datetime:
        """When the clock starts: the plans' start, or the profile's last live days."""
        if self.profile.live_days is None:
            return self.plans_from
        return max(self.plans_from, self.month_end - timedelta(days=self.profile.live_days))

    @property
    def all_records(self) -> Iterator[bytes]:
        for step in self.steps:
            yield from step.records
            yield from step.late

    @property
    def cdrs_sent(self) -> int:
        return sum(len(step.records) + len(step.late) for step in self.steps)


def build(
    profile: Profile, month_start: datetime, month_end: datetime, seed: int = SEED
) -> Workload:
    rng = random.Random(seed)
    lines = tuple(_line(index, rng) for index in range(profile.subscribers))
    return Workload(
        profile=profile,
        month_start=month_start,
        month_end=month_end,
        lines=lines,
        steps=_usage_steps(profile, lines, month_start, month_end, seed),
        behaviour=_behaviour(profile, lines, rng),
        activation_scripts=_activation_scripts(profile.activations),
    )


def _line(index: int, rng: random.Random) -> Line:
    postpaid = index % 2 == 1
    plans = POSTPAID_PLANS if postpaid else PREPAID_PLANS
    return Line(
        user_id=f"soak-{index:05d}",
        msisdn=f"{SOAK_MSISDN_PREFIX}{index:09d}",
        iccid=iccid(9_100_000_000 + index),
        subscriber_type="postpaid" if postpaid else "prepaid",
        plan_id=rng.choice(plans),
    )


def _usage_steps(
    profile: Profile, lines: Sequence[Line], start: datetime, end: datetime, seed: int
) -> tuple[UsageStep, ...]:
    """The month in equal steps; each step's feed comes from the project's own
    generator (duplicates, out-of-order records, unknown numbers), with a share
    of records held back to arrive after the bill run."""
    msisdns = ["+91" + line.msisdn for line in lines]
    span = (end - start) / profile.usage_steps
    # generate() adds duplicates on top of ``count``: aim the total at profile.cdrs.
    per_step = round(profile.cdrs / profile.usage_steps / (1 + DUPLICATE_RATE))
    rng = random.Random(seed + 1)
    steps = []
    for number in range(profile.usage_steps):
        until = start + span * (number + 1) - timedelta(minutes=10)
        mix = FeedMix(
            count=per_step,
            duplicate_rate=DUPLICATE_RATE,
            out_of_order_rate=OUT_OF_ORDER_RATE,
            unknown_rate=UNKNOWN_RATE,
            span=span - timedelta(hours=2),  # from an hour into the month: after the plans start
        )
        records = list(generate(msisdns, mix, seed=seed * 10 + number, end=until))
        if number == 0:
            records += _beyond_the_sms_quota(lines, until) + _same_ids_elsewhere(records)
        feed = [json.dumps(record).encode() for record in records]
        late = {index for index in range(len(feed)) if rng.random() < LATE_RATE}
        steps.append(
            UsageStep(
                until=until,
                records=tuple(r for index, r in enumerate(feed) if index not in late),
                late=tuple(feed[index] for index in sorted(late)),
            )
        )
    return tuple(steps)


def _beyond_the_sms_quota(lines: Sequence[Line], at: datetime) -> list[dict[str, Any]]:
    """One in four POST_BASIC_399 lines sends 150 SMS (its quota: 100), so the
    month's invoices carry overage lines for the reference to re-rate."""
    basic = [line for line in lines if line.plan_id == "POST_BASIC_399"][::4]
    return [
        {
            "record_id": f"bulk-sms-{line.user_id}",
            "source": "SMSC-CHN-01",
            "msisdn": "+91" + line.msisdn,
            "usage_type": "SMS",
            "count": HEAVY_SMS,
            "started_at": (at - timedelta(hours=2)).isoformat(timespec="seconds"),
        }
        for line in basic
    ]


def _same_ids_elsewhere(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Another network element numbering its records like the first: the dedup key is
    (source, record_id), so these are new records, not duplicates."""
    return [{**record, "source": "MSC-PUN-09"} for record in records[: len(records) // 100]]


def _behaviour(profile: Profile, lines: Sequence[Line], rng: random.Random) -> Behaviour:
    postpaid = [line for line in lines if line.postpaid]
    changing = [line for line in postpaid if rng.random() < profile.plan_change_rate]
    on_time = {line.user_id for line in postpaid if rng.random() < profile.pay_on_time_rate}
    overdue = [line for line in postpaid if line.user_id not in on_time]
    after_block = {line.user_id for line in overdue if rng.random() < profile.pay_after_block_rate}
    # Lines that close at the end: paid up, so the final bill is the only open one.
    closing = rng.sample(
        sorted(on_time | {line.user_id for line in lines if not line.postpaid}),
        profile.disconnections,
    )
    scripted = sorted(on_time - set(closing))[: len(FIRST_PAYMENT_SCRIPTS)]
    return Behaviour(
        plan_changes={line.user_id: PLAN_CHANGES[line.plan_id] for line in changing},
        pays_on_time=frozenset(on_time),
        pays_after_block=frozenset(after_block),
        disconnects=tuple(closing),
        first_payment_scripts=dict(zip(scripted, FIRST_PAYMENT_SCRIPTS, strict=False)),
    )


def _activation_scripts(count: int) -> tuple[str, ...]:
    """The network simulator's script per new line: most provision at once, some
    fail transiently first (the workflow retries), one in eight never does (escalated)."""
    cycle = ("000", "991", "000", "992", "000", "991", "000", "999")
    return tuple(cycle[index % len(cycle)] for index in range(count))


def parsed(record: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(record)
    return value
