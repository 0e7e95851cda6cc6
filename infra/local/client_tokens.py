"""DynamoDB's ClientRequestToken for TransactWriteItems, which moto ignores.

botocore fills in a transaction's ClientRequestToken itself (an idempotency token
in the API model) and sends the very same request again when an answer is lost
(a timeout, a dropped connection). Within 10 minutes of a success DynamoDB answers
such a resend with that success and changes nothing. moto runs it again instead,
and the conditions the first run met now fail: a commit whose answer was lost
reads as a conflict, which AWS never shows. :class:`TransactionTokens` keeps each
successful transaction's answer by its token and gives it again, as AWS does; the
same token with different items is refused, as AWS refuses it, and the meter
bills a replay as DynamoDB does: reads of the items, no writes.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from infra.local.meter import REPLAYED_TRANSACTION, buffered_body
from infra.local.serving import run_to_end

TRANSACT_WRITE_ITEMS = "DynamoDB_20120810.TransactWriteItems"
TOKEN_LIFETIME_SECONDS = 600.0  # DynamoDB's: 10 minutes after the first request
MISMATCH_ERROR = {
    "__type": "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
    "message": "The request uses the same client token as a previous, but non-identical request.",
}

WsgiApp = Any


@dataclass(frozen=True)
class _Answer:
    request_digest: str
    at: float
    status: str
    headers: list[tuple[str, str]]
    body: bytes


class TransactionTokens:
    """The answers of successful TransactWriteItems, by ClientRequestToken."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._answers: OrderedDict[str, _Answer] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def __call__(
        self, app: WsgiApp, environ: dict[str, Any], start_response: Any
    ) -> Iterable[bytes]:
        """``app``'s answer to the transaction in ``environ``, or the answer it gave
        to the same token before. Call it with the table's writes held."""
        body = buffered_body(environ)
        token = _token(body)
        if token is None:
            return app(environ, start_response)  # type: ignore[no-any-return]
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            self._forget_expired()
            earlier = self._answers.get(token)
        if earlier is not None:
            environ[REPLAYED_TRANSACTION] = True
            return _replay(earlier, digest, start_response)
        status, headers, answer = run_to_end(app, environ)
        if status.startswith("200"):
            with self._lock:  # the token's 10 minutes run from the request's end
                self._answers[token] = _Answer(digest, self._clock(), status, headers, answer)
        start_response(status, headers)
        return [answer]

    def _forget_expired(self) -> None:
        horizon = self._clock() - TOKEN_LIFETIME_SECONDS
        while self._answers and next(iter(self._answers.values())).at < horizon:
            self._answers.popitem(last=False)


def _token(body: bytes) -> str | None:
    try:
        token = json.loads(body).get("ClientRequestToken")
    except (ValueError, AttributeError):
        return None  # moto answers a malformed request itself
    return token if isinstance(token, str) else None


def _replay(earlier: _Answer, digest: str, start_response: Any) -> Iterable[bytes]:
    if earlier.request_digest != digest:
        body = json.dumps(MISMATCH_ERROR).encode()
        start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.0")])
        return [body]
    start_response(earlier.status, earlier.headers)
    return [earlier.body]
