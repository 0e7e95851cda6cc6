"""The authorization matrix (shared.authorization) on the local runtime: every
operation of /openapi.json, called over HTTP as anonymous, the subscriber who
owns the resource ("self"), another subscriber ("other"), an agent and an admin.

DENIED is 403 (anonymous: 401 from the gateway's authorizer); ALLOWED and
OWN_ONLY for self get past authorization (anything but 401/403: a 4xx from
validation or the domain still proves it); OWN_ONLY for other is 403.

Nothing the other tests use changes: "self" is a line this module activates,
tops up once and disconnects (for a real payment and disconnection to read, so
"other" is refused by the owner check behind the lookup, not by a 404 that both
would get). POST bodies are malformed (a refused caller gets 403 anyway, an
allowed one a 422), except where the owner is named in the body: there the body
is valid for self's account and fails after the owner check (an unknown plan or
invoice, or the closed line)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import requests

from shared.authorization import MATRIX, Access, CallerKind, Operation
from shared.payments import SIGNATURE_HEADER, sign_webhook
from tests.activation_data import activation_body
from tests.e2e.conftest import LocalSystem, wait_for

CALLERS = ("anonymous", "self", "other", "agent", "admin")
MALFORMED = {"matrix_probe": ["not", "a", "valid", "body"]}
WEBHOOK = Operation("POST", "/payments/webhook")
WEBHOOK_SECRET_SUFFIX = "payment-gateway-webhook-secret"


@dataclass(frozen=True)
class World:
    """The callers' tokens and the ids every path parameter is filled from."""

    system: LocalSystem
    tokens: dict[str, str | None]
    parameters: dict[str, str]
    webhook: tuple[bytes, str]  # a body and the gateway's signature of it

    @property
    def self_id(self) -> str:
        return self.parameters["user_id"]


@pytest.fixture(scope="module")
def world(local_system: LocalSystem) -> World:
    agent = local_system.token("agent-matrix", "agent")
    accepted = local_system.post(
        "/activate-sim", activation_body(plan_id="PRE_SMART_299"), agent, str(uuid.uuid4())
    )
    assert accepted.status_code == 202, accepted.text
    user_id, activation_id = accepted.json()["user_id"], accepted.json()["activation_id"]

    def active() -> bool:
        status = local_system.get(f"/activations/{activation_id}", agent).json()["status"]
        return bool(status == "ACTIVE")

    wait_for(active, timeout=60, what="the matrix subscriber's activation")
    owner = local_system.token(user_id, "subscriber")
    tokens: dict[str, str | None] = {
        "anonymous": None,
        "self": owner,
        "other": local_system.token(f"other-{uuid.uuid4().hex[:8]}", "subscriber"),
        "agent": agent,
        "admin": local_system.token("admin-matrix", "admin"),
    }
    topup = {"user_id": user_id, "method": "UPI", "vpa": "matrix@okhdfc", "amount_paise": 1000}
    payment = local_system.post("/payments", topup, owner, str(uuid.uuid4()))
    assert payment.status_code == 202, payment.text
    closing = local_system.post(
        f"/service-control/disconnect/{user_id}", {"reason": "USER_REQUEST"}, owner
    )
    assert closing.status_code == 202, closing.text
    parameters = {
        "user_id": user_id,
        "activation_id": activation_id,
        "plan_id": "PRE_SMART_299",
        "invoice_id": f"INV-{user_id}-2026-01-01",  # its owner is in the id: no invoice needed
        "payment_id": payment.json()["payment_id"],
        "disconnection_id": closing.json()["disconnection_id"],
    }
    return World(local_system, tokens, parameters, _signed_webhook(local_system))


@pytest.fixture(scope="module")
def operations(local_system: LocalSystem) -> set[Operation]:
    document = requests.get(local_system.api_url + "/openapi.json", timeout=60).json()
    return {
        Operation(method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }


def test_every_operation_of_the_api_has_a_row_in_the_matrix(operations: set[Operation]) -> None:
    missing = sorted(str(operation) for operation in operations - set(MATRIX))
    assert missing == [], f"operations without an authorization matrix entry: {missing}"


def test_every_row_of_the_matrix_is_an_operation_of_the_api(operations: set[Operation]) -> None:
    stale = sorted(str(operation) for operation in set(MATRIX) - operations)
    assert stale == [], f"matrix entries the API does not serve: {stale}"


def test_every_operation_answers_every_caller_as_the_matrix_says(
    world: World, operations: set[Operation]
) -> None:
    wrong = []
    for operation in sorted(operations & set(MATRIX)):
        for caller in CALLERS:
            expected = _expected(operation, caller)
            response = _call(world, operation, caller)
            if not _answers(response, expected):
                got = f"{response.status_code} {response.text[:160]}"
                wrong.append(f"{operation} as {caller}: expected {expected}, got {got}")
    assert wrong == [], "\n".join(wrong)


# --- what the matrix expects, and what each call sends -----------------------------------


def _expected(operation: Operation, caller: str) -> str:
    rule = MATRIX[operation]
    kind = CallerKind.SUBSCRIBER if caller in {"self", "other"} else CallerKind(caller)
    access = rule.access(kind)
    if access is Access.ALLOWED or (access is Access.OWN_ONLY and caller == "self"):
        return "through"
    return "401" if caller == "anonymous" else "403"


def _answers(response: requests.Response, expected: str) -> bool:
    if expected == "through":  # past the gate: any answer but a refusal or a crash
        return response.status_code not in {401, 403} and response.status_code < 500
    if response.status_code != int(expected):
        return False
    error = response.json().get("error") or {}
    return bool(error.get("code")) and bool(error.get("message"))  # API.md's error body


def _call(world: World, operation: Operation, caller: str) -> requests.Response:
    path = _path(world, operation)
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    token = world.tokens[caller]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    url = world.system.api_url + path
    if operation.method == "GET":
        return requests.get(url, headers=headers, timeout=30)
    if operation == WEBHOOK:
        raw, signature = world.webhook
        headers.update({SIGNATURE_HEADER: signature, "Content-Type": "application/json"})
        return requests.post(url, data=raw, headers=headers, timeout=30)
    return requests.request(
        operation.method, url, json=_body(world, operation), headers=headers, timeout=30
    )


def _path(world: World, operation: Operation) -> str:
    path = operation.path
    for name in _parameters(path):
        if name not in world.parameters:
            pytest.fail(f"{operation}: no test value for the path parameter {{{name}}}")
        path = path.replace("{" + name + "}", world.parameters[name])
    return path


def _parameters(template: str) -> Iterator[str]:
    for segment in template.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            yield segment[1:-1]


def _body(world: World, operation: Operation) -> Any:
    """Malformed, except where the owner is in the body: there a valid body about
    the subscriber's own account that fails after the owner check (a 404)."""
    owned_by_body = {
        Operation("POST", "/subscribe"): {"user_id": world.self_id, "plan_id": "NO_SUCH_PLAN"},
        Operation("POST", "/upgrade"): {"user_id": world.self_id, "plan_id": "NO_SUCH_PLAN"},
        Operation("POST", "/payments"): {
            "user_id": world.self_id,
            "method": "UPI",
            "vpa": "matrix@okhdfc",
            "invoice_id": world.parameters["invoice_id"],
        },
    }
    return owned_by_body.get(operation, MALFORMED)


def _signed_webhook(system: LocalSystem) -> tuple[bytes, str]:
    """The gateway's signature over a body that is no report: the webhook's own
    check passes, and the answer (422) shows nothing stood in the way."""
    secrets = system.aws("secretsmanager")
    names = [s["Name"] for s in secrets.list_secrets()["SecretList"]]
    (name,) = [n for n in names if n.endswith(WEBHOOK_SECRET_SUFFIX)]
    secret = secrets.get_secret_value(SecretId=name)["SecretString"].encode()
    clock = requests.get(system.api_url + "/_local/clock", timeout=30).json()
    raw = json.dumps({"matrix_probe": True}).encode()
    return raw, sign_webhook(secret, raw, datetime.fromisoformat(clock["now"]))
