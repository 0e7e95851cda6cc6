"""CDK construct of the usage module: the CDR stream, the rating function with
its Kinesis event source, the anomaly review queue, and GET /users/{id}/usage."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.function import ServiceFunction
from infra.messaging import encrypted_queue
from infra.platform import Platform

# One invoke rates up to this many CDRs (Kinesis's maximum; Lambda sends fewer
# when they pass its 6 MB payload limit): the bigger the batch, the fewer DynamoDB
# requests and write units per CDR, as a subscriber's CDRs in one batch share one
# state read and write. The window bounds the wait, so a quiet stream is still
# rated within seconds.
RATING_BATCH_SIZE = 10_000
RATING_BATCH_WINDOW = Duration.seconds(2)
RATING_RETRIES = 5
# What rating reads and writes: states, markers, late items, anomaly counters,
# wallets (TransactWriteItems needs the per-item actions), never deletes or scans.
RATING_TABLE_ACTIONS = (
    "dynamodb:BatchGetItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:ConditionCheckItem",
)
REPORT_TABLE_ACTIONS = ("dynamodb:BatchGetItem", "dynamodb:GetItem")


class Usage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, platform: Platform) -> None:
        super().__init__(scope, construct_id)
        key = platform.key
        self.stream = kinesis.Stream(
            self,
            "CdrStream",
            shard_count=1,  # partition key = MSISDN; add shards as the feed grows
            encryption=kinesis.StreamEncryption.KMS,
            encryption_key=key,
            retention_period=Duration.days(7),
        )
        self.anomaly_dlq = encrypted_queue(self, "AnomalyDlq", key=key)
        self.anomaly_queue = encrypted_queue(
            self,
            "AnomalyQueue",
            key=key,
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=5, queue=self.anomaly_dlq),
        )
        # Batches given up after the retries.
        self.rating_dlq = encrypted_queue(self, "RatingDlq", key=key)

        self.rating_function = ServiceFunction(
            self,
            "Rating",
            module="usage",
            entry="rating",
            packaging=platform.packaging,
            environment={
                **platform.environment,
                "ANOMALY_QUEUE_URL": self.anomaly_queue.queue_url,
            },
            memory_mb=1024,
            # A full batch (about 7,500 CDRs at the 6 MB limit) takes a few seconds
            # on DynamoDB, about 12 s on moto; a timeout only retries the batch.
            timeout_seconds=60,
        ).function
        platform.table.grant(self.rating_function, *RATING_TABLE_ACTIONS)
        key.grant_encrypt_decrypt(self.rating_function)
        platform.bus.grant_put_events_to(self.rating_function)
        self.anomaly_queue.grant_send_messages(self.rating_function)
        self.rating_function.add_event_source(
            sources.KinesisEventSource(
                self.stream,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=RATING_BATCH_SIZE,
                max_batching_window=RATING_BATCH_WINDOW,
                bisect_batch_on_error=True,
                retry_attempts=RATING_RETRIES,
                report_batch_item_failures=True,
                parallelization_factor=1,  # one writer per subscriber at a time
                on_failure=sources.SqsDlq(self.rating_dlq),
            )
        )

        self.api_function = ServiceFunction(
            self,
            "Api",
            module="usage",
            packaging=platform.packaging,
            environment=platform.environment,
        ).function
        platform.table.grant(self.api_function, *REPORT_TABLE_ACTIONS)
        key.grant_decrypt(self.api_function)
        # resource_for_path: /users/{user_id} may belong to another module too.
        platform.api.root.resource_for_path("users/{user_id}/usage").add_method(
            "GET", apigw.LambdaIntegration(self.api_function), authorizer=platform.authorizer
        )
