"""API Gateway TOKEN authorizer: validates the bearer JWT and passes the
subject and roles to the API handlers. The policy allows every method of the
API, so a cached decision stays right across routes; per-route role checks
happen in the handlers."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.auth import JwtVerifier, bearer_token
from shared.errors import Unauthorized
from shared.logs import service_logger
from shared.settings import get_settings

logger = service_logger()


@lru_cache(maxsize=1)
def verifier() -> JwtVerifier:
    settings = get_settings()
    return JwtVerifier(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        jwks_url=settings.jwks_url,
        jwks_json=settings.jwks_json,
    )


def api_wide_resource(method_arn: str) -> str:
    """``arn:...:api-id/stage/GET/plans`` -> ``arn:...:api-id/stage/*/*``."""
    api_arn, _, path = method_arn.partition("/")
    stage = path.split("/", 1)[0] or "*"
    return f"{api_arn}/{stage}/*/*"


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        principal = verifier().verify(bearer_token(event.get("authorizationToken")))
    except Unauthorized as error:
        logger.info("token rejected", extra={"reason": error.message})
        # API Gateway answers 401 exactly when the authorizer fails with "Unauthorized".
        raise Exception("Unauthorized") from None
    return {
        "principalId": principal.subject,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow",
                    "Resource": api_wide_resource(event["methodArn"]),
                }
            ],
        },
        "context": principal.context(),
    }
