"""The disconnection workflow for real: the synthesized stack deployed into moto,
the state machine run by moto's Step Functions interpreter, every task run by
the real handler in a local worker process, the service-control worker fed by
its queue (and the bus rule into it).

One runtime for the module. Its clock only moves forward, so the tests run in
file order: first the lines two days into their first bill cycle (one per
reason, and the network that refuses to let go), then lines past their first
bill date with that bill unpaid.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
import requests

from infra.local.runtime import (
    LocalRuntime,
    RuntimeOptions,
    aws_environment,
    seed_subscriber,
)
from shared.clock import to_ist
from shared.cycles import cycle_containing
from shared.db import (
    DynamoSubscriptionStore,
    SubscriberItem,
    bind_table,
    current_table,
    dormant_index_pk,
    user_pk,
)
from shared.events import DomainEvent, EventBridgePublisher
from shared.models import Subscriber, SubscriberStatus, SubscriberType
from shared.network import LineRecord
from shared.network_lines import SsmLineRegistry, line_registry
from shared.services.activation import LAST_BILL_CYCLE_DAY
from shared.services.billing import parse_invoice_id
from shared.settings import Settings
from shared.stores.activation import msisdn_pk
from shared.stores.billing import InvoiceItem, invoice_sk
from shared.stores.service_control import MSISDN_SK, PROFILE_SK, MsisdnReleaseMark
from tests.activation_data import activation_body

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / ".tbcss" / "tests-disconnection"
DEADLINE_SECONDS = 90  # generous: a loaded machine runs the workers slowly
COOLING_OFF = timedelta(days=int(Settings.model_fields["msisdn_cooling_off_days"].default))
INACTIVE_FOR = timedelta(days=int(Settings.model_fields["inactivity_days"].default) + 1)
KNOBS = "/tbcss/dev/simulator-knobs"
LINES = "/tbcss/dev/simulator/lines"

AGENT = ("agent-7", "agent")
# Who asks for each reason, and the proof the policy wants (shared.service_control.POLICIES).
REQUESTS: dict[str, tuple[str | None, str | None]] = {
    "USER_REQUEST": (None, None),  # the owner, no proof
    "FRAUD": ("admin", "FRAUD-CASE-2211"),
    "PORT_OUT": ("agent", "UPC-KA-88112"),
    "DECEASED": ("agent", "DC-KA-2026-0042"),
}

# The workflow's steps when nothing waits and nothing fails, in order.
DISCONNECTED = [
    ("Request", "ACCEPTED"),
    ("FinalBill", "ISSUED"),
    ("CheckDues", "PROCEED"),
    ("Deprovision", "SUCCEEDED"),
    ("Complete", "PERMANENT_DISCONNECTED"),
    ("Notify", "SENT"),
]

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        result = probe()
        if result is not None:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {DEADLINE_SECONDS} s waiting for {what}")


@dataclass(frozen=True)
class Line:
    user_id: str
    msisdn: str
    iccid: str


@dataclass
class DisconnectionSystem:
    runtime: LocalRuntime
    logs: list[str]
    events_queue: str = ""
    events_seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def deployment(self) -> Any:
        assert self.runtime.deployment is not None
        return self.runtime.deployment

    @property
    def table(self) -> str:
        return str(next(iter(self.deployment.tables.values())))

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.runtime.endpoint_url,
            region_name=self.deployment.region,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def now(self) -> datetime:
        return self.runtime.clock.now()

    def advance_to(self, moment: datetime) -> None:
        """The runtime's clock (and every schedule due meanwhile: bill runs, sweeps)."""
        seconds = (moment - self.now()).total_seconds()
        if seconds > 0:
            self.runtime.clock_advance(seconds)

    # --- the API ---------------------------------------------------------------------

    def headers(self, sub: str, role: str, key: str | None = None) -> dict[str, str]:
        assert self.runtime.issuer is not None
        headers = {"Authorization": f"Bearer {self.runtime.issuer.issue(sub, [role])}"}
        return headers | ({"Idempotency-Key": key} if key else {})

    def get(self, path: str, who: tuple[str, str] = AGENT) -> dict[str, Any]:
        response = requests.get(self.runtime.api_url + path, headers=self.headers(*who), timeout=30)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def post(self, path: str, body: dict[str, Any], who: tuple[str, str]) -> requests.Response:
        headers = self.headers(*who, key=str(uuid.uuid4()))
        return requests.post(self.runtime.api_url + path, json=body, headers=headers, timeout=30)

    def activate_postpaid(self, count: int) -> list[Line]:
        """``count`` postpaid lines, activated side by side, once all are ACTIVE."""
        bodies = [
            activation_body(plan_id="POST_BASIC_399", subscriber_type="postpaid")
            for _ in range(count)
        ]
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(self._activate, bodies))

    def _activate(self, body: dict[str, Any]) -> Line:
        accepted = self.post("/activate-sim", body, AGENT)
        assert accepted.status_code == 202, accepted.text
        path = f"/activations/{accepted.json()['activation_id']}"
        wait_for(lambda: self.get(path)["status"] == "ACTIVE" or None, f"{path} ACTIVE")
        return Line(accepted.json()["user_id"], body["msisdn"], body["iccid"])

    def seed_postpaid(self, bill_cycle_day: int) -> Line:
        """A line on POST_BASIC_399 as activation leaves one (profile, number, SIM
        claim, network line: seed_subscriber) but with the given bill-cycle day
        (activation's is always today's); the plan bought through the API."""
        body = activation_body(plan_id="POST_BASIC_399", subscriber_type="postpaid")
        line = Line(f"u-{uuid.uuid4().hex}", body["msisdn"], body["iccid"])
        subscriber = Subscriber(
            user_id=line.user_id,
            msisdn=line.msisdn,
            iccid=line.iccid,
            subscriber_type=SubscriberType.POSTPAID,
            state=body["state"],
            status=SubscriberStatus.ACTIVE,
            bill_cycle_day=bill_cycle_day,
            created_at=self.now(),
            name=body["name"],
            email=body["email"],
        )
        previous = current_table()
        with aws_environment(self.runtime.endpoint_url, self.deployment.region):
            bind_table(self.table, self.deployment.region)
            try:
                lines = line_registry(LINES)
                assert seed_subscriber(DynamoSubscriptionStore(), subscriber, lines=lines)
            finally:
                bind_table(*previous)  # this process's other tests keep their table
        owner = (line.user_id, "subscriber")
        bought = self.post(
            "/subscribe", {"user_id": line.user_id, "plan_id": body["plan_id"]}, owner
        )
        assert bought.status_code == 201, bought.text
        return line

    def disconnect(self, line: Line, reason: str) -> str:
        role, proof = REQUESTS[reason]
        who = (line.user_id, "subscriber") if role is None else (f"{role}-7", role)
        body = {"reason": reason} | ({"proof_reference": proof} if proof else {})
        accepted = self.post(f"/service-control/disconnect/{line.user_id}", body, who)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["status"] == "REQUESTED"
        return str(accepted.json()["disconnection_id"])

    def disconnection(self, disconnection_id: str) -> dict[str, Any]:
        return self.get(f"/service-control/disconnections/{disconnection_id}")

    def status(self, user_id: str) -> dict[str, Any]:
        return self.get(f"/service-control/status/{user_id}")

    def invoices(self, user_id: str) -> list[dict[str, Any]]:
        invoices: list[dict[str, Any]] = self.get(f"/users/{user_id}/invoices")["invoices"]
        return invoices

    # --- the workflow --------------------------------------------------------------------

    def finish(self, execution: str) -> str:
        """Wait until the execution (named by the service) has ended; its status."""
        (machine,) = [
            arn for key, arn in self.deployment.state_machines.items() if "Disconnection" in key
        ]
        arn = machine.replace(":stateMachine:", ":execution:") + f":{execution}"
        sfn = self.client("stepfunctions")

        def ended() -> str | None:
            try:
                status = str(sfn.describe_execution(executionArn=arn)["status"])
            except sfn.exceptions.ExecutionDoesNotExist:
                return None  # not started yet (the worker starts resumes)
            return None if status == "RUNNING" else status

        return wait_for(ended, f"execution {execution}")

    # --- what the network, the table and the bus show -----------------------------------

    def line(self, msisdn: str) -> LineRecord:
        record = SsmLineRegistry(self.client("ssm"), LINES).get(msisdn)
        assert record is not None, f"the simulator has no line {msisdn}"
        return record

    def set_knobs(self, knobs: dict[str, Any]) -> None:
        self.client("ssm").put_parameter(
            Name=KNOBS, Value=json.dumps(knobs), Type="String", Overwrite=True
        )

    def profile(self, user_id: str) -> SubscriberItem:
        answer = self.client("dynamodb").get_item(
            TableName=self.table,
            Key={"PK": {"S": user_pk(user_id)}, "SK": {"S": PROFILE_SK}},
            ConsistentRead=True,
        )
        return SubscriberItem.from_raw_data(answer["Item"])

    def msisdn_item(self, msisdn: str) -> MsisdnReleaseMark:
        answer = self.client("dynamodb").get_item(
            TableName=self.table,
            Key={"PK": {"S": msisdn_pk(msisdn)}, "SK": {"S": MSISDN_SK}},
            ConsistentRead=True,
        )
        return MsisdnReleaseMark.from_raw_data(answer["Item"])

    def start_inactivity_clock(self, user_id: str, since: datetime) -> None:
        """What service control writes when an unpaid bill or an expired plan starts
        the clock (DynamoServiceStore.save): the time, and the inactivity index."""
        self.client("dynamodb").update_item(
            TableName=self.table,
            Key={"PK": {"S": user_pk(user_id)}, "SK": {"S": PROFILE_SK}},
            UpdateExpression="SET #since = :since, #pk = :pk, #sk = :sk",
            ExpressionAttributeNames={
                "#since": SubscriberItem.dormant_since.attr_name,
                "#pk": SubscriberItem.gsi1pk.attr_name,
                "#sk": SubscriberItem.gsi1sk.attr_name,
            },
            ExpressionAttributeValues={
                ":since": {"S": SubscriberItem.dormant_since.serialize(since)},
                ":pk": {"S": dormant_index_pk(since, user_id)},
                ":sk": {"S": user_pk(user_id)},
            },
        )

    def send_task(self, message: dict[str, Any]) -> None:
        (url,) = [
            u
            for k, u in self.deployment.queues.items()
            if "ServiceControlQueue" in k and "Dlq" not in k
        ]
        self.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(message))

    def pay(self, user_id: str, invoice_id: str) -> None:
        """Payments are issue 8: the invoice is marked PAID in the table and the bus
        gets the PaymentSucceeded that issue will publish."""
        _, label = parse_invoice_id(invoice_id)
        self.client("dynamodb").update_item(
            TableName=self.table,
            Key={"PK": {"S": user_pk(user_id)}, "SK": {"S": invoice_sk(label, invoice_id)}},
            UpdateExpression="SET #status = :paid",
            ExpressionAttributeNames={"#status": InvoiceItem.status.attr_name},
            ExpressionAttributeValues={":paid": {"S": "PAID"}},
        )
        (bus,) = self.deployment.buses.values()
        payment = DomainEvent(
            detail_type="PaymentSucceeded",
            source="payments",
            detail={"user_id": user_id, "invoice_id": invoice_id, "purpose": "INVOICE"},
            occurred_at=self.now(),
        )
        EventBridgePublisher(self.client("events"), bus).publish([payment])

    def disconnected_events(self, user_id: str) -> list[dict[str, Any]]:
        """SubscriberDisconnected events of one subscriber that reached the bus so far."""
        sqs = self.client("sqs")
        while batch := sqs.receive_message(
            QueueUrl=self.events_queue, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            self.events_seen += [json.loads(message["Body"]) for message in batch]
            for message in batch:
                sqs.delete_message(
                    QueueUrl=self.events_queue, ReceiptHandle=message["ReceiptHandle"]
                )
        # By event id, as consumers do: a retried Complete announces again.
        unique = {event["detail"]["event_id"]: event for event in self.events_seen}
        return [
            event
            for event in unique.values()
            if event["detail-type"] == "SubscriberDisconnected"
            and event["detail"]["user_id"] == user_id
        ]


@pytest.fixture(scope="module")
def system() -> Iterator[DisconnectionSystem]:
    logs: list[str] = []
    options = RuntimeOptions(port=0, state_dir=STATE_DIR, echo=logs.append)
    with LocalRuntime(options) as runtime:
        system = DisconnectionSystem(runtime, logs)
        system.events_queue = _tap_service_control_events(system)
        yield system


def _tap_service_control_events(system: DisconnectionSystem) -> str:
    sqs, events = system.client("sqs"), system.client("events")
    url = sqs.create_queue(QueueName="service-control-events-tap")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    (bus,) = system.deployment.buses.values()
    events.put_rule(
        Name="tap-service-control",
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["tbcss.service_control"]}),
    )
    events.put_targets(
        Rule="tap-service-control", EventBusName=bus, Targets=[{"Id": "t", "Arn": arn}]
    )
    return str(url)


@pytest.fixture(scope="module")
def two_days_in(system: DisconnectionSystem) -> dict[str, Line]:
    """A line per reason (and one for the failing network), two days of rental
    unbilled: a disconnection minutes after activation would bill nothing."""
    names = [*REQUESTS, "INACTIVITY", "NETWORK_FAILS"]
    lines = dict(zip(names, system.activate_postpaid(len(names)), strict=True))
    system.advance_to(system.now() + timedelta(days=2))
    return lines


@pytest.fixture(scope="module")
def first_bill_unpaid(system: DisconnectionSystem) -> dict[str, Line]:
    """Two lines two days past their first bill date, that bill issued and unpaid.

    Their bill-cycle day is two days on, so the first bill is a day or two of rental:
    activated lines would bill in a month, and walking the clock a month fires each
    daily sweep thirty-odd times (most of this module's minutes)."""
    day = to_ist(system.now() + timedelta(days=2)).day
    cycle_day = day if day <= LAST_BILL_CYCLE_DAY else 1
    lines = {reason: system.seed_postpaid(cycle_day) for reason in ("USER_REQUEST", "FRAUD")}
    bill_dates = []
    for line in lines.values():
        profile = system.profile(line.user_id)
        # The first cycle ends on the next bill-cycle day.
        bill_dates.append(cycle_containing(int(profile.bill_cycle_day), profile.created_at).end)
    system.advance_to(max(bill_dates) + timedelta(days=2))
    for line in lines.values():
        wait_for(lambda line=line: system.invoices(line.user_id) or None, "the bill run")
    return lines


def _steps(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(entry["step"], entry["outcome"]) for entry in record["history"]]


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _assert_disconnected(
    system: DisconnectionSystem, line: Line, record: dict[str, Any], reason: str
) -> None:
    """What a disconnected line shows: the record, its final invoice, the status,
    the network, the event, and the number cooling off."""
    assert record["status"] == "DISCONNECTED"
    assert record["reason"] == reason
    invoice_ids = {invoice["invoice_id"]: invoice for invoice in system.invoices(line.user_id)}
    final = invoice_ids[record["final_invoice_id"]]
    assert final["total_paise"] > 0
    assert system.status(line.user_id)["status"] == "PERMANENT_DISCONNECTED"

    network = system.line(line.msisdn)
    assert not network.provisioned
    assert network.iccid is None
    assert network.history[-1].endswith(" DEPROVISION")

    (event,) = wait_for(lambda: system.disconnected_events(line.user_id) or None, "the event")
    detail = event["detail"]
    assert detail["reason"] == reason
    assert detail["disconnection_id"] == record["disconnection_id"]
    assert detail["final_invoice_id"] == record["final_invoice_id"]
    released = _moment(detail["msisdn_released_at"])
    # Events carry whole seconds (shared.clock.isoformat).
    assert released == _moment(record["msisdn_released_at"]).replace(microsecond=0)
    # Released a cooling-off period after completion (the clock stood still since).
    assert abs(released - (system.now() + COOLING_OFF)) < timedelta(minutes=2)
    number = system.msisdn_item(line.msisdn)
    assert number.user_id == line.user_id  # still theirs while it cools off
    assert number.expires_at == int(released.timestamp())


# --- two days into the first cycle ------------------------------------------------------


@pytest.mark.parametrize("reason", list(REQUESTS))
def test_requested_disconnection_ends_disconnected(
    system: DisconnectionSystem, two_days_in: dict[str, Line], reason: str
) -> None:
    line = two_days_in[reason]
    disconnection_id = system.disconnect(line, reason)

    assert system.finish(disconnection_id) == "SUCCEEDED"
    record = system.disconnection(disconnection_id)
    assert _steps(record) == DISCONNECTED
    assert record["dues_paise"] == 0
    _assert_disconnected(system, line, record, reason)
    # The only invoice: two days of rental, billed when the line closed.
    assert [i["invoice_id"] for i in system.invoices(line.user_id)] == [record["final_invoice_id"]]


def test_inactive_line_is_disconnected_by_the_worker(
    system: DisconnectionSystem, two_days_in: dict[str, Line]
) -> None:
    line = two_days_in["INACTIVITY"]
    system.start_inactivity_clock(line.user_id, system.now() - INACTIVE_FOR)
    # What the daily sweep sends for each line it finds in the inactivity index.
    system.send_task({"task": "inactivity", "user_id": line.user_id})

    disconnection_id = wait_for(
        lambda: system.profile(line.user_id).disconnection_id, "the worker to start it"
    )
    assert system.finish(disconnection_id) == "SUCCEEDED"
    record = system.disconnection(disconnection_id)
    assert _steps(record) == DISCONNECTED
    assert record["requested_by"] == "service:inactivity-sweep"
    _assert_disconnected(system, line, record, "INACTIVITY")
    assert system.profile(line.user_id).dormant_since is None  # out of the sweep's index


def test_network_refusing_the_deprovision_escalates(
    system: DisconnectionSystem, two_days_in: dict[str, Line]
) -> None:
    line = two_days_in["NETWORK_FAILS"]
    system.set_knobs({"network": {"permanent_failure_rate": 1.0}})
    try:
        disconnection_id = system.disconnect(line, "DECEASED")
        status = system.finish(disconnection_id)
    finally:
        system.set_knobs({})

    assert status == "FAILED"
    record = system.disconnection(disconnection_id)
    assert record["status"] == "ESCALATED"
    assert _steps(record) == [
        ("Request", "ACCEPTED"),
        ("FinalBill", "ISSUED"),
        ("CheckDues", "PROCEED"),
        ("Escalate", "ESCALATED"),
    ]
    assert "NetworkPermanentError" in record["history"][-1]["detail"]
    # Nothing was finalized: the line is still up and the number still in use.
    assert system.status(line.user_id)["status"] == "ACTIVE"
    assert system.line(line.msisdn).provisioned
    assert system.msisdn_item(line.msisdn).expires_at is None
    assert system.disconnected_events(line.user_id) == []


# --- past the first bill date, that bill unpaid ---------------------------------------------


def test_user_request_waits_for_the_unpaid_bill_then_completes_once_paid(
    system: DisconnectionSystem, first_bill_unpaid: dict[str, Line]
) -> None:
    line = first_bill_unpaid["USER_REQUEST"]
    (unpaid,) = system.invoices(line.user_id)
    assert unpaid["status"] == "ISSUED"
    disconnection_id = system.disconnect(line, "USER_REQUEST")

    # The execution ends with the line parked, not disconnected.
    assert system.finish(disconnection_id) == "SUCCEEDED"
    parked = system.disconnection(disconnection_id)
    assert parked["status"] == "AWAITING_DUES"
    assert parked["dues_paise"] == unpaid["total_paise"]
    assert _steps(parked) == [
        ("Request", "ACCEPTED"),
        ("FinalBill", "ISSUED"),
        ("CheckDues", "AWAIT_DUES"),
        ("AwaitDues", "PENDING_DISCONNECT"),
        ("NotifyDues", "SENT"),
    ]
    assert parked["final_invoice_id"] != unpaid["invoice_id"]
    assert system.status(line.user_id)["status"] == "PENDING_DISCONNECT"
    network = system.line(line.msisdn)
    assert network.provisioned
    assert network.barring.outgoing_barred
    assert network.barring.incoming_allowed
    assert system.disconnected_events(line.user_id) == []

    system.pay(line.user_id, unpaid["invoice_id"])

    # The worker resumes the workflow at CheckDues under a name of its own.
    assert system.finish(f"{disconnection_id}-R1") == "SUCCEEDED"
    record = system.disconnection(disconnection_id)
    assert _steps(record) == [*_steps(parked), *DISCONNECTED[2:]]
    assert record["dues_paise"] == 0
    assert record["final_invoice_id"] == parked["final_invoice_id"]
    _assert_disconnected(system, line, record, "USER_REQUEST")


def test_fraud_does_not_wait_for_the_unpaid_bill(
    system: DisconnectionSystem, first_bill_unpaid: dict[str, Line]
) -> None:
    line = first_bill_unpaid["FRAUD"]
    (unpaid,) = system.invoices(line.user_id)
    disconnection_id = system.disconnect(line, "FRAUD")

    assert system.finish(disconnection_id) == "SUCCEEDED"
    record = system.disconnection(disconnection_id)
    assert _steps(record) == DISCONNECTED
    # The dues are recorded and left to collection; the bill is still owed.
    assert record["dues_paise"] == unpaid["total_paise"] > 0
    check = record["history"][2]
    assert check["detail"] == f"{unpaid['total_paise']} paise outstanding; to collection"
    _assert_disconnected(system, line, record, "FRAUD")
    (event,) = system.disconnected_events(line.user_id)
    assert event["detail"]["dues_paise"] == unpaid["total_paise"]
    owed = {i["invoice_id"]: i["status"] for i in system.invoices(line.user_id)}
    assert owed[unpaid["invoice_id"]] == "ISSUED"
