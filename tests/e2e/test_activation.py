"""SIM activation over HTTP on the local runtime, as the support console calls it."""

from __future__ import annotations

import uuid
from typing import Any

from tests.activation_data import activation_body
from tests.e2e.conftest import LocalSystem, wait_for


def _activate(system: LocalSystem, body: dict[str, Any], token: str) -> Any:
    return system.post("/activate-sim", body, token, str(uuid.uuid4()))


def test_activate_poll_until_active_then_read_the_masked_profile(
    local_system: LocalSystem,
) -> None:
    agent = local_system.token("agent-e2e", "agent")
    body = activation_body()

    accepted = _activate(local_system, body, agent)
    assert accepted.status_code == 202, accepted.text
    ids = accepted.json()

    def active() -> dict[str, Any] | None:
        activation: dict[str, Any] = local_system.get(
            f"/activations/{ids['activation_id']}", agent
        ).json()
        return activation if activation["status"] == "ACTIVE" else None

    activation = wait_for(active, timeout=30, what="ACTIVE")
    assert activation["user_id"] == ids["user_id"]
    assert [e["step"] for e in activation["history"]][:3] == ["Request", "Request", "VerifyKyc"]

    owner = local_system.token(ids["user_id"], "subscriber")
    profile = local_system.get(f"/users/{ids['user_id']}", owner)
    assert profile.status_code == 200, profile.text
    shown = profile.json()
    number = body["kyc"]["number"]
    assert shown["kyc"] == {"type": "AADHAAR", "masked": "XXXXXXXX" + number[-4:]}
    assert number not in profile.text
    assert (shown["status"], shown["msisdn"]) == ("ACTIVE", body["msisdn"])
    stranger = local_system.token("someone-else", "subscriber")
    assert local_system.get(f"/users/{ids['user_id']}", stranger).status_code == 403

    again = _activate(local_system, {**body, "msisdn": "7" + body["msisdn"][1:-1] + "9"}, agent)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "DUPLICATE_ICCID"


def _wrong_check_digit(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def _field_problems(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    return {d["field"]: d["problem"] for d in error["details"]}


def test_bad_identifiers_are_422_with_field_level_messages(local_system: LocalSystem) -> None:
    agent = local_system.token("agent-e2e", "agent")
    body = activation_body()
    bad_aadhaar = _wrong_check_digit(body["kyc"]["number"])

    aadhaar = _activate(
        local_system, {**body, "kyc": {"type": "AADHAAR", "number": bad_aadhaar}}, agent
    )
    pan = _activate(local_system, {**body, "kyc": {"type": "PAN", "number": "ABCCE1234F"}}, agent)
    iccid = _activate(
        local_system,
        {
            **body,
            "iccid": body["iccid"][:-1] + "0"
            if body["iccid"][-1] != "0"
            else body["iccid"][:-1] + "1",
        },
        agent,
    )

    assert "Verhoeff" in _field_problems(aadhaar)["kyc.number"]
    assert "individual" in _field_problems(pan)["kyc.number"]
    assert "Luhn" in _field_problems(iccid)["iccid"]
    for response in (aadhaar, pan, iccid):
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert bad_aadhaar not in response.text


def test_only_staff_may_activate(local_system: LocalSystem) -> None:
    subscriber = local_system.token("demo-prepaid", "subscriber")
    response = _activate(local_system, activation_body(), subscriber)
    assert response.status_code == 403
