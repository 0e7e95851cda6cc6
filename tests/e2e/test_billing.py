"""Billing on the local runtime, as a subscriber and the operator see it: a
postpaid line uses more than its quota, the clock passes the bill-cycle day, the
invoice (rental, overage, GST) and its PDF appear; past due + grace it turns
OVERDUE and InvoiceOverdue reaches the bus.

The subscriber is created for this test (bill-cycle day 1) with the same
repository the runtime's seed uses, not demo-postpaid: test_local_system
subscribes demo-postpaid and expects its first plan to start there.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from shared import db
from shared.clock import IST
from shared.invoice_pdf import pdf_amount
from shared.models import Subscriber, SubscriberStatus, SubscriberType
from tests.e2e.conftest import LocalSystem, wait_for

USER = "e2e-billing-postpaid"
MSISDN = "9876512345"
GRACE_DAYS = 7


def _now(system: LocalSystem) -> datetime:
    return datetime.fromisoformat(system.get("/health").json()["time"])


def _advance_to(system: LocalSystem, moment: datetime) -> None:
    days = (moment - _now(system)).total_seconds() / 86400
    if days > 0:
        system.cli("local", "clock", "advance", "--days", f"{days:.5f}")


def _create_postpaid_line(system: LocalSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", system.info["aws_endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "e2e")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "e2e")
    db.bind_table(system.info["table"], system.info["region"])
    db.DynamoSubscriptionStore().put_subscriber(
        Subscriber(
            user_id=USER,
            msisdn=MSISDN,
            subscriber_type=SubscriberType.POSTPAID,
            state="KA",
            status=SubscriberStatus.ACTIVE,
            bill_cycle_day=1,
            created_at=datetime.now(UTC),
            name="Asha Rao",
        )
    )


def _tap_the_bus(system: LocalSystem) -> tuple[Any, str]:
    """A queue subscribed to billing's InvoiceOverdue events, as a consumer would be."""
    sqs, bus_events = system.aws("sqs"), system.aws("events")
    bus = next(b for b in system.info["buses"] if b.endswith("-events"))
    queue_url = sqs.create_queue(QueueName=f"e2e-overdue-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    rule = f"e2e-overdue-{uuid.uuid4().hex[:8]}"
    bus_events.put_rule(
        Name=rule,
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["tbcss.billing"], "detail-type": ["InvoiceOverdue"]}),
    )
    bus_events.put_targets(
        Rule=rule,
        EventBusName=bus,
        Targets=[{"Id": "tap", "Arn": arn["Attributes"]["QueueArn"]}],
    )
    return sqs, queue_url


def _next_first_of_month(moment: datetime) -> datetime:
    local = moment.astimezone(IST)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=IST)


def test_usage_beyond_quota_is_invoiced_with_a_pdf_and_goes_overdue(
    local_system: LocalSystem, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _create_postpaid_line(local_system, monkeypatch)
    owner = local_system.token(USER, "subscriber")
    subscribed = local_system.post(
        "/subscribe", {"user_id": USER, "plan_id": "POST_BASIC_399"}, owner, str(uuid.uuid4())
    )
    assert subscribed.status_code == 201, subscribed.text

    # 1,000 free minutes; eleven 100-minute calls: 100 minutes over at 50 paise = Rs. 50.
    now = _now(local_system)
    feed = tmp_path / "cdrs.jsonl"
    feed.write_text(
        "".join(
            json.dumps(
                {
                    "record_id": f"e2e-bill-{uuid.uuid4().hex}",
                    "source": "MSC-MUM-01",
                    "msisdn": MSISDN,
                    "usage_type": "VOICE",
                    "duration_seconds": 6000,
                    "started_at": (now - timedelta(minutes=1 + k)).isoformat(),
                }
            )
            + "\n"
            for k in range(11)
        )
    )
    local_system.cli("cdr", "send", str(feed))

    def overage() -> int:
        response = local_system.get(f"/users/{USER}/usage", owner)
        return int(response.json().get("overage_paise", 0)) if response.ok else 0

    assert wait_for(lambda: overage() == 5000, timeout=30, what="the usage to be rated")

    bill_day = _next_first_of_month(now)
    _advance_to(local_system, bill_day + timedelta(hours=1))

    def listed() -> list[dict[str, Any]]:
        invoices: list[dict[str, Any]] = local_system.get(f"/users/{USER}/invoices", owner).json()[
            "invoices"
        ]
        return invoices

    (summary,) = wait_for(listed, timeout=60, what="the invoice")
    invoice = local_system.get(f"/invoices/{summary['invoice_id']}", owner).json()
    kinds = [line["kind"] for line in invoice["lines"]]
    assert kinds == ["RENTAL", "OVERAGE_VOICE"]
    assert invoice["lines"][1]["amount_paise"] == 5000
    assert [tax["kind"] for tax in invoice["tax_lines"]] == ["CGST", "SGST"]
    assert invoice["status"] == "ISSUED"

    pdf = local_system.get(invoice["pdf_url"], owner)
    assert pdf.status_code == 200
    assert pdf.headers["Content-Type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in PdfReader(BytesIO(pdf.content)).pages)
    assert invoice["invoice_number"] in text
    assert pdf_amount(invoice["total_paise"]) in text
    stranger = local_system.token("someone-else", "subscriber")
    assert local_system.get(invoice["pdf_url"], stranger).status_code == 403

    sqs, tap = _tap_the_bus(local_system)
    due = datetime.fromisoformat(invoice["due_date"])
    notice_day = datetime(due.year, due.month, due.day, tzinfo=IST) + timedelta(days=1 + GRACE_DAYS)
    _advance_to(local_system, notice_day + timedelta(hours=1))

    def overdue_notices() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=tap, MaxNumberOfMessages=10).get("Messages", [])
        bodies = [json.loads(message["Body"]) for message in messages]
        return [b for b in bodies if b["detail"]["invoice_id"] == invoice["invoice_id"]]

    (notice,) = wait_for(overdue_notices, timeout=60, what="InvoiceOverdue on the bus")
    assert notice["detail-type"] == "InvoiceOverdue"
    shown = local_system.get(f"/invoices/{invoice['invoice_id']}", owner).json()
    assert shown["status"] == "OVERDUE"
    assert [h["event"] for h in shown["history"]][-2:] == ["OVERDUE", "OVERDUE_NOTICE"]
