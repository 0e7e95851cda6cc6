"""The local API Gateway: proxy events, TOKEN authorizers, gateway responses."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from infra.local.deploy import RouteSpec
from infra.local.gateway import Router
from infra.local.runtime import LocalRuntime

ALLOW = {"Authorization": "Bearer allow"}


def get(runtime: LocalRuntime, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(runtime.api_url + path, timeout=30, **kwargs)


def test_event_for_a_route_with_a_path_parameter(runtime: LocalRuntime) -> None:
    response = get(runtime, "/items/abc-1?tag=x&tag=y", headers={**ALLOW, "X-Trace": "t1"})

    assert response.status_code == 200
    event = response.json()
    assert event["resource"] == "/items/{item_id}"
    assert event["path"] == "/items/abc-1"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"item_id": "abc-1"}
    assert event["queryStringParameters"] == {"tag": "y"}
    assert event["multiValueQueryStringParameters"] == {"tag": ["x", "y"]}
    assert event["headers"]["X-Trace"] == "t1"
    assert event["multiValueHeaders"]["X-Trace"] == ["t1"]
    assert event["stageVariables"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["resourcePath"] == "/items/{item_id}"
    assert context["httpMethod"] == "GET"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["requestId"] == response.headers["x-amzn-RequestId"]
    assert context["stage"]
    assert context["authorizer"]["principalId"] == "user-1"
    assert context["authorizer"]["sub"] == "user-1"
    assert context["authorizer"]["roles"] == "subscriber"


def test_the_response_carries_the_handlers_headers(runtime: LocalRuntime) -> None:
    response = get(runtime, "/items/1", headers=ALLOW)

    assert response.headers["Content-Type"] == "application/json"
    assert response.raw.headers.getlist("X-Multi") == ["a", "b"]


def test_body_reaches_the_handler(runtime: LocalRuntime) -> None:
    response = requests.post(runtime.api_url + "/items", data='{"a": 1}', headers=ALLOW, timeout=30)

    assert json.loads(response.json()["body"]) == {"a": 1}


def test_a_route_without_authorizer_has_no_authorizer_context(runtime: LocalRuntime) -> None:
    event = get(runtime, "/public").json()

    assert "authorizer" not in event["requestContext"]
    assert event["pathParameters"] is None


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nonsense"}])
def test_missing_or_invalid_token_is_401_in_our_error_shape(
    runtime: LocalRuntime, headers: dict[str, str]
) -> None:
    response = get(runtime, "/items/1", headers=headers)

    assert response.status_code == 401
    assert response.json() == {"error": {"code": "UNAUTHORIZED", "message": "gateway says no"}}


def test_a_deny_policy_is_403(runtime: LocalRuntime) -> None:
    response = get(runtime, "/items/1", headers={"Authorization": "Bearer deny"})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"


def test_unknown_route_is_404_and_wrong_method_405(runtime: LocalRuntime) -> None:
    missing = get(runtime, "/nope")
    wrong = requests.delete(runtime.api_url + "/items/1", timeout=30)

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert wrong.headers["Allow"] == "GET"


def test_swagger_ui_is_served_offline(runtime: LocalRuntime) -> None:
    page = get(runtime, "/swagger")
    bundle = get(runtime, "/swagger/swagger-ui-bundle.min.js")

    assert page.status_code == 200
    assert "/swagger/swagger-ui-bundle.min.js" in page.text
    assert bundle.status_code == 200
    assert len(bundle.content) > 100_000


def test_clock_control_endpoint_moves_time(runtime: LocalRuntime) -> None:
    before = get(runtime, "/_local/clock").json()["offset_seconds"]

    answer = requests.post(
        runtime.api_url + "/_local/clock/advance", json={"seconds": 3600}, timeout=30
    ).json()

    assert answer["offset_seconds"] == pytest.approx(before + 3600)


def _route(path: str, method: str = "GET") -> RouteSpec:
    return RouteSpec(path, method, "NONE", None, "fn", f"{method}{path}")


def test_router_prefers_literal_segments_over_parameters() -> None:
    router = Router([_route("/plans/{plan_id}"), _route("/plans/current"), _route("/{proxy+}")])

    literal = router.match("/plans/current", "GET")
    parameter = router.match("/plans/P1", "GET")
    greedy = router.match("/a/b/c", "GET")

    assert not isinstance(literal, str)
    assert literal
    assert literal.route.path == "/plans/current"
    assert not isinstance(parameter, str)
    assert parameter
    assert parameter.path_parameters == {"plan_id": "P1"}
    assert not isinstance(greedy, str)
    assert greedy
    assert greedy.path_parameters == {"proxy": "a/b/c"}
