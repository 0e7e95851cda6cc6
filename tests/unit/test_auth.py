"""JWT verification (RS256 against a JWKS) and the role rules (shared.auth)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from shared.auth import (
    STAFF,
    JwtVerifier,
    Principal,
    Role,
    bearer_token,
    require_owner_or,
    require_role,
)
from shared.errors import Forbidden, Unauthorized
from tests.tokens import KeyPair, TokenFactory, jwks_json


@pytest.fixture
def verifier(tokens: TokenFactory) -> JwtVerifier:
    return JwtVerifier(issuer=tokens.issuer, audience=tokens.audience, jwks_json=tokens.jwks())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"
    )


def test_valid_token_gives_principal_with_roles(
    verifier: JwtVerifier, tokens: TokenFactory
) -> None:
    principal = verifier.verify(tokens.token("agent-7", ["agent", "admin"]))
    assert principal == Principal("agent-7", frozenset({Role.AGENT, Role.ADMIN}))


def test_roles_from_cognito_groups_or_a_comma_string(
    verifier: JwtVerifier, tokens: TokenFactory
) -> None:
    groups: dict[str, Any] = {"cognito:groups": ["subscriber"]}
    cognito = tokens.token("u1", roles=[], **groups)
    assert verifier.verify(cognito).roles == {Role.SUBSCRIBER}
    assert verifier.verify(tokens.token("u1", roles="agent,admin")).roles == STAFF


def test_unknown_roles_grant_nothing(verifier: JwtVerifier, tokens: TokenFactory) -> None:
    assert verifier.verify(tokens.token("u1", ["superuser", "root"])).roles == frozenset()


def test_clock_skew_of_a_few_seconds_is_tolerated(
    verifier: JwtVerifier, tokens: TokenFactory
) -> None:
    just_expired = tokens.token("u1", exp=int(time.time()) - 5)
    assert verifier.verify(just_expired).subject == "u1"


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"exp": int(time.time()) - 3600}, id="expired"),
        pytest.param({"iss": "https://evil.example/issuer"}, id="wrong-issuer"),
        pytest.param({"aud": "another-api"}, id="wrong-audience"),
        pytest.param({"nbf": int(time.time()) + 3600}, id="not-yet-valid"),
    ],
)
def test_invalid_claims_are_unauthorized(
    verifier: JwtVerifier, tokens: TokenFactory, claims: dict[str, Any]
) -> None:
    with pytest.raises(Unauthorized):
        verifier.verify(tokens.token("u1", **claims))


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "iss", "aud"])
def test_required_claims(verifier: JwtVerifier, tokens: TokenFactory, missing: str) -> None:
    claims = tokens.claims("u1")
    del claims[missing]
    token = _sign(tokens.key, claims)
    with pytest.raises(Unauthorized):
        verifier.verify(token)


def _sign(key: KeyPair, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})


def test_token_signed_by_another_key_with_the_same_kid(
    verifier: JwtVerifier, tokens: TokenFactory
) -> None:
    impostor = KeyPair.generate(tokens.key.kid)
    with pytest.raises(Unauthorized):
        verifier.verify(tokens.token("u1", key=impostor))


def test_token_with_an_unknown_kid(verifier: JwtVerifier, tokens: TokenFactory) -> None:
    with pytest.raises(Unauthorized):
        verifier.verify(tokens.token("u1", key=KeyPair.generate("other-kid")))


def test_any_key_of_the_jwks_verifies(tokens: TokenFactory) -> None:
    rotated = KeyPair.generate("test-key-2")
    verifier = JwtVerifier(
        issuer=tokens.issuer, audience=tokens.audience, jwks_json=jwks_json(tokens.key, rotated)
    )
    assert verifier.verify(tokens.token("u1", key=rotated)).subject == "u1"
    assert verifier.verify(tokens.token("u2")).subject == "u2"


def test_alg_none_is_rejected(verifier: JwtVerifier, tokens: TokenFactory) -> None:
    token = unsigned_token({"alg": "none", "typ": "JWT", "kid": tokens.key.kid}, tokens.claims())
    with pytest.raises(Unauthorized):
        verifier.verify(token)


def test_hs256_signed_with_the_public_key_is_rejected(
    verifier: JwtVerifier, tokens: TokenFactory
) -> None:
    """The classic key-confusion attack: HMAC keyed with the published RSA key."""
    public_pem = tokens.key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": tokens.key.kid}
    signing_input = unsigned_token(header, tokens.claims("u1", ["admin"])).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(Unauthorized):
        verifier.verify(f"{signing_input}.{_b64(signature)}")


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "e30.e30.", "...."])
def test_garbage_tokens_are_unauthorized(verifier: JwtVerifier, garbage: str) -> None:
    with pytest.raises(Unauthorized):
        verifier.verify(garbage)


def test_tampered_claims_fail_the_signature(verifier: JwtVerifier, tokens: TokenFactory) -> None:
    header, _, signature = tokens.token("u1", ["subscriber"]).split(".")
    forged = _b64(json.dumps(tokens.claims("u1", ["admin"])).encode())
    with pytest.raises(Unauthorized):
        verifier.verify(f"{header}.{forged}.{signature}")


def test_verifier_needs_a_jwks() -> None:
    with pytest.raises(ValueError, match="JWKS"):
        JwtVerifier(issuer="i", audience="a")


# --- bearer header ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"), [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  xyz ", "xyz")]
)
def test_bearer_token(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "abc"])
def test_bearer_token_rejects(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        bearer_token(header)


# --- principal and role rules -------------------------------------------------------


def test_principal_survives_the_authorizer_context_round_trip() -> None:
    principal = Principal("u1", frozenset({Role.SUBSCRIBER, Role.AGENT}))
    context = principal.context()
    assert all(isinstance(value, str) for value in context.values())  # API Gateway's rule
    assert Principal.from_context(context) == principal


def test_principal_from_context_without_identity_is_unauthorized() -> None:
    with pytest.raises(Unauthorized):
        Principal.from_context({})
    with pytest.raises(Unauthorized):
        Principal.from_context({"roles": "admin"})


def test_principal_from_context_falls_back_to_principal_id() -> None:
    assert Principal.from_context({"principalId": "u9", "roles": "agent"}).subject == "u9"


SUBSCRIBER = Principal("u1", frozenset({Role.SUBSCRIBER}))
AGENT = Principal("agent-1", frozenset({Role.AGENT}))
ADMIN = Principal("admin-1", frozenset({Role.ADMIN}))
NOBODY = Principal("u1", frozenset())


def test_subscriber_may_act_on_their_own_account() -> None:
    require_owner_or(SUBSCRIBER, "u1")


def test_subscriber_may_not_act_on_another_account() -> None:
    with pytest.raises(Forbidden):
        require_owner_or(SUBSCRIBER, "u2")


def test_same_subject_without_the_subscriber_role_is_not_an_owner() -> None:
    with pytest.raises(Forbidden):
        require_owner_or(NOBODY, "u1")


@pytest.mark.parametrize("staff", [AGENT, ADMIN])
def test_staff_may_act_on_any_account(staff: Principal) -> None:
    require_owner_or(staff, "u2")


def test_staff_roles_can_be_narrowed() -> None:
    require_owner_or(AGENT, "u2", {Role.AGENT})
    with pytest.raises(Forbidden):
        require_owner_or(ADMIN, "u2", {Role.AGENT})
    require_owner_or(SUBSCRIBER, "u1", {Role.AGENT})  # the owner still may


def test_require_role() -> None:
    require_role(ADMIN, {Role.ADMIN})
    with pytest.raises(Forbidden, match="admin"):
        require_role(SUBSCRIBER, {Role.ADMIN})
