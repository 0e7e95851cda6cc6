"""`tbcss cdr generate`'s feed (infra/cdr.py): reproducible, realistic, valid."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from infra.cdr import FeedMix, generate, partition_key, read_lines
from shared.rating import Cdr

END = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
MSISDNS = ("9876500001", "9876500002")


def test_the_same_seed_gives_the_same_feed() -> None:
    mix = FeedMix(count=300)
    assert list(generate(MSISDNS, mix, seed=7, end=END)) == list(
        generate(MSISDNS, mix, seed=7, end=END)
    )
    assert list(generate(MSISDNS, mix, seed=7, end=END)) != list(
        generate(MSISDNS, mix, seed=8, end=END)
    )


def test_the_mix_has_every_type_duplicates_delays_and_unknown_numbers() -> None:
    records = list(generate(MSISDNS, FeedMix(count=2000), seed=1, end=END))
    cdrs = [Cdr.model_validate(record) for record in records]  # every record is valid
    assert set(Counter(c.usage_type.value for c in cdrs)) == {"DATA", "VOICE", "SMS"}
    keys = Counter(c.dedup_key for c in cdrs)
    assert len(records) > 2000
    assert any(n > 1 for n in keys.values())  # re-sent records
    assert any(c.msisdn not in MSISDNS for c in cdrs)  # unknown numbers
    starts = [c.started_at for c in cdrs]
    assert starts != sorted(starts)  # out of order


def test_records_are_partitioned_by_msisdn() -> None:
    (data,) = read_lines(['{"msisdn": "9876500001"}\n', "\n"])
    assert partition_key(data) == "9876500001"
    assert partition_key(b"not json") == "unparsable"
