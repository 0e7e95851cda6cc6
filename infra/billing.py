"""CDK construct of the billing module: the invoice bucket, the billing queue
(+ DLQ), the worker, the daily schedules (bill run, overdue sweep, prepaid expiry
sweep at 00:00 IST) and the invoice API."""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from infra.function import ServiceFunction
from infra.messaging import work_queue
from infra.platform import Platform, grant_sweep_checkpoints, private_bucket

# 00:00 IST = 18:30 UTC the day before.
IST_MIDNIGHT = events.Schedule.cron(minute="30", hour="18")
SWEEPS = ("expiry", "overdue", "bill_run")
WORKER_TIMEOUT_SECONDS = 60
WORKER_BATCH_SIZE = 10
# Where shared.stores.billing.S3InvoiceDocuments keeps the PDFs.
INVOICE_KEYS = "invoices/*"


class Billing(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, platform: Platform) -> None:
        super().__init__(scope, construct_id)
        key = platform.key
        self._key = key
        self.document_users: list[iam.IGrantable] = []  # see grant_documents
        self.bucket = private_bucket(self, "Invoices", platform=platform)
        self.dlq, self.queue = work_queue(
            self, "Tasks", key=key, consumer_timeout_seconds=WORKER_TIMEOUT_SECONDS
        )
        environment = {
            **platform.environment,
            "INVOICE_BUCKET_NAME": self.bucket.bucket_name,
            "BILLING_QUEUE_URL": self.queue.queue_url,
        }

        self.worker = ServiceFunction(
            self,
            "Worker",
            module="billing",
            entry="worker",
            packaging=platform.packaging,
            environment=environment,
            memory_mb=1024,
            timeout_seconds=WORKER_TIMEOUT_SECONDS,
        ).function
        platform.table.grant_read_write_data(self.worker)
        self.grant_documents(self.worker)
        key.grant_encrypt_decrypt(self.worker)
        platform.bus.grant_put_events_to(self.worker)
        self.worker.add_event_source(
            sources.SqsEventSource(
                self.queue, batch_size=WORKER_BATCH_SIZE, report_batch_item_failures=True
            )
        )

        self.schedules = ServiceFunction(
            self,
            "Schedules",
            module="billing",
            entry="schedule",
            packaging=platform.packaging,
            environment=environment,
            timeout_seconds=900,  # a bill run queries every shard and fans out
        ).function
        platform.table.grant_read_data(self.schedules)
        grant_sweep_checkpoints(platform.table, self.schedules)
        self.queue.grant_send_messages(self.schedules)
        for sweep in SWEEPS:
            name = "".join(part.title() for part in sweep.split("_"))
            events.Rule(
                self,
                f"{name}Daily",
                description=f"Billing {sweep.replace('_', ' ')} at 00:00 IST",
                schedule=IST_MIDNIGHT,
                targets=[
                    targets.LambdaFunction(
                        self.schedules,
                        # A constant input: the handler takes the day from the clock
                        # (00:00 IST when the rule fires; any time that IST day if late).
                        event=events.RuleTargetInput.from_object({"sweep": sweep}),
                        retry_attempts=2,
                    )
                ],
            )

        self.api = ServiceFunction(
            self,
            "Api",
            module="billing",
            packaging=platform.packaging,
            environment=environment,
        ).function
        platform.table.grant_read_write_data(self.api)
        self.grant_documents(self.api)
        key.grant_encrypt_decrypt(self.api)
        platform.bus.grant_put_events_to(self.api)
        integration = apigw.LambdaIntegration(self.api)
        root = platform.api.root
        invoice = root.resource_for_path("invoices/{invoice_id}")
        for method, resource in (
            ("GET", root.resource_for_path("users/{user_id}/invoices")),
            ("GET", invoice),
            ("GET", invoice.add_resource("pdf")),
            ("POST", invoice.add_resource("credit-notes")),
        ):
            resource.add_method(method, integration, authorizer=platform.authorizer)

    def grant_documents(self, fn: iam.IGrantable) -> None:
        """Write and read the invoice PDFs: no listing, no deletes, no other keys."""
        self.document_users.append(fn)
        fn.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:GetObject"],
                resources=[self.bucket.arn_for_objects(INVOICE_KEYS)],
            )
        )
        # S3 asks KMS on the caller's behalf: a data key to put, a decrypt to get.
        self._key.grant(fn, "kms:GenerateDataKey", "kms:Decrypt")
