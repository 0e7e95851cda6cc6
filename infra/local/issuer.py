"""The local token issuer: an RSA key pair kept in the state directory, its
JWKS next to it, and RS256 tokens with the claims the authorizer checks.

Workers get ``JWT_ISSUER``/``JWT_AUDIENCE``/``JWKS_URL`` from
:meth:`LocalIssuer.environment`, so the authorizer verifies exactly what
:meth:`LocalIssuer.issue` signs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://tbcss.local/issuer"
AUDIENCE = "tbcss-api"
KEY_FILE = "issuer-key.pem"
JWKS_FILE = "jwks.json"
KEY_ID = "tbcss-local-1"
DEFAULT_TTL_SECONDS = 3600


class LocalIssuer:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._key = self._load_or_create_key()
        self._write_jwks()

    @property
    def jwks_path(self) -> Path:
        return self.state_dir / JWKS_FILE

    def environment(self) -> dict[str, str]:
        """What the authorizer needs to trust this issuer. The JWKS goes in by
        value: PyJWT's PyJWKClient accepts only http(s) URLs, not file://."""
        return {
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
            "JWKS_URL": "",
            "JWKS_JSON": self.jwks_path.read_text(),
        }

    def issue(
        self,
        sub: str,
        roles: Iterable[str],
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        *,
        now: float | None = None,
    ) -> str:
        issued_at = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "roles": list(roles),
            "iat": issued_at,
            "exp": issued_at + ttl_seconds,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": KEY_ID})

    def _load_or_create_key(self) -> rsa.RSAPrivateKey:
        path = self.state_dir / KEY_FILE
        if path.is_file():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, rsa.RSAPrivateKey):
                return key
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Written atomically and private: a half-written key would break every token.
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(pem)
        os.chmod(temporary, 0o600)
        temporary.replace(path)
        return key

    def _write_jwks(self) -> None:
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": KEY_ID, "use": "sig", "alg": "RS256"})
        document = json.dumps({"keys": [jwk]}, indent=2)
        if not self.jwks_path.is_file() or self.jwks_path.read_text() != document:
            temporary = self.jwks_path.with_suffix(".tmp")
            temporary.write_text(document)
            temporary.replace(self.jwks_path)
