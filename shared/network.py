"""The network provisioning port (HLR/HSS: provision, de-provision, barring)
and its local simulator.

The error class names are the error names the activation state machine's
Retry and Catch match on (infra/activation.py).

The simulator can keep what it was told in a :class:`LineRegistry` (one
:class:`LineRecord` per MSISDN), so a test or a developer sees whether a line is
provisioned and how it is barred: ``tbcss network show <msisdn>`` locally.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, field_validator

from shared.clock import Clock, isoformat, system_clock
from shared.simulation import KnobSource, Outcome, script_for
from shared.validation import mask


class NetworkTransientError(Exception):
    """Worth retrying: HLR busy, timeout, link down."""


class NetworkPermanentError(Exception):
    """Retrying will not help: SIM unknown to the HLR, number barred at the range level."""


class LineNotProvisioned(NetworkPermanentError):
    """An order for a line the HLR does not have (never provisioned, or removed)."""


class ServiceProfile(BaseModel):
    """What the network needs to know about the line."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    subscriber_type: str
    services: tuple[str, ...] = ("VOICE", "SMS", "DATA")


class DataAccess(StrEnum):
    ALLOWED = "ALLOWED"
    THROTTLED = "THROTTLED"  # a trickle (e.g. 64 kbps): messaging works, streaming does not
    BARRED = "BARRED"


class BarringProfile(BaseModel):
    """What the line may do. Incoming calls and SMS stay allowed under every
    temporary block (a subscriber who has not paid can still be reached)."""

    model_config = ConfigDict(frozen=True)

    outgoing_barred: bool = False  # outgoing calls and SMS
    data: DataAccess = DataAccess.ALLOWED
    incoming_allowed: bool = True

    @property
    def unrestricted(self) -> bool:
        return not self.outgoing_barred and self.data is DataAccess.ALLOWED


UNRESTRICTED = BarringProfile()


class ProvisioningResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    reference: str  # the network's order id


class NetworkProvisioner(Protocol):
    def provision(
        self, msisdn: str, iccid: str, profile: ServiceProfile, *, attempt: int
    ) -> ProvisioningResult:
        """Create the subscription in HLR/HSS (IMSI of the SIM <-> MSISDN).
        Idempotent for the same MSISDN and ICCID. ``attempt`` counts from 1."""
        ...

    def deprovision(self, msisdn: str) -> ProvisioningResult: ...

    def apply_barring(self, msisdn: str, profile: BarringProfile) -> ProvisioningResult:
        """Set the line's barring profile (a desired state, not a delta: repeating
        it, or applying an older one again, is harmless)."""
        ...


# Pauses between in-call attempts of a barring order (three attempts in all).
BARRING_RETRY_PAUSES = (0.2, 0.5)


class BarringRetries:
    """A network whose barring orders are retried in the call on a transient error.

    A barring order is a desired state, so repeating it is safe. From the
    service-control worker, a blip of the HLR link then costs a fraction of a
    second instead of a queue redelivery (five of which park the message in the
    DLQ); from the API, an agent's block waits up to 0.7 s longer before its sync
    is left to the queue; in the disconnection workflow, each of its own retries
    is a three-attempt call. Provisioning keeps its caller's own attempt count
    (Step Functions' Retry, SIM replacement's loop) and de-provisioning its
    workflow's Retry, so both pass straight through.
    """

    def __init__(
        self,
        network: NetworkProvisioner,
        pauses: Sequence[float] = BARRING_RETRY_PAUSES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._network = network
        self._pauses = tuple(pauses)
        self._sleep = sleep

    def provision(
        self, msisdn: str, iccid: str, profile: ServiceProfile, *, attempt: int
    ) -> ProvisioningResult:
        return self._network.provision(msisdn, iccid, profile, attempt=attempt)

    def deprovision(self, msisdn: str) -> ProvisioningResult:
        return self._network.deprovision(msisdn)

    def apply_barring(self, msisdn: str, profile: BarringProfile) -> ProvisioningResult:
        for pause in self._pauses:
            try:
                return self._network.apply_barring(msisdn, profile)
            except NetworkTransientError:
                self._sleep(pause)
        return self._network.apply_barring(msisdn, profile)


HISTORY_LIMIT = 20  # operations a LineRecord remembers, oldest dropped first


class LineRecord(BaseModel):
    """What the (simulated) HLR knows about one line, after the last successful order."""

    model_config = ConfigDict(frozen=True)

    msisdn: str
    iccid: str | None = None
    provisioned: bool = False
    barring: BarringProfile = UNRESTRICTED
    updated_at: AwareDatetime
    # The last HISTORY_LIMIT operations, oldest first:
    # "2026-11-25T10:00:00+00:00 PROVISION 8991...", "... BARRING outgoing=barred data=BARRED".
    history: tuple[str, ...] = ()

    @field_validator("updated_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def after(self, at: datetime, operation: str, **changes: object) -> LineRecord:
        """This record with ``changes`` applied and ``operation`` added to the history."""
        history = (*self.history, f"{isoformat(at)} {operation}")[-HISTORY_LIMIT:]
        return self.model_validate(
            {**self.model_dump(), **changes, "updated_at": at, "history": history}
        )


def describe_barring(profile: BarringProfile) -> str:
    """``outgoing=barred data=BARRED`` (``incoming=barred`` only when it is)."""
    outgoing = "barred" if profile.outgoing_barred else "allowed"
    text = f"outgoing={outgoing} data={profile.data.value}"
    return text if profile.incoming_allowed else f"{text} incoming=barred"


class LineRegistry(Protocol):
    """Where the simulator keeps its lines (SSM in a deployment: shared/network_lines.py)."""

    def get(self, msisdn: str) -> LineRecord | None: ...

    def put(self, record: LineRecord) -> None: ...


class InMemoryLineRegistry:
    """A dict of lines, for tests."""

    def __init__(self) -> None:
        self.records: dict[str, LineRecord] = {}

    def get(self, msisdn: str) -> LineRecord | None:
        return self.records.get(msisdn)

    def put(self, record: LineRecord) -> None:
        self.records[record.msisdn] = record


class SimulatedNetwork:
    """Behaves like an HLR/HSS front end: latency, transient and permanent errors.

    Deterministic by input: an ICCID whose digits before the Luhn check digit
    end in 999 fails permanently; ``...99d`` (d = 1-8) fails the first d attempts
    transiently (so 993 escalates after the workflow's three attempts). The
    knobs add random failures, timeouts and latency to every operation.

    With a ``lines`` registry it also remembers each line after every successful
    order, and refuses to bar a line it has not provisioned (as an HLR would).
    The registry is read, changed and written back without a lock: one line's
    orders come from one workflow at a time.
    """

    def __init__(
        self,
        knobs: KnobSource,
        rng: random.Random | None = None,
        lines: LineRegistry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._knobs = knobs
        self._rng = rng
        self._lines = lines
        self._clock: Clock = clock or system_clock()

    # The simulator's answers depend on the ICCID, the knobs and (for barring) the line.
    def provision(
        self,
        msisdn: str,
        iccid: str,
        profile: ServiceProfile,  # noqa: ARG002
        *,
        attempt: int,
    ) -> ProvisioningResult:
        script = script_for(iccid[:-1])
        if script.permanent:
            self._call()
            raise NetworkPermanentError(
                f"HLR: SIM {mask(iccid)} is not in the inventory (simulated)"
            )
        if attempt <= script.transient_attempts:
            self._call()
            raise NetworkTransientError("HLR busy, try again (simulated)")
        result = self._call()
        if self._lines is not None:
            self._record_provision(self._lines, msisdn, iccid)
        return result

    def deprovision(self, msisdn: str) -> ProvisioningResult:
        result = self._call()
        if self._lines is not None:
            line = self._line(self._lines, msisdn)
            self._lines.put(
                line.after(self._clock.now(), "DEPROVISION", provisioned=False, iccid=None)
            )
        return result

    def apply_barring(self, msisdn: str, profile: BarringProfile) -> ProvisioningResult:
        result = self._call()
        if self._lines is not None:
            line = self._lines.get(msisdn)
            if line is None or not line.provisioned:
                raise LineNotProvisioned(f"line {mask(msisdn)} is not provisioned")
            operation = f"BARRING {describe_barring(profile)}"
            self._lines.put(line.after(self._clock.now(), operation, barring=profile))
        return result

    def _record_provision(self, lines: LineRegistry, msisdn: str, iccid: str) -> None:
        """A new line starts unrestricted; a live line keeps its barring, whether
        the order repeats (same ICCID) or swaps the SIM (another ICCID)."""
        line = self._line(lines, msisdn)
        now = self._clock.now()
        if not line.provisioned:
            operation = f"PROVISION {iccid}"
            updated = line.after(
                now, operation, provisioned=True, iccid=iccid, barring=UNRESTRICTED
            )
        elif line.iccid != iccid:
            updated = line.after(now, f"SIM_SWAP {line.iccid} -> {iccid}", iccid=iccid)
        else:
            updated = line.after(now, f"PROVISION {iccid} (repeated)")
        lines.put(updated)

    def _line(self, lines: LineRegistry, msisdn: str) -> LineRecord:
        return lines.get(msisdn) or LineRecord(msisdn=msisdn, updated_at=self._clock.now())

    def _call(self) -> ProvisioningResult:
        """One round trip: the knobs' latency, random failures and timeouts."""
        outcome = Outcome(self._knobs.current().network, self._rng)
        outcome.wait()
        if outcome.permanent:
            raise NetworkPermanentError("HLR rejected the order (simulated)")
        if outcome.transient:
            raise NetworkTransientError("HLR link down (simulated)")
        if outcome.timeout:
            raise NetworkTransientError(
                f"HLR timed out after {outcome.knobs.timeout_ms} ms (simulated)"
            )
        return ProvisioningResult(reference=f"HLR-{uuid.uuid4().hex[:12].upper()}")
