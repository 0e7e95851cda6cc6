"""Rating engine throughput: CDRs rated per second on one core, no I/O.

Builds 100k random CDRs over 1,000 subscribers on the seed catalog's plans, then
prints (median of 3 runs each):

- validation: CDRs/s for ``Cdr.model_validate`` of feed dicts (kept out of the
  engine figure: the handler pays it once per record, before rating);
- engine, one batch: ``rate_batch`` over all 100k CDRs (about 100 per subscriber);
- engine, Kinesis-sized batches: the same CDRs in batches of 100 records, where
  most subscribers have one or two CDRs per batch, so per-group overhead shows.

``BENCH_CDRS`` / ``BENCH_SUBSCRIBERS`` override the sizes.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from shared.catalog import seed_plans
from shared.models import Plan, SubscriberType
from shared.rating import Cdr, UsageBalance, rate_batch

CDRS = int(os.environ.get("BENCH_CDRS", "100000"))
SUBSCRIBERS = int(os.environ.get("BENCH_SUBSCRIBERS", "1000"))
RUNS = 3
KINESIS_BATCH = 100
SEED = 20250301


def subscribers(rng: random.Random) -> tuple[dict[str, Plan], dict[str, UsageBalance], list[str]]:
    plans = seed_plans()
    plans_by_user: dict[str, Plan] = {}
    balances: dict[str, UsageBalance] = {}
    msisdns: list[str] = []
    for index in range(SUBSCRIBERS):
        user_id = f"u{index:05d}"
        plan = rng.choice(plans)
        plans_by_user[user_id] = plan
        wallet = rng.randrange(0, 50_000) if plan.type is SubscriberType.PREPAID else 0
        # Start near the quota so overage, wallet debits and signals are exercised.
        balances[user_id] = UsageBalance(
            used_data_bytes=max(0, plan.data_bytes - rng.randrange(0, 200 * 1024 * 1024)),
            used_sms=max(0, plan.sms - rng.randrange(0, 50)),
            wallet_paise=wallet,
        )
        msisdns.append(f"9{index:09d}")
    return plans_by_user, balances, msisdns


def feed_record(rng: random.Random, index: int, msisdn: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "record_id": f"rec-{index}",
        "source": f"MSC-{index % 7}",
        "msisdn": "+91" + msisdn,
        "started_at": "2025-03-01T10:00:00+05:30",
    }
    kind = rng.random()
    if kind < 0.6:
        record |= {
            "usage_type": "DATA",
            "bytes_up": rng.randrange(0, 2_000_000),
            "bytes_down": rng.randrange(0, 20_000_000),
        }
    elif kind < 0.9:
        record |= {"usage_type": "VOICE", "duration_seconds": rng.randrange(1, 900)}
    else:
        record |= {"usage_type": "SMS", "count": rng.randrange(1, 3)}
    return record


def median_seconds(work: Callable[[], object]) -> float:
    timings = []
    for _ in range(RUNS):
        start = time.perf_counter()
        work()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    rng = random.Random(SEED)
    plans_by_user, balances, msisdns = subscribers(rng)
    user_ids = list(plans_by_user)
    owners = [rng.randrange(SUBSCRIBERS) for _ in range(CDRS)]
    records = [feed_record(rng, i, msisdns[owner]) for i, owner in enumerate(owners)]

    validate_s = median_seconds(lambda: [Cdr.model_validate(r) for r in records])
    batch = [
        (user_ids[owner], Cdr.model_validate(r)) for owner, r in zip(owners, records, strict=True)
    ]
    one_batch_s = median_seconds(lambda: rate_batch(plans_by_user, balances, batch))

    def kinesis_sized() -> None:
        for start in range(0, len(batch), KINESIS_BATCH):
            rate_batch(plans_by_user, balances, batch[start : start + KINESIS_BATCH])

    small_batches_s = median_seconds(kinesis_sized)
    results = rate_batch(plans_by_user, balances, batch)
    signals = sum(len(r.signals) for r in results.values())
    charged = sum(r.charge_paise for r in results.values())

    print(f"rating engine: {CDRS:,} CDRs over {SUBSCRIBERS:,} subscribers, median of {RUNS} runs")
    print(f"  cores visible: {os.cpu_count()} (the engine uses one)")
    rows = [
        ("validation (Cdr.model_validate)", validate_s),
        ("engine, one batch", one_batch_s),
        (f"engine, batches of {KINESIS_BATCH}", small_batches_s),
        (f"validation + engine, batches of {KINESIS_BATCH}", validate_s + small_batches_s),
    ]
    for label, seconds in rows:
        print(f"  {label:<42}: {CDRS / seconds:>10,.0f} CDRs/s")
    print(f"  (sanity: {charged:,} paise charged, {signals:,} signals)")


if __name__ == "__main__":
    main()
