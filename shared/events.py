"""Domain events: a publisher port, the EventBridge adapter and an in-memory fake."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.clock import isoformat

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

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


class PublishFailed(RuntimeError):
    pass


class EventBridgePublisher:
    """Puts events on the custom bus, ten per request (the PutEvents limit)."""

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, events: Sequence[DomainEvent]) -> None:
        for start in range(0, len(events), PUT_EVENTS_MAX_ENTRIES):
            chunk = events[start : start + PUT_EVENTS_MAX_ENTRIES]
            response = self._client.put_events(
                Entries=[
                    {
                        "EventBusName": self._bus_name,
                        "Source": EVENT_SOURCE_PREFIX + event.source,
                        "DetailType": event.detail_type,
                        "Detail": json.dumps(event.envelope(), default=str),
                        "Time": event.occurred_at,
                    }
                    for event in chunk
                ]
            )
            if response.get("FailedEntryCount", 0):
                failed = [e for e in response["Entries"] if e.get("ErrorCode")]
                raise PublishFailed(f"EventBridge rejected {len(failed)} event(s): {failed}")


class InMemoryEventPublisher:
    """Collects events for tests and local tools."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def publish(self, events: Sequence[DomainEvent]) -> None:
        self.events.extend(events)

    def of_type(self, detail_type: str) -> list[DomainEvent]:
        return [e for e in self.events if e.detail_type == detail_type]
