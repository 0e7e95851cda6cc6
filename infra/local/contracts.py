"""Interfaces between the parts of the local runtime (kept small on purpose)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

InvocationType = Literal["RequestResponse", "Event"]


@dataclass(frozen=True)
class InvocationResult:
    """What Lambda's Invoke returns. ``function_error`` is set ("Unhandled") when the
    handler raised or timed out; ``payload`` is then Lambda's error object
    ``{"errorMessage", "errorType", "stackTrace"}``."""

    payload: Any
    function_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.function_error is None


class Invoker(Protocol):
    def invoke(
        self,
        function_name: str,
        payload: Any,
        invocation_type: InvocationType = "RequestResponse",
    ) -> InvocationResult:
        """Run the function's real handler with the function's template environment.

        ``function_name`` is the physical name (or ARN) from the deployed stack.
        An ``Event`` invocation returns at once with ``payload=None``.
        """
        ...


class Clock(Protocol):
    """The runtime's controllable clock: real time plus an offset every handler sees."""

    def offset_seconds(self) -> float: ...

    def now_epoch(self) -> float: ...
