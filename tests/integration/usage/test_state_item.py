"""The rating state item against moto: small enough that rewriting it with every
CDR costs one write unit per KB step (the cost per CDR), its plans stored once as
immutable snapshots, and states written before snapshots had items still rated."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from infra.local.usage_units import item_size
from shared.catalog import seed_plans
from shared.stores.usage import DynamoRatingStore
from tests.integration.usage.conftest import Rating, Subscribe, cdr

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DECEMBER = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 17:30 IST on the 1st
DAILY_VOICE = 3_540  # a minute pulse: 59 minutes a day, over the quota by mid-month
DAILY_DATA = 150 * 1024 * 1024  # a whole number of 10 KB pulses


def rating_item(rating: Rating, msisdn: str) -> dict[str, dict[str, str]]:
    key = {"PK": {"S": f"MSISDN#{msisdn}"}, "SK": {"S": "RATING"}}
    item: dict[str, dict[str, str]] = rating.aws.dynamodb.get_item(
        TableName=rating.aws.table_name, Key=key, ConsistentRead=True
    )["Item"]
    return item


def snapshot_keys(rating: Rating) -> list[str]:
    pages = rating.aws.dynamodb.get_paginator("scan").paginate(TableName=rating.aws.table_name)
    keys = (item["PK"]["S"] for page in pages for item in page["Items"])
    return sorted(key for key in keys if key.startswith("PLANSNAP#"))


def use_every_day_of_december(rating: Rating, msisdn: str) -> None:
    rating.clock.advance(DECEMBER + timedelta(days=30, hours=1) - rating.clock.now())
    for day in range(31):
        at = DECEMBER + timedelta(days=day)
        rating.send(
            [
                cdr(msisdn, "DATA", DAILY_DATA, at=at),
                cdr(msisdn, "VOICE", DAILY_VOICE, at=at),
                cdr(msisdn, "SMS", 4, at=at),
            ]
        )


def test_a_month_of_daily_usage_keeps_the_state_item_under_one_kilobyte(
    rating: Rating, subscribed: Subscribe
) -> None:
    msisdn = subscribed("dora")

    use_every_day_of_december(rating, msisdn)

    report = rating.report("dora")
    assert [d.date for d in report.daily] == [f"2026-12-{day:02d}" for day in range(1, 32)]
    assert {(d.data_bytes, d.voice_seconds, d.sms) for d in report.daily} == {
        (DAILY_DATA, DAILY_VOICE, 4)
    }
    assert report.voice.used == 31 * DAILY_VOICE
    assert report.overage_paise > 0  # over the 1,000 minutes: the counters are not all zero
    assert item_size(rating_item(rating, msisdn)) < 1024


def test_subscribers_on_one_plan_share_one_snapshot_that_a_new_container_reads(
    rating: Rating, subscribed: Subscribe
) -> None:
    first, second = subscribed("erin"), subscribed("frank")
    rating.send([cdr(first, "SMS", 1), cdr(second, "SMS", 1)])

    rating.restart()  # nothing remembered: the plan comes from its snapshot item
    rating.send([cdr(first, "SMS", 2), cdr(second, "VOICE", 61)])

    assert len(snapshot_keys(rating)) == 1
    assert "POST_BASIC_399" not in json.dumps(rating_item(rating, first))
    assert (rating.report("erin").sms.used, rating.report("frank").voice.used) == (3, 120)
    assert rating.report("frank").plan_id == "POST_BASIC_399"


def test_a_state_stored_with_its_plan_copied_in_is_still_rated(
    rating: Rating, subscribed: Subscribe
) -> None:
    """States written before plan snapshots had items carry the plan JSON and
    key their daily counters by date: they load, and the next write converts them."""
    msisdn = subscribed("gita")
    rating.send([cdr(msisdn, "SMS", 1)])
    item = rating_item(rating, msisdn)
    (plan,) = [p for p in seed_plans() if p.plan_id == "POST_BASIC_399"]
    cycles = json.loads(item["cycles"]["S"])
    for doc in cycles.values():
        doc["plan_id"] = plan.plan_id
        del doc["plan"]
        doc["start"] = (EPOCH + timedelta(microseconds=doc["start"])).isoformat()
        doc["end"] = (EPOCH + timedelta(microseconds=doc["end"])).isoformat()
        doc["balance"] = {"used_sms": 1} if doc["balance"] else {}
        doc["daily"] = {"2026-11-25": [0, 0, 1]} if doc["daily"][0] else {}
        doc["closed"] = doc.get("closed", False)
        doc["late"] = doc.get("late", 0)
    item["cycles"] = {"S": json.dumps(cycles)}
    item["plans"] = {"S": json.dumps({plan.plan_id: plan.model_dump_json()})}
    rating.aws.dynamodb.put_item(TableName=rating.aws.table_name, Item=item)
    rating.restart()

    rating.send([cdr(msisdn, "SMS", 2)])

    report = rating.report("gita")
    assert report.sms.used == 3
    assert [(d.date, d.sms) for d in report.daily] == [("2026-11-25", 3)]
    assert "plans" not in rating_item(rating, msisdn)


def test_a_closed_cycle_still_the_latest_keeps_its_days(
    rating: Rating, subscribed: Subscribe
) -> None:
    """A final invoice (a disconnection) closes the current cycle: its usage page
    still shows the days; a late CDR counts in the balance, not in a day."""
    msisdn = subscribed("hana")
    rating.send([cdr(msisdn, "SMS", 2)])
    store = DynamoRatingStore()
    state = store.load_state(msisdn)
    assert state is not None
    closed = state.copy()
    closed.latest().closed = True  # what billing does for the final invoice
    closed.version += 1
    assert store.put_state(closed, expected_version=state.version)

    rating.send([cdr(msisdn, "SMS", 1)])

    report = rating.report("hana")
    assert [(day.date, day.sms) for day in report.daily] == [("2026-11-25", 2)]
    assert (report.sms.used, report.late_usage_records) == (3, 1)
