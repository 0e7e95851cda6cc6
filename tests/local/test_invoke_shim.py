"""Lambda Invoke against the moto port runs the real handler in a worker."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infra.local.deploy import Deployment
from tests.local.conftest import function_named


def invoke(aws: Any, name: str, payload: Any, **kwargs: Any) -> dict[str, Any]:
    response: dict[str, Any] = aws("lambda").invoke(
        FunctionName=name, Payload=json.dumps(payload), **kwargs
    )
    return response


def test_invoke_runs_the_real_handler(aws: Any, deployment: Deployment) -> None:
    echo = function_named(deployment, "Echo")

    response = invoke(aws, echo, {"hello": "world"})

    result = json.loads(response["Payload"].read())
    assert "FunctionError" not in response
    assert result["event"] == {"hello": "world"}
    assert result["function_name"] == echo
    assert result["fixture"] == "Echo"  # the template's environment
    assert result["endpoint"] == deployment.endpoint_url  # local override
    assert 0 < result["remaining_ms"] <= 5000


def test_invoke_by_arn(aws: Any, deployment: Deployment) -> None:
    echo = deployment.function(function_named(deployment, "Echo"))

    response = invoke(aws, echo.arn, {"n": 1})

    assert json.loads(response["Payload"].read())["event"] == {"n": 1}


def test_a_raising_handler_is_an_unhandled_function_error(aws: Any, deployment: Deployment) -> None:
    response = invoke(aws, function_named(deployment, "Boom"), {"why": "testing"})

    error = json.loads(response["Payload"].read())
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "boom: testing"
    assert any("handlers.py" in frame for frame in error["stackTrace"])


def test_an_overrunning_handler_times_out(aws: Any, deployment: Deployment) -> None:
    response = invoke(aws, function_named(deployment, "Slow"), {"seconds": 3})

    error = json.loads(response["Payload"].read())
    assert response["FunctionError"] == "Unhandled"
    assert "Task timed out after 1.00 seconds" in error["errorMessage"]


def test_a_cold_start_does_not_count_against_the_function_timeout(
    aws: Any, deployment: Deployment
) -> None:
    slow_start = function_named(deployment, "SlowStart")  # 1.5 s import, 1 s timeout

    response = invoke(aws, slow_start, {})

    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read())["remaining_ms"] > 500


def test_a_timeout_is_written_to_the_function_log(
    aws: Any, deployment: Deployment, runtime: Any
) -> None:
    slow = function_named(deployment, "Slow")

    response = invoke(aws, slow, {"seconds": 3})

    request_id = json.loads(response["Payload"].read())["requestId"]
    log = (runtime.state_dir / "logs" / f"{slow}.log").read_text()
    assert f"{request_id} Task timed out after 1.00 seconds" in log


def test_the_function_works_again_after_a_timeout(aws: Any, deployment: Deployment) -> None:
    slow = function_named(deployment, "Slow")
    invoke(aws, slow, {"seconds": 3})

    response = invoke(aws, slow, {"seconds": 0})

    assert json.loads(response["Payload"].read())["done"]


def test_event_invocation_returns_202_at_once(aws: Any, deployment: Deployment) -> None:
    response = invoke(aws, function_named(deployment, "Echo"), {}, InvocationType="Event")

    assert response["StatusCode"] == 202


def test_unknown_function_is_resource_not_found(aws: Any) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(aws, "no-such-function", {})

    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_concurrent_invocations_use_several_workers(
    aws: Any, runtime: Any, deployment: Deployment
) -> None:
    slow = function_named(deployment, "Slow")
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: invoke(aws, slow, {"seconds": 0.5}), range(3)))

    answers = [json.loads(result["Payload"].read()) for result in results]
    assert all(answer["done"] for answer in answers)
    assert runtime.invoker.pool_sizes()[slow] >= 2
    assert len({answer["pid"] for answer in answers}) >= 2
    # Each worker, forked from the zygote, runs in the function's code asset.
    assert {answer["cwd"] for answer in answers} == {deployment.function(slow).code_dir}
