"""Cost model: the soak's AWS usage priced at ap-south-1 list prices.

``python -m bench.cost [soak-usage.json]`` reads the usage the soak metered
(bench/results/soak-usage-full.json: per phase and in total, request counts and billable
units), prices every unit with bench/prices/ap-south-1.json, prints each phase's
lines and the headline figures, and writes bench/results/cost.json.

Headline figures: cost per million CDRs for the rating pipeline alone (the
"rating" phase) and for the whole simulated month, both over the CDRs sent; cost
per subscriber-month; DynamoDB requests and read/write units per 1,000 CDRs in the
rating phase. Monthly costs that do not scale with requests (Kinesis shards, the
KMS key, secrets, idle queue polling) are priced separately and left out of the
per-CDR figures: they depend on the deployment, not the traffic.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.results import RESULTS_DIR, Figure, write_results

PRICES_PATH = Path(__file__).resolve().parent / "prices" / "ap-south-1.json"
USAGE_PATH = RESULTS_DIR / "soak-usage-full.json"  # `make soak` writes it
RATING_PHASE = "rating"
TARGET_USD_PER_MILLION_CDRS = 2.50
# A provisioned table (cdk -c table_capacity=provisioned) whose auto scaling keeps
# this share of its capacity used (infra/platform.py PROVISIONED_TARGET_UTILIZATION):
# a capacity unit-hour then serves 3,600 x this many request units.
PROVISIONED_UTILIZATION = 0.70
SECONDS_PER_HOUR = 3600
# Its floor: auto scaling never goes below this many read and write units each on
# the table and on each of its indexes (infra/platform.py PROVISIONED_MIN_UNITS).
PROVISIONED_MIN_UNITS = 5
TABLE_AND_INDEXES = 3
DAYS_PER_MONTH = 30
HOURS_PER_MONTH = 730  # AWS's convention for monthly prices
PER_MILLION = "USD/1M CDRs"
NEGLIGIBLE = 1e-6  # float noise when the phases are subtracted from the total

# Services whose requests the meter already turns into billable units (priced in
# "usage"); the requests of every other service are priced per call or declared free.
SERVICES_PRICED_BY_UNITS = frozenset(
    {"dynamodb", "sqs", "kinesis", "events", "stepfunctions", "s3", "lambda", "apigateway"}
)

# The deployment's fixed-cost resources, as infra/ defines them (checked against the
# synthesized template by tests/infra/test_cost_model_deployment.py).
CDR_STREAM_SHARDS = 1
CDR_STREAM_RETENTION_HOURS = 168
KMS_KEYS = 1
SECRETS = 2
SQS_EVENT_SOURCE_MAPPINGS = 5
# An ESTIMATE: Lambda's SQS event source mappings long-poll (20 s) with, as AWS
# documents it, five pollers to start with, and those ReceiveMessage calls are SQS
# requests on the bill even when the queue is empty. The meter leaves the runtime's
# own polling out, so an idle floor of 5 pollers x 3 polls a minute is added here.
SQS_IDLE_RECEIVES_PER_MAPPING_MONTH = 5 * 3 * 60 * HOURS_PER_MONTH


class PricingError(ValueError):
    """Usage the price list cannot price (a missing price, or bad usage data)."""


@dataclass(frozen=True)
class Price:
    usd: float
    per: float
    description: str
    source: str
    confidence: str
    note: str

    @property
    def usd_each(self) -> float:
        return self.usd / self.per


@dataclass(frozen=True)
class RequestPrice:
    operations: frozenset[str] | None  # None: every operation of the service
    price: Price


@dataclass(frozen=True)
class PriceList:
    region: str
    as_of: str
    usage: dict[str, Price]
    requests: dict[str, RequestPrice]
    free_requests: dict[str, str]
    fixed: dict[str, Price]
    not_modeled: list[str]
    # Unit-hour prices of provisioned capacity, by the request unit they replace.
    capacity: dict[str, Price] = field(default_factory=dict)

    def unsure(self) -> dict[str, Price]:
        """Every price that is not the Mumbai figure as recalled."""
        every = {**self.usage, **self.fixed}
        every |= {f"{unit} (provisioned)": price for unit, price in self.capacity.items()}
        every |= {f"{service} requests": item.price for service, item in self.requests.items()}
        return {name: price for name, price in every.items() if price.confidence != "recalled"}


@dataclass(frozen=True)
class Line:
    item: str
    quantity: float
    usd: float


@dataclass(frozen=True)
class MonthlyItem:
    item: str
    price: str  # a key of the price list's "fixed" or "usage" section
    quantity: float


@dataclass(frozen=True)
class Usage:
    """One snapshot of the meter: request counts by service and operation, and units."""

    requests: dict[str, dict[str, int]]
    units: dict[str, float]

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            requests={
                service: {
                    operation: count - other.requests.get(service, {}).get(operation, 0)
                    for operation, count in operations.items()
                }
                for service, operations in self.requests.items()
            },
            units={name: value - other.units.get(name, 0) for name, value in self.units.items()},
        )


@dataclass(frozen=True)
class SoakUsage:
    profile: str
    subscribers: int
    simulated_days: int
    cdrs_sent: int
    cdrs_unique: int
    phases: dict[str, Usage]
    total: Usage
    live_days: int  # of simulated_days, those on the clock (the daily sweeps ran on these)


@dataclass(frozen=True)
class PhaseCost:
    lines: list[Line]

    @property
    def usd(self) -> float:
        return sum(line.usd for line in self.lines)


def load_prices(path: Path = PRICES_PATH) -> PriceList:
    document = json.loads(path.read_text())
    return PriceList(
        region=document["region"],
        as_of=document["as_of"],
        usage={name: _price(entry) for name, entry in document["usage"].items()},
        requests={
            service: RequestPrice(
                operations=None if entry["operations"] == "*" else frozenset(entry["operations"]),
                price=_price(entry),
            )
            for service, entry in document["requests"].items()
        },
        free_requests=dict(document["free_requests"]),
        fixed={name: _price(entry) for name, entry in document["fixed"].items()},
        not_modeled=list(document["not_modeled"]),
        capacity={unit: _price(entry) for unit, entry in document["provisioned_capacity"].items()},
    )


def provisioned(prices: PriceList, utilization: float = PROVISIONED_UTILIZATION) -> PriceList:
    """The prices with DynamoDB's request units served by provisioned capacity
    kept ``utilization`` used: each unit-hour's price spread over the units it serves."""
    usage = dict(prices.usage)
    for unit, hourly in prices.capacity.items():
        if unit not in usage:
            raise PricingError(f"provisioned capacity for {unit!r}, which has no on-demand price")
        served = hourly.per * SECONDS_PER_HOUR * utilization
        usage[unit] = replace(hourly, per=served)
    return replace(prices, usage=usage)


def _price(entry: dict[str, Any]) -> Price:
    return Price(
        usd=float(entry["usd"]),
        per=float(entry["per"]),
        description=entry["description"],
        source=entry["source"],
        confidence=entry["confidence"],
        note=entry["note"],
    )


def load_usage(path: Path) -> SoakUsage:
    if not path.exists():
        raise PricingError(f"{path} not found: run the soak first (it writes the usage)")
    document = json.loads(path.read_text())
    return SoakUsage(
        profile=document["profile"],
        subscribers=int(document["subscribers"]),
        simulated_days=int(document["simulated_days"]),
        cdrs_sent=int(document["cdrs_sent"]),
        cdrs_unique=int(document["cdrs_unique"]),
        phases={name: _usage(snapshot) for name, snapshot in document["phases"].items()},
        total=_usage(document["total"]),
        live_days=int(document.get("live_days", document["simulated_days"])),
    )


def _usage(snapshot: dict[str, Any]) -> Usage:
    return Usage(requests=snapshot["requests"], units=snapshot["units"])


def price_units(units: Mapping[str, float], prices: Mapping[str, Price]) -> list[Line]:
    """One line per priced unit (0 when unused); a unit without a price is an error."""
    unpriced = sorted(set(units) - set(prices))
    if unpriced:
        raise PricingError(f"no price for the units {unpriced}: add them to {PRICES_PATH.name}")
    return [
        Line(name, units.get(name, 0), units.get(name, 0) * price.usd_each)
        for name, price in prices.items()
    ]


def price_requests(requests: Mapping[str, Mapping[str, int]], prices: PriceList) -> list[Line]:
    """Requests of services not billed through units: priced per call, free, or an error."""
    unpriced = sorted(
        service
        for service, operations in requests.items()
        if any(operations.values())
        and service not in SERVICES_PRICED_BY_UNITS
        and service not in prices.requests
        and service not in prices.free_requests
    )
    if unpriced:
        raise PricingError(
            f"requests to {unpriced} have no price: add them to the 'requests' or "
            f"'free_requests' section of {PRICES_PATH.name}"
        )
    lines = []
    for service, priced in prices.requests.items():
        count = sum(
            calls
            for operation, calls in requests.get(service, {}).items()
            if priced.operations is None or operation in priced.operations
        )
        lines.append(Line(f"{service} requests", count, count * priced.price.usd_each))
    return lines


def price_usage(usage: Usage, prices: PriceList) -> PhaseCost:
    return PhaseCost(
        price_units(usage.units, prices.usage) + price_requests(usage.requests, prices)
    )


def monthly_items() -> list[MonthlyItem]:
    """The deployment's costs per month whatever the traffic."""
    extended_retention = CDR_STREAM_RETENTION_HOURS > 24
    return [
        MonthlyItem(
            "kinesis_shard_hours", "kinesis_shard_hours", CDR_STREAM_SHARDS * HOURS_PER_MONTH
        ),
        MonthlyItem(
            "kinesis_extended_retention_shard_hours",
            "kinesis_extended_retention_shard_hours",
            CDR_STREAM_SHARDS * HOURS_PER_MONTH if extended_retention else 0,
        ),
        MonthlyItem("kms_key_months", "kms_key_months", KMS_KEYS),
        MonthlyItem("secretsmanager_secret_months", "secretsmanager_secret_months", SECRETS),
        MonthlyItem(
            "sqs_idle_receives (estimate)",
            "sqs_requests",
            SQS_EVENT_SOURCE_MAPPINGS * SQS_IDLE_RECEIVES_PER_MAPPING_MONTH,
        ),
    ]


def price_monthly(items: list[MonthlyItem], prices: PriceList) -> list[Line]:
    """Every fixed price must be used by an item, and every item must have a price."""
    by_name = {**prices.usage, **prices.fixed}
    unpriced = sorted(item.price for item in items if item.price not in by_name)
    unused = sorted(set(prices.fixed) - {item.price for item in items})
    if unpriced or unused:
        raise PricingError(f"monthly items without a price {unpriced}, prices unused {unused}")
    return [
        Line(item.item, item.quantity, item.quantity * by_name[item.price].usd_each)
        for item in items
    ]


def per_million(usd: float, cdrs: int) -> float:
    if cdrs <= 0:
        raise PricingError("no CDRs were sent: nothing to divide by")
    return usd / cdrs * 1_000_000


def per_thousand(count: float, cdrs: int) -> float:
    return per_million(count, cdrs) / 1000


def per_subscriber_month(usd: float, subscribers: int, simulated_days: int) -> float:
    """A month is 30 days: a run of another length is scaled to 30."""
    if subscribers <= 0 or simulated_days <= 0:
        raise PricingError("the soak needs subscribers and simulated days")
    return usd / subscribers * DAYS_PER_MONTH / simulated_days


@dataclass(frozen=True)
class CostReport:
    soak: SoakUsage
    prices: PriceList
    phases: dict[str, PhaseCost]
    total: PhaseCost
    outside_phases: PhaseCost  # the total less the phases: metered between them
    monthly: list[Line]

    @property
    def rating(self) -> PhaseCost:
        return self.phases[RATING_PHASE]

    @property
    def rating_usage(self) -> Usage:
        return self.soak.phases[RATING_PHASE]

    @property
    def rating_per_million(self) -> float:
        return per_million(self.rating.usd, self.soak.cdrs_sent)

    @property
    def rating_per_million_provisioned(self) -> float:
        """The same, on a provisioned table (PROVISIONED_UTILIZATION used)."""
        cost = price_usage(self.rating_usage, provisioned(self.prices))
        return per_million(cost.usd, self.soak.cdrs_sent)

    @property
    def month_per_million(self) -> float:
        return per_million(self.total.usd, self.soak.cdrs_sent)

    @property
    def monthly_usd(self) -> float:
        return sum(line.usd for line in self.monthly)

    @property
    def provisioned_floor_monthly_usd(self) -> float:
        """What a provisioned table pays a month for its minimum capacity, idle or not."""
        units = PROVISIONED_MIN_UNITS * TABLE_AND_INDEXES * HOURS_PER_MONTH
        return sum(units * hourly.usd_each for hourly in self.prices.capacity.values())

    def subscriber_month(self, *, fixed_shared: bool = False) -> float:
        """The month's request-driven cost per subscriber; with ``fixed_shared`` plus
        the fixed monthly costs split among the soak's subscribers."""
        soak = self.soak
        usd = per_subscriber_month(self.total.usd, soak.subscribers, soak.simulated_days)
        return usd + (self.monthly_usd / soak.subscribers if fixed_shared else 0)

    def figures(self) -> list[Figure]:
        cdrs, rating_units = self.soak.cdrs_sent, self.rating_usage.units
        dynamodb_requests = sum(self.rating_usage.requests.get("dynamodb", {}).values())
        read_units = rating_units.get("dynamodb_read_request_units", 0)
        write_units = rating_units.get("dynamodb_write_request_units", 0)
        return [
            Figure("cost per million CDRs, rating pipeline", self.rating_per_million, PER_MILLION),
            Figure(
                "cost per million CDRs, rating pipeline, provisioned table",
                self.rating_per_million_provisioned,
                PER_MILLION,
            ),
            Figure("cost per million CDRs, whole month", self.month_per_million, PER_MILLION),
            Figure("cost per subscriber-month", self.subscriber_month(), "USD"),
            Figure(
                "cost per subscriber-month, fixed costs shared",
                self.subscriber_month(fixed_shared=True),
                "USD",
            ),
            Figure(
                "DynamoDB requests per 1,000 CDRs (rating)",
                per_thousand(dynamodb_requests, cdrs),
                "requests",
            ),
            Figure(
                "DynamoDB read units per 1,000 CDRs (rating)", per_thousand(read_units, cdrs), "RRU"
            ),
            Figure(
                "DynamoDB write units per 1,000 CDRs (rating)",
                per_thousand(write_units, cdrs),
                "WRU",
            ),
            Figure("whole simulated month, request-driven cost", self.total.usd, "USD"),
            Figure("fixed monthly costs", self.monthly_usd, "USD/month"),
            Figure("target met, rating pipeline", _met(self.rating_per_million), "1=yes"),
            Figure(
                "target met, rating pipeline, provisioned table",
                _met(self.rating_per_million_provisioned),
                "1=yes",
            ),
            Figure("target met, whole month", _met(self.month_per_million), "1=yes"),
        ]


def _met(usd_per_million: float) -> float:
    return 1.0 if usd_per_million <= TARGET_USD_PER_MILLION_CDRS else 0.0


def build_report(
    soak: SoakUsage, prices: PriceList, monthly: list[MonthlyItem] | None = None
) -> CostReport:
    if RATING_PHASE not in soak.phases:
        raise PricingError(f"the usage has no {RATING_PHASE!r} phase: {sorted(soak.phases)}")
    phases = {name: price_usage(usage, prices) for name, usage in soak.phases.items()}
    total = price_usage(soak.total, prices)
    outside_phases = soak.total
    for usage in soak.phases.values():
        outside_phases = outside_phases - usage
    return CostReport(
        soak=soak,
        prices=prices,
        phases=phases,
        total=total,
        outside_phases=price_usage(outside_phases, prices),
        monthly=price_monthly(monthly_items() if monthly is None else monthly, prices),
    )


def print_report(report: CostReport) -> None:
    soak, prices = report.soak, report.prices
    print(
        f"cost model: soak profile {soak.profile!r}, {soak.subscribers:,} subscribers, "
        f"{soak.simulated_days} simulated days, {soak.cdrs_sent:,} CDRs sent "
        f"({soak.cdrs_unique:,} unique)"
    )
    print(f"prices: {prices.region} list prices as of {prices.as_of}, no free tier, USD, no tax")
    for name, cost in report.phases.items():
        _print_lines(f"phase {name!r}", cost)
    if any(abs(line.quantity) > NEGLIGIBLE for line in report.outside_phases.lines):
        _print_lines("metered outside the phases", report.outside_phases)
    _print_lines("whole simulated month", report.total, all_lines=True)
    _print_lines("fixed monthly (not in the per-CDR figures)", PhaseCost(report.monthly))
    print()
    for figure in report.figures():
        if not figure.metric.startswith("target met"):
            print(f"  {figure.metric:<46}: {figure.value:>12,.4f} {figure.unit}")
    if soak.simulated_days != DAYS_PER_MONTH:
        print(f"  (per subscriber-month: {soak.simulated_days} simulated days scaled to 30)")
    if soak.live_days < soak.simulated_days:
        print(
            f"  (the daily sweeps ran on the last {soak.live_days} of those days only: "
            "their requests are under-counted; the full profile plays the whole month)"
        )
    print(f"  target: at most ${TARGET_USD_PER_MILLION_CDRS:.2f} per million CDRs")
    utilization = f"{PROVISIONED_UTILIZATION:.0%} used"
    for what, usd in (
        ("rating pipeline", report.rating_per_million),
        ("whole month", report.month_per_million),
        (
            f"rating pipeline, provisioned table ({utilization})",
            report.rating_per_million_provisioned,
        ),
    ):
        verdict = "met" if _met(usd) else "NOT met"
        print(f"    {what}: {verdict} (${usd:,.2f})")
    print(
        "    (the stack deploys an on-demand table; provisioned capacity is "
        "`cdk -c table_capacity=provisioned`, which also pays for its minimum capacity, "
        f"${report.provisioned_floor_monthly_usd:,.2f} a month; its figure is a lower "
        "bound: auto scaling lags a rising load and scales down only so often)"
    )
    _print_caveats(prices)


def _print_lines(title: str, cost: PhaseCost, *, all_lines: bool = False) -> None:
    print(f"\n{title}: {cost.usd:,.4f} USD")
    for line in cost.lines:
        if abs(line.quantity) > NEGLIGIBLE or all_lines:
            print(f"  {line.item:<40} {line.quantity:>16,.1f} {line.usd:>12,.4f} USD")


def _print_caveats(prices: PriceList) -> None:
    print("\nprices not verified for Mumbai (see bench/prices/ap-south-1.json):")
    for name, price in prices.unsure().items():
        print(f"  {name} ({price.confidence}): {price.note}")
    print("not modeled:")
    for item in prices.not_modeled:
        print(f"  {item}")


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else USAGE_PATH
    try:
        report = build_report(load_usage(path), load_prices())
    except PricingError as error:
        raise SystemExit(f"bench.cost: {error}") from error
    print_report(report)
    soak = report.soak
    write_results(
        "cost",
        {
            "usage_file": str(path),
            "profile": soak.profile,
            "subscribers": soak.subscribers,
            "simulated_days": soak.simulated_days,
            "cdrs_sent": soak.cdrs_sent,
            "cdrs_unique": soak.cdrs_unique,
            "prices": f"{report.prices.region} as of {report.prices.as_of}",
            "target_usd_per_million_cdrs": TARGET_USD_PER_MILLION_CDRS,
        },
        report.figures(),
    )


if __name__ == "__main__":
    main()
