"""The audit trail through its real handlers on moto: the worker takes what the
bus rule puts on the audit queue (EventBridge envelopes as SQS records) and GET
/audit reads it back for admins; staff calls to other modules reach the bus as
StaffActionPerformed and from there the trail; the DynamoDB store writes a
record once and offers nothing that changes it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from functions.audit import handler as audit_api
from functions.audit import worker as audit_worker
from shared.audit import AuditRecord, role_of_actor
from shared.clock import FixedClock
from shared.events import DomainEvent, EventBridgePublisher
from shared.models import SubscriberStatus
from shared.service_control import BlockReason, ServiceState
from shared.services.service_control import StatusChange, status_events
from shared.stores.audit import DynamoAuditStore
from tests.apigw import Caller, HttpResult, api_event, lambda_context, parse_response
from tests.integration.conftest import T0, Api, Aws, MakeSubscriber, redelivered, sqs_record

# What the deployed audit rule takes off the bus (infra/audit.py; tests/infra checks
# that list covers every module's source).
SOURCES = ["tbcss.plans", "tbcss.billing", "tbcss.payments", "tbcss.service_control", "tbcss.api"]
ADMIN = Caller("root", "admin")
AGENT = Caller("a1", "agent")
IST = timezone(timedelta(hours=5, minutes=30))
DAY = timedelta(days=1)


@dataclass
class Trail:
    aws: Aws
    queue_url: str

    def publish(self, *events: DomainEvent) -> None:
        EventBridgePublisher(self.aws.events, self.aws.bus_name).publish(list(events))

    def receive(self) -> list[dict[str, Any]]:
        """The audit queue's messages (removed from it), as Lambda SQS records."""
        return self.aws.drain(self.queue_url)

    def work(self, records: list[dict[str, Any]]) -> list[str]:
        """One worker invocation; the message ids SQS will deliver again."""
        return redelivered(audit_worker.handler, records, "audit-worker")

    def deliver(self, *events: DomainEvent) -> None:
        """Publish; the worker consumes what the rule delivered, all of it."""
        self.publish(*events)
        records = self.receive()
        assert len(records) == len(events)
        assert self.work(records) == []

    def items(self) -> list[dict[str, Any]]:
        """Every audit item of the table (a scan: only tests do this)."""
        response = self.aws.dynamodb.scan(TableName=self.aws.table_name, ConsistentRead=True)
        return [item for item in response["Items"] if item["PK"]["S"].startswith("AUDIT#")]

    def get(self, caller: Caller = ADMIN, /, **query: str) -> HttpResult:
        event = api_event("GET", "/audit", caller=caller, query=query or None)
        return parse_response(audit_api.handler(event, lambda_context("audit-api")))

    def every_page(self, **query: str) -> list[dict[str, Any]]:
        """Every record of the query, following next_cursor to the end."""
        records: list[dict[str, Any]] = []
        cursor: dict[str, str] = {}
        for _ in range(100):
            page = self.get(**query, **cursor)
            assert page.status == 200, page.body
            assert len(page.body["records"]) <= int(query.get("limit", "50"))
            records += page.body["records"]
            if page.body["next_cursor"] is None:
                return records
            cursor = {"cursor": page.body["next_cursor"]}
        raise AssertionError("the cursors go round in circles")


@pytest.fixture
def trail(aws: Aws) -> Trail:
    queue_url = aws.sqs.create_queue(QueueName="tbcss-test-audit")["QueueUrl"]
    queue_arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    aws.events.put_rule(
        Name="audit-every-event",
        EventBusName=aws.bus_name,
        EventPattern=json.dumps({"source": SOURCES}),
    )
    aws.events.put_targets(
        Rule="audit-every-event",
        EventBusName=aws.bus_name,
        Targets=[{"Id": "audit", "Arn": queue_arn}],
    )
    return Trail(aws, queue_url)


def event(
    kind: str, source: str, at: datetime, user_id: str | None = "u1", **detail: Any
) -> DomainEvent:
    return DomainEvent(
        detail_type=kind,
        source=source,
        occurred_at=at,
        detail={**({"user_id": user_id} if user_id else {}), **detail},
    )


def the_block_by_an_agent(at: datetime) -> list[DomainEvent]:
    state = ServiceState(
        user_id="u1",
        msisdn="9876543210",
        status=SubscriberStatus.TEMP_BLOCKED,
        reasons=frozenset({BlockReason.AGENT}),
    )
    change = StatusChange(
        at=at,
        actor="agent:a1",
        cause="asked by phone",
        applied=frozenset({BlockReason.AGENT}),
        status_before=SubscriberStatus.ACTIVE,
        status_after=SubscriberStatus.TEMP_BLOCKED,
    )
    return status_events(state, change)


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [record["audit_id"] for record in records]


def window(start: datetime, end: datetime) -> dict[str, str]:
    return {"from": start.isoformat(), "to": end.isoformat()}


# --- the worker ------------------------------------------------------------------------


def test_every_event_on_the_bus_becomes_a_record_readable_by_user_and_actor(
    trail: Trail,
) -> None:
    invoiced = event(
        "InvoiceIssued", "billing", T0, invoice_id="INV-u1-2026-11-01", total_paise=70_682
    )
    paid = event(
        "PaymentSucceeded",
        "payments",
        T0 + timedelta(hours=1),
        payment_id="PAY-0123456789ABCDEF0123",
        vpa="asha@okbank",
        amount_paise=70_682,
    )
    (blocked,) = the_block_by_an_agent(T0 + timedelta(hours=2))
    other = event("PlanChanged", "plans", T0 + timedelta(hours=3), user_id="u2", plan_id="P1")

    trail.deliver(invoiced, paid, blocked, other)

    assert len(trail.items()) == 4
    mine = trail.every_page(user_id="u1", **window(T0, T0 + DAY))
    assert ids(mine) == [invoiced.event_id, paid.event_id, blocked.event_id]
    assert [(r["action"], r["actor"], r["role"]) for r in mine] == [
        ("InvoiceIssued", "system:billing", "system"),
        ("PaymentSucceeded", "system:payments", "system"),
        ("ServiceBlocked", "agent:a1", "agent"),
    ]
    assert mine[1]["subject"] == {"payment_id": "PAY-0123456789ABCDEF0123"}
    assert mine[1]["after"] == {"amount_paise": 70_682}
    assert "vpa" in mine[1]["omitted"]
    assert "asha@okbank" not in json.dumps(mine)
    by_agent = trail.every_page(actor="agent:a1", **window(T0, T0 + DAY))
    assert ids(by_agent) == [blocked.event_id]


def test_a_message_delivered_twice_is_one_record(trail: Trail) -> None:
    paid = event("PaymentSucceeded", "payments", T0, payment_id="PAY-1", amount_paise=100)
    trail.publish(paid)
    trail.publish(paid)  # the publisher's retry: the same event id in a new envelope
    first, second = trail.receive()

    assert trail.work([first, second]) == []
    assert trail.work([first]) == []  # SQS redelivers a message the worker already took

    (item,) = trail.items()
    assert json.loads(item["record"]["S"])["audit_id"] == paid.event_id


def test_a_poison_message_is_reported_and_the_rest_of_the_batch_is_recorded(
    trail: Trail,
) -> None:
    good = [
        event("InvoiceIssued", "billing", T0 + timedelta(minutes=n), invoice_id=f"INV-{n}")
        for n in range(3)
    ]
    trail.publish(*good)
    delivered = trail.receive()
    poison = [
        sqs_record("not-json", "this is not JSON"),
        sqs_record("no-type", json.dumps({"source": "tbcss.billing", "detail": {}})),
        sqs_record("a-task", json.dumps({"task": "rebuild"})),
    ]

    failed = trail.work([delivered[0], *poison, *delivered[1:]])

    assert failed == ["not-json", "no-type", "a-task"]
    page = trail.get(**window(T0, T0 + DAY))
    assert ids(page.body["records"]) == [e.event_id for e in good]


# --- GET /audit ------------------------------------------------------------------------------


def seed(store: DynamoAuditStore, start: datetime, count: int, first: int = 0) -> list[AuditRecord]:
    """``count`` records two hours and a bit apart from ``start``: users u0-u2, actors
    agent:a0/agent:a1/system:billing (both in turn, so filters cut across each other)."""
    actors = ["agent:a0", "agent:a1", "system:billing"]
    records = []
    for n in range(first, first + count):
        actor = actors[n % 3] if n % 2 else actors[(n + 1) % 3]
        record = AuditRecord(
            audit_id=f"e{n:03}",
            occurred_at=start + timedelta(hours=2 * (n - first), minutes=n % 7),
            action="ServiceBlocked",
            source="service_control",
            actor=actor,
            role=role_of_actor(actor),
            user_id=f"u{n % 3}",
            after={"status": "TEMP_BLOCKED"},
        )
        assert store.append(record)
        records.append(record)
    return records


@pytest.fixture
def forty(trail: Trail) -> list[AuditRecord]:
    """40 records over about 3.5 days from T0 (a few days' partitions)."""
    return seed(DynamoAuditStore(), T0, 40)


def test_an_admin_pages_through_a_range_and_sees_each_record_once_in_time_order(
    trail: Trail, forty: list[AuditRecord]
) -> None:
    found = trail.every_page(limit="7", **window(T0, T0 + 4 * DAY))

    assert ids(found) == [r.audit_id for r in forty]
    assert AuditRecord.model_validate(found[5]) == forty[5]


@pytest.mark.parametrize(
    "query",
    [
        {"user_id": "u1"},
        {"actor": "agent:a1"},
        {"user_id": "u2", "actor": "system:billing"},
    ],
)
def test_an_admin_filters_by_user_and_actor_over_several_pages(
    trail: Trail, forty: list[AuditRecord], query: dict[str, str]
) -> None:
    expected = [
        r.audit_id
        for r in forty
        if r.user_id == query.get("user_id", r.user_id) and r.actor == query.get("actor", r.actor)
    ]

    found = trail.every_page(limit="3", **query, **window(T0, T0 + 4 * DAY))

    assert len(expected) >= 4
    assert ids(found) == expected


def test_from_and_to_select_a_range_in_any_time_zone(
    trail: Trail, forty: list[AuditRecord]
) -> None:
    start, end = T0 + timedelta(hours=13), T0 + 2 * DAY + timedelta(hours=1)

    found = trail.every_page(limit="4", **window(start.astimezone(IST), end.astimezone(IST)))

    assert ids(found) == [r.audit_id for r in forty if start <= r.occurred_at < end]


def test_without_a_range_the_last_seven_days_are_read(trail: Trail) -> None:
    now = datetime.now(UTC)
    seed(DynamoAuditStore(), now - timedelta(days=7, hours=1), 1)
    (recent,) = seed(DynamoAuditStore(), now - timedelta(hours=1), 1, first=1)

    page = trail.get()

    assert page.status == 200, page.body
    assert [AuditRecord.model_validate(r) for r in page.body["records"]] == [recent]


@pytest.mark.parametrize("caller", [AGENT, Caller("u1", "subscriber"), Caller("wf", "service")])
def test_only_admins_may_read_the_trail(
    trail: Trail, forty: list[AuditRecord], caller: Caller
) -> None:
    refused = trail.get(caller, user_id="u1", **window(T0, T0 + DAY))

    assert refused.status == 403
    assert refused.error_code == "FORBIDDEN"
    assert "records" not in refused.body


def test_a_bad_cursor_is_a_422_with_the_api_error_body(
    trail: Trail, forty: list[AuditRecord]
) -> None:
    refused = trail.get(cursor="bm90LWEtY3Vyc29y", **window(T0, T0 + DAY))  # "not-a-cursor"

    assert refused.status == 422
    assert set(refused.body) == {"error"}
    assert refused.body["error"]["code"] == "INVALID_CURSOR"
    assert refused.body["error"]["message"]


def test_a_cursor_from_another_range_or_user_is_a_422(
    trail: Trail, forty: list[AuditRecord]
) -> None:
    later = trail.get(user_id="u1", limit="2", **window(T0 + 2 * DAY, T0 + 4 * DAY))
    cursor = later.body["next_cursor"]
    assert cursor

    for query in (
        {"user_id": "u1", **window(T0, T0 + DAY)},  # the cursor's key lies past this range
        {"user_id": "u2", **window(T0 + 2 * DAY, T0 + 4 * DAY)},
        window(T0 + 2 * DAY, T0 + 4 * DAY),
    ):
        refused = trail.get(cursor=cursor, **query)
        assert (refused.status, refused.error_code) == (422, "INVALID_CURSOR"), query


@pytest.mark.parametrize(
    "query",
    [
        {"from": "2026-11-25T10:00:00", "to": "2026-11-26T10:00:00"},  # no time zone
        window(T0 + DAY, T0),
        window(T0, T0 + timedelta(days=93)),
        {"limit": "0"},
        {"limit": "201"},
        {"user_id": "u1; DROP"},
        {"actor": "nobody"},
        {"from": "yesterday"},
        # Years whose way to UTC overflows, or whose keys would not sort by time.
        {"from": "0001-01-01T00:00:00+05:30", "to": "0001-01-02T00:00:00+05:30"},
        {"to": "0001-01-03T00:00:00Z"},
        {"to": "9999-12-31T23:00:00-05:00"},
        {"from": "0999-12-01T00:00:00Z", "to": "1000-01-15T00:00:00Z"},
    ],
)
def test_a_bad_query_is_a_422_with_the_api_error_body(trail: Trail, query: dict[str, str]) -> None:
    refused = trail.get(**query)

    assert refused.status == 422, refused.body
    assert set(refused.body) == {"error"}
    assert refused.body["error"]["code"] == "VALIDATION_ERROR"
    assert refused.body["error"]["message"]


# --- staff calls to other modules ----------------------------------------------------------


def test_an_agents_call_to_another_module_reaches_the_trail_and_a_subscribers_does_not(
    trail: Trail, api: Api, make_subscriber: MakeSubscriber, clock: FixedClock
) -> None:
    trail.aws.tap("api")
    make_subscriber("u1", wallet_paise=100_000)
    make_subscriber("u2", wallet_paise=100_000)
    body = {"user_id": "u1", "plan_id": "PRE_SMART_299"}
    before = datetime.now(UTC)

    by_agent = api.post("/subscribe", body, as_user=AGENT)
    refused = api.post("/subscribe", {**body, "plan_id": "PRE_DATA_49"}, as_user=AGENT)
    by_owner = api.post("/subscribe", {"user_id": "u2", "plan_id": "PRE_SMART_299"}, as_user="u2")

    assert (by_agent.status, refused.status, by_owner.status) == (201, 409, 201), by_agent.body
    actions = [e for e in trail.aws.published() if e["detail-type"] == "StaffActionPerformed"]
    assert [(a["source"], a["detail"]["http_status"]) for a in actions] == [
        ("tbcss.api", 201),
        ("tbcss.api", 409),
    ]
    assert actions[0]["detail"]["actor"] == "agent:a1"
    assert actions[0]["detail"]["action"] == "POST /subscribe"
    assert "PRE_SMART_299" not in json.dumps(actions)  # the body stays out

    # The audit rule took them too, with the plan changes of both subscriptions.
    assert trail.work(trail.receive()) == []
    now = datetime.now(UTC)
    by_a1 = trail.every_page(actor="agent:a1", **window(before - DAY, now + DAY))
    # Sorted: the test's fixed clock gives both calls the same time.
    assert sorted((r["action"], r["after"]["http_status"]) for r in by_a1) == [
        ("POST /subscribe", 201),
        ("POST /subscribe", 409),
    ]
    changes = [
        r for r in trail.every_page(**window(T0 - DAY, T0 + DAY)) if r["action"] == "PlanChanged"
    ]
    assert sorted((r["user_id"], r["actor"]) for r in changes) == [
        ("u1", "system:plans"),
        ("u2", "system:plans"),
    ]


# --- the store ----------------------------------------------------------------------------------


def test_the_store_appends_once_and_never_overwrites(trail: Trail) -> None:
    store = DynamoAuditStore()
    (original,) = seed(store, T0, 1)
    forged = original.model_copy(update={"actor": "admin:mallory", "after": {"status": "ACTIVE"}})

    assert store.append(forged) is False

    (item,) = trail.items()
    assert AuditRecord.model_validate_json(item["record"]["S"]) == original
    assert ids(trail.get(actor="admin:mallory", **window(T0, T0 + DAY)).body["records"]) == []


def test_an_event_announced_again_later_is_still_one_record(trail: Trail) -> None:
    """A retried step publishes its event again: the same id, a later time."""
    store = DynamoAuditStore()
    (first,) = seed(store, T0, 1)
    again = first.model_copy(update={"occurred_at": T0 + timedelta(minutes=5)})

    assert store.append(again) is False
    records = trail.every_page(**window(T0 - DAY, T0 + DAY))
    assert [(r["audit_id"], r["occurred_at"]) for r in records] == [
        (first.audit_id, first.occurred_at.isoformat().replace("+00:00", "Z"))
    ]


def test_the_store_offers_no_way_to_change_or_remove_a_record() -> None:
    operations = {name for name in dir(DynamoAuditStore) if not name.startswith("_")}

    assert operations == {"append", "read"}


def test_records_are_indexed_by_utc_day_user_and_actor(trail: Trail) -> None:
    at = datetime(2026, 11, 25, 4, 0, tzinfo=IST)  # still the 24th in UTC
    (blocked,) = the_block_by_an_agent(at)

    trail.deliver(blocked)

    (item,) = trail.items()
    keys = {name: item[name]["S"] for name in ("PK", "SK", "GSI1PK", "GSI1SK", "GSI2PK")}
    assert keys == {
        "PK": "AUDIT#2026-11-24",
        "SK": f"2026-11-24T22:30:00.000000Z#{blocked.event_id}",
        "GSI1PK": "AUDITUSER#u1",
        "GSI1SK": keys["SK"],
        "GSI2PK": "AUDITACTOR#agent:a1",
    }
    assert "expires_at" not in item  # no TTL: records stay
