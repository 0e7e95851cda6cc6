"""The activation workflow for real: the synthesized stack deployed into moto,
the state machine run by moto's Step Functions interpreter, every task run by
the real handler in a local worker process (the runtime's Invoke shim).

One runtime for the module (deploying costs a second or two; synthesizing,
cached under .tbcss/, a few more after a code change). The runtime's moto
lives in this process, so the tests read what moto's SNS and SES sent straight
from its backends.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from infra.local.deploy import ACCOUNT
from infra.local.runtime import LocalRuntime, RuntimeOptions
from tests.activation_data import activation_body

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / ".tbcss" / "tests-activation"
FINAL = {"ACTIVE", "KYC_REJECTED", "ESCALATED"}
DEADLINE_SECONDS = 40


@dataclass
class ActivationSystem:
    runtime: LocalRuntime
    logs: list[str]
    events_queue: str
    submitted_kyc_numbers: list[str] = field(default_factory=list)

    @property
    def deployment(self) -> Any:
        assert self.runtime.deployment is not None
        return self.runtime.deployment

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.runtime.endpoint_url,
            region_name=self.deployment.region,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def headers(self, sub: str = "agent-7", role: str = "agent") -> dict[str, str]:
        assert self.runtime.issuer is not None
        return {"Authorization": f"Bearer {self.runtime.issuer.issue(sub, [role])}"}

    def activate(self, body: dict[str, Any], key: str | None = None) -> requests.Response:
        self.submitted_kyc_numbers.append(body["kyc"]["number"])
        headers = {**self.headers(), "Idempotency-Key": key or str(uuid.uuid4())}
        return requests.post(
            self.runtime.api_url + "/activate-sim", json=body, headers=headers, timeout=30
        )

    def activation(self, activation_id: str) -> dict[str, Any]:
        response = requests.get(
            f"{self.runtime.api_url}/activations/{activation_id}",
            headers=self.headers(),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Activate and wait until the activation is final."""
        response = self.activate(body)
        assert response.status_code == 202, response.text
        return self.wait_final(response.json()["activation_id"])

    def wait_final(self, activation_id: str) -> dict[str, Any]:
        """Until the workflow ended (ACTIVE is recorded before the notification step)."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if self.execution_status(activation_id) != "RUNNING":
                activation = self.activation(activation_id)
                assert activation["status"] in FINAL, activation
                return activation
            time.sleep(0.2)
        raise AssertionError(f"{activation_id} not final: {self.activation(activation_id)}")

    def execution_status(self, activation_id: str) -> str:
        # The stack has other modules' state machines too.
        (machine,) = [m for k, m in self.deployment.state_machines.items() if "Activation" in k]
        # The execution is named after the activation (see ActivationService).
        arn = machine.replace(":stateMachine:", ":execution:") + f":{activation_id}"
        described = self.client("stepfunctions").describe_execution(executionArn=arn)
        return str(described["status"])

    def events(self, activation_id: str) -> list[dict[str, Any]]:
        """Activation events on the bus for one activation (read through a tap queue)."""
        sqs, seen = self.client("sqs"), []
        for _ in range(10):
            batch = sqs.receive_message(
                QueueUrl=self.events_queue, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            seen += [json.loads(message["Body"]) for message in batch]
            if not batch:
                break
        return [e for e in seen if e["detail"].get("activation_id") == activation_id]

    def escalations(self) -> list[dict[str, Any]]:
        (url,) = [u for k, u in self.deployment.queues.items() if "Escalation" in k]
        messages = self.client("sqs").receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        return [json.loads(m["Body"]) for m in messages.get("Messages", [])]

    def sms_to(self, msisdn: str) -> list[str]:
        from moto.sns.models import sns_backends  # noqa: PLC0415 - the runtime's moto

        backend = sns_backends[ACCOUNT][self.deployment.region]
        return [text for number, text in backend.sms_messages.values() if number == f"+91{msisdn}"]

    def emails_to(self, address: str) -> list[Any]:
        from moto.ses.models import ses_backends  # noqa: PLC0415

        backend = ses_backends[ACCOUNT][self.deployment.region]
        return [m for m in backend.sent_messages if address in m.destinations["ToAddresses"]]

    def set_knobs(self, knobs: dict[str, Any]) -> None:
        name = "/tbcss/dev/simulator-knobs"
        self.client("ssm").put_parameter(
            Name=name, Value=json.dumps(knobs), Type="String", Overwrite=True
        )


@pytest.fixture(scope="module")
def system() -> Iterator[ActivationSystem]:
    logs: list[str] = []
    options = RuntimeOptions(port=0, state_dir=STATE_DIR, echo=logs.append)
    with LocalRuntime(options) as runtime:
        system = ActivationSystem(runtime, logs, events_queue="")
        system.events_queue = _tap_activation_events(system)
        yield system


def _tap_activation_events(system: ActivationSystem) -> str:
    sqs, events = system.client("sqs"), system.client("events")
    url = sqs.create_queue(QueueName="activation-events-tap")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    (bus,) = system.deployment.buses.values()
    events.put_rule(
        Name="tap-activation",
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["tbcss.activation"]}),
    )
    events.put_targets(Rule="tap-activation", EventBusName=bus, Targets=[{"Id": "t", "Arn": arn}])
    return str(url)


def _steps(activation: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["step"], e["outcome"]) for e in activation["history"]]


ACCEPTED = [("Request", "ACCEPTED"), ("Request", "SUCCEEDED")]
COMPLETED = [
    ("ProvisionNetwork", "SUCCEEDED"),
    ("Complete", "SUCCEEDED"),
    ("Notify", "SENT"),
]


def test_happy_path(system: ActivationSystem) -> None:
    body = activation_body()
    activation = system.run(body)

    assert activation["status"] == "ACTIVE"
    assert _steps(activation) == [*ACCEPTED, ("VerifyKyc", "PASSED"), *COMPLETED]
    complete = activation["history"][-2]["detail"]
    assert complete["pos_payment_paise"] == 29900  # PRE_SMART_299, paid at the point of sale
    (event,) = system.events(activation["activation_id"])
    assert event["detail-type"] == "SubscriberActivated"
    assert event["detail"]["user_id"] == activation["user_id"]
    assert event["detail"]["subscription_id"] == complete["subscription_id"]
    (sms,) = system.sms_to(body["msisdn"])
    assert body["msisdn"] in sms
    assert "PRE_SMART_299" in sms
    (email,) = system.emails_to(body["email"])
    assert "is active" in email.subject
    assert body["kyc"]["number"] not in email.body + sms


def test_the_simulated_network_shows_the_activated_line(system: ActivationSystem) -> None:
    from shared.network_lines import SsmLineRegistry  # noqa: PLC0415

    body = activation_body()
    assert system.run(body)["status"] == "ACTIVE"

    lines = SsmLineRegistry(system.client("ssm"), "/tbcss/dev/simulator/lines")
    line = lines.get(body["msisdn"])
    assert line is not None, "the tasks function recorded no line"
    assert line.provisioned
    assert line.iccid == body["iccid"]
    assert line.barring.unrestricted
    assert line.history[-1].endswith(f"PROVISION {body['iccid']}")


def test_kyc_fails_once_then_passes(system: ActivationSystem) -> None:
    body = activation_body(kyc_script="991", plan_id=None)
    activation = system.run(body)

    assert activation["status"] == "ACTIVE"
    assert _steps(activation) == [
        *ACCEPTED,
        ("VerifyKyc", "FAILED"),
        ("VerifyKyc", "PASSED"),
        *COMPLETED,
    ]
    assert activation["history"][2]["detail"]["error"] == "KycProviderUnavailable"
    assert [e["detail-type"] for e in system.events(activation["activation_id"])] == [
        "SubscriberActivated"
    ]
    assert len(system.sms_to(body["msisdn"])) == 1
    assert len(system.emails_to(body["email"])) == 1


def test_kyc_rejected_after_one_retry_and_the_sim_goes_back_to_stock(
    system: ActivationSystem,
) -> None:
    body = activation_body(kyc_script="999", kyc_type="PAN")
    activation = system.run(body)

    assert activation["status"] == "KYC_REJECTED"
    assert _steps(activation) == [
        *ACCEPTED,
        ("VerifyKyc", "FAILED"),
        ("VerifyKyc", "FAILED"),
        ("RejectKyc", "REJECTED"),
    ]
    assert activation["history"][-1]["detail"]["error"] == "KycRejected"
    # The rejection is announced (the audit trail takes it), never as an activation.
    (rejected,) = system.events(activation["activation_id"])
    assert rejected["detail-type"] == "KycRejected"
    assert rejected["detail"]["user_id"] == activation["user_id"]
    assert body["kyc"]["number"] not in json.dumps(rejected)
    assert system.sms_to(body["msisdn"]) == []
    assert system.emails_to(body["email"]) == []
    # The claims were released: a corrected request for the same SIM and number is accepted.
    corrected = {**body, "kyc": activation_body()["kyc"]}
    assert system.run(corrected)["status"] == "ACTIVE"


def test_provisioning_fails_three_times_and_escalates(system: ActivationSystem) -> None:
    body = activation_body(network_script="993")
    activation = system.run(body)

    assert activation["status"] == "ESCALATED"
    assert _steps(activation) == [
        *ACCEPTED,
        ("VerifyKyc", "PASSED"),
        ("ProvisionNetwork", "FAILED"),
        ("ProvisionNetwork", "FAILED"),
        ("ProvisionNetwork", "FAILED"),
        ("Escalate", "ESCALATED"),
    ]
    attempts_at = [e["at"] for e in activation["history"][3:6]]
    assert attempts_at == sorted(attempts_at)
    (message,) = [m for m in system.escalations() if m["activation_id"] == body_id(activation)]
    assert message["user_id"] == activation["user_id"]
    assert (message["msisdn"], message["iccid"]) == (body["msisdn"], body["iccid"])
    assert [a["attempt"] for a in message["attempts"]] == [1, 2, 3]
    assert {a["error"] for a in message["attempts"]} == {"NetworkTransientError"}
    assert all(a["at"] for a in message["attempts"])
    assert message["final_error"]["error"] == "NetworkTransientError"
    assert body["kyc"]["number"] not in json.dumps(message)
    assert [e["detail-type"] for e in system.events(activation["activation_id"])] == [
        "ActivationEscalated"
    ]
    assert system.sms_to(body["msisdn"]) == []


def body_id(activation: dict[str, Any]) -> str:
    return str(activation["activation_id"])


def test_no_request_is_lost_under_injected_failures(system: ActivationSystem) -> None:
    system.set_knobs(
        {
            "kyc": {"transient_failure_rate": 0.3, "permanent_failure_rate": 0.05},
            "network": {
                "transient_failure_rate": 0.3,
                "permanent_failure_rate": 0.05,
                "timeout_rate": 0.1,
                "timeout_ms": 50,
                "latency_ms": 5,
            },
        }
    )
    try:
        bodies = [activation_body() for _ in range(30)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            accepted = list(pool.map(system.activate, bodies))
        assert [r.status_code for r in accepted] == [202] * 30
        ids = [r.json()["activation_id"] for r in accepted]
        finals = [system.wait_final(activation_id) for activation_id in ids]
    finally:
        system.set_knobs({})
    statuses = [a["status"] for a in finals]
    assert set(statuses) <= FINAL
    assert "ACTIVE" in statuses  # the dice are not all bad
    for activation in finals:  # every failure on the way was recorded
        assert activation["history"][-1]["outcome"] in {"SENT", "REJECTED", "ESCALATED"}


def test_no_plain_kyc_number_in_the_table_or_the_logs(system: ActivationSystem) -> None:
    """Runs last in this module: it scans what every test above left behind."""
    numbers = set(system.submitted_kyc_numbers)
    assert len(numbers) >= 30
    table = next(iter(system.deployment.tables.values()))
    items = [
        json.dumps(item)
        for page in system.client("dynamodb").get_paginator("scan").paginate(TableName=table)
        for item in page["Items"]
    ]
    assert any('"ACT#' in item for item in items)
    assert system.logs
    # Delimited by non-digits: a 12-digit Aadhaar may occur inside a 19-digit ICCID.
    patterns = [re.compile(rf"(?<![0-9A-Z]){n}(?![0-9A-Z])") for n in numbers]
    for text in (*items, *system.logs):
        leaked = [p.pattern for p in patterns if p.search(text)]
        assert not leaked, f"plain KYC number {leaked} in: {text}"
    masks = {"XXXXXXXX" + n[-4:] for n in numbers if len(n) == 12}
    assert any(m in "".join(items) for m in masks)  # what is stored instead
