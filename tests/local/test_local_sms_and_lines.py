"""What a developer reads off the running runtime: the SMS moto's SNS "sent"
(``GET /_tbcss/sms``, ``tbcss local sms``) and the simulated network's view of
a line (``tbcss network show``)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from infra.cli import main
from infra.local.runtime import LocalRuntime
from shared.network import BarringProfile, DataAccess, LineRecord
from shared.network_lines import SsmLineRegistry
from tests.local.conftest import STATE_DIR


def a_number() -> str:
    """A fresh 10-digit number: moto's SNS backend lives for the whole session."""
    return f"98{random.SystemRandom().randrange(10**8):08d}"


def sms_route(runtime: LocalRuntime, **params: str) -> list[dict[str, str]]:
    response = requests.get(f"{runtime.endpoint_url}/_tbcss/sms", params=params, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    sent: list[dict[str, str]] = response.json()
    return sent


def test_the_sms_route_lists_what_sns_sent_newest_last(aws: Any, runtime: LocalRuntime) -> None:
    first, second = a_number(), a_number()
    aws("sns").publish(PhoneNumber=f"+91{first}", Message="Your OTP is 482913")
    aws("sns").publish(PhoneNumber=f"+91{second}", Message="Welcome to TB Telecom")

    sent = sms_route(runtime)

    assert sent[-2:] == [
        {"to": f"+91{first}", "text": "Your OTP is 482913"},
        {"to": f"+91{second}", "text": "Welcome to TB Telecom"},
    ]


def test_the_sms_route_filters_by_number_with_or_without_country_code(
    aws: Any, runtime: LocalRuntime
) -> None:
    mine, other = a_number(), a_number()
    aws("sns").publish(PhoneNumber=f"+91{mine}", Message="OTP 111111")
    aws("sns").publish(PhoneNumber=f"+91{other}", Message="OTP 222222")
    aws("sns").publish(PhoneNumber=f"+91{mine}", Message="OTP 333333")

    local = sms_route(runtime, to=mine)
    e164 = sms_route(runtime, to=f"+91{mine}")

    assert [m["text"] for m in local] == ["OTP 111111", "OTP 333333"]
    assert e164 == local
    assert sms_route(runtime, to=mine[-4:]) == []  # a fragment is not a number


def test_the_sms_route_rejects_an_unknown_region(runtime: LocalRuntime) -> None:
    response = requests.get(
        f"{runtime.endpoint_url}/_tbcss/sms", params={"region": "nowhere"}, timeout=10
    )

    assert response.status_code == 400


def test_tbcss_local_sms_prints_json_lines(
    aws: Any, runtime: LocalRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    number = a_number()
    aws("sns").publish(PhoneNumber=f"+91{number}", Message="Your OTP is 007007")

    code = main(["local", "sms", "--to", number, "--state-dir", str(STATE_DIR)])

    out = capsys.readouterr().out
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"to": f"+91{number}", "text": "Your OTP is 007007"}
    ]


def test_tbcss_network_show_prints_the_line(
    aws: Any, runtime: LocalRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    number = a_number()
    record = LineRecord(
        msisdn=number,
        iccid="89910000000000000012",
        provisioned=True,
        barring=BarringProfile(outgoing_barred=True, data=DataAccess.BARRED),
        updated_at=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
        history=("2026-11-25T10:00:00+00:00 BARRING outgoing=barred data=BARRED",),
    )
    SsmLineRegistry(aws("ssm"), "/tbcss/dev/simulator/lines").put(record)

    code = main(["network", "show", number, "--state-dir", str(STATE_DIR)])

    shown = json.loads(capsys.readouterr().out)
    assert code == 0
    assert shown["provisioned"] is True
    assert shown["barring"] == {"outgoing_barred": True, "data": "BARRED", "incoming_allowed": True}
    assert LineRecord.model_validate(shown) == record


def test_tbcss_network_show_of_an_unknown_line_fails_clearly(
    runtime: LocalRuntime, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["network", "show", "9000000001", "--state-dir", str(STATE_DIR)])

    captured = capsys.readouterr()
    assert code != 0
    assert captured.out == ""
    assert "line 9000000001 is unknown to the simulated network" in captured.err
