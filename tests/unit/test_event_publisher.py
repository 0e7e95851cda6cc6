"""The EventBridge adapter: batching, retry of rejected entries, and no request
failing because a bus hiccup followed a committed change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from shared.events import DomainEvent, EventBridgePublisher

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


class FlakyEventBridge:
    """Rejects the first ``rejections`` entries it sees, or raises ``error`` once."""

    def __init__(self, rejections: int = 0, error: Exception | None = None) -> None:
        self.rejections = rejections
        self.error = error
        self.calls: list[list[dict[str, Any]]] = []
        self.accepted: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Entries)
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        results = []
        for entry in Entries:
            if self.rejections > 0:
                self.rejections -= 1
                results.append({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"})
            else:
                self.accepted.append(entry)
                results.append({"EventId": str(len(self.accepted))})
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}


def events(count: int) -> list[DomainEvent]:
    return [
        DomainEvent(detail_type="PlanChanged", source="plans", detail={"n": i}, occurred_at=NOW)
        for i in range(count)
    ]


def test_publishes_in_batches_of_ten_on_the_bus() -> None:
    client = FlakyEventBridge()
    EventBridgePublisher(client, "bus").publish(events(23))  # type: ignore[arg-type]
    assert [len(call) for call in client.calls] == [10, 10, 3]
    assert {entry["EventBusName"] for entry in client.accepted} == {"bus"}
    assert client.accepted[0]["Source"] == "tbcss.plans"


def test_rejected_entries_are_retried_until_accepted() -> None:
    client = FlakyEventBridge(rejections=2)
    EventBridgePublisher(client, "bus").publish(events(3))  # type: ignore[arg-type]
    assert len(client.accepted) == 3
    assert [len(call) for call in client.calls] == [3, 2]


def test_a_connection_error_is_retried() -> None:
    client = FlakyEventBridge(error=EndpointConnectionError(endpoint_url="http://x"))
    EventBridgePublisher(client, "bus").publish(events(2))  # type: ignore[arg-type]
    assert len(client.accepted) == 2


def test_what_never_gets_through_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    client = FlakyEventBridge(rejections=100)
    EventBridgePublisher(client, "bus", attempts=3).publish(events(1))  # type: ignore[arg-type]
    assert len(client.calls) == 3
    assert client.accepted == []
    assert "event not delivered to the bus" in caplog.text
