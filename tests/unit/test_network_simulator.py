"""The network simulator's line state: what a provisioned, swapped, barred or
de-provisioned line looks like afterwards, and the orders it refuses."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import FixedClock
from shared.network import (
    HISTORY_LIMIT,
    BarringProfile,
    DataAccess,
    InMemoryLineRegistry,
    LineRecord,
    NetworkPermanentError,
    NetworkTransientError,
    ServiceProfile,
    SimulatedNetwork,
)
from shared.simulation import FailureKnobs, SimulatorKnobs, StaticKnobs
from shared.validation import mask

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
MSISDN = "9876500001"
SIM = "89910000000000000012"
NEW_SIM = "89910000000000000020"
PERMANENT_SIM = "89910000000000099995"  # digits before the check digit end in 999
PROFILE = ServiceProfile(user_id="u-1", subscriber_type="PREPAID")
BLOCKED = BarringProfile(outgoing_barred=True, data=DataAccess.BARRED)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def lines() -> InMemoryLineRegistry:
    return InMemoryLineRegistry()


@pytest.fixture
def network(lines: InMemoryLineRegistry, clock: FixedClock) -> SimulatedNetwork:
    return SimulatedNetwork(StaticKnobs(), lines=lines, clock=clock)


def line(lines: InMemoryLineRegistry, msisdn: str = MSISDN) -> LineRecord:
    record = lines.get(msisdn)
    assert record is not None, f"no record for {msisdn}"
    return record


def test_a_provisioned_line_is_recorded_unrestricted_with_its_sim(
    network: SimulatedNetwork, lines: InMemoryLineRegistry
) -> None:
    network.provision(MSISDN, SIM, PROFILE, attempt=1)

    record = line(lines)
    assert record.provisioned
    assert record.iccid == SIM
    assert record.barring.unrestricted
    assert record.updated_at == T0
    assert record.history == (f"2026-11-25T10:00:00+00:00 PROVISION {SIM}",)


def test_a_sim_swap_keeps_the_line_barred(
    network: SimulatedNetwork, lines: InMemoryLineRegistry, clock: FixedClock
) -> None:
    network.provision(MSISDN, SIM, PROFILE, attempt=1)
    network.apply_barring(MSISDN, BLOCKED)
    clock.advance(timedelta(hours=1))

    network.provision(MSISDN, NEW_SIM, PROFILE, attempt=1)

    record = line(lines)
    assert record.iccid == NEW_SIM
    assert record.provisioned
    assert record.barring == BLOCKED  # a new SIM does not lift an unpaid-bill block
    assert record.updated_at == T0 + timedelta(hours=1)
    assert record.history[-2:] == (
        "2026-11-25T10:00:00+00:00 BARRING outgoing=barred data=BARRED",
        f"2026-11-25T11:00:00+00:00 SIM_SWAP {SIM} -> {NEW_SIM}",
    )


def test_repeating_a_provision_does_not_lift_a_bar(
    network: SimulatedNetwork, lines: InMemoryLineRegistry
) -> None:
    network.provision(MSISDN, SIM, PROFILE, attempt=1)
    network.apply_barring(MSISDN, BLOCKED)

    network.provision(MSISDN, SIM, PROFILE, attempt=2)  # a retried order

    assert line(lines).barring == BLOCKED
    assert line(lines).iccid == SIM


def test_barring_is_a_desired_state_that_can_be_lifted(
    network: SimulatedNetwork, lines: InMemoryLineRegistry
) -> None:
    network.provision(MSISDN, SIM, PROFILE, attempt=1)
    throttled = BarringProfile(data=DataAccess.THROTTLED)

    network.apply_barring(MSISDN, throttled)
    assert line(lines).barring == throttled
    network.apply_barring(MSISDN, BarringProfile())

    assert line(lines).barring.unrestricted
    assert line(lines).history[-1].endswith("BARRING outgoing=allowed data=ALLOWED")


def test_barring_a_line_that_was_never_provisioned_is_refused(
    network: SimulatedNetwork, lines: InMemoryLineRegistry
) -> None:
    with pytest.raises(NetworkPermanentError, match=f"line {mask(MSISDN)} is not provisioned"):
        network.apply_barring(MSISDN, BLOCKED)

    assert lines.get(MSISDN) is None


def test_a_deprovisioned_line_has_no_sim_and_cannot_be_barred(
    network: SimulatedNetwork, lines: InMemoryLineRegistry
) -> None:
    network.provision(MSISDN, SIM, PROFILE, attempt=1)

    network.deprovision(MSISDN)

    record = line(lines)
    assert not record.provisioned
    assert record.iccid is None
    assert record.history[-1] == "2026-11-25T10:00:00+00:00 DEPROVISION"
    with pytest.raises(NetworkPermanentError, match="not provisioned"):
        network.apply_barring(MSISDN, BLOCKED)


def test_a_reissued_number_starts_unrestricted(
    network: SimulatedNetwork, lines: InMemoryLineRegistry
) -> None:
    network.provision(MSISDN, SIM, PROFILE, attempt=1)
    network.apply_barring(MSISDN, BLOCKED)
    network.deprovision(MSISDN)

    network.provision(MSISDN, NEW_SIM, PROFILE, attempt=1)  # a new subscriber, a new SIM

    assert line(lines).barring.unrestricted
    assert line(lines).iccid == NEW_SIM


def test_a_failed_order_changes_nothing(
    network: SimulatedNetwork, lines: InMemoryLineRegistry
) -> None:
    with pytest.raises(NetworkPermanentError):
        network.provision(MSISDN, PERMANENT_SIM, PROFILE, attempt=1)

    assert lines.get(MSISDN) is None


def test_a_knob_failure_leaves_the_barring_as_it_was(
    lines: InMemoryLineRegistry, clock: FixedClock
) -> None:
    SimulatedNetwork(StaticKnobs(), lines=lines, clock=clock).provision(
        MSISDN, SIM, PROFILE, attempt=1
    )
    always_busy = StaticKnobs(SimulatorKnobs(network=FailureKnobs(transient_failure_rate=1.0)))
    flaky = SimulatedNetwork(always_busy, random.Random(1), lines=lines, clock=clock)

    with pytest.raises(NetworkTransientError):
        flaky.apply_barring(MSISDN, BLOCKED)

    assert line(lines).barring.unrestricted


def test_the_history_keeps_the_last_operations_only(
    network: SimulatedNetwork, lines: InMemoryLineRegistry
) -> None:
    network.provision(MSISDN, SIM, PROFILE, attempt=1)
    for _ in range(HISTORY_LIMIT + 5):
        network.apply_barring(MSISDN, BLOCKED)

    history = line(lines).history
    assert len(history) == HISTORY_LIMIT
    assert all("BARRING" in entry for entry in history)  # the PROVISION fell off


def test_without_a_registry_barring_any_line_succeeds() -> None:
    result = SimulatedNetwork(StaticKnobs()).apply_barring(MSISDN, BLOCKED)

    assert result.reference.startswith("HLR-")


def test_a_record_survives_a_json_round_trip(
    network: SimulatedNetwork, lines: InMemoryLineRegistry
) -> None:
    network.provision(MSISDN, SIM, PROFILE, attempt=1)
    network.apply_barring(MSISDN, BLOCKED)
    record = line(lines)

    assert LineRecord.model_validate_json(record.model_dump_json()) == record
