"""The local API Gateway: REST proxy events (payload 1.0) from HTTP requests,
TOKEN authorizers and gateway responses read from the synthesized template,
plus the merged OpenAPI document, Swagger UI and the runtime's control endpoints.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from infra.local.contracts import Invoker
from infra.local.deploy import Deployment, FunctionSpec, GatewayResponseSpec, RouteSpec
from infra.local.meter import UsageMeter
from infra.local.serving import LOOPBACK, ThreadedServer
from infra.local.workers import LocalSettings, worker_environment

logger = logging.getLogger("tbcss.local.gateway")

JSON = "application/json"
LOCAL_API_ID = "local"
SWAGGER_ASSETS = ("swagger-ui-bundle.min.js", "swagger-ui.min.css")
DEFAULT_STATUS = {
    "UNAUTHORIZED": 401,
    "ACCESS_DENIED": 403,
    "THROTTLED": 429,
    "DEFAULT_4XX": 400,
    "DEFAULT_5XX": 500,
}
BEARER_SCHEME = "bearerAuth"
UNKNOWN_ROUTE = "(no route)"  # how the meter labels requests matching no route


class ControlPlane(Protocol):
    """What the runtime exposes under /_local for the CLI."""

    def info(self) -> dict[str, Any]: ...

    def clock_show(self) -> dict[str, Any]: ...

    def clock_advance(self, seconds: float) -> dict[str, Any]: ...


# --- routing -----------------------------------------------------------------


@dataclass(frozen=True)
class RouteMatch:
    route: RouteSpec
    path_parameters: dict[str, str]


class Router:
    """Matches request paths to the template's resources the way API Gateway does:
    a literal segment beats a ``{param}``, which beats a greedy ``{proxy+}``."""

    def __init__(self, routes: Iterable[RouteSpec]) -> None:
        self._routes = list(routes)

    def match(self, path: str, method: str) -> RouteMatch | str | None:
        """A match, ``None`` for an unknown path, or "method" for a known path
        without that method."""
        segments = _segments(path)
        candidates = []
        for route in self._routes:
            parameters = _match_segments(_segments(route.path), segments)
            if parameters is not None:
                candidates.append((_specificity(route.path), route, parameters))
        if not candidates:
            return None
        best = max(score for score, _, _ in candidates)
        on_path = [(route, params) for score, route, params in candidates if score == best]
        for route, params in on_path:
            if route.http_method in (method, "ANY"):
                return RouteMatch(route, params)
        return "method"

    def methods_for(self, path: str) -> list[str]:
        segments = _segments(path)
        return sorted(
            {
                r.http_method
                for r in self._routes
                if _match_segments(_segments(r.path), segments) is not None
            }
        )


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def _specificity(template: str) -> tuple[int, int]:
    segments = _segments(template)
    literal = sum(1 for s in segments if not s.startswith("{"))
    greedy = sum(1 for s in segments if s.endswith("+}"))
    return (literal, -greedy)


def _match_segments(template: list[str], actual: list[str]) -> dict[str, str] | None:
    parameters: dict[str, str] = {}
    for index, part in enumerate(template):
        if part.startswith("{") and part.endswith("+}"):
            if index >= len(actual):
                return None
            parameters[part[1:-2]] = "/".join(actual[index:])
            return parameters
        if index >= len(actual):
            return None
        if part.startswith("{") and part.endswith("}"):
            parameters[part[1:-1]] = actual[index]
        elif part != actual[index]:
            return None
    return parameters if len(template) == len(actual) else None


# --- events --------------------------------------------------------------------


def proxy_event(
    request: Request,
    match: RouteMatch,
    *,
    deployment: Deployment,
    request_id: str,
    authorizer_context: dict[str, Any] | None,
) -> dict[str, Any]:
    """The API Gateway REST proxy event (payload format 1.0) for one request."""
    stage = deployment.stage_name or "local"
    headers = _multi(request.headers.items())
    query = _multi(request.args.items(multi=True))
    body, is_base64 = _body(request.get_data())
    now = datetime.now(UTC)
    request_context: dict[str, Any] = {
        "accountId": deployment.account,
        "apiId": LOCAL_API_ID,
        "resourceId": match.route.method_logical_id,
        "resourcePath": match.route.path,
        "httpMethod": request.method,
        "path": f"/{stage}{request.path}",
        "stage": stage,
        "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        "requestId": request_id,
        "extendedRequestId": request_id,
        "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "requestTimeEpoch": int(now.timestamp() * 1000),
        "domainName": request.host,
        "identity": {
            "sourceIp": request.remote_addr or "127.0.0.1",
            "userAgent": request.headers.get("User-Agent"),
            "accountId": None,
            "caller": None,
            "user": None,
            "userArn": None,
            "apiKey": None,
            "accessKey": None,
            "cognitoIdentityId": None,
            "cognitoIdentityPoolId": None,
            "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None,
        },
    }
    if authorizer_context is not None:
        request_context["authorizer"] = authorizer_context
    return {
        "resource": match.route.path,
        "path": request.path,
        "httpMethod": request.method,
        "headers": {name: values[-1] for name, values in headers.items()} or None,
        "multiValueHeaders": headers or None,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": match.path_parameters or None,
        "stageVariables": None,
        "requestContext": request_context,
        "body": body,
        "isBase64Encoded": is_base64,
    }


def _multi(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    return values


def _body(raw: bytes) -> tuple[str | None, bool]:
    if not raw:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), True


def method_arn(deployment: Deployment, method: str, path: str) -> str:
    stage = deployment.stage_name or "local"
    return (
        f"arn:aws:execute-api:{deployment.region}:{deployment.account}:"
        f"{LOCAL_API_ID}/{stage}/{method}{path}"
    )


# --- authorizers -----------------------------------------------------------------


class Rejected(Exception):
    def __init__(self, response_type: str) -> None:
        super().__init__(response_type)
        self.response_type = response_type


class TokenAuthorizers:
    """Runs TOKEN authorizers and caches their decisions per token, as API Gateway does."""

    def __init__(self, invoker: Invoker, deployment: Deployment) -> None:
        self._invoker = invoker
        self._deployment = deployment
        self._cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def authorize(self, route: RouteSpec, request: Request) -> dict[str, Any]:
        """The ``requestContext.authorizer`` value, or :class:`Rejected`."""
        authorizer = route.authorizer
        if authorizer is None or authorizer.function_name is None:
            raise Rejected("DEFAULT_5XX")  # COGNITO/IAM types are not served locally
        token = request.headers.get(authorizer.identity_header or "Authorization")
        if not token:
            raise Rejected("UNAUTHORIZED")  # API Gateway does not call the function then
        arn = method_arn(self._deployment, request.method, request.path)
        policy = self._policy(
            authorizer.logical_id,
            authorizer.function_name,
            token,
            arn,
            authorizer.result_ttl_seconds,
        )
        if not _allows(policy.get("policyDocument", {}), arn):
            raise Rejected("ACCESS_DENIED")
        context = dict((policy.get("context") or {}).items())
        return {"principalId": policy.get("principalId"), **context, "integrationLatency": 0}

    def _policy(
        self, key: str, function_name: str, token: str, arn: str, ttl_seconds: int
    ) -> dict[str, Any]:
        cache_key = (key, token)
        with self._lock:
            cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        event = {"type": "TOKEN", "authorizationToken": token, "methodArn": arn}
        result = self._invoker.invoke(function_name, event)
        if not result.ok:
            message = str((result.payload or {}).get("errorMessage", ""))
            raise Rejected("UNAUTHORIZED" if message == "Unauthorized" else "DEFAULT_5XX")
        if not isinstance(result.payload, dict) or "policyDocument" not in result.payload:
            raise Rejected("DEFAULT_5XX")
        if ttl_seconds > 0:
            with self._lock:
                self._cache[cache_key] = (time.monotonic() + ttl_seconds, result.payload)
        return result.payload


def _allows(document: dict[str, Any], arn: str) -> bool:
    """IAM evaluation in small: an explicit Deny wins, else an Allow must match."""
    allowed = False
    for statement in _as_list(document.get("Statement")):
        actions = _as_list(statement.get("Action"))
        if not any(fnmatch.fnmatchcase("execute-api:Invoke", a) for a in actions):
            continue
        if any(
            fnmatch.fnmatchcase(arn, resource) for resource in _as_list(statement.get("Resource"))
        ):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# --- OpenAPI ---------------------------------------------------------------------

_OPENAPI_SCRIPT = """
import importlib, sys
module = importlib.import_module(sys.argv[1])
sys.stdout.write(module.app.get_openapi_json_schema())
"""


class OpenApiDocument:
    """The API's OpenAPI document, merged from every API function's Powertools
    resolver (``app`` in its handler module). Each module is imported in a
    short-lived subprocess with the function's environment, like a worker."""

    def __init__(self, deployment: Deployment, settings: LocalSettings) -> None:
        self._deployment = deployment
        self._settings = settings
        self._document: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def get(self, server_url: str) -> dict[str, Any]:
        with self._lock:
            if self._document is None:
                self._document = self._merge()
        return {**self._document, "servers": [{"url": server_url}]}

    def warm_up(self) -> None:
        threading.Thread(target=self.get, args=("",), daemon=True, name="openapi").start()

    def _merge(self) -> dict[str, Any]:
        routes = self._deployment.routes
        names = sorted({r.integration_function for r in routes if r.integration_function})
        functions = [self._deployment.function(name) for name in names]
        with ThreadPoolExecutor(max_workers=max(1, len(functions))) as pool:
            documents = list(pool.map(self._function_document, functions))
        merged: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": "TB-CSS API (local)", "version": "1.0.0"},
            "paths": {},
            "components": {
                "schemas": {},
                "securitySchemes": {
                    BEARER_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                },
            },
        }
        for document in documents:
            merged["components"]["schemas"].update(
                document.get("components", {}).get("schemas", {})
            )
            for path, operations in document.get("paths", {}).items():
                merged["paths"].setdefault(path, {}).update(operations)
        _keep_served_operations(merged, routes)
        return merged

    def _function_document(self, spec: FunctionSpec) -> dict[str, Any]:
        module = spec.handler.rpartition(".")[0]
        completed = subprocess.run(  # noqa: S603 - our interpreter and script
            [sys.executable, "-c", _OPENAPI_SCRIPT, module],
            cwd=spec.code_dir,
            env=worker_environment(spec, self._settings),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if completed.returncode != 0:
            logger.info("no OpenAPI from %s: %s", spec.logical_id, completed.stderr[-300:])
            return {}
        document: dict[str, Any] = json.loads(completed.stdout)
        return document


def _keep_served_operations(document: dict[str, Any], routes: list[RouteSpec]) -> None:
    """Only what the gateway serves; authenticated operations need the bearer token."""
    served = {(r.path, r.http_method.lower()): r for r in routes}
    for path in list(document["paths"]):
        operations = document["paths"][path]
        for method in list(operations):
            route = served.get((path, method))
            if route is None:
                del operations[method]
            elif route.authorization_type != "NONE":
                operations[method]["security"] = [{BEARER_SCHEME: []}]
        if not operations:
            del document["paths"][path]


def swagger_html(document: dict[str, Any]) -> str:
    """Powertools' Swagger UI page, its assets served from the installed package
    (no internet needed), showing the merged document."""
    from aws_lambda_powertools.event_handler.openapi.swagger_ui import (  # noqa: PLC0415
        generate_swagger_html,  # Powertools loads only when someone opens the UI
    )

    spec = json.dumps(document).replace("</", "<\\/")  # keep </script> out of the page
    html: str = generate_swagger_html(
        spec,
        f"/swagger/{SWAGGER_ASSETS[0]}",
        f"/swagger/{SWAGGER_ASSETS[1]}",
        "/swagger",
        None,
        True,
    )
    return html.replace('currentUrl.pathname + "?format=json"', '"/openapi.json"')


def swagger_asset(name: str) -> bytes:
    from aws_lambda_powertools.event_handler.openapi import swagger_ui  # noqa: PLC0415

    return (Path(swagger_ui.__file__).parent / name).read_bytes()


# --- the WSGI app ----------------------------------------------------------------


class Gateway:
    def __init__(
        self,
        deployment: Deployment,
        invoker: Invoker,
        settings: LocalSettings,
        control: ControlPlane | None = None,
        meter: UsageMeter | None = None,
    ) -> None:
        self.deployment = deployment
        self._invoker = invoker
        self._meter = meter
        self._router = Router(deployment.routes)
        self._authorizers = TokenAuthorizers(invoker, deployment)
        self.openapi = OpenApiDocument(deployment, settings)
        self._control = control
        self._local: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "/openapi.json"): self._openapi,
            ("GET", "/swagger"): self._swagger,
            ("GET", "/_local/info"): self._info,
            ("GET", "/_local/clock"): self._clock_show,
            ("POST", "/_local/clock/advance"): self._clock_advance,
        }

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except Exception:  # the process boundary of one request: log it, answer 500
            logger.exception("gateway failure on %s %s", request.method, request.path)
            response = self._gateway_response("DEFAULT_5XX", str(uuid.uuid4()), "internal error")
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        local = self._local.get((request.method, request.path.rstrip("/") or "/"))
        if local is not None:
            return local(request)
        if request.path.startswith("/swagger/") and request.path[9:] in SWAGGER_ASSETS:
            name = request.path[9:]
            kind = "text/css" if name.endswith(".css") else "application/javascript"
            return Response(swagger_asset(name), content_type=kind)
        return self._api(request)

    def _api(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        match = self._router.match(request.path, request.method)
        if match is None:
            self._metered(request.method, UNKNOWN_ROUTE, billed=False)
            return _error(404, "NOT_FOUND", "no such route", request_id)
        if isinstance(match, str):
            self._metered(request.method, UNKNOWN_ROUTE, billed=False)
            allowed = ", ".join(self._router.methods_for(request.path))
            response = _error(405, "METHOD_NOT_ALLOWED", f"allowed: {allowed}", request_id)
            response.headers["Allow"] = allowed
            return response
        authorizer_context = None
        if match.route.authorization_type == "CUSTOM":
            try:
                authorizer_context = self._authorizers.authorize(match.route, request)
            except Rejected as rejection:
                self._metered(request.method, match.route.path, billed=False)
                return self._gateway_response(rejection.response_type, request_id, "")
        if match.route.integration_function is None:
            self._metered(request.method, match.route.path, billed=False)
            return self._gateway_response("DEFAULT_5XX", request_id, "no integration")
        event = proxy_event(
            request,
            match,
            deployment=self.deployment,
            request_id=request_id,
            authorizer_context=authorizer_context,
        )
        self._metered(request.method, match.route.path, billed=True)
        result = self._invoker.invoke(match.route.integration_function, event)
        if not result.ok or not isinstance(result.payload, dict):
            return self._bad_gateway(request_id)
        return _proxy_response(result.payload, request_id) or self._bad_gateway(request_id)

    def _metered(self, method: str, route: str, *, billed: bool) -> None:
        """API Gateway bills the requests it passes to the integration; not the
        unauthorized ones, nor those matching no route."""
        if self._meter is not None:
            self._meter.record_api_request(f"{method} {route}", billed=billed)

    def _bad_gateway(self, request_id: str) -> Response:
        response = self._gateway_response("DEFAULT_5XX", request_id, "internal error")
        response.status_code = 502
        return response

    def _gateway_response(self, response_type: str, request_id: str, message: str) -> Response:
        spec = self.deployment.gateway_responses.get(response_type)
        if spec is None and response_type not in {"DEFAULT_5XX", "DEFAULT_4XX"}:
            family = (
                "DEFAULT_4XX" if DEFAULT_STATUS.get(response_type, 500) < 500 else "DEFAULT_5XX"
            )
            spec = self.deployment.gateway_responses.get(family)
        status = DEFAULT_STATUS.get(response_type, 500)
        body = _render(spec, request_id, message) if spec else json.dumps({"message": message})
        response = Response(body, status=(spec.status_code if spec else None) or status)
        response.headers["Content-Type"] = JSON
        response.headers["x-amzn-RequestId"] = request_id
        response.headers["x-amzn-ErrorType"] = response_type
        return response

    def _openapi(self, request: Request) -> Response:
        document = self.openapi.get(request.host_url.rstrip("/"))
        return Response(json.dumps(document), content_type=JSON)

    def _swagger(self, request: Request) -> Response:
        document = self.openapi.get(request.host_url.rstrip("/"))
        return Response(swagger_html(document), content_type="text/html")

    def _info(self, _: Request) -> Response:
        info = self._control.info() if self._control else self.deployment.summary()
        return Response(json.dumps(info), content_type=JSON)

    def _clock_show(self, _: Request) -> Response:
        if self._control is None:
            return _error(404, "NOT_FOUND", "no control plane", "")
        return Response(json.dumps(self._control.clock_show()), content_type=JSON)

    def _clock_advance(self, request: Request) -> Response:
        if self._control is None:
            return _error(404, "NOT_FOUND", "no control plane", "")
        try:
            seconds = float((request.get_json(silent=True) or {})["seconds"])
        except (KeyError, TypeError, ValueError):
            return _error(400, "VALIDATION_ERROR", 'body must be {"seconds": <number>}', "")
        if seconds < 0:
            return _error(400, "VALIDATION_ERROR", "time only moves forward", "")
        return Response(json.dumps(self._control.clock_advance(seconds)), content_type=JSON)


def _render(spec: GatewayResponseSpec, request_id: str, message: str) -> str:
    template = spec.templates.get(JSON) or next(iter(spec.templates.values()), "")
    # The two context variables our templates use; API Gateway knows many more.
    return template.replace("$context.error.message", message.replace('"', "'")).replace(
        "$context.requestId", request_id
    )


def _error(status: int, code: str, message: str, request_id: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    response = Response(body, status=status, content_type=JSON)
    if request_id:
        response.headers["x-amzn-RequestId"] = request_id
    return response


def _proxy_response(payload: dict[str, Any], request_id: str) -> Response | None:
    """The HTTP response of a Lambda proxy result, or None when it is malformed."""
    try:
        status = int(payload.get("statusCode", 200))
    except (TypeError, ValueError):
        return None
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        return None
    raw = base64.b64decode(body) if body and payload.get("isBase64Encoded") else (body or "")
    response = Response(raw, status=status)
    response.headers.pop("Content-Type", None)
    for name, value in (payload.get("headers") or {}).items():
        response.headers[name] = str(value)
    for name, values in (payload.get("multiValueHeaders") or {}).items():
        response.headers.remove(name)
        for value in values:
            response.headers.add(name, str(value))
    if "Content-Type" not in response.headers:
        response.headers["Content-Type"] = JSON
    response.headers["x-amzn-RequestId"] = request_id
    return response


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", _size: int | str = "-") -> None:
        logger.debug("%s %s", self.requestline, code)


class GatewayServer(ThreadedServer):
    def __init__(self, gateway: Gateway, port: int, host: str = LOOPBACK) -> None:
        super().__init__(
            gateway, port=port, name="gateway", host=host, request_handler=_QuietHandler
        )
