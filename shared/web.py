"""The HTTP edge shared by every API handler: one resolver factory, the one
place domain errors become ``{"error": {...}}`` responses, the caller's
principal, and idempotent execution of state-changing POSTs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
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
from shared.db import PK, SK, TTL_ATTRIBUTE
from shared.errors import (
    DomainError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidRequest,
)
from shared.logs import service_logger
from shared.settings import get_settings

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
JSON = "application/json"

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
    429: "Throttled",
}


def create_resolver() -> APIGatewayRestResolver:
    """A REST resolver with request validation and the project's error mapping."""
    app = APIGatewayRestResolver(enable_validation=True)

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
    field = ".".join(str(part) for part in location if part not in ("body", "query", "path"))
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

    def register(self, context: LambdaContext) -> None:
        self._config.register_lambda_context(context)

    def run(
        self,
        app: APIGatewayRestResolver,
        body: BaseModel,
        action: Callable[[], tuple[int, BaseModel]],
    ) -> Response[dict[str, Any]]:
        """Run ``action`` once per key; a repeat returns the first response."""
        key = header(app, IDEMPOTENCY_HEADER)
        if key is None:
            status, payload = action()
            return json_response(status, payload)
        if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
            raise InvalidRequest(f"{IDEMPOTENCY_HEADER} must be 1-255 characters")
        event = app.current_event
        scope = f"{event.http_method} {event.resource} {caller(app).subject}"
        request = {"scope": scope, "key": key, "body": body.model_dump(mode="json")}
        try:
            stored: dict[str, Any] = self._run(request=request, action=action)
        except IdempotencyValidationError:
            raise IdempotencyKeyReused(
                f"this {IDEMPOTENCY_HEADER} was used with a different request body"
            ) from None
        except IdempotencyAlreadyInProgressError:
            raise IdempotencyInProgress("a request with this key is still in progress") from None
        return json_response(stored["status"], stored["body"])


def _execute(
    *, request: dict[str, Any], action: Callable[[], tuple[int, BaseModel]]
) -> dict[str, Any]:
    """The idempotent unit: its return value is what a replay receives."""
    del request  # only hashed by the decorator
    status, payload = action()
    return {"status": status, "body": payload.model_dump(mode="json")}
