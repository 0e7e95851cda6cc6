"""The soak's input and its reference: if these were wrong, the soak's
invariants would compare the system with the wrong figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import pairwise

from tests.soak.reference import compute, pulses_by_plan
from tests.soak.workload import PROFILES, Line, build

START = datetime(2027, 1, 31, 18, 30, tzinfo=UTC)  # 1 Feb 00:00 IST
END = datetime(2027, 2, 28, 18, 30, tzinfo=UTC)
POSTPAID = Line("u1", "8000000001", "8991", "postpaid", "POST_BASIC_399")
PREPAID = Line("u2", "8000000002", "8991", "prepaid", "PRE_VALUE_719")


def _record(record_id: str, msisdn: str, source: str = "MSC-1", **usage: object) -> bytes:
    body = {"record_id": record_id, "source": source, "msisdn": "+91" + msisdn, **usage}
    return json.dumps(body).encode()


def test_units_are_pulse_rounded_per_record_by_the_plan_family() -> None:
    records = [
        _record("a", POSTPAID.msisdn, usage_type="VOICE", duration_seconds=61),  # 2 x 60 s
        _record("b", PREPAID.msisdn, usage_type="VOICE", duration_seconds=61),  # per second
        _record("c", POSTPAID.msisdn, usage_type="DATA", bytes_up=1, bytes_down=10_240),
        _record("d", PREPAID.msisdn, usage_type="SMS", count=3),
    ]
    reference = compute([POSTPAID, PREPAID], records)
    assert reference.units["u1"] == {"VOICE": 120, "DATA": 20_480}
    assert reference.units["u2"] == {"VOICE": 61, "SMS": 3}
    assert reference.rated_records == 4


def test_a_record_counts_once_by_source_and_record_id_and_unknown_numbers_are_set_apart() -> None:
    sms = {"usage_type": "SMS", "count": 1}
    records = [
        _record("a", POSTPAID.msisdn, **sms),
        _record("a", POSTPAID.msisdn, **sms),  # re-sent
        _record("a", POSTPAID.msisdn, source="MSC-2", **sms),  # another element's "a"
        _record("z", "6000000009", **sms),
    ]
    reference = compute([POSTPAID], records)
    assert reference.units["u1"]["SMS"] == 2
    assert (reference.duplicates, reference.rated_records) == (1, 2)
    assert reference.unknown_records == {"MSC-1#z"}


def test_plan_families_share_their_pulses_so_a_plan_change_keeps_the_reference_exact() -> None:
    pulses = pulses_by_plan()
    assert len({pulses[p] for p in ("POST_BASIC_399", "POST_PLUS_599", "POST_BUSINESS_1499")}) == 1
    assert pulses["PRE_VALUE_719"] == pulses["PRE_ANNUAL_2999"]


def test_the_quick_workload_has_the_issue_mix_and_is_reproducible() -> None:
    workload = build(PROFILES["quick"], START, END)
    again = build(PROFILES["quick"], START, END)
    assert list(workload.all_records) == list(again.all_records)
    reference = compute(workload.lines, workload.all_records)
    assert 0.03 < reference.duplicates / reference.sent < 0.07  # about 5 %
    late = sum(len(step.late) for step in workload.steps)
    assert late > 0
    times = [json.loads(r)["started_at"] for step in workload.steps for r in step.records]
    out_of_order = sum(1 for before, after in pairwise(times) if after < before)
    assert out_of_order / len(times) > 0.05  # about 10 % started before the one sent before them
    assert all(START.isoformat() < t < END.isoformat() for t in times)
    assert abs(workload.cdrs_sent - PROFILES["quick"].cdrs) < PROFILES["quick"].cdrs * 0.03
