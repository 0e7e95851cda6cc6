"""The KYC provider port (Aadhaar / PAN verification) and its local simulator.

Errors are typed by what the workflow should do about them; their class names
are the error names the activation state machine's Retry and Catch match on
(infra/activation.py), so they must not be renamed casually.
"""

from __future__ import annotations

import random
import uuid
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from shared.kyc import KycType
from shared.simulation import KnobSource, Outcome, script_for
from shared.validation import mask


class KycRejected(Exception):
    """The provider answered: this identity does not verify (permanent)."""


class KycProviderUnavailable(Exception):
    """The provider did not answer properly: timeout, 5xx, throttling (transient)."""


class KycVerification(BaseModel):
    model_config = ConfigDict(frozen=True)

    reference: str  # the provider's transaction id, safe to log and store


class KycProvider(Protocol):
    def verify(self, kyc_type: KycType, number: str, *, name: str, attempt: int) -> KycVerification:
        """Verify a normalized Aadhaar / PAN number for the named person.

        ``attempt`` counts from 1 (a real adapter ignores it; it makes the
        simulator's scripted outcomes deterministic across retries).
        Raises KycRejected or KycProviderUnavailable.
        """
        ...


def scripted_digits(kyc_type: KycType, number: str) -> str:
    """The digits the simulator's script reads: Aadhaar without its Verhoeff check
    digit; a PAN's four-digit serial."""
    return number[:-1] if kyc_type is KycType.AADHAAR else number[5:9]


class SimulatedKycProvider:
    """Behaves like a provider: latency, transient failures, rejections.

    Deterministic by input (:func:`shared.simulation.script_for` over
    :func:`scripted_digits`): an Aadhaar whose first 11 digits end in 999, or a
    PAN whose serial ends in 999, is always rejected; ``...99d`` (d = 1-8) makes
    the first d attempts fail with KycProviderUnavailable. The knobs add random
    failures, timeouts and latency on top.
    """

    def __init__(self, knobs: KnobSource, rng: random.Random | None = None) -> None:
        self._knobs = knobs
        self._rng = rng

    def verify(self, kyc_type: KycType, number: str, *, name: str, attempt: int) -> KycVerification:
        outcome = Outcome(self._knobs.current().kyc, self._rng)
        outcome.wait()
        script = script_for(scripted_digits(kyc_type, number))
        shown = mask(number)  # messages end up in history and logs: never the number
        if not name.strip():
            raise KycRejected(f"{kyc_type.value} {shown}: no name to match against")
        if script.permanent or outcome.permanent:
            raise KycRejected(f"{kyc_type.value} {shown} did not verify for the name given")
        if attempt <= script.transient_attempts or outcome.transient:
            raise KycProviderUnavailable("KYC provider answered 503 (simulated)")
        if outcome.timeout:
            raise KycProviderUnavailable(
                f"KYC provider timed out after {outcome.knobs.timeout_ms} ms (simulated)"
            )
        return KycVerification(reference=f"KYCSIM-{uuid.uuid4().hex[:12].upper()}")
