"""The disconnection state machine's task Lambda: one function, dispatched on the
``task`` field the state machine puts in each state's payload (as in
functions/activation/tasks.py, and for the same reasons: the steps share their
clients, so one warm container serves a whole execution).

Errors are left to propagate: their class names (NetworkTransientError, ...)
are what the state machine's Retry and Catch match on. Each step records its
own outcome in the disconnection's history and is safe to repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.service_control.wiring import disconnections
from shared.logs import service_logger
from shared.services.disconnection import Disconnections

logger = service_logger()

Task = Callable[[Disconnections, dict[str, Any]], dict[str, Any]]

TASKS: dict[str, Task] = {
    "final_bill": lambda flow, event: flow.final_bill(event["disconnection_id"]),
    "check_dues": lambda flow, event: flow.check_dues(event["disconnection_id"]),
    "await_dues": lambda flow, event: flow.await_dues(event["disconnection_id"]),
    "deprovision": lambda flow, event: flow.deprovision(event["disconnection_id"]),
    "complete": lambda flow, event: flow.complete(event["disconnection_id"]),
    "notify": lambda flow, event: flow.notify(event["disconnection_id"]),
    "escalate": lambda flow, event: flow.escalate(event["disconnection_id"], event.get("error")),
}


class UnknownTask(Exception):
    """The state machine asked for a task this function does not have."""


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = TASKS.get(str(event.get("task")))
    if task is None:
        raise UnknownTask(f"unknown task {event.get('task')!r}")
    logger.append_keys(disconnection_id=event.get("disconnection_id"), task=event.get("task"))
    result = task(disconnections(), event)
    logger.info("task done", extra={"result": result})
    return result
