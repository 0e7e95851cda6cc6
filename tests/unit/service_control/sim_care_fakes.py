"""In-memory fakes of the SIM-care ports (shared/services/sim_care.py), with the
atomic rules of the DynamoDB adapters: the request counter never passes its
limit, a wrong code counts (and locks) only while the OTP is SENT, verifying is
conditional on SENT and an unexpired code. The SIM claims share the claims of
``InMemoryServiceStore``, whose SimSwap guard swaps them at commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.clock import FixedClock
from shared.errors import DuplicateIccid
from shared.network import (
    NetworkPermanentError,
    NetworkTransientError,
    ProvisioningResult,
    ServiceProfile,
)
from shared.services.service_control import ServiceControl
from shared.services.sim_care import Otp, OtpConfig, OtpStatus, OwnerOtps, SimReplacement
from tests.unit.activation.fakes import FakeNotifier
from tests.unit.service_control.fakes import (
    FakeNetwork,
    FakeOtps,
    Hook,
    IccidClaim,
    InMemoryServiceStore,
    World,
    _take,
    make_world,
)

PENDING = "PENDING_REPLACEMENT"


class InMemoryOtpStore:
    def __init__(self) -> None:
        self.otps: dict[tuple[str, str], Otp] = {}
        self.ttl: dict[tuple[str, str], datetime] = {}
        self.counters: dict[tuple[str, datetime], int] = {}
        self.before_update: Hook | None = None  # one-shot: a concurrent verify lands first

    def count_request(
        self,
        user_id: str,
        window_start: datetime,
        limit: int,
        expires_at: datetime,  # noqa: ARG002
    ) -> bool:
        count = self.counters.get((user_id, window_start), 0)
        if count >= limit:
            return False
        self.counters[(user_id, window_start)] = count + 1
        return True

    def create(self, otp: Otp, expires_at: datetime) -> None:
        key = (otp.user_id, otp.otp_id)
        assert key not in self.otps, "OTP ids are unique"
        self.otps[key] = otp
        self.ttl[key] = expires_at

    def get(self, user_id: str, otp_id: str) -> Otp | None:
        return self.otps.get((user_id, otp_id))

    def record_wrong_code(self, user_id: str, otp_id: str, max_attempts: int) -> Otp | None:
        hook, self.before_update = self.before_update, None
        _take(hook)
        otp = self.otps[(user_id, otp_id)]
        if otp.status is not OtpStatus.SENT or otp.attempts >= max_attempts:
            return None
        attempts = otp.attempts + 1
        status = OtpStatus.LOCKED if attempts >= max_attempts else OtpStatus.SENT
        updated = otp.model_copy(update={"attempts": attempts, "status": status})
        self.otps[(user_id, otp_id)] = updated
        return updated

    def mark_verified(
        self, user_id: str, otp_id: str, verified_until: datetime, now: datetime
    ) -> bool:
        hook, self.before_update = self.before_update, None
        _take(hook)
        otp = self.otps[(user_id, otp_id)]
        if otp.status is not OtpStatus.SENT or otp.code_expires_at <= now:
            return False
        self.otps[(user_id, otp_id)] = otp.model_copy(
            update={"status": OtpStatus.VERIFIED, "verified_until": verified_until}
        )
        return True

    # --- what the service-control store does with an OtpToConsume guard ---

    def consume(self, user_id: str, otp_id: str) -> None:
        otp = self.otps[(user_id, otp_id)]
        self.otps[(user_id, otp_id)] = otp.model_copy(update={"status": OtpStatus.USED})


class InMemorySimClaims:
    def __init__(self, claims: dict[str, IccidClaim]) -> None:
        self.claims = claims

    def claim(self, user_id: str, iccid: str) -> None:
        held = self.claims.get(iccid)
        if held is not None and not (held.user_id == user_id and held.claim_status == PENDING):
            raise DuplicateIccid(f"ICCID {iccid[-4:]} is already in use")
        self.claims[iccid] = IccidClaim(user_id, PENDING)

    def release(self, user_id: str, iccid: str) -> None:
        held = self.claims.get(iccid)
        if held is not None and held.user_id == user_id and held.claim_status == PENDING:
            del self.claims[iccid]


@dataclass(frozen=True)
class ProvisionOrder:
    msisdn: str
    iccid: str
    profile: ServiceProfile
    attempt: int


class SimNetwork(FakeNetwork):
    """The HLR of FakeNetwork that also takes provisioning orders: ``outcomes``
    are raised one per order ('transient', 'permanent') before orders succeed;
    ``sims`` shows which SIM each line is bound to."""

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[ProvisionOrder] = []
        self.outcomes: list[str] = []
        self.sims: dict[str, str] = {}
        self.during_provision: Hook | None = None  # one-shot, before the order succeeds

    def provision(
        self, msisdn: str, iccid: str, profile: ServiceProfile, *, attempt: int
    ) -> ProvisioningResult:
        self.orders.append(ProvisionOrder(msisdn, iccid, profile, attempt))
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if outcome == "permanent":
                raise NetworkPermanentError(f"HLR: SIM {iccid} is not in the inventory")
            raise NetworkTransientError("HLR busy")
        hook, self.during_provision = self.during_provision, None
        _take(hook)
        self.sims[msisdn] = iccid
        return ProvisioningResult(reference=f"HLR-P{len(self.orders)}")


class StoredOtpGuard(FakeOtps):
    """The OtpToConsume guard of InMemoryServiceStore over InMemoryOtpStore: usable
    while VERIFIED and inside its window; consumed -> USED."""

    def __init__(self, clock: FixedClock, store: InMemoryOtpStore) -> None:
        super().__init__(clock)
        self._store = store

    def usable(self, user_id: str, otp_id: str) -> bool:
        otp = self._store.get(user_id, otp_id)
        return (
            otp is not None
            and otp.status is OtpStatus.VERIFIED
            and otp.verified_until is not None
            and self._clock.now() < otp.verified_until
        )

    def consume(self, user_id: str, otp_id: str) -> None:
        self._store.consume(user_id, otp_id)


@dataclass
class SimCare:
    """A World whose store, network and ServiceControl use the real OTP service."""

    world: World
    otp_store: InMemoryOtpStore
    notifier: FakeNotifier
    otps: OwnerOtps
    claims: InMemorySimClaims
    network: SimNetwork
    replacement: SimReplacement


def make_sim_care(config: OtpConfig | None = None) -> SimCare:
    world = make_world()
    otp_store = InMemoryOtpStore()
    notifier = FakeNotifier()
    otps = OwnerOtps(
        store=otp_store,
        subscribers=world.subscribers,
        notifier=notifier,
        clock=world.clock,
        config=config or OtpConfig(),
    )
    network = SimNetwork()
    world.network = network
    world.store = InMemoryServiceStore(world.facts, StoredOtpGuard(world.clock, otp_store))
    world.service = ServiceControl(
        store=world.store,
        facts=world.facts,
        network=network,
        events=world.events,
        clock=world.clock,
        otps=otps,
    )
    claims = InMemorySimClaims(world.store.claims)
    replacement = SimReplacement(
        store=world.store,
        claims=claims,
        subscribers=world.subscribers,
        network=network,
        sync=world.service,
        events=world.events,
        clock=world.clock,
    )
    return SimCare(world, otp_store, notifier, otps, claims, network, replacement)
