"""Test-wide setup: a hermetic environment and test-generated signing keys.

The environment is set HERE, at import, because the product reads its settings
once (``shared.settings.get_settings`` is cached, and ``shared.db`` and
``functions.plans.handler`` read them at import): every test module imports the
product only after this file ran.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` as well as `python -m pytest`
    sys.path.insert(0, str(ROOT))

TEST_ENV = {
    "TABLE_NAME": "tbcss-test",
    "EVENT_BUS_NAME": "tbcss-test-events",
    "AWS_REGION": "ap-south-1",
    "AWS_DEFAULT_REGION": "ap-south-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_SERVICE_NAME": "tbcss-tests",
    "POWERTOOLS_METRICS_NAMESPACE": "TBCSS-tests",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "JWT_ISSUER": "https://issuer.tbcss.test",
    "JWT_AUDIENCE": "tbcss-test-api",
}
os.environ.update(TEST_ENV)
for leaked in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "JWKS_URL", "JWKS_JSON"):
    os.environ.pop(leaked, None)

import pytest  # noqa: E402

from tests.tokens import KeyPair, TokenFactory  # noqa: E402


@pytest.fixture(scope="session")
def signing_key() -> KeyPair:
    """The issuer's RSA key (kid ``test-key-1``), published in the JWKS."""
    return KeyPair.generate("test-key-1")


@pytest.fixture(scope="session")
def tokens(signing_key: KeyPair) -> TokenFactory:
    return TokenFactory(
        signing_key, issuer=TEST_ENV["JWT_ISSUER"], audience=TEST_ENV["JWT_AUDIENCE"]
    )
