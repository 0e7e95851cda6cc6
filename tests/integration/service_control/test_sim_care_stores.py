"""SIM care's DynamoDB adapters on moto: the OTP store's atomic counter, attempts
and status transitions, the SIM claims of a replacement, and both services end to
end over the real stores (the service-control store consumes the OTP and swaps
the SIM claims in the profile's transaction)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from shared import db
from shared.auth import Principal, Role
from shared.clock import FixedClock
from shared.db import SubscriberItem
from shared.errors import DomainError, DuplicateIccid
from shared.events import InMemoryEventPublisher
from shared.models import Subscriber, SubscriberStatus
from shared.network import InMemoryLineRegistry, ServiceProfile, SimulatedNetwork
from shared.service_control import BlockReason
from shared.services.service_control import ServiceControl
from shared.services.sim_care import Otp, OtpStatus, OwnerOtps, SimReplacement
from shared.simulation import StaticKnobs
from shared.stores.activation import ICCID_SK, iccid_pk
from shared.stores.otp import DynamoOtpStore, otp_sk, rate_sk
from shared.stores.service_control import DynamoFacts, DynamoServiceStore
from shared.stores.sim_care import DynamoSimClaims
from tests.integration.conftest import T0, Aws
from tests.integration.service_control.conftest import MakeLine, put_claim
from tests.unit.activation.fakes import FakeNotifier

NEW_ICCID = "8991000000000000127"
REFUSED_ICCID = "8991000000000009995"  # the simulator's HLR refuses ...999x
BUSY_TWICE_ICCID = "8991000000000009920"  # ... and answers ...992x on the third attempt
AGENT = Principal("agent-7", frozenset({Role.AGENT}))
CODE_EXPIRES = T0 + timedelta(minutes=5)


@pytest.fixture
def otps(aws: Aws) -> DynamoOtpStore:
    return DynamoOtpStore()


@pytest.fixture
def claims(aws: Aws) -> DynamoSimClaims:
    return DynamoSimClaims()


def new_otp(otp_id: str = "otp-1", user_id: str = "u1") -> Otp:
    return Otp(
        otp_id=otp_id,
        user_id=user_id,
        reason=BlockReason.THEFT,
        code_hash="ab" * 32,
        salt="s" * 32,
        created_at=T0,
        code_expires_at=CODE_EXPIRES,
    )


def raw(aws: Aws, pk: str, sk: str) -> dict[str, Any]:
    [item] = [item for item in aws.items(pk) if item["SK"]["S"] == sk]
    return item


def claim_of(aws: Aws, iccid: str) -> dict[str, Any] | None:
    items = aws.items(iccid_pk(iccid))
    return items[0] if items else None


# --- DynamoOtpStore ------------------------------------------------------------------


def test_an_otp_is_stored_with_its_ttl_and_read_back(aws: Aws, otps: DynamoOtpStore) -> None:
    otps.create(new_otp(), T0 + timedelta(days=1))

    assert otps.get("u1", "otp-1") == new_otp()
    assert otps.get("u1", "otp-2") is None
    assert otps.get("u2", "otp-1") is None
    item = raw(aws, db.user_pk("u1"), otp_sk("otp-1"))
    assert item["expires_at"] == {"N": str(int((T0 + timedelta(days=1)).timestamp()))}
    assert item["status"] == {"S": "SENT"}
    with pytest.raises(Exception, match="ConditionalCheckFailed"):
        otps.create(new_otp(), T0)  # never overwritten


def test_the_request_counter_stops_at_the_limit_per_user_and_window(
    aws: Aws, otps: DynamoOtpStore
) -> None:
    window, later = T0, T0 + timedelta(minutes=15)
    ends = later + timedelta(days=1)

    first = [otps.count_request("u1", window, 3, ends) for _ in range(4)]
    next_window = otps.count_request("u1", later, 3, ends)
    other_user = otps.count_request("u2", window, 3, ends)

    assert first == [True, True, True, False]
    assert next_window
    assert other_user
    counter = raw(aws, db.user_pk("u1"), rate_sk(window))
    assert counter["requests"] == {"N": "3"}  # the refused one was not counted
    assert counter["expires_at"] == {"N": str(int(ends.timestamp()))}
    assert rate_sk(window) == f"OTP_RATE#{int(T0.timestamp())}"


@pytest.mark.usefixtures("atomic_moto")
def test_concurrent_requests_cannot_pass_the_limit(aws: Aws, otps: DynamoOtpStore) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        counted = list(pool.map(lambda _: otps.count_request("u1", T0, 3, T0), range(12)))

    assert counted.count(True) == 3
    assert raw(aws, db.user_pk("u1"), rate_sk(T0))["requests"] == {"N": "3"}


def test_wrong_codes_count_up_and_the_last_one_locks(otps: DynamoOtpStore) -> None:
    otps.create(new_otp(), T0 + timedelta(days=1))

    counted = [otps.record_wrong_code("u1", "otp-1", 3) for _ in range(4)]

    assert [(o.attempts, o.status) if o else None for o in counted] == [
        (1, OtpStatus.SENT),
        (2, OtpStatus.SENT),
        (3, OtpStatus.LOCKED),
        None,
    ]
    assert otps.get("u1", "otp-1") == counted[2]
    assert not otps.mark_verified("u1", "otp-1", T0 + timedelta(minutes=10), T0)


def test_verifying_moves_sent_to_verified_once_and_only_before_the_code_expires(
    otps: DynamoOtpStore,
) -> None:
    otps.create(new_otp("otp-1"), T0 + timedelta(days=1))
    otps.create(new_otp("otp-2"), T0 + timedelta(days=1))
    until = T0 + timedelta(minutes=12)

    assert otps.mark_verified("u1", "otp-1", until, T0 + timedelta(minutes=2))
    assert not otps.mark_verified("u1", "otp-1", until, T0 + timedelta(minutes=3))
    assert not otps.mark_verified("u1", "otp-2", until, CODE_EXPIRES)  # expired

    verified = otps.get("u1", "otp-1")
    assert verified is not None
    assert (verified.status, verified.verified_until) == (OtpStatus.VERIFIED, until)
    assert otps.record_wrong_code("u1", "otp-1", 5) is None  # no more guesses count
    assert otps.get("u1", "otp-2") == new_otp("otp-2")


# --- DynamoSimClaims -------------------------------------------------------------------


def test_a_replacement_claims_a_free_sim_and_may_repeat_the_claim(
    aws: Aws, claims: DynamoSimClaims
) -> None:
    claims.claim("u1", NEW_ICCID)
    claims.claim("u1", NEW_ICCID)  # a retry after the network was busy

    item = claim_of(aws, NEW_ICCID)
    assert item is not None
    assert item["SK"] == {"S": ICCID_SK}
    assert item["user_id"] == {"S": "u1"}
    assert item["claim_status"] == {"S": "PENDING_REPLACEMENT"}
    assert item["activation_id"] == {"S": "SIM-REPLACEMENT"}
    with pytest.raises(DuplicateIccid):
        claims.claim("u2", NEW_ICCID)


@pytest.mark.parametrize(
    ("owner", "claim_status"),
    [("u2", None), ("u2", "PENDING_REPLACEMENT"), ("u1", None), ("u1", "RETIRED")],
    ids=["another's SIM", "another's replacement", "own SIM in use", "own retired SIM"],
)
def test_a_sim_already_claimed_cannot_be_claimed(
    aws: Aws, claims: DynamoSimClaims, owner: str, claim_status: str | None
) -> None:
    put_claim(NEW_ICCID, owner, claim_status)

    with pytest.raises(DuplicateIccid):
        claims.claim("u1", NEW_ICCID)

    item = claim_of(aws, NEW_ICCID)
    assert item is not None
    assert item["user_id"] == {"S": owner}


def test_release_gives_back_only_the_users_pending_claim(aws: Aws, claims: DynamoSimClaims) -> None:
    claims.claim("u1", NEW_ICCID)
    put_claim(REFUSED_ICCID, "u2", "PENDING_REPLACEMENT")
    put_claim(BUSY_TWICE_ICCID, "u1")  # in use since activation

    claims.release("u1", NEW_ICCID)
    claims.release("u1", REFUSED_ICCID)
    claims.release("u1", BUSY_TWICE_ICCID)
    claims.release("u1", "8991000000000000788")  # never claimed

    assert claim_of(aws, NEW_ICCID) is None
    assert claim_of(aws, REFUSED_ICCID) is not None
    assert claim_of(aws, BUSY_TWICE_ICCID) is not None
    claims.claim("u2", NEW_ICCID)  # free again


# --- the services over the real stores --------------------------------------------------


@dataclass
class World:
    clock: FixedClock
    states: DynamoServiceStore
    lines: InMemoryLineRegistry
    network: SimulatedNetwork
    events: InMemoryEventPublisher
    notifier: FakeNotifier
    otps: OwnerOtps
    control: ServiceControl
    replacement: SimReplacement


@pytest.fixture
def world(aws: Aws, store: db.DynamoSubscriptionStore) -> World:
    clock = FixedClock(T0)
    states = DynamoServiceStore()
    lines = InMemoryLineRegistry()
    network = SimulatedNetwork(StaticKnobs(), lines=lines, clock=clock)
    events = InMemoryEventPublisher()
    notifier = FakeNotifier()
    otps = OwnerOtps(store=DynamoOtpStore(), subscribers=store, notifier=notifier, clock=clock)
    control = ServiceControl(
        store=states,
        facts=DynamoFacts(store),
        network=network,
        events=events,
        clock=clock,
        otps=otps,
    )
    replacement = SimReplacement(
        store=states,
        claims=DynamoSimClaims(),
        subscribers=store,
        network=network,
        sync=control,
        events=events,
        clock=clock,
    )
    return World(clock, states, lines, network, events, notifier, otps, control, replacement)


@pytest.fixture
def live(line: MakeLine, world: World) -> Subscriber:
    """u1's line, provisioned on the (simulated) network, with an alternate number."""
    subscriber = line("u1")
    assert subscriber.iccid is not None
    profile = SubscriberItem.get(db.user_pk("u1"), "PROFILE")
    profile.update(actions=[SubscriberItem.phone.set("9123456780")])
    service = ServiceProfile(user_id="u1", subscriber_type=subscriber.subscriber_type.value)
    world.network.provision(subscriber.msisdn, subscriber.iccid, service, attempt=1)
    return subscriber


def test_the_owner_blocks_a_stolen_sim_with_an_otp_used_once(
    aws: Aws, world: World, live: Subscriber
) -> None:
    owner = Principal("u1", frozenset({Role.SUBSCRIBER}))
    requested = world.otps.request(owner, "u1", BlockReason.THEFT)
    (to, text) = world.notifier.sms[0]
    [code] = re.findall(r"\b[0-9]{6}\b", text)
    world.clock.advance(timedelta(minutes=1))
    world.otps.verify(owner, "u1", requested.otp_id, code)

    view = world.control.block(owner, "u1", BlockReason.THEFT, otp_id=requested.otp_id)
    with pytest.raises(DomainError) as again:
        world.control.block(owner, "u1", BlockReason.THEFT, otp_id=requested.otp_id)

    assert to == "+919123456780"
    assert view.status is SubscriberStatus.TEMP_BLOCKED
    assert view.network_in_sync
    line = world.lines.get(live.msisdn)
    assert line is not None
    assert line.barring.outgoing_barred
    assert again.value.code == "OTP_USED"
    item = raw(aws, db.user_pk("u1"), otp_sk(requested.otp_id))
    assert item["status"] == {"S": "USED"}
    assert code not in str(item)


def test_a_replacement_swaps_the_sim_claims_and_lifts_the_theft_block(
    aws: Aws, world: World, live: Subscriber
) -> None:
    agent_block = world.control.block(AGENT, "u1", BlockReason.THEFT)
    assert agent_block.status is SubscriberStatus.TEMP_BLOCKED

    result = world.replacement.replace(AGENT, "u1", BUSY_TWICE_ICCID)

    assert result.status is SubscriberStatus.ACTIVE
    assert result.network_in_sync
    state = world.states.load("u1")
    assert (state.iccid, state.reasons) == (BUSY_TWICE_ICCID, frozenset())
    new_claim, old_claim = claim_of(aws, BUSY_TWICE_ICCID), claim_of(aws, live.iccid or "")
    assert new_claim is not None
    assert old_claim is not None
    assert new_claim["claim_status"] == {"S": "IN_USE"}
    assert old_claim["claim_status"] == {"S": "RETIRED"}
    line = world.lines.get(live.msisdn)
    assert line is not None
    assert line.iccid == BUSY_TWICE_ICCID
    assert line.barring.unrestricted
    [entry, _] = world.states.history("u1", 5)
    assert entry.lifted == {BlockReason.THEFT}
    assert entry.actor == "agent:agent-7"
    assert [e.detail_type for e in world.events.events][-2:] == ["SimReplaced", "ServiceUnblocked"]


def test_a_sim_the_network_refuses_leaves_profile_and_claims_as_they_were(
    aws: Aws, world: World, live: Subscriber
) -> None:
    with pytest.raises(DomainError) as raised:
        world.replacement.replace(AGENT, "u1", REFUSED_ICCID)

    assert raised.value.code == "SIM_REJECTED"
    assert claim_of(aws, REFUSED_ICCID) is None
    assert world.states.load("u1").iccid == live.iccid
    old_claim = claim_of(aws, live.iccid or "")
    assert old_claim is not None
    assert "claim_status" not in old_claim
