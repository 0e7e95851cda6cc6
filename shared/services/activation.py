"""SIM activation: accept a request (validate, seal the KYC number, claim the
ICCID and MSISDN with a PENDING profile in one transaction, start the
workflow), then the workflow's steps: verify KYC, provision on the network,
complete (ACTIVE, initial plan), notify; or reject / escalate.

Every step appends ``{at, step, outcome, detail}`` to the activation's history.
Details never hold a KYC number: only masks, references and error texts that
the adapters write without numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared.clock import Clock, isoformat, to_ist
from shared.errors import ActivePlanExists, DomainError, DuplicateIccid, InvalidRequest
from shared.events import DomainEvent, EventPublisher
from shared.kyc import KycType, SealedKyc, normalize_kyc_number
from shared.kyc_provider import KycProvider, KycProviderUnavailable, KycRejected
from shared.models import Frozen, Subscriber, SubscriberStatus, SubscriberType
from shared.network import NetworkProvisioner, ServiceProfile
from shared.notifications import Notifier, render
from shared.services.subscriptions import PlanCatalog, SubscriptionService
from shared.validation import Iccid, Msisdn, StateCode, mask, msisdn_to_e164

PLAN_ID = r"^[A-Z0-9][A-Z0-9_-]{1,39}$"
EMAIL = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$"
LAST_BILL_CYCLE_DAY = 28  # every month has it


class ActivationStatus(StrEnum):
    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    KYC_REJECTED = "KYC_REJECTED"
    ACTIVE = "ACTIVE"
    ESCALATED = "ESCALATED"


FINAL_STATUSES = frozenset(
    {ActivationStatus.ACTIVE, ActivationStatus.KYC_REJECTED, ActivationStatus.ESCALATED}
)


class Step(StrEnum):
    """History step names: the state names of the workflow, plus the request."""

    REQUEST = "Request"
    VERIFY_KYC = "VerifyKyc"
    REJECT_KYC = "RejectKyc"
    PROVISION = "ProvisionNetwork"
    COMPLETE = "Complete"
    NOTIFY = "Notify"
    ESCALATE = "Escalate"


class Outcome(StrEnum):
    ACCEPTED = "ACCEPTED"
    PASSED = "PASSED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    SUCCEEDED = "SUCCEEDED"
    PLAN_NOT_SUBSCRIBED = "PLAN_NOT_SUBSCRIBED"
    SENT = "SENT"
    ESCALATED = "ESCALATED"


class NotificationFailed(Exception):
    """SMS or email could not be sent (the workflow retries, then gives up quietly)."""


class KycInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: KycType
    number: Annotated[str, Field(min_length=1, max_length=20, description="Aadhaar or PAN")]

    @field_validator("number")
    @classmethod
    def _valid_for_type(cls, number: str, info: ValidationInfo) -> str:
        kyc_type = info.data.get("type")
        if kyc_type is None:
            return number  # the type's own error is reported
        return normalize_kyc_number(KycType(kyc_type), number)


class ActivationRequest(BaseModel):
    """POST /activate-sim. Every identifier is validated and normalized here."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    iccid: Iccid
    msisdn: Msisdn
    name: Annotated[str, Field(min_length=1, max_length=100)]
    email: Annotated[str, Field(pattern=EMAIL, max_length=254)]
    phone: Msisdn | None = Field(default=None, description="Alternate contact number")
    state: StateCode
    subscriber_type: SubscriberType
    kyc: KycInput
    plan_id: Annotated[str | None, Field(pattern=PLAN_ID)] = None

    def without_kyc_number(self, fingerprint: str) -> ActivationRequest:
        """The request with the KYC number replaced by its keyed fingerprint: what
        may be hashed into an idempotency record or compared later."""
        kyc = self.kyc.model_copy(update={"number": fingerprint})
        return self.model_copy(update={"kyc": kyc})


class HistoryEntry(Frozen):
    at: datetime
    step: Step
    outcome: Outcome
    detail: dict[str, Any] = Field(default_factory=dict)


class Activation(Frozen):
    activation_id: str
    user_id: str
    status: ActivationStatus
    msisdn: str
    iccid: str
    subscriber_type: SubscriberType
    plan_id: str | None
    kyc_masked: str
    request_fingerprint: str = Field(description="sha256 of the request, KYC fingerprinted")
    workflow_started: bool = False
    created_at: datetime
    updated_at: datetime
    history: list[HistoryEntry] = Field(default_factory=list)

    def failures(self, step: Step) -> list[HistoryEntry]:
        return [e for e in self.history if e.step is step and e.outcome is Outcome.FAILED]


class MaskedKyc(Frozen):
    type: KycType
    masked: str


class UserProfile(Frozen):
    """GET /users/{user_id}: the profile as staff and the owner see it."""

    user_id: str
    name: str | None
    email: str | None
    phone: str | None
    msisdn: str
    iccid: str | None
    subscriber_type: SubscriberType
    state: str
    status: SubscriberStatus
    kyc: MaskedKyc | None
    activation_id: str | None
    created_at: datetime


class ActivationAccepted(Frozen):
    user_id: str
    activation_id: str
    status: ActivationStatus


# --- ports -----------------------------------------------------------------


class ActivationStore(Protocol):
    def create(self, activation: Activation, subscriber: Subscriber, kyc: SealedKyc) -> None:
        """One transaction: claim ICCID and MSISDN, write the PENDING profile and
        the activation. Raises DuplicateIccid / DuplicateMsisdn and writes nothing."""
        ...

    def get(self, activation_id: str) -> Activation:
        """Raises ActivationNotFound."""
        ...

    def activation_for_iccid(self, iccid: str) -> Activation | None: ...

    def record(
        self,
        activation_id: str,
        entry: HistoryEntry,
        *,
        status: ActivationStatus | None = None,
        workflow_started: bool | None = None,
    ) -> None:
        """Append to the history (and set the status) in one write."""
        ...

    def sealed_kyc(self, user_id: str) -> SealedKyc: ...

    def get_profile(self, user_id: str) -> tuple[Subscriber, SealedKyc | None]:
        """Raises UserNotFound."""
        ...

    def get_subscriber(self, user_id: str) -> Subscriber: ...

    def set_subscriber_status(self, user_id: str, status: SubscriberStatus) -> None: ...

    def reject(self, activation: Activation, entry: HistoryEntry) -> None:
        """One transaction: activation and profile KYC_REJECTED, the ICCID and
        MSISDN claims released (back to stock for a corrected request)."""
        ...

    def capture_pos_payment(self, user_id: str, activation_id: str, amount_paise: int) -> bool:
        """One transaction: a POS receipt keyed by the activation and a wallet
        credit of the amount. False (and nothing written) if already captured."""
        ...


class KycVault(Protocol):
    def fingerprint(self, kyc_type: KycType, number: str) -> str: ...

    def seal(self, kyc_type: KycType, number: str, *, user_id: str) -> SealedKyc: ...

    def open(self, sealed: SealedKyc, *, user_id: str) -> str: ...


class WorkflowStarter(Protocol):
    def start(self, name: str, payload: dict[str, str]) -> None:
        """Start (idempotent on name + payload: a repeat is not an error)."""
        ...


class EscalationQueue(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...


# --- accepting a request ---------------------------------------------------


class ActivationService:
    """The API side: accept, look up."""

    def __init__(
        self,
        store: ActivationStore,
        vault: KycVault,
        catalog: PlanCatalog,
        workflows: WorkflowStarter,
        clock: Clock,
    ) -> None:
        self._store = store
        self._vault = vault
        self._catalog = catalog
        self._workflows = workflows
        self._clock = clock

    def accept(self, request: ActivationRequest) -> ActivationAccepted:
        self._check_plan(request)
        kyc_fingerprint = self._vault.fingerprint(request.kyc.type, request.kyc.number)
        fingerprint = request_fingerprint(request.without_kyc_number(kyc_fingerprint))
        activation, subscriber = self._new_activation(request, fingerprint)
        sealed = self._vault.seal(request.kyc.type, request.kyc.number, user_id=activation.user_id)
        try:
            self._store.create(activation, subscriber, sealed)
        except DuplicateIccid:
            activation = self._unstarted_twin(request.iccid, fingerprint)
        self._start_workflow(activation)
        return ActivationAccepted(
            user_id=activation.user_id,
            activation_id=activation.activation_id,
            status=activation.status,
        )

    def get(self, activation_id: str) -> Activation:
        return self._store.get(activation_id)

    def profile(self, user_id: str) -> UserProfile:
        subscriber, sealed = self._store.get_profile(user_id)
        kyc = MaskedKyc(type=sealed.kyc_type, masked=sealed.masked) if sealed else None
        return UserProfile(
            **subscriber.model_dump(include=set(UserProfile.model_fields) - {"kyc"}), kyc=kyc
        )

    def _check_plan(self, request: ActivationRequest) -> None:
        """A plan that cannot be subscribed is bad input, found before anything is stored."""
        if request.plan_id is None:
            return
        try:
            plan = self._catalog.get(request.plan_id)
        except DomainError:
            problem = f"no plan {request.plan_id}"
        else:
            if not plan.active:
                problem = f"plan {plan.plan_id} is no longer sold"
            elif plan.type is not request.subscriber_type:
                problem = f"plan {plan.plan_id} is {plan.type}, not {request.subscriber_type}"
            else:
                return
        raise InvalidRequest(
            f"plan_id: {problem}", details=[{"field": "plan_id", "problem": problem}]
        )

    def _new_activation(
        self, request: ActivationRequest, fingerprint: str
    ) -> tuple[Activation, Subscriber]:
        now = self._clock.now()
        user_id, activation_id = f"u-{uuid.uuid4().hex}", f"act-{uuid.uuid4().hex}"
        kyc_masked = mask(request.kyc.number)
        activation = Activation(
            activation_id=activation_id,
            user_id=user_id,
            status=ActivationStatus.PENDING,
            msisdn=request.msisdn,
            iccid=request.iccid,
            subscriber_type=request.subscriber_type,
            plan_id=request.plan_id,
            kyc_masked=kyc_masked,
            request_fingerprint=fingerprint,
            created_at=now,
            updated_at=now,
            history=[
                HistoryEntry(
                    at=now,
                    step=Step.REQUEST,
                    outcome=Outcome.ACCEPTED,
                    detail={"kyc": f"{request.kyc.type.value} {kyc_masked}"},
                )
            ],
        )
        subscriber = Subscriber(
            user_id=user_id,
            msisdn=request.msisdn,
            subscriber_type=request.subscriber_type,
            state=request.state,
            status=SubscriberStatus.PENDING,
            bill_cycle_day=min(to_ist(now).day, LAST_BILL_CYCLE_DAY),
            created_at=now,
            name=request.name,
            email=request.email,
            phone=request.phone,
            iccid=request.iccid,
            activation_id=activation_id,
        )
        return activation, subscriber

    def _unstarted_twin(self, iccid: str, fingerprint: str) -> Activation:
        """The claim is ours if it holds this very request and its workflow never
        started (StartExecution failed after the commit): resume that one.
        Anything else is a real duplicate."""
        existing = self._store.activation_for_iccid(iccid)
        if (
            existing is None
            or existing.request_fingerprint != fingerprint
            or existing.workflow_started
        ):
            raise DuplicateIccid(f"ICCID {mask(iccid)} is already in use")
        return existing

    def _start_workflow(self, activation: Activation) -> None:
        # The execution name is the activation id: StartExecution is idempotent on
        # name + input, so a resumed request can never run the workflow twice.
        self._workflows.start(
            activation.activation_id,
            {"activation_id": activation.activation_id, "user_id": activation.user_id},
        )
        entry = HistoryEntry(
            at=self._clock.now(),
            step=Step.REQUEST,
            outcome=Outcome.SUCCEEDED,
            detail={"workflow": activation.activation_id},
        )
        self._store.record(activation.activation_id, entry, workflow_started=True)


def request_fingerprint(request: ActivationRequest) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- the workflow's steps --------------------------------------------------


class ActivationWorkflow:
    """One method per state of the activation state machine (infra/activation.py).

    Each records its outcome before returning or raising; the typed errors it
    lets through are what the state machine's Retry and Catch match on.
    """

    def __init__(
        self,
        *,
        store: ActivationStore,
        vault: KycVault,
        kyc_provider: KycProvider,
        network: NetworkProvisioner,
        subscriptions: SubscriptionService,
        catalog: PlanCatalog,
        notifier: Notifier,
        escalations: EscalationQueue,
        events: EventPublisher,
        clock: Clock,
    ) -> None:
        self._store = store
        self._vault = vault
        self._kyc = kyc_provider
        self._network = network
        self._subscriptions = subscriptions
        self._catalog = catalog
        self._notifier = notifier
        self._escalations = escalations
        self._events = events
        self._clock = clock

    def verify_kyc(self, activation_id: str) -> dict[str, str]:
        activation = self._store.get(activation_id)
        sealed = self._store.sealed_kyc(activation.user_id)
        subscriber = self._store.get_subscriber(activation.user_id)
        number = self._vault.open(sealed, user_id=activation.user_id)
        attempt = len(activation.failures(Step.VERIFY_KYC)) + 1
        try:
            verification = self._kyc.verify(
                sealed.kyc_type, number, name=subscriber.name or "", attempt=attempt
            )
        except (KycRejected, KycProviderUnavailable) as error:
            self._record_failure(activation_id, Step.VERIFY_KYC, error, attempt)
            raise
        self._record(
            activation_id, Step.VERIFY_KYC, Outcome.PASSED, {"reference": verification.reference}
        )
        return {"kyc_reference": verification.reference}

    def reject_kyc(self, activation_id: str, error: dict[str, Any] | None) -> dict[str, str]:
        activation = self._store.get(activation_id)
        if activation.status is ActivationStatus.KYC_REJECTED:
            return {"status": activation.status.value}
        entry = self._entry(Step.REJECT_KYC, Outcome.REJECTED, _error_detail(error))
        self._store.reject(activation, entry)
        self._events.publish([self._step_event("KycRejected", activation)])
        return {"status": ActivationStatus.KYC_REJECTED.value}

    def provision(self, activation_id: str) -> dict[str, str]:
        activation = self._store.get(activation_id)
        attempt = len(activation.failures(Step.PROVISION)) + 1
        profile = ServiceProfile(
            user_id=activation.user_id, subscriber_type=activation.subscriber_type.value
        )
        status = ActivationStatus.PROVISIONING
        try:
            result = self._network.provision(
                activation.msisdn, activation.iccid, profile, attempt=attempt
            )
        except Exception as error:
            self._record_failure(activation_id, Step.PROVISION, error, attempt, status=status)
            raise
        detail = {"reference": result.reference, "attempt": attempt}
        self._record(activation_id, Step.PROVISION, Outcome.SUCCEEDED, detail, status=status)
        return {"network_reference": result.reference}

    def complete(self, activation_id: str) -> dict[str, str]:
        activation = self._store.get(activation_id)
        if activation.status is ActivationStatus.ACTIVE:
            return {"status": activation.status.value}  # a repeated invocation
        self._store.set_subscriber_status(activation.user_id, SubscriberStatus.ACTIVE)
        outcome, detail = self._initial_plan(activation)
        self._record(activation_id, Step.COMPLETE, outcome, detail, status=ActivationStatus.ACTIVE)
        self._events.publish([self._activated_event(activation, detail)])
        return {"status": ActivationStatus.ACTIVE.value}

    def notify(self, activation_id: str) -> dict[str, str]:
        activation = self._store.get(activation_id)
        subscriber = self._store.get_subscriber(activation.user_id)
        message = render("activation", _template_values(activation, subscriber))
        try:
            sent = {"sms": self._notifier.send_sms(msisdn_to_e164(activation.msisdn), message.sms)}
            if subscriber.email:
                sent["email"] = self._notifier.send_email(
                    subscriber.email, message.email_subject, message.email_body
                )
        except Exception as error:
            self._record_failure(activation_id, Step.NOTIFY, error, attempt=0)
            raise NotificationFailed(str(error)) from error
        self._record(activation_id, Step.NOTIFY, Outcome.SENT, sent)
        return sent

    def escalate(self, activation_id: str, error: dict[str, Any] | None) -> dict[str, str]:
        """Hand the activation to an engineer: the message first, then the status,
        so ESCALATED always means someone was told (a retry may tell twice;
        the activation id de-duplicates)."""
        activation = self._store.get(activation_id)
        if activation.status is ActivationStatus.ESCALATED:
            return {"status": activation.status.value}
        now = self._clock.now()
        self._escalations.send(_escalation_message(activation, error, now))
        entry = self._entry(Step.ESCALATE, Outcome.ESCALATED, _error_detail(error))
        self._store.record(activation_id, entry, status=ActivationStatus.ESCALATED)
        self._events.publish([self._step_event("ActivationEscalated", activation)])
        return {"status": ActivationStatus.ESCALATED.value}

    # --- helpers -------------------------------------------------------------

    def _initial_plan(self, activation: Activation) -> tuple[Outcome, dict[str, Any]]:
        """Subscribe the plan sold with the SIM. Prepaid: the price was paid at the
        point of sale; it enters the wallet as a POS credit of exactly the price,
        which the purchase takes straight back out (captured once per activation,
        applied once per active slot: repeats change nothing)."""
        if activation.plan_id is None:
            return Outcome.SUCCEEDED, {"plan_id": None}
        detail: dict[str, Any] = {"plan_id": activation.plan_id}
        try:
            if activation.subscriber_type is SubscriberType.PREPAID:
                price = self._catalog.get(activation.plan_id).price_paise
                self._store.capture_pos_payment(activation.user_id, activation.activation_id, price)
                detail["pos_payment_paise"] = price
            result = self._subscriptions.subscribe(activation.user_id, activation.plan_id)
            detail["subscription_id"] = result.subscription_id
        except ActivePlanExists:
            detail["subscription"] = "already active"
        except DomainError as error:
            # Service still starts; the POS money stays in the wallet for the agent to apply.
            detail["problem"] = f"{error.code}: {error.message}"
            return Outcome.PLAN_NOT_SUBSCRIBED, detail
        return Outcome.SUCCEEDED, detail

    def _step_event(self, kind: str, activation: Activation) -> DomainEvent:
        """An activation ending short of ACTIVE, for the bus (the audit trail)."""
        return DomainEvent(
            detail_type=kind,
            source="activation",
            occurred_at=self._clock.now(),
            correlation_id=activation.activation_id,
            event_id=f"{kind}-{activation.activation_id}",
            detail={
                "user_id": activation.user_id,
                "activation_id": activation.activation_id,
                "subscriber_type": activation.subscriber_type.value,
            },
        )

    def _activated_event(self, activation: Activation, detail: dict[str, Any]) -> DomainEvent:
        return DomainEvent(
            detail_type="SubscriberActivated",
            source="activation",
            occurred_at=self._clock.now(),
            correlation_id=activation.activation_id,
            detail={
                "user_id": activation.user_id,
                "activation_id": activation.activation_id,
                "subscriber_type": activation.subscriber_type.value,
                "plan_id": activation.plan_id,
                "subscription_id": detail.get("subscription_id"),
            },
        )

    def _entry(self, step: Step, outcome: Outcome, detail: dict[str, Any]) -> HistoryEntry:
        return HistoryEntry(at=self._clock.now(), step=step, outcome=outcome, detail=detail)

    def _record(
        self,
        activation_id: str,
        step: Step,
        outcome: Outcome,
        detail: dict[str, Any],
        *,
        status: ActivationStatus | None = None,
    ) -> None:
        self._store.record(activation_id, self._entry(step, outcome, detail), status=status)

    def _record_failure(
        self,
        activation_id: str,
        step: Step,
        error: Exception,
        attempt: int,
        *,
        status: ActivationStatus | None = None,
    ) -> None:
        detail: dict[str, Any] = {"error": type(error).__name__, "message": str(error)}
        if attempt:
            detail["attempt"] = attempt
        self._record(activation_id, step, Outcome.FAILED, detail, status=status)


def _error_detail(error: dict[str, Any] | None) -> dict[str, Any]:
    """What a state machine Catch put in ``$.error``: {Error, Cause}."""
    if not error:
        return {}
    cause = str(error.get("Cause", ""))
    with contextlib.suppress(ValueError, AttributeError):  # a Lambda error is JSON
        cause = str(json.loads(cause).get("errorMessage", cause))
    return {"error": str(error.get("Error", "")), "message": cause[:500]}


def _escalation_message(
    activation: Activation, error: dict[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """Everything an engineer needs without opening the table. The ICCID and
    MSISDN are in full: they are what the HLR is searched by, and neither is
    KYC data. The KYC number is never in it (only its mask)."""
    failed = [e for e in activation.history if e.outcome is Outcome.FAILED]
    return {
        "kind": "ActivationEscalated",
        "activation_id": activation.activation_id,
        "user_id": activation.user_id,
        "msisdn": activation.msisdn,
        "iccid": activation.iccid,
        "subscriber_type": activation.subscriber_type.value,
        "plan_id": activation.plan_id,
        "kyc": activation.kyc_masked,
        "status_before": activation.status.value,
        "final_error": _error_detail(error),
        "attempts": [{"at": isoformat(e.at), "step": e.step.value, **e.detail} for e in failed],
        "requested_at": isoformat(activation.created_at),
        "escalated_at": isoformat(now),
        "workflow_execution": activation.activation_id,
        "runbook": "Check the HLR/HSS order for this ICCID and MSISDN; then re-run the "
        "activation or release the claims.",
    }


def _template_values(activation: Activation, subscriber: Subscriber) -> dict[str, str]:
    plan = f" on plan {activation.plan_id}" if activation.plan_id else ""
    return {
        "name": subscriber.name or "customer",
        "msisdn": activation.msisdn,
        "subscriber_type": activation.subscriber_type.value,
        "plan_sentence": plan,
        "iccid_masked": mask(activation.iccid),
        "activation_id": activation.activation_id,
        "activation_ref": activation.activation_id[-8:].upper(),
    }
