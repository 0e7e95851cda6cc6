"""Domain events: a publisher port, the EventBridge adapter and an in-memory fake."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from shared.clock import isoformat

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef


logger = Logger(child=True)

EVENT_SOURCE_PREFIX = "tbcss."
PUT_EVENTS_MAX_ENTRIES = 10


class DomainEvent(BaseModel):
    """What happened, to whom, and when. ``detail`` holds no PII beyond ids."""

    model_config = ConfigDict(frozen=True)

    detail_type: str
    source: str = Field(description="Emitting module, e.g. 'plans'")
    detail: dict[str, Any]
    occurred_at: datetime
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    correlation_id: str | None = None

    def envelope(self) -> dict[str, Any]:
        """The ``detail`` as delivered: the payload plus event metadata."""
        return {
            **self.detail,
            "event_id": self.event_id,
            "occurred_at": isoformat(self.occurred_at),
            "correlation_id": self.correlation_id,
        }


class EventPublisher(Protocol):
    def publish(self, events: Sequence[DomainEvent]) -> None: ...


class EventBridgePublisher:
    """Puts events on the custom bus, ten per request (the PutEvents limit).

    Events are published after the state change they describe has committed.
    Entries EventBridge rejects are retried; what still fails is logged at ERROR
    with the whole event (an alarm and a replay start from that line) instead of
    failing a request whose change is already made. A transactional outbox
    would close this gap entirely (see README, known gaps).
    """

    def __init__(self, client: EventBridgeClient, bus_name: str, attempts: int = 3) -> None:
        self._client = client
        self._bus_name = bus_name
        self._attempts = attempts

    def publish(self, events: Sequence[DomainEvent]) -> None:
        for start in range(0, len(events), PUT_EVENTS_MAX_ENTRIES):
            pending = list(events[start : start + PUT_EVENTS_MAX_ENTRIES])
            for _ in range(self._attempts):
                pending = self._put(pending)
                if not pending:
                    break
            for event in pending:
                logger.error(
                    "event not delivered to the bus", extra={"event": event.model_dump(mode="json")}
                )

    def _put(self, events: list[DomainEvent]) -> list[DomainEvent]:
        """Put once; the events that were not accepted."""
        try:
            response = self._client.put_events(Entries=[self._entry(e) for e in events])
        except (BotoCoreError, ClientError):
            logger.warning("PutEvents failed; retrying", exc_info=True)
            return events
        results = response.get("Entries", [])
        return [
            event for event, result in zip(events, results, strict=False) if result.get("ErrorCode")
        ]

    def _entry(self, event: DomainEvent) -> PutEventsRequestEntryTypeDef:
        return {
            "EventBusName": self._bus_name,
            "Source": EVENT_SOURCE_PREFIX + event.source,
            "DetailType": event.detail_type,
            "Detail": json.dumps(event.envelope(), default=str),
            "Time": event.occurred_at,
        }


class InMemoryEventPublisher:
    """Collects events for tests and local tools."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def publish(self, events: Sequence[DomainEvent]) -> None:
        self.events.extend(events)

    def of_type(self, detail_type: str) -> list[DomainEvent]:
        return [e for e in self.events if e.detail_type == detail_type]
