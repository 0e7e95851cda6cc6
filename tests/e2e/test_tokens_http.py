"""Bad bearer tokens over real HTTP: the local gateway runs the JWT authorizer
from the template, and each kind of bad token is a 401 with API.md's error body,
before any handler runs. (tests/unit/test_auth.py covers the verifier itself.)"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.local.issuer import AUDIENCE, ISSUER, KEY_FILE, KEY_ID
from tests.e2e.conftest import LocalSystem
from tests.tokens import KeyPair, TokenFactory

HOUR = 3600


@pytest.fixture(scope="module")
def issuer(local_system: LocalSystem) -> TokenFactory:
    """Tokens signed with the runtime's own issuer key, claims at will."""
    pem = (local_system.state_dir / KEY_FILE).read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return TokenFactory(KeyPair(KEY_ID, key), issuer=ISSUER, audience=AUDIENCE)


def _unsigned(tokens: TokenFactory) -> str:
    """alg "none": the claims are right, there is no signature."""
    header = {"alg": "none", "typ": "JWT", "kid": KEY_ID}
    parts = (json.dumps(header).encode(), json.dumps(tokens.claims("u-none")).encode())
    return ".".join(base64.urlsafe_b64encode(p).rstrip(b"=").decode() for p in parts) + "."


BAD_TOKENS: dict[str, Callable[[TokenFactory], str]] = {
    "expired": lambda t: t.token(
        "u-expired", iat=int(time.time()) - 2 * HOUR, exp=int(time.time()) - HOUR
    ),
    "not-yet-valid": lambda t: t.token("u-early", nbf=int(time.time()) + HOUR),
    "wrong-issuer": lambda t: t.token("u-iss", iss="https://evil.example/issuer"),
    "wrong-audience": lambda t: t.token("u-aud", aud="someone-elses-api"),
    "unsigned-alg-none": _unsigned,
    "wrong-key": lambda t: t.token("u-key", key=KeyPair.generate(KEY_ID)),  # the kid matches
}


def test_the_same_factory_makes_a_token_the_api_accepts(
    local_system: LocalSystem, issuer: TokenFactory
) -> None:
    """The control: the bad tokens below differ from this one in one defect each."""
    response = local_system.get("/plans", issuer.token("u-good"))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_a_bad_token_is_401_with_the_error_body(
    local_system: LocalSystem, issuer: TokenFactory, kind: str
) -> None:
    token = BAD_TOKENS[kind](issuer)

    read = local_system.get("/plans", token)
    write = local_system.post("/subscribe", {}, token)  # malformed too: the token fails first

    for response in (read, write):
        assert response.status_code == 401, f"{kind}: {response.text}"
        error: dict[str, Any] = response.json()["error"]
        assert error["code"] == "UNAUTHORIZED", error
        assert error["message"], error
