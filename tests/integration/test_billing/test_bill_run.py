"""Bill runs against moto: exactly one invoice per subscriber and cycle whatever
is repeated or raced; consecutive FY numbers; rental + overage + GST lines."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta
from typing import Any

from shared.invoice_numbers import parse_invoice_number
from shared.services.billing import BillingService, InvoiceRace, Outcome
from shared.stores.billing import DynamoBillingStore
from tests.integration.test_billing.conftest import Billing, at_ist
from tests.integration.usage.conftest import Rating, cdr

DEC_1 = date(2026, 12, 1)


def invoices_of(user_id: str) -> list[Any]:
    return DynamoBillingStore().list_invoices(user_id, 10)


def test_the_same_run_twice_and_every_message_twice_yield_one_invoice_each(
    billing: Billing, postpaid: Any
) -> None:
    users = [f"pp-{n}" for n in range(3)]
    for user in users:
        postpaid(user)
    billing.clock.advance(at_ist(2026, 12, 1) - billing.clock.now())

    first = billing.schedule("bill_run", DEC_1)
    second = billing.schedule("bill_run", DEC_1)
    records = billing.receive()
    assert first["messages"] == second["messages"] == 3
    assert len(records) == 6
    assert billing.work(records + records[:2]) == []  # two messages even a third time

    for user in users:
        (record,) = invoices_of(user)
        assert record.invoice.invoice_id == f"INV-{user}-2026-11-01"
        assert record.published
    issued = billing.events("InvoiceIssued")
    assert sorted(e["detail"]["user_id"] for e in issued) == users
    numbers = sorted(parse_invoice_number(e["detail"]["invoice_number"]).sequence for e in issued)
    assert numbers == [1, 2, 3]
    detail = issued[0]["detail"]
    assert detail["due_date"] == "2026-12-16"
    assert detail["link"] == f"/invoices/{detail['invoice_id']}/pdf"


class Serialized:
    """moto's TransactWriteItems is not isolated between threads (a cancelled one
    restores a snapshot of every table, undoing what other threads wrote meanwhile),
    so each store call runs alone here: the race is in the interleaving of calls,
    which is what DynamoDB guarantees nothing about. ``after_load`` lets a test hold
    a worker between its reads and its transaction."""

    lock = threading.RLock()

    def __init__(self, inner: Any, after_load: Any = None) -> None:
        self._inner = inner
        self._after_load = after_load

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                result = method(*args, **kwargs)
            if name == "load_for_billing" and self._after_load is not None:
                self._after_load()
            return result

        return call


def racing_service(billing: Billing, after_load: Any = None) -> BillingService:
    service = billing.service
    return BillingService(
        store=Serialized(service._store, after_load),
        usage=Serialized(service._usage),
        documents=Serialized(service._documents),
        events=Serialized(service._events),
        clock=billing.clock,
        catalog=Serialized(service._catalog),
    )


def test_two_workers_racing_on_one_subscriber_issue_one_invoice(
    billing: Billing, postpaid: Any
) -> None:
    postpaid("racer")
    barrier = threading.Barrier(2)
    held = threading.local()

    def both_read_before_either_writes() -> None:
        if not getattr(held, "done", False):
            held.done = True
            barrier.wait(timeout=10)

    service = racing_service(billing, both_read_before_either_writes)
    outcomes: list[str] = []

    def work() -> None:
        try:
            outcomes.append(service.issue_cycle_invoice("racer", 1, DEC_1).outcome.value)
        except InvoiceRace:
            outcomes.append("RACE")

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Both saw no invoice and the same counter; the loser's conditional put failed
    # (its message is retried later and then finds the invoice published).
    assert sorted(outcomes) == [Outcome.ISSUED.value, "RACE"]
    assert len(invoices_of("racer")) == 1
    again = billing.service.issue_cycle_invoice("racer", 1, DEC_1)
    assert again.outcome is Outcome.ALREADY_ISSUED
    assert len(billing.events("InvoiceIssued")) == 1


def test_racing_workers_number_many_invoices_consecutively_without_gaps(
    billing: Billing, postpaid: Any
) -> None:
    users = [f"many-{chr(97 + n)}" for n in range(16)]  # distinct test MSISDNs
    for user in users:
        postpaid(user)
    queue = list(users) * 2  # every subscriber offered to two workers
    lock = threading.Lock()
    service = racing_service(billing, lambda: time.sleep(0.002))  # widen the read-write gap
    races = []

    def work() -> None:
        while True:
            with lock:
                if not queue:
                    return
                user = queue.pop()
            try:
                service.issue_cycle_invoice(user, 1, DEC_1)
            except InvoiceRace:
                races.append(user)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(invoices_of(user)) == 1 for user in users)
    invoices = [invoices_of(user)[0].invoice for user in users]
    sequences = sorted(parse_invoice_number(str(i.invoice_number)).sequence for i in invoices)
    assert sequences == list(range(1, len(users) + 1))
    # Announcing is at-least-once: a worker that loads the invoice after it is stored
    # but before it is marked published announces it again, as the same event.
    announced = {
        (e["detail"]["event_id"], e["detail"]["invoice_number"])
        for e in billing.events("InvoiceIssued")
    }
    assert announced == {(f"InvoiceIssued-{i.invoice_id}", i.invoice_number) for i in invoices}


def test_a_subscriber_whose_cycle_day_is_not_due_gets_nothing(
    billing: Billing, postpaid: Any
) -> None:
    postpaid("day-15", day=15)
    assert billing.schedule("bill_run", DEC_1)["messages"] == 0


def test_cycle_day_31_bills_on_the_last_day_of_a_short_month(
    billing: Billing, postpaid: Any
) -> None:
    postpaid("day-31", day=31)
    run = billing.schedule("bill_run", date(2026, 11, 30))
    assert run["cycle_days"] == [30, 31]
    assert billing.drain() == []
    (record,) = invoices_of("day-31")
    assert record.invoice.bill_date == date(2026, 11, 30)


def test_invoice_lists_rental_overage_and_gst_and_later_cdrs_become_late_usage(
    billing: Billing, rating: Rating, postpaid: Any
) -> None:
    msisdn = postpaid("heavy", "POST_BASIC_399")
    billing.clock.advance(timedelta(days=1))
    # 1000 free minutes; 1,100 minutes used: 100 minutes at 50 paise.
    now = billing.clock.now()
    rating.send([cdr(msisdn, "VOICE", 6000, at=now - timedelta(hours=2 + h)) for h in range(11)])
    billing.clock.advance(at_ist(2026, 12, 1, 1) - billing.clock.now())
    billing.schedule("bill_run", DEC_1)
    assert billing.drain() == []
    (record,) = invoices_of("heavy")
    kinds = [line.kind.value for line in record.invoice.lines]
    assert kinds == ["RENTAL", "OVERAGE_VOICE"]
    assert record.invoice.lines[1].amount_paise == 5000
    assert [t.kind.value for t in record.invoice.tax_lines] == ["CGST", "SGST"]

    # A CDR of November arriving now is late usage and lands on the next invoice.
    rating.send([cdr(msisdn, "VOICE", 120, at=at_ist(2026, 11, 30, 22))])
    billing.clock.advance(at_ist(2027, 1, 1, 1) - billing.clock.now())
    billing.schedule("bill_run", date(2027, 1, 1))
    assert billing.drain() == []
    latest = invoices_of("heavy")[0]
    late = [line for line in latest.invoice.lines if line.kind.value == "LATE_USAGE"]
    assert [line.amount_paise for line in late] == [100]  # 2 minutes at 50 paise
    assert "2026-11-01" in late[0].description
