"""The authorization matrix (shared.authorization): the decision per caller, the
matrix's own consistency, and the README's copy of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.auth import Principal, Role
from shared.authorization import (
    MATRIX,
    OWNER_PARAMETER,
    Access,
    CallerKind,
    Operation,
    Rule,
    authorize,
    markdown_table,
)
from shared.errors import Forbidden, Unauthorized

README = Path(__file__).resolve().parents[2] / "README.md"
README_TABLE = re.compile(
    r"<!-- authorization-matrix:start -->\n(.*?)\n<!-- authorization-matrix:end -->", re.S
)

HEALTH = Operation("GET", "/health")
USAGE = Operation("GET", "/users/{user_id}/usage")
ACTIVATE = Operation("POST", "/activate-sim")
CREDIT_NOTE = Operation("POST", "/invoices/{invoice_id}/credit-notes")
PAY = Operation("POST", "/payments")
AUTOPAY = Operation("POST", "/users/{user_id}/autopay")


def who(subject: str, *roles: Role) -> Principal:
    return Principal(subject, frozenset(roles))


OWNER = who("u1", Role.SUBSCRIBER)
STRANGER = who("u2", Role.SUBSCRIBER)
AGENT = who("a1", Role.AGENT)
ADMIN = who("ad1", Role.ADMIN)


# --- decisions ---------------------------------------------------------------------------


def test_anyone_reaches_an_open_route_without_a_token() -> None:
    authorize(HEALTH, None, {})
    authorize(Operation("POST", "/payments/webhook"), None, {})


@pytest.mark.parametrize("operation", [USAGE, ACTIVATE, CREDIT_NOTE, PAY])
def test_no_caller_on_a_protected_route_is_unauthorized(operation: Operation) -> None:
    with pytest.raises(Unauthorized):
        authorize(operation, None, {"user_id": "u1"})


def test_a_subscriber_reaches_their_own_account_only() -> None:
    authorize(USAGE, OWNER, {"user_id": "u1"})
    with pytest.raises(Forbidden, match="your own account"):
        authorize(USAGE, STRANGER, {"user_id": "u1"})


@pytest.mark.parametrize("staff", [AGENT, ADMIN], ids=["agent", "admin"])
def test_staff_reach_any_account(staff: Principal) -> None:
    authorize(USAGE, staff, {"user_id": "u1"})


def test_a_refusal_names_who_may_call() -> None:
    with pytest.raises(Forbidden) as refused:
        authorize(ACTIVATE, OWNER, {})
    assert refused.value.message == "this action is for: agent, admin"
    with pytest.raises(Forbidden) as owner_only:
        authorize(AUTOPAY, AGENT, {"user_id": "u1"})
    assert owner_only.value.message == "this action is for: subscriber (own account)"


def test_an_agent_is_not_an_admin_and_an_admin_is_not_an_agent() -> None:
    authorize(CREDIT_NOTE, ADMIN, {"invoice_id": "INV-u1-2026-12-01"})
    with pytest.raises(Forbidden):
        authorize(CREDIT_NOTE, AGENT, {"invoice_id": "INV-u1-2026-12-01"})
    authorize(PAY, AGENT, {})
    with pytest.raises(Forbidden):
        authorize(PAY, ADMIN, {})  # API.md: the owner or an agent pays


def test_the_owner_behind_a_body_or_an_id_is_left_to_the_service() -> None:
    """The gate cannot know whose body or payment it is: it lets the subscriber
    kind through, and the service compares once it has read the owner."""
    authorize(PAY, STRANGER, {})
    authorize(Operation("GET", "/payments/{payment_id}"), STRANGER, {"payment_id": "PAY-1"})


def test_several_roles_give_the_widest_access() -> None:
    both = who("u2", Role.SUBSCRIBER, Role.AGENT)
    authorize(USAGE, both, {"user_id": "u1"})  # as an agent, not limited to u2
    authorize(AUTOPAY, both, {"user_id": "u2"})  # as the owner, which an agent may not


@pytest.mark.parametrize(
    "principal",
    [who("u1"), who("wf", Role.SERVICE)],
    ids=["no-role", "service-role"],
)
def test_a_token_without_an_api_role_gets_only_what_anyone_gets(principal: Principal) -> None:
    authorize(HEALTH, principal, {})
    for operation in (Operation("GET", "/plans"), USAGE, ACTIVATE):
        with pytest.raises(Forbidden):
            authorize(operation, principal, {"user_id": "u1"})


def test_an_operation_missing_from_the_matrix_is_refused_to_everyone() -> None:
    unlisted = Operation("DELETE", "/users/{user_id}")
    with pytest.raises(Unauthorized):
        authorize(unlisted, None, {"user_id": "u1"})
    for principal in (OWNER, AGENT, ADMIN):
        with pytest.raises(Forbidden, match="not in the authorization matrix"):
            authorize(unlisted, principal, {"user_id": "u1"})


def test_a_matrix_is_data_the_decision_only_reads() -> None:
    matrix = {HEALTH: Rule(Access.DENIED, Access.DENIED, Access.DENIED, Access.ALLOWED)}
    authorize(HEALTH, ADMIN, {}, matrix)
    with pytest.raises(Forbidden):
        authorize(HEALTH, AGENT, {}, matrix)
    with pytest.raises(Forbidden):
        authorize(USAGE, ADMIN, {"user_id": "u1"}, matrix)


# --- the matrix itself -------------------------------------------------------------------


@pytest.mark.parametrize("operation", list(MATRIX), ids=str)
def test_every_own_only_rule_says_how_the_owner_is_checked(operation: Operation) -> None:
    """Either the gate checks the path's user_id, or Rule.owner names where the
    service finds the owner; never both, never neither."""
    rule = MATRIX[operation]
    own = any(rule.access(kind) is Access.OWN_ONLY for kind in CallerKind)
    in_path = "{" + OWNER_PARAMETER + "}" in operation.path
    assert bool(rule.owner) == (own and not in_path), rule


@pytest.mark.parametrize("operation", list(MATRIX), ids=str)
def test_only_a_subscriber_can_be_limited_to_their_own_account(operation: Operation) -> None:
    rule = MATRIX[operation]
    for kind in (CallerKind.ANONYMOUS, CallerKind.AGENT, CallerKind.ADMIN):
        assert rule.access(kind) is not Access.OWN_ONLY


def test_what_is_open_to_anyone_is_open_to_every_caller() -> None:
    for operation, rule in MATRIX.items():
        if rule.anonymous is Access.ALLOWED:
            assert {rule.access(kind) for kind in CallerKind} == {Access.ALLOWED}, operation


def test_operations_are_methods_and_route_templates() -> None:
    for operation in MATRIX:
        assert operation.method in {"GET", "POST", "PUT", "PATCH", "DELETE"}
        assert re.fullmatch(r"(/([a-z0-9-]+|\{[a-z_]+\}))+", operation.path), operation


def test_the_readme_shows_this_matrix() -> None:
    shown = README_TABLE.search(README.read_text())
    assert shown is not None, "README.md lost its authorization-matrix markers"
    assert shown.group(1) == markdown_table(), (
        "README.md's 'Who may call what' table is stale: replace it with the output "
        "of `python -m shared.authorization`"
    )
