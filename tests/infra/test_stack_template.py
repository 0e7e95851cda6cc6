"""CDK assertions on the synthesized TB-CSS stack (infra/)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from shared import db
from shared.errors import Unauthorized
from tests.infra.conftest import STAGE

Resources = dict[str, dict[str, Any]]


def of_type(resources: Resources, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r.get("Properties", {}) for name, r in resources.items() if r["Type"] == kind}


def function_named(resources: Resources, handler: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (name, props)
        for name, props in of_type(resources, "AWS::Lambda::Function").items()
        if props.get("Handler") == handler
    ]
    return found


# --- table -----------------------------------------------------------------------


def test_one_table_with_keys_indexes_ttl_pitr_and_cmk(template: Any) -> None:
    template.resource_count_is("AWS::DynamoDB::Table", 1)
    template.resource_count_is("AWS::DynamoDB::GlobalTable", 0)  # moto cannot deploy TableV2

    def gsi(name: str) -> Any:
        return Match.object_like(
            {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": f"{name}PK", "KeyType": "HASH"},
                    {"AttributeName": f"{name}SK", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        )

    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [
                {"AttributeName": "PK", "KeyType": "HASH"},
                {"AttributeName": "SK", "KeyType": "RANGE"},
            ],
            "BillingMode": "PAY_PER_REQUEST",
            "GlobalSecondaryIndexes": Match.array_with([gsi("GSI1"), gsi("GSI2")]),
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {
                "SSEEnabled": True,
                "SSEType": "KMS",
                "KMSMasterKeyId": {"Fn::GetAtt": [Match.string_like_regexp("^DataKey"), "Arn"]},
            },
        },
    )


def test_the_table_key_is_a_rotating_cmk_kept_on_delete(template: Any) -> None:
    template.has_resource(
        "AWS::KMS::Key",
        {"Properties": Match.object_like({"EnableKeyRotation": True}), "DeletionPolicy": "Retain"},
    )
    template.has_resource("AWS::DynamoDB::Table", {"DeletionPolicy": "Retain"})


def test_table_attribute_definitions_match_the_code(resources: Resources) -> None:
    (table,) = of_type(resources, "AWS::DynamoDB::Table").values()
    defined = {a["AttributeName"] for a in table["AttributeDefinitions"]}
    assert defined == {db.PK, db.SK, db.GSI1PK, db.GSI1SK, db.GSI2PK, db.GSI2SK}
    assert table["TimeToLiveSpecification"]["AttributeName"] == db.TTL_ATTRIBUTE


# --- API ----------------------------------------------------------------------------


def test_one_rest_api(template: Any) -> None:
    template.resource_count_is("AWS::ApiGateway::RestApi", 1)


def test_token_authorizer_backed_by_the_authorizer_function(
    template: Any, resources: Resources
) -> None:
    fn_name, _ = function_named(resources, "functions.authorizer.handler.handler")
    template.resource_count_is("AWS::ApiGateway::Authorizer", 1)
    (authorizer,) = of_type(resources, "AWS::ApiGateway::Authorizer").values()
    assert authorizer["Type"] == "TOKEN"
    assert authorizer["IdentitySource"] == "method.request.header.Authorization"
    assert {"Fn::GetAtt": [fn_name, "Arn"]} in _walk(authorizer["AuthorizerUri"])


def _walk(node: Any) -> list[Any]:
    """Every dict and list nested in a CloudFormation expression."""
    found = [node]
    if isinstance(node, dict):
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


def _routes(resources: Resources) -> dict[str, dict[str, Any]]:
    """``"GET /plans/{plan_id}" -> method properties``, paths rebuilt from the resources."""
    paths: dict[str, str] = {}

    def path_of(name: str) -> str:
        if name not in paths:
            props = resources[name]["Properties"]
            parent = props["ParentId"]
            prefix = "" if "Fn::GetAtt" in parent else path_of(parent["Ref"])
            paths[name] = f"{prefix}/{props['PathPart']}"
        return paths[name]

    return {
        f"{props['HttpMethod']} {path_of(props['ResourceId']['Ref'])}": props
        for props in of_type(resources, "AWS::ApiGateway::Method").values()
    }


def test_the_plans_routes_exist(resources: Resources) -> None:
    assert set(_routes(resources)) >= {
        "GET /health",
        "GET /plans",
        "GET /plans/{plan_id}",
        "POST /subscribe",
        "POST /upgrade",
    }


# API.md: no bearer token on the health check and the payment webhook (HMAC-signed).
UNAUTHENTICATED = frozenset({"GET /health", "POST /payments/webhook"})


def test_every_route_but_health_and_the_webhook_requires_the_authorizer(
    resources: Resources,
) -> None:
    (authorizer_name,) = of_type(resources, "AWS::ApiGateway::Authorizer")
    routes = _routes(resources)
    for route in UNAUTHENTICATED:
        assert routes[route]["AuthorizationType"] == "NONE", route
    for route, props in routes.items():
        if route in UNAUTHENTICATED:
            continue
        assert props["AuthorizationType"] == "CUSTOM", route
        assert props["AuthorizerId"] == {"Ref": authorizer_name}, route


PLANS_ROUTES = frozenset(
    {"GET /health", "GET /plans", "GET /plans/{plan_id}", "POST /subscribe", "POST /upgrade"}
)


PLANS_ROUTES = {
    "GET /health",
    "GET /plans",
    "GET /plans/{plan_id}",
    "POST /subscribe",
    "POST /upgrade",
}


def test_routes_proxy_to_the_plans_function(resources: Resources) -> None:
    fn_name, _ = function_named(resources, "functions.plans.handler.handler")
    for route, props in _routes(resources).items():
        if route not in PLANS_ROUTES:
            continue  # other modules' routes (their own tests check them)
        if route not in PLANS_ROUTES:
            continue  # another module's route, asserted in its own test module
        assert props["Integration"]["Type"] == "AWS_PROXY", route
        assert {"Fn::GetAtt": [fn_name, "Arn"]} in _walk(props["Integration"]["Uri"]), route


@pytest.mark.parametrize(
    ("response_type", "code"),
    [
        ("UNAUTHORIZED", Unauthorized.code),
        ("ACCESS_DENIED", "FORBIDDEN"),
        ("THROTTLED", "THROTTLED"),
        ("DEFAULT_5XX", "INTERNAL_ERROR"),
    ],
)
def test_gateway_errors_use_the_api_error_shape(
    resources: Resources, response_type: str, code: str
) -> None:
    (response,) = [
        props
        for props in of_type(resources, "AWS::ApiGateway::GatewayResponse").values()
        if props["ResponseType"] == response_type
    ]
    body = json.loads(response["ResponseTemplates"]["application/json"])
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


# --- functions and the bus -------------------------------------------------------------


@pytest.mark.parametrize("module", ["plans", "authorizer"])
def test_functions_run_python_311_with_the_table_and_bus(resources: Resources, module: str) -> None:
    _, fn = function_named(resources, f"functions.{module}.handler.handler")
    assert fn["Runtime"] == "python3.11"
    variables = fn["Environment"]["Variables"]
    (table_name,) = of_type(resources, "AWS::DynamoDB::Table")
    assert variables["TABLE_NAME"] == {"Ref": table_name}
    (bus,) = of_type(resources, "AWS::Events::EventBus").values()
    assert variables["EVENT_BUS_NAME"] == bus["Name"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == module
    for setting in ("JWT_ISSUER", "JWT_AUDIENCE", "JWKS_URL"):
        assert variables[setting], setting


def test_the_event_bus_has_a_fixed_name(resources: Resources) -> None:
    (bus,) = of_type(resources, "AWS::Events::EventBus").values()
    assert bus["Name"] == f"tbcss-{STAGE}-events"  # a literal, not a token


# --- least privilege ---------------------------------------------------------------------


def role_statements(resources: Resources, role_name: str) -> list[dict[str, Any]]:
    """Every statement of a role: its inline policies and the policies attached to it."""
    role = resources[role_name]["Properties"]
    statements: list[dict[str, Any]] = []
    for inline in role.get("Policies", []):
        statements += inline["PolicyDocument"]["Statement"]
    for policy in of_type(resources, "AWS::IAM::Policy").values():
        if {"Ref": role_name} in policy.get("Roles", []):
            statements += policy["PolicyDocument"]["Statement"]
    return statements


def _statements_of(resources: Resources, function_handler: str) -> list[dict[str, Any]]:
    """What a function's role is allowed: every role also carries the audit trail's
    Deny (tests/infra/test_audit_template.py)."""
    _, fn = function_named(resources, function_handler)
    role_name = fn["Role"]["Fn::GetAtt"][0]
    # Its own log group, not every one.
    assert resources[role_name]["Properties"].get("ManagedPolicyArns", []) == []
    statements = role_statements(resources, role_name)
    return [statement for statement in statements if statement.get("Effect") == "Allow"]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _resources(statement: dict[str, Any]) -> list[Any]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def test_the_authorizer_cannot_touch_data_or_events(resources: Resources) -> None:
    for statement in _statements_of(resources, "functions.authorizer.handler.handler"):
        for action in _actions(statement):
            assert not action.startswith(("dynamodb:", "events:", "kms:")), action


def test_the_plans_function_may_use_only_its_table_and_bus(resources: Resources) -> None:
    (table_name,) = of_type(resources, "AWS::DynamoDB::Table")
    (bus_name,) = of_type(resources, "AWS::Events::EventBus")
    table_arn = {"Fn::GetAtt": [table_name, "Arn"]}
    table_indexes = {"Fn::Join": ["", [table_arn, "/index/*"]]}
    seen = set()
    for statement in _statements_of(resources, "functions.plans.handler.handler"):
        assert statement["Effect"] == "Allow"
        for action in _actions(statement):
            assert action != "*"
            service = action.split(":")[0]
            seen.add(service)
            for resource in _resources(statement):
                assert resource != "*", action
                if service == "dynamodb":
                    assert resource in (table_arn, table_indexes), action
                elif service == "events":
                    assert action == "events:PutEvents"
                    assert resource == {"Fn::GetAtt": [bus_name, "Arn"]}
    assert {"dynamodb", "events"} <= seen


def test_no_lambda_can_delete_the_table_or_manage_the_bus(resources: Resources) -> None:
    for fn in of_type(resources, "AWS::Lambda::Function").values():
        for statement in _statements_of(resources, fn["Handler"]):
            for action in _actions(statement):
                assert action not in {"dynamodb:DeleteTable", "dynamodb:*", "events:*"}
