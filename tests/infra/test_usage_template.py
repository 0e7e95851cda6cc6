"""CDK assertions on the usage module (infra/usage.py)."""

from __future__ import annotations

from typing import Any

from tests.infra.test_stack_template import (
    Resources,
    _actions,
    _resources,
    _routes,
    _statements_of,
    _walk,
    function_named,
    of_type,
)

RATING = "functions.usage.rating.handler"
API = "functions.usage.handler.handler"


def test_the_cdr_stream_is_kms_encrypted(resources: Resources) -> None:
    (stream,) = of_type(resources, "AWS::Kinesis::Stream").values()
    encryption = stream["StreamEncryption"]
    assert encryption["EncryptionType"] == "KMS"
    assert "DataKey" in str(encryption["KeyId"])


def test_rating_consumes_the_stream_in_big_batches_with_partial_failures(
    resources: Resources,
) -> None:
    rating_name, _ = function_named(resources, RATING)
    (mapping,) = [
        m
        for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
        if m["FunctionName"] == {"Ref": rating_name}
    ]
    assert 1000 <= mapping["BatchSize"] <= 10_000  # 10,000: the Kinesis maximum
    assert mapping["MaximumBatchingWindowInSeconds"] > 0
    assert mapping["BisectBatchOnFunctionError"] is True
    assert 0 < mapping["MaximumRetryAttempts"] <= 10
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    destination = mapping["DestinationConfig"]["OnFailure"]["Destination"]
    assert "UsageRatingDlq" in str(destination)


def test_the_rating_function_knows_its_anomaly_queue(resources: Resources) -> None:
    _, fn = function_named(resources, RATING)
    assert "UsageAnomalyQueue" in str(fn["Environment"]["Variables"]["ANOMALY_QUEUE_URL"])


def test_the_anomaly_queue_has_a_dead_letter_queue(resources: Resources) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    (anomaly,) = [q for name, q in queues.items() if name.startswith("UsageAnomalyQueue")]
    assert "UsageAnomalyDlq" in str(anomaly["RedrivePolicy"]["deadLetterTargetArn"])


def test_usage_route_is_authorized_and_proxies_to_the_usage_api(resources: Resources) -> None:
    fn_name, _ = function_named(resources, API)
    route = _routes(resources)["GET /users/{user_id}/usage"]
    assert route["AuthorizationType"] == "CUSTOM"
    assert {"Fn::GetAtt": [fn_name, "Arn"]} in _walk(route["Integration"]["Uri"])


def _dynamodb_actions(resources: Resources, handler: str) -> set[str]:
    actions: set[str] = set()
    for statement in _statements_of(resources, handler):
        for action in _actions(statement):
            assert action != "*"
            for resource in _resources(statement):
                assert resource != "*", action
            if action.startswith("dynamodb:"):
                actions.add(action)
    return actions


def test_rating_may_read_put_and_update_but_never_delete_or_scan(resources: Resources) -> None:
    actions = _dynamodb_actions(resources, RATING)
    assert {"dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"} <= actions
    assert not actions & {"dynamodb:DeleteItem", "dynamodb:Scan", "dynamodb:Query"}


def test_the_usage_api_only_reads(resources: Resources) -> None:
    actions: Any = _dynamodb_actions(resources, API)
    assert actions <= {"dynamodb:BatchGetItem", "dynamodb:GetItem"}
