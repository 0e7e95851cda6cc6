"""Personal data (PII) masked out of text and structured values, for logs.

What is masked, wherever it appears in a string (or an int):

- Aadhaar numbers: 12 digits, the first 2-9, plain or in 4-4-4 groups;
- PANs: 5 letters, 4 digits, 1 letter (one case throughout);
- Indian mobile numbers: 10 digits starting 6-9, with or without +91 / 91 / 0,
  plain or grouped (98765 43210);
- e-mail addresses and UPI VPAs (name@handle);
- payment gateway tokens written ``tok_...`` or ``mandate_...``;
- card-like numbers: 13-19 digits passing the Luhn check, or any number laid
  out in a card's 4-digit groups (a mistyped card is still a card);
- ICCIDs (19-20 digits starting 89). A SIM serial is an identifier rather than
  personal data, but it is what a SIM-swap fraud needs next to a name, it passes
  Luhn like a card, and the API already shows it masked: logs do the same.

Values under keys that name a secret (``token``, ``*_token``, ``vpa``,
``mandate``, ``authorization``) are masked whatever their shape, in structures
and in text that writes them as ``key=value`` or ``'key': value``: a gateway
token may be any opaque string. Names are not recognised (no handler logs one;
a request logged whole with POWERTOOLS_LOGGER_LOG_EVENT would show it).

Support staff keep what identifies without revealing: the last 4 digits, the
country prefix of a phone, the first letter and the domain of an e-mail, the
first 2 characters and the handle of a VPA ("******3210", "a***@example.com").

Deliberately kept: the project's ids (``u-<hex>``, ``act-<hex>``, ``PAY-<hex>``,
``KYCSIM-<hex>``, ``INV-<user>-YYYY-MM-DD``...), UUIDs, ARNs' account ids, ISO
timestamps, amounts in paise. Digits glued to letters belong to an id or a word
(``a1234...`` in a hex id) and are left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from shared.validation import is_valid_msisdn, luhn_is_valid, mask

MASK_CHAR = "*"
VISIBLE_DIGITS = 4
NATIONAL_MOBILE_DIGITS = 10
# Opaque secrets show their last characters only when those are a small part of them.
OPAQUE_VISIBLE_FROM = 12

_EDGE = r"(?<![0-9A-Za-z])"  # not glued to a letter or digit on the left
_END = r"(?![0-9A-Za-z])"
_HEX = "[0-9A-Fa-f]"

# Never masked: identifiers whose digits could pass for a personal number.
_KEEP = "|".join(
    (
        rf"{_EDGE}{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}{_END}",  # UUID
        r"\barn:[a-z0-9-]+:[a-z0-9-]*:[a-z0-9-]*:[0-9]{12}(?=[:/])",  # up to the account id
        # The project's ids with 12-20 upper-case hex digits (all decimal now and then).
        rf"{_EDGE}(?:KYCSIM|HLR|CN|PAY|DISC|TXN|RFND|EVT)-[0-9A-F]{{12,20}}{_END}",
    )
)
# E-mail and VPA matches start where their name does (not inside it: no rescans).
_EMAIL = (
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9])"
)
_VPA = (
    r"(?<![A-Za-z0-9._-])[A-Za-z0-9][A-Za-z0-9._-]{1,255}"
    r"@[A-Za-z][A-Za-z0-9]{1,63}(?![A-Za-z0-9])(?!\.[A-Za-z])"
)
_TOKEN = rf"{_EDGE}(?:tok|mandate)_[A-Za-z0-9_.:-]+"
# A secret written as a key and its value: "token=...", a quoted key as in JSON or
# a dict's repr ('vpa': '...'), an Authorization header. The value is masked
# whatever its shape. ("invalid token: Not enough segments" is prose: kept.)
_HIDDEN_KEY = r"(?i:[a-z_]*(?:token|vpa|mandate))"
_HIDDEN_VALUE = r"[A-Za-z0-9][^\s\"',;}\]]*"
_KEY_AND_VALUE = (
    rf"\b{_HIDDEN_KEY}(?:[\"']\s*:\s*[\"']?|\s*=\s*[\"']?){_HIDDEN_VALUE}"
    rf"|\b(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?:Bearer\s+)?(?!Bearer\b){_HIDDEN_VALUE}"
)
_VALUE_START = re.compile(r"[:=]\s*[\"']?(?:Bearer\s+)?")
_PAN = rf"{_EDGE}(?:[A-Z]{{5}}[0-9]{{4}}[A-Z]|[a-z]{{5}}[0-9]{{4}}[a-z]){_END}"
# Digits in groups separated by one space or dash, with an optional leading "+":
# which part of it (if any) is personal is decided by _mask_number.
_NUMBER = rf"{_EDGE}\+?[0-9]+(?:[ -][0-9]+)*{_END}"

_PII = re.compile(
    f"(?P<keep>{_KEEP})|(?P<pair>{_KEY_AND_VALUE})|(?P<email>{_EMAIL})|(?P<vpa>{_VPA})"
    f"|(?P<token>{_TOKEN})|(?P<pan>{_PAN})|(?P<number>{_NUMBER})"
)
_DIGITS = re.compile(r"[0-9]+")
_DIGIT_CHARS = frozenset("0123456789")
_NON_ALNUM = re.compile(r"[^a-z0-9]")

SECRET_KEYS = frozenset({"vpa", "mandate", "authorization"})  # and every "...token"
CARD_DIGITS = range(13, 20)
ICCID_DIGITS = (19, 20)
MAX_NUMBER_DIGITS = max(ICCID_DIGITS)


def mask_text(text: str) -> str:
    """``text`` with every piece of personal data in it masked."""
    return _PII.sub(_masked, text)


def mask_pii(value: Any) -> Any:
    """``value`` (a JSON-like structure) with its personal data masked.

    Strings are masked as text, dict keys too, and a string holding a JSON object
    (an API Gateway body, an SQS message) as the structure it holds; an int that
    reads as personal data (a phone number logged as a number) becomes its masked
    string. Values under secret keys (:data:`SECRET_KEYS`, ``*token``) are masked
    whatever they hold. Anything else that is not JSON becomes its masked
    ``str()``, which is what a log line would have shown of it.
    """
    if isinstance(value, str):
        return _mask_string(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        masked = mask_text(str(value))
        return value if masked == str(value) else masked
    if isinstance(value, Mapping):
        return {mask_pii(key): _mask_field(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_pii(item) for item in value]
    return mask_text(str(value))


def find_pii(text: str) -> list[str]:
    """The personal data :func:`mask_text` would mask in ``text``, as written there."""
    found: list[str] = []
    for match in _PII.finditer(text):
        if match.lastgroup != "keep" and _masked(match) != match.group():
            found.append(match.group())
    return found


# --- what each kind keeps ---------------------------------------------------------------


def _masked(match: re.Match[str]) -> str:
    # _MASKERS (at the end of the module): one function per kind; "keep" has none.
    masker = _MASKERS.get(match.lastgroup or "keep")
    return masker(match.group()) if masker else match.group()


def _mask_pair(text: str) -> str:
    value_at = _VALUE_START.search(text)
    assert value_at is not None  # the pattern has the separator
    return text[: value_at.end()] + _mask_secret_text(text[value_at.end() :])


def _mask_email(text: str) -> str:
    local, _, domain = text.partition("@")
    shown = local[:1] if len(local) > 1 else ""
    return f"{shown}{MASK_CHAR * 3}@{domain}"


def _mask_vpa(text: str) -> str:
    local, _, handle = text.partition("@")
    return f"{local[: min(2, len(local) - 1)]}{MASK_CHAR * 3}@{handle}"


def _mask_token(text: str) -> str:
    prefix, _, secret = text.partition("_")
    return f"{prefix}_{mask_opaque(secret)}"


def _mask_pan(text: str) -> str:
    return mask(text, VISIBLE_DIGITS, mask_char=MASK_CHAR)


def mask_opaque(secret: str) -> str:
    """A secret of no known shape: its last 4 characters shown only when long."""
    visible = VISIBLE_DIGITS if len(secret) >= OPAQUE_VISIBLE_FROM else 0
    return mask(secret, visible, mask_char=MASK_CHAR)


def _mask_string(text: str) -> str:
    if text.startswith("{") and text.endswith("}"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return mask_text(text)
        return json.dumps(mask_pii(parsed), ensure_ascii=False)
    return mask_text(text)


def _mask_field(key: str, value: Any) -> Any:
    name = _NON_ALNUM.sub("", key.lower())
    if name in SECRET_KEYS or name.endswith("token"):
        return _mask_secret(value)
    return mask_pii(value)


def _mask_secret(value: Any) -> Any:
    """Every value inside ``value``, masked even when it has no known shape."""
    if isinstance(value, Mapping):
        return {mask_pii(key): _mask_secret(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask_secret(item) for item in value]
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return _mask_secret_text(str(value))
    return mask_pii(value)


def _mask_secret_text(text: str) -> str:
    """A secret's own shape masked (a VPA, a ``tok_`` token), else all of it;
    one that is masked already stays as it is."""
    masked = mask_text(text)
    if masked != text or MASK_CHAR in text:
        return masked
    return mask_opaque(text)


# --- numbers ------------------------------------------------------------------------------


def _mask_number(run: str) -> str:
    """Mask the personal numbers among a run of digit groups: from each group on,
    the longest window of consecutive groups that is one ("2026-11-25 98765 43210"
    keeps its date readable)."""
    groups = list(_DIGITS.finditer(run))
    chars = list(run)
    start = 0
    while start < len(groups):
        found = _longest_personal_window(run, groups, start)
        if found is None:
            start += 1
            continue
        end, keep_first = found
        first = 0 if start == 0 else groups[start].start()  # a leading "+" goes with it
        last = groups[end].end()
        chars[first:last] = _hide_digits(run[first:last], keep_first)
        start = end + 1
    return "".join(chars)


def _longest_personal_window(
    run: str, groups: list[re.Match[str]], start: int
) -> tuple[int, int] | None:
    """(the last group, the digits to leave at the front) of the longest personal
    number starting at group ``start``."""
    found = None
    first = 0 if start == 0 else groups[start].start()
    digits = ""
    for end in range(start, len(groups)):
        digits += groups[end].group()
        if len(digits) > MAX_NUMBER_DIGITS:
            break
        window_groups = [g.group() for g in groups[start : end + 1]]
        keep_first = _personal_number(run[first : groups[end].end()], digits, window_groups)
        if keep_first is not None:
            found = (end, keep_first)
    return found


def _personal_number(window: str, digits: str, groups: list[str]) -> int | None:
    """How many leading digits may stay visible if ``window`` is a personal
    number (a phone's +91 / 91 / 0 prefix; else none); None if it is not one."""
    if len(groups) <= 4 and is_valid_msisdn(window):  # a prefix and up to 3 groups
        prefix = len(digits) - NATIONAL_MOBILE_DIGITS
        # Shown only when it stands apart: 12 bare digits may as well be an Aadhaar.
        apart = window.startswith("+") or len(groups[0]) == prefix
        return prefix if apart else 0
    if _is_aadhaar(digits, groups) or _is_iccid(digits, groups) or _is_card(digits, groups):
        return 0
    return None


def _is_aadhaar(digits: str, groups: list[str]) -> bool:
    layout_ok = len(groups) == 1 or [len(g) for g in groups] == [4, 4, 4]
    return len(digits) == 12 and digits[0] not in "01" and layout_ok


def _is_iccid(digits: str, groups: list[str]) -> bool:
    return len(digits) in ICCID_DIGITS and digits.startswith("89") and len(groups) <= 5


def _is_card(digits: str, groups: list[str]) -> bool:
    if len(digits) not in CARD_DIGITS:
        return False
    if len(groups) == 1:
        return luhn_is_valid(digits)  # an unbroken run: only a real card number
    inner = groups[1:-1]
    return len(groups[0]) == 4 and all(len(g) in (4, 6) for g in inner) and len(groups[-1]) <= 6


def _hide_digits(window: str, keep_first: int) -> list[str]:
    """The window's characters with its digits masked, but for the first
    ``keep_first`` and the last 4; separators and "+" stay."""
    positions = [i for i, char in enumerate(window) if char in _DIGIT_CHARS]
    shown = set(positions[:keep_first]) | set(positions[-VISIBLE_DIGITS:])
    return [
        MASK_CHAR if char in _DIGIT_CHARS and i not in shown else char
        for i, char in enumerate(window)
    ]


_MASKERS: dict[str, Callable[[str], str]] = {
    "pair": _mask_pair,
    "email": _mask_email,
    "vpa": _mask_vpa,
    "token": _mask_token,
    "pan": _mask_pan,
    "number": _mask_number,
}
