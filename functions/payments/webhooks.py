"""The gateway simulator's webhook delivery: the consumer of its outbox queue
(SQS, partial batch failures). Deployed only while the gateway is the simulator.

The simulator queues each webhook body with the delay a real gateway takes
(:class:`shared.queues.SqsWebhookOutbox`). Here each one is signed as the
gateway signs (:func:`shared.payment_gateway.deliver_webhook`: the raw body and
``X-Gateway-Signature``, timestamped now) and handed to the payments API function
as the API Gateway proxy event of ``POST /payments/webhook``: the same handler,
the same signature check, the same answers as over HTTP. The function is invoked
directly because the local runtime's API URL is not known inside a function;
the route has no authorizer, so API Gateway would add nothing but the hop.

Like a real gateway, any answer but a 2xx is retried: the message comes back
after the visibility timeout, and lands in the DLQ after the queue's
maxReceiveCount (the janitor resolves the payment meanwhile).
"""

from __future__ import annotations

import json
import uuid
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.payments.wiring import webhook_secret
from shared.clock import system_clock
from shared.logs import service_logger
from shared.payment_gateway import deliver_webhook
from shared.settings import get_settings

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

logger = service_logger()
processor = BatchProcessor(event_type=EventType.SQS)

WEBHOOK_PATH = "/payments/webhook"
USER_AGENT = "tbcss-gateway-simulator"


class WebhookNotDelivered(Exception):
    """The API did not take the webhook (not a 2xx, or the function failed)."""


@lru_cache(maxsize=1)
def _lambda() -> LambdaClient:
    return boto3.client("lambda")


def proxy_event(raw_body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """What API Gateway (REST, Lambda proxy) would send for the webhook's POST."""
    request_id = str(uuid.uuid4())
    all_headers = {**headers, "User-Agent": USER_AGENT}
    return {
        "resource": WEBHOOK_PATH,
        "path": WEBHOOK_PATH,
        "httpMethod": "POST",
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": WEBHOOK_PATH,
            "httpMethod": "POST",
            "path": WEBHOOK_PATH,
            "stage": "simulator",
            "requestId": request_id,
            "identity": {"sourceIp": "127.0.0.1", "userAgent": USER_AGENT},
        },
        "body": raw_body.decode(),
        "isBase64Encoded": False,
    }


def deliver(body: dict[str, Any]) -> int:
    """Sign and post one webhook; the API's status. Raises WebhookNotDelivered."""
    raw, headers = deliver_webhook(webhook_secret(), body, system_clock().now())
    response = _lambda().invoke(
        FunctionName=get_settings().payments_api_function_name,
        Payload=json.dumps(proxy_event(raw, headers)).encode(),
    )
    answer = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError") or not isinstance(answer, dict):
        raise WebhookNotDelivered(f"the payments API failed: {response.get('FunctionError')}")
    status = int(answer.get("statusCode", 500))
    if not 200 <= status < 300:
        raise WebhookNotDelivered(f"the payments API answered {status}: {answer.get('body')}")
    return status


def record_handler(record: SQSRecord) -> str:
    body = json.loads(record.body)
    ids = {"txn_id": body.get("txn_id"), "message_id": record.message_id}
    try:
        status = deliver(body)
    except Exception:
        logger.exception("webhook not delivered; SQS retries it", extra=ids)
        raise
    logger.info("webhook delivered", extra={**ids, "status": status})
    return f"{body.get('txn_id')}: {status}"


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
