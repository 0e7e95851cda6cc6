"""Payments on the local runtime, as a client and the gateway see them: a card
number sent to the API is refused and stored or logged nowhere; the webhook route
takes a signature, not a bearer token. The overdue subscriber who pays by UPI and
is unblocked without an agent is in test_audit_trail.py."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.conftest import LocalSystem

AGENT = ("agent-e2e", "agent")
CARD_NUMBER = "4111111111111111"  # a test card: passes the Luhn check


@pytest.fixture
def system(local_system: LocalSystem) -> LocalSystem:
    return local_system


def _status(system: LocalSystem, user_id: str) -> dict[str, Any]:
    answer = system.get(f"/service-control/status/{user_id}", system.token(*AGENT))
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_a_card_number_is_refused_and_stored_or_logged_nowhere(system: LocalSystem) -> None:
    owner = system.token("demo-prepaid", "subscriber")
    spaced = " ".join(CARD_NUMBER[i : i + 4] for i in range(0, 16, 4))
    bodies = [
        {"user_id": "demo-prepaid", "method": "CARD", "token": spaced, "amount_paise": 10000},
        {"user_id": "demo-prepaid", "method": "UPI", "vpa": f"{CARD_NUMBER}@okhdfc"},
        {"user_id": "demo-prepaid", "method": "CARD", "token": "tok_ab12cd34", "pan": "x"},
        {"user_id": "demo-prepaid", "method": "CARD", "note": int(CARD_NUMBER)},
    ]
    for body in bodies:
        refused = system.post("/payments", body, owner, str(uuid.uuid4()))
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "CARD_DATA_REJECTED"
        assert CARD_NUMBER not in refused.text.replace(" ", "")
    autopay = system.post(
        "/users/demo-postpaid/autopay",
        {"enabled": True, "mandate_token": f"mandate_{CARD_NUMBER}"},
        system.token("demo-postpaid", "subscriber"),
        str(uuid.uuid4()),
    )
    assert autopay.status_code == 422, autopay.text

    table = system.info["table"]
    dynamodb = system.aws("dynamodb")
    items = [
        item
        for page in dynamodb.get_paginator("scan").paginate(TableName=table)
        for item in page["Items"]
    ]
    assert items  # the scan sees the seeded data
    assert CARD_NUMBER not in json.dumps(items).replace(" ", "")
    logs = sorted((system.state_dir / "logs").glob("*.log"))
    assert logs
    for log in logs:
        assert CARD_NUMBER not in log.read_text().replace(" ", ""), log.name


def test_the_webhook_route_takes_a_signature_not_a_bearer_token(system: LocalSystem) -> None:
    body = {
        "event_id": "EVT-1",
        "txn_id": "TXN-00000000000000000000",
        "merchant_reference": "PAY-00000000000000000000",
        "status": "CAPTURED",
        "amount_paise": 100,
        "occurred_at": datetime.now().astimezone().isoformat(),
    }
    forged = system.post("/payments/webhook", body)  # no token, no signature
    # The handler answered (the gateway let it through without a token) and refused it.
    assert forged.status_code == 401, forged.text
    assert forged.json()["error"]["code"] == "BAD_SIGNATURE"
