"""The network provisioning port (HLR/HSS: provision, de-provision, barring)
and its local simulator.

The error class names are the error names the activation state machine's
Retry and Catch match on (infra/activation.py).
"""

from __future__ import annotations

import random
import uuid
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from shared.simulation import KnobSource, Outcome, script_for


class NetworkTransientError(Exception):
    """Worth retrying: HLR busy, timeout, link down."""


class NetworkPermanentError(Exception):
    """Retrying will not help: SIM unknown to the HLR, number barred at the range level."""


class ServiceProfile(BaseModel):
    """What the network needs to know about the line."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    subscriber_type: str
    services: tuple[str, ...] = ("VOICE", "SMS", "DATA")


class BarringScope(StrEnum):
    """For service control (issue 7): what a bar stops. Incoming stays allowed."""

    OUTGOING = "OUTGOING"
    DATA = "DATA"
    ALL_OUTGOING = "ALL_OUTGOING"


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

    def bar(self, msisdn: str, scope: BarringScope) -> ProvisioningResult: ...

    def unbar(self, msisdn: str, scope: BarringScope) -> ProvisioningResult: ...


class SimulatedNetwork:
    """Behaves like an HLR/HSS front end: latency, transient and permanent errors.

    Deterministic by input: an ICCID whose digits before the Luhn check digit
    end in 999 fails permanently; ``...99d`` (d = 1-8) fails the first d attempts
    transiently (so 993 escalates after the workflow's three attempts). The
    knobs add random failures, timeouts and latency to every operation.
    """

    def __init__(self, knobs: KnobSource, rng: random.Random | None = None) -> None:
        self._knobs = knobs
        self._rng = rng

    # The simulator's answers depend on the ICCID and the knobs only.
    def provision(
        self,
        msisdn: str,  # noqa: ARG002
        iccid: str,
        profile: ServiceProfile,  # noqa: ARG002
        *,
        attempt: int,
    ) -> ProvisioningResult:
        script = script_for(iccid[:-1])
        if script.permanent:
            self._call()
            raise NetworkPermanentError(f"HLR: SIM {iccid} is not in the inventory (simulated)")
        if attempt <= script.transient_attempts:
            self._call()
            raise NetworkTransientError("HLR busy, try again (simulated)")
        return self._call()

    def deprovision(self, msisdn: str) -> ProvisioningResult:  # noqa: ARG002
        return self._call()

    def bar(self, msisdn: str, scope: BarringScope) -> ProvisioningResult:  # noqa: ARG002
        return self._call()

    def unbar(self, msisdn: str, scope: BarringScope) -> ProvisioningResult:  # noqa: ARG002
        return self._call()

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
