"""The cost model's arithmetic (bench.cost): units x prices, per-CDR and
per-subscriber figures, and the errors for usage without a price."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cost import (
    CostReport,
    MonthlyItem,
    PriceList,
    PricingError,
    RequestPrice,
    SoakUsage,
    Usage,
    build_report,
    load_prices,
    load_usage,
    monthly_items,
    per_million,
    per_subscriber_month,
    per_thousand,
    price_monthly,
    price_requests,
    price_units,
    print_report,
    provisioned,
)
from bench.cost import Price as CostPrice

SAMPLE = Path(__file__).parent / "soak_usage_sample.json"


def price(usd: float, per: float = 1) -> CostPrice:
    return CostPrice(usd, per, "test price", "https://example.test", "recalled", "")


def price_list(**overrides: object) -> PriceList:
    values: dict[str, object] = {
        "region": "test-1",
        "as_of": "2025-06-01",
        "usage": {
            "dynamodb_write_request_units": price(1.00, 1_000_000),
            "eventbridge_events": price(2.00, 1_000_000),
        },
        "requests": {
            "ses": RequestPrice(frozenset({"SendEmail"}), price(0.10, 1000)),
            "kms": RequestPrice(None, price(0.03, 10_000)),
        },
        "free_requests": {"ssm": "free"},
        "fixed": {"shard_hours": price(0.015)},
        "not_modeled": [],
    }
    values.update(overrides)
    return PriceList(**values)  # type: ignore[arg-type]


SHARD_MONTH = [MonthlyItem("shard_hours", "shard_hours", 730)]


def soak(phases: dict[str, Usage], total: Usage, *, days: int = 30) -> SoakUsage:
    return SoakUsage(
        profile="test",
        subscribers=100,
        simulated_days=days,
        cdrs_sent=10_000,
        cdrs_unique=9_900,
        phases=phases,
        total=total,
        live_days=days,
    )


def test_a_unit_costs_its_count_times_the_price_per_unit() -> None:
    lines = price_units(
        {"dynamodb_write_request_units": 3_000_000},
        {"dynamodb_write_request_units": price(0.625, 1_000_000)},
    )

    assert [(line.item, line.quantity, line.usd) for line in lines] == [
        ("dynamodb_write_request_units", 3_000_000, pytest.approx(1.875))
    ]


def test_a_price_with_no_usage_costs_nothing() -> None:
    lines = price_units(
        {"dynamodb_write_request_units": 10},
        {"dynamodb_write_request_units": price(1), "reads": price(1)},
    )

    assert {line.item: line.usd for line in lines} == {
        "dynamodb_write_request_units": 10,
        "reads": 0,
    }


def test_a_unit_without_a_price_is_an_error() -> None:
    with pytest.raises(PricingError, match="lambda_gb_seconds"):
        price_units(
            {"dynamodb_write_request_units": 1, "lambda_gb_seconds": 2.5},
            {"dynamodb_write_request_units": price(1)},
        )


def test_requests_are_priced_for_the_listed_operations_only() -> None:
    requests = {"ses": {"SendEmail": 2000, "VerifyEmailIdentity": 5}, "kms": {"Decrypt": 20_000}}

    lines = {line.item: line for line in price_requests(requests, price_list())}

    assert lines["ses requests"].quantity == 2000
    assert lines["ses requests"].usd == pytest.approx(0.20)
    assert lines["kms requests"].usd == pytest.approx(0.06)


def test_requests_of_unit_priced_and_free_services_add_no_line() -> None:
    requests = {"dynamodb": {"PutItem": 9}, "ssm": {"GetParameter": 4}}

    lines = price_requests(requests, price_list())

    assert {line.item: line.usd for line in lines} == {"ses requests": 0, "kms requests": 0}


def test_requests_to_a_service_with_no_price_are_an_error() -> None:
    with pytest.raises(PricingError, match="sns"):
        price_requests({"sns": {"Publish": 1}}, price_list())


def test_a_service_without_a_price_but_without_calls_is_not_an_error() -> None:
    assert price_requests({"sns": {"Publish": 0}}, price_list())


@pytest.mark.parametrize(
    ("usd", "cdrs", "expected"),
    [(0.25, 100_000, 2.5), (2.5, 1_000_000, 2.5), (1.0, 250_000, 4.0)],
)
def test_cost_per_million_cdrs(usd: float, cdrs: int, expected: float) -> None:
    assert per_million(usd, cdrs) == pytest.approx(expected)


def test_per_thousand_cdrs() -> None:
    assert per_thousand(2_344, 100_000) == pytest.approx(23.44)


def test_no_cdrs_is_an_error_not_a_division_by_zero() -> None:
    with pytest.raises(PricingError):
        per_million(1.0, 0)


def test_a_31_day_run_is_scaled_to_a_30_day_month_per_subscriber() -> None:
    assert per_subscriber_month(31.0, 10, 31) == pytest.approx(3.0)
    assert per_subscriber_month(30.0, 10, 30) == pytest.approx(3.0)


def test_fixed_prices_and_monthly_items_must_match() -> None:
    with pytest.raises(PricingError, match="shard_hours"):
        price_monthly([], price_list())  # a fixed price no item uses


def test_the_price_file_prices_every_unit_the_meter_reports_and_every_monthly_item() -> None:
    prices = load_prices()
    units = load_usage(SAMPLE).total.units

    assert set(units) <= set(prices.usage)
    assert all(line.usd > 0 for line in price_monthly(monthly_items(), prices))
    assert prices.as_of


# $0.0018 per write-unit-hour: at 70 % use, $0.0018 buys 2,520 units.
WRITE_UNIT_HOUR = {"dynamodb_write_request_units": price(0.0018)}


def report_of(phases: dict[str, Usage], total: Usage) -> CostReport:
    return build_report(soak(phases, total), price_list(capacity=WRITE_UNIT_HOUR), SHARD_MONTH)


def _rating_and_billing() -> tuple[Usage, Usage]:
    rating = Usage(
        {"dynamodb": {"TransactWriteItems": 150, "BatchGetItem": 80}, "kinesis": {"GetRecords": 9}},
        {"dynamodb_write_request_units": 20_000, "eventbridge_events": 500},
    )
    billing = Usage(
        {"ses": {"SendEmail": 100}},
        {"dynamodb_write_request_units": 5_000, "eventbridge_events": 100},
    )
    return rating, billing


def test_a_provisioned_unit_costs_the_unit_hour_spread_over_the_units_it_serves() -> None:
    hourly = {"dynamodb_write_request_units": price(0.00072)}  # $0.00072 per unit-hour
    prices = provisioned(price_list(capacity=hourly), utilization=0.5)

    lines = price_units({"dynamodb_write_request_units": 1_800}, prices.usage)
    usd = {line.item: line.usd for line in lines}

    # A unit-hour serves 3,600 units at full use, 1,800 at half: 1,800 units cost one.
    assert usd["dynamodb_write_request_units"] == pytest.approx(0.00072)
    assert prices.usage["eventbridge_events"] == price_list().usage["eventbridge_events"]


def test_provisioned_capacity_for_a_unit_without_an_on_demand_price_is_an_error() -> None:
    with pytest.raises(PricingError, match="dynamodb_read_request_units"):
        provisioned(price_list(capacity={"dynamodb_read_request_units": price(0.0001)}))


def test_report_figures_per_cdr_come_from_the_rating_phase() -> None:
    rating, billing = _rating_and_billing()
    total = Usage(
        {**rating.requests, **billing.requests},
        {"dynamodb_write_request_units": 25_000, "eventbridge_events": 600},
    )
    report = report_of({"rating": rating, "billing": billing}, total)
    figures = {figure.metric: figure.value for figure in report.figures()}

    rating_usd = 20_000 * 1e-6 + 500 * 2e-6
    total_usd = 25_000 * 1e-6 + 600 * 2e-6 + 100 * 1e-4
    assert figures["cost per million CDRs, rating pipeline"] == pytest.approx(rating_usd * 100)
    assert figures["cost per million CDRs, whole month"] == pytest.approx(total_usd * 100)
    assert figures["DynamoDB requests per 1,000 CDRs (rating)"] == pytest.approx(23.0)
    assert figures["DynamoDB write units per 1,000 CDRs (rating)"] == pytest.approx(2000)
    assert figures["DynamoDB read units per 1,000 CDRs (rating)"] == 0
    assert figures["cost per subscriber-month"] == pytest.approx(total_usd / 100)
    assert figures["fixed monthly costs"] == pytest.approx(0.015 * 730)
    assert figures["target met, rating pipeline"] == 1.0  # $2.10
    # 5 write units on the table and its 2 indexes, 730 hours, $0.0018 each.
    assert report.provisioned_floor_monthly_usd == pytest.approx(15 * 730 * 0.0018)
    provisioned_usd = 20_000 * 0.0018 / 2_520 + 500 * 2e-6
    assert figures["cost per million CDRs, rating pipeline, provisioned table"] == pytest.approx(
        provisioned_usd * 100
    )
    assert figures["target met, whole month"] == 0.0  # $3.62
    assert not any(line.usd for line in report.outside_phases.lines)


def test_usage_metered_between_phases_is_reported_apart() -> None:
    rating, billing = _rating_and_billing()
    total = Usage(
        rating.requests, {"dynamodb_write_request_units": 26_000, "eventbridge_events": 600}
    )

    report = report_of({"rating": rating, "billing": billing}, total)

    outside = {line.item: line.quantity for line in report.outside_phases.lines}
    assert outside["dynamodb_write_request_units"] == 1_000


def test_usage_without_a_rating_phase_is_an_error() -> None:
    with pytest.raises(PricingError, match="rating"):
        report_of({}, Usage({}, {}))


def test_the_sample_soak_prices_consistently() -> None:
    report = build_report(load_usage(SAMPLE), load_prices())

    assert report.total.usd == pytest.approx(sum(cost.usd for cost in report.phases.values()))
    assert 0 < report.rating.usd < report.total.usd


def test_a_missing_usage_file_says_to_run_the_soak(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="run the soak"):
        load_usage(tmp_path / "soak-usage.json")


def test_a_run_that_skipped_days_says_its_sweeps_are_under_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(SAMPLE.read_text())
    usage = tmp_path / "soak-usage-quick.json"
    usage.write_text(json.dumps({**document, "simulated_days": 31, "live_days": 5}))

    print_report(build_report(load_usage(usage), load_prices()))

    assert "daily sweeps ran on the last 5 of those days only" in capsys.readouterr().out


def test_a_usage_file_from_before_live_days_played_every_day() -> None:
    assert "live_days" not in json.loads(SAMPLE.read_text())

    loaded = load_usage(SAMPLE)

    assert loaded.live_days == loaded.simulated_days
