"""The cost model's fixed monthly items (bench/cost.py) describe the stack as synthesized:
a change of shard count, retention, keys, secrets or queue consumers shows up here."""

from __future__ import annotations

from bench import cost
from tests.infra.test_stack_template import Resources, of_type


def test_the_cdr_stream_shards_and_retention(resources: Resources) -> None:
    (stream,) = of_type(resources, "AWS::Kinesis::Stream").values()

    assert stream["ShardCount"] == cost.CDR_STREAM_SHARDS
    assert stream["RetentionPeriodHours"] == cost.CDR_STREAM_RETENTION_HOURS


def test_the_keys_and_secrets_paid_per_month(resources: Resources) -> None:
    assert len(of_type(resources, "AWS::KMS::Key")) == cost.KMS_KEYS
    assert len(of_type(resources, "AWS::SecretsManager::Secret")) == cost.SECRETS


def test_the_queues_lambda_polls(resources: Resources) -> None:
    queues = of_type(resources, "AWS::SQS::Queue")
    polled = [
        mapping
        for mapping in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
        if mapping["EventSourceArn"]["Fn::GetAtt"][0] in queues
    ]

    assert len(polled) == cost.SQS_EVENT_SOURCE_MAPPINGS
