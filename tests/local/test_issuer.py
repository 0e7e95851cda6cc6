"""The local issuer signs what the authorizer's verifier accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.local.issuer import LocalIssuer
from shared.auth import JwtVerifier, Role
from shared.errors import Unauthorized


def verifier_for(issuer: LocalIssuer) -> JwtVerifier:
    env = issuer.environment()
    return JwtVerifier(
        issuer=env["JWT_ISSUER"], audience=env["JWT_AUDIENCE"], jwks_json=env["JWKS_JSON"]
    )


def test_a_token_verifies_with_the_workers_settings(tmp_path: Path) -> None:
    issuer = LocalIssuer(tmp_path)

    principal = verifier_for(issuer).verify(issuer.issue("demo-prepaid", ["subscriber"]))

    assert principal.subject == "demo-prepaid"
    assert principal.roles == frozenset({Role.SUBSCRIBER})


def test_the_key_survives_restarts(tmp_path: Path) -> None:
    token = LocalIssuer(tmp_path).issue("u", ["agent"])

    assert verifier_for(LocalIssuer(tmp_path)).verify(token).subject == "u"


def test_an_expired_token_is_rejected(tmp_path: Path) -> None:
    issuer = LocalIssuer(tmp_path)
    token = issuer.issue("u", ["admin"], ttl_seconds=60, now=1_000_000)

    with pytest.raises(Unauthorized):
        verifier_for(issuer).verify(token)
