"""Exactly once under at-least-once delivery, through the real handler against
moto: a crash between transactions, then redelivery; and Hypothesis properties
(order independence, replays change nothing, quotas never negative, overage =
rate x rounded units beyond the quota)."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.catalog import seed_plans
from shared.stores import usage as usage_store
from tests.integration.usage.conftest import Rating, Subscribe, cdr, kinesis_event

PLANS = {plan.plan_id: plan for plan in seed_plans()}
_users = itertools.count()


class Crash(Exception):
    """The Lambda container dies: nothing after this point runs."""


def test_a_crash_between_transactions_then_redelivery_counts_every_cdr_once(
    rating: Rating, subscribed: Subscribe, monkeypatch: pytest.MonkeyPatch
) -> None:
    msisdns = [subscribed(f"crash-{i}") for i in range(3)]
    records: list[dict[str, Any] | str] = [
        cdr(msisdn, "SMS", 1) for msisdn in msisdns for _ in range(120)
    ]
    event = kinesis_event(records)
    real_write = usage_store.DynamoRatingStore._write
    calls = itertools.count()

    def write_then_crash(self: Any, *args: Any) -> Any:
        if next(calls) == 2:  # two transactions committed, then the crash
            raise Crash
        return real_write(self, *args)

    monkeypatch.setattr(usage_store.DynamoRatingStore, "_write", write_then_crash)
    with pytest.raises(Crash):
        rating.deliver(event)
    partly = [rating.report(f"crash-{i}").sms.used for i in range(3)]
    assert 0 < sum(partly) < 360  # part of the batch was written

    monkeypatch.setattr(usage_store.DynamoRatingStore, "_write", real_write)
    rating.restart()  # the crashed container is gone; a new one gets the batch
    assert rating.deliver(event) == {"batchItemFailures": []}  # Kinesis redelivers
    assert [rating.report(f"crash-{i}").sms.used for i in range(3)] == [120, 120, 120]
    rating.restart()
    rating.deliver(event)  # and once more, for good measure
    assert [rating.report(f"crash-{i}").sms.used for i in range(3)] == [120, 120, 120]


usage = st.one_of(
    st.tuples(st.just("VOICE"), st.integers(1, 400)),
    st.tuples(st.just("DATA"), st.integers(0, 3 * 1024 * 1024)),
    st.tuples(st.just("SMS"), st.integers(1, 3)),
)
PROPERTY_SETTINGS = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _balance(rating: Rating, user_id: str) -> tuple[int, ...]:
    report = rating.report(user_id)
    return (
        report.data.used,
        report.voice.used,
        report.sms.used,
        report.overage_paise,
        report.unbilled_paise,
        report.wallet_paise or 0,
    )


def _send_in_batches(rating: Rating, records: list[dict[str, Any]], sizes: random.Random) -> None:
    start = 0
    while start < len(records):
        size = sizes.randint(1, 12)
        rating.send(list(records[start : start + size]))
        start += size


@PROPERTY_SETTINGS
@given(
    usages=st.lists(usage, min_size=1, max_size=20),
    plan_id=st.sampled_from(["PRE_DATA_49", "POST_BASIC_399"]),
    wallet=st.integers(0, 3000),
    seed=st.integers(0, 2**16),
)
def test_totals_do_not_depend_on_order_or_batching_and_replays_change_nothing(
    rating: Rating,
    subscribed: Subscribe,
    *,
    usages: list[tuple[str, int]],
    plan_id: str,
    wallet: int,
    seed: int,
) -> None:
    shuffle = random.Random(seed)
    price = PLANS[plan_id].price_paise if plan_id.startswith("PRE") else 0
    users = [f"prop-{next(_users)}" for _ in range(2)]
    msisdns = [subscribed(u, plan_id, wallet_paise=(price + wallet) if price else 0) for u in users]
    feeds = [
        [cdr(m, kind, amount, record_id=f"{m}-{i}") for i, (kind, amount) in enumerate(usages)]
        for m in msisdns
    ]
    shuffle.shuffle(feeds[1])
    for feed in feeds:
        _send_in_batches(rating, feed, shuffle)

    first, second = (_balance(rating, u) for u in users)
    assert first == second  # order and batching do not matter

    replay = shuffle.sample(feeds[0], k=shuffle.randint(1, len(feeds[0])))
    rating.restart()  # markers, not the container's memory, must catch these
    rating.send(list(replay))
    assert _balance(rating, users[0]) == first  # replays change nothing

    report = rating.report(users[0])
    for kind in (report.data, report.voice, report.sms):
        assert kind.remaining is None or kind.remaining >= 0
    assert rating.wallet(users[0]) >= 0
    if plan_id == "POST_BASIC_399":
        plan = PLANS[plan_id]
        assert plan.voice_seconds is not None
        beyond = max(0, report.voice.used - plan.voice_seconds)
        assert report.voice.overage_paise == 50 * math.ceil(beyond / 60)
        assert report.sms.overage_paise == 150 * max(0, report.sms.used - plan.sms)


def test_a_batch_whose_states_moved_in_many_transactions_commits_in_one_delivery(
    rating: Rating, subscribed: Subscribe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plan changes rewrite rating states while a big batch is rated: every
    transaction the batch spans is cancelled once, and one delivery still rates
    it all (a delivery learns from every cancelled transaction, not the first)."""
    users = [f"moved-{i}" for i in range(9)]
    msisdns = [subscribed(user) for user in users]
    rating.send([cdr(msisdn, "SMS", 1) for msisdn in msisdns])  # the states exist
    store = usage_store.DynamoRatingStore()
    real_load = usage_store.DynamoRatingStore.load_states

    first_read = itertools.count()

    def load_then_changed_elsewhere(self: Any, wanted: Any) -> Any:
        states = real_load(self, wanted)
        if next(first_read) == 0:  # a plan change rewrites each state meanwhile
            for state in states.values():
                assert store.put_state(replace(state, version=state.version + 1), state.version)
        return states

    # 60 CDRs each: one transaction per subscriber (100 items at most).
    records: list[dict[str, Any] | str] = [
        cdr(msisdn, "SMS", 1) for msisdn in msisdns for _ in range(60)
    ]
    monkeypatch.setattr(usage_store.DynamoRatingStore, "load_states", load_then_changed_elsewhere)
    answer = rating.send(records)
    monkeypatch.setattr(usage_store.DynamoRatingStore, "load_states", real_load)

    assert answer == {"batchItemFailures": []}
    assert [rating.report(user).sms.used for user in users] == [61] * len(users)


def test_a_fresh_container_rates_a_big_batch_with_resent_records_in_one_delivery(
    rating: Rating, subscribed: Subscribe
) -> None:
    """After a crash the new container remembers no dedup hashes: the network's
    re-sends, one in each of the batch's transactions, must not fail the batch."""
    users = [f"resent-{i}" for i in range(9)]
    msisdns = [subscribed(user) for user in users]
    earlier = [cdr(msisdn, "SMS", 1) for msisdn in msisdns]
    rating.send(earlier)
    rating.restart()

    # 60 new CDRs each (one transaction per subscriber), each with a re-sent one.
    records: list[dict[str, Any] | str] = [
        record
        for msisdn, resent in zip(msisdns, earlier, strict=True)
        for record in [resent, *(cdr(msisdn, "SMS", 1) for _ in range(60))]
    ]
    assert rating.send(records) == {"batchItemFailures": []}
    assert [rating.report(user).sms.used for user in users] == [61] * len(users)
