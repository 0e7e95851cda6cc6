"""The gate in front of every route (shared.web.GatedResolver): the matrix is
asked before request validation or the handler, so a refused caller learns
nothing from a malformed request, and an unlisted route is closed."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import BaseModel, ConfigDict, Field

from shared.web import GatedResolver
from tests.apigw import Caller, HttpResult, api_event, lambda_context, parse_response

OWNER = Caller("u1")
STRANGER = Caller("u2")
AGENT = Caller("a1", "agent")
ADMIN = Caller("ad1", "admin")


class Activation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iccid: Annotated[str, Field(pattern=r"^\d{19}$")]


class Gated:
    """A resolver with a few of the matrix's routes (and one it lacks), recording
    which handlers ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        app = GatedResolver(enable_validation=True)
        self.app = app

        @app.get("/health")
        def health() -> dict[str, Any]:
            self.ran.append("health")
            return {"status": "ok"}

        @app.post("/activate-sim")
        def activate(body: Activation) -> dict[str, Any]:
            self.ran.append("activate")
            return {"iccid": body.iccid}

        @app.get("/users/<user_id>/usage")
        def usage(user_id: Annotated[str, Path(pattern=r"^[a-z0-9]{1,8}$")]) -> dict[str, Any]:
            self.ran.append("usage")
            return {"user_id": user_id}

        @app.get("/users/<user_id>/secrets")
        def unlisted(user_id: str) -> dict[str, Any]:
            self.ran.append("unlisted")
            return {"user_id": user_id}

    def call(
        self, method: str, path: str, who: Caller | None, *, raw_body: str | None = None
    ) -> HttpResult:
        event = api_event(method, path, caller=who, raw_body=raw_body)
        return parse_response(self.app.resolve(event, lambda_context("tbcss-test-gate")))


@pytest.fixture
def gated() -> Gated:
    return Gated()


@pytest.mark.parametrize("body", ['{"iccid": ', '{"pin": 1}', "[]", '{"iccid": "8991"}'])
def test_a_refused_caller_gets_403_however_malformed_the_body(gated: Gated, body: str) -> None:
    refused = gated.call("POST", "/activate-sim", OWNER, raw_body=body)

    assert (refused.status, refused.error_code) == (403, "FORBIDDEN")
    assert refused.body["error"]["message"] == "this action is for: agent, admin"
    assert gated.ran == []


def test_no_caller_gets_401_before_validation(gated: Gated) -> None:
    refused = gated.call("POST", "/activate-sim", None, raw_body='{"iccid": ')

    assert (refused.status, refused.error_code) == (401, "UNAUTHORIZED")
    assert gated.ran == []


def test_an_allowed_caller_reaches_validation_and_then_the_handler(gated: Gated) -> None:
    invalid = gated.call("POST", "/activate-sim", AGENT, raw_body='{"iccid": "8991"}')
    valid = gated.call("POST", "/activate-sim", AGENT, raw_body='{"iccid": "8991000000000000010"}')

    assert invalid.status == 422
    assert (valid.status, valid.body) == (200, {"iccid": "8991000000000000010"})
    assert gated.ran == ["activate"]


def test_the_path_user_id_is_checked_against_the_subscriber(gated: Gated) -> None:
    assert gated.call("GET", "/users/u1/usage", OWNER).status == 200
    refused = gated.call("GET", "/users/u1/usage", STRANGER)
    assert (refused.status, refused.body["error"]["message"]) == (
        403,
        "you may only access your own account",
    )
    assert gated.call("GET", "/users/u1/usage", AGENT).status == 200
    assert gated.ran == ["usage", "usage"]


def test_another_account_is_refused_before_its_id_is_validated(gated: Gated) -> None:
    """A malformed user_id of someone else is a 403, not a 422 that repeats it."""
    assert gated.call("GET", "/users/NOT-VALID!/usage", OWNER).status == 403
    assert gated.call("GET", "/users/NOT-VALID!/usage", AGENT).status == 422


def test_an_open_route_needs_no_caller(gated: Gated) -> None:
    assert gated.call("GET", "/health", None).status == 200
    assert gated.ran == ["health"]


@pytest.mark.parametrize("who", [OWNER, AGENT, ADMIN], ids=["owner", "agent", "admin"])
def test_a_route_missing_from_the_matrix_is_closed_to_everyone(gated: Gated, who: Caller) -> None:
    refused = gated.call("GET", "/users/u1/secrets", who)

    assert (refused.status, refused.error_code) == (403, "FORBIDDEN")
    assert "not in the authorization matrix" in refused.body["error"]["message"]
    assert gated.ran == []


def test_an_unknown_path_stays_a_404(gated: Gated) -> None:
    assert gated.call("GET", "/nowhere", ADMIN).status == 404
    assert gated.call("DELETE", "/health", ADMIN).status == 404
