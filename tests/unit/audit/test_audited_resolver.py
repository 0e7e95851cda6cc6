"""Staff calls are announced by the resolver every API uses (shared.web), whatever
their answer: a handler that crashes is announced as the 500 the gateway gives."""

from __future__ import annotations

from typing import Any

import pytest

from shared import web
from shared.events import InMemoryEventPublisher
from tests.apigw import Caller, api_event, lambda_context

AGENT = Caller("a1", "agent")
UNBLOCK = "/service-control/unblock/{user_id}"


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> InMemoryEventPublisher:
    published = InMemoryEventPublisher()
    monkeypatch.setattr(web, "staff_bus", lambda: published)
    return published


def _resolver(answer: Any) -> web.AuditedResolver:
    app = web.create_resolver()

    @app.post("/service-control/unblock/<user_id>")
    def unblock(user_id: str) -> dict[str, Any]:
        return answer(user_id)  # type: ignore[no-any-return]

    assert isinstance(app, web.AuditedResolver)
    return app


def _call(app: web.AuditedResolver, caller: Caller) -> dict[str, Any]:
    event = api_event(
        "POST",
        "/service-control/unblock/u1",
        resource=UNBLOCK,
        caller=caller,
        body={},
        path_parameters={"user_id": "u1"},
    )
    return app.resolve(event, lambda_context("tests"))


def _boom(user_id: str) -> dict[str, Any]:
    raise RuntimeError(f"the network adapter crashed for {user_id}")


def test_a_crashing_staff_call_is_announced_as_a_500(bus: InMemoryEventPublisher) -> None:
    with pytest.raises(RuntimeError):
        _call(_resolver(_boom), AGENT)

    (action,) = bus.of_type("StaffActionPerformed")
    assert action.detail["http_status"] == 500
    assert action.detail["action"] == f"POST {UNBLOCK}"
    assert action.detail["user_id"] == "u1"


def test_an_answered_staff_call_is_announced_with_its_status(
    bus: InMemoryEventPublisher,
) -> None:
    response = _call(_resolver(lambda user_id: {"user_id": user_id}), AGENT)

    (action,) = bus.of_type("StaffActionPerformed")
    assert action.detail["http_status"] == response["statusCode"] == 200
    assert action.detail["actor"] == "agent:a1"


def test_a_subscribers_call_is_not_a_staff_action(bus: InMemoryEventPublisher) -> None:
    _call(_resolver(lambda user_id: {"user_id": user_id}), Caller("u1"))

    assert bus.events == []
