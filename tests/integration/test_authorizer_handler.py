"""The API Gateway TOKEN authorizer (functions.authorizer.handler) with a JWKS
the test generates, handed over in the JWKS_JSON setting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from functions.authorizer import handler as authorizer
from shared.auth import Principal, Role
from shared.settings import get_settings
from tests.apigw import ACCOUNT, API_ID, REGION, lambda_context, token_event
from tests.tokens import KeyPair, TokenFactory

API_WIDE = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/v1/*/*"


@pytest.fixture
def authorize(tokens: TokenFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("JWKS_JSON", tokens.jwks())
    get_settings.cache_clear()
    authorizer.verifier.cache_clear()
    context = lambda_context("tbcss-test-authorizer")

    def call(event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = authorizer.handler(event, context)
        return result

    yield call
    get_settings.cache_clear()
    authorizer.verifier.cache_clear()


def test_valid_token_is_allowed_on_the_whole_api(authorize: Any, tokens: TokenFactory) -> None:
    token = tokens.token("u1", ["subscriber"])
    result = authorize(token_event(f"Bearer {token}", method="POST", path="subscribe"))

    assert result["principalId"] == "u1"
    (statement,) = result["policyDocument"]["Statement"]
    assert statement == {
        "Action": "execute-api:Invoke",
        "Effect": "Allow",
        "Resource": API_WIDE,  # a cached decision stays right on every route
    }
    assert result["context"] == {"sub": "u1", "roles": "subscriber"}


def test_context_carries_every_role_as_a_flat_string(authorize: Any, tokens: TokenFactory) -> None:
    token = tokens.token("staff-1", ["admin", "agent", "wizard"])
    context = authorize(token_event(f"Bearer {token}"))["context"]
    assert all(isinstance(value, str) for value in context.values())
    assert Principal.from_context(context) == Principal(
        "staff-1", frozenset({Role.AGENT, Role.ADMIN})
    )


def test_the_api_handlers_understand_the_authorizer_context(
    authorize: Any, tokens: TokenFactory
) -> None:
    result = authorize(token_event(f"Bearer {tokens.token('u7', ['subscriber'])}"))
    forwarded = {"principalId": result["principalId"], **result["context"]}
    assert Principal.from_context(forwarded) == Principal("u7", frozenset({Role.SUBSCRIBER}))


@pytest.mark.parametrize(
    "make_header",
    [
        pytest.param(lambda t: f"Bearer {t.token('u1', exp=int(time.time()) - 600)}", id="expired"),
        pytest.param(lambda t: f"Bearer {t.token('u1', iss='https://evil.example')}", id="issuer"),
        pytest.param(lambda t: f"Bearer {t.token('u1', aud='other-api')}", id="audience"),
        pytest.param(
            lambda t: f"Bearer {t.token('u1', key=KeyPair.generate(t.key.kid))}", id="wrong-key"
        ),
        pytest.param(lambda t: t.token("u1"), id="no-bearer-scheme"),
        pytest.param(lambda _: "Bearer not.a.jwt", id="garbage"),
        pytest.param(lambda _: "Bearer ", id="empty"),
        pytest.param(lambda _: None, id="missing"),
    ],
)
def test_bad_tokens_are_unauthorized(
    authorize: Any, tokens: TokenFactory, make_header: Any
) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$") as raised:
        authorize(token_event(make_header(tokens)))
    # API Gateway answers 401 only for exactly this exception message
    assert type(raised.value) is Exception


def test_stage_is_kept_and_everything_below_it_is_allowed() -> None:
    arn = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/prod/GET/plans/PRE_SMART_299"
    assert authorizer.api_wide_resource(arn) == (
        f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/prod/*/*"
    )
