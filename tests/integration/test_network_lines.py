"""The network simulator's lines in SSM (moto): what a later Lambda container,
or ``tbcss network show``, reads back after the simulator's orders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.activation import wiring
from shared.clock import FixedClock
from shared.network import (
    BarringProfile,
    DataAccess,
    NetworkPermanentError,
    ServiceProfile,
    SimulatedNetwork,
)
from shared.network_lines import SsmLineRegistry
from shared.settings import Settings
from shared.simulation import StaticKnobs
from tests.integration.conftest import REGION

PREFIX = "/tbcss/test/simulator/lines"
MSISDN = "9876500001"
SIM = "89910000000000000012"
PROFILE = ServiceProfile(user_id="u-1", subscriber_type="PREPAID")
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
def ssm() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ssm", region_name=REGION)


def test_a_line_the_simulator_provisioned_and_barred_is_read_back(ssm: Any) -> None:
    network = SimulatedNetwork(
        StaticKnobs(), lines=SsmLineRegistry(ssm, PREFIX), clock=FixedClock(T0)
    )
    blocked = BarringProfile(outgoing_barred=True, data=DataAccess.BARRED)

    network.provision(MSISDN, SIM, PROFILE, attempt=1)
    network.apply_barring(MSISDN, blocked)

    record = SsmLineRegistry(ssm, PREFIX).get(MSISDN)  # another container's registry
    assert record is not None
    assert record.provisioned
    assert record.iccid == SIM
    assert record.barring == blocked
    assert record.updated_at == T0
    assert record.history == (
        f"2026-11-25T10:00:00+00:00 PROVISION {SIM}",
        "2026-11-25T10:00:00+00:00 BARRING outgoing=barred data=BARRED",
    )


def test_each_line_is_one_string_parameter_of_json(ssm: Any) -> None:
    SimulatedNetwork(StaticKnobs(), lines=SsmLineRegistry(ssm, PREFIX + "/")).provision(
        MSISDN, SIM, PROFILE, attempt=1
    )

    parameter = ssm.get_parameter(Name=f"{PREFIX}/{MSISDN}")["Parameter"]
    assert parameter["Type"] == "String"
    assert json.loads(parameter["Value"])["iccid"] == SIM


def test_an_unknown_line_is_none_and_barring_it_is_refused(ssm: Any) -> None:
    registry = SsmLineRegistry(ssm, PREFIX)
    network = SimulatedNetwork(StaticKnobs(), lines=registry)

    assert registry.get("9000000000") is None
    with pytest.raises(NetworkPermanentError, match="line XXXXXX0000 is not provisioned"):
        network.apply_barring("9000000000", BarringProfile(outgoing_barred=True))
    assert registry.get("9000000000") is None


def test_the_wiring_keeps_lines_only_when_a_prefix_is_configured(
    ssm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        wiring, "get_settings", lambda: Settings(simulator_lines_parameter_prefix=PREFIX)
    )
    wiring.network().provision(MSISDN, SIM, PROFILE, attempt=1)
    assert SsmLineRegistry(ssm, PREFIX).get(MSISDN) is not None

    monkeypatch.setattr(
        wiring, "get_settings", lambda: Settings(simulator_lines_parameter_prefix="")
    )
    wiring.network().provision("9876500002", SIM, PROFILE, attempt=1)
    assert SsmLineRegistry(ssm, PREFIX).get("9876500002") is None
