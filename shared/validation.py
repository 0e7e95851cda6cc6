"""Validators for the identifiers an activation carries: ICCID, MSISDN, Aadhaar,
PAN and the Indian state / union territory code (with its GST state code).

Every ``normalize_*`` function returns the canonical form or raises
``ValueError`` with a message naming the field, so it plugs straight into
pydantic (see the ``Annotated`` aliases at the end: ``Iccid``, ``Msisdn``...).
Every ``is_valid_*`` function is the boolean twin for callers that branch.

Digits are matched with ``[0-9]`` on purpose: Python's ``str.isdigit`` and
``\\d`` also accept other scripts' digits (Devanagari, superscripts), which
no downstream system would accept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated

from pydantic import AfterValidator

# ---------------------------------------------------------------------------
# Check digits
# ---------------------------------------------------------------------------

_DIGITS = re.compile(r"[0-9]+")


def _require_digits(value: str, what: str) -> None:
    if not _DIGITS.fullmatch(value):
        raise ValueError(f"{what} must contain only the digits 0-9")


def luhn_check_digit(body: str) -> str:
    """The Luhn (ISO/IEC 7812-1 "mod 10") check digit to append to ``body``.

    Walking from the right of the body, every first, third... digit is doubled
    (the check digit will sit to its right), and 9 is subtracted from doubles
    above 9; the check digit brings the sum to a multiple of 10.
    """
    _require_digits(body, "Luhn body")
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return str(-total % 10)


def luhn_is_valid(number: str) -> bool:
    """True when the last digit of ``number`` is the Luhn check digit of the rest."""
    if len(number) < 2 or not _DIGITS.fullmatch(number):
        return False
    return luhn_check_digit(number[:-1]) == number[-1]


def _dihedral_product(left: int, right: int) -> int:
    """Multiplication in the dihedral group D5, the heart of Verhoeff's scheme.

    Elements 0-4 are the rotations r^k, 5-9 the reflections s*r^k; composing
    them by these four rules yields Verhoeff's published ``d`` table.
    """
    left_rotation, right_rotation = left < 5, right < 5
    if left_rotation and right_rotation:
        return (left + right) % 5
    if left_rotation:
        return 5 + (left + right) % 5
    if right_rotation:
        return 5 + (left - right) % 5
    return (left - right) % 5


_VERHOEFF_D: tuple[tuple[int, ...], ...] = tuple(
    tuple(_dihedral_product(j, k) for k in range(10)) for j in range(10)
)
# Verhoeff's position permutation p1 = (0 1 5 8 9 4 2 7)(3 6); row i of the
# p table is p1 applied i times (its order is 8, so positions repeat mod 8).
_VERHOEFF_P1 = (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)


def _verhoeff_p_rows() -> tuple[tuple[int, ...], ...]:
    rows = [tuple(range(10))]
    for _ in range(7):
        rows.append(tuple(_VERHOEFF_P1[digit] for digit in rows[-1]))
    return tuple(rows)


_VERHOEFF_P = _verhoeff_p_rows()
# Inverse in D5: a rotation r^k undoes with r^(5-k); every reflection is its own inverse.
_VERHOEFF_INV: tuple[int, ...] = tuple((5 - k) % 5 if k < 5 else k for k in range(10))


def _verhoeff_fold(digits: str, offset: int) -> int:
    """Fold the digits from the right; ``offset`` is 1 when the check digit is still absent."""
    check = 0
    for position, char in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[(position + offset) % 8][int(char)]]
    return check


def verhoeff_check_digit(body: str) -> str:
    """The Verhoeff check digit to append to ``body`` (Verhoeff, 1969).

    Unlike Luhn it detects every single-digit error and every transposition of
    two adjacent digits; UIDAI uses it for the last digit of an Aadhaar number.
    """
    _require_digits(body, "Verhoeff body")
    return str(_VERHOEFF_INV[_verhoeff_fold(body, offset=1)])


def verhoeff_is_valid(number: str) -> bool:
    """True when ``number`` (check digit included, last) folds to 0 under Verhoeff."""
    if len(number) < 2 or not _DIGITS.fullmatch(number):
        return False
    return _verhoeff_fold(number, offset=0) == 0


def _is_valid(normalizer: Callable[[str], str], value: str) -> bool:
    try:
        normalizer(value)
    except (ValueError, TypeError):
        return False
    return True


# ---------------------------------------------------------------------------
# ICCID
# ---------------------------------------------------------------------------

ICCID_LENGTHS = (19, 20)
# ITU-T E.118: the ICCID starts with the Major Industry Identifier 89
# ("telecommunications"). Every SIM ever issued carries it, so anything else is
# a typo or a different identifier (an IMSI, an IMEI) keyed into the wrong field.
ICCID_PREFIX = "89"


def normalize_iccid(value: str) -> str:
    """The ICCID with spaces removed, after checking ITU-T E.118's rules.

    19 or 20 digits, starting with "89", the last digit the Luhn check digit of
    the others. The country code that follows (91 for India) is not enforced:
    the operator's inventory is the authority on which SIMs it owns.
    """
    iccid = value.replace(" ", "")
    _require_digits(iccid, "ICCID")
    if len(iccid) not in ICCID_LENGTHS:
        raise ValueError(f"ICCID must have 19 or 20 digits, got {len(iccid)}")
    if not iccid.startswith(ICCID_PREFIX):
        raise ValueError("ICCID must start with 89 (the telecom industry identifier)")
    if not luhn_is_valid(iccid):
        raise ValueError("ICCID check digit (Luhn) does not match")
    return iccid


def is_valid_iccid(value: str) -> bool:
    return _is_valid(normalize_iccid, value)


# ---------------------------------------------------------------------------
# MSISDN (Indian mobile number)
# ---------------------------------------------------------------------------

INDIA_COUNTRY_CODE = "91"
_NATIONAL_MOBILE = re.compile(r"[6-9][0-9]{9}")


def _strip_msisdn_prefix(digits: str) -> str:
    """Drop the trunk prefix "0" or the country code "91", judged by length.

    Length decides because a national number may itself start with 91
    (9198765432 is a valid 10-digit number, not "+91" plus 8 digits).
    """
    if len(digits) == 12 and digits.startswith(INDIA_COUNTRY_CODE):
        return digits[2:]
    if len(digits) == 11 and digits.startswith("0"):
        return digits[1:]
    return digits


def normalize_msisdn(value: str) -> str:
    """The 10-digit national form of an Indian mobile number.

    Accepts an optional "+91", "91" or "0" prefix and spaces or hyphens
    between groups. National mobile numbers have 10 digits and start with 6,
    7, 8 or 9 (National Numbering Plan; 1-5 lead fixed-line and special codes).
    """
    compact = re.sub(r"[ -]", "", value)
    if compact.startswith("+"):
        if not compact.startswith("+" + INDIA_COUNTRY_CODE):
            raise ValueError("MSISDN must be an Indian (+91) number")
        compact = compact[1:]
        if len(compact) != 12:
            raise ValueError("MSISDN after +91 must have 10 digits")
    _require_digits(compact, "MSISDN")
    national = _strip_msisdn_prefix(compact)
    if not _NATIONAL_MOBILE.fullmatch(national):
        raise ValueError("MSISDN must be a 10-digit Indian mobile number starting with 6-9")
    return national


def is_valid_msisdn(value: str) -> bool:
    return _is_valid(normalize_msisdn, value)


def msisdn_to_e164(value: str) -> str:
    """E.164 form "+91XXXXXXXXXX" (what SMS gateways such as SNS expect)."""
    return f"+{INDIA_COUNTRY_CODE}{normalize_msisdn(value)}"


# ---------------------------------------------------------------------------
# Aadhaar
# ---------------------------------------------------------------------------


def normalize_aadhaar(value: str) -> str:
    """The 12-digit Aadhaar number with the spaces of its printed form removed.

    UIDAI's rules: 12 digits, the first never 0 or 1, the last the Verhoeff
    check digit of the first eleven. (A valid shape is not proof of
    existence; that is the KYC provider's job.)
    """
    aadhaar = value.replace(" ", "")
    _require_digits(aadhaar, "Aadhaar number")
    if len(aadhaar) != 12:
        raise ValueError(f"Aadhaar number must have 12 digits, got {len(aadhaar)}")
    if aadhaar[0] in "01":
        raise ValueError("Aadhaar number cannot start with 0 or 1")
    if not verhoeff_is_valid(aadhaar):
        raise ValueError("Aadhaar number check digit (Verhoeff) does not match")
    return aadhaar


def is_valid_aadhaar(value: str) -> bool:
    return _is_valid(normalize_aadhaar, value)


# ---------------------------------------------------------------------------
# PAN
# ---------------------------------------------------------------------------

# The 4th character of a PAN says who holds it (Income Tax Department).
PAN_HOLDER_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "P": "Individual (person)",
        "C": "Company",
        "H": "Hindu Undivided Family (HUF)",
        "F": "Firm / Limited Liability Partnership",
        "A": "Association of Persons (AOP)",
        "T": "Trust",
        "B": "Body of Individuals (BOI)",
        "L": "Local Authority",
        "J": "Artificial Juridical Person",
        "G": "Government",
    }
)
PAN_INDIVIDUAL = "P"
_PAN_SHAPE = re.compile(r"[A-Z]{5}[0-9]{4}[A-Z]")


def normalize_pan(value: str, *, allow_non_individual: bool = False) -> str:
    """The PAN in upper case, after checking its shape and holder type.

    Shape: 5 letters, 4 digits, 1 letter (e.g. ABCPE1234F). The 4th letter is
    the holder type (:data:`PAN_HOLDER_TYPES`); a mobile subscriber's KYC is
    an individual's, so only "P" passes unless ``allow_non_individual``.
    """
    pan = value.replace(" ", "").upper()
    if not _PAN_SHAPE.fullmatch(pan):
        raise ValueError("PAN must be 5 letters, 4 digits and 1 letter (e.g. ABCPE1234F)")
    holder_type = pan[3]
    if holder_type not in PAN_HOLDER_TYPES:
        raise ValueError(f"PAN holder type {holder_type!r} (4th character) is not a known type")
    if holder_type != PAN_INDIVIDUAL and not allow_non_individual:
        raise ValueError(
            f"PAN must belong to an individual (4th character P), "
            f"got {PAN_HOLDER_TYPES[holder_type]}"
        )
    return pan


def is_valid_pan(value: str, *, allow_non_individual: bool = False) -> bool:
    try:
        normalize_pan(value, allow_non_individual=allow_non_individual)
    except ValueError:
        return False
    return True


def pan_holder_type(value: str) -> str:
    """The meaning of a PAN's holder-type letter, e.g. "Company" for ABCCE1234F."""
    return PAN_HOLDER_TYPES[normalize_pan(value, allow_non_individual=True)[3]]


# ---------------------------------------------------------------------------
# States and union territories
# ---------------------------------------------------------------------------


class RegionKind(StrEnum):
    STATE = "STATE"
    UNION_TERRITORY = "UNION_TERRITORY"


@dataclass(frozen=True, slots=True)
class IndianRegion:
    """One state or union territory.

    ``code`` is the ISO 3166-2:IN subdivision code without "IN-";
    ``gst_code`` is the 2-digit state code that opens a GSTIN and names the
    place of supply on a tax invoice.
    """

    code: str
    name: str
    kind: RegionKind
    gst_code: str


_S, _UT = RegionKind.STATE, RegionKind.UNION_TERRITORY

# ISO 3166-2:IN after the ISO 3166/MA's 2023 change that aligned CT, OR, TG and
# UT with the vehicle codes CG, OD, TS and UK (28 states, 8 union territories).
# GST codes: the GST portal's state code list (97 "Other Territory" and 99
# "Centre Jurisdiction" are not places, so they have no entry here).
REGIONS: Mapping[str, IndianRegion] = MappingProxyType(
    {
        region.code: region
        for region in (
            IndianRegion("AN", "Andaman and Nicobar Islands", _UT, "35"),
            # GST 28 was undivided Andhra Pradesh; 37 is the state since 2014.
            IndianRegion("AP", "Andhra Pradesh", _S, "37"),
            IndianRegion("AR", "Arunachal Pradesh", _S, "12"),
            IndianRegion("AS", "Assam", _S, "18"),
            IndianRegion("BR", "Bihar", _S, "10"),
            IndianRegion("CH", "Chandigarh", _UT, "04"),
            IndianRegion("CG", "Chhattisgarh", _S, "22"),
            # Merged on 2020-01-26; GST 26 was Dadra and Nagar Haveli, 25 (Daman
            # and Diu) was folded into it.
            IndianRegion("DH", "Dadra and Nagar Haveli and Daman and Diu", _UT, "26"),
            IndianRegion("DL", "Delhi", _UT, "07"),
            IndianRegion("GA", "Goa", _S, "30"),
            IndianRegion("GJ", "Gujarat", _S, "24"),
            IndianRegion("HP", "Himachal Pradesh", _S, "02"),
            IndianRegion("HR", "Haryana", _S, "06"),
            IndianRegion("JH", "Jharkhand", _S, "20"),
            IndianRegion("JK", "Jammu and Kashmir", _UT, "01"),
            IndianRegion("KA", "Karnataka", _S, "29"),
            IndianRegion("KL", "Kerala", _S, "32"),
            IndianRegion("LA", "Ladakh", _UT, "38"),
            IndianRegion("LD", "Lakshadweep", _UT, "31"),
            IndianRegion("MH", "Maharashtra", _S, "27"),
            IndianRegion("ML", "Meghalaya", _S, "17"),
            IndianRegion("MN", "Manipur", _S, "14"),
            IndianRegion("MP", "Madhya Pradesh", _S, "23"),
            IndianRegion("MZ", "Mizoram", _S, "15"),
            IndianRegion("NL", "Nagaland", _S, "13"),
            IndianRegion("OD", "Odisha", _S, "21"),
            IndianRegion("PB", "Punjab", _S, "03"),
            IndianRegion("PY", "Puducherry", _UT, "34"),
            IndianRegion("RJ", "Rajasthan", _S, "08"),
            IndianRegion("SK", "Sikkim", _S, "11"),
            IndianRegion("TN", "Tamil Nadu", _S, "33"),
            IndianRegion("TR", "Tripura", _S, "16"),
            IndianRegion("TS", "Telangana", _S, "36"),
            IndianRegion("UK", "Uttarakhand", _S, "05"),
            IndianRegion("UP", "Uttar Pradesh", _S, "09"),
            IndianRegion("WB", "West Bengal", _S, "19"),
        )
    }
)

# Codes people (and older systems) still send, mapped to the current ISO code.
# Most are ISO's own earlier codes; UA is Uttarakhand's old vehicle code.
STATE_CODE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "CT": "CG",  # ISO code until 2023
        "OR": "OD",  # ISO code until 2023 (Orissa renamed Odisha in 2011)
        "TG": "TS",  # ISO code 2014-2023
        "UT": "UK",  # ISO code until 2023
        "UL": "UK",  # ISO code while the state was called Uttaranchal
        "UA": "UK",  # earlier vehicle registration code
        "DN": "DH",  # Dadra and Nagar Haveli, before the 2020 merger
        "DD": "DH",  # Daman and Diu, before the 2020 merger
    }
)


def normalize_state_code(value: str) -> str:
    """The current ISO 3166-2:IN code (without "IN-") for a state or UT.

    Accepts lower case, an "IN-" prefix and the aliases in
    :data:`STATE_CODE_ALIASES`, so "in-ct" becomes "CG".
    """
    code = value.strip().upper().removeprefix("IN-")
    code = STATE_CODE_ALIASES.get(code, code)
    if code not in REGIONS:
        raise ValueError(f"state must be an Indian state or union territory code, got {value!r}")
    return code


def is_valid_state_code(value: str) -> bool:
    return _is_valid(normalize_state_code, value)


def region(value: str) -> IndianRegion:
    """The state or UT for a code (aliases accepted)."""
    return REGIONS[normalize_state_code(value)]


def gst_state_code(value: str) -> str:
    """The 2-digit GST state code for the place of supply, e.g. "29" for KA."""
    return region(value).gst_code


# ---------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------


def mask(value: str, visible: int = 4, *, mask_char: str = "X") -> str:
    """Hide all but the last ``visible`` characters: "XXXXXXXX0124".

    The length is kept (support staff recognise the shape of the number). A
    value no longer than ``visible`` is masked entirely, since showing it
    would show all of it.
    """
    if visible < 0:
        raise ValueError("visible must not be negative")
    if len(value) <= visible:
        return mask_char * len(value)
    hidden = len(value) - visible
    return mask_char * hidden + value[hidden:]


# ---------------------------------------------------------------------------
# Pydantic field types
# ---------------------------------------------------------------------------

Iccid = Annotated[str, AfterValidator(normalize_iccid)]
Msisdn = Annotated[str, AfterValidator(normalize_msisdn)]
Aadhaar = Annotated[str, AfterValidator(normalize_aadhaar)]
IndividualPan = Annotated[str, AfterValidator(normalize_pan)]
StateCode = Annotated[str, AfterValidator(normalize_state_code)]
