"""The CDR feed record (shared.rating.Cdr): validation, MSISDN normalization, dedup key."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.rating import Cdr, UsageType
from shared.validation import normalize_msisdn

BASE: dict[str, Any] = {
    "record_id": "r-1",
    "source": "MSC-DEL-01",
    "msisdn": "9876543210",
    "started_at": "2025-03-01T10:00:00+05:30",
}
DATA = {**BASE, "usage_type": "DATA", "bytes_up": 100, "bytes_down": 200}
VOICE = {**BASE, "usage_type": "VOICE", "duration_seconds": 61}
SMS = {**BASE, "usage_type": "SMS", "count": 1}


def test_valid_records_of_each_type() -> None:
    assert Cdr.model_validate(DATA).quantity == 300
    assert Cdr.model_validate(VOICE).quantity == 61
    assert Cdr.model_validate(SMS).quantity == 1


def test_json_feed_record_parses_and_keeps_roaming_and_called_number() -> None:
    raw = json.dumps({**VOICE, "called_number": "+14155550100", "roaming": True, "cell_id": "x"})
    cdr = Cdr.model_validate_json(raw)
    assert cdr.usage_type is UsageType.VOICE
    assert cdr.roaming is True
    assert cdr.called_number == "+14155550100"


def test_started_at_is_stored_in_utc() -> None:
    cdr = Cdr.model_validate(DATA)
    assert cdr.started_at == datetime(2025, 3, 1, 4, 30, tzinfo=UTC)
    assert cdr.started_at.utcoffset() == timedelta(0)


def test_zero_byte_data_session_is_accepted() -> None:
    assert Cdr.model_validate({**DATA, "bytes_up": 0, "bytes_down": 0}).quantity == 0


@pytest.mark.parametrize(
    "record",
    [
        {**DATA, "duration_seconds": 10},  # extra quantity of another type
        {**VOICE, "bytes_up": 1},
        {**SMS, "duration_seconds": 1},
        {k: v for k, v in DATA.items() if k != "bytes_down"},  # DATA needs both directions
        {k: v for k, v in VOICE.items() if k != "duration_seconds"},
        {k: v for k, v in SMS.items() if k != "count"},
        {**DATA, "usage_type": "VOICE"},
        {**DATA, "usage_type": "MMS"},
    ],
)
def test_rejects_wrong_quantity_fields(record: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Cdr.model_validate(record)


@pytest.mark.parametrize(
    "change",
    [
        {"bytes_up": -1},
        {"duration_seconds": 0},
        {"count": 0},
        {"duration_seconds": 60.0},  # quantities are strict ints
        {"duration_seconds": "60"},
        {"duration_seconds": True},
    ],
)
def test_rejects_bad_quantities(change: dict[str, Any]) -> None:
    template = DATA if "bytes_up" in change else SMS if "count" in change else VOICE
    with pytest.raises(ValidationError):
        Cdr.model_validate({**template, **change})


@pytest.mark.parametrize(
    "started_at",
    [
        "2025-03-01T10:00:00",  # naive ISO string
        datetime(2025, 3, 1, 10, 0),  # naive datetime
        1740800000,  # bare epoch
        "yesterday",
    ],
)
def test_rejects_timestamps_without_offset(started_at: Any) -> None:
    with pytest.raises(ValidationError):
        Cdr.model_validate({**VOICE, "started_at": started_at})


def test_accepts_aware_datetime_objects() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    cdr = Cdr.model_validate({**VOICE, "started_at": datetime(2025, 3, 1, 10, 0, tzinfo=ist)})
    assert cdr.started_at == datetime(2025, 3, 1, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "change",
    [
        {"record_id": ""},
        {"record_id": "x" * 129},
        {"source": ""},
        {"source": "s" * 65},
        {"source": "MSC#1"},  # would make source#record_id ambiguous
        {"called_number": ""},
        {"roaming": "yes"},
    ],
)
def test_rejects_bad_identifiers(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Cdr.model_validate({**VOICE, **change})


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("9876543210", "9876543210"),
        ("+919876543210", "9876543210"),
        ("919876543210", "9876543210"),
        ("09876543210", "9876543210"),
        ("9123456789", "9123456789"),  # starts with 91 but is already national
        ("6000000000", "6000000000"),
    ],
)
def test_msisdn_prefixes_are_normalized(raw: str, normalized: str) -> None:
    assert Cdr.model_validate({**SMS, "msisdn": raw}).msisdn == normalized


@pytest.mark.parametrize(
    "msisdn",
    [
        "5876543210",  # mobile numbers start with 6-9
        "987654321",
        "98765432101",
        "+9198765432101",
        "+19876543210",
        "९८७६५४३२१०",  # Devanagari digits are digits to \d, not to us
        "",
    ],
)
def test_rejects_bad_msisdns(msisdn: str) -> None:
    with pytest.raises(ValidationError):
        Cdr.model_validate({**SMS, "msisdn": msisdn})


def test_rejects_numeric_msisdn() -> None:
    with pytest.raises(ValidationError):
        Cdr.model_validate({**SMS, "msisdn": 9876543210})


@given(
    national=st.from_regex(r"\A[6-9][0-9]{9}\Z"),
    prefix=st.sampled_from(["", "+91", "91", "0"]),
)
def test_any_prefixed_mobile_normalizes_to_its_national_form(national: str, prefix: str) -> None:
    assert normalize_msisdn(prefix + national) == national


def test_dedup_key_and_hash() -> None:
    cdr = Cdr.model_validate({**VOICE, "source": "MSC-1", "record_id": "abc#1"})
    assert cdr.dedup_key == "MSC-1#abc#1"
    expected = hashlib.sha256(b"MSC-1#abc#1").hexdigest()[:32]
    assert cdr.dedup_hash == expected
    assert len(cdr.dedup_hash) == 32
    other = Cdr.model_validate({**VOICE, "source": "MSC-2", "record_id": "abc#1"})
    assert other.dedup_hash != cdr.dedup_hash


def test_cdr_is_frozen() -> None:
    cdr = Cdr.model_validate(VOICE)
    with pytest.raises(ValidationError):
        cdr.duration_seconds = 1  # type: ignore[misc]
