"""Activation module API: start an activation, follow it, read a profile.

Thin: routing and validation here (who may call what is the authorization
matrix's, shared.authorization, checked before the handler runs); the rules live
in shared.services.activation.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.activation.wiring import activation_service, vault
from shared.logs import service_logger
from shared.services.activation import (
    Activation,
    ActivationAccepted,
    ActivationRequest,
    UserProfile,
)
from shared.web import Idempotency, IdempotencyKey, create_resolver, documented

logger = service_logger()
app = create_resolver()
idempotency = Idempotency("activation")

ID = r"^[A-Za-z0-9_-]{1,64}$"


@app.post(
    "/activate-sim",
    summary="Activate a SIM after KYC (starts the activation workflow)",
    responses=documented(
        202, "Accepted: follow GET /activations/{id}", ActivationAccepted, 401, 403, 409, 415
    ),
)
def activate_sim(
    body: ActivationRequest, idempotency_key: IdempotencyKey = None
) -> Response[ActivationAccepted]:
    # Idempotency records hash the body: with the keyed fingerprint, not the number.
    fingerprint = vault().fingerprint(body.kyc.type, body.kyc.number)

    def action() -> tuple[int, ActivationAccepted]:
        accepted = activation_service().accept(body)
        logger.info("activation accepted", extra={"activation_id": accepted.activation_id})
        return 202, accepted

    return idempotency.run(app, body.without_kyc_number(fingerprint), action)  # type: ignore[return-value]


@app.get(
    "/activations/<activation_id>",
    summary="Status and step history of an activation",
    responses=documented(200, "The activation", Activation, 401, 403, 404),
)
def get_activation(activation_id: Annotated[str, Path(pattern=ID)]) -> Activation:
    return activation_service().get(activation_id)


@app.get(
    "/users/<user_id>",
    summary="A subscriber's profile (KYC masked) and status",
    responses=documented(200, "The profile", UserProfile, 401, 403, 404),
)
def get_user(user_id: Annotated[str, Path(pattern=ID)]) -> UserProfile:
    return activation_service().profile(user_id)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register(context)
    return app.resolve(event, context)
