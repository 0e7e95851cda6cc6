"""Barring orders survive a short HLR outage inside the call: the queue
message that asked for them is not sent back for a blip."""

from __future__ import annotations

import pytest

from shared.network import BarringProfile, BarringRetries, DataAccess, NetworkTransientError
from tests.unit.service_control.fakes import MSISDN, FakeNetwork

BARRED = BarringProfile(outgoing_barred=True, data=DataAccess.BARRED)


@pytest.fixture
def hlr() -> FakeNetwork:
    return FakeNetwork()


def retrying(hlr: FakeNetwork, pauses: list[float]) -> BarringRetries:
    return BarringRetries(hlr, pauses=(0.2, 0.5), sleep=pauses.append)


def test_a_barring_order_lands_after_two_transient_failures(hlr: FakeNetwork) -> None:
    pauses: list[float] = []
    hlr.fail_next = 2

    retrying(hlr, pauses).apply_barring(MSISDN, BARRED)

    assert hlr.profile_of(MSISDN) == BARRED
    assert len(hlr.barring_orders) == 3
    assert pauses == [0.2, 0.5]


def test_a_link_down_for_every_attempt_raises_so_the_queue_redelivers(
    hlr: FakeNetwork,
) -> None:
    pauses: list[float] = []
    hlr.fail_next = 3

    with pytest.raises(NetworkTransientError):
        retrying(hlr, pauses).apply_barring(MSISDN, BARRED)

    assert len(hlr.barring_orders) == 3
    assert hlr.profile_of(MSISDN).unrestricted


def test_a_healthy_link_takes_one_order_and_no_pause(hlr: FakeNetwork) -> None:
    pauses: list[float] = []

    retrying(hlr, pauses).apply_barring(MSISDN, BARRED)

    assert len(hlr.barring_orders) == 1
    assert pauses == []


def test_deprovisioning_is_not_retried_here_its_workflow_retries_it(hlr: FakeNetwork) -> None:
    hlr.fail_next = 1

    with pytest.raises(NetworkTransientError):
        retrying(hlr, []).deprovision(MSISDN)

    assert hlr.deprovisioned == []
