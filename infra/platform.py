"""The resources every module stands on: key, table, bus, identity, REST API,
the access-log bucket, the timers every function reads; and the one way to make a
private bucket and a workflow's logs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.function import Packaging, ServiceFunction
from shared.auth import Role
from shared.db import GSI1, GSI1PK, GSI1SK, GSI2, GSI2PK, GSI2SK, PK, SK, TTL_ATTRIBUTE
from shared.settings import Settings
from shared.stores.sweeps import SWEEP_KEY_PREFIX

API_AUDIENCE = "tbcss-api"
GATEWAY_ERRORS = {
    apigw.ResponseType.UNAUTHORIZED: ("UNAUTHORIZED", "missing or invalid bearer token"),
    apigw.ResponseType.ACCESS_DENIED: ("FORBIDDEN", "not allowed"),
    apigw.ResponseType.THROTTLED: ("THROTTLED", "too many requests"),
    apigw.ResponseType.DEFAULT_4_XX: ("BAD_REQUEST", "$context.error.message"),
    apigw.ResponseType.DEFAULT_5_XX: ("INTERNAL_ERROR", "internal error"),
}

# Days, one value per deployment (``cdk -c invoice_due_days=10``): billing's due date
# and grace, and service control's inactivity limit and number cooling-off.
TIMERS = ("invoice_due_days", "overdue_grace_days", "inactivity_days", "msisdn_cooling_off_days")

# How the table pays for throughput (``cdk -c table_capacity=provisioned``). On-demand
# (the default) follows any burst at once. Provisioned capacity, kept
# PROVISIONED_TARGET_UTILIZATION percent used by auto scaling, costs about 40 %
# as much per unit for steady traffic like the CDR stream (bench/README.md, cost),
# but takes minutes to follow a burst; its ceiling per table and index, reads and
# writes each, is ``-c table_max_capacity_units=...``.
ON_DEMAND, PROVISIONED = "on-demand", "provisioned"
PROVISIONED_TARGET_UTILIZATION = 70
PROVISIONED_MIN_UNITS = 5
DEFAULT_MAX_CAPACITY_UNITS = 4_000


@dataclass
class Platform:
    key: kms.IKey
    table: dynamodb.Table
    bus: events.EventBus
    api: apigw.RestApi
    authorizer: apigw.TokenAuthorizer
    packaging: Packaging
    environment: dict[str, str]
    access_logs: s3.Bucket  # every bucket's server access logs


def build_platform(scope: Construct, *, stage: str, packaging: Packaging) -> Platform:
    region = Stack.of(scope).region
    key = kms.Key(
        scope,
        "DataKey",
        description="TB-CSS data at rest: table encryption and KYC envelope keys",
        enable_key_rotation=True,
        removal_policy=RemovalPolicy.RETAIN,
    )
    table = _table(scope, key, table_capacity(scope.node.try_get_context))
    # A fixed name, passed on as that literal: moto's CloudFormation resolves a Ref to
    # an AWS::Events::EventBus to the object, not its name (FIELD-NOTES).
    bus_name = f"tbcss-{stage}-events"
    bus = events.EventBus(scope, "Bus", event_bus_name=bus_name)

    pool = _user_pool(scope)
    client = pool.add_client("ApiClient", auth_flows=cognito.AuthFlow(user_srp=True))
    issuer = f"https://cognito-idp.{region}.amazonaws.com/{pool.user_pool_id}"
    environment = {
        "TABLE_NAME": table.table_name,
        "EVENT_BUS_NAME": bus_name,
        "JWT_ISSUER": issuer,
        "JWT_AUDIENCE": client.user_pool_client_id,
        "JWKS_URL": f"{issuer}/.well-known/jwks.json",
        **timer_environment(scope.node.try_get_context),
    }

    authorizer_fn = ServiceFunction(
        scope,
        "Authorizer",
        module="authorizer",
        packaging=packaging,
        environment=environment,
        memory_mb=256,
        timeout_seconds=5,
    ).function
    authorizer = apigw.TokenAuthorizer(
        scope,
        "JwtAuthorizer",
        handler=authorizer_fn,
        identity_source=apigw.IdentitySource.header("Authorization"),
        results_cache_ttl=Duration.minutes(5),
    )
    api = apigw.RestApi(
        scope,
        "Api",
        rest_api_name=f"tbcss-{stage}",
        description="TB-CSS public REST API",
        deploy_options=_stage_options(scope),
        # API Gateway writes access and execution logs with the account's CloudWatch
        # role (one per account and region; kept when the stack goes).
        cloud_watch_role=True,
        cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
        # Billing returns invoice PDFs as base64 bodies: API Gateway sends them as bytes.
        binary_media_types=["application/pdf"],
    )
    for response_type, (code, message) in GATEWAY_ERRORS.items():
        api.add_gateway_response(
            f"Gateway{code.title().replace('_', '')}{response_type.response_type}",
            type=response_type,
            templates={
                "application/json": json.dumps({"error": {"code": code, "message": message}})
            },
        )
    access_logs = _access_log_bucket(scope)
    return Platform(key, table, bus, api, authorizer, packaging, environment, access_logs)


def grant_sweep_checkpoints(table: dynamodb.ITable, function: iam.IGrantable) -> None:
    """A daily sweep reads its checkpoint and moves it (shared/stores/sweeps.py):
    GetItem and UpdateItem on ``SWEEP#`` items, nothing else of the table (and
    the table's key for the write, as CDK's write grants give it)."""
    if table.encryption_key is not None:
        table.encryption_key.grant_encrypt_decrypt(function)
    function.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["dynamodb:GetItem", "dynamodb:UpdateItem"],
            resources=[table.table_arn],
            conditions={
                "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{SWEEP_KEY_PREFIX}*"]}
            },
        )
    )


def timer_environment(context: Callable[[str], Any]) -> dict[str, str]:
    """The timers as environment variables (``INACTIVITY_DAYS``...): the CDK context's
    values, or the settings' defaults. A bad value fails the synth, not a function."""
    return {name.upper(): str(_timer_days(name, context(name))) for name in TIMERS}


def _timer_days(name: str, value: Any) -> int:
    field = Settings.model_fields[name]
    if value is None:
        return int(field.default)
    (minimum,) = (int(limit.ge) for limit in field.metadata if hasattr(limit, "ge"))
    days = _whole_number(value)
    if days is None or days < minimum:
        raise ValueError(
            f"CDK context {name}={value!r}: must be a whole number of days, at least {minimum}"
        )
    return days


def _whole_number(value: Any) -> int | None:
    """An int, or a string of one (``-c`` hands the app strings); not a bool or a float."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    return None


def private_bucket(
    scope: Construct, construct_id: str, *, platform: Platform, **props: Any
) -> s3.Bucket:
    """Encrypted under the stack's key, no public access, TLS only, versioned,
    retained, its server access logs in the platform's log bucket."""
    return s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.KMS,
        encryption_key=platform.key,
        bucket_key_enabled=True,  # one KMS request per bucket key, not per object
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        removal_policy=RemovalPolicy.RETAIN,
        server_access_logs_bucket=platform.access_logs,
        server_access_logs_prefix=f"{_path_in_stack(scope)}{construct_id}/",
        **props,
    )


def _path_in_stack(scope: Construct) -> str:
    """``Billing/`` for the billing construct: one log prefix per bucket."""
    relative = scope.node.path.removeprefix(Stack.of(scope).node.path).strip("/")
    return f"{relative}/" if relative else ""


def _access_log_bucket(scope: Construct) -> s3.Bucket:
    # SSE-S3, not the stack's key: S3 log delivery documents SSE-S3 as the only
    # default encryption it writes under. Access logs hold requests, not documents.
    return s3.Bucket(
        scope,
        "AccessLogs",
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        enforce_ssl=True,
        # A year, as the API's access logs.
        lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
        removal_policy=RemovalPolicy.RETAIN,
    )


def workflow_logs(scope: Construct, construct_id: str) -> sfn.LogOptions:
    """Every event of every execution, without inputs and outputs (they carry ids
    and error messages, which may name a subscriber)."""
    log_group = logs.LogGroup(
        scope,
        construct_id,
        retention=logs.RetentionDays.THREE_MONTHS,
        removal_policy=RemovalPolicy.DESTROY,
    )
    return sfn.LogOptions(
        destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False
    )


def _stage_options(scope: Construct) -> apigw.StageOptions:
    access_logs = logs.LogGroup(
        scope,
        "ApiAccessLogs",
        # A year, as PCI DSS asks of audit trails (the API takes payments).
        retention=logs.RetentionDays.ONE_YEAR,
        removal_policy=RemovalPolicy.RETAIN,
    )
    return apigw.StageOptions(
        stage_name="v1",
        throttling_rate_limit=200,
        throttling_burst_limit=400,
        access_log_destination=apigw.LogGroupLogDestination(access_logs),
        access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
            caller=True,
            http_method=True,
            ip=True,
            protocol=True,
            request_time=True,
            resource_path=True,
            response_length=True,
            status=True,
            user=True,
        ),
        # Errors only, and never bodies: requests carry KYC numbers and card tokens.
        logging_level=apigw.MethodLoggingLevel.ERROR,
        data_trace_enabled=False,
    )


@dataclass(frozen=True)
class TableCapacity:
    mode: str
    max_units: int  # provisioned only


def table_capacity(context: Callable[[str], Any]) -> TableCapacity:
    """The table's capacity mode from the CDK context; a bad value fails the synth."""
    mode = context("table_capacity") or ON_DEMAND
    if mode not in (ON_DEMAND, PROVISIONED):
        raise ValueError(
            f"CDK context table_capacity={mode!r}: must be {ON_DEMAND!r} or {PROVISIONED!r}"
        )
    value = context("table_max_capacity_units")
    units = DEFAULT_MAX_CAPACITY_UNITS if value is None else _whole_number(value)
    if units is None or units < PROVISIONED_MIN_UNITS:
        raise ValueError(
            f"CDK context table_max_capacity_units={value!r}: must be a whole number, "
            f"at least {PROVISIONED_MIN_UNITS}"
        )
    return TableCapacity(mode, units)


def _table(scope: Construct, key: kms.IKey, capacity: TableCapacity) -> dynamodb.Table:
    provisioned = capacity.mode == PROVISIONED
    start = PROVISIONED_MIN_UNITS if provisioned else None
    # Table, not TableV2: moto's CloudFormation cannot deploy AWS::DynamoDB::GlobalTable.
    table = dynamodb.Table(
        scope,
        "Table",
        partition_key=dynamodb.Attribute(name=PK, type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name=SK, type=dynamodb.AttributeType.STRING),
        billing_mode=(
            dynamodb.BillingMode.PROVISIONED
            if provisioned
            else dynamodb.BillingMode.PAY_PER_REQUEST
        ),
        read_capacity=start,
        write_capacity=start,
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=key,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        time_to_live_attribute=TTL_ATTRIBUTE,
        removal_policy=RemovalPolicy.RETAIN,
    )
    for name, pk, sk in ((GSI1, GSI1PK, GSI1SK), (GSI2, GSI2PK, GSI2SK)):
        table.add_global_secondary_index(
            index_name=name,
            partition_key=dynamodb.Attribute(name=pk, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=sk, type=dynamodb.AttributeType.STRING),
            read_capacity=start,
            write_capacity=start,
        )
    if provisioned:
        _auto_scale(table, capacity.max_units)
    return table


def _auto_scale(table: dynamodb.Table, max_units: int) -> None:
    """Reads and writes of the table and of each index follow the load."""
    limits = {"min_capacity": PROVISIONED_MIN_UNITS, "max_capacity": max_units}
    scalings = [table.auto_scale_read_capacity(**limits), table.auto_scale_write_capacity(**limits)]
    for index in (GSI1, GSI2):
        scalings.append(table.auto_scale_global_secondary_index_read_capacity(index, **limits))
        scalings.append(table.auto_scale_global_secondary_index_write_capacity(index, **limits))
    for scaling in scalings:
        scaling.scale_on_utilization(target_utilization_percent=PROVISIONED_TARGET_UTILIZATION)


def _user_pool(scope: Construct) -> cognito.UserPool:
    pool = cognito.UserPool(
        scope,
        "Users",
        self_sign_up_enabled=False,
        sign_in_aliases=cognito.SignInAliases(email=True, phone=True),
        mfa=cognito.Mfa.OPTIONAL,
        password_policy=cognito.PasswordPolicy(
            min_length=12,
            require_lowercase=True,
            require_uppercase=True,
            require_digits=True,
            require_symbols=True,
        ),
        removal_policy=RemovalPolicy.RETAIN,
    )
    for role in (Role.SUBSCRIBER, Role.AGENT, Role.ADMIN):
        cognito.CfnUserPoolGroup(
            scope, f"Group{role.value.title()}", user_pool_id=pool.user_pool_id, group_name=role
        )
    return pool
