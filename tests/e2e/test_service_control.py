"""Service control on the local runtime, as subscribers, agents and the network
see it: a lost SIM is blocked by its owner with an OTP and brought back on a
replacement SIM; a subscriber closes their line with a final invoice; a prepaid
line left unrecharged past its plan's expiry for longer than the inactivity
limit (90 days in production, 3 on this runtime: ``-c inactivity_days``) is
disconnected by the inactivity sweep, and one that recharged is not.

The runtime is the session's (``local_system``): these tests move its clock by
about two weeks; the other tests on it take times relative to its clock. The
overdue block, lifted by the subscriber's UPI payment, is in test_audit_trail.py
(on a runtime of its own, so its compliance report counts only that run).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared import db
from tests.activation_data import activation_body, iccid, next_serial
from tests.e2e.conftest import INACTIVITY_DAYS, LocalSystem, wait_for

AGENT = ("agent-e2e", "agent")
ADMIN = ("admin-e2e", "admin")
ALTERNATE_PHONE = "9812345678"


@pytest.fixture
def system(local_system: LocalSystem) -> LocalSystem:
    return local_system


def _post(system: LocalSystem, path: str, body: Any, who: tuple[str, str]) -> Any:
    return system.post(path, body, system.token(*who), str(uuid.uuid4()))


def _activate(system: LocalSystem, subscriber_type: str, plan_id: str) -> dict[str, Any]:
    body = activation_body(plan_id=plan_id, subscriber_type=subscriber_type)
    body["phone"] = ALTERNATE_PHONE  # the alternate number the lost-SIM OTP goes to
    accepted = _post(system, "/activate-sim", body, AGENT)
    assert accepted.status_code == 202, accepted.text
    user_id = accepted.json()["user_id"]
    agent = system.token(*AGENT)

    def active() -> bool:
        answer = system.get(f"/activations/{accepted.json()['activation_id']}", agent).json()
        return bool(answer["status"] == "ACTIVE")

    wait_for(active, timeout=60, what=f"activation of {user_id}")
    return {**body, "user_id": user_id}


def _status(system: LocalSystem, user_id: str) -> dict[str, Any]:
    answer = system.get(f"/service-control/status/{user_id}", system.token(*AGENT))
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _line(system: LocalSystem, msisdn: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(system.cli("network", "show", msisdn))
    return result


def _now(system: LocalSystem) -> datetime:
    return datetime.fromisoformat(system.get("/health").json()["time"])


def _advance_to(system: LocalSystem, moment: datetime) -> None:
    days = (moment - _now(system)).total_seconds() / 86400
    if days > 0:
        system.cli("local", "clock", "advance", "--days", f"{days:.5f}")


def test_a_lost_sim_is_blocked_by_its_owner_and_restored_on_a_new_sim(
    system: LocalSystem,
) -> None:
    line = _activate(system, "prepaid", "PRE_SMART_299")
    user_id, owner = line["user_id"], system.token(line["user_id"], "subscriber")

    requested = system.post(
        f"/service-control/otp/{user_id}", {"reason": "LOST_SIM"}, owner, str(uuid.uuid4())
    )
    assert requested.status_code == 202, requested.text
    otp_id = requested.json()["otp_id"]
    # The SIM is gone: the code goes to the alternate number on file.
    texts = [json.loads(row)["text"] for row in system.cli("local", "sms").splitlines()]
    code = next(word for text in texts[::-1] for word in text.split() if word.isdigit())
    verified = system.post(
        f"/service-control/otp/{user_id}/verify",
        {"otp_id": otp_id, "code": code},
        owner,
        str(uuid.uuid4()),
    )
    assert verified.status_code == 200, verified.text

    blocked = system.post(
        f"/service-control/block/{user_id}",
        {"reason": "LOST_SIM", "otp_id": otp_id},
        owner,
        str(uuid.uuid4()),
    )
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["status"] == "TEMP_BLOCKED"
    assert blocked.json()["block_reasons"] == ["LOST_SIM"]
    barred = _line(system, line["msisdn"])["barring"]
    assert barred == {"outgoing_barred": True, "data": "BARRED", "incoming_allowed": True}
    # The OTP was used up by that block.
    again = system.post(
        f"/service-control/block/{user_id}",
        {"reason": "LOST_SIM", "otp_id": otp_id},
        owner,
        str(uuid.uuid4()),
    )
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "OTP_USED"

    new_sim = iccid(next_serial())
    replaced = _post(system, f"/users/{user_id}/sim-replacement", {"new_iccid": new_sim}, AGENT)
    assert replaced.status_code == 200, replaced.text
    assert _status(system, user_id)["status"] == "ACTIVE"
    network = _line(system, line["msisdn"])
    assert network["iccid"] == new_sim
    assert network["barring"]["outgoing_barred"] is False
    assert network["barring"]["data"] == "ALLOWED"


def test_a_subscriber_closes_their_postpaid_line_with_a_final_invoice(
    system: LocalSystem,
) -> None:
    line = _activate(system, "postpaid", "POST_BASIC_399")
    user_id, owner = line["user_id"], system.token(line["user_id"], "subscriber")
    _advance_to(system, _now(system) + timedelta(days=2))  # two days of rental to bill

    accepted = system.post(
        f"/service-control/disconnect/{user_id}",
        {"reason": "USER_REQUEST"},
        owner,
        str(uuid.uuid4()),
    )
    assert accepted.status_code == 202, accepted.text
    disconnection_id = accepted.json()["disconnection_id"]

    def finished() -> dict[str, Any] | None:
        answer = system.get(
            f"/service-control/disconnections/{disconnection_id}", system.token(*AGENT)
        ).json()
        return answer if answer["status"] in ("DISCONNECTED", "ESCALATED") else None

    record = wait_for(finished, timeout=60, what="the disconnection workflow")
    assert record["status"] == "DISCONNECTED"
    assert _status(system, user_id)["status"] == "PERMANENT_DISCONNECTED"
    invoices = system.get(f"/users/{user_id}/invoices", owner).json()["invoices"]
    assert [invoice["invoice_id"] for invoice in invoices] == [record["final_invoice_id"]]
    assert invoices[0]["total_paise"] > 0
    assert _line(system, line["msisdn"])["provisioned"] is False


def test_inactivity_sweep_disconnects_a_line_left_unrecharged_past_the_limit(
    system: LocalSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = _activate(system, "prepaid", "PRE_DATA_49")
    recharged = _activate(system, "prepaid", "PRE_DATA_49")
    # Past the 7-day validity: both plans expire and both lines are blocked.
    _advance_to(system, _now(system) + timedelta(days=8))
    for line in (quiet, recharged):
        wait_for(
            lambda line=line: "PLAN_EXPIRED" in _status(system, line["user_id"])["block_reasons"],
            timeout=60,
            what="the PLAN_EXPIRED block",
        )
    _recharge(system, monkeypatch, recharged["user_id"], "PRE_ANNUAL_2999")
    assert _status(system, recharged["user_id"])["status"] == "ACTIVE"

    _advance_to(system, _now(system) + timedelta(days=INACTIVITY_DAYS + 1))

    def disconnected() -> bool:
        return bool(_status(system, quiet["user_id"])["status"] == "PERMANENT_DISCONNECTED")

    wait_for(disconnected, timeout=90, what="the inactivity disconnection")
    assert _status(system, recharged["user_id"])["status"] == "ACTIVE"


def _recharge(
    system: LocalSystem, monkeypatch: pytest.MonkeyPatch, user_id: str, plan_id: str
) -> None:
    """Top up the wallet (payments are issue 8: the repository stands in) and buy a plan."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", system.info["aws_endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "e2e")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "e2e")
    db.bind_table(system.info["table"], system.info["region"])
    db.DynamoSubscriptionStore().credit_wallet(user_id, 300000)
    bought = system.post(
        "/subscribe",
        {"user_id": user_id, "plan_id": plan_id},
        system.token(user_id, "subscriber"),
        str(uuid.uuid4()),
    )
    assert bought.status_code == 201, bought.text

    def lifted() -> bool:
        return not _status(system, user_id)["block_reasons"]

    wait_for(lifted, timeout=60, what="the recharge to lift the block")
