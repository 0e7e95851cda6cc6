"""Service control rules (pure): block reasons, the status they give, the
network barring they need, and who may apply or lift what.

The rules, as the operator's policy (README "Service control" repeats them):

- A subscriber is TEMP_BLOCKED while any block reason remains, ACTIVE when none
  does. PENDING_DISCONNECT and PERMANENT_DISCONNECTED are set by the
  disconnection workflow only; reasons may still come and go under
  PENDING_DISCONNECT, but the status stays.
- Barring: every reason bars outgoing calls, SMS and data; QUOTA_EXHAUSTED only
  throttles data. Incoming calls and SMS are never barred by a temporary block.
- Fact-backed reasons (OVERDUE, PLAN_EXPIRED, QUOTA_EXHAUSTED) are applied by
  the system from events and lift by themselves when the fact ends (payment,
  recharge, new plan period). Nobody applies them by hand. An agent may lift one
  only once the fact no longer holds (OVERDUE: no bill past its grace period is
  still unpaid; PLAN_EXPIRED: a valid plan is active; QUOTA_EXHAUSTED: never,
  only rating knows), e.g. after a lost event; an admin may lift any of them
  regardless (a goodwill extension).
- LOST_SIM and THEFT: the owner (with a verified OTP), an agent or an admin
  applies them; an agent or admin lifts them, and a SIM replacement lifts them.
- AGENT: an agent or admin applies and lifts it (e.g. a customer's request).
- FRAUD_SUSPECTED: an agent or admin applies it; only an admin (the fraud
  team) lifts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from shared.auth import Principal, Role
from shared.errors import Conflict, Forbidden, InvalidRequest
from shared.models import Frozen, SubscriberStatus
from shared.network import BarringProfile, DataAccess


class BlockReason(StrEnum):
    OVERDUE = "OVERDUE"
    PLAN_EXPIRED = "PLAN_EXPIRED"
    QUOTA_EXHAUSTED = "QUOTA_EXHAUSTED"  # data throttled only
    LOST_SIM = "LOST_SIM"
    THEFT = "THEFT"
    FRAUD_SUSPECTED = "FRAUD_SUSPECTED"
    AGENT = "AGENT"


# Applied from events, lifted when the fact behind them ends.
FACT_BACKED = frozenset(
    {BlockReason.OVERDUE, BlockReason.PLAN_EXPIRED, BlockReason.QUOTA_EXHAUSTED}
)
# Lifted by a successful payment or a plan purchase (recharge).
PAYMENT_RELATED = frozenset({BlockReason.OVERDUE, BlockReason.PLAN_EXPIRED})
# The SIM is out of the owner's hands: a replacement SIM lifts these.
SIM_COMPROMISED = frozenset({BlockReason.LOST_SIM, BlockReason.THEFT})
OWNER_MAY_APPLY = SIM_COMPROMISED
ADMIN_ONLY_LIFT = frozenset({BlockReason.FRAUD_SUSPECTED})

# Statuses a temporary block may be applied to or lifted from.
CONTROLLABLE = frozenset(
    {SubscriberStatus.ACTIVE, SubscriberStatus.TEMP_BLOCKED, SubscriberStatus.PENDING_DISCONNECT}
)
WORKFLOW_OWNED = frozenset(
    {SubscriberStatus.PENDING_DISCONNECT, SubscriberStatus.PERMANENT_DISCONNECTED}
)


class NotControllable(Conflict):
    code = "SUBSCRIBER_NOT_CONTROLLABLE"


class ReasonNotManual(InvalidRequest):
    code = "REASON_APPLIED_BY_SYSTEM"


class DuesOutstanding(Conflict):
    code = "DUES_OUTSTANDING"


class ServiceState(Frozen):
    """The service-control view of one subscriber (stored on the profile)."""

    user_id: str
    msisdn: str
    iccid: str | None = None
    status: SubscriberStatus
    reasons: frozenset[BlockReason] = frozenset()
    version: int = Field(default=0, description="Optimistic lock of the profile")
    # The version whose barring the network last confirmed (None: never synced).
    barring_version: int | None = None
    dormant_since: datetime | None = Field(
        default=None, description="Start of the inactivity clock (plan expiry or unpaid bill)"
    )
    disconnection_id: str | None = None

    @property
    def network_in_sync(self) -> bool:
        if self.barring_version is None:
            # Never barred: the line is as provisioned, unrestricted.
            return not self.reasons and self.status is SubscriberStatus.ACTIVE
        return self.barring_version == self.version

    def with_reasons(self, reasons: Iterable[BlockReason]) -> ServiceState:
        reasons = frozenset(reasons)
        return self.model_copy(update={"reasons": reasons, "status": status_for(self, reasons)})


def status_for(state: ServiceState, reasons: frozenset[BlockReason]) -> SubscriberStatus:
    """The status a set of reasons gives; the workflow's statuses stay as they are."""
    if state.status in WORKFLOW_OWNED:
        return state.status
    return SubscriberStatus.TEMP_BLOCKED if reasons else SubscriberStatus.ACTIVE


def barring_for(status: SubscriberStatus, reasons: Iterable[BlockReason]) -> BarringProfile:
    """The network profile of a status and its reasons (incoming always allowed)."""
    reasons = frozenset(reasons)
    if status is SubscriberStatus.PENDING_DISCONNECT or reasons - {BlockReason.QUOTA_EXHAUSTED}:
        return BarringProfile(outgoing_barred=True, data=DataAccess.BARRED)
    if BlockReason.QUOTA_EXHAUSTED in reasons:
        return BarringProfile(data=DataAccess.THROTTLED)
    return BarringProfile()


def ensure_controllable(state: ServiceState) -> None:
    if state.status not in CONTROLLABLE:
        raise NotControllable(f"subscriber is {state.status.value}; service control cannot act")


def check_may_apply(principal: Principal, reason: BlockReason, *, owner_verified: bool) -> None:
    """Manual blocks (the API). ``owner_verified``: the caller is the owner and
    presented a verified OTP for this reason."""
    if reason in FACT_BACKED:
        raise ReasonNotManual(f"{reason.value} is applied by the system, not by hand")
    if principal.has_any({Role.AGENT, Role.ADMIN}):
        return
    if reason in OWNER_MAY_APPLY and owner_verified:
        return
    if reason in OWNER_MAY_APPLY:
        raise Forbidden(f"blocking for {reason.value} needs a verified one-time password")
    raise Forbidden(f"only an agent or admin may block for {reason.value}")


def check_may_lift(principal: Principal, reason: BlockReason, *, fact_holds: bool) -> None:
    """Manual unblocks. ``fact_holds``: for a fact-backed reason, the fact behind
    it is still true (dues remain, no valid plan, quota still exhausted)."""
    if principal.has_any({Role.ADMIN}):
        return
    if not principal.has_any({Role.AGENT}):
        raise Forbidden("only an agent or admin may lift a block")
    if reason in ADMIN_ONLY_LIFT:
        raise Forbidden(f"only an admin may lift {reason.value}")
    if reason in FACT_BACKED and fact_holds:
        raise DuesOutstanding(
            f"{reason.value} still holds; it lifts by itself when resolved (or ask an admin)"
        )


# --- permanent disconnection ----------------------------------------------------------


class DisconnectReason(StrEnum):
    USER_REQUEST = "USER_REQUEST"
    FRAUD = "FRAUD"
    PORT_OUT = "PORT_OUT"
    DECEASED = "DECEASED"
    INACTIVITY = "INACTIVITY"


class DisconnectPolicy(Frozen):
    """Who may start a disconnection for a reason, and how dues are treated."""

    owner_may_request: bool = False
    roles: frozenset[Role]
    proof_required: bool = False
    # True: outstanding dues hold the line in PENDING_DISCONNECT until paid.
    # False: the line is disconnected anyway and the dues stay receivable
    # (collections), because waiting cannot help or is not allowed.
    waits_for_dues: bool = False


STAFF_ROLES = frozenset({Role.AGENT, Role.ADMIN})

POLICIES: dict[DisconnectReason, DisconnectPolicy] = {
    # The subscriber asks to close: earlier bills must be settled first.
    DisconnectReason.USER_REQUEST: DisconnectPolicy(
        owner_may_request=True, roles=STAFF_ROLES, waits_for_dues=True
    ),
    # Confirmed fraud (the fraud team, an admin, with its case reference): at once.
    DisconnectReason.FRAUD: DisconnectPolicy(roles=frozenset({Role.ADMIN}), proof_required=True),
    # MNP: submitted when the recipient operator has confirmed the handover (the
    # port reference is the proof). The number is no longer ours to hold back;
    # dues are collected after the port, as the MNP rules let the donor do.
    DisconnectReason.PORT_OUT: DisconnectPolicy(roles=STAFF_ROLES, proof_required=True),
    # An agent with a death-certificate reference: at once; dues go to the estate.
    DisconnectReason.DECEASED: DisconnectPolicy(roles=STAFF_ROLES, proof_required=True),
    # The daily sweep only: nobody is paying for a line that has gone quiet.
    DisconnectReason.INACTIVITY: DisconnectPolicy(roles=frozenset({Role.SERVICE})),
}


def check_may_disconnect(
    principal: Principal, user_id: str, reason: DisconnectReason, proof_reference: str | None
) -> None:
    policy = POLICIES[reason]
    is_owner = Role.SUBSCRIBER in principal.roles and principal.subject == user_id
    if not (principal.has_any(policy.roles) or (policy.owner_may_request and is_owner)):
        raise Forbidden(f"you may not request a {reason.value} disconnection")
    if policy.proof_required and not (proof_reference and proof_reference.strip()):
        raise InvalidRequest(f"a {reason.value} disconnection needs a proof_reference")
