"""CDK construct of the payments module: the API (with the gateway's webhook, the
one route without the authorizer: it is HMAC-signed), the webhook secret, the
payments queue (+ DLQ) fed by an EventBridge rule for InvoiceIssued (AutoPay),
its worker, the schedules (the reconciliation janitor every 15 minutes, the
AutoPay retries at 10:00 IST) and the ops queue for payments the janitor could
not resolve in time.

The gateway is chosen by the CDK context ``payment_gateway``; only
``simulator`` exists yet, and with it come its webhook outbox (+ DLQ) and the
function that signs and delivers its webhooks (a real gateway's adapter would
replace those: the gateway posts to the webhook route itself). The simulator's
knobs and the sender identity are the activation construct's."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.activation import Activation
from infra.function import ServiceFunction
from infra.messaging import encrypted_queue, events_to_queue, work_queue
from infra.platform import Platform

SIMULATOR = "simulator"
WORKER_TIMEOUT_SECONDS = 60
WEBHOOKS_TIMEOUT_SECONDS = 60
BATCH_SIZE = 10
SECRET_LENGTH = 64  # characters

# What the worker reacts to (functions/payments/worker.py).
EVENT_SOURCES = ["tbcss.billing"]
EVENT_TYPES = ["InvoiceIssued"]
JANITOR = events.Schedule.rate(Duration.minutes(15))
# 10:00 IST = 04:30 UTC.
AUTOPAY_RETRIES = events.Schedule.cron(minute="30", hour="4")

ROUTES = (
    ("payments", "POST"),
    ("payments/{payment_id}", "GET"),
    ("users/{user_id}/autopay", "POST"),
)
WEBHOOK_ROUTE = ("payments/webhook", "POST")


class Payments(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        platform: Platform,
        activation: Activation,
        stage: str,
        gateway: str = SIMULATOR,
    ) -> None:
        super().__init__(scope, construct_id)
        if gateway != SIMULATOR:
            raise ValueError(f"unknown payment gateway {gateway!r}: only {SIMULATOR!r} exists")
        self._platform = platform
        self._activation = activation
        # Named literally and granted by name, as activation's pepper: moto's
        # CloudFormation skips secrets, and the local runtime creates them by name.
        self.secret_name = f"tbcss-{stage}/payment-gateway-webhook-secret"
        self.secret = secretsmanager.Secret(
            self,
            "WebhookSecret",
            secret_name=self.secret_name,
            description="HMAC-SHA256 secret of the payment gateway's webhooks",
            encryption_key=platform.key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=SECRET_LENGTH, exclude_punctuation=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )
        key = platform.key
        self.dlq, self.queue = work_queue(
            self, "Queue", key=key, consumer_timeout_seconds=WORKER_TIMEOUT_SECONDS
        )
        self.outbox_dlq, self.outbox = work_queue(
            self, "WebhookOutbox", key=key, consumer_timeout_seconds=WEBHOOKS_TIMEOUT_SECONDS
        )
        self.ops = encrypted_queue(self, "OpsQueue", key=key)
        self.rule = self._event_rule()
        common = {
            "PAYMENT_GATEWAY": gateway,
            "PAYMENTS_OPS_QUEUE_URL": self.ops.queue_url,
            "NOTIFICATION_SENDER": activation.sender,
        }
        charges = {
            # The simulator charges: its knobs, and its outbox for the webhooks.
            "SIMULATOR_KNOBS_PARAMETER": activation.knobs.parameter_name,
            "WEBHOOK_OUTBOX_QUEUE_URL": self.outbox.queue_url,
        }

        self.api = self._function(
            "Api", "handler", {**common, **charges, "PAYMENT_WEBHOOK_SECRET_ID": self.secret_name}
        )
        self._grant_charges(self.api)
        self._grant_secret(self.api)  # verifies the webhooks
        self.ops.grant_send_messages(self.api)  # a capture that does not match its payment
        activation.grant_notifications(self.api)  # a recharge extended, an AutoPay reminder
        self._routes()

        # AutoPay charges; the outcome comes through the webhook, handled by the API.
        self.worker = self._function(
            "Worker", "worker", {**common, **charges}, timeout_seconds=WORKER_TIMEOUT_SECONDS
        )
        self._grant_charges(self.worker)
        self.worker.add_event_source(
            sources.SqsEventSource(
                self.queue, batch_size=BATCH_SIZE, report_batch_item_failures=True
            )
        )

        self.schedule = self._function(
            "Schedule",
            "schedule",
            {**common, "PAYMENTS_QUEUE_URL": self.queue.queue_url},
            timeout_seconds=300,  # the janitor queries every shard and asks the gateway
        )
        self.queue.grant_send_messages(self.schedule)  # the AutoPay retries' fan-out
        self.ops.grant_send_messages(self.schedule)  # what is not resolved in 2 hours
        activation.grant_notifications(self.schedule)  # the reminder after a last failure
        self._schedules()

        self.webhooks = self._webhooks()

    # --- queues and events in ------------------------------------------------------------

    def _event_rule(self) -> events.Rule:
        return events_to_queue(
            self,
            "AutoPayInvoices",
            platform=self._platform,
            description="New invoices, for AutoPay, into the payments queue",
            sources=EVENT_SOURCES,
            detail_types=EVENT_TYPES,
            queue=self.queue,
            dlq=self.dlq,
        )

    # --- functions ---------------------------------------------------------------------

    def _function(
        self,
        construct_id: str,
        entry: str,
        environment: dict[str, str],
        *,
        timeout_seconds: int = 10,
    ) -> lambda_.Function:
        """A function with the table and the bus, the grants the payment service needs."""
        fn = ServiceFunction(
            self,
            construct_id,
            module="payments",
            entry=entry,
            packaging=self._platform.packaging,
            environment={**self._platform.environment, **environment},
            timeout_seconds=timeout_seconds,
        ).function
        self._platform.table.grant_read_write_data(fn)
        self._platform.bus.grant_put_events_to(fn)
        return fn

    def _grant_charges(self, fn: lambda_.Function) -> None:
        """The simulator charges: its knobs (read) and its webhook outbox (send)."""
        self._activation.knobs.grant_read(fn)
        self.outbox.grant_send_messages(fn)

    def _grant_secret(self, fn: lambda_.Function) -> None:
        """By name (with Secrets Manager's 6-character suffix), not by the secret's
        Ref: the same policy then deploys where the secret is created out of band
        (moto's CloudFormation skips secrets; see infra/local/deploy.py). The key
        decrypts it only through Secrets Manager."""
        stack = Stack.of(self)
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"],
                resources=[
                    f"arn:{stack.partition}:secretsmanager:{stack.region}:{stack.account}:"
                    f"secret:{self.secret_name}-??????"
                ],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[self._platform.key.key_arn],
                conditions={
                    "StringEquals": {
                        "kms:ViaService": f"secretsmanager.{stack.region}.amazonaws.com"
                    }
                },
            )
        )

    def _routes(self) -> None:
        integration = apigw.LambdaIntegration(self.api)
        root = self._platform.api.root
        # resource_for_path reuses /users/{user_id} and /payments.
        for path, method in ROUTES:
            root.resource_for_path(path).add_method(
                method, integration, authorizer=self._platform.authorizer
            )
        # The gateway has no bearer token: the handler checks the HMAC signature.
        path, method = WEBHOOK_ROUTE
        root.resource_for_path(path).add_method(
            method, integration, authorization_type=apigw.AuthorizationType.NONE
        )

    def _schedules(self) -> None:
        for construct_id, description, schedule, sweep in (
            ("Janitor", "Payments reconciliation janitor, every 15 minutes", JANITOR, "reconcile"),
            (
                "AutoPayRetriesDaily",
                "AutoPay retries due today, at 10:00 IST",
                AUTOPAY_RETRIES,
                "autopay_retries",
            ),
        ):
            events.Rule(
                self,
                construct_id,
                description=description,
                schedule=schedule,
                targets=[
                    targets.LambdaFunction(
                        self.schedule,
                        # The handler takes the time from the clock.
                        event=events.RuleTargetInput.from_object({"sweep": sweep}),
                        retry_attempts=2,
                    )
                ],
            )

    def _webhooks(self) -> lambda_.Function:
        """The simulator's webhook delivery: signs each queued webhook and invokes
        the API function with it. It reads the secret because it plays the
        gateway, which holds the same secret."""
        fn = ServiceFunction(
            self,
            "Webhooks",
            module="payments",
            entry="webhooks",
            packaging=self._platform.packaging,
            environment={
                **self._platform.environment,
                "PAYMENT_WEBHOOK_SECRET_ID": self.secret_name,
                "PAYMENTS_API_FUNCTION_NAME": self.api.function_name,
            },
            timeout_seconds=WEBHOOKS_TIMEOUT_SECONDS,
        ).function
        self._grant_secret(fn)
        self.api.grant_invoke(fn)
        fn.add_event_source(
            sources.SqsEventSource(
                self.outbox, batch_size=BATCH_SIZE, report_batch_item_failures=True
            )
        )
        return fn
