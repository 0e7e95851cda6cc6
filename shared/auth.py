"""Who is calling: JWT verification (RS256 against a JWKS) and role rules."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt

from shared.errors import Forbidden, Unauthorized

ALGORITHMS = ["RS256"]
CLOCK_LEEWAY_SECONDS = 30


class Role(StrEnum):
    SUBSCRIBER = "subscriber"
    AGENT = "agent"
    ADMIN = "admin"
    SERVICE = "service"  # internal callers (workflows, schedulers)


STAFF = frozenset({Role.AGENT, Role.ADMIN})


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[Role]

    def has_any(self, roles: Iterable[Role]) -> bool:
        return not self.roles.isdisjoint(roles)

    def context(self) -> dict[str, str]:
        """Flat string map, the only shape an API Gateway authorizer context allows."""
        return {"sub": self.subject, "roles": ",".join(sorted(self.roles))}

    @classmethod
    def from_context(cls, context: dict[str, Any]) -> Principal:
        subject = str(context.get("sub") or context.get("principalId") or "")
        roles = _known_roles(str(context.get("roles", "")).split(","))
        if not subject:
            raise Unauthorized("missing caller identity")
        return cls(subject, roles)


def _known_roles(names: Iterable[str]) -> frozenset[Role]:
    known = {role.value for role in Role}
    return frozenset(Role(name) for name in names if name in known)


def actor_of(principal: Principal) -> str:
    """How records name a caller: ``<most powerful role>:<subject>``."""
    for role in (Role.ADMIN, Role.AGENT, Role.SERVICE, Role.SUBSCRIBER):
        if role in principal.roles:
            return f"{role.value}:{principal.subject}"
    return f"unknown:{principal.subject}"


def require_role(principal: Principal, allowed: Iterable[Role]) -> None:
    allowed = frozenset(allowed)
    if not principal.has_any(allowed):
        names = ", ".join(sorted(allowed))
        raise Forbidden(f"this action needs one of the roles: {names}")


def require_owner_or(principal: Principal, user_id: str, staff: Iterable[Role] = STAFF) -> None:
    """A subscriber touches only their own user_id; the given staff roles touch any."""
    if principal.has_any(staff):
        return
    if Role.SUBSCRIBER in principal.roles and principal.subject == user_id:
        return
    raise Forbidden("you may only access your own account")


class JwtVerifier:
    """Validates signature (RS256), expiry, issuer and audience; returns the principal.

    Roles come from the ``roles`` claim, or from ``cognito:groups`` for Cognito tokens.
    """

    def __init__(self, *, issuer: str, audience: str, jwks_url: str = "", jwks_json: str = ""):
        if not (jwks_url or jwks_json):
            raise ValueError("a JWKS URL or document is required")
        self._issuer = issuer
        self._audience = audience
        self._client = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None
        self._keys = jwt.PyJWKSet.from_dict(json.loads(jwks_json)) if jwks_json else None

    def verify(self, token: str) -> Principal:
        try:
            key = self._signing_key(token)
            claims = jwt.decode(
                token,
                key=key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except (jwt.PyJWTError, KeyError) as error:
            raise Unauthorized(f"invalid token: {error}") from None
        roles = claims.get("roles") or claims.get("cognito:groups") or []
        if isinstance(roles, str):
            roles = roles.split(",")
        return Principal(str(claims["sub"]), _known_roles(roles))

    def _signing_key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for jwk in self._keys.keys:
            if jwk.key_id == kid:
                return jwk.key
        raise KeyError(f"no key {kid!r} in the JWKS")


def bearer_token(header_value: str | None) -> str:
    if not header_value:
        raise Unauthorized("missing bearer token")
    scheme, _, token = header_value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()
