"""Every API handler's OpenAPI document says what its routes can answer, so a
client (and schemathesis, tests/fuzz) can rely on it: the error statuses every
route can return, in the API's error shape, and the Idempotency-Key header of
every state-changing POST."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
API_MODULES = sorted(
    f"functions.{path.parent.name}.handler"
    for path in FUNCTIONS.glob("*/handler.py")
    if "app = create_resolver()" in path.read_text()
)
OPEN = {("get", "/health"), ("post", "/payments/webhook")}  # no bearer token (API.md)
ERROR_BODY = "#/components/schemas/ErrorBody"


def operations(module: str) -> list[tuple[str, str, dict[str, Any]]]:
    # What the local gateway merges into /openapi.json.
    document = json.loads(importlib.import_module(module).app.get_openapi_json_schema())
    return [
        (method, path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_api_module_is_checked() -> None:
    assert len(API_MODULES) >= 6, API_MODULES


@pytest.mark.parametrize("module", API_MODULES)
def test_every_error_status_is_documented_with_the_error_body(module: str) -> None:
    for method, path, operation in operations(module):
        responses = operation["responses"]
        expected = {"422"}
        if (method, path) not in OPEN:
            expected |= {"401", "403"}
        if "{" in path:
            expected.add("404")  # an unknown id, or one the route cannot match
        if "requestBody" in operation:
            expected.add("415")
        missing = expected - set(responses)
        assert not missing, f"{method.upper()} {path} does not document {sorted(missing)}"
        for status, response in responses.items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema.get("$ref") == ERROR_BODY, f"{method.upper()} {path} {status}"


@pytest.mark.parametrize("module", API_MODULES)
def test_every_state_changing_post_documents_the_idempotency_key(module: str) -> None:
    for method, path, operation in operations(module):
        if method != "post" or (method, path) in OPEN:
            continue  # the webhook is idempotent on the gateway's transaction id
        headers = {
            parameter["name"].lower()
            for parameter in operation.get("parameters", [])
            if parameter["in"] == "header"
        }
        assert "idempotency-key" in headers, f"POST {path}"
