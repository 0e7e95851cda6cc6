"""The audit trail's record: who did what to whom, when, and what changed.

Every domain event on the bus and every state-changing call a member of staff
makes becomes one :class:`AuditRecord`, written once and never changed. A record
holds ids, codes, statuses and amounts only: an event's fields are sorted by
name into the subject (ids), the state before and after the change, and the
names of what was left out, so a new field carrying personal data (a phone
number, an email, a KYC number) is dropped by default rather than copied in.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.pii import find_pii

SYSTEM = "system"
WITHHELD = "withheld"  # an actor's name that reads as personal data
# What an action record calls the kind of change: the HTTP method and route template.
ACTION_EVENT = "StaffActionPerformed"

# Kept: ids (the subject), and state that is codes, counts and money, never free text.
_ID_SUFFIX = "_id"
_BEFORE_PREFIXES = ("previous_", "from_", "old_")
_STATE_KEYS = frozenset(
    {
        "status",
        "block_reasons",
        "applied",
        "lifted",
        "reason",
        "purpose",
        "method",
        "change_type",
        "subscriber_type",
        "autopay_attempt",
        "attempt",
        "quota_type",
        "threshold_percent",
        "http_status",
        "route",
        "http_method",
        "outcome",
        "resolved_by",
        "step",
        "kind",
        "parks",
        "percent",
        "cycle",
    }
)
_STATE_SUFFIXES = (
    "_paise",
    "_units",
    "_count",
    "_status",
    "_reason",
    "_at",
    "_until",
    "_on",
    "_type",
)
# Metadata every envelope carries; recorded in its own fields.
_ENVELOPE_KEYS = frozenset(
    {"event_id", "occurred_at", "correlation_id", "user_id", "actor", "action"}
)
# A code or an id: short, no spaces around an @, nothing that reads as prose.
_SAFE_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:.#/{}+\-]{0,79}$")


# ...and no personal number in it: a phone, Aadhaar or card number (10 or more
# digits, maybe grouped by dashes or dots) or a PAN. Digits glued to a letter are
# part of an id: the hex of a payment id or a uuid holds 10 digits in a row now and then.
class ActorRole(StrEnum):
    SUBSCRIBER = "subscriber"
    AGENT = "agent"
    ADMIN = "admin"
    SYSTEM = SYSTEM


class AuditRecord(BaseModel):
    """One immutable entry of the audit trail."""

    model_config = ConfigDict(frozen=True)

    audit_id: str = Field(description="The event's id: a redelivery is the same record")
    occurred_at: datetime
    action: str = Field(description="The event type, or 'POST /route/{param}' for a call")
    source: str = Field(description="The module that made the change")
    actor: str = Field(description="'<role>:<subject>' of a caller, or 'system:<module>'")
    role: ActorRole
    user_id: str | None = Field(default=None, description="The subscriber concerned")
    subject: dict[str, str] = Field(default_factory=dict, description="Ids of what changed")
    correlation_id: str | None = None
    before: dict[str, Any] = Field(default_factory=dict)
    after: dict[str, Any] = Field(default_factory=dict)
    omitted: tuple[str, ...] = Field(
        default=(), description="Names of event fields left out (not ids, codes or amounts)"
    )


def record_of_event(envelope: dict[str, Any]) -> AuditRecord:
    """The record of an EventBridge envelope (``source``, ``detail-type``, ``detail``)."""
    detail: dict[str, Any] = dict(envelope.get("detail") or {})
    source = str(envelope.get("source", "")).removeprefix("tbcss.")
    actor = str(detail.get("actor") or f"{SYSTEM}:{source}")
    summary = _summary(detail)
    user_id = _text(detail.get("user_id"))
    # Names as typed by a caller (a path's user_id, a token's subject) may be a
    # phone number: kept only if they read as ids.
    if user_id is not None and _safe_value(user_id) is None:
        user_id, summary["omitted"] = None, (*summary["omitted"], "user_id")
    if _safe_value(actor) is None:
        actor = f"{actor.partition(':')[0]}:{WITHHELD}"
    kind = str(envelope["detail-type"])
    return AuditRecord(
        audit_id=str(detail.get("event_id") or envelope["id"]),
        occurred_at=datetime.fromisoformat(str(detail.get("occurred_at") or envelope["time"])),
        action=str(detail["action"]) if kind == ACTION_EVENT else kind,
        source=source,
        actor=actor,
        role=role_of_actor(actor),
        user_id=user_id,
        correlation_id=_text(detail.get("correlation_id")),
        **summary,
    )


def role_of_actor(actor: str) -> ActorRole:
    """``agent:a1`` -> AGENT; ``system:...``, ``service:...`` and unknowns -> SYSTEM."""
    prefix = actor.partition(":")[0]
    try:
        return ActorRole(prefix)
    except ValueError:
        return ActorRole.SYSTEM


def _summary(detail: dict[str, Any]) -> dict[str, Any]:
    subject: dict[str, str] = {}
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    omitted: list[str] = []
    for key, value in sorted(detail.items()):
        if key in _ENVELOPE_KEYS or value is None:
            continue
        kept = _safe_value(value)
        state = _state_key(key)
        if kept is None or (state is None and not key.endswith(_ID_SUFFIX)):
            omitted.append(key)
        elif state is None:
            subject[key] = str(kept)
        else:
            name, was = state
            (before if was else after)[name] = kept
    return {"subject": subject, "before": before, "after": after, "omitted": tuple(omitted)}


def _state_key(key: str) -> tuple[str, bool] | None:
    """``(name, is_before)`` for a state field, None for anything else."""
    for prefix in _BEFORE_PREFIXES:
        if key.startswith(prefix):
            rest = key.removeprefix(prefix)
            known = _state_key(rest) is not None or rest.endswith(_ID_SUFFIX)
            return (rest, True) if known else None
    if key in _STATE_KEYS or key.endswith(_STATE_SUFFIXES):
        return key, False
    return None


def _safe_value(value: Any) -> Any:
    """The value if it is a number, a flag, or a short code (or a list of them)."""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if _SAFE_TEXT.match(value) and not find_pii(value) else None
    if isinstance(value, list | tuple):
        items = [_safe_value(item) for item in value]
        return items if all(item is not None for item in items) else None
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
