"""Service control API: temporary blocks and their lifting, the status, permanent
disconnection, the owner's one-time passwords and SIM replacement.

Thin: routing, validation, idempotency and the owner checks of the reads; who
may apply, lift, disconnect or replace what (checked by the services before they
touch any data) lives in shared.service_control and the services
(shared.services.service_control, .disconnection, .sim_care).
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.service_control.wiring import (
    disconnections,
    owner_otps,
    service_control,
    sim_replacement,
)
from shared.auth import STAFF, require_owner_or
from shared.logs import service_logger
from shared.service_control import BlockReason, DisconnectReason
from shared.services.disconnection import Disconnection, DisconnectionStatus
from shared.services.service_control import ServiceView
from shared.services.sim_care import (
    OtpRequestBody,
    OtpRequestResult,
    OtpVerifyBody,
    OtpVerifyResult,
    SimReplacementBody,
    SimReplacementResult,
)
from shared.web import Idempotency, IdempotencyKey, caller, create_resolver, documented

logger = service_logger()
app = create_resolver()
idempotency = Idempotency("service_control")

ID = r"^[A-Za-z0-9_-]{1,64}$"
UserId = Annotated[str, Path(pattern=ID)]
Note = Annotated[str, Field(max_length=200, description="Why, for the status history")]


class BlockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: BlockReason
    note: Note = ""
    otp_id: Annotated[
        str | None,
        Field(
            pattern=ID,
            description="The owner's verified one-time password (LOST_SIM or THEFT)",
        ),
    ] = None


class UnblockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: BlockReason
    note: Note = ""


class DisconnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[
        DisconnectReason,
        Field(description="USER_REQUEST, FRAUD, PORT_OUT or DECEASED (INACTIVITY is the sweep's)"),
    ]
    proof_reference: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=100,
            description="Port reference, fraud case or death certificate number",
        ),
    ] = None
    note: Note = ""

    @field_validator("reason")
    @classmethod
    def _not_inactivity(cls, reason: DisconnectReason) -> DisconnectReason:
        if reason is DisconnectReason.INACTIVITY:
            raise ValueError("INACTIVITY disconnections are started by the daily sweep only")
        return reason


class DisconnectionAccepted(BaseModel):
    disconnection_id: str
    status: DisconnectionStatus
    reason: DisconnectReason


class Keyed(BaseModel):
    """What an Idempotency-Key is bound to: the key's scope is the route template,
    so the path's values go into the hashed body with the request."""

    path: dict[str, str]
    body: dict[str, Any]


def _keyed(body: BaseModel, **path: str) -> Keyed:
    return Keyed(path=path, body=body.model_dump(mode="json"))


# --- temporary blocks ------------------------------------------------------------------


@app.post(
    "/service-control/block/<user_id>",
    summary="Block a line temporarily (outgoing calls, SMS and data; incoming stays)",
    description="Agents and admins for LOST_SIM, THEFT, FRAUD_SUSPECTED and AGENT; the "
    "owner for LOST_SIM or THEFT with an otp_id verified through /service-control/otp.",
    responses=documented(200, "The status after the block", ServiceView, 401, 403, 404, 409, 415),
)
def block(
    user_id: UserId, body: BlockRequest, idempotency_key: IdempotencyKey = None
) -> Response[ServiceView]:
    principal = caller(app)

    def action() -> tuple[int, ServiceView]:
        view = service_control().block(
            principal, user_id, body.reason, note=body.note, otp_id=body.otp_id
        )
        return 200, view

    return idempotency.run(app, _keyed(body, user_id=user_id), action)  # type: ignore[return-value]


@app.post(
    "/service-control/unblock/<user_id>",
    summary="Lift one block reason (agent, admin)",
    description="OVERDUE and PLAN_EXPIRED lift by themselves on payment or recharge; an "
    "agent lifts them only once the bill is paid or a plan is active, an admin regardless.",
    responses=documented(200, "The status after the change", ServiceView, 401, 403, 404, 409, 415),
)
def unblock(
    user_id: UserId, body: UnblockRequest, idempotency_key: IdempotencyKey = None
) -> Response[ServiceView]:
    principal = caller(app)

    def action() -> tuple[int, ServiceView]:
        return 200, service_control().unblock(principal, user_id, body.reason, note=body.note)

    return idempotency.run(app, _keyed(body, user_id=user_id), action)  # type: ignore[return-value]


@app.get(
    "/service-control/status/<user_id>",
    summary="A line's status, active block reasons and network barring",
    description="Staff also see the recent status history (who changed what, and why).",
    responses=documented(200, "The status", ServiceView, 401, 403, 404),
)
def status(user_id: UserId) -> ServiceView:
    principal = caller(app)
    # Agents' notes and fraud causes are internal: the owner sees the state only.
    return service_control().status(user_id, history_limit=20 if principal.has_any(STAFF) else 0)


# --- permanent disconnection -----------------------------------------------------------


@app.post(
    "/service-control/disconnect/<user_id>",
    summary="Start a permanent disconnection (final bill, dues check, de-provisioning)",
    description="The owner (USER_REQUEST), an agent or an admin; FRAUD, PORT_OUT and "
    "DECEASED need a proof_reference. Follow GET /service-control/disconnections/{id}.",
    responses=documented(
        202, "Accepted: the workflow runs", DisconnectionAccepted, 401, 403, 404, 409, 415
    ),
)
def disconnect(
    user_id: UserId, body: DisconnectRequest, idempotency_key: IdempotencyKey = None
) -> Response[DisconnectionAccepted]:
    principal = caller(app)

    def action() -> tuple[int, DisconnectionAccepted]:
        record = disconnections().request(
            principal,
            user_id,
            body.reason,
            proof_reference=body.proof_reference,
            note=body.note,
        )
        logger.info("disconnection accepted", extra={"disconnection_id": record.disconnection_id})
        return 202, DisconnectionAccepted(
            disconnection_id=record.disconnection_id, status=record.status, reason=record.reason
        )

    return idempotency.run(app, _keyed(body, user_id=user_id), action)  # type: ignore[return-value]


@app.get(
    "/service-control/disconnections/<disconnection_id>",
    summary="A disconnection's status, step history, final invoice and dues",
    responses=documented(200, "The disconnection", Disconnection, 401, 403, 404),
)
def get_disconnection(disconnection_id: Annotated[str, Path(pattern=ID)]) -> Disconnection:
    principal = caller(app)
    record = disconnections().get(disconnection_id)
    require_owner_or(principal, record.user_id)
    if principal.has_any(STAFF):
        return record
    # The owner sees the progress, not the proof, the notes or who handled it.
    return record.model_copy(update={"proof_reference": None, "note": "", "requested_by": ""})


# --- the owner's one-time passwords and SIM replacement ---------------------------------


@app.post(
    "/service-control/otp/<user_id>",
    summary="Send the owner a one-time password for a LOST_SIM or THEFT block",
    description="The code goes to the alternate number on file (the SIM may be gone).",
    responses=documented(202, "Sent", OtpRequestResult, 401, 403, 404, 409, 415, 429, 503),
)
def request_otp(
    user_id: UserId, body: OtpRequestBody, idempotency_key: IdempotencyKey = None
) -> Response[OtpRequestResult]:
    principal = caller(app)

    def action() -> tuple[int, OtpRequestResult]:
        return 202, owner_otps().request(principal, user_id, body.reason)

    return idempotency.run(app, _keyed(body, user_id=user_id), action)  # type: ignore[return-value]


@app.post(
    "/service-control/otp/<user_id>/verify",
    summary="Verify a one-time password; the verified otp_id then authorizes one block",
    responses=documented(200, "Verified", OtpVerifyResult, 401, 403, 404, 409, 415, 429),
)
def verify_otp(
    user_id: UserId, body: OtpVerifyBody, idempotency_key: IdempotencyKey = None
) -> Response[OtpVerifyResult]:
    principal = caller(app)

    def action() -> tuple[int, OtpVerifyResult]:
        return 200, owner_otps().verify(principal, user_id, body.otp_id, body.code)

    return idempotency.run(app, _keyed(body, user_id=user_id), action)  # type: ignore[return-value]


@app.post(
    "/users/<user_id>/sim-replacement",
    summary="Move a line to a new SIM after a loss or theft (agent, admin)",
    description="Provisions the new ICCID, retires the old one and lifts LOST_SIM / THEFT.",
    responses=documented(200, "Replaced", SimReplacementResult, 401, 403, 404, 409, 415, 503),
)
def replace_sim(
    user_id: UserId, body: SimReplacementBody, idempotency_key: IdempotencyKey = None
) -> Response[SimReplacementResult]:
    principal = caller(app)

    def action() -> tuple[int, SimReplacementResult]:
        return 200, sim_replacement().replace(principal, user_id, body.new_iccid)

    return idempotency.run(app, _keyed(body, user_id=user_id), action)  # type: ignore[return-value]


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register(context)
    return app.resolve(event, context)
