"""Data at rest under the stack's customer-managed key, TLS only, no public
buckets, logs for the API and the workflows, least-privilege log writes."""

from __future__ import annotations

from typing import Any

from tests.infra.test_stack_template import Resources, _actions, of_type

TLS_ONLY = {"Bool": {"aws:SecureTransport": "false"}}


def data_key(resources: Resources) -> dict[str, Any]:
    (key,) = of_type(resources, "AWS::KMS::Key")
    return {"Fn::GetAtt": [key, "Arn"]}


def deny_plain_http(policy: dict[str, Any], action: str) -> bool:
    return any(
        statement["Effect"] == "Deny"
        and statement["Action"] == action
        and statement.get("Condition") == TLS_ONLY
        for statement in policy["PolicyDocument"]["Statement"]
    )


def test_every_queue_is_encrypted_under_the_data_key_and_refuses_plain_http(
    resources: Resources,
) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    policies = of_type(resources, "AWS::SQS::QueuePolicy").values()
    assert len(queues) >= 10
    for name, queue in queues.items():
        assert queue.get("KmsMasterKeyId") == data_key(resources), name
        assert "SqsManagedSseEnabled" not in queue, name
        assert any(
            {"Ref": name} in policy["Queues"] and deny_plain_http(policy, "sqs:*")
            for policy in policies
        ), name


def test_eventbridge_may_use_the_key_only_for_this_accounts_rules(resources: Resources) -> None:
    # Rules deliver into encrypted queues (and their DLQs, under the same key).
    (key,) = of_type(resources, "AWS::KMS::Key").values()
    (statement,) = [
        s
        for s in key["KeyPolicy"]["Statement"]
        if s["Principal"] == {"Service": "events.amazonaws.com"}
    ]
    assert {"kms:GenerateDataKey*", "kms:Decrypt"} <= set(statement["Action"])
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }


def test_every_bucket_blocks_public_access_refuses_plain_http_and_is_encrypted(
    resources: Resources,
) -> None:
    buckets = of_type(resources, "AWS::S3::Bucket")
    policies = of_type(resources, "AWS::S3::BucketPolicy").values()
    (log_bucket,) = [name for name in buckets if name.startswith("AccessLogs")]
    for name, bucket in buckets.items():
        assert bucket["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        assert any(
            policy["Bucket"] == {"Ref": name} and deny_plain_http(policy, "s3:*")
            for policy in policies
        ), name
        (encryption,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        if name == log_bucket:  # S3 log delivery writes under SSE-S3 only
            assert encryption["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
            continue
        assert encryption["ServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "aws:kms",
            "KMSMasterKeyID": data_key(resources),
        }, name
        logging = bucket.get("LoggingConfiguration", {})
        assert logging.get("DestinationBucketName") == {"Ref": log_bucket}, name


def test_the_cdr_stream_is_encrypted_under_the_data_key(resources: Resources) -> None:
    (stream,) = of_type(resources, "AWS::Kinesis::Stream").values()
    assert stream["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": data_key(resources)}


def test_kms_action_wildcards_are_granted_on_the_data_key_only(resources: Resources) -> None:
    # What makes infra/nag.py's stack-wide acknowledgment of them true.
    granted = [
        statement
        for policy in of_type(resources, "AWS::IAM::Policy").values()
        for statement in policy["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Allow"
        and any(a.startswith("kms:") and "*" in a for a in _actions(statement))
    ]
    assert granted
    assert all(statement["Resource"] == data_key(resources) for statement in granted)


def test_each_function_writes_only_its_own_log_group(resources: Resources) -> None:
    policies = of_type(resources, "AWS::IAM::Policy").values()
    for name, function in of_type(resources, "AWS::Lambda::Function").items():
        role = function["Role"]["Fn::GetAtt"][0]
        assert resources[role]["Properties"].get("ManagedPolicyArns", []) == [], name
        log_group = function["LoggingConfig"]["LogGroup"]["Ref"]
        log_writes = [
            statement
            for policy in policies
            if {"Ref": role} in policy["Roles"]
            for statement in policy["PolicyDocument"]["Statement"]
            if any(a.startswith("logs:") for a in _actions(statement))
        ]
        assert log_writes == [
            {
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Effect": "Allow",
                "Resource": {"Fn::GetAtt": [log_group, "Arn"]},
            }
        ], name


def test_the_api_is_throttled_and_logs_access_and_errors_but_no_bodies(
    resources: Resources,
) -> None:
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    (log_group,) = [n for n in of_type(resources, "AWS::Logs::LogGroup") if "ApiAccessLogs" in n]
    assert stage["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": [log_group, "Arn"]}
    assert '"status":"$context.status"' in stage["AccessLogSetting"]["Format"]
    assert stage["MethodSettings"] == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "LoggingLevel": "ERROR",
            "DataTraceEnabled": False,
            "ThrottlingRateLimit": 200,
            "ThrottlingBurstLimit": 400,
        }
    ]
    (account,) = of_type(resources, "AWS::ApiGateway::Account").values()
    assert "CloudWatchRoleArn" in account  # API Gateway needs it to write any log


def test_workflows_log_every_event_without_execution_data_and_are_traced(
    resources: Resources,
) -> None:
    machines = of_type(resources, "AWS::StepFunctions::StateMachine")
    assert len(machines) == 2
    for name, machine in machines.items():
        logging = machine["LoggingConfiguration"]
        assert (logging["Level"], logging["IncludeExecutionData"]) == ("ALL", False), name
        assert machine["TracingConfiguration"] == {"Enabled": True}, name
