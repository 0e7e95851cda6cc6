"""CDK construct of the activation module: the API function, the task
function, the activation state machine (JSONPath ASL), the KYC pepper secret,
the simulator knobs and lines, the ops escalation queue and the sender identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ses as ses
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.function import ServiceFunction
from infra.messaging import encrypted_queue
from infra.platform import Platform, workflow_logs
from shared.kyc_provider import KycProviderUnavailable, KycRejected
from shared.network import NetworkPermanentError, NetworkTransientError
from shared.services.activation import NotificationFailed, Step
from shared.settings import Settings

KYC_FAILURES = [KycRejected.__name__, KycProviderUnavailable.__name__]
ANY_ERROR = sfn.Errors.ALL
PEPPER_LENGTH = 64  # characters: well above the 32 bytes shared.kyc requires


@dataclass(frozen=True)
class ActivationTimings:
    """Retry timing of the workflow. Production defaults; the local runtime and
    tests shrink the intervals through the CDK context ``activation_retry_seconds``."""

    kyc_retry_seconds: int = 30
    provision_interval_seconds: int = 10
    provision_backoff_rate: float = 2.0
    provision_max_delay_seconds: int = 300
    provision_attempts: int = 3  # then escalate (issue 4)
    # A disconnection cannot be abandoned half way: it outlasts a longer HLR
    # outage (10 + 20 + 40 + 80 + 160 s) before an engineer is called.
    deprovision_attempts: int = 6
    step_retry_seconds: int = 2  # bookkeeping steps (complete, notify, escalate)

    @classmethod
    def from_context(cls, value: Any) -> ActivationTimings:
        """``activation_retry_seconds`` (an int) replaces every interval."""
        if value is None:
            return cls()
        seconds = int(value)
        return cls(
            kyc_retry_seconds=seconds,
            provision_interval_seconds=seconds,
            step_retry_seconds=seconds,
        )


class Activation(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        platform: Platform,
        stage: str,
        timings: ActivationTimings | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.timings = timings or ActivationTimings()
        self.sender = sender = Settings.model_fields["notification_sender"].default
        # Named literally and passed on by name: moto's CloudFormation skips
        # secrets, and the local runtime creates skipped ones under these names.
        self.pepper_name = pepper_name = f"tbcss-{stage}/kyc-fingerprint-pepper"
        self.pepper = secretsmanager.Secret(
            self,
            "KycPepper",
            secret_name=pepper_name,
            description="Pepper of the KYC fingerprints (HMAC-SHA256); rotating means re-keying",
            encryption_key=platform.key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=PEPPER_LENGTH, exclude_punctuation=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.knobs = ssm.StringParameter(
            self,
            "SimulatorKnobs",
            parameter_name=f"/tbcss/{stage}/simulator-knobs",
            string_value="{}",
            description="Failure, timeout and latency knobs of the KYC and network simulators",
        )
        # The network simulator's lines: one SSM parameter per MSISDN, written at run time.
        self.lines_prefix = f"/tbcss/{stage}/simulator/lines"
        self.lines_arn = self._arn("ssm", f"parameter{self.lines_prefix}/*")
        # Who got grant_lines / grant_notifications (infra/nag.py explains their wildcards).
        self.line_writers: list[Any] = []
        self.notification_senders: list[Any] = []
        self.escalations = encrypted_queue(self, "EscalationQueue", key=platform.key)
        self.sender_identity = ses.EmailIdentity(
            self, "SenderIdentity", identity=ses.Identity.email(sender)
        )
        environment = {
            **platform.environment,
            "KYC_KEY_ID": platform.key.key_id,
            "KYC_PEPPER_SECRET_ID": pepper_name,
            "SIMULATOR_KNOBS_PARAMETER": self.knobs.parameter_name,
            "SIMULATOR_LINES_PARAMETER_PREFIX": self.lines_prefix,
            "ESCALATION_QUEUE_URL": self.escalations.queue_url,
            "NOTIFICATION_SENDER": sender,
        }
        self.tasks = self._tasks_function(platform, environment)
        self.state_machine = self._state_machine()
        self.api = self._api_function(platform, environment)
        self._routes(platform)

    # --- functions -------------------------------------------------------------

    def _tasks_function(self, platform: Platform, environment: dict[str, str]) -> Any:
        fn = ServiceFunction(
            self,
            "Tasks",
            module="activation",
            entry="tasks",
            packaging=platform.packaging,
            environment=environment,
            timeout_seconds=30,
        ).function
        platform.table.grant_read_write_data(fn)
        platform.bus.grant_put_events_to(fn)
        platform.key.grant_decrypt(fn)  # open the sealed KYC for the provider
        platform.key.grant_encrypt(fn)  # the escalation queue is encrypted under it
        self._grant_pepper(fn)
        self.knobs.grant_read(fn)
        self.grant_lines(fn)
        self.escalations.grant_send_messages(fn)
        self.grant_notifications(fn)
        return fn

    def _api_function(self, platform: Platform, environment: dict[str, str]) -> Any:
        fn = ServiceFunction(
            self,
            "Api",
            module="activation",
            packaging=platform.packaging,
            environment={
                **environment,
                "ACTIVATION_STATE_MACHINE_ARN": self.state_machine.state_machine_arn,
            },
        ).function
        platform.table.grant_read_write_data(fn)
        platform.key.grant(fn, "kms:GenerateDataKey")  # seal KYC; it never decrypts
        self._grant_pepper(fn)
        self.state_machine.grant_start_execution(fn)
        return fn

    def grant_lines(self, fn: Any) -> None:
        """Read and write the network simulator's lines (any function that provisions,
        de-provisions or bars through the simulator needs this and the env variable)."""
        self.line_writers.append(fn)
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ssm:GetParameter", "ssm:PutParameter"],
                resources=[self.lines_arn],
            )
        )

    def grant_notifications(self, fn: Any) -> None:
        """SMS (a publish to a phone number has no resource to scope it to; topics
        are denied, so the grant cannot fan out to subscribers) and email from the
        sender identity."""
        self.notification_senders.append(fn)
        fn.add_to_role_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=["*"]))
        fn.add_to_role_policy(
            iam.PolicyStatement(
                effect=iam.Effect.DENY,
                actions=["sns:Publish"],
                resources=[self._arn("sns", "*")],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ses:SendEmail", "ses:SendRawEmail"],
                resources=[self._arn("ses", f"identity/{self.sender}")],
            )
        )

    def _grant_pepper(self, fn: Any) -> None:
        """By name (with Secrets Manager's 6-character suffix), not by the secret's
        Ref: the same policy then deploys where the secret is created out of band
        (moto's CloudFormation skips secrets; see infra/local/deploy.py)."""
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"],
                resources=[self._arn("secretsmanager", f"secret:{self.pepper_name}-??????")],
            )
        )

    def _arn(self, service: str, resource: str) -> str:
        stack = Stack.of(self)
        return f"arn:{stack.partition}:{service}:{stack.region}:{stack.account}:{resource}"

    def _routes(self, platform: Platform) -> None:
        integration = apigw.LambdaIntegration(self.api)
        root = platform.api.root
        # resource_for_path reuses /users/{user_id} if another module made it first.
        for path, method in (
            ("activate-sim", "POST"),
            ("activations/{activation_id}", "GET"),
            ("users/{user_id}", "GET"),
        ):
            root.resource_for_path(path).add_method(
                method, integration, authorizer=platform.authorizer
            )

    # --- the state machine -------------------------------------------------------

    def _state_machine(self) -> sfn.StateMachine:
        t = self.timings
        verify = self._task(Step.VERIFY_KYC, "verify_kyc")
        provision = self._task(Step.PROVISION, "provision")
        complete = self._task(Step.COMPLETE, "complete")
        notify = self._task(Step.NOTIFY, "notify")
        reject = self._task(Step.REJECT_KYC, "reject_kyc", with_error=True)
        escalate = self._task(Step.ESCALATE, "escalate", with_error=True)
        activated = sfn.Succeed(self, "Activated")

        # KYC: any failure is recorded by the task and retried once; then rejected.
        verify.add_retry(
            errors=KYC_FAILURES,
            interval=Duration.seconds(t.kyc_retry_seconds),
            max_attempts=1,
            backoff_rate=1.0,
        )
        retry_worker_failures(verify, t)
        verify.add_catch(reject, errors=KYC_FAILURES, result_path="$.error")
        verify.add_catch(escalate, errors=[ANY_ERROR], result_path="$.error")
        retry_network_order(provision, t, attempts=t.provision_attempts)
        provision.add_catch(escalate, errors=[ANY_ERROR], result_path="$.error")
        retry_worker_failures(complete, t)
        complete.add_catch(escalate, errors=[ANY_ERROR], result_path="$.error")
        notify.add_retry(
            errors=[NotificationFailed.__name__],
            interval=Duration.seconds(t.step_retry_seconds),
            max_attempts=2,
        )
        # The line is active either way; a failed notification is in the history.
        notify.add_catch(activated, errors=[ANY_ERROR], result_path="$.notify_error")
        retry_worker_failures(reject, t)
        retry_worker_failures(escalate, t)

        definition = verify.next(provision).next(complete).next(notify).next(activated)
        reject.next(sfn.Succeed(self, "Rejected"))
        escalate.next(
            sfn.Fail(self, "Escalated", error="ActivationEscalated", cause="handed to operations")
        )
        return sfn.StateMachine(
            self,
            "Workflow",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            query_language=sfn.QueryLanguage.JSON_PATH,
            timeout=Duration.days(1),
            comment="SIM activation: KYC, network provisioning, completion, notification",
            logs=workflow_logs(self, "WorkflowLogs"),
            tracing_enabled=True,
        )

    def _task(self, step: Step, task: str, *, with_error: bool = False) -> tasks.LambdaInvoke:
        payload: dict[str, Any] = {
            "task": task,
            "activation_id": sfn.JsonPath.string_at("$.activation_id"),
        }
        if with_error:
            payload["error"] = sfn.JsonPath.object_at("$.error")
        return tasks.LambdaInvoke(
            self,
            step.value,
            lambda_function=self.tasks,
            payload=sfn.TaskInput.from_object(payload),
            payload_response_only=True,
            result_path=sfn.JsonPath.DISCARD,  # every step reads the record, not the input
        )


def retry_worker_failures(task: tasks.LambdaInvoke, timings: ActivationTimings) -> None:
    """A few quick retries for what is not the step's own answer: its worker
    crashed, was throttled or timed out (every step is safe to repeat). It goes
    after a step's own retriers: Step Functions takes the first that matches."""
    task.add_retry(
        errors=[ANY_ERROR],
        interval=Duration.seconds(timings.step_retry_seconds),
        max_attempts=3,
        backoff_rate=2.0,
    )


def retry_network_order(
    task: tasks.LambdaInvoke, timings: ActivationTimings, *, attempts: int
) -> None:
    """A network order (provision, deprovision): a permanent refusal goes straight
    to the catch; a transient one backs off exponentially, and the last of
    ``attempts`` goes to the catch (an engineer); a failed worker is retried (a
    repeated order changes nothing)."""
    task.add_retry(errors=[NetworkPermanentError.__name__], max_attempts=0)
    task.add_retry(
        errors=[NetworkTransientError.__name__],
        interval=Duration.seconds(timings.provision_interval_seconds),
        max_attempts=attempts - 1,
        backoff_rate=timings.provision_backoff_rate,
        max_delay=Duration.seconds(timings.provision_max_delay_seconds),
    )
    retry_worker_failures(task, timings)
