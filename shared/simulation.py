"""Knobs shared by the local simulators of external systems (KYC provider,
network provisioning, payment gateway): injected failures, timeouts and latency.

The knobs live in one SSM parameter (JSON) so tests and operators change them
on a running system, without a redeploy:

    {"kyc": {"transient_failure_rate": 0.2},
     "network": {"latency_ms": 50, "timeout_rate": 0.1, "timeout_ms": 200},
     "gateway": {"permanent_failure_rate": 0.1, "lost_webhook_rate": 0.05}}

Each simulator reads its section on every call: it only ever runs locally or in
test stages, where one extra SSM read per call is cheap and staleness is not.
"""

from __future__ import annotations

import json
import random
import time
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class FailureKnobs(BaseModel):
    """How one simulator misbehaves beyond its deterministic rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_ms: Annotated[int, Field(ge=0, le=60_000)] = 0
    transient_failure_rate: Rate = 0.0
    permanent_failure_rate: Rate = 0.0
    timeout_rate: Rate = 0.0
    timeout_ms: Annotated[int, Field(ge=0, le=60_000)] = 100


class GatewayKnobs(FailureKnobs):
    """The payment gateway's misbehaviour (shared/payment_gateway.py). The inherited
    rates mean, for a charge: ``permanent_failure_rate`` a decline;
    ``transient_failure_rate`` the call fails before the gateway records anything;
    ``timeout_rate`` the gateway captures but the answer is lost. The webhook's
    own faults are drawn separately."""

    debit_fail_rate: Rate = 0.0  # captured, but the webhook reports FAILED
    lost_webhook_rate: Rate = 0.0  # captured or declined, and no webhook ever comes
    webhook_delay_seconds: Annotated[int, Field(ge=0, le=900)] = 2  # 900: SQS's maximum


class SimulatorKnobs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kyc: FailureKnobs = FailureKnobs()
    network: FailureKnobs = FailureKnobs()
    gateway: GatewayKnobs = GatewayKnobs()


class KnobSource(Protocol):
    def current(self) -> SimulatorKnobs: ...


class StaticKnobs:
    """Fixed knobs (unit tests, or no parameter configured)."""

    def __init__(self, knobs: SimulatorKnobs | None = None) -> None:
        self.knobs = knobs or SimulatorKnobs()

    def current(self) -> SimulatorKnobs:
        return self.knobs


class SsmKnobs:
    """Knobs read from an SSM String parameter holding JSON; read on every call."""

    def __init__(self, client: Any, parameter_name: str) -> None:  # an SSM client
        self._client = client
        self._name = parameter_name

    def current(self) -> SimulatorKnobs:
        value = self._client.get_parameter(Name=self._name)["Parameter"]["Value"]
        return SimulatorKnobs.model_validate(json.loads(value or "{}"))


class Outcome:
    """What the dice say for one call: the knobs' random part, drawn once."""

    def __init__(self, knobs: FailureKnobs, rng: random.Random | None = None) -> None:
        draw = (rng or random.Random()).random()  # noqa: S311 - dice, not secrets
        self.knobs = knobs
        # One draw split into bands, so the rates add up the way a reader expects.
        self.permanent = draw < knobs.permanent_failure_rate
        band = knobs.permanent_failure_rate
        self.transient = band <= draw < band + knobs.transient_failure_rate
        band += knobs.transient_failure_rate
        self.timeout = band <= draw < band + knobs.timeout_rate

    def wait(self) -> None:
        """The latency of a real call; a timeout waits its full time first."""
        delay_ms = self.knobs.latency_ms + (self.knobs.timeout_ms if self.timeout else 0)
        if delay_ms:
            time.sleep(delay_ms / 1000)


class Script(BaseModel):
    """The deterministic part of a simulator's answer, chosen by the input."""

    model_config = ConfigDict(frozen=True)

    permanent: bool = False
    transient_attempts: int = 0  # the first N attempts fail transiently


SCRIPT_MARKER = "99"


def script_for(digits: str) -> Script:
    """The rule every simulator applies to the digits it is scripted by
    (the identifier without its check digit, so any script can carry a valid one):

    - ending in ``999``: a permanent failure, every attempt;
    - ending in ``99d`` with d in 1-8: the first d attempts fail transiently;
    - anything else: success.
    """
    tail = digits[-3:]
    if len(tail) < 3 or tail[:2] != SCRIPT_MARKER or not tail[2].isdigit():
        return Script()
    count = int(tail[2])
    if count == 9:
        return Script(permanent=True)
    return Script(transient_attempts=count)
