"""Overdue and expiry sweeps, credit notes, and the invoice API's authorization."""

from __future__ import annotations

import base64
import uuid
from datetime import date, timedelta
from io import BytesIO
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from pypdf import PdfReader

from shared import db
from shared.clock import IST
from shared.events import EventBridgePublisher
from shared.models import SubscriberType
from shared.stores.billing import DynamoBillingStore
from tests.apigw import Caller, HttpResult, parse_response
from tests.integration.conftest import MakeSubscriber
from tests.integration.test_billing.conftest import Billing, at_ist

DEC_1 = date(2026, 12, 1)
INVOICE = "INV-owner-2026-11-01"


def issue_december(billing: Billing, postpaid: Any, user: str = "owner") -> str:
    postpaid(user)
    billing.clock.advance(at_ist(2026, 12, 1) - billing.clock.now())
    billing.schedule("bill_run", DEC_1)
    assert billing.drain() == []
    return f"INV-{user}-2026-11-01"


def sweep_overdue_on(billing: Billing, day: date) -> None:
    billing.clock.advance(at_ist(day.year, day.month, day.day) - billing.clock.now())
    billing.schedule("overdue", day)
    assert billing.drain() == []


def test_overdue_after_the_due_date_and_one_notice_after_the_grace(
    billing: Billing, postpaid: Any
) -> None:
    invoice_id = issue_december(billing, postpaid)
    store = DynamoBillingStore()

    sweep_overdue_on(billing, date(2026, 12, 16))  # the due date itself: not yet
    assert store.get_invoice(invoice_id).status.value == "ISSUED"
    sweep_overdue_on(billing, date(2026, 12, 17))
    assert store.get_invoice(invoice_id).status.value == "OVERDUE"
    assert billing.events("InvoiceOverdue") == []

    for day in (date(2026, 12, 24), date(2026, 12, 25)):  # the notice day, then once more
        sweep_overdue_on(billing, day)
        billing.schedule("overdue", day)  # a rerun of the sweep changes nothing either
        assert billing.drain() == []
    notices = billing.events("InvoiceOverdue")
    assert [n["detail"]["invoice_id"] for n in notices] == [invoice_id]
    record = store.get_invoice(invoice_id)
    assert [h.event for h in record.history] == ["ISSUED", "OVERDUE", "OVERDUE_NOTICE"]


def test_scheduled_sweeps_catch_up_a_missed_day_from_their_checkpoint(
    billing: Billing, postpaid: Any
) -> None:
    invoice_id = issue_december(billing, postpaid)  # due 16 December
    store = DynamoBillingStore()
    billing.clock.advance(at_ist(2026, 12, 16) - billing.clock.now())
    assert billing.scheduled("overdue")["days"] == ["2026-12-16"]  # the first run: its day

    # No run on the 17th (an outage): the 18th's covers both days.
    billing.clock.advance(at_ist(2026, 12, 18) - billing.clock.now())
    run = billing.scheduled("overdue")
    assert billing.drain() == []

    assert run["days"] == ["2026-12-17", "2026-12-18"]
    assert run["messages"] == 1
    assert store.get_invoice(invoice_id).status.value == "OVERDUE"
    billing.clock.advance(timedelta(days=1))
    assert billing.scheduled("overdue")["days"] == ["2026-12-19"]


def test_a_notice_claimed_by_a_worker_that_died_before_sending_it_goes_out_on_the_retry(
    billing: Billing, postpaid: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else the subscriber who does not pay would never be blocked."""
    invoice_id = issue_december(billing, postpaid)
    sweep_overdue_on(billing, date(2026, 12, 17))
    billing.clock.advance(at_ist(2026, 12, 24) - billing.clock.now())
    billing.schedule("overdue", date(2026, 12, 24))
    tasks = billing.receive()
    publish = EventBridgePublisher.publish

    def dies(_publisher: EventBridgePublisher, _events: Any) -> None:
        raise RuntimeError("the worker died before PutEvents")

    monkeypatch.setattr(EventBridgePublisher, "publish", dies)
    with pytest.raises(BatchProcessingError):  # every task failed: all back to the queue
        billing.work(tasks)
    monkeypatch.setattr(EventBridgePublisher, "publish", publish)
    assert billing.events("InvoiceOverdue") == []

    assert billing.work(tasks) == []  # SQS delivers the task again
    assert billing.work(tasks) == []  # and once more: nothing new goes out

    notices = billing.events("InvoiceOverdue")
    assert [notice["detail"]["invoice_id"] for notice in notices] == [invoice_id]


def test_a_notice_whose_claim_answer_was_lost_still_goes_out(
    billing: Billing, postpaid: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's UpdateItem applied, its answer timed out, and the SDK's retry
    failed its condition (the flag was set): the claim reads as refused. Seen in
    the soak, where that subscriber was then never blocked."""
    invoice_id = issue_december(billing, postpaid)
    sweep_overdue_on(billing, date(2026, 12, 17))
    claim = DynamoBillingStore.claim_overdue_notice

    def applied_but_answer_lost(store: DynamoBillingStore, *args: Any) -> bool:
        assert claim(store, *args)
        return False

    monkeypatch.setattr(DynamoBillingStore, "claim_overdue_notice", applied_but_answer_lost)
    billing.clock.advance(at_ist(2026, 12, 24) - billing.clock.now())
    billing.schedule("overdue", date(2026, 12, 24))
    tasks = billing.receive()
    assert billing.work(tasks) == []  # the task succeeds: SQS will not deliver it again

    def sent() -> list[str]:
        return [notice["detail"]["invoice_id"] for notice in billing.events("InvoiceOverdue")]

    assert sent() == [invoice_id]
    assert billing.work(tasks) == []  # were it delivered again, nothing new goes out
    assert sent() == [invoice_id]


def test_prepaid_expiry_renews_from_the_wallet_or_announces_plan_expired(
    billing: Billing, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber("renews", SubscriberType.PREPAID, wallet_paise=200_000)
    make_subscriber("poor", SubscriberType.PREPAID, wallet_paise=80_000)
    make_subscriber("manual", SubscriberType.PREPAID, wallet_paise=200_000)
    billing.plans.subscribe("renews", "PRE_VALUE_719")  # auto-renew, 84 days
    billing.plans.subscribe("poor", "PRE_VALUE_719")  # 800 - 719: cannot pay again
    billing.plans.subscribe("manual", "PRE_SMART_299")  # manual recharge
    plans = db.DynamoSubscriptionStore()
    expiry = plans.get_active("renews")
    assert expiry is not None
    ends = set()
    for user in ("renews", "poor", "manual"):
        active = plans.get_active(user)
        assert active is not None
        assert active.valid_until is not None
        ends.add(active.valid_until.astimezone(IST).date() + timedelta(days=1))
    for day in sorted(ends):  # the daily sweep on each day after an expiry
        billing.clock.advance(at_ist(day.year, day.month, day.day, 1) - billing.clock.now())
        for _ in range(2):  # a second sweep (or a redelivery) announces nothing twice
            billing.schedule("expiry", day)
            assert billing.drain() == []

    renewed = plans.get_active("renews")
    assert renewed is not None
    assert renewed.subscription_id != expiry.subscription_id
    assert plans.wallet_balance("renews") == 200_000 - 2 * 71_900
    expired = billing.events("PlanExpired")
    reasons = {e["detail"]["user_id"]: e["detail"]["reason"] for e in expired}
    assert reasons == {"poor": "INSUFFICIENT_BALANCE", "manual": "MANUAL_RECHARGE"}
    assert len(expired) == 2


def test_a_plan_expiry_whose_release_answer_was_lost_is_still_announced(
    billing: Billing, make_subscriber: MakeSubscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release's UpdateItem applied, its answer was lost and the SDK's retry
    failed the condition: the release reads as refused. Without PlanExpired the
    line would never be blocked, and its usage would rate against no plan."""
    make_subscriber("manual", SubscriberType.PREPAID, wallet_paise=200_000)
    billing.plans.subscribe("manual", "PRE_SMART_299")  # manual recharge
    active = db.DynamoSubscriptionStore().get_active("manual")
    assert active is not None
    assert active.valid_until is not None
    day = active.valid_until.astimezone(IST).date() + timedelta(days=1)
    release = DynamoBillingStore.release_expired

    def applied_but_answer_lost(store: DynamoBillingStore, *args: Any) -> bool:
        release(store, *args)  # applied (the first time): the answer never arrives
        return False

    monkeypatch.setattr(DynamoBillingStore, "release_expired", applied_but_answer_lost)
    billing.clock.advance(at_ist(day.year, day.month, day.day, 1) - billing.clock.now())
    billing.schedule("expiry", day)
    tasks = billing.receive()
    assert billing.work(tasks) == []  # the task succeeds: SQS will not deliver it again

    def announced() -> list[str]:
        return [event["detail"]["subscription_id"] for event in billing.events("PlanExpired")]

    assert announced() == [active.subscription_id]
    assert billing.work(tasks) == []  # were it delivered again, nothing new goes out
    assert announced() == [active.subscription_id]


CREDIT_NOTES = "/invoices/{invoice_id}/credit-notes"


def post_credit_note(
    billing: Billing, invoice_id: str, who: Caller, body: dict[str, Any], key: str
) -> HttpResult:
    path = CREDIT_NOTES.format(invoice_id=invoice_id)
    return parse_response(
        billing.api("POST", path, CREDIT_NOTES, who, body=body, idempotency_key=key)
    )


def test_a_credit_note_shows_in_the_history_and_on_the_next_invoice(
    billing: Billing, postpaid: Any
) -> None:
    invoice_id = issue_december(billing, postpaid)
    admin = Caller("ops-admin", "admin")
    body = {"amount_paise": 10_000, "reason": "Network outage on 20 Nov"}
    key = str(uuid.uuid4())
    first = post_credit_note(billing, invoice_id, admin, body, key)
    replay = post_credit_note(billing, invoice_id, admin, body, key)
    assert first.status == 201, first.body
    assert replay.body == first.body  # the same key: one credit note
    agent = post_credit_note(billing, invoice_id, Caller("a1", "agent"), body, "k2")
    assert agent.status == 403
    too_much = {"amount_paise": 10_000_000, "reason": "typo"}
    refused = post_credit_note(billing, invoice_id, admin, too_much, "k3")
    assert (refused.status, refused.error_code) == (409, "CREDIT_EXCEEDS_INVOICE")

    shown = billing.get(f"/invoices/{invoice_id}", "/invoices/{invoice_id}", admin).body
    assert [h["event"] for h in shown["history"]] == ["ISSUED", "CREDIT_NOTE"]
    assert shown["credit_notes"][0]["credit_note_id"] == first.body["credit_note_id"]

    billing.clock.advance(at_ist(2027, 1, 1) - billing.clock.now())
    billing.schedule("bill_run", date(2027, 1, 1))
    assert billing.drain() == []
    january = DynamoBillingStore().get_invoice("INV-owner-2026-12-01").invoice
    credits = [line for line in january.lines if line.kind.value == "CREDIT"]
    assert [line.amount_paise for line in credits] == [-10_000]
    assert first.body["credit_note_id"] in credits[0].description
    assert january.taxable_value_paise == 59_900 - 10_000


def test_a_credit_note_retried_after_its_commit_failed_credits_once(
    billing: Billing, postpaid: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice_id = issue_december(billing, postpaid)
    admin = Caller("ops-admin", "admin")
    body = {"amount_paise": 5_000, "reason": "Network outage on 20 Nov"}
    key = str(uuid.uuid4())
    publish = EventBridgePublisher.publish
    calls = {"n": 0}

    def down_once(publisher: EventBridgePublisher, events: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # committed, then the attempt fails: its answer is lost
            raise ConnectionError("EventBridge unreachable")
        return publish(publisher, events)

    monkeypatch.setattr(EventBridgePublisher, "publish", down_once)
    with pytest.raises(ConnectionError):
        post_credit_note(billing, invoice_id, admin, body, key)
    reused = post_credit_note(billing, invoice_id, admin, {**body, "amount_paise": 6_000}, key)
    assert (reused.status, reused.error_code) == (422, "IDEMPOTENCY_KEY_REUSED")
    retry = post_credit_note(billing, invoice_id, admin, body, key)

    assert retry.status == 201, retry.body
    record = DynamoBillingStore().get_invoice(invoice_id)
    assert [note.credit_note_id for note in record.credit_notes] == [retry.body["credit_note_id"]]
    assert record.credited_paise == 5_000
    announced = billing.events("CreditNoteIssued")
    assert [e["detail"]["credit_note_id"] for e in announced] == [retry.body["credit_note_id"]]
    other = post_credit_note(billing, invoice_id, admin, body, str(uuid.uuid4()))  # another note
    assert other.status == 201, other.body
    assert other.body["credit_note_id"] != retry.body["credit_note_id"]
    assert DynamoBillingStore().get_invoice(invoice_id).credited_paise == 10_000


def test_a_credit_note_announced_again_carries_its_first_event_id(
    billing: Billing, postpaid: Any
) -> None:
    invoice_id = issue_december(billing, postpaid)
    token = "ab" * 32  # one request, issued twice: the second attempt finds the note

    first = billing.service.issue_credit_note(invoice_id, 5_000, "outage", "ops", token)
    again = billing.service.issue_credit_note(invoice_id, 5_000, "outage", "ops", token)

    assert again == first
    ids = {e["detail"]["event_id"] for e in billing.events("CreditNoteIssued")}
    assert ids == {f"CreditNoteIssued-{first.credit_note_id}"}  # the audit keeps one


def test_invoice_api_authorization_and_the_pdf(billing: Billing, postpaid: Any) -> None:
    invoice_id = issue_december(billing, postpaid)
    one, listing = "/invoices/{invoice_id}", "/users/{user_id}/invoices"
    owner, other = Caller("owner"), Caller("someone-else")
    for who, status in ((owner, 200), (Caller("a1", "agent"), 200), (Caller("ad", "admin"), 200),
                        (other, 403)):  # fmt: skip
        assert billing.get(f"/invoices/{invoice_id}", one, who).status == status
        assert billing.get("/users/owner/invoices", listing, who).status == status
    assert billing.get("/invoices/INV-owner-2020-01-01", one, owner).status == 404
    assert billing.get("/invoices/INV-someone-else-2020-01-01", one, owner).status == 403

    shown = billing.get(f"/invoices/{invoice_id}", one, owner).body
    assert shown["status"] == "ISSUED"
    assert {line["kind"] for line in shown["lines"]} == {"RENTAL"}
    assert [t["kind"] for t in shown["tax_lines"]] == ["CGST", "SGST"]
    listed = billing.get("/users/owner/invoices", listing, owner).body["invoices"]
    assert [i["invoice_id"] for i in listed] == [invoice_id]

    response = billing.api(
        "GET", f"/invoices/{invoice_id}/pdf", "/invoices/{invoice_id}/pdf", owner
    )
    assert response["statusCode"] == 200
    assert response["isBase64Encoded"] is True
    pdf = base64.b64decode(response["body"])
    text = " ".join(page.extract_text() for page in PdfReader(BytesIO(pdf)).pages)
    assert shown["invoice_number"] in text
    denied = billing.api("GET", f"/invoices/{invoice_id}/pdf", "/invoices/{invoice_id}/pdf", other)
    assert denied["statusCode"] == 403


def test_a_final_invoice_bills_up_to_disconnection_and_the_bill_run_adds_nothing(
    billing: Billing, postpaid: Any
) -> None:
    postpaid("leaving")
    cut_off = at_ist(2026, 11, 28, 12)
    billing.clock.advance(cut_off - billing.clock.now())
    final = billing.service.final_invoice("leaving")
    assert final.outcome.value == "ISSUED"
    assert final.record is not None
    (rental,) = final.record.invoice.lines
    assert rental.period_end == cut_off
    assert final.record.invoice.bill_date == date(2026, 11, 28)

    billing.clock.advance(at_ist(2026, 12, 1) - billing.clock.now())
    billing.schedule("bill_run", DEC_1)
    assert billing.drain() == []
    assert len(DynamoBillingStore().list_invoices("leaving", 10)) == 1
    assert len(billing.events("InvoiceIssued")) == 1
