"""CDR feed tools for the local runtime: generate a realistic feed, send it.

``generate`` writes JSON lines (API.md's CDR feed): data sessions, calls and
SMS in a realistic mix, with duplicates (the network re-sending a record),
out-of-order records (started earlier than the ones before them) and unknown
MSISDNs, all decided by ``--seed`` so a feed can be reproduced.
``send`` puts the lines on the CDR stream with PutRecords, 500 per request,
partitioned by MSISDN (one subscriber's records stay in order on one shard).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

PUT_RECORDS_MAX = 500  # Kinesis PutRecords limit
SEND_ATTEMPTS = 5
SOURCES = ("MSC-MUM-01", "MSC-DEL-02", "PGW-BLR-01", "SMSC-CHN-01")


@dataclass(frozen=True)
class FeedMix:
    count: int = 1000
    duplicate_rate: float = 0.02
    out_of_order_rate: float = 0.05
    unknown_rate: float = 0.01
    span: timedelta = timedelta(hours=1)


def generate(
    msisdns: Sequence[str], mix: FeedMix, *, seed: int, end: datetime
) -> Iterator[dict[str, Any]]:
    """``mix.count`` records ending at ``end``, then the duplicates they imply."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    start = end - mix.span
    step = mix.span / max(1, mix.count)
    emitted: list[dict[str, Any]] = []
    for index in range(mix.count):
        at = start + step * index
        if rng.random() < mix.out_of_order_rate:
            at -= timedelta(minutes=rng.randint(5, 50))  # a delayed record
        msisdn = _unknown(rng) if rng.random() < mix.unknown_rate else rng.choice(msisdns)
        record = {"record_id": f"{seed}-{index}", **_usage(rng), "msisdn": msisdn}
        record["source"] = _source_for(record["usage_type"], rng)
        record["started_at"] = at.astimezone(UTC).isoformat(timespec="seconds")
        emitted.append(record)
        yield record
        if rng.random() < mix.duplicate_rate:
            yield dict(rng.choice(emitted))  # the network re-sends a record


def _usage(rng: random.Random) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.55:  # data sessions: mostly small, a few heavy
        down = int(rng.lognormvariate(14, 1.6))
        return {"usage_type": "DATA", "bytes_up": down // 8, "bytes_down": down}
    if kind < 0.9:
        record: dict[str, Any] = {
            "usage_type": "VOICE",
            "duration_seconds": max(1, int(rng.expovariate(1 / 120))),
            "called_number": f"9{rng.randrange(10**9):09d}",
        }
        if rng.random() < 0.05:
            record["roaming"] = True
        return record
    return {"usage_type": "SMS", "count": 1 if rng.random() < 0.9 else rng.randint(2, 4)}


def _source_for(usage_type: str, rng: random.Random) -> str:
    if usage_type == "DATA":
        return "PGW-BLR-01"
    if usage_type == "SMS":
        return "SMSC-CHN-01"
    return rng.choice(SOURCES[:2])


def _unknown(rng: random.Random) -> str:
    return f"60{rng.randrange(10**8):08d}"  # a valid number no subscriber holds


def write_lines(records: Iterable[dict[str, Any]], out: IO[str]) -> int:
    count = 0
    for record in records:
        out.write(json.dumps(record) + "\n")
        count += 1
    return count


def read_lines(lines: Iterable[str]) -> list[bytes]:
    return [line.strip().encode() for line in lines if line.strip()]


def partition_key(data: bytes) -> str:
    try:
        value = json.loads(data).get("msisdn")
    except (ValueError, AttributeError):
        value = None
    return str(value or "unparsable")[:256]


def send(
    kinesis: Any,
    stream_name: str,
    records: Sequence[bytes],
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Puts every record (retrying throttled ones); returns how many were put."""
    done = 0
    for start in range(0, len(records), PUT_RECORDS_MAX):
        pending = [
            {"Data": data, "PartitionKey": partition_key(data)}
            for data in records[start : start + PUT_RECORDS_MAX]
        ]
        for _ in range(SEND_ATTEMPTS):
            response = kinesis.put_records(StreamName=stream_name, Records=pending)
            results = response["Records"]
            failed = [entry for entry, r in zip(pending, results, strict=True) if "ErrorCode" in r]
            done += len(pending) - len(failed)
            if progress is not None:
                progress(done, len(records))
            pending = failed
            if not pending:
                break
        if pending:
            raise RuntimeError(
                f"{len(pending)} record(s) still rejected after {SEND_ATTEMPTS} tries"
            )
    return done


def progress_bar(out: IO[str] = sys.stderr, width: int = 30) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        filled = width * done // max(1, total)
        out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} records")
        if done >= total:
            out.write("\n")
        out.flush()

    return show
