"""The rating handler against moto: totals, dedup, partial failures, anomalies,
prepaid wallet, late usage and cycles."""

from __future__ import annotations

from datetime import timedelta

from shared.clock import FixedClock
from tests.integration.conftest import T0
from tests.integration.usage.conftest import Rating, Subscribe, cdr, kinesis_event


def test_a_batch_is_rated_into_the_cycle_balance(rating: Rating, subscribed: Subscribe) -> None:
    msisdn = subscribed("alice")
    result = rating.send(
        [
            cdr(msisdn, "VOICE", 61),
            cdr(msisdn, "DATA", 15 * 1024),
            cdr(msisdn, "SMS", 2),
        ]
    )
    assert result == {"batchItemFailures": []}
    report = rating.report("alice")
    assert report.voice.used == 120  # 60 s pulse on POST_BASIC_399
    assert report.data.used == 20 * 1024  # 10 KB pulse
    assert report.sms.used == 2
    assert report.overage_paise == 0
    assert report.daily[0].voice_seconds == 120


def test_duplicates_in_a_batch_and_across_batches_count_once(
    rating: Rating, subscribed: Subscribe
) -> None:
    msisdn = subscribed("bob")
    first = cdr(msisdn, "SMS", 1, record_id="dup-1")
    rating.send([first, first, cdr(msisdn, "SMS", 1, record_id="one")])
    rating.send([first, cdr(msisdn, "SMS", 1, record_id="two")])
    event = kinesis_event([cdr(msisdn, "SMS", 1, record_id="three")])
    rating.deliver(event)
    rating.deliver(event)  # the same batch again: Lambda redelivered it
    rating.restart()
    rating.deliver(event)  # and to a new container, which only has the markers
    rating.send([first])
    assert rating.report("bob").sms.used == 4


def test_invalid_and_unknown_records_go_to_the_anomaly_queue(
    rating: Rating, subscribed: Subscribe
) -> None:
    msisdn = subscribed("carol")
    result = rating.send(
        [
            "not json",
            {**cdr(msisdn, "VOICE", 1), "duration_seconds": -5},
            cdr("9000000001", "SMS", 1),
            cdr(msisdn, "SMS", 1),
        ]
    )
    assert result == {"batchItemFailures": []}
    reasons = sorted(a["reason"] for a in rating.anomalies())
    assert reasons == ["INVALID_RECORD", "INVALID_RECORD", "UNKNOWN_MSISDN"]
    assert rating.report("carol").sms.used == 1


def test_repeated_anomalies_flag_the_subscriber(rating: Rating, subscribed: Subscribe) -> None:
    msisdn = subscribed("dave")
    bad = [{**cdr(msisdn, "VOICE", 1), "duration_seconds": 0} for _ in range(5)]
    rating.send(bad)
    flagged = [e for e in rating.aws.published() if e["detail-type"] == "SubscriberFlagged"]
    assert [e["detail"]["msisdn"] for e in flagged] == [msisdn]
    report = rating.report("dave")
    assert report.flag is not None
    assert report.flag.anomaly_count == 5


def test_prepaid_payg_comes_off_the_wallet_then_quota_exhausts(
    rating: Rating, subscribed: Subscribe
) -> None:
    # PRE_DATA_49 has no voice quota: 1 paisa per second from the wallet.
    msisdn = subscribed("erin", "PRE_DATA_49", wallet_paise=4900 + 100)
    assert rating.wallet("erin") == 100
    rating.send([cdr(msisdn, "VOICE", 60), cdr(msisdn, "VOICE", 70)])
    assert rating.wallet("erin") == 0
    report = rating.report("erin")
    assert report.voice.overage_paise == 130
    assert report.unbilled_paise == 30
    assert report.voice.exhausted
    kinds = [e["detail-type"] for e in rating.aws.published()]
    assert "QuotaExhausted" in kinds


def test_a_top_up_between_batches_is_seen_by_rating(rating: Rating, subscribed: Subscribe) -> None:
    from shared.db import DynamoSubscriptionStore  # noqa: PLC0415

    msisdn = subscribed("fay", "PRE_DATA_49", wallet_paise=4900 + 50)
    rating.send([cdr(msisdn, "VOICE", 10)])
    DynamoSubscriptionStore().credit_wallet("fay", 1000)  # rating's cached wallet is stale now
    rating.send([cdr(msisdn, "VOICE", 100)])
    assert rating.wallet("fay") == 50 - 10 + 1000 - 100
    assert rating.report("fay").unbilled_paise == 0


def test_late_cdrs_of_a_closed_cycle_become_late_usage_items(
    rating: Rating, subscribed: Subscribe, clock: FixedClock
) -> None:
    from shared.stores.usage import DynamoRatingStore  # noqa: PLC0415

    msisdn = subscribed("gus")
    rating.send([cdr(msisdn, "SMS", 1)])
    store = DynamoRatingStore()
    state = store.load_states([msisdn])[msisdn]
    (cycle,) = state.cycles.values()
    closed = state.copy()
    closed.cycles[cycle.label].closed = True  # what billing does when it invoices
    closed.version += 1
    assert store.put_state(closed, expected_version=state.version)

    clock.advance(timedelta(days=10))  # next cycle (bill day 1)
    rating.send([cdr(msisdn, "SMS", 1, at=clock.now()), cdr(msisdn, "SMS", 3, at=T0)])
    late = [i for i in rating.aws.items("USER#gus") if i["SK"]["S"].startswith("LATE#")]
    assert len(late) == 1
    assert late[0]["discrepancy"]["S"] == "LATE_USAGE"
    report = rating.report("gus")
    assert report.sms.used == 1  # the new cycle
    assert report.late_usage_records == 1
    assert [(day.date, day.sms) for day in report.daily] == [(f"{clock.now():%Y-%m-%d}", 1)]
    # The invoiced cycle, followed by a new one, keeps its balance (the late CDR
    # included) but not its day counters.
    invoiced = store.load_states([msisdn])[msisdn].cycles[cycle.label]
    assert (invoiced.balance.used_sms, invoiced.daily) == (4, {})


def test_out_of_order_cdrs_count_in_the_cycle_they_started_in(
    rating: Rating, subscribed: Subscribe, clock: FixedClock
) -> None:
    msisdn = subscribed("hal")
    clock.advance(timedelta(days=10))  # into the December cycle
    rating.send([cdr(msisdn, "SMS", 1, at=clock.now()), cdr(msisdn, "SMS", 2, at=T0)])
    from shared.stores.usage import DynamoRatingStore  # noqa: PLC0415

    state = DynamoRatingStore().load_states([msisdn])[msisdn]
    used = {label: c.balance.used_sms for label, c in state.cycles.items()}
    assert used == {"2026-11-01": 2, "2026-12-01": 1}
