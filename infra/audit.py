"""CDK construct of the audit module: the audit queue (+ DLQ) fed by a rule that
takes every event of every TB-CSS source off the bus, the consumer that writes
the records, GET /audit, the reports bucket and the monthly compliance report.

Records are immutable to the application: every role of the stack is denied
updating or deleting items whose partition key starts with ``AUDIT`` (an aspect
visits each role), and only the audit consumer may put them (conditionally:
it never overwrites, shared/stores/audit.py)."""

from __future__ import annotations

import jsii
from aws_cdk import Aspects, IAspect, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct, IConstruct

from infra.function import ServiceFunction
from infra.messaging import events_to_queue, work_queue
from infra.platform import Platform, private_bucket
from shared.events import EVENT_SOURCE_PREFIX

# Every module that publishes on the bus; the infra test checks none is missing.
AUDITED_SOURCES = [
    EVENT_SOURCE_PREFIX + module
    for module in ("activation", "plans", "usage", "billing", "payments", "service_control", "api")
]
# 06:00 IST on the 1st (00:30 UTC): the previous IST month ended six hours before.
MONTHLY = events.Schedule.cron(minute="30", hour="0", day="1", month="*")
WORKER_TIMEOUT_SECONDS = 30
BATCH_SIZE = 10
AUDIT_KEYS = ["AUDIT*"]
REPORT_KEYS = "compliance/*"  # shared/services/compliance_report.py
TAMPERING = [
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
]
WRITES = [*TAMPERING, "dynamodb:PutItem", "dynamodb:PartiQLInsert"]


class Audit(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, platform: Platform) -> None:
        super().__init__(scope, construct_id)
        self.dlq, self.queue = work_queue(
            self, "Queue", key=platform.key, consumer_timeout_seconds=WORKER_TIMEOUT_SECONDS
        )
        self.rule = events_to_queue(
            self,
            "EveryEvent",
            platform=platform,
            description="Every TB-CSS domain event and staff action, for the audit trail",
            sources=AUDITED_SOURCES,
            detail_types=None,
            queue=self.queue,
            dlq=self.dlq,
        )
        self.reports = private_bucket(self, "Reports", platform=platform)
        environment = {**platform.environment, "REPORT_BUCKET_NAME": self.reports.bucket_name}

        self.worker = self._function(platform, "Worker", "worker", environment)
        self._grant_appends(platform)
        self.worker.add_event_source(
            sources.SqsEventSource(
                self.queue, batch_size=BATCH_SIZE, report_batch_item_failures=True
            )
        )

        self.api = self._function(platform, "Api", "handler", environment)
        platform.table.grant_read_data(self.api)
        platform.api.root.add_resource("audit").add_method(
            "GET", apigw.LambdaIntegration(self.api), authorizer=platform.authorizer
        )

        self.report = self._function(
            platform, "Report", "report", environment, timeout_seconds=900, memory_mb=1024
        )
        platform.table.grant_read_data(self.report)
        self._grant_report_writes()
        events.Rule(
            self,
            "MonthlyReport",
            description="The compliance report of the previous month, on the 1st",
            schedule=MONTHLY,
            targets=[targets.LambdaFunction(self.report, retry_attempts=2)],
        )
        Aspects.of(Stack.of(self)).add(AuditRecordsImmutable(writer=self.worker))

    def _grant_report_writes(self) -> None:
        """Put the reports (the key: ``_function``): no listing, no reading, no
        deletes, no other keys."""
        self.report.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[self.reports.arn_for_objects(REPORT_KEYS)],
            )
        )

    def _grant_appends(self, platform: Platform) -> None:
        """The worker claims an audit id and puts its record: AUDIT* items only,
        nothing else of the table (and the Deny of the aspect forbids changes)."""
        self.worker.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dynamodb:PutItem", "dynamodb:GetItem"],
                resources=[platform.table.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": AUDIT_KEYS}},
            )
        )

    def _function(
        self,
        platform: Platform,
        construct_id: str,
        entry: str,
        environment: dict[str, str],
        *,
        timeout_seconds: int = WORKER_TIMEOUT_SECONDS,
        memory_mb: int = 512,
    ) -> lambda_.Function:
        function = ServiceFunction(
            self,
            construct_id,
            module="audit",
            entry=entry,
            packaging=platform.packaging,
            environment=environment,
            timeout_seconds=timeout_seconds,
            memory_mb=memory_mb,
        ).function
        platform.key.grant_encrypt_decrypt(function)
        return function


@jsii.implements(IAspect)
class AuditRecordsImmutable:
    """Denies every role of the stack changing audit items; the writer may only put."""

    def __init__(self, *, writer: lambda_.Function) -> None:
        self._writer_role = writer.role

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, iam.Role):
            return
        actions = TAMPERING if node is self._writer_role else WRITES
        node.add_to_principal_policy(
            iam.PolicyStatement(
                sid="AuditRecordsAreImmutable",
                effect=iam.Effect.DENY,
                actions=actions,
                resources=["*"],
                conditions={"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": AUDIT_KEYS}},
            )
        )
