"""The pure payment rules: status transitions and history, the card-data guard
on realistic request bodies, UPI addresses, masking, and the webhook signature
a gateway computes."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shared.payments import (
    ALLOWED,
    BadSignature,
    CardDataRejected,
    GatewayWebhook,
    InvalidTransition,
    InvalidVpa,
    Payment,
    PaymentMethod,
    PaymentPurpose,
    PaymentStatus,
    check_transition,
    ensure_no_card_data,
    find_card_data,
    method_display,
    new_payment_id,
    normalize_vpa,
    sign_webhook,
    verify_webhook,
)

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
S = PaymentStatus

# --- transitions ------------------------------------------------------------------

EXPECTED_ALLOWED = {
    (S.PENDING, S.SUCCEEDED),
    (S.PENDING, S.FAILED),
    (S.PENDING, S.RECONCILING),
    (S.RECONCILING, S.SUCCEEDED),
    (S.RECONCILING, S.FAILED),
    (S.RECONCILING, S.REFUNDED),
    (S.FAILED, S.REFUNDED),  # debited but reported failed
    (S.SUCCEEDED, S.REFUNDED),  # captured, nothing left to apply it to
}
FORBIDDEN = sorted({(old, new) for old in S for new in S} - EXPECTED_ALLOWED)


def test_the_table_allows_exactly_the_documented_transitions() -> None:
    assert {(old, new) for old, targets in ALLOWED.items() for new in targets} == (EXPECTED_ALLOWED)
    assert set(ALLOWED) == set(S)


@pytest.mark.parametrize(("old", "new"), sorted(EXPECTED_ALLOWED))
def test_allowed_transition(old: PaymentStatus, new: PaymentStatus) -> None:
    check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), FORBIDDEN)
def test_forbidden_transition_is_a_409(old: PaymentStatus, new: PaymentStatus) -> None:
    with pytest.raises(InvalidTransition) as raised:
        check_transition(old, new)
    assert raised.value.status == 409
    assert raised.value.code == "INVALID_PAYMENT_TRANSITION"


def payment(**overrides: Any) -> Payment:
    values: dict[str, Any] = {
        "payment_id": "PAY-0123456789ABCDEF0123",
        "user_id": "u-1",
        "purpose": PaymentPurpose.INVOICE,
        "invoice_id": "INV-u-1-2026-11-01",
        "amount_paise": 70_682,
        "method": PaymentMethod.UPI,
        "method_display": "as***@okhdfc",
        "gateway_token": "asha@okhdfc",
        "status": S.PENDING,
        "created_at": T0,
    }
    return Payment(**{**values, **overrides})


def test_with_status_appends_history_and_applies_the_changes() -> None:
    pending = payment(gateway_txn_id="TXN-1")
    captured_at = T0 + timedelta(seconds=3)

    done = pending.with_status(
        S.SUCCEEDED, captured_at, "webhook EVT-1", payment_date=captured_at, applied_paise=70_682
    )

    assert done.status is S.SUCCEEDED
    assert done.payment_date == captured_at
    assert done.applied_paise == 70_682
    assert [(e.status, e.at, e.detail) for e in done.history] == [
        (S.SUCCEEDED, captured_at, "webhook EVT-1")
    ]
    refunded = done.with_status(S.REFUNDED, captured_at, "invoice paid meanwhile")
    assert [e.status for e in refunded.history] == [S.SUCCEEDED, S.REFUNDED]
    assert pending.status is S.PENDING  # the original is unchanged


def test_with_status_refuses_a_forbidden_step() -> None:
    failed = payment(status=S.FAILED)
    with pytest.raises(InvalidTransition):
        failed.with_status(S.SUCCEEDED, T0, "late webhook")


def test_applied_and_refunded_cannot_exceed_the_amount() -> None:
    with pytest.raises(ValidationError):
        payment(amount_paise=100, applied_paise=60, refunded_paise=50)


@pytest.mark.parametrize("amount", [0, -100])
def test_amount_must_be_positive(amount: int) -> None:
    with pytest.raises(ValidationError):
        payment(amount_paise=amount)


@pytest.mark.parametrize(
    ("purpose", "invoice_id", "plan_id"),
    [
        (PaymentPurpose.INVOICE, None, None),
        (PaymentPurpose.INVOICE, "INV-1", "PRE_299"),
        (PaymentPurpose.RECHARGE, None, None),
        (PaymentPurpose.RECHARGE, "INV-1", "PRE_299"),
        (PaymentPurpose.TOPUP, "INV-1", None),
    ],
)
def test_purpose_names_its_target(
    purpose: PaymentPurpose, invoice_id: str | None, plan_id: str | None
) -> None:
    with pytest.raises(ValidationError):
        payment(purpose=purpose, invoice_id=invoice_id, plan_id=plan_id)


def test_a_payment_cannot_hold_a_card_number_as_its_token() -> None:
    with pytest.raises(CardDataRejected) as raised:
        payment(method=PaymentMethod.CARD, gateway_token="4111 1111 1111 1111")
    assert "4111" not in str(raised.value.to_body())


def test_payment_ids_have_the_documented_shape() -> None:
    ids = {new_payment_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"PAY-[0-9A-F]{20}", pid) for pid in ids)
    with pytest.raises(ValidationError):
        payment(payment_id="PAY-123")


# --- card data guard --------------------------------------------------------------

CARDS = {
    "visa": "4111111111111111",
    "visa_2": "4012888888881881",
    "mastercard": "5555555555554444",
    "mastercard_2_series": "2223003122003222",
    "amex": "378282246310005",
    "rupay": "6073849700004947",
    "rupay_2": "6522210000000001",
}


def grouped(number: str, separator: str = " ") -> str:
    return separator.join(number[i : i + 4] for i in range(0, len(number), 4))


def body(**method_details: Any) -> dict[str, Any]:
    """A POST /payments body with the given method details."""
    return {
        "user_id": "u-5f3c2a9e41d04b7f9c1e2d3a4b5c6d7e",
        "invoice_id": "INV-u-5f3c2a9e41d04b7f9c1e2d3a4b5c6d7e-2026-11-01",
        "method": "CARD",
        "method_details": method_details,
    }


REJECTED: list[Any] = [
    *(body(token=number) for number in CARDS.values()),
    *(body(token=grouped(number)) for number in CARDS.values()),
    *(body(token=grouped(number, "-")) for number in CARDS.values()),
    body(token="3782 822463 10005"),  # Amex as printed: 4-6-5
    body(note="please charge my card 4111 1111 1111 1111, exp 12/27, thanks"),
    body(note="5555-5555-5555-4444 123"),  # the number followed by its CVV
    body(token="tok_4111111111111111"),  # a "token" that is the number
    body(token=4111111111111111),  # as a JSON number
    body(token=4111111111111111.0),
    {"payments": [{"items": [{"ref": "x", "meta": {"deep": ["ok", "4012 8888 8888 1881"]}}]}]},
    body(cvv="123"),
    body(CVV2=123),
    body(card_cvc="4321"),
    body(cardNumber="tok_abc"),  # the name alone is enough
    body(card_number=None),
    body(expiry="12/27"),
    body(exp_month=12, exp_year=2027),
    body(card_pan="x"),
    body(PAN="x"),
    body(csc="123"),
    body(security_code=" 1234 "),
    {"4111111111111111": "a card number as a key"},
    "4111 1111 1111 1111",  # the whole body
    # A 19-digit ICCID passes Luhn, so it is rejected too: no ICCID belongs in a
    # payment body, and telling one from a 19-digit card is not possible by digits.
    body(token="8991000000000000010"),
]


@pytest.mark.parametrize("value", REJECTED, ids=lambda value: repr(value)[-40:])
def test_card_data_is_found(value: Any) -> None:
    assert find_card_data(value) is not None


ACCEPTED: list[Any] = [
    body(token="tok_1NwXk2Lz9aB3cd12"),
    body(vpa="asha.rao@okhdfc"),
    body(mandate_token="mdt_8f2b6c1d9e0a4b7c"),
    {"msisdn": "9876543217"},  # 10 digits, Luhn-valid
    {"msisdn": "+91 98765 43217"},
    {"msisdn": "919876543217"},  # 12 digits with the country code, Luhn-valid
    {"msisdn": 9876543217},
    {"iccid": "89910000000000000012"},  # a 20-digit ICCID: longer than any card
    {"amount_paise": 70_682, "plan_id": "PRE_299", "company": "Acme", "span": 2},
    {"date": "2026-11-25", "at": "2026-11-25T10:00:00+05:30"},
    {"ids": ["PAY-0123456789ABCDEF0123", "TXN-1234567890123456789A"]},
    # Luhn-valid digits across the id and the date (12345677 2026 11), not laid out
    # like a card: a card's first group has 4 digits.
    {"invoice_id": "INV-u-12345677-2026-11-25"},
    {"contact": "98765 43210 1005"},  # 14 Luhn-valid digits in groups of 5, 5, 4
    {"order": "12357 6789 0123"},  # 13 Luhn-valid digits in groups of 5, 4, 4
    {"csc": "hello"},  # a security-code key without a code in it
    {"note": "order 1234 5678 9012"},  # 12 digits that fail Luhn
    {"flag": True, "nothing": None, "ratio": 0.5},
]


@pytest.mark.parametrize("value", ACCEPTED, ids=lambda value: repr(value)[:40])
def test_ordinary_values_are_not_card_data(value: Any) -> None:
    assert find_card_data(value) is None


def test_invoice_ids_never_look_like_cards() -> None:
    """The user id's hex and the date are joined by dashes: those groups are not a
    card's, whatever digits the hex ends in."""
    for digits in ("1234567", "12345678901", "4111111111111111"[:9], "0" * 15):
        user = f"u-abc{digits}"
        assert (
            find_card_data(body() | {"user_id": user, "invoice_id": f"INV-{user}-2026-11-25"})
            is None
        )


@pytest.mark.parametrize("value", REJECTED, ids=lambda value: repr(value)[-40:])
def test_the_reason_never_repeats_the_digits(value: Any) -> None:
    reason = find_card_data(value)
    assert reason is not None
    assert not re.search(r"[0-9]{3}", reason), reason
    error = CardDataRejected(reason)
    assert error.status == 422
    assert error.code == "CARD_DATA_REJECTED"


def test_ensure_no_card_data_names_the_field_not_the_number() -> None:
    with pytest.raises(CardDataRejected) as raised:
        ensure_no_card_data(body(token=grouped(CARDS["rupay"])))

    message = raised.value.message
    assert "method_details.token" in message
    assert not re.search(r"[0-9]{3}", message)
    ensure_no_card_data(body(token="tok_1NwXk2Lz9aB3cd12"))  # no error


# --- UPI --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("asha@okhdfc", "asha@okhdfc"),
        ("  Asha.Rao-1@OKHDFC ", "asha.rao-1@okhdfc"),
        ("9876543210@ybl", "9876543210@ybl"),
        ("a_b@paytm", "a_b@paytm"),
        ("ab@ok1", "ab@ok1"),
    ],
)
def test_valid_vpa(given: str, normalized: str) -> None:
    assert normalize_vpa(given) == normalized


@pytest.mark.parametrize(
    "given",
    [
        "",
        "asha",
        "asha@",
        "@okhdfc",
        "a@okhdfc",  # a one-character name
        ".asha@okhdfc",
        "asha@ok.hdfc",
        "asha@1bank",
        "asha@b",
        "as ha@okhdfc",
        "asha@ok@hdfc",
        "asha+1@okhdfc",
        "x" * 300 + "@okhdfc",
    ],
)
def test_invalid_vpa_is_a_422(given: str) -> None:
    with pytest.raises(InvalidVpa) as raised:
        normalize_vpa(given)
    assert raised.value.status == 422
    assert raised.value.code == "INVALID_VPA"


@pytest.mark.parametrize(
    ("method", "token", "shown"),
    [
        (PaymentMethod.UPI, "asha@okhdfc", "as***@okhdfc"),
        (PaymentMethod.UPI, "ab@ybl", "a***@ybl"),
        (PaymentMethod.CARD, "tok_1NwXk2Lz9aB3ab12", "tok_…ab12"),
        (PaymentMethod.MANDATE, "mdt_8f2b6c1d9e0a4b7c", "mdt_…4b7c"),
        (PaymentMethod.WALLET, "wallettoken98765432", "…5432"),
        (PaymentMethod.CARD, "tok_ab", "tok_…"),
    ],
)
def test_method_display_masks_the_token(method: PaymentMethod, token: str, shown: str) -> None:
    assert method_display(method, token) == shown


# --- webhook signature ------------------------------------------------------------

SECRET = b"whsec_test_5c1d"
RAW = b'{"amount_paise":70682,"event_id":"EVT-1","status":"CAPTURED","txn_id":"TXN-1"}'


def test_the_header_is_what_a_gateway_computes() -> None:
    """The wire format other parties implement: t=<unix>,v1=<HMAC-SHA256 of "t." + body>."""
    header = sign_webhook(SECRET, RAW, T0)

    timestamp = int(T0.timestamp())
    expected = hmac.new(SECRET, f"{timestamp}.".encode() + RAW, hashlib.sha256).hexdigest()
    assert header == f"t={timestamp},v1={expected}"


def test_a_good_signature_verifies_within_the_tolerance() -> None:
    header = sign_webhook(SECRET, RAW, T0)

    verify_webhook(SECRET, RAW, header, T0)
    verify_webhook(SECRET, RAW, header, T0 + timedelta(seconds=300))
    verify_webhook(SECRET, RAW, header, T0 - timedelta(seconds=300))  # gateway clock ahead


def test_a_rotated_secret_verifies_with_either_signature() -> None:
    old = sign_webhook(b"old-secret", RAW, T0)
    new = sign_webhook(SECRET, RAW, T0)
    header = f"{new},v1={old.split('v1=')[1]}"

    verify_webhook(SECRET, RAW, header, T0)


@pytest.mark.parametrize(
    ("raw", "secret", "now"),
    [
        (RAW.replace(b"70682", b"70683"), SECRET, T0),  # tampered body
        (RAW + b" ", SECRET, T0),  # not the raw body that was signed
        (RAW, b"another-secret", T0),
        (RAW, SECRET, T0 + timedelta(seconds=301)),  # an old one replayed
        (RAW, SECRET, T0 + timedelta(days=1)),
        (RAW, SECRET, T0 - timedelta(seconds=301)),  # from the future
    ],
)
def test_a_bad_signature_is_a_401(raw: bytes, secret: bytes, now: datetime) -> None:
    header = sign_webhook(SECRET, RAW, T0)
    with pytest.raises(BadSignature) as raised:
        verify_webhook(secret, raw, header, now)
    assert raised.value.status == 401
    assert raised.value.code == "BAD_SIGNATURE"


def test_a_new_timestamp_on_an_old_signature_fails() -> None:
    """A replayer cannot refresh the timestamp: it is part of what is signed."""
    header = sign_webhook(SECRET, RAW, T0)
    later = T0 + timedelta(hours=1)
    forged = header.replace(f"t={int(T0.timestamp())}", f"t={int(later.timestamp())}")

    with pytest.raises(BadSignature):
        verify_webhook(SECRET, RAW, forged, later)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=,v1=",
        f"t={int(T0.timestamp())}",  # no MAC
        "v1=" + "0" * 64,  # no timestamp
        f"t=abc,v1={'0' * 64}",
        f"t={int(T0.timestamp())},v1=xyz",
        f"t={int(T0.timestamp())},v1={'A' * 64}",  # upper-case hex is not what is sent
        f"t=-{int(T0.timestamp())},v1={'0' * 64}",
        f"t={'9' * 40},v1={'0' * 64}",
    ],
)
def test_a_malformed_header_is_a_401(header: str | None) -> None:
    with pytest.raises(BadSignature):
        verify_webhook(SECRET, RAW, header, T0)


def test_an_empty_secret_is_a_configuration_error_not_a_pass() -> None:
    with pytest.raises(ValueError, match="empty"):
        sign_webhook(b"", RAW, T0)
    header = sign_webhook(SECRET, RAW, T0)
    with pytest.raises(ValueError, match="empty"):
        verify_webhook(b"", RAW, header, T0)


def test_the_webhook_body_parses_and_ignores_new_fields() -> None:
    parsed = GatewayWebhook.model_validate_json(
        b'{"event_id":"EVT-1","txn_id":"TXN-1","merchant_reference":"PAY-0123456789ABCDEF0123",'
        b'"status":"CAPTURED","amount_paise":70682,"occurred_at":"2026-11-25T10:00:00+00:00",'
        b'"fee_paise":140}'
    )
    assert parsed.status == "CAPTURED"
    assert parsed.occurred_at == T0
    with pytest.raises(ValidationError):
        GatewayWebhook.model_validate(parsed.model_dump() | {"status": "MAYBE"})
