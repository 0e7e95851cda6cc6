"""The one way tests build what API Gateway (REST, Lambda proxy) sends a handler."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, cast

from aws_lambda_powertools.utilities.typing import LambdaContext

API_ID = "abc123"
STAGE = "v1"
ACCOUNT = "123456789012"
REGION = "ap-south-1"


@dataclass(frozen=True)
class Caller:
    """Who the authorizer said is calling (its context: flat strings only)."""

    sub: str
    roles: str = "subscriber"

    def authorizer_context(self) -> dict[str, Any]:
        return {"principalId": self.sub, "sub": self.sub, "roles": self.roles}


def api_event(
    method: str,
    path: str,
    *,
    resource: str | None = None,
    caller: Caller | None = None,
    body: Any = None,
    raw_body: str | None = None,
    idempotency_key: str | None = None,
    query: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A REST proxy event. ``body`` is JSON-encoded; ``raw_body`` is sent as is.

    ``caller=None`` means no authorizer ran (an open route, or a misconfiguration).
    """
    all_headers = {
        "Accept": "application/json",
        "Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "X-Forwarded-Proto": "https",
        **({"Content-Type": "application/json"} if body is not None or raw_body else {}),
        **({"Authorization": "Bearer test-token"} if caller else {}),
        **({"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}),
        **(headers or {}),
    }
    encoded = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
    resource = resource or path
    request_context: dict[str, Any] = {
        "accountId": ACCOUNT,
        "apiId": API_ID,
        "stage": STAGE,
        "requestId": str(uuid.uuid4()),
        "resourcePath": resource,
        "httpMethod": method,
        "path": f"/{STAGE}{path}",
        "identity": {"sourceIp": "203.0.113.10", "userAgent": "pytest"},
    }
    if caller is not None:
        request_context["authorizer"] = caller.authorizer_context()
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": (
            {name: [value] for name, value in query.items()} if query else None
        ),
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": request_context,
        "body": encoded,
        "isBase64Encoded": False,
    }


def token_event(token: str | None, *, method: str = "GET", path: str = "plans") -> dict[str, Any]:
    """What API Gateway passes a TOKEN authorizer."""
    event: dict[str, Any] = {
        "type": "TOKEN",
        "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/{method}/{path}",
    }
    if token is not None:
        event["authorizationToken"] = token
    return event


@dataclass
class FakeLambdaContext:
    """The parts of ``LambdaContext`` that Powertools reads."""

    function_name: str = "tbcss-test-fn"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    remaining_millis: int = 10_000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis


def lambda_context(function_name: str) -> LambdaContext:
    return cast(LambdaContext, FakeLambdaContext(function_name=function_name))


@dataclass(frozen=True)
class HttpResult:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("code"))
        return None


def parse_response(response: dict[str, Any]) -> HttpResult:
    raw = response.get("body")
    body = json.loads(raw) if raw else None
    headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items() if v}
    headers.update(response.get("headers") or {})
    return HttpResult(int(response["statusCode"]), body, headers)
