"""What the system must hold after the soak, computed from the deduplicated
input alone: no rating engine, no store, no handler.

Rules taken from the contract, not the code: the dedup key is (source,
record_id) (API.md's CDR feed); a record for an unknown number goes to the
anomaly queue; each record's usage is rounded UP to whole pulses of the
subscriber's plan (data: bytes up + down; voice: seconds; SMS: messages, pulse
one), pulses read from the plan catalog's data file.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.soak.workload import Line

CATALOG = Path(__file__).resolve().parents[2] / "shared" / "data" / "plans.json"
USAGE_TYPES = ("DATA", "VOICE", "SMS")


@dataclass(frozen=True)
class Pulses:
    data_bytes: int
    voice_seconds: int

    def units(self, record: Mapping[str, object]) -> int:
        kind = record["usage_type"]
        if kind == "DATA":
            used = int(str(record["bytes_up"])) + int(str(record["bytes_down"]))
            return self.data_bytes * math.ceil(used / self.data_bytes)
        if kind == "VOICE":
            seconds = int(str(record["duration_seconds"]))
            return self.voice_seconds * math.ceil(seconds / self.voice_seconds)
        return int(str(record["count"]))


def catalog() -> dict[str, dict[str, Any]]:
    """The plan catalog's data file, by plan id."""
    plans = json.loads(CATALOG.read_text())
    plans = plans["plans"] if isinstance(plans, dict) else plans
    return {plan["plan_id"]: plan for plan in plans}


def pulses_by_plan() -> dict[str, Pulses]:
    return {
        plan_id: Pulses(plan["overage"]["data_pulse_bytes"], plan["overage"]["voice_pulse_seconds"])
        for plan_id, plan in catalog().items()
    }


@dataclass
class Reference:
    """Billable units per user and usage type, and the feed's counts."""

    units: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    rated_records: int = 0  # unique records of known lines: one CDR marker each
    unknown_records: set[str] = field(default_factory=set)  # their dedup keys
    duplicates: int = 0
    sent: int = 0


def compute(lines: Iterable[Line], records: Iterable[bytes]) -> Reference:
    pulses = pulses_by_plan()
    by_msisdn = {"+91" + line.msisdn: line for line in lines}
    reference = Reference()
    seen: set[str] = set()
    for raw in records:
        reference.sent += 1
        record = json.loads(raw)
        key = f"{record['source']}#{record['record_id']}"
        if key in seen:
            reference.duplicates += 1
            continue
        seen.add(key)
        line = by_msisdn.get(record["msisdn"])
        if line is None:
            reference.unknown_records.add(key)
            continue
        # Plan changes stay within a family, whose plans share their pulses.
        reference.units[line.user_id][record["usage_type"]] += pulses[line.plan_id].units(record)
        reference.rated_records += 1
    return reference
