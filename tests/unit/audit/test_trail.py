"""Reading the audit trail (shared/services/audit.py) over the in-memory store of
tests/fakes.py: pages across days in time order, cursors that resume exactly
where a page stopped and belong to their query, the range rules, and the user
and actor filters."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.audit import AuditRecord, record_of_event, role_of_actor
from shared.errors import InvalidRequest
from shared.events import DomainEvent
from shared.services.audit import AuditQuery, AuditTrail, InvalidCursor
from tests.fakes import InMemoryAuditStore
from tests.unit.audit.envelopes import delivered_one

T0 = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))
WEEK = (T0, T0 + timedelta(days=7))


def make_record(
    at: datetime, audit_id: str, *, user_id: str | None = "u1", actor: str = "system:billing"
) -> AuditRecord:
    return AuditRecord(
        audit_id=audit_id,
        occurred_at=at,
        action="InvoiceIssued",
        source="billing",
        actor=actor,
        role=role_of_actor(actor),
        user_id=user_id,
    )


@pytest.fixture
def store() -> InMemoryAuditStore:
    return InMemoryAuditStore()


@pytest.fixture
def trail(store: InMemoryAuditStore) -> AuditTrail:
    return AuditTrail(store)


def add(store: InMemoryAuditStore, *records: AuditRecord) -> list[AuditRecord]:
    for record in records:
        assert store.append(record)
    return list(records)


def every_page(trail: AuditTrail, **query: Any) -> list[list[AuditRecord]]:
    """The pages of a query, following next_cursor until there is none."""
    pages: list[list[AuditRecord]] = []
    cursor = None
    while True:
        page = trail.search(AuditQuery(**query, cursor=cursor))
        pages.append(page.records)
        assert len(page.records) <= query.get("limit", 50)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
        assert len(pages) < 100, "the cursors go round in circles"


def ids(records: list[AuditRecord]) -> list[str]:
    return [record.audit_id for record in records]


def a_week_of_records(store: InMemoryAuditStore) -> list[AuditRecord]:
    """Records over four days, some at the same instant, some at a day's first
    and last microsecond (UTC), and one on each side of the week."""
    records = [
        make_record(T0 + timedelta(days=day, hours=hour), f"e-{day}-{hour}-{n}")
        for day in (0, 1, 3, 6)
        for hour in (0, 9, 23)
        for n in range(3)
    ]
    records += [
        make_record(T0 + timedelta(days=2) - timedelta(microseconds=1), "e-last-of-day-1"),
        make_record(T0 + timedelta(days=2), "e-first-of-day-2"),
    ]
    add(store, *records)
    add(store, make_record(T0 - timedelta(microseconds=1), "before"))
    add(store, make_record(T0 + timedelta(days=7), "at-the-end"))
    return sorted(records, key=lambda r: (r.occurred_at, r.audit_id))


# --- pages -----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 4, 7, 38, 200])
def test_paging_through_a_week_returns_every_record_once_in_time_order(
    trail: AuditTrail, store: InMemoryAuditStore, limit: int
) -> None:
    expected = a_week_of_records(store)

    pages = every_page(trail, start=WEEK[0], end=WEEK[1], limit=limit)

    assert ids([record for page in pages for record in page]) == ids(expected)
    assert all(len(page) == limit for page in pages[:-1] if page)


def test_a_range_in_another_time_zone_reads_the_same_instants(
    trail: AuditTrail, store: InMemoryAuditStore
) -> None:
    expected = a_week_of_records(store)
    start, end = T0 + timedelta(hours=9), T0 + timedelta(days=3, hours=9)

    pages = every_page(trail, start=start.astimezone(IST), end=end.astimezone(IST), limit=5)

    found = [record for page in pages for record in page]
    assert ids(found) == ids([r for r in expected if start <= r.occurred_at < end])


def test_a_cursor_resumes_right_after_the_last_record_and_can_be_replayed(
    trail: AuditTrail, store: InMemoryAuditStore
) -> None:
    expected = a_week_of_records(store)
    first = trail.search(AuditQuery(start=WEEK[0], end=WEEK[1], limit=10))
    assert ids(first.records) == ids(expected[:10])
    assert first.next_cursor is not None

    resumed = AuditQuery(start=WEEK[0], end=WEEK[1], limit=10, cursor=first.next_cursor)
    second = trail.search(resumed)

    assert ids(second.records) == ids(expected[10:20])
    assert trail.search(resumed) == second  # a cursor is a position, not a session


def test_a_quiet_range_is_one_empty_page(trail: AuditTrail, store: InMemoryAuditStore) -> None:
    add(store, make_record(T0 - timedelta(days=1), "earlier"))

    page = trail.search(AuditQuery(start=WEEK[0], end=WEEK[1]))

    assert (page.records, page.next_cursor) == ([], None)


def test_the_last_full_page_may_be_followed_by_an_empty_one_and_no_more(
    trail: AuditTrail, store: InMemoryAuditStore
) -> None:
    records = add(store, *(make_record(T0 + timedelta(minutes=n), f"e{n}") for n in range(5)))

    pages = every_page(trail, start=WEEK[0], end=T0 + timedelta(hours=1), limit=5)

    assert ids(pages[0]) == ids(records)
    assert all(page == [] for page in pages[1:])


# --- cursors belong to their query ---------------------------------------------------------


def _decoded(cursor: str) -> dict[str, Any]:
    position: dict[str, Any] = json.loads(base64.urlsafe_b64decode(cursor + "=" * 4))
    return position


def _encoded(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def _first_cursor(trail: AuditTrail, **query: Any) -> str:
    page = trail.search(AuditQuery(limit=2, **query))
    assert page.next_cursor is not None
    return page.next_cursor


def _retargeted(position: dict[str, Any]) -> dict[str, Any]:
    """The same cursor, its key moved to another user's partition."""
    key = {name: value.replace("u1", "u2") for name, value in position["k"].items()}
    return {**position, "k": key}


def _shifted(position: dict[str, Any]) -> dict[str, Any]:
    """The same cursor, its key moved to a time outside the week."""
    return {**position, "k": {**position["k"], "at": (T0 - timedelta(days=30)).isoformat()}}


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "e30",  # base64 of "{}"
        _encoded({"p": "day", "v": "2026-11-22", "k": ["PK", "SK"]}),
        _encoded({"p": "month", "v": "2026-11", "k": None}),
        _encoded({"p": "day", "v": "2026-10-01", "k": None}),  # a day outside the range
    ],
)
def test_a_cursor_this_api_never_returned_is_refused_with_422(
    trail: AuditTrail, store: InMemoryAuditStore, cursor: str
) -> None:
    a_week_of_records(store)

    with pytest.raises(InvalidCursor) as refused:
        trail.search(AuditQuery(start=WEEK[0], end=WEEK[1], cursor=cursor))

    assert (refused.value.status, refused.value.code) == (422, "INVALID_CURSOR")


@pytest.mark.parametrize("tamper", [_retargeted, _shifted])
def test_a_tampered_cursor_key_is_refused(
    trail: AuditTrail, store: InMemoryAuditStore, tamper: Any
) -> None:
    a_week_of_records(store)
    add(store, *(make_record(T0 + timedelta(hours=n), f"u2-{n}", user_id="u2") for n in range(3)))
    cursor = _first_cursor(trail, start=WEEK[0], end=WEEK[1], user_id="u1")

    with pytest.raises(InvalidCursor):
        trail.search(
            AuditQuery(
                start=WEEK[0], end=WEEK[1], user_id="u1", cursor=_encoded(tamper(_decoded(cursor)))
            )
        )


@pytest.mark.parametrize(
    "other",
    [
        {"user_id": "u2"},
        {"actor": "system:billing"},
        {},  # every record of the range: day partitions
    ],
)
def test_a_cursor_of_another_query_is_refused(
    trail: AuditTrail, store: InMemoryAuditStore, other: dict[str, str]
) -> None:
    a_week_of_records(store)
    cursor = _first_cursor(trail, start=WEEK[0], end=WEEK[1], user_id="u1")

    with pytest.raises(InvalidCursor):
        trail.search(AuditQuery(start=WEEK[0], end=WEEK[1], cursor=cursor, **other))


def test_a_cursor_of_a_later_range_is_refused(trail: AuditTrail, store: InMemoryAuditStore) -> None:
    a_week_of_records(store)
    cursor = _first_cursor(trail, start=T0 + timedelta(days=6), end=WEEK[1], user_id="u1")

    with pytest.raises(InvalidCursor):
        trail.search(
            AuditQuery(start=WEEK[0], end=T0 + timedelta(days=1), user_id="u1", cursor=cursor)
        )


# --- the range ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "problem"),
    [
        (T0, T0 + timedelta(days=92, seconds=1), "at most 92 days"),
        (T0, T0, "after"),
        (T0, T0 - timedelta(hours=1), "after"),
        (T0.replace(tzinfo=None), T0 + timedelta(days=1), "time zone"),
        (T0, (T0 + timedelta(days=1)).replace(tzinfo=None), "time zone"),
    ],
)
def test_a_range_that_is_too_wide_backwards_or_without_a_zone_is_refused(
    trail: AuditTrail, start: datetime, end: datetime, problem: str
) -> None:
    with pytest.raises(InvalidRequest, match=problem) as refused:
        trail.search(AuditQuery(start=start, end=end))

    assert refused.value.status == 422


def test_a_full_quarter_is_allowed(trail: AuditTrail, store: InMemoryAuditStore) -> None:
    add(
        store,
        make_record(T0, "first"),
        make_record(T0 + timedelta(days=92) - timedelta(microseconds=1), "last"),
    )

    page = trail.search(AuditQuery(start=T0, end=T0 + timedelta(days=92), limit=200))

    assert ids(page.records) == ["first", "last"]
    assert page.next_cursor is None


# --- filters -------------------------------------------------------------------------------------


def test_a_user_and_an_actor_together_select_records_matching_both(
    trail: AuditTrail, store: InMemoryAuditStore
) -> None:
    wanted = []
    for n in range(12):
        at = T0 + timedelta(hours=n)
        wanted += add(store, make_record(at, f"both-{n}", actor="agent:a1")) if n % 3 == 0 else []
        add(store, make_record(at, f"other-actor-{n}", actor="system:billing"))
        add(store, make_record(at, f"other-user-{n}", user_id="u2", actor="agent:a1"))

    pages = every_page(trail, start=WEEK[0], end=WEEK[1], user_id="u1", actor="agent:a1", limit=2)

    assert ids([record for page in pages for record in page]) == ids(wanted)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"user_id": "u2"}, ["u2-agent", "u2-system"]),
        ({"actor": "agent:a1"}, ["u1-agent", "u2-agent", "staff-only"]),
        ({}, ["u1-agent", "u1-system", "u2-agent", "u2-system", "staff-only"]),
    ],
)
def test_records_are_found_by_user_by_actor_or_by_time_alone(
    trail: AuditTrail, store: InMemoryAuditStore, query: dict[str, str], expected: list[str]
) -> None:
    for n, (audit_id, user_id, actor) in enumerate(
        [
            ("u1-agent", "u1", "agent:a1"),
            ("u1-system", "u1", "system:billing"),
            ("u2-agent", "u2", "agent:a1"),
            ("u2-system", "u2", "system:billing"),
            ("staff-only", None, "agent:a1"),
        ]
    ):
        add(store, make_record(T0 + timedelta(minutes=n), audit_id, user_id=user_id, actor=actor))

    page = trail.search(AuditQuery(start=WEEK[0], end=WEEK[1], **query))

    assert ids(page.records) == expected


# --- writing ------------------------------------------------------------------------------


def test_an_event_delivered_twice_is_recorded_once(
    trail: AuditTrail, store: InMemoryAuditStore
) -> None:
    envelope = delivered_one(
        DomainEvent(
            detail_type="PaymentSucceeded",
            source="payments",
            occurred_at=T0,
            detail={"user_id": "u1", "payment_id": "PAY-1", "amount_paise": 70_682},
        )
    )

    outcomes = [trail.record_event(envelope), trail.record_event(envelope)]

    assert outcomes == ["recorded", "already recorded"]
    assert list(store.records.values()) == [record_of_event(envelope)]


def test_an_appended_record_is_never_replaced(store: InMemoryAuditStore) -> None:
    original = make_record(T0, "e1", actor="agent:a1")
    store.append(original)

    assert not store.append(original.model_copy(update={"actor": "admin:someone-else"}))
    assert list(store.records.values()) == [original]


def test_between_yields_every_record_of_the_range_across_days_in_order(
    trail: AuditTrail, store: InMemoryAuditStore
) -> None:
    expected = a_week_of_records(store)
    many = add(
        store,
        *(make_record(T0 + timedelta(days=4, seconds=n), f"busy-{n:03}") for n in range(450)),
    )

    found = list(trail.between(*WEEK))

    assert ids(found) == ids(sorted(expected + many, key=lambda r: (r.occurred_at, r.audit_id)))
