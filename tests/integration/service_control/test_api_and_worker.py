"""Service control through its real handlers on moto: the API (functions/service_control/
handler.py) with API Gateway proxy events, the worker with SQS records carrying what
EventBridge delivered, and the inactivity sweep's schedule handler.

The handlers build their services from the real wiring; the test only sets the
environment a deployment would (the simulator's line registry in SSM, the
service-control queue, the disconnection state machine) and the clock. Events are
published by our own publisher onto the bus and routed to the service-control
queue by a rule like the deployed one, so the worker reads the envelope EventBridge
really delivers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import boto3
import pytest

from functions.activation import wiring as activation_wiring
from functions.billing import wiring as billing_wiring
from functions.service_control import handler as sc_api
from functions.service_control import schedule as sc_schedule
from functions.service_control import wiring as sc_wiring
from functions.service_control import worker as sc_worker
from shared import db
from shared.catalog import seed_plans
from shared.clock import IST, FixedClock
from shared.events import DomainEvent, EventBridgePublisher
from shared.models import Subscriber, SubscriberType
from shared.network import (
    UNRESTRICTED,
    BarringProfile,
    DataAccess,
    LineRecord,
    ServiceProfile,
    SimulatedNetwork,
)
from shared.network_lines import SsmLineRegistry
from shared.services.billing import InvoiceStatus, PlanExpiry
from shared.services.subscriptions import SubscriptionService
from shared.settings import get_settings
from shared.simulation import StaticKnobs
from shared.stores.activation import ICCID_SK, IccidClaimItem, iccid_pk
from shared.stores.billing import DynamoBillingStore
from tests.activation_data import iccid as make_iccid
from tests.activation_data import next_serial
from tests.apigw import ACCOUNT, Caller, HttpResult, api_event, lambda_context, parse_response
from tests.integration.conftest import REGION, T0, Aws, redelivered, sqs_record
from tests.integration.service_control.conftest import (
    MakeLine,
    put_claim,
    put_invoice,
    put_otp,
)

LINES = "/tbcss/test/simulator/lines"
KNOBS = "/tbcss/test/simulator-knobs"
# The sources the deployed rule routes to the service-control queue (infra/service_control.py;
# it also filters on the detail-types the worker reacts to, which this rule leaves out so
# the worker can be shown an event it does not know).
SOURCES = ["tbcss.billing", "tbcss.usage", "tbcss.plans", "tbcss.payments"]

AGENT = Caller("agent-7", "agent")
ADMIN = Caller("fraud-1", "admin")
OWNER = Caller("u1")
STRANGER = Caller("u2")
BARRED = BarringProfile(outgoing_barred=True, data=DataAccess.BARRED)
THROTTLED = BarringProfile(data=DataAccess.THROTTLED)

BLOCK = "/service-control/block/{user_id}"
UNBLOCK = "/service-control/unblock/{user_id}"
STATUS = "/service-control/status/{user_id}"
DISCONNECT = "/service-control/disconnect/{user_id}"
DISCONNECTION = "/service-control/disconnections/{disconnection_id}"
OTP = "/service-control/otp/{user_id}"
VERIFY = "/service-control/otp/{user_id}/verify"
SIM_REPLACEMENT = "/users/{user_id}/sim-replacement"

# What ServiceBlocked / ServiceUnblocked carry: ids, codes, the actor; never a note.
STATUS_EVENT_KEYS = {
    "user_id",
    "status",
    "block_reasons",
    "actor",
    "event_id",
    "occurred_at",
    "correlation_id",
}


@dataclass
class System:
    aws: Aws
    clock: FixedClock
    ssm: Any
    sfn: Any
    queue_url: str
    state_machine_arn: str
    _seen: list[dict[str, Any]] = field(default_factory=list)

    # --- the API -----------------------------------------------------------------

    def call(
        self,
        method: str,
        template: str,
        who: Caller | None,
        *,
        body: Any = None,
        raw_body: str | None = None,
        key: str | None = None,
        **params: str,
    ) -> HttpResult:
        event = api_event(
            method,
            template.format(**params),
            resource=template,
            caller=who,
            body=body,
            raw_body=raw_body,
            idempotency_key=key,
            path_parameters=params or None,
        )
        return parse_response(sc_api.handler(event, lambda_context("tbcss-test-sc-api")))

    def post(
        self, template: str, who: Caller | None, body: Any, *, key: str | None = None, **params: str
    ) -> HttpResult:
        return self.call("POST", template, who, body=body, key=key, **params)

    def get(self, template: str, who: Caller | None, **params: str) -> HttpResult:
        return self.call("GET", template, who, **params)

    def status(self, user_id: str) -> dict[str, Any]:
        result = self.get(STATUS, AGENT, user_id=user_id)
        assert result.status == 200, result.body
        body: dict[str, Any] = result.body
        return body

    # --- the worker and the schedule ------------------------------------------------

    def publish(self, *events: DomainEvent) -> None:
        EventBridgePublisher(self.aws.events, self.aws.bus_name).publish(list(events))

    def receive(self) -> list[dict[str, Any]]:
        """The service-control queue's messages (removed from it), as Lambda SQS records."""
        return self.aws.drain(self.queue_url)

    def deliver(self, *events: DomainEvent) -> list[dict[str, Any]]:
        """Publish on the bus; the records the rule put on the service-control queue."""
        self.publish(*events)
        records = self.receive()
        assert len(records) == len(events), records
        return records

    def work(self, records: list[dict[str, Any]]) -> list[str]:
        """One worker invocation over the records; the ids SQS will deliver again."""
        return redelivered(sc_worker.handler, records, "tbcss-test-sc-worker")

    def sweep(self, day: date) -> dict[str, Any]:
        """A run by hand of ``day``'s inactivity sweep."""
        return self._run_sweep({"sweep": "inactivity", "date": day.isoformat()})

    def scheduled_sweep(self, at: datetime) -> dict[str, Any]:
        """The sweep as its rule fires it at ``at``: that IST day and those missed."""
        return self._run_sweep({"sweep": "inactivity", "time": at.isoformat()})

    def _run_sweep(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = sc_schedule.handler(event, lambda_context("tbcss-test-sc-sweep"))
        return result

    # --- what the bus, the table, the network and Step Functions show ----------------

    def events(self, detail_type: str) -> list[dict[str, Any]]:
        self._seen += self.aws.published()
        return [event for event in self._seen if event["detail-type"] == detail_type]

    def history_keys(self, user_id: str) -> list[str]:
        return [k for k in self.aws.sort_keys(db.user_pk(user_id)) if k.startswith("STATUS#")]

    def network_line(self, msisdn: str) -> LineRecord:
        record = SsmLineRegistry(self.ssm, LINES).get(msisdn)
        assert record is not None, f"the simulator has no line {msisdn}"
        return record

    def provision(self, subscriber: Subscriber) -> None:
        """Put the line on the simulated network, as activation does."""
        assert subscriber.iccid is not None
        network = SimulatedNetwork(StaticKnobs(), lines=SsmLineRegistry(self.ssm, LINES))
        profile = ServiceProfile(
            user_id=subscriber.user_id, subscriber_type=subscriber.subscriber_type.value
        )
        network.provision(subscriber.msisdn, subscriber.iccid, profile, attempt=1)

    def network_fails(self, transient_failure_rate: float) -> None:
        """The simulator's knobs, read by the handlers' network adapter on every order."""
        knobs = {"network": {"transient_failure_rate": transient_failure_rate}}
        self.ssm.put_parameter(Name=KNOBS, Value=json.dumps(knobs), Type="String", Overwrite=True)

    def executions(self) -> list[str]:
        listed = self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]
        return [execution["name"] for execution in listed]

    def sms_to(self, e164: str) -> list[str]:
        from moto.sns.models import sns_backends  # noqa: PLC0415 - moto's own record

        backend = sns_backends[ACCOUNT][REGION]
        return [text for number, text in backend.sms_messages.values() if number == e164]


QUEUE_NAME = "tbcss-test-service-control"
QUEUE_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{QUEUE_NAME}"
MACHINE_NAME = "tbcss-test-disconnection"
MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{MACHINE_NAME}"


@dataclass(frozen=True)
class Container:
    ssm: Any
    sfn: Any


@pytest.fixture(scope="module")
def container(handler_clock: FixedClock) -> Iterator[Container]:
    """One Lambda container for the module: the environment a deployment gives the
    service-control functions, read once (settings and services are cached per
    process), and the fixed clock. The resources it names are created afresh, under
    the same names, in each test's moto. Botocore clients outlive a ``mock_aws``
    (see the ``clients`` fixture), so the cached services keep working."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIMULATOR_KNOBS_PARAMETER", KNOBS)
        patch.setenv("SIMULATOR_LINES_PARAMETER_PREFIX", LINES)
        patch.setenv("SERVICE_CONTROL_QUEUE_URL", QUEUE_URL)
        patch.setenv("DISCONNECTION_STATE_MACHINE_ARN", MACHINE_ARN)
        patch.setattr(sc_wiring, "system_clock", lambda: handler_clock)
        patch.setattr(billing_wiring, "system_clock", lambda: handler_clock)
        _clear_wiring()
        yield Container(
            boto3.client("ssm", region_name=REGION),
            boto3.client("stepfunctions", region_name=REGION),
        )
    _clear_wiring()


def _clear_wiring() -> None:
    get_settings.cache_clear()
    for module in (sc_wiring, billing_wiring, activation_wiring):
        for value in vars(module).values():
            if getattr(value, "__module__", "") == module.__name__ and hasattr(
                value, "cache_clear"
            ):
                value.cache_clear()


def _route_to_queue(aws: Aws, queue_url: str) -> None:
    arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    aws.events.put_rule(
        Name="service-control-events",
        EventBusName=aws.bus_name,
        EventPattern=json.dumps({"source": SOURCES}),
    )
    aws.events.put_targets(
        Rule="service-control-events",
        EventBusName=aws.bus_name,
        Targets=[{"Id": "queue", "Arn": arn["Attributes"]["QueueArn"]}],
    )


@pytest.fixture
def system(aws: Aws, clock: FixedClock, container: Container) -> System:
    db.DynamoPlanCatalog().save_all(seed_plans())
    aws.tap("service_control")
    queue_url = aws.sqs.create_queue(QueueName=QUEUE_NAME)["QueueUrl"]
    assert queue_url == QUEUE_URL
    _route_to_queue(aws, queue_url)
    machine = container.sfn.create_state_machine(
        name=MACHINE_NAME,
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/tbcss-test-sfn",
    )["stateMachineArn"]
    assert machine == MACHINE_ARN
    container.ssm.put_parameter(Name=KNOBS, Value="{}", Type="String")
    return System(aws, clock, container.ssm, container.sfn, queue_url, machine)


ALTERNATE = "9812345678"  # the owner's alternate number: where an OTP goes


@pytest.fixture
def live(system: System, line: MakeLine) -> Any:
    """A live line, provisioned on the simulated network."""

    def make(
        user_id: str = "u1", subscriber_type: SubscriberType = SubscriberType.POSTPAID
    ) -> Subscriber:
        subscriber = line(user_id, subscriber_type, phone=ALTERNATE, email=f"{user_id}@example.in")
        system.provision(subscriber)
        return subscriber

    return make


# --- helpers -----------------------------------------------------------------------------


def assert_error(result: HttpResult, status: int, code: str) -> None:
    assert (result.status, result.error_code) == (status, code), result.body


def block(
    system: System, who: Caller | None, reason: str, user_id: str = "u1", **body: Any
) -> HttpResult:
    return system.post(BLOCK, who, {"reason": reason, **body}, user_id=user_id)


def unblock(system: System, who: Caller, reason: str, user_id: str = "u1") -> HttpResult:
    return system.post(UNBLOCK, who, {"reason": reason}, user_id=user_id)


def owner_otp(system: System, user_id: str = "u1", reason: str = "LOST_SIM") -> str:
    """Request an OTP as the owner, read the code from the SMS, verify it: the otp_id."""
    owner = Caller(user_id)
    requested = system.post(OTP, owner, {"reason": reason}, user_id=user_id)
    assert requested.status == 202, requested.body
    (sms,) = system.sms_to(f"+91{ALTERNATE}")
    code = re.findall(r"\b\d{6}\b", sms)[0]
    otp_id = str(requested.body["otp_id"])
    verified = system.post(VERIFY, owner, {"otp_id": otp_id, "code": code}, user_id=user_id)
    assert verified.status == 200, verified.body
    return otp_id


def overdue_event(user_id: str, invoice_id: str, due: str = "2026-10-20") -> DomainEvent:
    """InvoiceOverdue as BillingService.process_overdue publishes it."""
    return DomainEvent(
        detail_type="InvoiceOverdue",
        source="billing",
        occurred_at=T0,
        correlation_id=invoice_id,
        detail={
            "user_id": user_id,
            "invoice_id": invoice_id,
            "invoice_number": "TB/2026-27/000123",
            "due_date": due,
            "total_paise": 70_682,
            "grace_days": 7,
        },
    )


def quota_event(subscriber: Subscriber, usage_type: str, at: datetime) -> DomainEvent:
    """QuotaExhausted as usage's rating publishes it (shared/services/usage.py)."""
    return DomainEvent(
        detail_type="QuotaExhausted",
        source="usage",
        occurred_at=at,
        detail={
            "user_id": subscriber.user_id,
            "msisdn": subscriber.msisdn,
            "subscriber_type": subscriber.subscriber_type.value,
            "cycle": "2026-11-05",
            "usage_type": usage_type,
            "used_units": 107_374_182_400,
            "included_units": 107_374_182_400,
            "wallet_paise": 0,
        },
    )


def plans(system: System) -> SubscriptionService:
    """Plans as the plans API runs them, publishing PlanChanged on the bus."""
    events = EventBridgePublisher(system.aws.events, system.aws.bus_name)
    return SubscriptionService(
        db.DynamoPlanCatalog(), db.DynamoSubscriptionStore(), events, system.clock
    )


def plan_expiry(system: System) -> PlanExpiry:
    """Billing's expiry of a prepaid plan, publishing PlanExpired on the bus."""
    return PlanExpiry(
        store=DynamoBillingStore(),
        plans=db.DynamoSubscriptionStore(),
        catalog=db.DynamoPlanCatalog(),
        subscriptions=plans(system),
        events=EventBridgePublisher(system.aws.events, system.aws.bus_name),
        clock=system.clock,
    )


def unpaid_overdue_invoice(user_id: str = "u1", bill_date: str = "2026-10-05") -> str:
    return put_invoice(user_id, bill_date, InvoiceStatus.OVERDUE, overdue_notified=True)


def block_overdue(system: System, user_id: str = "u1") -> str:
    invoice_id = unpaid_overdue_invoice(user_id)
    assert system.work(system.deliver(overdue_event(user_id, invoice_id))) == []
    assert system.status(user_id)["block_reasons"] == ["OVERDUE"]
    return invoice_id


def claim_status(iccid: str) -> str | None:
    claim_status: str | None = IccidClaimItem.get(iccid_pk(iccid), ICCID_SK).claim_status
    return claim_status


# --- POST /service-control/block ------------------------------------------------------------

MANUAL = ["LOST_SIM", "THEFT", "FRAUD_SUSPECTED", "AGENT"]
FACT_BACKED = ["OVERDUE", "PLAN_EXPIRED", "QUOTA_EXHAUSTED"]


@pytest.mark.parametrize("who", [AGENT, ADMIN], ids=["agent", "admin"])
@pytest.mark.parametrize("reason", MANUAL)
def test_staff_block_for_a_manual_reason_bars_outgoing_and_data_but_not_incoming(
    system: System, live: Any, who: Caller, reason: str
) -> None:
    subscriber = live()

    result = block(system, who, reason)

    assert result.status == 200, result.body
    assert result.body["status"] == "TEMP_BLOCKED"
    assert result.body["block_reasons"] == [reason]
    assert result.body["barring"] == {
        "outgoing_barred": True,
        "data": "BARRED",
        "incoming_allowed": True,
    }
    assert result.body["network_in_sync"] is True
    assert system.network_line(subscriber.msisdn).barring == BARRED
    (entry,) = system.status("u1")["history"]
    assert entry["actor"] == f"{who.roles}:{who.sub}"


@pytest.mark.parametrize("who", [AGENT, ADMIN, OWNER], ids=["agent", "admin", "owner"])
@pytest.mark.parametrize("reason", FACT_BACKED)
def test_fact_backed_reasons_are_never_applied_by_hand(
    system: System, live: Any, who: Caller, reason: str
) -> None:
    subscriber = live()

    assert_error(block(system, who, reason), 422, "REASON_APPLIED_BY_SYSTEM")

    assert system.status("u1")["status"] == "ACTIVE"
    assert system.history_keys("u1") == []
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED


def test_the_owner_blocks_a_lost_sim_with_a_verified_otp_which_is_then_used_up(
    system: System, live: Any
) -> None:
    subscriber = live()
    otp_id = owner_otp(system, reason="LOST_SIM")

    result = block(system, OWNER, "LOST_SIM", otp_id=otp_id)

    assert result.status == 200, result.body
    assert (result.body["status"], result.body["block_reasons"]) == ("TEMP_BLOCKED", ["LOST_SIM"])
    assert system.network_line(subscriber.msisdn).barring == BARRED
    assert system.status("u1")["history"][0]["actor"] == "subscriber:u1"
    # The OTP authorized one block: an agent lifts it, the same OTP cannot block again.
    assert unblock(system, AGENT, "LOST_SIM").status == 200
    assert_error(block(system, OWNER, "LOST_SIM", otp_id=otp_id), 409, "OTP_USED")
    assert system.status("u1")["status"] == "ACTIVE"


def test_the_owner_cannot_block_without_a_verified_otp(system: System, live: Any) -> None:
    subscriber = live()
    requested = system.post(OTP, OWNER, {"reason": "THEFT"}, user_id="u1")
    assert requested.status == 202, requested.body

    assert_error(block(system, OWNER, "THEFT"), 403, "FORBIDDEN")
    not_verified = block(system, OWNER, "THEFT", otp_id=requested.body["otp_id"])
    assert_error(not_verified, 403, "OTP_NOT_VERIFIED")

    assert system.status("u1")["status"] == "ACTIVE"
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED


def test_a_verified_otp_blocks_only_for_its_own_reason_and_line(system: System, live: Any) -> None:
    live("u1")
    live("u2")
    otp_id = owner_otp(system, reason="LOST_SIM")

    assert_error(block(system, OWNER, "THEFT", otp_id=otp_id), 422, "OTP_REASON_MISMATCH")
    # The owner may never apply the staff's reasons, OTP or not.
    assert_error(block(system, OWNER, "FRAUD_SUSPECTED", otp_id=otp_id), 403, "FORBIDDEN")
    assert_error(block(system, OWNER, "AGENT", otp_id=otp_id), 403, "FORBIDDEN")
    # Another subscriber with the owner's OTP id is not the owner.
    stolen = block(system, STRANGER, "LOST_SIM", user_id="u1", otp_id=otp_id)
    assert_error(stolen, 403, "FORBIDDEN")

    assert system.history_keys("u1") == []
    # Still unused: the owner's own block goes through.
    assert block(system, OWNER, "LOST_SIM", otp_id=otp_id).status == 200


def test_an_expired_verified_otp_no_longer_blocks(system: System, live: Any) -> None:
    live()
    put_otp("u1", "otp-late", verified_until=T0 - timedelta(seconds=1))

    assert_error(block(system, OWNER, "LOST_SIM", otp_id="otp-late"), 422, "OTP_EXPIRED")
    assert system.status("u1")["status"] == "ACTIVE"


def test_blocking_an_unknown_line_is_not_found(system: System) -> None:
    assert_error(block(system, AGENT, "AGENT", user_id="nobody"), 404, "USER_NOT_FOUND")


def test_blocking_again_for_the_same_reason_changes_nothing(system: System, live: Any) -> None:
    live()
    assert block(system, AGENT, "AGENT").status == 200

    again = block(system, ADMIN, "AGENT")

    assert (again.status, again.body["changed"], again.body["block_reasons"]) == (
        200,
        False,
        ["AGENT"],
    )
    assert len(system.history_keys("u1")) == 1
    assert len(system.events("ServiceBlocked")) == 1


BAD_REQUESTS = [
    pytest.param(BLOCK, {"reason": "NAP_TIME"}, None, id="unknown-reason"),
    pytest.param(BLOCK, {"reason": "AGENT", "note": "x" * 201}, None, id="note-too-long"),
    pytest.param(BLOCK, {"reason": "AGENT", "status": "ACTIVE"}, None, id="unknown-field"),
    pytest.param(BLOCK, {"reason": "LOST_SIM", "otp_id": "a b"}, None, id="otp-id-shape"),
    pytest.param(BLOCK, None, '{"reason": ', id="not-json"),
    pytest.param(UNBLOCK, {}, None, id="unblock-without-reason"),
    pytest.param(DISCONNECT, {"reason": "BORED"}, None, id="unknown-disconnect-reason"),
    pytest.param(VERIFY, {"otp_id": "otp-1", "code": "12a456"}, None, id="code-shape"),
    pytest.param(SIM_REPLACEMENT, {"new_iccid": "8991000000000000001"}, None, id="bad-luhn"),
    pytest.param(SIM_REPLACEMENT, {"new_iccid": ""}, None, id="empty-iccid"),
]


@pytest.mark.parametrize(("template", "body", "raw"), BAD_REQUESTS)
def test_bad_input_is_a_422_that_changes_nothing(
    system: System, live: Any, template: str, body: Any, raw: str | None
) -> None:
    subscriber = live()
    who = OWNER if template == VERIFY else AGENT  # only the owner may verify a code at all

    result = system.call("POST", template, who, body=body, raw_body=raw, user_id="u1")

    assert_error(result, 422, "VALIDATION_ERROR")
    assert result.body["error"]["message"]
    assert system.history_keys("u1") == []
    assert system.network_line(subscriber.msisdn).iccid == subscriber.iccid


def test_a_malformed_user_id_or_idempotency_key_is_refused(system: System, live: Any) -> None:
    live()

    bad_path = system.post(BLOCK, AGENT, {"reason": "AGENT"}, user_id="u1;drop")
    long_key = system.post(BLOCK, AGENT, {"reason": "AGENT"}, key="k" * 256, user_id="u1")

    assert_error(bad_path, 422, "VALIDATION_ERROR")
    assert_error(long_key, 422, "VALIDATION_ERROR")
    assert system.history_keys("u1") == []


def test_a_request_without_a_caller_identity_is_unauthorized(system: System, live: Any) -> None:
    live()

    assert_error(block(system, None, "AGENT"), 401, "UNAUTHORIZED")
    assert_error(system.get(STATUS, None, user_id="u1"), 401, "UNAUTHORIZED")


# --- POST /service-control/unblock ----------------------------------------------------------


def test_a_subscriber_cannot_lift_a_block_even_on_their_own_line(system: System, live: Any) -> None:
    subscriber = live()
    assert block(system, AGENT, "AGENT").status == 200

    assert_error(unblock(system, OWNER, "AGENT"), 403, "FORBIDDEN")

    assert system.status("u1")["block_reasons"] == ["AGENT"]
    assert system.network_line(subscriber.msisdn).barring == BARRED


def test_an_agent_lifts_an_agent_block_and_the_network_lets_the_line_work_again(
    system: System, live: Any
) -> None:
    subscriber = live()
    assert block(system, AGENT, "AGENT").status == 200

    result = unblock(system, AGENT, "AGENT")

    assert result.status == 200, result.body
    assert (result.body["status"], result.body["block_reasons"]) == ("ACTIVE", [])
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED


def test_only_an_admin_lifts_fraud_suspected(system: System, live: Any) -> None:
    subscriber = live()
    assert block(system, AGENT, "FRAUD_SUSPECTED").status == 200

    assert_error(unblock(system, AGENT, "FRAUD_SUSPECTED"), 403, "FORBIDDEN")
    assert system.network_line(subscriber.msisdn).barring == BARRED

    result = unblock(system, ADMIN, "FRAUD_SUSPECTED")
    assert (result.status, result.body["status"]) == (200, "ACTIVE")
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED


def test_an_agent_cannot_lift_overdue_while_a_bill_past_its_grace_is_unpaid_an_admin_can(
    system: System, live: Any
) -> None:
    subscriber = live()
    block_overdue(system)

    assert_error(unblock(system, AGENT, "OVERDUE"), 409, "DUES_OUTSTANDING")
    assert system.network_line(subscriber.msisdn).barring == BARRED

    result = unblock(system, ADMIN, "OVERDUE")  # goodwill
    assert (result.status, result.body["status"]) == (200, "ACTIVE")
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED
    assert system.status("u1")["history"][0]["actor"] == "admin:fraud-1"


def test_an_agent_lifts_overdue_once_the_bill_is_paid(system: System, live: Any) -> None:
    """The payment's event was lost: the agent may lift what no longer holds."""
    live()
    block_overdue(system)
    put_invoice("u1", "2026-10-05", InvoiceStatus.PAID, overdue_notified=True)

    result = unblock(system, AGENT, "OVERDUE")

    assert (result.status, result.body["status"]) == (200, "ACTIVE")


# --- GET /service-control/status ------------------------------------------------------------


def test_the_owner_and_staff_see_a_lines_status_another_subscriber_does_not(
    system: System, live: Any
) -> None:
    live("u1")
    live("u2")
    assert block(system, AGENT, "THEFT", note="reported at the store").status == 200

    for who in (OWNER, AGENT, ADMIN):
        result = system.get(STATUS, who, user_id="u1")
        assert result.status == 200, result.body
        assert (result.body["status"], result.body["block_reasons"]) == ("TEMP_BLOCKED", ["THEFT"])
        assert result.body["barring"]["incoming_allowed"] is True
    assert_error(system.get(STATUS, STRANGER, user_id="u1"), 403, "FORBIDDEN")
    assert_error(system.get(STATUS, AGENT, user_id="nobody"), 404, "USER_NOT_FOUND")


def test_staff_see_who_changed_the_status_and_why_the_owner_does_not(
    system: System, live: Any
) -> None:
    live()
    assert block(system, AGENT, "THEFT", note="reported at the store").status == 200

    (entry,) = system.get(STATUS, AGENT, user_id="u1").body["history"]
    assert (entry["actor"], entry["cause"], entry["applied"]) == (
        "agent:agent-7",
        "reported at the store",
        ["THEFT"],
    )
    assert system.get(STATUS, OWNER, user_id="u1").body["history"] == []


# --- POST /service-control/disconnect, GET /service-control/disconnections -------------------


def disconnect(system: System, who: Caller, user_id: str = "u1", **body: Any) -> HttpResult:
    return system.post(DISCONNECT, who, body, user_id=user_id)


@pytest.mark.parametrize("who", [OWNER, AGENT, ADMIN], ids=["owner", "agent", "admin"])
def test_inactivity_disconnections_are_the_sweeps_alone(
    system: System, live: Any, who: Caller
) -> None:
    live()

    result = disconnect(system, who, reason="INACTIVITY")

    assert_error(result, 422, "VALIDATION_ERROR")
    assert system.executions() == []


def test_a_fraud_disconnection_is_an_admins_with_its_case_reference(
    system: System, live: Any
) -> None:
    live()

    assert_error(
        disconnect(system, AGENT, reason="FRAUD", proof_reference="FC-1"), 403, "FORBIDDEN"
    )
    assert_error(disconnect(system, ADMIN, reason="FRAUD"), 422, "VALIDATION_ERROR")
    assert system.executions() == []

    result = disconnect(system, ADMIN, reason="FRAUD", proof_reference="FRAUD-CASE-2211")
    assert result.status == 202, result.body
    disconnection_id = result.body["disconnection_id"]
    assert system.executions() == [disconnection_id]
    staff = system.get(DISCONNECTION, AGENT, disconnection_id=disconnection_id).body
    assert (staff["proof_reference"], staff["requested_by"]) == ("FRAUD-CASE-2211", "admin:fraud-1")
    # The owner follows the progress; the fraud case and who handled it stay internal.
    mine = system.get(DISCONNECTION, OWNER, disconnection_id=disconnection_id)
    assert (mine.status, mine.body["reason"]) == (200, "FRAUD")
    assert "FRAUD-CASE-2211" not in json.dumps(mine.body)
    assert mine.body["requested_by"] == ""


def test_the_owner_does_not_learn_who_handled_their_disconnection(
    system: System, live: Any
) -> None:
    live()
    result = disconnect(system, ADMIN, reason="FRAUD", proof_reference="FRAUD-CASE-2211")
    assert result.status == 202, result.body

    mine = system.get(DISCONNECTION, OWNER, disconnection_id=result.body["disconnection_id"])

    assert mine.status == 200
    assert "fraud-1" not in json.dumps(mine.body)


@pytest.mark.parametrize("proof", [None, "", "   "], ids=["missing", "empty", "blank"])
def test_a_port_out_needs_its_port_reference(system: System, live: Any, proof: str | None) -> None:
    live()
    body = {"reason": "PORT_OUT"} | ({} if proof is None else {"proof_reference": proof})

    assert_error(system.post(DISCONNECT, AGENT, body, user_id="u1"), 422, "VALIDATION_ERROR")

    assert system.executions() == []


def test_the_owner_asks_to_close_their_line_and_follows_the_workflow(
    system: System, live: Any
) -> None:
    live("u1")
    live("u2")

    result = disconnect(system, OWNER, reason="USER_REQUEST", note="moving abroad")

    assert result.status == 202, result.body
    disconnection_id = result.body["disconnection_id"]
    assert result.body == {
        "disconnection_id": disconnection_id,
        "status": "REQUESTED",
        "reason": "USER_REQUEST",
    }
    assert system.executions() == [disconnection_id]  # the workflow, named after it
    mine = system.get(DISCONNECTION, OWNER, disconnection_id=disconnection_id)
    assert mine.status == 200, mine.body
    assert (mine.body["user_id"], mine.body["status"]) == ("u1", "REQUESTED")
    staff = system.get(DISCONNECTION, AGENT, disconnection_id=disconnection_id)
    assert (staff.body["requested_by"], staff.body["note"]) == ("subscriber:u1", "moving abroad")
    assert_error(
        system.get(DISCONNECTION, STRANGER, disconnection_id=disconnection_id), 403, "FORBIDDEN"
    )
    # One disconnection per line at a time.
    again = disconnect(system, AGENT, reason="PORT_OUT", proof_reference="UPC-KA-88112")
    assert_error(again, 409, "DISCONNECTION_IN_PROGRESS")
    assert system.executions() == [disconnection_id]


def test_a_subscriber_cannot_close_another_subscribers_line(system: System, live: Any) -> None:
    live("u1")
    live("u2")

    assert_error(disconnect(system, STRANGER, reason="USER_REQUEST"), 403, "FORBIDDEN")

    assert system.executions() == []


def test_an_unknown_disconnection_is_not_found(system: System) -> None:
    result = system.get(DISCONNECTION, AGENT, disconnection_id="DISC-NOPE")
    assert_error(result, 404, "DISCONNECTION_NOT_FOUND")


# --- POST /service-control/otp, verify -------------------------------------------------------


@pytest.mark.parametrize("who", [AGENT, ADMIN, STRANGER], ids=["agent", "admin", "stranger"])
def test_only_the_owner_asks_for_a_one_time_password(
    system: System, live: Any, who: Caller
) -> None:
    live()

    assert_error(system.post(OTP, who, {"reason": "LOST_SIM"}, user_id="u1"), 403, "FORBIDDEN")

    assert system.sms_to(f"+91{ALTERNATE}") == []


def test_the_owners_code_goes_to_the_alternate_number_never_to_the_lost_sim(
    system: System, live: Any
) -> None:
    subscriber = live()

    result = system.post(OTP, OWNER, {"reason": "LOST_SIM"}, user_id="u1")

    assert result.status == 202, result.body
    assert result.body["channel"] == "SMS"
    assert result.body["sent_to"] == "+91XXXXXX5678"
    assert result.body["expires_at"] == "2026-11-25T10:05:00Z"
    (sms,) = system.sms_to(f"+91{ALTERNATE}")
    (code,) = re.findall(r"\b\d{6}\b", sms)
    assert code not in json.dumps(result.body)
    assert system.sms_to(f"+91{subscriber.msisdn}") == []


def test_verifying_the_code_counts_wrong_tries_and_only_the_owner_may(
    system: System, live: Any
) -> None:
    live()
    requested = system.post(OTP, OWNER, {"reason": "THEFT"}, user_id="u1")
    otp_id = requested.body["otp_id"]
    (code,) = re.findall(r"\b\d{6}\b", system.sms_to(f"+91{ALTERNATE}")[0])
    wrong = f"{(int(code) + 1) % 10**6:06d}"

    bad = system.post(VERIFY, OWNER, {"otp_id": otp_id, "code": wrong}, user_id="u1")
    assert_error(bad, 422, "OTP_INVALID")
    assert bad.body["error"]["details"] == {"attempts_left": 4}
    right = {"otp_id": otp_id, "code": code}
    assert_error(system.post(VERIFY, AGENT, right, user_id="u1"), 403, "FORBIDDEN")

    verified = system.post(VERIFY, OWNER, right, user_id="u1")

    assert verified.status == 200, verified.body
    assert verified.body == {"otp_id": otp_id, "valid_until": "2026-11-25T10:10:00Z"}
    assert block(system, OWNER, "THEFT", otp_id=otp_id).status == 200


# --- POST /users/{user_id}/sim-replacement --------------------------------------------------


def test_a_subscriber_cannot_replace_a_sim(system: System, live: Any) -> None:
    subscriber = live()
    new_iccid = make_iccid(next_serial())

    result = system.post(SIM_REPLACEMENT, OWNER, {"new_iccid": new_iccid}, user_id="u1")

    assert_error(result, 403, "FORBIDDEN")
    assert system.network_line(subscriber.msisdn).iccid == subscriber.iccid


def test_an_agent_replaces_a_lost_sim_and_the_line_works_again_on_the_new_one(
    system: System, live: Any
) -> None:
    subscriber = live()
    assert subscriber.iccid is not None
    assert block(system, AGENT, "LOST_SIM").status == 200
    new_iccid = make_iccid(next_serial())

    result = system.post(SIM_REPLACEMENT, AGENT, {"new_iccid": new_iccid}, user_id="u1")

    assert result.status == 200, result.body
    assert result.body["iccid"] == "X" * (len(new_iccid) - 4) + new_iccid[-4:]
    assert result.body["previous_iccid"].endswith(subscriber.iccid[-4:])
    assert (result.body["status"], result.body["block_reasons"]) == ("ACTIVE", [])
    assert result.body["network_in_sync"] is True
    on_network = system.network_line(subscriber.msisdn)
    assert (on_network.iccid, on_network.barring) == (new_iccid, UNRESTRICTED)
    # The lost card is never issued again.
    assert (claim_status(subscriber.iccid), claim_status(new_iccid)) == ("RETIRED", "IN_USE")


def test_a_sim_the_network_refuses_leaves_the_line_blocked_on_its_old_sim(
    system: System, live: Any
) -> None:
    subscriber = live()
    assert block(system, AGENT, "THEFT").status == 200
    refused = make_iccid(next_serial(), "999")  # not in the simulated HLR's inventory

    result = system.post(SIM_REPLACEMENT, AGENT, {"new_iccid": refused}, user_id="u1")

    assert_error(result, 409, "SIM_REJECTED")
    assert system.status("u1")["block_reasons"] == ["THEFT"]
    on_network = system.network_line(subscriber.msisdn)
    assert (on_network.iccid, on_network.barring) == (subscriber.iccid, BARRED)
    assert system.aws.items(iccid_pk(refused)) == []  # the claim is given back


def test_another_subscribers_sim_cannot_be_swapped_in(system: System, live: Any) -> None:
    subscriber = live("u1")
    live("u2")
    theirs = make_iccid(next_serial())
    put_claim(theirs, "u2")  # in service on u2's line

    result = system.post(SIM_REPLACEMENT, AGENT, {"new_iccid": theirs}, user_id="u1")

    assert_error(result, 409, "DUPLICATE_ICCID")
    assert IccidClaimItem.get(iccid_pk(theirs), ICCID_SK).user_id == "u2"
    assert system.network_line(subscriber.msisdn).iccid == subscriber.iccid


# --- Idempotency-Key ----------------------------------------------------------------------


def test_a_repeated_block_with_the_same_key_answers_the_same_and_changes_once(
    system: System, live: Any
) -> None:
    live()
    body = {"reason": "AGENT", "note": "customer asked"}

    first = system.post(BLOCK, AGENT, body, key="k-1", user_id="u1")
    again = system.post(BLOCK, AGENT, body, key="k-1", user_id="u1")

    assert first.status == again.status == 200
    assert again.body == first.body
    assert len(system.history_keys("u1")) == 1
    assert len(system.events("ServiceBlocked")) == 1


def test_the_same_key_with_another_request_is_refused(system: System, live: Any) -> None:
    live("u1")
    live("u2")
    assert system.post(BLOCK, AGENT, {"reason": "AGENT"}, key="k-1", user_id="u1").status == 200

    other_reason = system.post(BLOCK, AGENT, {"reason": "THEFT"}, key="k-1", user_id="u1")
    other_line = system.post(BLOCK, AGENT, {"reason": "AGENT"}, key="k-1", user_id="u2")

    assert_error(other_reason, 422, "IDEMPOTENCY_KEY_REUSED")
    assert_error(other_line, 422, "IDEMPOTENCY_KEY_REUSED")
    assert system.status("u1")["block_reasons"] == ["AGENT"]
    assert system.status("u2")["status"] == "ACTIVE"
    assert len(system.events("ServiceBlocked")) == 1


def test_a_repeated_unblock_with_the_same_key_lifts_once(system: System, live: Any) -> None:
    live()
    assert block(system, AGENT, "AGENT").status == 200
    body = {"reason": "AGENT"}

    first = system.post(UNBLOCK, AGENT, body, key="k-2", user_id="u1")
    again = system.post(UNBLOCK, AGENT, body, key="k-2", user_id="u1")

    assert (first.status, again.body) == (200, first.body)
    assert len(system.history_keys("u1")) == 2  # the block and one lift
    assert len(system.events("ServiceUnblocked")) == 1


def test_a_repeated_disconnect_with_the_same_key_starts_one_workflow(
    system: System, live: Any
) -> None:
    live()
    body = {"reason": "USER_REQUEST"}

    first = system.post(DISCONNECT, OWNER, body, key="k-3", user_id="u1")
    again = system.post(DISCONNECT, OWNER, body, key="k-3", user_id="u1")

    assert (first.status, again.status) == (202, 202)
    assert again.body == first.body
    assert system.executions() == [first.body["disconnection_id"]]


def test_a_repeated_sim_replacement_with_the_same_key_swaps_once(system: System, live: Any) -> None:
    live()
    assert block(system, AGENT, "LOST_SIM").status == 200
    body = {"new_iccid": make_iccid(next_serial())}

    first = system.post(SIM_REPLACEMENT, AGENT, body, key="k-5", user_id="u1")
    again = system.post(SIM_REPLACEMENT, AGENT, body, key="k-5", user_id="u1")

    assert (first.status, again.body) == (200, first.body)
    assert len(system.events("SimReplaced")) == 1
    assert len(system.history_keys("u1")) == 2  # the block and one swap


def test_a_repeated_otp_request_with_the_same_key_sends_one_code(system: System, live: Any) -> None:
    live()
    body = {"reason": "LOST_SIM"}

    first = system.post(OTP, OWNER, body, key="k-4", user_id="u1")
    again = system.post(OTP, OWNER, body, key="k-4", user_id="u1")

    assert (first.status, again.body) == (202, first.body)
    assert len(system.sms_to(f"+91{ALTERNATE}")) == 1


# --- ServiceBlocked / ServiceUnblocked on the bus ---------------------------------------------


def assert_status_event(
    event: dict[str, Any], *, actor: str, status: str, reasons: list[str], **change: list[str]
) -> None:
    """Who and what, as ids and codes: a note typed by an agent never leaves the history."""
    detail = event["detail"]
    assert event["source"] == "tbcss.service_control"
    assert set(detail) == STATUS_EVENT_KEYS | set(change), detail
    assert (detail["actor"], detail["status"], detail["block_reasons"]) == (actor, status, reasons)
    for key, value in change.items():
        assert detail[key] == value


NOTE = "customer called from 98123 45678: phone left in an auto near MG Road"


def test_api_changes_announce_actor_and_status_without_the_note(system: System, live: Any) -> None:
    live()
    assert block(system, AGENT, "THEFT", note=NOTE).status == 200
    assert block(system, ADMIN, "FRAUD_SUSPECTED", note=NOTE).status == 200
    assert (
        system.post(UNBLOCK, AGENT, {"reason": "THEFT", "note": NOTE}, user_id="u1").status == 200
    )

    theft, fraud = system.events("ServiceBlocked")
    (lifted,) = system.events("ServiceUnblocked")
    assert_status_event(
        theft, actor="agent:agent-7", status="TEMP_BLOCKED", reasons=["THEFT"], applied=["THEFT"]
    )
    assert_status_event(
        fraud,
        actor="admin:fraud-1",
        status="TEMP_BLOCKED",
        reasons=["FRAUD_SUSPECTED", "THEFT"],
        applied=["FRAUD_SUSPECTED"],
    )
    assert_status_event(
        lifted,
        actor="agent:agent-7",
        status="TEMP_BLOCKED",
        reasons=["FRAUD_SUSPECTED"],
        lifted=["THEFT"],
    )
    for event in (theft, fraud, lifted):
        assert "98123" not in json.dumps(event)


def test_the_owners_block_and_its_lift_by_a_sim_replacement_are_announced_alike(
    system: System, live: Any
) -> None:
    live()
    assert block(system, OWNER, "LOST_SIM", otp_id=owner_otp(system)).status == 200
    new_iccid = make_iccid(next_serial())
    replaced = system.post(SIM_REPLACEMENT, AGENT, {"new_iccid": new_iccid}, user_id="u1")
    assert replaced.status == 200, replaced.body

    (blocked,) = system.events("ServiceBlocked")
    (lifted,) = system.events("ServiceUnblocked")
    assert_status_event(
        blocked,
        actor="subscriber:u1",
        status="TEMP_BLOCKED",
        reasons=["LOST_SIM"],
        applied=["LOST_SIM"],
    )
    assert_status_event(
        lifted, actor="agent:agent-7", status="ACTIVE", reasons=[], lifted=["LOST_SIM"]
    )


# --- the worker: events from billing, usage and plans ------------------------------------------


def test_invoice_overdue_blocks_an_unpaid_bill_and_its_redelivery_changes_nothing(
    system: System, live: Any
) -> None:
    subscriber = live()
    invoice_id = unpaid_overdue_invoice()
    records = system.deliver(overdue_event("u1", invoice_id))
    assert records[0]["body"].startswith("{")  # what EventBridge put on the queue
    envelope = json.loads(records[0]["body"])
    assert (envelope["source"], envelope["detail-type"]) == ("tbcss.billing", "InvoiceOverdue")

    assert system.work(records) == []

    view = system.status("u1")
    assert (view["status"], view["block_reasons"]) == ("TEMP_BLOCKED", ["OVERDUE"])
    assert view["barring"] == {"outgoing_barred": True, "data": "BARRED", "incoming_allowed": True}
    assert system.network_line(subscriber.msisdn).barring == BARRED
    (entry,) = view["history"]
    assert entry["actor"] == "system:InvoiceOverdue"
    assert invoice_id in entry["cause"]
    (blocked,) = system.events("ServiceBlocked")
    assert_status_event(
        blocked,
        actor="system:InvoiceOverdue",
        status="TEMP_BLOCKED",
        reasons=["OVERDUE"],
        applied=["OVERDUE"],
    )

    assert system.work(records) == []  # SQS delivers it again

    assert len(system.history_keys("u1")) == 1
    assert len(system.events("ServiceBlocked")) == 1


def test_a_redelivered_invoice_overdue_does_not_undo_an_admins_goodwill_lift(
    system: System, live: Any
) -> None:
    subscriber = live()
    invoice_id = unpaid_overdue_invoice()
    records = system.deliver(overdue_event("u1", invoice_id))
    assert system.work(records) == []
    assert unblock(system, ADMIN, "OVERDUE").status == 200

    assert system.work(records) == []

    assert system.status("u1")["status"] == "ACTIVE"
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED


def test_invoice_overdue_for_a_bill_paid_meanwhile_changes_nothing(
    system: System, live: Any
) -> None:
    subscriber = live()
    invoice_id = put_invoice("u1", "2026-10-05", InvoiceStatus.PAID, overdue_notified=True)

    assert system.work(system.deliver(overdue_event("u1", invoice_id))) == []

    assert system.status("u1")["status"] == "ACTIVE"
    assert system.history_keys("u1") == []
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED


def test_an_expired_prepaid_plan_blocks_the_line_until_a_recharge(
    system: System, live: Any, store: db.DynamoSubscriptionStore
) -> None:
    subscriber = live("u1", SubscriberType.PREPAID)
    store.credit_wallet("u1", 2 * 29_900)
    first = plans(system).subscribe("u1", "PRE_SMART_299")
    assert system.work(system.receive()) == []  # PlanChanged: nothing to lift yet
    assert first.valid_until is not None
    system.clock.advance(first.valid_until - T0 + timedelta(minutes=5))

    assert plan_expiry(system).expire("u1", first.subscription_id).value == "EXPIRED"
    (expired,) = records = system.receive()
    assert json.loads(expired["body"])["detail-type"] == "PlanExpired"
    assert system.work(records) == []

    view = system.status("u1")
    assert (view["status"], view["block_reasons"]) == ("TEMP_BLOCKED", ["PLAN_EXPIRED"])
    assert view["history"][0]["actor"] == "system:PlanExpired"
    assert system.network_line(subscriber.msisdn).barring == BARRED

    plans(system).subscribe("u1", "PRE_SMART_299")  # the recharge
    (changed,) = records = system.receive()
    assert json.loads(changed["body"])["detail-type"] == "PlanChanged"
    assert system.work(records) == []

    view = system.status("u1")
    assert (view["status"], view["block_reasons"]) == ("ACTIVE", [])
    assert view["history"][0]["actor"] == "system:PlanChanged"
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED
    (lifted,) = system.events("ServiceUnblocked")
    assert_status_event(
        lifted, actor="system:PlanChanged", status="ACTIVE", reasons=[], lifted=["PLAN_EXPIRED"]
    )


def test_exhausted_data_throttles_only_data_until_the_next_plan_period(
    system: System, live: Any
) -> None:
    subscriber = live()
    plans(system).subscribe("u1", "POST_PLUS_599")
    assert system.work(system.receive()) == []
    system.clock.advance(timedelta(days=3))

    voice = quota_event(subscriber, "VOICE", system.clock.now())
    assert system.work(system.deliver(voice)) == []
    assert system.status("u1")["status"] == "ACTIVE"  # voice beyond quota: refused per call

    data = quota_event(subscriber, "DATA", system.clock.now())
    assert system.work(system.deliver(data)) == []

    view = system.status("u1")
    assert view["block_reasons"] == ["QUOTA_EXHAUSTED"]
    assert view["barring"] == {
        "outgoing_barred": False,
        "data": "THROTTLED",
        "incoming_allowed": True,
    }
    assert system.network_line(subscriber.msisdn).barring == THROTTLED

    system.clock.advance(timedelta(hours=2))
    plans(system).change_plan("u1", "POST_BUSINESS_1499")  # a new period, a new quota
    assert system.work(system.receive()) == []

    view = system.status("u1")
    assert (view["status"], view["block_reasons"]) == ("ACTIVE", [])
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED


def test_an_event_of_a_kind_the_worker_does_not_react_to_is_acknowledged(
    system: System, live: Any
) -> None:
    live()
    issued = DomainEvent(
        detail_type="InvoiceIssued",
        source="billing",
        occurred_at=T0,
        detail={"user_id": "u1", "invoice_id": "INV-u1-2026-11-05"},
    )

    assert system.work(system.deliver(issued)) == []

    assert system.history_keys("u1") == []


def test_a_poison_message_is_reported_and_the_rest_of_the_batch_still_applies(
    system: System, live: Any
) -> None:
    live()
    invoice_id = unpaid_overdue_invoice()
    (good,) = system.deliver(overdue_event("u1", invoice_id))
    poison = sqs_record("poison-1", '{"detail-type": "InvoiceOverdue", "detail": ')
    no_user = sqs_record(
        "no-user-1",
        json.dumps({"detail-type": "InvoiceOverdue", "source": "tbcss.billing", "detail": {}}),
    )

    failed = system.work([poison, good, no_user])

    assert failed == ["poison-1", "no-user-1"]
    assert system.status("u1")["block_reasons"] == ["OVERDUE"]


# --- the inactivity sweep --------------------------------------------------------------------


def test_the_inactivity_sweep_sends_one_message_for_a_line_dormant_91_days(
    system: System, live: Any
) -> None:
    today = T0.astimezone(IST).date()  # 2026-11-25
    # The day's sweep takes the lines dormant since 91 days ago (past the 90-day limit).
    for user_id, days in (("u1", 91), ("u2", 89)):
        live(user_id)
        bill_date = (today - timedelta(days=days)).isoformat()
        invoice_id = unpaid_overdue_invoice(user_id, bill_date)
        assert system.work(system.deliver(overdue_event(user_id, invoice_id))) == []

    result = system.sweep(today)

    assert result["messages"] == 1
    (message,) = system.receive()
    assert json.loads(message["body"]) == {"task": "inactivity", "user_id": "u1"}

    assert system.work([message]) == []  # the worker starts the disconnection
    assert system.work([message]) == []  # a redelivery (or a second sweep) starts no other

    (execution,) = system.executions()
    record = system.get(DISCONNECTION, AGENT, disconnection_id=execution).body
    assert (record["user_id"], record["reason"]) == ("u1", "INACTIVITY")
    assert record["requested_by"] == "service:inactivity-sweep"


def test_the_scheduled_inactivity_sweep_catches_up_a_missed_day_and_runs_by_hand_do_not(
    system: System, live: Any
) -> None:
    today = T0.astimezone(IST).date()  # 2026-11-25
    live("u1")
    invoice_id = unpaid_overdue_invoice("u1", (today - timedelta(days=92)).isoformat())
    assert system.work(system.deliver(overdue_event("u1", invoice_id))) == []
    midnight = datetime.combine(today - timedelta(days=2), datetime.min.time(), IST)

    first = system.scheduled_sweep(midnight)  # the 23rd: dormant 90 days, not yet
    assert system.sweep(today)["messages"] == 0  # by hand, the 25th: 92 days, not 91
    # No run on the 24th: the 25th's covers it, and finds the line (91 days then).
    caught_up = system.scheduled_sweep(midnight + timedelta(days=2))

    assert (first["days"], first["messages"]) == (["2026-11-23"], 0)
    assert (caught_up["days"], caught_up["messages"]) == (["2026-11-24", "2026-11-25"], 1)
    (message,) = system.receive()
    assert json.loads(message["body"]) == {"task": "inactivity", "user_id": "u1"}


def test_a_line_dormant_less_than_the_limit_is_not_disconnected_even_when_asked(
    system: System, live: Any
) -> None:
    live()
    bill_date = (T0.astimezone(IST).date() - timedelta(days=89)).isoformat()
    invoice_id = unpaid_overdue_invoice("u1", bill_date)
    assert system.work(system.deliver(overdue_event("u1", invoice_id))) == []
    task = sqs_record("task-1", json.dumps({"task": "inactivity", "user_id": "u1"}))

    assert system.work([task]) == []

    assert system.executions() == []


# --- the network: barring the HLR could not take yet -------------------------------------------


def test_a_block_the_network_could_not_take_is_stored_and_retried_from_the_queue(
    system: System, live: Any
) -> None:
    """A stolen SIM must not keep working because the HLR was busy for a moment."""
    subscriber = live()
    system.network_fails(1.0)

    result = block(system, AGENT, "THEFT")

    assert result.status == 200, result.body
    assert (result.body["status"], result.body["network_in_sync"]) == ("TEMP_BLOCKED", False)
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED
    (task,) = system.receive()
    assert json.loads(task["body"]) == {"task": "sync", "user_id": "u1"}

    assert system.work([task]) == [task["messageId"]]  # still busy: SQS retries it

    system.network_fails(0.0)
    assert system.work([task]) == []
    assert system.network_line(subscriber.msisdn).barring == BARRED
    assert system.status("u1")["network_in_sync"] is True


# --- OTP throttling and payments ------------------------------------------------------------------


def test_a_fourth_otp_request_within_the_window_is_throttled(system: System, live: Any) -> None:
    live()
    for _ in range(3):
        assert system.post(OTP, OWNER, {"reason": "LOST_SIM"}, user_id="u1").status == 202

    result = system.post(OTP, OWNER, {"reason": "LOST_SIM"}, user_id="u1")

    assert_error(result, 429, "THROTTLED")
    assert result.body["error"]["details"]["retry_after_seconds"] > 0
    assert len(system.sms_to(f"+91{ALTERNATE}")) == 3


def test_the_payment_of_the_overdue_bill_lifts_the_block(system: System, live: Any) -> None:
    subscriber = live()
    invoice_id = block_overdue(system)
    put_invoice("u1", "2026-10-05", InvoiceStatus.PAID, overdue_notified=True)
    paid = DomainEvent(
        detail_type="PaymentSucceeded",
        source="payments",
        occurred_at=T0,
        event_id="PaymentSucceeded-PAY-1",
        correlation_id="PAY-1",
        detail={  # as shared/services/payments.py publishes it
            "user_id": "u1",
            "payment_id": "PAY-1",
            "purpose": "INVOICE",
            "invoice_id": invoice_id,
            "plan_id": None,
            "amount_paise": 70_682,
            "method": "UPI",
            "autopay_attempt": None,
        },
    )

    assert system.work(system.deliver(paid)) == []

    assert system.status("u1")["status"] == "ACTIVE"
    assert system.network_line(subscriber.msisdn).barring == UNRESTRICTED
    (lifted,) = system.events("ServiceUnblocked")
    assert_status_event(
        lifted, actor="system:PaymentSucceeded", status="ACTIVE", reasons=[], lifted=["OVERDUE"]
    )
