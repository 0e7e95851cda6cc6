"""moto's Step Functions interpreter reaches the real handler through the shim."""

from __future__ import annotations

import json
import time
from typing import Any

from infra.local.deploy import Deployment

DEADLINE_SECONDS = 20


def test_a_lambda_task_runs_the_real_handler(aws: Any, deployment: Deployment) -> None:
    sfn = aws("stepfunctions")
    (machine,) = deployment.state_machines.values()

    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"order": 7}))
    described = _wait_for_end(sfn, execution["executionArn"])

    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert output["event"] == {"order": 7}
    assert output["fixture"] == "Echo"


def _wait_for_end(sfn: Any, execution_arn: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.1)
    raise AssertionError(f"execution still running after {DEADLINE_SECONDS} s")
