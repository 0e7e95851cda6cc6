"""Test helpers for "no personal data in any log line": capture the lines a
Powertools logger writes, and find personal data still readable in log text.

Where the lines of a run are: handlers called in-process write through their
service logger's handler (``capture_lines``); under ``tbcss local up`` each
function's workers write to ``<state>/logs/<function>.log``
(``LocalSystem.handler_logs()`` in tests/e2e/conftest.py), the runtime's own
lines go to its output (``LocalSystem.output``).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger

from shared.pii import find_pii
from shared.validation import is_valid_msisdn, normalize_msisdn


class _LineSink(io.StringIO):
    """A stream that hands each complete line to a list as it is written."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self._lines = lines
        self._pending = ""

    def write(self, text: str) -> int:
        *complete, self._pending = (self._pending + text).split("\n")
        self._lines.extend(complete)
        return len(text)


@contextmanager
def capture_lines(logger: Logger, level: str | None = None) -> Iterator[list[str]]:
    """The lines ``logger``'s service handler writes inside the block, exactly as
    the Lambda would print them (its child loggers' lines too). ``level``: log
    at that level meanwhile (tests run at WARNING)."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler), handler
    lines: list[str] = []
    # Swapped without setStream(), which flushes the old stream: under pytest that
    # is the capture of the import's time, long closed.
    previous_stream, handler.stream = handler.stream, _LineSink(lines)
    previous_level = logger.log_level
    if level is not None:
        logger.setLevel(level)
    try:
        yield lines
    finally:
        handler.stream = previous_stream
        logger.setLevel(previous_level)


def spellings(value: str) -> set[str]:
    """The ways a log line may write ``value``: as given, without separators, and
    for numbers the usual layouts (a phone's +91 / 91 / 0 and 5-5 groups, an
    Aadhaar's or a card's 4-digit groups)."""
    compact = re.sub(r"[ -]", "", value)
    forms = {value, compact}
    if not re.fullmatch(r"\+?[0-9]+", compact):
        return forms
    digits = compact.lstrip("+")
    if is_valid_msisdn(compact):
        national = normalize_msisdn(compact)
        grouped = f"{national[:5]} {national[5:]}"
        forms |= {national, grouped, grouped.replace(" ", "-")}
        forms |= {f"{prefix}{form}" for prefix in ("+91", "+91 ", "91", "0") for form in forms}
    if len(digits) >= 12:
        quads = [digits[i : i + 4] for i in range(0, len(digits), 4)]
        forms |= {" ".join(quads), "-".join(quads)}
    return forms


def plaintext_pii(text: str, known: Iterable[str] = (), *, generic: bool = True) -> list[str]:
    """The personal data readable in ``text`` (log lines): each ``known`` value
    (the exact values a test used) found in any of its :func:`spellings`, then,
    with ``generic``, whatever shared.pii would still mask there (a leak nobody
    listed). A line holding JSON is also read as JSON, so that an escaped
    newline cannot glue a number to the letter n and hide it."""
    found = [value for value in known if any(_occurs(form, text) for form in spellings(value))]
    if generic:
        for piece in _pieces(text):
            found += [match for match in find_pii(piece) if match not in found]
    return found


def _occurs(form: str, text: str) -> bool:
    # A number is found where it stands as a number, not inside a longer one.
    pattern = rf"(?<![0-9]){re.escape(form)}(?![0-9])" if form[-1:].isdigit() else re.escape(form)
    return re.search(pattern, text, re.IGNORECASE) is not None


def _pieces(text: str) -> Iterator[str]:
    """Each line, and every string inside the JSON a line holds."""
    decoder = json.JSONDecoder()
    for line in text.splitlines():
        yield line
        start = line.find("{")
        if start < 0:
            continue
        try:
            value, _ = decoder.raw_decode(line, start)
        except ValueError:
            continue
        yield from _strings(value)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
