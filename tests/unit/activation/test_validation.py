"""Validators for activation identifiers, checked against independent references.

The reference check-digit implementations here are deliberately written another
way than the product's: Luhn with the doubling rule spelled out from the left,
Verhoeff with the published d / p / inv tables typed in (the product derives
them from the dihedral group D5).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shared.validation import (
    PAN_HOLDER_TYPES,
    REGIONS,
    STATE_CODE_ALIASES,
    Aadhaar,
    Iccid,
    IndividualPan,
    Msisdn,
    RegionKind,
    StateCode,
    gst_state_code,
    is_valid_aadhaar,
    is_valid_iccid,
    is_valid_msisdn,
    is_valid_pan,
    is_valid_state_code,
    luhn_check_digit,
    luhn_is_valid,
    mask,
    msisdn_to_e164,
    normalize_aadhaar,
    normalize_iccid,
    normalize_msisdn,
    normalize_pan,
    normalize_state_code,
    pan_holder_type,
    region,
    verhoeff_check_digit,
    verhoeff_is_valid,
)

# ---------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------


def reference_luhn_is_valid(number: str) -> bool:
    """Luhn from the left: double the digits whose distance from the end is odd."""
    total = 0
    for index, char in enumerate(number):
        digit = int(char)
        distance_from_end = len(number) - 1 - index
        if distance_from_end % 2 == 1:
            tens, units = divmod(digit * 2, 10)
            digit = tens + units
        total += digit
    return total % 10 == 0


def reference_luhn_check_digit(body: str) -> str:
    return next(str(c) for c in range(10) if reference_luhn_is_valid(body + str(c)))


# Verhoeff's tables as published (Verhoeff 1969; reproduced in most references).
PUBLISHED_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
PUBLISHED_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
PUBLISHED_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def reference_verhoeff_is_valid(number: str) -> bool:
    c = 0
    digits = [int(ch) for ch in number][::-1]
    for i in range(len(digits)):
        c = PUBLISHED_D[c][PUBLISHED_P[i % 8][digits[i]]]
    return c == 0


def reference_verhoeff_check_digit(body: str) -> str:
    c = 0
    digits = [int(ch) for ch in body][::-1]
    for i in range(len(digits)):
        c = PUBLISHED_D[c][PUBLISHED_P[(i + 1) % 8][digits[i]]]
    return str(PUBLISHED_INV[c])


def one_digit_changed(number: str, position: int, new_digit: str) -> str:
    return number[:position] + new_digit + number[position + 1 :]


def adjacent_swapped(number: str, position: int) -> str:
    chars = list(number)
    chars[position], chars[position + 1] = chars[position + 1], chars[position]
    return "".join(chars)


# ---------------------------------------------------------------------------
# Check digits
# ---------------------------------------------------------------------------

# Published Verhoeff vectors: 236 -> 3 is the worked example in Wikipedia's
# "Verhoeff algorithm" article; the others appear in widely used test suites.
VERHOEFF_VECTORS = [
    ("236", "3"),
    ("12345", "1"),
    ("142857", "0"),
    ("123456789012", "0"),
    ("8473643095483728456789", "2"),
]


@pytest.mark.parametrize(("body", "check"), VERHOEFF_VECTORS)
def test_verhoeff_matches_published_vectors(body: str, check: str) -> None:
    assert reference_verhoeff_check_digit(body) == check
    assert verhoeff_check_digit(body) == check
    assert verhoeff_is_valid(body + check)


def test_verhoeff_rejects_the_neighbours_of_a_published_vector() -> None:
    assert verhoeff_is_valid("2363")
    assert not verhoeff_is_valid("2364")
    assert not verhoeff_is_valid("2336")  # adjacent swap of the check digit
    assert not verhoeff_is_valid("")
    assert not verhoeff_is_valid("7")
    assert not verhoeff_is_valid("23a3")


def test_luhn_matches_the_published_example() -> None:
    # Wikipedia's "Luhn algorithm" worked example.
    assert luhn_check_digit("7992739871") == "3"
    assert luhn_is_valid("79927398713")
    assert not luhn_is_valid("79927398710")
    assert not luhn_is_valid("")
    assert not luhn_is_valid("7992739871x")


@given(st.text(alphabet="0123456789", min_size=1, max_size=30))
def test_check_digits_agree_with_the_references(body: str) -> None:
    assert luhn_check_digit(body) == reference_luhn_check_digit(body)
    assert verhoeff_check_digit(body) == reference_verhoeff_check_digit(body)


@pytest.mark.parametrize("body", ["", "12a4", "١٢٣", "12 3"])
def test_check_digit_bodies_must_be_ascii_digits(body: str) -> None:
    with pytest.raises(ValueError, match="digits 0-9"):
        verhoeff_check_digit(body)
    with pytest.raises(ValueError, match="digits 0-9"):
        luhn_check_digit(body)


# ---------------------------------------------------------------------------
# ICCID
# ---------------------------------------------------------------------------

# Built with the reference Luhn; 8991 is India's ITU country code after the 89.
VALID_ICCIDS = ["89910000123456789019", "8991861000000000018", "8944110068256270054"]


@pytest.mark.parametrize("iccid", VALID_ICCIDS)
def test_valid_iccids(iccid: str) -> None:
    assert reference_luhn_is_valid(iccid)
    assert normalize_iccid(iccid) == iccid
    assert is_valid_iccid(iccid)


def test_iccid_spaces_are_removed() -> None:
    assert normalize_iccid("8991 0000 1234 5678 9019") == "89910000123456789019"


@pytest.mark.parametrize(
    ("iccid", "reason"),
    [
        ("89910000123456789010", "check digit"),  # last digit changed
        ("899100001234567890", "19 or 20"),  # 18 digits
        ("899100001234567890190", "19 or 20"),  # 21 digits
        ("99910000123456789017", "start with 89"),  # valid Luhn, wrong industry id
        ("8991000012345678901X", "digits 0-9"),
        ("8991-0000-1234-5678-9019", "digits 0-9"),
        ("", "digits 0-9"),
    ],
)
def test_invalid_iccids(iccid: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_iccid(iccid)
    assert not is_valid_iccid(iccid)


def test_wrong_prefix_example_really_passes_luhn() -> None:
    # Guards the test above: it must fail for the prefix, not the check digit.
    assert reference_luhn_is_valid("99910000123456789017")


@given(
    st.text(alphabet="0123456789", min_size=16, max_size=17),
    st.data(),
)
def test_luhn_catches_every_single_digit_error_in_an_iccid(body: str, data: st.DataObject) -> None:
    iccid = "89" + body + luhn_check_digit("89" + body)
    assert is_valid_iccid(iccid)
    position = data.draw(st.integers(0, len(iccid) - 1))
    new_digit = data.draw(st.sampled_from("0123456789").filter(lambda d: d != iccid[position]))
    assert not luhn_is_valid(one_digit_changed(iccid, position, new_digit))


@given(st.text(alphabet="0123456789", min_size=19, max_size=19), st.data())
def test_luhn_catches_adjacent_swaps_except_09_and_90(number: str, data: st.DataObject) -> None:
    valid = number[:-1] + luhn_check_digit(number[:-1])
    position = data.draw(st.integers(0, len(valid) - 2))
    pair = valid[position : position + 2]
    swapped = adjacent_swapped(valid, position)
    if pair[0] == pair[1]:
        assert swapped == valid
    elif pair in {"09", "90"}:
        assert luhn_is_valid(swapped)  # Luhn's known blind spot, documented here
    else:
        assert not luhn_is_valid(swapped)


# ---------------------------------------------------------------------------
# MSISDN
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "9876543210",
        "+919876543210",
        "+91 98765 43210",
        "919876543210",
        "09876543210",
        "98765-43210",
        "+91-98765-43210",
    ],
)
def test_msisdn_normalizes_to_the_10_digit_national_form(raw: str) -> None:
    assert normalize_msisdn(raw) == "9876543210"
    assert msisdn_to_e164(raw) == "+919876543210"
    assert is_valid_msisdn(raw)


def test_a_national_number_starting_with_91_keeps_its_digits() -> None:
    assert normalize_msisdn("9198765432") == "9198765432"
    assert msisdn_to_e164("9198765432") == "+919198765432"


@pytest.mark.parametrize("first", "6789")
def test_msisdn_may_start_with_6_to_9(first: str) -> None:
    assert normalize_msisdn(first + "123456789") == first + "123456789"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("5876543210", "starting with 6-9"),  # not a mobile series
        ("0123456789", "starting with 6-9"),
        ("987654321", "starting with 6-9"),  # 9 digits
        ("98765432101", "starting with 6-9"),  # 11 digits without a 0 prefix
        ("+449876543210", r"Indian \(\+91\)"),
        ("+91987654321", "10 digits"),
        ("+9109876543210", "10 digits"),
        ("929876543210", "starting with 6-9"),  # 12 digits but not 91
        ("98765x3210", "digits 0-9"),
        ("९८७६५४३२१०", "digits 0-9"),  # Devanagari digits
        ("", "digits 0-9"),
    ],
)
def test_invalid_msisdns(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_msisdn(raw)
    assert not is_valid_msisdn(raw)


# ---------------------------------------------------------------------------
# Aadhaar
# ---------------------------------------------------------------------------

# Check digits computed with the published-table reference above.
VALID_AADHAARS = ["234567890124", "491827364553", "735198642025", "999999999999"]


@pytest.mark.parametrize("aadhaar", VALID_AADHAARS)
def test_valid_aadhaars(aadhaar: str) -> None:
    assert reference_verhoeff_is_valid(aadhaar)
    assert normalize_aadhaar(aadhaar) == aadhaar
    assert is_valid_aadhaar(aadhaar)


def test_aadhaar_printed_spaces_are_removed() -> None:
    assert normalize_aadhaar("2345 6789 0124") == "234567890124"


@pytest.mark.parametrize(
    ("aadhaar", "reason"),
    [
        ("234567890125", "Verhoeff"),
        ("234567890142", "Verhoeff"),  # last two digits swapped
        ("123456789012" + "0", "12 digits"),  # a valid Verhoeff number, 13 digits
        ("23456789012", "12 digits"),
        ("2345-6789-0124", "digits 0-9"),
        ("23456789012a", "digits 0-9"),
        ("", "digits 0-9"),
    ],
)
def test_invalid_aadhaars(aadhaar: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_aadhaar(aadhaar)
    assert not is_valid_aadhaar(aadhaar)


@pytest.mark.parametrize("first", "01")
def test_aadhaar_cannot_start_with_0_or_1(first: str) -> None:
    body = first + "2345678901"
    aadhaar = body + reference_verhoeff_check_digit(body)
    assert reference_verhoeff_is_valid(aadhaar)  # fails only on the first digit
    with pytest.raises(ValueError, match="cannot start with 0 or 1"):
        normalize_aadhaar(aadhaar)


aadhaar_bodies = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("23456789"),
    st.text(alphabet="0123456789", min_size=10, max_size=10),
)


@given(aadhaar_bodies)
def test_any_body_with_its_check_digit_is_a_valid_aadhaar(body: str) -> None:
    aadhaar = body + verhoeff_check_digit(body)
    assert reference_verhoeff_is_valid(aadhaar)
    assert normalize_aadhaar(aadhaar) == aadhaar


@given(aadhaar_bodies, st.data())
def test_verhoeff_catches_every_single_digit_error(body: str, data: st.DataObject) -> None:
    aadhaar = body + verhoeff_check_digit(body)
    position = data.draw(st.integers(0, 11))
    new_digit = data.draw(st.sampled_from("0123456789").filter(lambda d: d != aadhaar[position]))
    changed = one_digit_changed(aadhaar, position, new_digit)
    assert not verhoeff_is_valid(changed)
    assert not is_valid_aadhaar(changed)


@given(aadhaar_bodies, st.data())
def test_verhoeff_catches_every_adjacent_transposition(body: str, data: st.DataObject) -> None:
    aadhaar = body + verhoeff_check_digit(body)
    positions = [i for i in range(11) if aadhaar[i] != aadhaar[i + 1]]
    if not positions:  # every digit equal: no transposition changes anything
        return
    swapped = adjacent_swapped(aadhaar, data.draw(st.sampled_from(positions)))
    assert not verhoeff_is_valid(swapped)
    assert not is_valid_aadhaar(swapped)


# ---------------------------------------------------------------------------
# PAN
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["ABCPE1234F", "abcpe1234f", " ABCPE 1234F "])
def test_pan_is_normalized_to_upper_case(raw: str) -> None:
    assert normalize_pan(raw) == "ABCPE1234F"
    assert is_valid_pan(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ABCPE1234", "5 letters, 4 digits and 1 letter"),
        ("ABCPE12345", "5 letters, 4 digits and 1 letter"),
        ("ABCP11234F", "5 letters, 4 digits and 1 letter"),
        ("ABCPE1234FF", "5 letters, 4 digits and 1 letter"),
        ("ABCPE१२३४F", "5 letters, 4 digits and 1 letter"),  # Devanagari digits
        ("ABCXE1234F", "not a known type"),
        ("ABCCE1234F", "individual"),  # a company's PAN
    ],
)
def test_invalid_pans(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_pan(raw)
    assert not is_valid_pan(raw)


@pytest.mark.parametrize("holder_type", sorted(PAN_HOLDER_TYPES))
def test_non_individual_pans_need_the_flag(holder_type: str) -> None:
    pan = f"ABC{holder_type}E1234F"
    assert normalize_pan(pan, allow_non_individual=True) == pan
    assert is_valid_pan(pan) == (holder_type == "P")
    assert pan_holder_type(pan) == PAN_HOLDER_TYPES[holder_type]


def test_pan_holder_type_table() -> None:
    assert set(PAN_HOLDER_TYPES) == set("PCHFATBLJG")
    assert PAN_HOLDER_TYPES["P"].startswith("Individual")
    assert not is_valid_pan("ABCXE1234F", allow_non_individual=True)


# ---------------------------------------------------------------------------
# States and union territories
# ---------------------------------------------------------------------------


def test_there_are_28_states_and_8_union_territories() -> None:
    kinds = [r.kind for r in REGIONS.values()]
    assert kinds.count(RegionKind.STATE) == 28
    assert kinds.count(RegionKind.UNION_TERRITORY) == 8


def test_gst_codes_are_unique_two_digit_numbers() -> None:
    codes = [r.gst_code for r in REGIONS.values()]
    assert len(set(codes)) == len(codes)
    assert all(len(c) == 2 and c.isascii() and c.isdigit() for c in codes)
    # The GST list runs 01..38 with 25 (Daman and Diu) and 28 (undivided Andhra
    # Pradesh) retired.
    assert sorted(int(c) for c in codes) == [n for n in range(1, 39) if n not in {25, 28}]


@pytest.mark.parametrize(
    ("code", "gst"),
    [
        ("KA", "29"),
        ("MH", "27"),
        ("DL", "07"),
        ("TN", "33"),
        ("AP", "37"),
        ("TS", "36"),
        ("JK", "01"),
        ("LA", "38"),
        ("DH", "26"),
        ("WB", "19"),
        ("UP", "09"),
        ("GJ", "24"),
    ],
)
def test_well_known_gst_state_codes(code: str, gst: str) -> None:
    assert gst_state_code(code) == gst


@pytest.mark.parametrize(
    ("alias", "current"),
    [("CT", "CG"), ("OR", "OD"), ("TG", "TS"), ("UT", "UK"), ("DN", "DH"), ("DD", "DH")],
)
def test_old_codes_map_to_current_ones(alias: str, current: str) -> None:
    assert normalize_state_code(alias) == current
    assert gst_state_code(alias) == region(current).gst_code


def test_state_code_forms() -> None:
    assert normalize_state_code("ka") == "KA"
    assert normalize_state_code("IN-KA") == "KA"
    assert normalize_state_code("in-ct") == "CG"
    assert region("KA").name == "Karnataka"
    assert region("DL").kind is RegionKind.UNION_TERRITORY
    assert all(alias not in REGIONS for alias in STATE_CODE_ALIASES)
    assert all(target in REGIONS for target in STATE_CODE_ALIASES.values())


@pytest.mark.parametrize("raw", ["XX", "", "IN", "KAR", "29", "IN-"])
def test_unknown_state_codes(raw: str) -> None:
    with pytest.raises(ValueError, match="state must be"):
        normalize_state_code(raw)
    assert not is_valid_state_code(raw)


# ---------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------


def test_mask_keeps_the_last_four() -> None:
    assert mask("234567890124") == "XXXXXXXX0124"
    assert mask("ABCPE1234F") == "XXXXXX234F"
    assert mask("9876543210", visible=2) == "XXXXXXXX10"
    assert mask("9876543210", visible=0) == "XXXXXXXXXX"
    assert mask("9876543210", mask_char="*") == "******3210"


@pytest.mark.parametrize("value", ["", "1", "1234"])
def test_mask_hides_values_no_longer_than_the_visible_part(value: str) -> None:
    assert mask(value) == "X" * len(value)


def test_mask_rejects_negative_visible() -> None:
    with pytest.raises(ValueError, match="visible"):
        mask("1234", visible=-1)


# ---------------------------------------------------------------------------
# Pydantic
# ---------------------------------------------------------------------------


class ActivationFields(BaseModel):
    iccid: Iccid
    msisdn: Msisdn
    aadhaar: Aadhaar
    pan: IndividualPan
    state: StateCode


def test_pydantic_types_normalize() -> None:
    fields = ActivationFields(
        iccid="8991 0000 1234 5678 9019",
        msisdn="+91 98765 43210",
        aadhaar="2345 6789 0124",
        pan="abcpe1234f",
        state="in-ct",
    )
    assert fields.model_dump() == {
        "iccid": "89910000123456789019",
        "msisdn": "9876543210",
        "aadhaar": "234567890124",
        "pan": "ABCPE1234F",
        "state": "CG",
    }


def test_pydantic_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        ActivationFields(
            iccid="89910000123456789010",
            msisdn="9876543210",
            aadhaar="234567890125",
            pan="ABCPE1234F",
            state="KA",
        )
    errors = {e["loc"][0]: e["msg"] for e in caught.value.errors()}
    assert set(errors) == {"iccid", "aadhaar"}
    assert "Luhn" in errors["iccid"]
    assert "Verhoeff" in errors["aadhaar"]
