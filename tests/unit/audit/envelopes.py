"""Domain events as the audit queue delivers them: the entry our EventBridge
publisher puts on the bus, wrapped the way EventBridge wraps it for an SQS target."""

from __future__ import annotations

import json
import uuid
from datetime import UTC
from typing import Any

from shared.events import DomainEvent, EventBridgePublisher

ACCOUNT = "123456789012"
REGION = "ap-south-1"


class RecordingEventBridge:
    """Accepts every entry and keeps it."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": uuid.uuid4().hex} for _ in Entries]}


def delivered(*events: DomainEvent) -> list[dict[str, Any]]:
    """The EventBridge envelopes of ``events`` (``id``, ``source``, ``detail-type``,
    ``time``, ``detail``...), through the real publisher."""
    bus = RecordingEventBridge()
    EventBridgePublisher(bus, "tbcss-test-events").publish(list(events))  # type: ignore[arg-type]
    return [
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": entry["DetailType"],
            "source": entry["Source"],
            "account": ACCOUNT,
            "time": entry["Time"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [],
            "detail": json.loads(entry["Detail"]),
        }
        for entry in bus.entries
    ]


def delivered_one(event: DomainEvent) -> dict[str, Any]:
    (envelope,) = delivered(event)
    return envelope
