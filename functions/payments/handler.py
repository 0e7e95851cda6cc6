"""Payments API: pay an invoice or recharge, read a payment, register AutoPay, and
the gateway's webhook.

Thin: routing, validation, idempotency and the webhook's signature; who may pay,
read or register what, and what a payment does, live in shared.services.payments.

Two rules are enforced here, before the resolver sees the request:

- Card data never gets in. Every POST's body (JSON, or the raw text when it is
  not JSON), path and query values go through :func:`ensure_no_card_data` before
  pydantic validates anything or anything is logged: a validation error would
  repeat the offending input or field name, and the idempotency layer would hash
  it. The 422 CARD_DATA_REJECTED answer says where, never what.
- The webhook has no authorizer (API.md): it is HMAC-signed, checked on the raw
  body with the secret from Secrets Manager.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from functions.payments.wiring import payments, webhook_secret
from shared.clock import system_clock
from shared.errors import InvalidRequest
from shared.logs import service_logger
from shared.payments import (
    PAYMENT_ID,
    SIGNATURE_HEADER,
    CardDataRejected,
    ensure_no_card_data,
    verify_webhook,
)
from shared.services.payments import AutopayStatus, PaymentRequest, PaymentView
from shared.web import (
    JSON,
    Idempotency,
    IdempotencyKey,
    RequiredIdempotencyKey,
    caller,
    create_resolver,
    documented,
    header,
)

logger = service_logger()
app = create_resolver()
idempotency = Idempotency("payments")

ID = r"^[A-Za-z0-9_-]{1,64}$"
UserId = Annotated[str, Path(pattern=ID)]
# A malformed id is a 422 that does not repeat it (it may be a card number).
PaymentId = Annotated[str, Path(pattern=f"^{PAYMENT_ID.pattern}$")]


class AutopayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool
    mandate_token: Annotated[
        str | None,
        Field(
            max_length=128,
            description="The gateway's mandate token (mandate_...); required to enable",
        ),
    ] = None


class WebhookReceipt(BaseModel):
    outcome: str = Field(description="applied, failed, refunded, duplicate, ...")


class Keyed(BaseModel):
    """What an Idempotency-Key is bound to: the path's values and the body."""

    path: dict[str, str]
    body: dict[str, Any]


# --- card data, before anything else -------------------------------------------------


def card_data_rejection(event: dict[str, Any]) -> dict[str, Any] | None:
    """The 422 proxy response for a POST that carries card data, or None."""
    if event.get("httpMethod") != "POST":
        return None
    try:
        for value in _request_values(event):
            ensure_no_card_data(value)
    except CardDataRejected as error:
        logger.warning(
            "card data rejected", extra={"route": event.get("resource"), "code": error.code}
        )
        return {
            "statusCode": error.status,
            "headers": {"Content-Type": JSON},
            "body": json.dumps(error.to_body(), separators=(",", ":")),
            "isBase64Encoded": False,
        }
    return None


def _request_values(event: dict[str, Any]) -> Iterator[Any]:
    yield _parsed_body(event)
    yield event.get("pathParameters") or {}
    yield event.get("queryStringParameters") or {}


def _parsed_body(event: dict[str, Any]) -> Any:
    text = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            text = base64.b64decode(text).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # checked as text: the digits count wherever they are


# --- payments ------------------------------------------------------------------------


@app.post(
    "/payments",
    summary="Pay an invoice (in full or in part), buy a prepaid plan or top up the wallet",
    description="Owner or agent. invoice_id pays an invoice (amount_paise defaults to what "
    "is outstanding), plan_id buys a prepaid plan, neither tops up the wallet. UPI takes a "
    "vpa; CARD and WALLET a gateway token: card numbers and security codes are rejected "
    "(422 CARD_DATA_REJECTED). The gateway completes the payment asynchronously: follow "
    "GET /payments/{payment_id}. Idempotency-Key is required.",
    responses=documented(202, "Accepted", PaymentView, 401, 403, 404, 409, 415),
)
def create_payment(
    body: PaymentRequest,
    # A retried payment must never charge twice: no key (422), no charge.
    idempotency_key: RequiredIdempotencyKey,
) -> Response[PaymentView]:
    principal = caller(app)
    token = idempotency.request_token(app)

    def action() -> tuple[int, PaymentView]:
        payment = payments().create(principal, body, request_token=token)
        logger.info(
            "payment created",
            extra={"payment_id": payment.payment_id, "status": payment.status.value},
        )
        return 202, PaymentView.of(payment)

    return idempotency.run(app, body, action)  # type: ignore[return-value]


@app.get(
    "/payments/<payment_id>",
    summary="A payment: status (PENDING, SUCCEEDED, FAILED, RECONCILING, REFUNDED) and history",
    responses=documented(200, "The payment", PaymentView, 401, 403, 404),
)
def get_payment(payment_id: PaymentId) -> PaymentView:
    return PaymentView.of(payments().get(caller(app), payment_id))


@app.post(
    "/users/<user_id>/autopay",
    summary="Enable AutoPay with a gateway mandate token, or disable it (the owner)",
    description="Postpaid lines: each new invoice is charged to the mandate; a failed "
    "charge is retried twice (10:00 IST the next day and three days after the first "
    "failure), then the subscriber is reminded by SMS and email.",
    responses=documented(200, "The AutoPay registration", AutopayStatus, 401, 403, 404, 409, 415),
)
def set_autopay(
    user_id: UserId, body: AutopayRequest, idempotency_key: IdempotencyKey = None
) -> Response[AutopayStatus]:
    principal = caller(app)

    def action() -> tuple[int, AutopayStatus]:
        status = payments().set_autopay(principal, user_id, body.enabled, body.mandate_token)
        return 200, status

    keyed = Keyed(path={"user_id": user_id}, body=body.model_dump(mode="json"))
    return idempotency.run(app, keyed, action)  # type: ignore[return-value]


# --- the gateway's webhook -----------------------------------------------------------


@app.post(
    "/payments/webhook",
    summary="The payment gateway's report of a charge (no bearer token: HMAC-signed)",
    description=f"{SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.' + the "
    "raw body>; older than 5 minutes is a replay (401). Idempotent on the transaction id.",
    responses=documented(200, "Received", WebhookReceipt, 401, 404, 409),
)
def webhook() -> WebhookReceipt:
    raw = (app.current_event.decoded_body or "").encode()
    verify_webhook(webhook_secret(), raw, header(app, SIGNATURE_HEADER), system_clock().now())
    try:
        report = json.loads(raw)
    except ValueError:
        raise InvalidRequest("the body is not JSON") from None
    if not isinstance(report, dict):
        raise InvalidRequest("the body is not a gateway report")
    outcome = payments().on_webhook(report)
    logger.info("webhook processed", extra={"txn_id": report.get("txn_id"), "outcome": outcome})
    return WebhookReceipt(outcome=outcome)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    rejection = card_data_rejection(event)
    if rejection is not None:
        return rejection
    idempotency.register(context)
    return app.resolve(event, context)
