"""shared.pii: personal data masked in text and structured values; identifiers,
timestamps and amounts left readable."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.pii import find_pii, mask_pii, mask_text
from shared.validation import luhn_check_digit
from tests.pii import plaintext_pii

MASKED = [
    # Aadhaar: 12 digits, first 2-9, plain or 4-4-4
    ("aadhaar 234567890123 given", "aadhaar ********0123 given"),
    ("2345 6789 0123", "**** **** 0123"),
    ("2345-6789-0123", "****-****-0123"),
    # PAN, either case
    ("PAN ABCPE1234F.", "PAN ******234F."),
    ("pan abcpe1234f", "pan ******234f"),
    # mobile numbers: national, +91 / 91 / 0, grouped
    ("line 9876512345 is not provisioned", "line ******2345 is not provisioned"),
    ("+919876543210", "+91******3210"),
    ("+91 98765 43210", "+91 ***** *3210"),
    ("+91-98765-43210", "+91-*****-*3210"),
    ("91 9876543210", "91 ******3210"),
    ("09876543210", "*******3210"),
    ("98765 43210", "***** *3210"),
    ("msisdn=6000000001&x", "msisdn=******0001&x"),
    ("lines/9876543210", "lines/******3210"),
    # e-mail and UPI
    ("to asha.rao@example.com.", "to a***@example.com."),
    ("9876543210@gmail.com", "9***@gmail.com"),
    ("pay asha@okhdfc now", "pay as***@okhdfc now"),
    ("9876543210@paytm", "98***@paytm"),
    # gateway tokens
    ("tok_ab12cd34", "tok_********"),
    ("tok_wallet_ab12cdef1234", "tok_***************1234"),
    ("mandate_0001", "mandate_****"),
    # any value under a secret's name, whatever its shape
    ("token=wlt-9f8e7d6c5b4a3210;", "token=****************3210;"),
    (
        "{'gateway_token': 'abc123', 'vpa': 'asha@okhdfc'}",
        "{'gateway_token': '******', 'vpa': 'as***@okhdfc'}",
    ),
    ("Authorization: Bearer eyJhbGciOi.eyJ.c2ln", "Authorization: Bearer " + "*" * 15 + "c2ln"),
    # cards: a Luhn-valid run, or any number in a card's groups
    ("4111111111111111", "************1111"),
    ("card 4111 1111 1111 1111", "card **** **** **** 1111"),
    ("4111-1111-1111-1112", "****-****-****-1112"),
    ("3782 822463 10005", "**** ****** *0005"),
    # ICCIDs: 19 or 20 digits starting 89
    ("iccid 89910000000000000124", "iccid ****************0124"),
    ("8991000000000000012", "***************0012"),
    # several in one line; a date before a phone number stays readable
    ("2026-11-25 98765 43210", "2026-11-25 ***** *3210"),
    ('{"msisdn":"9876543210","email":"a@b.co"}', '{"msisdn":"******3210","email":"***@b.co"}'),
]

KEPT = [
    "u-3f2a98765432101234567890abcdef12",
    "act-b8699e2e1b5442c29cdc34a66020264d",
    "KYCSIM-987654321012",  # 12 hex digits, all decimal this time
    "HLR-ABCDEF123456",
    "PAY-98765432109876543210",
    "550e8400-e29b-41d4-a716-446655440000",
    "arn:aws:lambda:ap-south-1:987654321098:function:TbCss-dev-Api",
    "INV-u1-2026-10-01",
    "TB/2627/00000001",
    "2026-11-25T10:00:00+05:30",
    "2026-11-25 22:01:02,123+0000",
    "amount_paise 70682",
    "GSTIN 29ABCDE1234F1Z5",  # a PAN inside a GSTIN is the company's, glued to its digits
    "epoch 1764064800000",
    "seq 49590338271490256608559692538361571095921575989136588898",
    "123456789012",  # an AWS account id: an Aadhaar never starts with 0 or 1
    "5876543210",  # no Indian mobile number starts with 5
    "4111111111111112",  # an unbroken run that fails Luhn
    "FunctionName-ABCDE1234FG",
    "XXXXXXXX0124",  # already masked (the API's form)
    "Asha Rao, KA, prepaid",
    "token rejected: invalid token: Not enough segments",  # prose, not a key and value
    "tokens: 5",
]


@pytest.mark.parametrize(("text", "expected"), MASKED)
def test_personal_data_is_masked_keeping_what_support_needs(text: str, expected: str) -> None:
    assert mask_text(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_identifiers_timestamps_and_amounts_stay_readable(text: str) -> None:
    assert mask_text(text) == text
    assert find_pii(text) == []


def test_find_pii_names_what_masking_would_hide() -> None:
    text = "ids act-1 550e8400-e29b-41d4-a716-446655440000 for 9876543210 / a@b.co / tok_abc"
    assert find_pii(text) == ["9876543210", "a@b.co", "tok_abc"]
    assert find_pii(mask_text(text)) == []


def test_structured_values_are_masked_key_by_key() -> None:
    value = {
        "msisdn": 9876543210,  # a number logged as a number
        "kyc": {"type": "AADHAAR", "number": "234567890123"},
        "contacts": ("asha@example.com", ["ABCPE1234F"]),
        "9876543210": "a key too",
        "amount_paise": 70682,
        "rate": 1.5,
        "ok": True,
        "none": None,
        "error": ValueError("line 9876543210 is not provisioned"),
    }
    assert mask_pii(value) == {
        "msisdn": "******3210",
        "kyc": {"type": "AADHAAR", "number": "********0123"},
        "contacts": ["a***@example.com", ["******234F"]],
        "******3210": "a key too",
        "amount_paise": 70682,
        "rate": 1.5,
        "ok": True,
        "none": None,
        "error": "line ******3210 is not provisioned",
    }


def test_a_json_body_in_a_string_is_masked_as_the_structure_it_holds() -> None:
    body = {"method": "WALLET", "token": "wlt-9f8e7d6c5b4a3210", "msisdn": "9876543210"}
    masked = mask_pii({"body": json.dumps(body), "note": "{not json 9876543210}"})
    assert json.loads(masked["body"]) == {
        "method": "WALLET",
        "token": "****************3210",
        "msisdn": "******3210",
    }
    assert masked["note"] == "{not json ******3210}"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("Authorization", ["Bearer eyJhbGciOi.eyJzdWIi.c2ln"], ["*" * 27 + "c2ln"]),
        ("token", {"card": "opaque-gateway-value-1234"}, {"card": "*" * 21 + "1234"}),
        ("token", "opaque-gateway-value-1234", "*" * 21 + "1234"),
        ("gateway_token", "short", "*****"),
        ("mandateToken", "mandate_abcdefghijkl9876", "mandate_" + "*" * 12 + "9876"),
        ("vpa", "asha@okhdfc", "as***@okhdfc"),
        ("Authorization", "Bearer eyJhbGciOi.eyJzdWIi.c2ln", "*" * 27 + "c2ln"),
    ],
)
def test_values_under_secret_keys_are_masked_whatever_their_shape(
    key: str, value: Any, expected: Any
) -> None:
    assert mask_pii({key: value}) == {key: expected}


# --- properties --------------------------------------------------------------------------

FILLER = st.text(alphabet="abcdefghij KLMNOP.,:;()[]{}\"'/=!?", max_size=30)
mobiles = st.builds(
    lambda first, rest, prefix: prefix + first + rest,
    st.sampled_from("6789"),
    st.text(alphabet="0123456789", min_size=9, max_size=9),
    st.sampled_from(["", "+91", "+91 ", "91", "0"]),
)
aadhaars = st.builds(
    lambda first, rest, sep: sep.join(re.findall("....", first + rest)),
    st.sampled_from("23456789"),
    st.text(alphabet="0123456789", min_size=11, max_size=11),
    st.sampled_from(["", " ", "-"]),
)
cards = st.builds(
    lambda body: body + luhn_check_digit(body),
    st.text(alphabet="0123456789", min_size=12, max_size=18),
)
pans = st.from_regex(r"[A-Z]{5}[0-9]{4}[A-Z]", fullmatch=True)
emails = st.from_regex(r"[a-z][a-z0-9.]{1,10}@[a-z]{2,8}\.(com|in|co\.in)", fullmatch=True)
personal = st.one_of(mobiles, aadhaars, cards, pans, emails)


def national_part(value: str) -> str:
    """What must not survive: the digits past a phone's prefix, or the value."""
    digits = re.sub(r"\D", "", value)
    if "@" in value or not digits:
        return value
    return digits[-10:] if len(digits) in (10, 11, 12) and digits[-10] in "6789" else digits


@given(before=FILLER, value=personal, after=FILLER)
def test_no_personal_value_survives_masking_wherever_it_sits(
    before: str, value: str, after: str
) -> None:
    masked = mask_text(f"{before} {value} {after}")
    assert value not in masked
    assert national_part(value) not in re.sub(r"[^0-9A-Za-z@.]", "", masked)


@given(value=personal, key=st.sampled_from(["note", "detail", "items"]))
def test_no_personal_value_survives_in_a_structure(value: str, key: str) -> None:
    # No digits beside the value's: a PAN's four ("2026") must not meet a year.
    structure: Any = {key: [{"text": f"for {value}"}, value], "at": "yesterday"}
    assert national_part(value) not in json.dumps(mask_pii(structure))


@given(st.text(max_size=80))
def test_masking_twice_changes_nothing(text: str) -> None:
    once = mask_text(text)
    assert mask_text(once) == once
    assert find_pii(once) == []


# --- the leak finder the log tests use (tests/pii.py) ---------------------------------


@pytest.mark.parametrize(
    ("known", "line"),
    [
        ("9876543210", "sent to +91 98765 43210"),
        ("9876543210", '{"to": "+919876543210"}'),
        ("234567890123", "aadhaar 2345-6789-0123"),
        ("ABCPE1234F", "pan abcpe1234f"),
        ("asha@okhdfc", "vpa ASHA@OKHDFC"),
        ("wlt-9f8e7d6c5b4a3210", "token=wlt-9f8e7d6c5b4a3210;"),
    ],
)
def test_the_leak_finder_knows_the_usual_spellings(known: str, line: str) -> None:
    assert plaintext_pii(line, [known], generic=False) == [known]
    assert plaintext_pii(mask_text(line), [known]) == []


def test_the_leak_finder_reads_json_lines_so_escapes_hide_nothing() -> None:
    line = json.dumps({"exception": "Traceback...\n9876543210 not provisioned"})
    assert "\\n9876543210" in line  # glued to the "n" of the escape in the raw text
    assert plaintext_pii(line) == ["9876543210"]
    assert plaintext_pii(json.dumps(mask_pii(json.loads(line)))) == []


def test_the_leak_finder_does_not_find_a_number_inside_a_longer_one() -> None:
    assert plaintext_pii("seq 4959033827149876543210256608", ["9876543210"]) == []
