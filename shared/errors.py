"""Typed domain errors. Each carries its API error code and HTTP status, so the
mapping to ``{"error": {"code", "message"}}`` happens in exactly one place
(:mod:`shared.web`)."""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base for every error a client may see."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "BAD_REQUEST"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class InvalidRequest(DomainError):
    status = 422
    code = "VALIDATION_ERROR"


class UnsupportedMediaType(DomainError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class BackdatedChange(InvalidRequest):
    code = "BACKDATED_CHANGE"


class Unauthorized(DomainError):
    status = 401
    code = "UNAUTHORIZED"


class Forbidden(DomainError):
    status = 403
    code = "FORBIDDEN"


class NotFound(DomainError):
    status = 404
    code = "NOT_FOUND"


class PlanNotFound(NotFound):
    code = "PLAN_NOT_FOUND"


class UserNotFound(NotFound):
    code = "USER_NOT_FOUND"


class Conflict(DomainError):
    status = 409
    code = "CONFLICT"


class DuplicateIccid(Conflict):
    """The SIM (ICCID) is already claimed by another subscriber."""

    code = "DUPLICATE_ICCID"


class DuplicateMsisdn(Conflict):
    """The mobile number is already claimed by another subscriber."""

    code = "DUPLICATE_MSISDN"


class ActivationNotFound(NotFound):
    code = "ACTIVATION_NOT_FOUND"


class ActivePlanExists(Conflict):
    code = "ACTIVE_PLAN_EXISTS"


class NoActivePlan(Conflict):
    code = "NO_ACTIVE_PLAN"


class PlanNotAllowed(Conflict):
    """The plan does not fit the subscriber (prepaid plan for a postpaid line...)."""

    code = "PLAN_NOT_ALLOWED"


class SamePlan(Conflict):
    code = "SAME_PLAN"


class SubscriberNotActive(Conflict):
    code = "SUBSCRIBER_NOT_ACTIVE"


class ConcurrentModification(Conflict):
    """Someone else changed the item between our read and our conditional write."""

    code = "CONCURRENT_MODIFICATION"


class IdempotencyKeyReused(DomainError):
    status = 422
    code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyInProgress(Conflict):
    code = "IDEMPOTENCY_IN_PROGRESS"


class InsufficientBalance(DomainError):
    status = 402
    code = "INSUFFICIENT_BALANCE"


class Throttled(DomainError):
    status = 429
    code = "THROTTLED"
