"""Valid activation requests for tests, with the simulators' scripts chosen by
the identifiers' last digits (shared.simulation.script_for): ``"000"`` is the
plain path, ``"99d"`` fails the first d attempts, ``"999"`` fails for good."""

from __future__ import annotations

import itertools
import random
from typing import Any

from shared.validation import luhn_check_digit, verhoeff_check_digit

PLAIN = "000"
AADHAAR_SCRAMBLE = 7919  # prime to 10**7: distinct serials keep distinct numbers
_serials = itertools.count(random.SystemRandom().randrange(10**6, 10**7) * 100)


def next_serial() -> int:
    return next(_serials)


def iccid(serial: int, script: str = PLAIN) -> str:
    """19 digits: 89 (telecom) 91 (India), a serial, the script digits, Luhn."""
    body = f"8991{serial % 10**11:011d}{script}"
    return body + luhn_check_digit(body)


def aadhaar(serial: int, script: str = PLAIN) -> str:
    # The serial's digits scrambled (still one number per serial): taken as they
    # are, they made the number a substring of the ICCID about one time in a
    # hundred, and the tests that look for a leaked KYC number found one.
    body = f"5{serial * AADHAAR_SCRAMBLE % 10**7:07d}{script}"
    return body + verhoeff_check_digit(body)


def pan(script: str = PLAIN) -> str:
    return f"ABCPK7{script}Z"


def msisdn(serial: int) -> str:
    return f"7{serial % 10**9:09d}"


def activation_body(
    serial: int | None = None,
    *,
    kyc_script: str = PLAIN,
    network_script: str = PLAIN,
    kyc_type: str = "AADHAAR",
    plan_id: str | None = "PRE_SMART_299",
    subscriber_type: str = "prepaid",
) -> dict[str, Any]:
    serial = next_serial() if serial is None else serial
    number = aadhaar(serial, kyc_script) if kyc_type == "AADHAAR" else pan(kyc_script)
    body: dict[str, Any] = {
        "iccid": iccid(serial, network_script),
        "msisdn": msisdn(serial),
        "name": "Asha Rao",
        "email": f"asha.{serial}@example.in",
        "state": "KA",
        "subscriber_type": subscriber_type,
        "kyc": {"type": kyc_type, "number": number},
    }
    if plan_id is not None:
        body["plan_id"] = plan_id
    return body
