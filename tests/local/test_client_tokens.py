"""A TransactWriteItems resent with its ClientRequestToken gets the first answer,
as from DynamoDB: for 10 minutes after a success, and only for the same request."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

from infra.local.client_tokens import TOKEN_LIFETIME_SECONDS, TransactionTokens


class Table:
    """A WSGI app standing in for moto: it counts the transactions it ran and
    answers each with a 200, or with a 400 once told to."""

    def __init__(self) -> None:
        self.runs = 0
        self.status = "200 OK"

    def __call__(self, _environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.runs += 1
        start_response(self.status, [("x-amz-crc32", str(self.runs))])
        return [json.dumps({"run": self.runs}).encode()]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def send(tokens: TransactionTokens, table: Table, body: dict[str, Any]) -> tuple[str, Any]:
    raw = json.dumps(body).encode()
    environ = {"wsgi.input": io.BytesIO(raw), "CONTENT_LENGTH": str(len(raw))}
    answered: list[str] = []
    chunks = tokens(table, environ, lambda status, _headers: answered.append(status))
    return answered[0], json.loads(b"".join(chunks))


TRANSACTION = {"ClientRequestToken": "t-1", "TransactItems": [{"Put": {"Item": {"PK": "a"}}}]}


def test_a_resent_transaction_gets_the_first_answer_and_runs_once() -> None:
    tokens, table = TransactionTokens(Clock()), Table()

    first = send(tokens, table, TRANSACTION)
    again = send(tokens, table, TRANSACTION)

    assert first == again == ("200 OK", {"run": 1})
    assert table.runs == 1


def test_the_same_token_on_other_items_is_refused() -> None:
    tokens, table = TransactionTokens(Clock()), Table()
    send(tokens, table, TRANSACTION)

    status, body = send(tokens, table, {**TRANSACTION, "TransactItems": []})

    assert status.startswith("400")
    assert body["__type"].endswith("#IdempotentParameterMismatchException")
    assert table.runs == 1


def test_a_token_is_new_again_ten_minutes_after_its_success() -> None:
    clock = Clock()
    tokens, table = TransactionTokens(clock), Table()
    send(tokens, table, TRANSACTION)

    clock.now += TOKEN_LIFETIME_SECONDS + 1
    send(tokens, table, TRANSACTION)

    assert table.runs == 2


def test_a_failed_transaction_runs_again_when_resent() -> None:
    tokens, table = TransactionTokens(Clock()), Table()
    table.status = "400 Bad Request"
    send(tokens, table, TRANSACTION)

    table.status = "200 OK"
    assert send(tokens, table, TRANSACTION) == ("200 OK", {"run": 2})


def test_a_transaction_without_a_token_always_runs() -> None:
    tokens, table = TransactionTokens(Clock()), Table()
    untokened = {"TransactItems": TRANSACTION["TransactItems"]}

    send(tokens, table, untokened)
    send(tokens, table, untokened)

    assert table.runs == 2
