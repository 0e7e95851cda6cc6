"""The audit trail end to end (issue 9's acceptance), on a runtime of its own so
the compliance report's counts are this run's and nobody else's:

an agent activates a postpaid line; its usage goes past the SMS and voice quotas;
the bill run invoices it (rental, overage, GST) with a PDF only its subscriber may
read (issue 6's acceptance); unpaid past its grace it turns OVERDUE, InvoiceOverdue
reaches the bus and the line is blocked, outgoing barred on the network simulator,
incoming still allowed (an agent's unblock is refused); the subscriber pays by UPI
and the block lifts without an agent (issue 8's acceptance); the subscriber closes
the line and gets a final bill.

Then: GET /audit holds a record for every one of those state changes, naming
who did it; no audit record and no log line of the whole run holds the
subscriber's KYC number, phone numbers, email or UPI id in plain text; and
`tbcss report monthly` writes the CSV and the PDF to S3 with counts that match
the run.

One runtime start and one walk of the clock serve all of it: each month walked
fires every daily sweep thirty-odd times, the slowest part of the e2e suite.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from shared.clock import IST, to_ist
from shared.invoice_pdf import pdf_amount
from shared.settings import Settings
from tests.activation_data import activation_body
from tests.e2e.conftest import (
    ROOT,
    LocalSystem,
    start_local_system,
    stop_local_system,
    wait_for,
)
from tests.pii import plaintext_pii

AGENT = ("agent-audit", "agent")
ADMIN = ("admin-audit", "admin")
ALTERNATE_PHONE = "9812345670"
VPA = "asha.rao@okhdfc"
# POST_BASIC_399 per bill cycle: 100 SMS, then Rs. 1.50 each; 1,000 minutes, then
# 50 paise a minute. Eleven 100-minute calls are 100 minutes over: Rs. 50.
SMS_QUOTA = 100
SMS_OVERAGE_PAISE = 150
CALLS, CALL_SECONDS = 11, 6000
VOICE_OVERAGE_PAISE = 5000
GRACE_DAYS = int(Settings.model_fields["overdue_grace_days"].default)


@pytest.fixture(scope="module")
def system() -> Iterator[LocalSystem]:
    system = start_local_system(ROOT / ".tbcss" / "e2e-audit")
    yield system
    assert stop_local_system(system) == 0, "\n".join(system.output[-20:])


def _post(system: LocalSystem, path: str, body: Any, token: str) -> Any:
    return system.post(path, body, token, str(uuid.uuid4()))


def _now(system: LocalSystem) -> datetime:
    return datetime.fromisoformat(system.get("/health").json()["time"])


def _advance(system: LocalSystem, days: float) -> None:
    system.cli("local", "clock", "advance", "--days", f"{days:.5f}")


def _advance_to(system: LocalSystem, moment: datetime) -> None:
    days = (moment - _now(system)).total_seconds() / 86400
    if days > 0:
        _advance(system, days)


def _status(system: LocalSystem, user_id: str) -> dict[str, Any]:
    answer = system.get(f"/service-control/status/{user_id}", system.token(*AGENT))
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _in_status(system: LocalSystem, user_id: str, status: str, what: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        current = _status(system, user_id)
        return current if current["status"] == status else None

    result: dict[str, Any] = wait_for(reached, timeout=90, what=what)
    return result


def _audit(system: LocalSystem, **query: str) -> list[dict[str, Any]]:
    """Every record GET /audit returns for the query, following the cursors."""
    admin = system.token(*ADMIN)
    records: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "25", **query}
    while True:
        page = system.get("/audit", admin, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        records += body["records"]
        if not body["next_cursor"]:
            return records
        params["cursor"] = body["next_cursor"]


def _activate(system: LocalSystem) -> dict[str, Any]:
    body = activation_body(plan_id="POST_BASIC_399", subscriber_type="postpaid")
    body["phone"] = ALTERNATE_PHONE
    accepted = _post(system, "/activate-sim", body, system.token(*AGENT))
    assert accepted.status_code == 202, accepted.text
    user_id = accepted.json()["user_id"]
    _in_status(system, user_id, "ACTIVE", f"activation of {user_id}")
    return {**body, "user_id": user_id}


def _use_past_the_quotas(system: LocalSystem, line: dict[str, Any], tmp_path: Path) -> None:
    """One SMS past the SMS quota (its CDR sent twice: rated once) and 100 minutes
    past the voice quota, fed to the runtime as the mediation feed would."""
    now = json.loads(system.cli("local", "clock", "show"))["now"]

    def cdr(usage_type: str, **amount: int) -> dict[str, Any]:
        return {
            "record_id": f"audit-{uuid.uuid4().hex[:8]}",
            "source": "MSC-AUDIT",
            "msisdn": line["msisdn"],
            "started_at": now,
            "usage_type": usage_type,
            **amount,
        }

    sms = cdr("SMS", count=SMS_QUOTA + 1)
    calls = [cdr("VOICE", duration_seconds=CALL_SECONDS) for _ in range(CALLS)]
    feed = tmp_path / "feed.jsonl"
    feed.write_text("".join(json.dumps(record) + "\n" for record in [sms, sms, *calls]))
    system.cli("cdr", "send", str(feed))
    owner = system.token(line["user_id"], "subscriber")

    def rated() -> dict[str, Any] | None:
        usage: dict[str, Any] = system.get(f"/users/{line['user_id']}/usage", owner).json()
        voice_rated = usage["voice"]["overage_paise"] == VOICE_OVERAGE_PAISE
        return usage if usage["sms"]["used"] == SMS_QUOTA + 1 and voice_rated else None

    usage = wait_for(rated, timeout=60, what="the CDRs rated")
    assert usage["overage_paise"] == VOICE_OVERAGE_PAISE + SMS_OVERAGE_PAISE


def _the_bill(system: LocalSystem, user_id: str) -> dict[str, Any]:
    """The bill run's invoice as its subscriber sees it: rental, the overage, GST,
    and a PDF nobody else may read."""
    owner = system.token(user_id, "subscriber")

    def listed() -> list[dict[str, Any]]:
        invoices: list[dict[str, Any]] = system.get(f"/users/{user_id}/invoices", owner).json()[
            "invoices"
        ]
        return invoices

    (summary,) = wait_for(listed, timeout=60, what="the bill run's invoice")
    invoice: dict[str, Any] = system.get(f"/invoices/{summary['invoice_id']}", owner).json()
    assert invoice["status"] == "ISSUED"
    assert [(line["kind"], line["amount_paise"]) for line in invoice["lines"][1:]] == [
        ("OVERAGE_VOICE", VOICE_OVERAGE_PAISE),
        ("OVERAGE_SMS", SMS_OVERAGE_PAISE),
    ]
    assert invoice["lines"][0]["kind"] == "RENTAL"
    assert [tax["kind"] for tax in invoice["tax_lines"]] == ["CGST", "SGST"]

    pdf = system.get(invoice["pdf_url"], owner)
    assert pdf.status_code == 200
    assert pdf.headers["Content-Type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in PdfReader(BytesIO(pdf.content)).pages)
    assert invoice["invoice_number"] in text
    assert pdf_amount(invoice["total_paise"]) in text
    stranger = system.token("someone-else", "subscriber")
    assert system.get(invoice["pdf_url"], stranger).status_code == 403
    return invoice


def _notice_day(invoice: dict[str, Any]) -> datetime:
    """The IST day InvoiceOverdue is due: the grace after the due date."""
    due = datetime.fromisoformat(invoice["due_date"])
    return datetime(due.year, due.month, due.day, tzinfo=IST) + timedelta(days=1 + GRACE_DAYS)


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


def _overdue_notice(
    system: LocalSystem, user_id: str, invoice_id: str, tap: tuple[Any, str]
) -> None:
    """InvoiceOverdue on the bus once, and the invoice's OVERDUE then its notice."""
    sqs, queue_url = tap

    def notices() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        bodies = [json.loads(message["Body"]) for message in messages.get("Messages", [])]
        return [b for b in bodies if b["detail"]["invoice_id"] == invoice_id]

    (notice,) = wait_for(notices, timeout=60, what="InvoiceOverdue on the bus")
    assert notice["detail-type"] == "InvoiceOverdue"
    shown = system.get(f"/invoices/{invoice_id}", system.token(user_id, "subscriber")).json()
    assert shown["status"] == "OVERDUE"
    assert [h["event"] for h in shown["history"]][-2:] == ["OVERDUE", "OVERDUE_NOTICE"]


def _barring(system: LocalSystem, msisdn: str) -> dict[str, Any]:
    """The line's barring as the network simulator holds it."""
    barring: dict[str, Any] = json.loads(system.cli("network", "show", msisdn))["barring"]
    return barring


def _pay_by_upi(system: LocalSystem, user_id: str, invoice_id: str) -> dict[str, Any]:
    """The subscriber pays the overdue bill: no agent involved (issue 8)."""
    owner = system.token(user_id, "subscriber")
    body = {"user_id": user_id, "invoice_id": invoice_id, "method": "UPI", "vpa": VPA}
    key = str(uuid.uuid4())
    accepted = system.post("/payments", body, owner, key)
    assert accepted.status_code == 202, accepted.text
    payment_id = accepted.json()["payment_id"]
    assert accepted.json()["method_display"] == "as***@okhdfc"
    again = system.post("/payments", body, owner, key)  # a client's retry: the same payment
    assert again.json()["payment_id"] == payment_id

    def settled() -> dict[str, Any] | None:
        payment: dict[str, Any] = system.get(f"/payments/{payment_id}", owner).json()
        return payment if payment["status"] != "PENDING" else None

    payment: dict[str, Any] = wait_for(settled, timeout=60, what="the UPI payment")
    assert payment["status"] == "SUCCEEDED", payment
    assert payment["applied_paise"] == payment["amount_paise"] > 0
    assert payment["transaction_id"]
    paid = system.get(f"/invoices/{invoice_id}", owner).json()
    assert paid["status"] == "PAID"
    return payment


def _close(system: LocalSystem, user_id: str) -> dict[str, Any]:
    owner = system.token(user_id, "subscriber")
    accepted = _post(
        system, f"/service-control/disconnect/{user_id}", {"reason": "USER_REQUEST"}, owner
    )
    assert accepted.status_code == 202, accepted.text
    disconnection_id = accepted.json()["disconnection_id"]

    def finished() -> dict[str, Any] | None:
        answer: dict[str, Any] = system.get(
            f"/service-control/disconnections/{disconnection_id}", system.token(*AGENT)
        ).json()
        return answer if answer["status"] in ("DISCONNECTED", "ESCALATED") else None

    record: dict[str, Any] = wait_for(finished, timeout=90, what="the disconnection")
    assert record["status"] == "DISCONNECTED", record
    return record


# What the run changes, and who: every one of these must be in the trail.
EXPECTED = {
    ("POST /activate-sim", "agent:agent-audit"),
    ("SubscriberActivated", "system:activation"),
    ("PlanChanged", "system:plans"),
    ("QuotaThresholdReached", "system:usage"),  # postpaid: past the quota is overage
    ("InvoiceIssued", "system:billing"),
    ("InvoiceOverdue", "system:billing"),
    ("ServiceBlocked", "system:InvoiceOverdue"),
    ("POST /service-control/unblock/{user_id}", "agent:agent-audit"),
    ("PaymentSucceeded", "system:payments"),
    ("DisconnectionRequested", None),  # actor: the subscriber (checked below)
    ("SubscriberDisconnected", "system:service_control"),
}


def test_every_state_change_is_audited_without_pii_and_reported(
    system: LocalSystem, tmp_path: Path
) -> None:
    started = _now(system)
    line = _activate(system)
    user_id = line["user_id"]
    _use_past_the_quotas(system, line, tmp_path)

    # The bill run on the next cycle day (at most 31 days on).
    _advance(system, 31)
    bill = _the_bill(system, user_id)
    # Unpaid a grace past its due date: InvoiceOverdue, and with it the block.
    tap = _tap_the_bus(system)
    _advance_to(system, _notice_day(bill) + timedelta(hours=1))
    blocked = _in_status(system, user_id, "TEMP_BLOCKED", "the OVERDUE block")
    assert blocked["block_reasons"] == ["OVERDUE"]
    _overdue_notice(system, user_id, bill["invoice_id"], tap)
    barred = {"outgoing_barred": True, "data": "BARRED", "incoming_allowed": True}
    assert _barring(system, line["msisdn"]) == barred
    refused = _post(
        system,
        f"/service-control/unblock/{user_id}",
        {"reason": "OVERDUE"},
        system.token(*AGENT),
    )
    assert refused.status_code == 409, refused.text
    owner = system.token(user_id, "subscriber")
    (invoice,) = system.get(f"/users/{user_id}/invoices", owner).json()["invoices"]
    assert invoice["status"] == "OVERDUE"
    payment = _pay_by_upi(system, user_id, invoice["invoice_id"])
    assert _in_status(system, user_id, "ACTIVE", "the block lifted")["block_reasons"] == []
    allowed = {"outgoing_barred": False, "data": "ALLOWED", "incoming_allowed": True}
    assert _barring(system, line["msisdn"]) == allowed
    disconnection = _close(system, user_id)
    finished = _now(system) + timedelta(minutes=1)

    # --- the trail ----------------------------------------------------------------
    window = {"from": started.isoformat(), "to": finished.isoformat()}
    wanted = {action for action, _ in EXPECTED} | {"ServiceUnblocked"}

    missing: set[str] = set()

    def complete() -> list[dict[str, Any]] | None:
        records = _audit(system, user_id=user_id, **window)
        missing.clear()
        missing.update(wanted - {r["action"] for r in records})
        return None if missing else records

    try:
        records = wait_for(complete, timeout=30, what="every state change in the trail")
    except AssertionError:
        pytest.fail(f"not in the audit trail: {sorted(missing)}")
    seen = {(r["action"], r["actor"]) for r in records}
    for action, actor in EXPECTED:
        assert any(a == action and (actor is None or b == actor) for a, b in seen), (
            f"no audit record of {action} by {actor}; got {sorted(seen)}"
        )
    by_action = {r["action"]: r for r in records}
    assert by_action["DisconnectionRequested"]["actor"] == f"subscriber:{user_id}"
    assert by_action["ServiceBlocked"]["after"]["applied"] == ["OVERDUE"]
    assert by_action["ServiceUnblocked"]["after"]["lifted"] == ["OVERDUE"]
    assert by_action["PaymentSucceeded"]["subject"]["payment_id"] == payment["payment_id"]
    assert (
        by_action["SubscriberDisconnected"]["subject"]["disconnection_id"]
        == (disconnection["disconnection_id"])
    )
    unblock = by_action["POST /service-control/unblock/{user_id}"]
    assert (unblock["role"], unblock["after"]["http_status"]) == ("agent", 409)
    times = [r["occurred_at"] for r in records]
    assert times == sorted(times), "the trail reads in time order"

    # --- no plaintext PII, in the trail or in any log line of the run ---------------
    everything = _audit(system, **window)
    assert {r["audit_id"] for r in records} <= {r["audit_id"] for r in everything}
    pii = _pii_of(line)
    assert plaintext_pii(json.dumps(everything), pii) == []
    log_lines = system.handler_logs() + system.output
    assert len(log_lines) > 100, "the run's log lines were captured"
    assert plaintext_pii("\n".join(log_lines), pii) == []

    # --- the compliance report ------------------------------------------------------
    _check_report(system, records, started, finished)


def _pii_of(line: dict[str, Any]) -> list[str]:
    """The subscriber's personal data as it was sent (plaintext_pii tries the other
    spellings: a spaced Aadhaar, +91 before a phone number, ...)."""
    return [line["kyc"]["number"], line["email"], line["msisdn"], ALTERNATE_PHONE, VPA]


def _check_report(
    system: LocalSystem, records: list[dict[str, Any]], started: datetime, finished: datetime
) -> None:
    """The months the run touched, reported one by one, add up to what it did."""
    months = _ist_months(started, finished)
    written = [
        json.loads(system.cli("report", "monthly", "--month", month, "--json")) for month in months
    ]
    reports = [w["report"] for w in written]
    user_id = records[0]["user_id"]
    admin = system.token(*ADMIN)
    invoices = system.get(f"/users/{user_id}/invoices", admin).json()["invoices"]
    payments = [r for r in records if r["action"] == "PaymentSucceeded"]

    def total(field: str, key: str) -> int:
        return sum(int(report[field].get(key, 0)) for report in reports)

    assert total("activations", "postpaid") == 1
    assert total("blocks_by_reason", "OVERDUE") == 1
    assert total("unblocks_by_reason", "OVERDUE") == 1
    assert total("disconnection_requests_by_reason", "USER_REQUEST") == 1
    assert total("disconnections_by_reason", "USER_REQUEST") == 1
    assert total("invoices_issued", "count") == len(invoices) == 2  # the bill, the final bill
    assert total("invoices_issued", "amount_paise") == sum(i["total_paise"] for i in invoices)
    assert total("payments_succeeded", "count") == 1
    assert total("payments_succeeded", "amount_paise") == payments[0]["after"]["amount_paise"]
    assert sum(r["payments_by_method"].get("UPI", {}).get("count", 0) for r in reports) == 1
    assert sum(r["kyc_rejections"] for r in reports) == 0
    assert total("refunds", "count") == 0
    agent = [r["staff_actions"].get("agent:agent-audit") for r in reports]
    activity = [a for a in agent if a]
    assert sum(a["calls"] for a in activity) == 2  # the activation, the refused unblock
    assert sum(a["refused"] for a in activity) == 1
    # Every record of those months is in their reports, and nothing else is.
    start = datetime.fromisoformat(reports[0]["period_start"])
    end = datetime.fromisoformat(reports[-1]["period_end"])
    trail = _audit(system, **{"from": start.isoformat(), "to": end.isoformat()})
    assert sum(r["records"] for r in reports) == len({r["audit_id"] for r in trail})

    # The documents in S3 say the same: the CSV's rows, summed over the months.
    s3 = system.aws("s3")
    rows: Counter[tuple[str, str, str]] = Counter()
    for document in written:
        bucket = document["csv_uri"].removeprefix("s3://").split("/", 1)[0]
        body = s3.get_object(Bucket=bucket, Key=document["csv_key"])["Body"].read().decode()
        for row in csv.DictReader(io.StringIO(body)):
            if row["value"].isdigit():  # counts and paise (rupees are "399.00")
                rows[row["section"], row["metric"], row["dimension"]] += int(row["value"])
        pdf = s3.get_object(Bucket=bucket, Key=document["pdf_key"])["Body"].read()
        assert pdf.startswith(b"%PDF")
    assert rows["activations", "count", "postpaid"] == 1
    assert rows["blocks", "by_reason", "OVERDUE"] == 1
    assert rows["unblocks", "by_reason", "OVERDUE"] == 1
    assert rows["disconnections", "by_reason", "USER_REQUEST"] == 1
    assert rows["invoices_issued", "count", ""] == len(invoices)
    assert rows["invoices_issued", "amount_paise", ""] == sum(i["total_paise"] for i in invoices)
    assert rows["payments_by_method", "count", "UPI"] == 1
    assert rows["staff_actions", "calls", "agent:agent-audit"] == 2


def _ist_months(start: datetime, end: datetime) -> list[str]:
    """``YYYY-MM`` of every IST calendar month from ``start`` to ``end``."""
    first, last = to_ist(start), to_ist(end)
    months = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months
