"""CDK construct of the service-control module: the queue (+ DLQ) that receives
the domain events service control reacts to and the inactivity sweep's fan-out,
the EventBridge rule feeding it, the worker, the API, the disconnection state
machine (JSONPath ASL) with its task function, and the daily inactivity sweep.

The network simulator (knobs and lines), the sender identity and the workflow
retry timings are the activation construct's; the invoice bucket is billing's
(the final invoice's PDF)."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.activation import (
    Activation,
    ActivationTimings,
    retry_network_order,
    retry_worker_failures,
)
from infra.billing import IST_MIDNIGHT, Billing
from infra.function import ServiceFunction
from infra.messaging import events_to_queue, work_queue
from infra.platform import Platform, grant_sweep_checkpoints, workflow_logs
from shared.services.disconnection import Decision

ANY_ERROR = sfn.Errors.ALL
WORKER_TIMEOUT_SECONDS = 60
WORKER_BATCH_SIZE = 10

# What service control reacts to (functions/service_control/worker.py REACTIONS).
EVENT_SOURCES = ["tbcss.billing", "tbcss.usage", "tbcss.plans", "tbcss.payments"]
EVENT_TYPES = ["InvoiceOverdue", "PlanExpired", "QuotaExhausted", "PlanChanged", "PaymentSucceeded"]

ROUTES = (
    ("service-control/block/{user_id}", "POST"),
    ("service-control/unblock/{user_id}", "POST"),
    ("service-control/status/{user_id}", "GET"),
    ("service-control/disconnect/{user_id}", "POST"),
    ("service-control/disconnections/{disconnection_id}", "GET"),
    ("service-control/otp/{user_id}", "POST"),
    ("service-control/otp/{user_id}/verify", "POST"),
    ("users/{user_id}/sim-replacement", "POST"),
)


class ServiceControl(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        platform: Platform,
        activation: Activation,
        billing: Billing,
        timings: ActivationTimings | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._platform = platform
        self._activation = activation
        self.timings = timings or activation.timings
        self.dlq, self.queue = work_queue(
            self, "Queue", key=platform.key, consumer_timeout_seconds=WORKER_TIMEOUT_SECONDS
        )
        self.rule = self._event_rule()
        # The timers (inactivity, cooling-off) come with platform.environment.
        self._common = {"SERVICE_CONTROL_QUEUE_URL": self.queue.queue_url}
        network = {
            "SIMULATOR_KNOBS_PARAMETER": activation.knobs.parameter_name,
            "SIMULATOR_LINES_PARAMETER_PREFIX": activation.lines_prefix,
        }

        self.tasks = self._function(
            "Tasks",
            "tasks",
            {
                **network,
                "NOTIFICATION_SENDER": activation.sender,
                "INVOICE_BUCKET_NAME": billing.bucket.bucket_name,
            },
            timeout_seconds=60,  # the final invoice renders a PDF
            memory_mb=1024,
        )
        self._grant_network(self.tasks)
        self._activation.grant_notifications(self.tasks)
        billing.grant_documents(self.tasks)
        self.state_machine = self._state_machine()

        self.worker = self._function(
            "Worker",
            "worker",
            {
                **network,
                "DISCONNECTION_STATE_MACHINE_ARN": self.state_machine.state_machine_arn,
            },
            timeout_seconds=WORKER_TIMEOUT_SECONDS,
        )
        self._grant_network(self.worker)
        self.state_machine.grant_start_execution(self.worker)  # resumes, inactivity
        self.worker.add_event_source(
            sources.SqsEventSource(
                self.queue, batch_size=WORKER_BATCH_SIZE, report_batch_item_failures=True
            )
        )

        self.api = self._function(
            "Api",
            "handler",
            {
                **network,
                "DISCONNECTION_STATE_MACHINE_ARN": self.state_machine.state_machine_arn,
                "NOTIFICATION_SENDER": activation.sender,
            },
        )
        self._grant_network(self.api)  # blocks, unblocks and SIM swaps reach the network
        self.queue.grant_send_messages(self.api)  # a sync the network refused, retried
        self.state_machine.grant_start_execution(self.api)
        self._activation.grant_notifications(self.api)  # the owner's one-time passwords
        self._routes()

        self.schedule = self._schedule()

    # --- events in -----------------------------------------------------------------

    def _event_rule(self) -> events.Rule:
        return events_to_queue(
            self,
            "Reactions",
            platform=self._platform,
            description="Domain events service control reacts to, into its queue",
            sources=EVENT_SOURCES,
            detail_types=EVENT_TYPES,
            queue=self.queue,
            dlq=self.dlq,
        )

    # --- functions -------------------------------------------------------------------

    def _function(
        self,
        construct_id: str,
        entry: str,
        environment: dict[str, str],
        *,
        timeout_seconds: int = 10,
        memory_mb: int = 512,
    ) -> lambda_.Function:
        """A function with the table and the bus, the grants every entry point needs."""
        fn = ServiceFunction(
            self,
            construct_id,
            module="service_control",
            entry=entry,
            packaging=self._platform.packaging,
            environment={**self._platform.environment, **self._common, **environment},
            timeout_seconds=timeout_seconds,
            memory_mb=memory_mb,
        ).function
        self._platform.table.grant_read_write_data(fn)
        self._platform.bus.grant_put_events_to(fn)
        return fn

    def _grant_network(self, fn: lambda_.Function) -> None:
        """The network simulator: its knobs (read) and its lines (read, write)."""
        self._activation.knobs.grant_read(fn)
        self._activation.grant_lines(fn)

    def _routes(self) -> None:
        integration = apigw.LambdaIntegration(self.api)
        root = self._platform.api.root
        # resource_for_path reuses /users/{user_id} and the shared prefixes.
        for path, method in ROUTES:
            root.resource_for_path(path).add_method(
                method, integration, authorizer=self._platform.authorizer
            )

    def _schedule(self) -> lambda_.Function:
        fn = ServiceFunction(
            self,
            "Schedule",
            module="service_control",
            entry="schedule",
            packaging=self._platform.packaging,
            environment={**self._platform.environment, **self._common},
            timeout_seconds=300,  # every shard of each day since its checkpoint, then the fan-out
        ).function
        self._platform.table.grant_read_data(fn)
        grant_sweep_checkpoints(self._platform.table, fn)
        self.queue.grant_send_messages(fn)
        events.Rule(
            self,
            "InactivityDaily",
            description="Service control inactivity sweep at 00:00 IST",
            schedule=IST_MIDNIGHT,
            targets=[
                targets.LambdaFunction(
                    fn,
                    # The handler takes the day from the clock, as billing's sweeps do.
                    event=events.RuleTargetInput.from_object({"sweep": "inactivity"}),
                    retry_attempts=2,
                )
            ],
        )
        return fn

    # --- the disconnection state machine ------------------------------------------------

    def _state_machine(self) -> sfn.StateMachine:
        t = self.timings
        final_bill = self._task("FinalBill", "final_bill")
        check_dues = self._task("CheckDues", "check_dues", result_path="$.dues")
        await_dues = self._task("AwaitDues", "await_dues")
        deprovision = self._task("Deprovision", "deprovision")
        complete = self._task("Complete", "complete")
        notify = self._task("Notify", "notify")
        escalate = self._task("Escalate", "escalate", with_error=True)
        disconnected = sfn.Succeed(self, "Disconnected")

        for step in (final_bill, check_dues, await_dues, complete, escalate):
            retry_worker_failures(step, t)
        for step in (final_bill, check_dues, await_dues, complete):
            step.add_catch(escalate, errors=[ANY_ERROR], result_path="$.error")
        # What the network refuses for good, or keeps refusing, goes to an engineer
        # (the line is half gone).
        retry_network_order(deprovision, t, attempts=t.deprovision_attempts)
        deprovision.add_catch(escalate, errors=[ANY_ERROR], result_path="$.error")
        retry_worker_failures(notify, t)
        # The line is gone either way; a lost notice is in the logs.
        notify.add_catch(disconnected, errors=[ANY_ERROR], result_path="$.notify_error")
        escalate.next(
            sfn.Fail(
                self, "Escalated", error="DisconnectionEscalated", cause="handed to operations"
            )
        )

        decision = (
            sfn.Choice(self, "DuesDecision")
            .when(
                sfn.Condition.string_equals("$.dues.decision", Decision.AWAIT_DUES.value),
                await_dues.next(sfn.Succeed(self, "AwaitingDues")),
            )
            .when(
                sfn.Condition.string_equals("$.dues.decision", Decision.PROCEED.value),
                deprovision.next(complete).next(notify).next(disconnected),
            )
            .otherwise(
                sfn.Fail(self, "UnknownDecision", error="UnknownDecision", cause="see CheckDues")
            )
        )
        check_dues.next(decision)
        # A resume (dues paid after AwaitDues) skips the final bill: it was issued.
        start = (
            sfn.Choice(self, "Resumed")
            .when(sfn.Condition.is_present("$.resume"), check_dues)
            .otherwise(final_bill.next(check_dues))
        )
        return sfn.StateMachine(
            self,
            "Disconnection",
            definition_body=sfn.DefinitionBody.from_chainable(start),
            query_language=sfn.QueryLanguage.JSON_PATH,
            timeout=Duration.days(1),
            comment="Permanent disconnection: final bill, dues check, de-provisioning, "
            "completion, notification",
            logs=workflow_logs(self, "DisconnectionLogs"),
            tracing_enabled=True,
        )

    def _task(
        self,
        name: str,
        task: str,
        *,
        with_error: bool = False,
        result_path: str = sfn.JsonPath.DISCARD,
    ) -> tasks.LambdaInvoke:
        payload: dict[str, Any] = {
            "task": task,
            "disconnection_id": sfn.JsonPath.string_at("$.disconnection_id"),
        }
        if with_error:
            payload["error"] = sfn.JsonPath.object_at("$.error")
        return tasks.LambdaInvoke(
            self,
            name,
            lambda_function=self.tasks,
            payload=sfn.TaskInput.from_object(payload),
            payload_response_only=True,
            # Steps read the record, not the input; only CheckDues' answer is kept.
            result_path=result_path,
        )
