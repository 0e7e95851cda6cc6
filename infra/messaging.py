"""One way to build the messaging every module uses: a work queue with its
dead-letter queue, and a rule that routes domain events from the bus into it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.platform import Platform

MAX_RECEIVES = 5  # then the message goes to the DLQ
RULE_RETRY_ATTEMPTS = 8


def encrypted_queue(
    scope: Construct, construct_id: str, *, key: kms.IKey, **props: Any
) -> sqs.Queue:
    """A queue encrypted under the stack's key, TLS only (14 days unless told).
    Whoever sends or receives needs the key: the queue's grant_* methods grant it."""
    props.setdefault("retention_period", Duration.days(14))
    return sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
        enforce_ssl=True,
        **props,
    )


def work_queue(
    scope: Construct, construct_id: str, *, key: kms.IKey, consumer_timeout_seconds: int
) -> tuple[sqs.Queue, sqs.Queue]:
    """``(dlq, queue)``, both encrypted under ``key``: 4 days to be worked, 14 in
    the DLQ after ``MAX_RECEIVES`` receives."""
    dlq = encrypted_queue(scope, f"{construct_id}Dlq", key=key)
    queue = encrypted_queue(
        scope,
        construct_id,
        key=key,
        retention_period=Duration.days(4),
        # Six times the consumer's timeout, as Lambda recommends for SQS sources.
        visibility_timeout=Duration.seconds(6 * consumer_timeout_seconds),
        dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=MAX_RECEIVES, queue=dlq),
    )
    return dlq, queue


def events_to_queue(
    scope: Construct,
    construct_id: str,
    *,
    platform: Platform,
    description: str,
    sources: Sequence[str],
    detail_types: Sequence[str] | None,
    queue: sqs.Queue,
    dlq: sqs.Queue,
) -> events.Rule:
    """By the bus's literal name, not a Ref: moto's CloudFormation cannot deploy a
    rule whose EventBusName is a Ref to a bus of the same stack (FIELD-NOTES).
    ``detail_types=None``: every event of the sources.

    The target grants EventBridge the queue's key (for this account's rules only:
    the flag in infra/stack.py); that grant covers ``dlq`` too when it is encrypted
    under the same key, as work_queue makes it."""
    bus_name = platform.environment["EVENT_BUS_NAME"]
    rule = events.Rule(
        scope,
        construct_id,
        description=description,
        event_bus=events.EventBus.from_event_bus_name(scope, f"{construct_id}Bus", bus_name),
        event_pattern=events.EventPattern(
            source=list(sources), detail_type=list(detail_types) if detail_types else None
        ),
        targets=[
            targets.SqsQueue(queue, dead_letter_queue=dlq, retry_attempts=RULE_RETRY_ATTEMPTS)
        ],
    )
    rule.node.add_dependency(platform.bus)
    return rule
