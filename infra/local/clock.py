"""The local runtime's controllable clock: wall-clock time plus a forward-only offset.

Every handler invocation receives :meth:`LocalClock.offset_seconds` (the worker
installs it with ``shared.clock.apply_offset``), so handlers, the scheduler and the
pollers all agree on "now" while a month of billing is demonstrated in seconds.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class LocalClock:
    """Implements ``infra.local.contracts.Clock``. Thread-safe; never moves backwards."""

    def __init__(self, offset_seconds: float = 0.0) -> None:
        if offset_seconds < 0:
            raise ValueError("the local clock starts at or after real time")
        self._offset = float(offset_seconds)
        self._lock = threading.Lock()

    def offset_seconds(self) -> float:
        with self._lock:
            return self._offset

    def now_epoch(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def now(self) -> datetime:
        """Current local-runtime time, timezone-aware, in UTC."""
        return datetime.fromtimestamp(self.now_epoch(), UTC)

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new epoch time."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
            return time.time() + self._offset

    def advance_to(self, epoch: float) -> float:
        """Move the clock forward to ``epoch`` (a no-op if it is already there or later).

        Returns the new epoch time. The check and the move happen under one lock so
        two threads moving the clock cannot make it go backwards.
        """
        with self._lock:
            now = time.time() + self._offset
            if epoch > now:
                self._offset += epoch - now
                now = epoch
            return now
