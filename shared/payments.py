"""Payments (issue 8), the pure part: statuses and their transitions, the payment
record with its history, the card-data guard, UPI VPA validation and the
gateway webhook's signature.

Rules, as the operator's policy:

- A payment starts PENDING when the gateway is asked to charge it. The webhook
  (or the reconciliation janitor) makes it SUCCEEDED or FAILED; a payment whose
  outcome is unclear (a charge that timed out, a webhook that never came) goes
  RECONCILING until the gateway's status query settles it.
- Money taken for a payment that cannot be applied is refunded: a FAILED payment
  the gateway did capture after all ("debited but reported failed"), or a
  SUCCEEDED one with nothing left to apply it to (the invoice was paid meanwhile).
- Card data never enters the system: clients send gateway tokens only. A body
  that carries anything that looks like a card number or a security code is
  rejected before it is stored or logged, and the rejection never repeats it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.errors import Conflict, InvalidRequest, Unauthorized
from shared.models import Frozen, NonNegativeInt, PositiveInt
from shared.validation import luhn_is_valid


class PaymentMethod(StrEnum):
    UPI = "UPI"
    CARD = "CARD"  # a gateway card token, never the card
    WALLET = "WALLET"  # a gateway wallet token (Paytm, PhonePe...)
    MANDATE = "MANDATE"  # AutoPay charges on a registered mandate; not accepted from clients


class PaymentPurpose(StrEnum):
    INVOICE = "INVOICE"  # pays (part of) a postpaid invoice
    RECHARGE = "RECHARGE"  # buys a prepaid plan
    TOPUP = "TOPUP"  # credits the prepaid wallet


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    RECONCILING = "RECONCILING"
    REFUNDED = "REFUNDED"


_S = PaymentStatus
ALLOWED: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    _S.PENDING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.RECONCILING}),
    _S.RECONCILING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.REFUNDED}),
    # The gateway captured the money after reporting a failure.
    _S.FAILED: frozenset({_S.REFUNDED}),
    # Captured, but nothing is left to apply it to (the invoice was paid meanwhile).
    _S.SUCCEEDED: frozenset({_S.REFUNDED}),
    _S.REFUNDED: frozenset(),
}


class InvalidTransition(Conflict):
    code = "INVALID_PAYMENT_TRANSITION"


def check_transition(old: PaymentStatus, new: PaymentStatus) -> None:
    if new not in ALLOWED[old]:
        raise InvalidTransition(f"a {old.value} payment cannot become {new.value}")


# --- the payment record -----------------------------------------------------------

PAYMENT_ID = re.compile(r"PAY-[0-9A-F]{20}")


def new_payment_id() -> str:
    """``PAY-`` and 20 upper-case hex digits."""
    return f"PAY-{uuid.uuid4().hex[:20].upper()}"


class PaymentEntry(Frozen):
    """One step of a payment's history."""

    at: AwareDatetime
    status: PaymentStatus
    detail: str


class Payment(Frozen):
    payment_id: Annotated[str, Field(pattern=PAYMENT_ID.pattern)]
    user_id: str
    purpose: PaymentPurpose
    invoice_id: str | None = None  # INVOICE only
    plan_id: str | None = None  # RECHARGE only
    amount_paise: PositiveInt
    method: PaymentMethod
    method_display: str = Field(description="Masked: 'as***@okhdfc', 'tok_…ab12'")
    # The UPI VPA or the card / wallet / mandate token as given; never a card number.
    gateway_token: str | None = None
    gateway_txn_id: str | None = None
    status: PaymentStatus
    created_at: AwareDatetime
    payment_date: AwareDatetime | None = None  # when the gateway captured it
    applied_paise: NonNegativeInt = 0  # credited to the invoice / plan / wallet
    refunded_paise: NonNegativeInt = 0
    refund_id: str | None = None
    autopay_attempt: int | None = None  # 1 = the first charge, 2-3 = the retries
    history: tuple[PaymentEntry, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Payment:
        names = {
            PaymentPurpose.INVOICE: (True, False, "an invoice"),
            PaymentPurpose.RECHARGE: (False, True, "a plan"),
            PaymentPurpose.TOPUP: (False, False, "neither an invoice nor a plan"),
        }[self.purpose]
        if (self.invoice_id is not None, self.plan_id is not None) != names[:2]:
            raise ValueError(f"a {self.purpose.value} payment names {names[2]}")
        if self.applied_paise + self.refunded_paise > self.amount_paise:
            raise ValueError("applied and refunded money exceed the payment's amount")
        # A raised DomainError is not wrapped by pydantic, so the value stays out of
        # the error (a ValidationError would echo its input).
        for field in (self.gateway_token, self.method_display):
            if field is not None and find_card_data(field) is not None:
                raise CardDataRejected("a payment cannot hold card data")
        return self

    def with_status(self, new: PaymentStatus, at: datetime, detail: str, **changes: Any) -> Payment:
        """This payment moved to ``new`` (the transition checked), with ``changes``
        applied and the step appended to the history."""
        check_transition(self.status, new)
        if changes.keys() & {"status", "history"}:
            raise TypeError("status and history change through with_status only")
        entry = PaymentEntry(at=at, status=new, detail=detail)
        return self.model_validate(
            {
                **self.model_dump(),
                **changes,
                "status": new,
                "history": (*self.history, entry),
            }
        )


def method_display(method: PaymentMethod, token: str) -> str:
    """What a person may see of the payment method: ``as***@okhdfc`` for a VPA,
    ``tok_…ab12`` for a token (its prefix up to ``_`` and its last 4 characters)."""
    if method is PaymentMethod.UPI and "@" in token:
        local, _, handle = token.partition("@")
        shown = min(2, len(local) - 1)
        return f"{local[:shown]}***@{handle}"
    prefix, underscore, _ = token.partition("_")
    head = f"{prefix}_" if underscore and len(prefix) <= 8 else ""
    tail = token[-4:] if len(token) > 8 else ""
    return f"{head}…{tail}"


# --- card data guard --------------------------------------------------------------

# Key names that only card data has (compared without case and separators).
_CARD_KEY_MARKERS = (
    "cardnumber",
    "cardno",
    "cvv",
    "cvc",
    "expiry",
    "expmonth",
    "expyear",
    "expdate",
    "expiration",
    "securitycode",
)
# Other names a card security code goes by, when they hold 3-4 digits.
_SECURITY_CODE_KEYS = frozenset({"csc", "cvn", "cvd", "cardcode"})
_KEY_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_GROUP_SEPARATOR = re.compile(r"[ -]{1,3}")
_SECURITY_CODE = re.compile(r"\s*[0-9]{3,4}\s*")
# An Indian mobile number with its country code: 12 digits a card never has.
_INTERNATIONAL_MSISDN = re.compile(r"(?:00)?91[6-9][0-9]{9}")
CARD_MIN_DIGITS, CARD_MAX_DIGITS = 12, 19


class CardDataRejected(InvalidRequest):
    code = "CARD_DATA_REJECTED"


def find_card_data(value: Any) -> str | None:
    """Why ``value`` (any JSON value) looks like it carries card data, or None.

    Flagged: a key named like card data (``card_number``, ``cvv``, ``expiry``,
    ``pan``...); a string or number holding 12-19 digits that pass the Luhn check
    (alone, or in the 4-digit groups cards are written in, with spaces or dashes);
    a 3-4 digit value under a security-code key (``csc``, ``cvn``...).

    Deliberately not flagged, so identifiers do not trip it: digits glued to
    letters (``a1234...`` inside a hex id), digits in groups that are not a card's
    (``...1234567-2026-11-25`` inside an invoice id), more than 19 digits in a row
    (a 20-digit ICCID), 10-digit mobile numbers with or without +91.
    Flagged although not a card, since they pass Luhn and belong in no payment
    body: a 19-digit ICCID, a 15-digit IMEI.

    The reason names where the data is (the path of keys), never the data.
    """
    return next(_findings(value, ""), None)


def ensure_no_card_data(value: Any) -> None:
    """Raise CardDataRejected (422) when ``value`` carries card data."""
    reason = find_card_data(value)
    if reason is not None:
        raise CardDataRejected(f"card data is not accepted, send a gateway token: {reason}")


def _findings(value: Any, path: str) -> Iterator[str]:
    """Every reason ``value`` at ``path`` looks like card data, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            if _holds_card_number(name):  # before the name goes into any reason
                yield f"a field name under {path or 'the body'} holds what looks like a card number"
                continue
            child = f"{path}.{name}" if path else name
            if _named_like_card_data(name):
                yield f"field {child} is named like card data"
            if _is_security_code(name, item):
                yield f"field {child} holds what looks like a card security code"
            yield from _findings(item, child)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _findings(item, f"{path}[{index}]")
    elif _holds_card_number(_text(value)):
        yield f"{'field ' + path if path else 'the body'} holds what looks like a card number"


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else str(value)
    return str(value)


def _named_like_card_data(key: str) -> bool:
    compact = re.sub(r"[^a-z0-9]", "", key.lower())
    if any(marker in compact for marker in _CARD_KEY_MARKERS):
        return True
    # "pan" as a word of the name: "pan", "card_pan", "cardPan", not "company".
    return any(word.lower() == "pan" for word in _KEY_WORDS.findall(key))


def _is_security_code(key: str, value: Any) -> bool:
    compact = re.sub(r"[^a-z0-9]", "", key.lower())
    if compact not in _SECURITY_CODE_KEYS or isinstance(value, bool):
        return False
    return isinstance(value, int | str) and _SECURITY_CODE.fullmatch(str(value)) is not None


def _holds_card_number(text: str) -> bool:
    return any(luhn_is_valid(digits) for digits in _card_candidates(text))


def _card_candidates(text: str) -> Iterator[str]:
    """Digit strings of 12-19 digits that stand as a card number would: one group
    of digits, or consecutive groups laid out as on a card (a first group of 4,
    inner groups of 4 or 6, a last group of 1-6), separated by spaces or dashes;
    none glued to a letter."""
    groups = list(_DIGIT_GROUP.finditer(text))
    runs: list[list[re.Match[str]]] = []
    for group in groups:
        if runs and _GROUP_SEPARATOR.fullmatch(text, runs[-1][-1].end(), group.start()):
            runs[-1].append(group)
        else:
            runs.append([group])
    for run in runs:
        for first in range(len(run)):
            if _glued(text, run[first].start() - 1):
                continue
            digits = ""
            for last in range(first, len(run)):
                digits += run[last].group()
                if len(digits) > CARD_MAX_DIGITS:
                    break
                if len(digits) < CARD_MIN_DIGITS or _glued(text, run[last].end()):
                    continue
                if _card_layout([g.group() for g in run[first : last + 1]]):
                    yield digits


def _card_layout(groups: list[str]) -> bool:
    if len(groups) == 1:
        return _INTERNATIONAL_MSISDN.fullmatch(groups[0]) is None
    inner_ok = all(len(group) in (4, 6) for group in groups[1:-1])
    return len(groups[0]) == 4 and inner_ok and 1 <= len(groups[-1]) <= 6


def _glued(text: str, index: int) -> bool:
    """Whether the character at ``index`` is a letter (so the digits next to it
    are part of a word or an id, not a number of their own)."""
    return 0 <= index < len(text) and text[index].isalpha()


# --- UPI --------------------------------------------------------------------------

_VPA = re.compile(r"[a-z0-9][a-z0-9._-]{1,255}@[a-z][a-z0-9]{1,63}")


class InvalidVpa(InvalidRequest):
    code = "INVALID_VPA"


def normalize_vpa(text: str) -> str:
    """A UPI virtual payment address (``name@bank``), lower-cased and stripped."""
    vpa = text.strip().lower()
    if not _VPA.fullmatch(vpa):
        raise InvalidVpa("not a UPI address: expected name@bank (letters, digits, . _ -)")
    return vpa


# --- the gateway's webhook --------------------------------------------------------

SIGNATURE_HEADER = "X-Gateway-Signature"
WEBHOOK_TOLERANCE_SECONDS = 300


class BadSignature(Unauthorized):
    code = "BAD_SIGNATURE"


class GatewayWebhook(BaseModel):
    """The body the gateway posts (``merchant_reference`` is our payment_id).
    Fields the gateway may add later are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    txn_id: str
    merchant_reference: str
    status: Literal["CAPTURED", "FAILED"]
    amount_paise: PositiveInt
    occurred_at: AwareDatetime


def _mac(secret: bytes, timestamp: int, raw_body: bytes) -> str:
    if not secret:
        raise ValueError("the webhook secret is empty")
    return hmac.new(secret, f"{timestamp}.".encode() + raw_body, hashlib.sha256).hexdigest()


def sign_webhook(secret: bytes, raw_body: bytes, at: datetime) -> str:
    """The ``X-Gateway-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``
    over ``"<t>."`` followed by the raw body."""
    timestamp = int(at.timestamp())
    return f"t={timestamp},v1={_mac(secret, timestamp, raw_body)}"


_HEX_MAC = re.compile(r"[0-9a-f]{64}")


def verify_webhook(
    secret: bytes,
    raw_body: bytes,
    header: str | None,
    now: datetime,
    tolerance_seconds: int = WEBHOOK_TOLERANCE_SECONDS,
) -> None:
    """Raise BadSignature (401) unless ``header`` signs ``raw_body`` with ``secret``
    at a time within ``tolerance_seconds`` of ``now`` (older ones are replays).
    Several ``v1`` values are accepted (the gateway rotating its secret)."""
    timestamp: int | None = None
    macs: list[str] = []
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1" and _HEX_MAC.fullmatch(value):
            macs.append(value)
    if timestamp is None or not macs:
        raise BadSignature("missing or malformed signature header")
    expected = _mac(secret, timestamp, raw_body)
    if not any(hmac.compare_digest(expected, mac) for mac in macs):
        raise BadSignature("the signature does not match the body")
    if abs(now.timestamp() - timestamp) > tolerance_seconds:
        raise BadSignature("the signature's timestamp is outside the tolerance (replay?)")
