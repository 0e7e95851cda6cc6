"""The one way a Lambda module gets its logger: Powertools' Logger whose every
line is masked of personal data (:mod:`shared.pii`).

Handler modules write ``logger = service_logger()``; shared modules keep
``Logger(child=True)``, whose records go up to the service logger's handler and
so through the same formatter. Lines that never reach Powertools (botocore's,
a library's, anything printed by logging's last resort or by the Lambda
runtime's own root handler) are masked by a filter on those handlers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from shared.pii import mask_pii, mask_text

if TYPE_CHECKING:
    from aws_lambda_powertools.logging.types import LogRecord

# What every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_TRACEBACKS = logging.Formatter()


class PiiMaskingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON line with personal data masked in every field: the
    message, ``extra`` and appended keys, the exception and its stack trace."""

    def serialize(self, log: LogRecord) -> str:
        return super().serialize(mask_pii(log))


class PiiMaskingFilter(logging.Filter):
    """Masks a record in place before a handler that is not Powertools' formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) or record.args:
            record.msg, record.args = mask_text(_message(record)), None
        else:  # a dict or list logged as such
            record.msg = mask_pii(record.msg)
        if record.exc_info:
            # Formatters print a record's cached exc_text rather than format it again.
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRIBUTES:
                setattr(record, name, mask_pii(value))
        return True


def service_logger(service: str | None = None) -> Logger:
    """The module's Powertools Logger (service from POWERTOOLS_SERVICE_NAME)."""
    logger = Logger(service=service, logger_formatter=PiiMaskingFormatter())
    if not isinstance(logger.registered_formatter, PiiMaskingFormatter):
        # A plain Logger() of this service was set up first: mask its lines too.
        logger.registered_handler.setFormatter(PiiMaskingFormatter())
        logger.structure_logs()  # the service's keys, on the new formatter
    mask_foreign_handlers()
    return logger


def mask_foreign_handlers() -> None:
    """Mask whatever the root logger's handlers (the Lambda runtime's, in AWS)
    and logging's last resort (no handler at all, as in a local worker) print."""
    for handler in (*logging.getLogger().handlers, logging.lastResort):
        if handler is not None and not any(
            isinstance(existing, PiiMaskingFilter) for existing in handler.filters
        ):
            handler.addFilter(PiiMaskingFilter())


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError, KeyError):  # arguments that do not fit the format
        return f"{record.msg} {record.args}"
