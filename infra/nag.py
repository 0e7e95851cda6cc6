"""cdk-nag's AwsSolutions checks on the TB-CSS stack, and every finding the stack
acknowledges, each with the reason a security reviewer reads.

cdk-nag 3 is a CDK policy-validation plugin: with :func:`add_checks` (app.py does it
under ``-c nag=true``) synthesis fails on any finding not acknowledged here; the
infra tests run :func:`checks` on the synthesized stack. A finding is acknowledged
with ``Validations.of(scope).acknowledge`` on the narrowest scope it holds for.
Rules with several findings per resource (IAM4, IAM5) are acknowledged finding by
finding (``AwsSolutions-IAM5[Resource::*]``), so a new wildcard is a new finding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cdk_nag
from aws_cdk import Acknowledgment, App, Stack, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from constructs import Construct, IConstruct

from infra.audit import REPORT_KEYS
from infra.function import ServiceFunction

if TYPE_CHECKING:
    from infra.stack import TbCssStack

CONTEXT_KEY = "nag"  # cdk synth -c nag=true


@dataclass(frozen=True)
class Waiver:
    finding: str  # a rule id, or rule id[finding] for IAM4/IAM5
    reason: str
    scopes: tuple[IConstruct, ...]


def checks() -> cdk_nag.AwsSolutionsChecks:
    return cdk_nag.AwsSolutionsChecks()


def add_checks(app: App) -> None:
    """Run the checks when ``app`` synthesizes; an unacknowledged finding fails it."""
    Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))


def acknowledge(stack: TbCssStack) -> None:
    for waiver in waivers(stack):
        for scope in waiver.scopes:
            Validations.of(scope).acknowledge(
                Acknowledgment(id=waiver.finding, reason=waiver.reason)
            )


def waivers(stack: TbCssStack) -> list[Waiver]:
    return [*_platform(stack), *_modules(stack), *_iam(stack)]


def _platform(stack: TbCssStack) -> list[Waiver]:
    api = stack.platform.api
    pool = stack.node.find_child("Users")
    functions = [c for c in stack.node.find_all() if isinstance(c, ServiceFunction)]
    return [
        Waiver(
            "AwsSolutions-L1",
            "Pinned to python3.11 on purpose: the code, the dependency layer (built from "
            "requirements-lambda.lock for cp311 on arm64) and every test run on 3.11; a "
            "runtime upgrade is a deliberate, tested change.",
            tuple(functions),
        ),
        Waiver(
            "AwsSolutions-APIG2",
            "Requests are validated where their schema lives: each function's Powertools "
            "resolver checks path, query and body against pydantic models and answers 422 "
            "with details (/openapi.json is generated from the same models). A gateway "
            "validator without models would check nothing; copies of the models would drift.",
            (api,),
        ),
        Waiver(
            "AwsSolutions-APIG3",
            "No WAF web ACL in this stack yet: the stage is throttled (200 rps, burst 400), "
            "every route but two needs a verified JWT and the webhook an HMAC signature. Rate "
            "based and managed WAF rules belong to the production edge, decided with it.",
            (api.deployment_stage,),
        ),
        Waiver(
            "AwsSolutions-COG4",
            "Methods are authorized by the TOKEN authorizer, a function that verifies the "
            "Cognito-issued JWT (RS256 against the pool's JWKS, issuer, audience, expiry) and "
            "passes the pool's groups on as roles; the same authorizer serves the local "
            "runtime's issuer. The two methods without it are acknowledged under APIG4.",
            (api,),
        ),
        Waiver(
            "AwsSolutions-APIG4",
            "The liveness probe: no data and no state change behind it, it answers "
            "{status: ok, time} to uptime checks that hold no token (API.md).",
            (_resource(api, "health"),),
        ),
        Waiver(
            "AwsSolutions-APIG4",
            "The payment gateway's callback carries no bearer token: the handler verifies "
            "the HMAC-SHA256 signature over the raw body with the webhook secret before "
            "anything else, and applies each gateway transaction once (API.md).",
            (_resource(api, "payments/webhook"),),
        ),
        Waiver(
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "The AWS-managed policy AWS documents for API Gateway's account CloudWatch role: "
            "it lets API Gateway create and write its own log groups for access and "
            "execution logs, nothing else; only apigateway.amazonaws.com assumes the role.",
            (api.node.find_child("CloudWatchRole"),),
        ),
        Waiver(
            "AwsSolutions-COG2",
            "MFA is offered (OPTIONAL), not forced: one pool setting serves every "
            "subscriber and forcing it is a product decision; an owner's own block of a "
            "lost or stolen SIM needs a verified one-time password to the line.",
            (pool,),
        ),
        Waiver(
            "AwsSolutions-COG8",
            "The Plus tier (threat protection) is billed per monthly active user and "
            "subscribers count in millions; sign-in is protected by a 12-character complex "
            "password policy, optional MFA and no self sign-up; to revisit with the fraud team.",
            (pool,),
        ),
        Waiver(
            "AwsSolutions-IAM5[Resource::*]",
            "Cognito's SMS role: Cognito texts verification and MFA codes to phone numbers, "
            "which have no ARN to scope sns:Publish to; only cognito-idp, with this pool's "
            "external id, can assume the role.",
            (pool.node.find_child("smsRole"),),
        ),
    ]


def _modules(stack: TbCssStack) -> list[Waiver]:
    activation, payments, usage = stack.activation, stack.payments, stack.usage
    return [
        Waiver(
            "AwsSolutions-KDS3",
            "Encrypted under the stack's customer-managed key on purpose, not aws/kinesis: "
            "the key policy and rotation are ours, and one key covers all data at rest.",
            (usage.stream,),
        ),
        Waiver(
            "AwsSolutions-SQS3",
            "It is a dead-letter queue: the on-failure destination of the rating "
            "function's Kinesis source (cdk-nag only recognises DLQs named in a "
            "RedrivePolicy).",
            (usage.rating_dlq,),
        ),
        Waiver(
            "AwsSolutions-SQS3",
            "Read by people in operations, not by a function: nothing redelivers its "
            "messages, and a redrive after N receives would move away an escalation that "
            "was looked at N times. Messages stay 14 days.",
            (activation.escalations, payments.ops),
        ),
        Waiver(
            "AwsSolutions-SMG4",
            "Rotating the pepper changes every KYC fingerprint (duplicate-KYC detection): "
            "it is rotated by a planned re-keying of the fingerprints, not on a schedule.",
            (activation.pepper,),
        ),
        Waiver(
            "AwsSolutions-SMG4",
            "Shared with the payment gateway, which must switch at the same moment: it is "
            "rotated by arrangement with the gateway, not by a scheduled rotation function.",
            (payments.secret,),
        ),
    ]


def _iam(stack: TbCssStack) -> list[Waiver]:
    """IAM5 wildcards: in the resources CDK's grants write, and in prefixes of names
    made at run time."""
    activation, billing = stack.activation, stack.billing
    table = stack.platform.table
    workflows = [
        (activation.state_machine, activation.tasks),
        (stack.service_control.state_machine, stack.service_control.tasks),
    ]
    return [
        *(
            Waiver(
                f"AwsSolutions-IAM5[Action::kms:{action}*]",
                "Written by CDK's grants for the stack's one KMS key (key.grant_*, and the "
                "table's, queues', stream's and bucket's grants): the wildcard covers the "
                f"{action} variants, and the statement's resource is that key's ARN.",
                (stack,),
            )
            for action in ("GenerateDataKey", "ReEncrypt")
        ),
        Waiver(
            _iam5(table, f"{table.table_arn}/index/*"),
            "CDK's table grants add the table's indexes (GSI1, GSI2) as <table>/index/*: "
            "the queries need them, and the pattern names this table only.",
            (stack,),
        ),
        Waiver(
            "AwsSolutions-IAM5[Resource::*]",
            "sns:Publish to a phone number (SMS notices, one-time passwords) has no "
            "resource to scope it to; a Deny on every SNS topic in the same policy keeps "
            "the grant from reaching topics and their subscribers.",
            _roles(activation.notification_senders),
        ),
        Waiver(
            _iam5(activation, activation.lines_arn),
            "The network simulator keeps one SSM parameter per MSISDN, created at run "
            "time, under its lines prefix: the grant is Get and Put below that prefix.",
            _roles(activation.line_writers),
        ),
        Waiver(
            _iam5(billing, billing.bucket.arn_for_objects("invoices/*")),
            "Invoice PDFs are keyed invoices/<user>/<invoice>.pdf, made at run time: the "
            "grant is GetObject and PutObject under that prefix of one bucket.",
            _roles(billing.document_users),
        ),
        Waiver(
            _iam5(stack.audit, stack.audit.reports.arn_for_objects(REPORT_KEYS)),
            "Compliance reports are keyed compliance/<month>/..., made at run time: the "
            "report function may only PutObject under that prefix of one bucket.",
            _roles([stack.audit.report]),
        ),
        *_workflow_waivers(workflows),
        Waiver(
            _iam5(stack.payments, f"{stack.payments.api.function_arn}:*"),
            "grant_invoke covers the payments API function's versions and aliases "
            "(<function>:*): the simulator's webhook deliverer invokes that one function.",
            _roles([stack.payments.webhooks]),
        ),
    ]


def _workflow_waivers(workflows: Sequence[tuple[Any, Any]]) -> Iterable[Waiver]:
    for state_machine, tasks in workflows:
        yield Waiver(
            "AwsSolutions-IAM5[Resource::*]",
            "Step Functions' log delivery (logs:*LogDelivery*, resource policies) and "
            "X-Ray (xray:PutTraceSegments, ...) actions take no resource-level "
            "permissions: AWS documents them on *.",
            (state_machine,),
        )
        yield Waiver(
            _iam5(state_machine, f"{tasks.function_arn}:*"),
            "The LambdaInvoke grant covers the task function's versions and aliases "
            "(<function>:*): the workflow invokes its one task function.",
            (state_machine,),
        )


def _roles(grantees: Iterable[iam.IGrantable]) -> tuple[IConstruct, ...]:
    """The roles the grants went to: the findings are on their policies."""
    roles = tuple(grantee.grant_principal for grantee in grantees)
    if not all(isinstance(role, Construct) for role in roles):
        raise TypeError(f"not all of {roles} are roles of this stack")
    return roles  # type: ignore[return-value]


def _resource(api: apigw.RestApi, path: str) -> apigw.IResource:
    """The API resource at ``path``; an error, not a new resource, if it is gone."""
    resource: apigw.IResource | None = api.root
    for part in path.split("/"):
        resource = resource.get_resource(part) if resource else None
    if resource is None:
        raise LookupError(f"no API resource /{path} to acknowledge findings on")
    return resource


def _iam5(scope: IConstruct, resource: str) -> str:
    """The IAM5 finding cdk-nag reports for ``resource`` (its rendering of tokens)."""
    return f"AwsSolutions-IAM5[Resource::{_flatten(Stack.of(scope).resolve(resource))}]"


def _flatten(node: Any) -> str:
    """A resolved CloudFormation value as cdk-nag names it: Ref X -> <X>,
    GetAtt X.Y -> <X.Y>, joins joined."""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if "Fn::Join" in node:
        delimiter, parts = node["Fn::Join"]
        return str(delimiter).join(_flatten(part) for part in parts)
    if "Fn::GetAtt" in node:
        resource, attribute = node["Fn::GetAtt"]
        return f"<{resource}.{attribute}>"
    if "Ref" in node:
        return f"<{node['Ref']}>"
    raise ValueError(f"no cdk-nag rendering for {node!r}")
