"""The activation state machine's task Lambda: one function, dispatched on the
``task`` field the state machine puts in each state's payload.

One function rather than one per step: the steps share their dependencies and
most of their clients, so one warm container serves a whole execution (five
invocations) instead of five cold starts; the price is one IAM role holding
every step's permissions (KMS decrypt, SNS, SES, SQS), which are all scoped
to this module's resources.

Errors are left to propagate: their class names (KycRejected,
NetworkTransientError, ...) are what the state machine's Retry and Catch
match on. Each step records its own outcome first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.activation.wiring import activation_workflow
from shared.logs import service_logger
from shared.services.activation import ActivationWorkflow

logger = service_logger()

Task = Callable[[ActivationWorkflow, dict[str, Any]], dict[str, str]]

TASKS: dict[str, Task] = {
    "verify_kyc": lambda flow, event: flow.verify_kyc(event["activation_id"]),
    "reject_kyc": lambda flow, event: flow.reject_kyc(event["activation_id"], event.get("error")),
    "provision": lambda flow, event: flow.provision(event["activation_id"]),
    "complete": lambda flow, event: flow.complete(event["activation_id"]),
    "notify": lambda flow, event: flow.notify(event["activation_id"]),
    "escalate": lambda flow, event: flow.escalate(event["activation_id"], event.get("error")),
}


class UnknownTask(Exception):
    """The state machine asked for a task this function does not have."""


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    task = TASKS.get(str(event.get("task")))
    if task is None:
        raise UnknownTask(f"unknown task {event.get('task')!r}")
    logger.append_keys(activation_id=event.get("activation_id"), task=event.get("task"))
    result = task(activation_workflow(), event)
    logger.info("task done", extra={"result": result})
    return result
