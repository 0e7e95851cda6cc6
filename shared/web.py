"""The HTTP edge shared by every API handler: one resolver factory, the
authorization gate in front of every route, the one place domain errors become
``{"error": {...}}`` responses, the caller's principal, and idempotent execution
of state-changing POSTs."""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import ResponseBuilder, Route
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from shared.auth import Principal
from shared.authorization import Operation, authorize
from shared.clock import system_clock
from shared.db import PK, SK, TTL_ATTRIBUTE
from shared.errors import (
    DomainError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidRequest,
    Unauthorized,
    UnsupportedMediaType,
)
from shared.idempotency_claims import ClaimOwner
from shared.logs import service_logger
from shared.settings import get_settings
from shared.staff_actions import bus as staff_bus
from shared.staff_actions import staff_action

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
JSON = "application/json"


def _idempotency_key_header() -> Any:
    return Header(
        alias=IDEMPOTENCY_HEADER,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        description="A repeat with the same key and body returns the first response and "
        "changes nothing more; the same key with another body is 422 IDEMPOTENCY_KEY_REUSED.",
    )


# A state-changing route declares the header (``idempotency_key: IdempotencyKey = None``)
# so the OpenAPI document lists it and a malformed key is a 422 before anything runs;
# Idempotency.run reads it from the request.
IdempotencyKey = Annotated[str | None, _idempotency_key_header()]
RequiredIdempotencyKey = Annotated[str, _idempotency_key_header()]

logger = service_logger()


def json_response(status: int, payload: BaseModel | dict[str, Any]) -> Response[dict[str, Any]]:
    """The body stays a dict: the resolver serializes it, and a route's response
    validation (its ``-> Response[Model]`` annotation) can check it first."""
    body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    return Response(status_code=status, content_type=JSON, body=body)


def error_response(error: DomainError) -> Response[dict[str, Any]]:
    return json_response(error.status, error.to_body())


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """The error shape of every API response that is not a success (API.md)."""

    error: ErrorDetail


def documented(success: int, description: str, model: type[BaseModel], *errors: int) -> Any:
    """OpenAPI ``responses`` for a route: its success model and its error statuses."""
    responses: dict[int, Any] = {
        success: {"description": description, "content": {JSON: {"model": model}}},
        422: {"description": "Invalid request", "content": {JSON: {"model": ErrorBody}}},
    }
    for status in errors:
        responses[status] = {
            "description": HTTP_REASONS.get(status, "Error"),
            "content": {JSON: {"model": ErrorBody}},
        }
    return responses


HTTP_REASONS = {
    401: "Missing or invalid bearer token",
    402: "Insufficient prepaid balance",
    403: "Not allowed for this caller",
    404: "Unknown resource",
    409: "Conflicts with the current state",
    415: "The request body is not application/json",
    429: "Throttled",
    503: "A downstream system is unavailable: retry later",
}


class JsonBodies(APIGatewayRestResolver):
    """Request bodies are UTF-8 JSON (API.md), refused otherwise before Powertools
    reads them: it would parse a form or a multipart body (and fail with an
    unhandled error on a multipart one without a boundary), and a body that is not
    UTF-8 text (base64-encoded by the gateway) fails its decoding: 5xx for bad input."""

    def _call_route(self, route: Route, route_arguments: dict[str, str]) -> ResponseBuilder[Any]:
        routed = route in self._static_routes or route in self._dynamic_routes
        refused = self._unreadable_body(route) if routed else None
        if refused is not None:
            return self._response_builder_class(
                response=error_response(refused), serializer=self._serializer, route=route
            )
        return super()._call_route(route, route_arguments)

    def _unreadable_body(self, route: Route) -> DomainError | None:
        event = self.current_event
        if not event.body:
            return None
        content_type = event.headers.get("content-type", "").strip().lower()
        # Powertools reads exactly these as JSON (no Content-Type, or application/json...).
        if route.dependant.body_params and content_type and not content_type.startswith(JSON):
            return UnsupportedMediaType(f"send the body as {JSON}, not {content_type[:80]}")
        try:
            event.decoded_body  # noqa: B018 - decoding is the check
        except (UnicodeDecodeError, binascii.Error):
            return InvalidRequest("the body is not UTF-8 text")
        return None


class GatedResolver(JsonBodies):
    """Asks the authorization matrix (:mod:`shared.authorization`) before anything
    else reads the request: a caller the matrix refuses gets 401/403 however
    malformed the request, and learns nothing about what validation would say.

    Powertools runs its request validation as the first middleware of every route,
    so no middleware can precede it; ``_call_route`` (Powertools 3.37) is where the
    route is matched and nothing has run yet. Powertools' own not-found route is
    not gated: an unknown path stays a 404."""

    def _call_route(self, route: Route, route_arguments: dict[str, str]) -> ResponseBuilder[Any]:
        if route in self._static_routes or route in self._dynamic_routes:
            try:
                operation = Operation(route.method, route.openapi_path)
                authorize(operation, _caller_or_none(self.current_event.raw_event), route_arguments)
            except DomainError as refused:
                logger.info("refused by the authorization matrix", extra={"code": refused.code})
                return self._response_builder_class(
                    response=error_response(refused), serializer=self._serializer, route=route
                )
        return super()._call_route(route, route_arguments)


def _caller_or_none(event: Mapping[str, Any]) -> Principal | None:
    try:
        return Principal.from_context((event.get("requestContext") or {}).get("authorizer") or {})
    except Unauthorized:
        return None


class AuditedResolver(GatedResolver):
    """Announces every state-changing call by staff, whatever its answer
    (:mod:`shared.staff_actions`), once the response is decided."""

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        try:
            response = super().resolve(event, context)
        except Exception:
            _announce_staff_action(event, {"statusCode": 500})  # what the gateway answers
            raise
        _announce_staff_action(event, response)
        return response


def _announce_staff_action(event: Mapping[str, Any], response: Mapping[str, Any]) -> None:
    principal = _caller_or_none(event)
    if principal is None:
        return  # nobody to name: the webhook, or a call the gateway refused
    status = int(response.get("statusCode", 0))
    action = staff_action(event, principal, status, system_clock().now(), _answered_user(response))
    if action is not None:
        staff_bus().publish([action])


def _answered_user(response: Mapping[str, Any]) -> str | None:
    """The ``user_id`` a JSON answer names (an activation creates the user it
    concerns: the path cannot name it)."""
    if response.get("isBase64Encoded") or not isinstance(response.get("body"), str):
        return None
    try:
        body = json.loads(response["body"])
    except ValueError:
        return None
    user_id = body.get("user_id") if isinstance(body, dict) else None
    return user_id if isinstance(user_id, str) else None


def create_resolver() -> APIGatewayRestResolver:
    """A REST resolver with request validation and the project's error mapping."""
    app = AuditedResolver(enable_validation=True)

    @app.exception_handler(DomainError)
    def _domain_error(error: DomainError) -> Response[dict[str, Any]]:
        if error.status >= 500:
            logger.exception("domain error", extra={"code": error.code})
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(error: RequestValidationError) -> Response[dict[str, Any]]:
        details = [_problem(problem) for problem in error.errors()]
        message = "; ".join(f"{d['field'] or 'body'}: {d['problem']}" for d in details)
        return error_response(InvalidRequest(message, details=details))

    @app.not_found
    def _no_route(_: Exception) -> Response[dict[str, Any]]:
        return json_response(404, {"error": {"code": "NOT_FOUND", "message": "no such route"}})

    return app


def _problem(problem: dict[str, Any]) -> dict[str, str]:
    """One pydantic error as ``{field, problem}``; an unparsable body is the body's problem."""
    if problem.get("type") == "json_invalid":
        return {"field": "", "problem": "the body is not valid JSON"}
    location = problem.get("loc", ())
    field = ".".join(
        str(part) for part in location if part not in ("body", "query", "path", "header")
    )
    return {"field": field, "problem": str(problem.get("msg", "invalid"))}


def caller(app: APIGatewayRestResolver) -> Principal:
    """The principal the authorizer put in the request context."""
    request_context = app.current_event.raw_event.get("requestContext") or {}
    return Principal.from_context(request_context.get("authorizer") or {})


def header(app: APIGatewayRestResolver, name: str) -> str | None:
    wanted = name.lower()
    for key, value in (app.current_event.headers or {}).items():
        if key.lower() == wanted:
            return str(value)
    return None


class Idempotency:
    """Powertools idempotency over the single table, keyed by the Idempotency-Key
    header scoped to route and caller. The same key with another body -> 422."""

    def __init__(self, function_name: str) -> None:
        settings = get_settings()
        self._persistence = DynamoDBPersistenceLayer(
            table_name=settings.table_name,
            key_attr=PK,
            sort_key_attr=SK,
            static_pk_value=f"IDEMPOTENCY#{function_name}",
            expiry_attr=TTL_ATTRIBUTE,
        )
        self._claims = ClaimOwner(self._persistence)
        self._config = IdempotencyConfig(
            event_key_jmespath="[scope, key]",
            payload_validation_jmespath="body",
            expires_after_seconds=settings.idempotency_ttl_seconds,
            raise_on_no_idempotency_key=True,
        )
        self._run = idempotent_function(
            data_keyword_argument="request",
            persistence_store=self._persistence,
            config=self._config,
        )(_execute)

    @property
    def records_client(self) -> DynamoDBClient:
        """The DynamoDB client of the key records (tests make it misbehave)."""
        return self._persistence.client

    def register(self, context: LambdaContext) -> None:
        self._config.register_lambda_context(context)

    def run(
        self,
        app: APIGatewayRestResolver,
        body: BaseModel,
        action: Callable[[], tuple[int, BaseModel]],
    ) -> Response[dict[str, Any]]:
        """Run ``action`` once per key; a repeat returns the first response."""
        request = _keyed_request(app, body)
        if request is None:
            status, payload = action()
            return json_response(status, payload)
        try:
            with self._claims.attempt():
                stored: dict[str, Any] = self._run(request=request, action=action)
        except IdempotencyValidationError:
            raise IdempotencyKeyReused(
                f"this {IDEMPOTENCY_HEADER} was used with a different request body"
            ) from None
        except IdempotencyAlreadyInProgressError:
            raise IdempotencyInProgress("a request with this key is still in progress") from None
        return json_response(stored["status"], stored["body"])

    @staticmethod
    def request_token(app: APIGatewayRestResolver, *names: str) -> str | None:
        """A stable hex digest of the key's route, caller and key, plus ``names``
        (the resource the route template leaves out); None without a key.

        Powertools drops a key's record when an attempt raises, even one that
        raised after its commit (a lost answer), so the retry runs the action
        again. An action that ids what it creates by this token finds the earlier
        attempt's work instead of doing it twice. The body is left out, so the
        action can refuse a retry with another body (422), as the record would."""
        key = _idempotency_key(app)
        if key is None:
            return None
        return hashlib.sha256(json.dumps([_scope(app), key, *names]).encode()).hexdigest()


def _keyed_request(app: APIGatewayRestResolver, body: BaseModel) -> dict[str, Any] | None:
    """What the idempotency record is keyed and validated on; None without a key."""
    key = _idempotency_key(app)
    if key is None:
        return None
    return {"scope": _scope(app), "key": key, "body": body.model_dump(mode="json")}


def _idempotency_key(app: APIGatewayRestResolver) -> str | None:
    key = header(app, IDEMPOTENCY_HEADER)
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidRequest(f"{IDEMPOTENCY_HEADER} must be 1-255 characters")
    return key


def _scope(app: APIGatewayRestResolver) -> str:
    """A key is the caller's own, per route template."""
    event = app.current_event
    return f"{event.http_method} {event.resource} {caller(app).subject}"


def _execute(
    *, request: dict[str, Any], action: Callable[[], tuple[int, BaseModel]]
) -> dict[str, Any]:
    """The idempotent unit: its return value is what a replay receives."""
    del request  # only hashed by the decorator
    status, payload = action()
    return {"status": status, "body": payload.model_dump(mode="json")}
