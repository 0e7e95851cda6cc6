"""Every log line is masked: the service logger's JSON lines (message, extras,
appended keys, exceptions), its child loggers', lines of other libraries that
reach the root handler or logging's last resort; and no Lambda module can build
a logger that skips it."""

from __future__ import annotations

import ast
import importlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from shared.logs import PiiMaskingFilter, PiiMaskingFormatter, mask_foreign_handlers, service_logger
from tests.pii import capture_lines

ROOT = Path(__file__).resolve().parents[2]
PHONE, AADHAAR, EMAIL, VPA = "9876512345", "2345 6789 0123", "asha.rao@example.com", "asha@okhdfc"
PLAIN = (PHONE, AADHAAR, EMAIL, VPA, "ABCPE1234F")


@pytest.fixture
def fresh() -> Iterator[tuple[Logger, list[str]]]:
    """A service logger of its own, and the lines it writes."""
    logger = service_logger(service=f"pii-test-{uuid.uuid4().hex[:8]}")
    with capture_lines(logger) as lines:
        yield logger, lines


def assert_masked(lines: list[str]) -> list[dict[str, Any]]:
    assert lines, "nothing was logged"
    for line in lines:
        assert not [value for value in PLAIN if value in line], line
    return [json.loads(line) for line in lines]


def test_message_extras_and_appended_keys_are_masked(fresh: tuple[Logger, list[str]]) -> None:
    logger, lines = fresh
    logger.append_keys(msisdn=f"+91{PHONE}")
    logger.warning(f"OTP sent to {PHONE}", extra={"email": EMAIL, "kyc": {"number": AADHAAR}})
    logger.warning({"payment": {"vpa": VPA, "amount_paise": 29900}})

    first, second = assert_masked(lines)
    assert first["message"] == "OTP sent to ******2345"
    assert first["msisdn"] == "+91******2345"
    assert (first["email"], first["kyc"]) == ("a***@example.com", {"number": "**** **** 0123"})
    assert second["message"] == {"payment": {"vpa": "as***@okhdfc", "amount_paise": 29900}}


def test_exceptions_and_their_stack_traces_are_masked(fresh: tuple[Logger, list[str]]) -> None:
    logger, lines = fresh
    try:
        raise LookupError(f"line {PHONE} is not provisioned")
    except LookupError:
        logger.exception("sync failed for PAN ABCPE1234F")

    (line,) = assert_masked(lines)
    assert line["message"] == "sync failed for PAN ******234F"
    assert "LookupError: line ******2345 is not provisioned" in line["exception"]
    assert line["stack_trace"]["value"] == "line ******2345 is not provisioned"


def test_a_child_logger_writes_through_the_masking_formatter(
    fresh: tuple[Logger, list[str]],
) -> None:
    logger, lines = fresh
    child = Logger(service=logger.service, child=True)  # as shared/ modules have it
    child.warning("anomaly for %s", PHONE)

    (line,) = assert_masked(lines)
    assert line["message"] == "anomaly for ******2345"


def test_a_plain_logger_set_up_first_is_masked_too() -> None:
    service = f"pii-test-{uuid.uuid4().hex[:8]}"
    plain = Logger(service=service)  # a module that forgot the factory, imported first
    logger = service_logger(service=service)
    assert isinstance(plain.registered_formatter, PiiMaskingFormatter)
    with capture_lines(logger) as lines:
        plain.warning(f"call {PHONE}")
    (line,) = assert_masked(lines)
    assert line["service"] == service


def test_root_handler_lines_are_masked() -> None:
    """In AWS the Lambda runtime's handler on the root logger prints botocore's and
    other libraries' lines: the factory puts the masking filter on it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        mask_foreign_handlers()
        try:
            raise ValueError(EMAIL)
        except ValueError:
            logging.getLogger("botocore.pii-test").error("retry %s", PHONE, exc_info=True)
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    assert "retry ******2345" in text
    assert "ValueError: a***@example.com" in text
    assert PHONE not in text
    assert EMAIL not in text


def test_last_resort_lines_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    """With no handler at all (a local worker), logging's last resort prints to stderr."""
    service_logger()
    assert logging.lastResort is not None
    assert any(isinstance(f, PiiMaskingFilter) for f in logging.lastResort.filters)
    record = logging.makeLogRecord(
        {"msg": "no handler for %s", "args": (VPA,), "levelno": logging.WARNING}
    )
    logging.lastResort.handle(record)
    assert capsys.readouterr().err.strip() == "no handler for as***@okhdfc"


# --- no module can skip it ---------------------------------------------------------------


def lambda_sources() -> list[Path]:
    return sorted([*ROOT.glob("functions/**/*.py"), *ROOT.glob("shared/**/*.py")])


def direct_loggers(path: Path) -> list[int]:
    """Lines where ``path`` builds a Powertools Logger that is not a child."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        child = any(
            k.arg == "child" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if name == "Logger" and not child:
            found.append(node.lineno)
    return found


def test_only_the_factory_builds_a_service_logger() -> None:
    offenders = {
        str(path.relative_to(ROOT)): lines
        for path in lambda_sources()
        if path != ROOT / "shared" / "logs.py" and (lines := direct_loggers(path))
    }
    assert not offenders, f"use shared.logs.service_logger() instead of Logger(): {offenders}"


def modules_with_a_logger() -> list[str]:
    paths = [p for p in ROOT.glob("functions/*/*.py") if "\nlogger = " in p.read_text()]
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in paths)


@pytest.mark.parametrize("name", modules_with_a_logger())
def test_every_lambda_module_logger_masks(name: str) -> None:
    logger = importlib.import_module(name).logger
    assert isinstance(logger.registered_formatter, PiiMaskingFormatter)
    with capture_lines(logger) as lines:
        logger.warning(f"for {PHONE}", extra={"vpa": VPA})
    (line,) = assert_masked(lines)
    assert (line["message"], line["vpa"]) == ("for ******2345", "as***@okhdfc")
