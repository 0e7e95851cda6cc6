"""SIM care (issue 7): the owner's one-time password for blocking a lost or
stolen SIM, and the SIM replacement that ends such a block.

**OTP.** The owner's SIM is gone, so the code goes to the alternate number on
file (or, without one, the email); it is never sent to the lost number itself.
Only a salted SHA-256 of the code is stored. An OTP is SENT, then VERIFIED
(usable for a short window), then USED by the block it authorizes (the
service-control store consumes it in the block's transaction); too many wrong
codes LOCK it. Requests are counted per user in fixed windows.

**SIM replacement.** The new ICCID is claimed (PENDING_REPLACEMENT, so no other
subscriber can take it), provisioned on the network, and then swapped in by one
transaction with the profile: the new claim IN_USE, the old one RETIRED (a lost
card is never issued again), LOST_SIM and THEFT lifted. A network failure before
the commit leaves the profile untouched; a transient one keeps the claim so the
agent can retry with the same SIM.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Protocol

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field

from shared.auth import STAFF, Principal, Role, actor_of, require_role
from shared.clock import Clock
from shared.errors import (
    ConcurrentModification,
    Conflict,
    DomainError,
    Forbidden,
    InvalidRequest,
    NotFound,
    Throttled,
)
from shared.events import DomainEvent, EventPublisher
from shared.models import Frozen, Subscriber, SubscriberStatus
from shared.network import (
    NetworkPermanentError,
    NetworkProvisioner,
    NetworkTransientError,
    ServiceProfile,
)
from shared.notifications import Notifier, render
from shared.service_control import (
    CONTROLLABLE,
    SIM_COMPROMISED,
    BlockReason,
    NotControllable,
    ServiceState,
)
from shared.services.service_control import (
    GuardFailed,
    ServiceStore,
    SimSwap,
    StaleState,
    StatusChange,
    status_events,
)
from shared.settings import Settings
from shared.validation import mask, msisdn_to_e164, normalize_iccid, normalize_msisdn

logger = Logger(child=True)

SOURCE = "service_control"
CODE_DIGITS = 6
OTP_RETENTION = timedelta(days=1)  # kept after its last use, for support, then TTL
VERIFY_ATTEMPTS = 3  # re-reads when a concurrent verify changed the OTP
PROVISION_ATTEMPTS = 3
SAVE_ATTEMPTS = 5
_CODE = re.compile(rf"[0-9]{{{CODE_DIGITS}}}")


# --- errors ---------------------------------------------------------------------------


class NetworkResync(Protocol):
    def sync_soon(self, user_id: str) -> bool:
        """Apply the stored barring now, or queue a retry; whether it is applied."""
        ...


class NoAlternateContact(Conflict):
    code = "NO_ALTERNATE_CONTACT"


class OtpNotSent(DomainError):
    status = 503
    code = "OTP_NOT_SENT"


class OtpNotFound(NotFound):
    code = "OTP_NOT_FOUND"


class OtpExpired(InvalidRequest):
    code = "OTP_EXPIRED"


class OtpInvalid(InvalidRequest):
    code = "OTP_INVALID"


class OtpLocked(Conflict):
    code = "OTP_LOCKED"


class OtpUsed(Conflict):
    code = "OTP_USED"


class OtpNotVerified(Forbidden):
    code = "OTP_NOT_VERIFIED"


class OtpReasonMismatch(InvalidRequest):
    code = "OTP_REASON_MISMATCH"


class SimRejected(Conflict):
    code = "SIM_REJECTED"


class NetworkUnavailable(DomainError):
    status = 503
    code = "NETWORK_UNAVAILABLE"


# --- OTP: model, ports, config ---------------------------------------------------------


class OtpStatus(StrEnum):
    SENT = "SENT"
    VERIFIED = "VERIFIED"
    USED = "USED"
    LOCKED = "LOCKED"


class OtpChannel(StrEnum):
    SMS = "SMS"
    EMAIL = "EMAIL"


class Otp(Frozen):
    """``USER#<id>/OTP#<otp_id>``. The code itself is never kept."""

    otp_id: str
    user_id: str
    reason: BlockReason
    code_hash: str
    salt: str
    status: OtpStatus = OtpStatus.SENT
    attempts: int = 0
    created_at: datetime
    code_expires_at: datetime
    verified_until: datetime | None = None


class OtpStore(Protocol):
    def count_request(
        self, user_id: str, window_start: datetime, limit: int, expires_at: datetime
    ) -> bool:
        """Atomically count one request in the user's window starting at
        ``window_start``; False (and nothing counted) when ``limit`` is reached."""
        ...

    def create(self, otp: Otp, expires_at: datetime) -> None:
        """Store a new OTP (its TTL at ``expires_at``)."""
        ...

    def get(self, user_id: str, otp_id: str) -> Otp | None: ...

    def record_wrong_code(self, user_id: str, otp_id: str, max_attempts: int) -> Otp | None:
        """Atomically count a wrong code while the OTP is SENT, setting it LOCKED
        with the ``max_attempts``-th. Returns the OTP as stored, or None when it
        was no longer SENT (verified, locked or used meanwhile)."""
        ...

    def mark_verified(
        self, user_id: str, otp_id: str, verified_until: datetime, now: datetime
    ) -> bool:
        """SENT -> VERIFIED (condition: still SENT and the code unexpired at
        ``now``). False when the condition failed."""
        ...


class SubscriberProfiles(Protocol):
    def get_subscriber(self, user_id: str) -> Subscriber:
        """Raises UserNotFound."""
        ...


@dataclass(frozen=True)
class OtpConfig:
    code_ttl_seconds: int = 300
    verified_ttl_seconds: int = 600
    max_attempts: int = 5
    requests_per_window: int = 3
    window_seconds: int = 900

    @classmethod
    def from_settings(cls, settings: Settings) -> OtpConfig:
        return cls(
            code_ttl_seconds=settings.otp_code_ttl_seconds,
            verified_ttl_seconds=settings.otp_verified_ttl_seconds,
            max_attempts=settings.otp_max_attempts,
            requests_per_window=settings.otp_requests_per_window,
            window_seconds=settings.otp_window_seconds,
        )


# --- OTP: API shapes ---------------------------------------------------------------


class OtpRequestBody(BaseModel):
    """POST /service-control/otp/{user_id}."""

    model_config = ConfigDict(extra="forbid")

    reason: BlockReason = Field(description="LOST_SIM or THEFT")


class OtpVerifyBody(BaseModel):
    """POST /service-control/otp/{user_id}/verify."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    otp_id: Annotated[str, Field(min_length=1, max_length=64)]
    code: Annotated[str, Field(pattern=rf"^[0-9]{{{CODE_DIGITS}}}$")]


class OtpRequestResult(Frozen):
    otp_id: str
    channel: OtpChannel
    sent_to: str = Field(description="Masked: '+91XXXXXX3210' or 'a***@example.com'")
    expires_at: datetime = Field(description="The code must be verified before this")


class OtpVerifyResult(Frozen):
    otp_id: str
    valid_until: datetime = Field(description="Block with this otp_id before this")


# --- OTP: the service ----------------------------------------------------------------


class OwnerOtps:
    """Implements :class:`shared.services.service_control.VerifiedOtps`."""

    def __init__(
        self,
        *,
        store: OtpStore,
        subscribers: SubscriberProfiles,
        notifier: Notifier,
        clock: Clock,
        config: OtpConfig = OtpConfig(),
    ) -> None:
        self._store = store
        self._subscribers = subscribers
        self._notifier = notifier
        self._clock = clock
        self._config = config

    def request(self, principal: Principal, user_id: str, reason: BlockReason) -> OtpRequestResult:
        _require_owner(principal, user_id)
        if reason not in SIM_COMPROMISED:
            raise InvalidRequest(
                f"a one-time password blocks only for {' or '.join(sorted(SIM_COMPROMISED))}",
                details=[{"field": "reason", "problem": f"{reason.value} is not allowed"}],
            )
        subscriber = self._subscribers.get_subscriber(user_id)
        if subscriber.status not in CONTROLLABLE:
            raise NotControllable(f"subscriber is {subscriber.status.value}; nothing to block")
        channel, address = _destination(subscriber)
        now = self._clock.now()
        self._count_request(user_id, now)

        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        salt = secrets.token_hex(16)
        otp = Otp(
            otp_id=f"otp-{uuid.uuid4().hex}",
            user_id=user_id,
            reason=reason,
            code_hash=_hash(salt, code),
            salt=salt,
            created_at=now,
            code_expires_at=now + timedelta(seconds=self._config.code_ttl_seconds),
        )
        verified_window = timedelta(seconds=self._config.verified_ttl_seconds)
        # Stored before sending: a code that arrives can always be verified.
        self._store.create(otp, otp.code_expires_at + verified_window + OTP_RETENTION)
        self._send(otp, code, channel, address, subscriber)
        return OtpRequestResult(
            otp_id=otp.otp_id,
            channel=channel,
            sent_to=_masked(channel, address),
            expires_at=otp.code_expires_at,
        )

    def verify(self, principal: Principal, user_id: str, otp_id: str, code: str) -> OtpVerifyResult:
        _require_owner(principal, user_id)
        if not _CODE.fullmatch(code):
            raise InvalidRequest(
                f"the code has {CODE_DIGITS} digits",
                details=[{"field": "code", "problem": f"must be {CODE_DIGITS} digits"}],
            )
        for _ in range(VERIFY_ATTEMPTS):
            result = self._verify_once(self._get(user_id, otp_id), code)
            if result is not None:
                return result
        raise ConcurrentModification("the one-time password kept changing; try again")

    def check_verified(self, user_id: str, otp_id: str, reason: BlockReason) -> None:
        otp = self._get(user_id, otp_id)
        if otp.reason is not reason:
            raise OtpReasonMismatch(
                f"this one-time password was requested for {otp.reason.value}, not {reason.value}"
            )
        if otp.status is OtpStatus.SENT:
            raise OtpNotVerified("verify the one-time password first")
        _raise_if_spent(otp)
        assert otp.verified_until is not None
        if otp.verified_until <= self._clock.now():
            raise OtpExpired("the verified one-time password has expired; request a new one")

    # --- internals -----------------------------------------------------------------

    def _count_request(self, user_id: str, now: datetime) -> None:
        window = self._config.window_seconds
        start_epoch = int(now.timestamp()) // window * window
        start = datetime.fromtimestamp(start_epoch, tz=UTC)
        end = start + timedelta(seconds=window)
        limit = self._config.requests_per_window
        if not self._store.count_request(user_id, start, limit, end + OTP_RETENTION):
            retry_after = max(int((end - now).total_seconds()), 1)
            raise Throttled(
                f"at most {limit} one-time passwords per {window // 60} minutes; "
                f"try again in {retry_after} seconds",
                details={"retry_after_seconds": retry_after},
            )

    def _send(
        self, otp: Otp, code: str, channel: OtpChannel, address: str, subscriber: Subscriber
    ) -> None:
        message = render(
            "otp",
            {
                "code": code,
                "msisdn_masked": mask(subscriber.msisdn),
                "action": _ACTIONS[otp.reason],
                "minutes": str(max(self._config.code_ttl_seconds // 60, 1)),
            },
        )
        try:
            if channel is OtpChannel.SMS:
                self._notifier.send_sms(address, message.sms)
            else:
                self._notifier.send_email(address, message.email_subject, message.email_body)
        except Exception as error:
            # The error's type only: the message (and so the code) never reaches a log.
            logger.warning(
                "OTP not delivered",
                extra={"otp_id": otp.otp_id, "channel": channel, "error": type(error).__name__},
            )
            raise OtpNotSent("the one-time password could not be sent; try again") from None
        logger.info("OTP sent", extra={"otp_id": otp.otp_id, "channel": channel})

    def _get(self, user_id: str, otp_id: str) -> Otp:
        otp = self._store.get(user_id, otp_id)
        if otp is None:
            raise OtpNotFound(f"no one-time password {otp_id!r}")
        return otp

    def _verify_once(self, otp: Otp, code: str) -> OtpVerifyResult | None:
        """The outcome, or None when a concurrent verify changed the OTP first."""
        right = hmac.compare_digest(_hash(otp.salt, code), otp.code_hash)
        now = self._clock.now()
        if otp.status is OtpStatus.VERIFIED:
            assert otp.verified_until is not None
            if not right:  # no longer counted: the OTP is verified
                left = max(self._config.max_attempts - otp.attempts, 0)
                raise OtpInvalid("wrong code", details={"attempts_left": left})
            if otp.verified_until <= now:
                raise OtpExpired("the verified one-time password has expired; request a new one")
            return OtpVerifyResult(otp_id=otp.otp_id, valid_until=otp.verified_until)
        _raise_if_spent(otp)
        if otp.code_expires_at <= now:
            raise OtpExpired("the code has expired; request a new one")
        if right:
            until = now + timedelta(seconds=self._config.verified_ttl_seconds)
            if not self._store.mark_verified(otp.user_id, otp.otp_id, until, now):
                return None
            return OtpVerifyResult(otp_id=otp.otp_id, valid_until=until)
        counted = self._store.record_wrong_code(otp.user_id, otp.otp_id, self._config.max_attempts)
        if counted is None:
            return None
        if counted.status is OtpStatus.LOCKED:
            raise OtpLocked(
                "too many wrong codes; request a new one-time password",
                details={"attempts_left": 0},
            )
        left = self._config.max_attempts - counted.attempts
        raise OtpInvalid(f"wrong code; {left} attempts left", details={"attempts_left": left})


_ACTIONS = {BlockReason.LOST_SIM: "block your lost SIM", BlockReason.THEFT: "block your stolen SIM"}


def _require_owner(principal: Principal, user_id: str) -> None:
    """Only the subscriber themself: an agent blocks without an OTP."""
    if Role.SUBSCRIBER not in principal.roles or principal.subject != user_id:
        raise Forbidden("only the subscriber may use a one-time password for their line")


def _raise_if_spent(otp: Otp) -> None:
    if otp.status is OtpStatus.USED:
        raise OtpUsed("this one-time password was already used")
    if otp.status is OtpStatus.LOCKED:
        raise OtpLocked("too many wrong codes; request a new one-time password")


def _destination(subscriber: Subscriber) -> tuple[OtpChannel, str]:
    """The alternate number (never the lost line itself), else the email."""
    if subscriber.phone and normalize_msisdn(subscriber.phone) != subscriber.msisdn:
        return OtpChannel.SMS, msisdn_to_e164(subscriber.phone)
    if subscriber.email:
        return OtpChannel.EMAIL, subscriber.email
    raise NoAlternateContact(
        "no alternate number or email on file to send a one-time password to; "
        "ask an agent to block the line"
    )


def _masked(channel: OtpChannel, address: str) -> str:
    if channel is OtpChannel.SMS:
        country, national = address[:3], address[3:]  # "+91", 10 digits
        return country + mask(national)
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def _hash(salt: str, code: str) -> str:
    return hashlib.sha256((salt + code).encode()).hexdigest()


# --- SIM replacement ----------------------------------------------------------------


class SimClaims(Protocol):
    def claim(self, user_id: str, iccid: str) -> None:
        """Claim the ICCID for this user's replacement (PENDING_REPLACEMENT).
        Repeating it for the same user and ICCID is fine; raises DuplicateIccid
        when anyone else holds it, or it is in use or retired."""
        ...

    def release(self, user_id: str, iccid: str) -> None:
        """Give back this user's PENDING_REPLACEMENT claim (nothing otherwise)."""
        ...


class SimReplacementBody(BaseModel):
    """POST /users/{user_id}/sim-replacement. The ICCID is validated by the service."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    new_iccid: Annotated[str, Field(min_length=1, max_length=30)]


class SimReplacementResult(Frozen):
    user_id: str
    iccid: str = Field(description="The SIM now in service (masked)")
    previous_iccid: str | None = Field(description="The SIM replaced (masked), now retired")
    status: SubscriberStatus
    block_reasons: list[BlockReason]
    network_reference: str | None = Field(
        description="The network's provisioning order; None when nothing was changed"
    )
    network_in_sync: bool = Field(description="The network shows the line's barring")
    changed: bool = True


# Statuses a SIM may be replaced in (not while a disconnection holds the line).
REPLACEABLE = frozenset({SubscriberStatus.ACTIVE, SubscriberStatus.TEMP_BLOCKED})


class SimReplacement:
    def __init__(
        self,
        *,
        store: ServiceStore,
        claims: SimClaims,
        subscribers: SubscriberProfiles,
        network: NetworkProvisioner,
        sync: NetworkResync,
        events: EventPublisher,
        clock: Clock,
    ) -> None:
        self._store = store
        self._claims = claims
        self._subscribers = subscribers
        self._network = network
        self._sync = sync
        self._events = events
        self._clock = clock

    def replace(self, principal: Principal, user_id: str, new_iccid: str) -> SimReplacementResult:
        require_role(principal, STAFF)
        iccid = _valid_iccid(new_iccid)
        state = self._store.load(user_id)
        _ensure_replaceable(state)
        if state.iccid == iccid:
            return self._unchanged(state)  # a repeated request: already done
        subscriber = self._subscribers.get_subscriber(user_id)

        self._claims.claim(user_id, iccid)
        try:
            reference = self._provision(state.msisdn, iccid, subscriber)
        except NetworkPermanentError as error:
            self._claims.release(user_id, iccid)
            raise SimRejected(f"the network refused SIM {mask(iccid)}: {error}") from None
        try:
            committed = self._commit(principal, state, iccid)
        except Exception:
            self._undo(user_id, iccid)  # whatever stopped the swap, the old SIM stays live
            raise
        if committed is None:
            return self._unchanged(self._store.load(user_id))
        stored, change, previous = committed
        self._announce(stored, change, previous)
        in_sync = self._sync_network(user_id)
        return SimReplacementResult(
            user_id=user_id,
            iccid=mask(iccid),
            previous_iccid=mask(previous) if previous else None,
            status=stored.status,
            block_reasons=sorted(stored.reasons),
            network_reference=reference,
            network_in_sync=in_sync,
        )

    def _provision(self, msisdn: str, iccid: str, subscriber: Subscriber) -> str:
        """The network's order reference. Raises NetworkPermanentError, or
        NetworkUnavailable once the transient failures used up the attempts."""
        profile = ServiceProfile(
            user_id=subscriber.user_id, subscriber_type=subscriber.subscriber_type.value
        )
        for attempt in range(1, PROVISION_ATTEMPTS + 1):
            try:
                return self._network.provision(msisdn, iccid, profile, attempt=attempt).reference
            except NetworkTransientError:
                logger.warning("SIM replacement: network busy", extra={"attempt": attempt})
        # The claim stays: the same SIM may be tried again.
        raise NetworkUnavailable("the network did not answer; try again with the same SIM")

    def _commit(
        self, principal: Principal, read: ServiceState, iccid: str
    ) -> tuple[ServiceState, StatusChange, str | None] | None:
        """The swap and the lifts in one transaction, re-read after a concurrent
        change. None when a twin of this request swapped in the same SIM first."""
        for _ in range(SAVE_ATTEMPTS):
            before = self._store.load(read.user_id)
            _ensure_replaceable(before)
            if before.iccid == iccid:
                return None
            if before.iccid != read.iccid:
                raise ConcurrentModification("another SIM replacement finished first")
            after = before.with_reasons(before.reasons - SIM_COMPROMISED).model_copy(
                update={"iccid": iccid}
            )
            masked_old = mask(before.iccid) if before.iccid else "none"
            change = StatusChange(
                at=self._clock.now(),
                actor=actor_of(principal),
                cause=f"SIM replaced: {masked_old} -> {mask(iccid)}",
                lifted=before.reasons - after.reasons,
                status_before=before.status,
                status_after=after.status,
            )
            guard = SimSwap(read.user_id, iccid, before.iccid)
            try:
                stored = self._store.save(before, after, change, (guard,))
            except StaleState:
                continue
            except GuardFailed:
                raise ConcurrentModification(
                    "the SIM claims changed meanwhile; try again"
                ) from None
            return stored, change, before.iccid
        raise ConcurrentModification(f"the status of {read.user_id} kept changing; try again")

    def _undo(self, user_id: str, iccid: str) -> None:
        """The swap did not commit: give our claim back and point the network at the
        SIM the profile holds again (our order may have reached it last)."""
        self._claims.release(user_id, iccid)
        current = self._store.load(user_id)
        if current.iccid and current.iccid != iccid:
            subscriber = self._subscribers.get_subscriber(user_id)
            try:
                self._provision(current.msisdn, current.iccid, subscriber)
            except (NetworkPermanentError, NetworkUnavailable):
                logger.warning("SIM replacement: could not restore the stored SIM")

    def _announce(self, state: ServiceState, change: StatusChange, previous: str | None) -> None:
        replaced = DomainEvent(
            detail_type="SimReplaced",
            source=SOURCE,
            occurred_at=change.at,
            detail={
                "user_id": state.user_id,
                "actor": change.actor,
                "iccid": mask(state.iccid or ""),
                "previous_iccid": mask(previous) if previous else None,
            },
        )
        self._events.publish([replaced, *status_events(state, change)])

    def _sync_network(self, user_id: str) -> bool:
        """The swap is stored; barring not applied yet is retried from the queue."""
        return self._sync.sync_soon(user_id)

    def _unchanged(self, state: ServiceState) -> SimReplacementResult:
        return SimReplacementResult(
            user_id=state.user_id,
            iccid=mask(state.iccid or ""),
            previous_iccid=None,
            status=state.status,
            block_reasons=sorted(state.reasons),
            network_reference=None,
            network_in_sync=self._sync_network(state.user_id),
            changed=False,
        )


def _valid_iccid(value: str) -> str:
    try:
        return normalize_iccid(value)
    except ValueError as error:
        raise InvalidRequest(
            f"new_iccid: {error}", details=[{"field": "new_iccid", "problem": str(error)}]
        ) from None


def _ensure_replaceable(state: ServiceState) -> None:
    if state.status not in REPLACEABLE:
        raise NotControllable(f"subscriber is {state.status.value}; the SIM cannot be replaced")
    if state.disconnection_id:
        raise NotControllable(
            f"disconnection {state.disconnection_id} is under way; the SIM cannot be replaced"
        )
