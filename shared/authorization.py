"""Who may call what: the API's authorization matrix (operation x caller kind),
and the decision the HTTP edge (:mod:`shared.web`) takes from it before a
request is validated or a handler runs.

``OWN_ONLY`` means a subscriber reaches only their own account. The gate checks
that itself when the route names the account in its path (``{user_id}``). When
the owner is in the body or behind the resource's id, the service checks it once
it knows the owner, and the matrix says where (``Rule.owner``). Finer rules (which
block reasons an owner may apply, which disconnection reasons need an admin)
stay with their services; ``Rule.note`` points to them.

``python -m shared.authorization`` prints the README's table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from shared.auth import Principal, Role
from shared.errors import Forbidden, Unauthorized

OWNER_PARAMETER = "user_id"  # the path parameter that names the account


class Access(StrEnum):
    ALLOWED = "allowed"
    OWN_ONLY = "own only"
    DENIED = "denied"


class CallerKind(StrEnum):
    ANONYMOUS = "anonymous"
    SUBSCRIBER = "subscriber"
    AGENT = "agent"
    ADMIN = "admin"


class Operation(NamedTuple):
    method: str
    path: str  # the route template, as in the OpenAPI document: /users/{user_id}

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Rule:
    anonymous: Access
    subscriber: Access
    agent: Access
    admin: Access
    owner: str = ""  # OWN_ONLY without {user_id} in the path: where the service finds the owner
    note: str = ""  # finer rules, enforced where they are written

    def access(self, kind: CallerKind) -> Access:
        return {
            CallerKind.ANONYMOUS: self.anonymous,
            CallerKind.SUBSCRIBER: self.subscriber,
            CallerKind.AGENT: self.agent,
            CallerKind.ADMIN: self.admin,
        }[kind]


YES, OWN, NO = Access.ALLOWED, Access.OWN_ONLY, Access.DENIED
# Where a service finds the owner (Rule.owner), and finer rules (Rule.note).
BODY_USER, INVOICE, PAYMENT = "body `user_id`", "invoice id", "payment's owner"
HMAC = "no bearer token: the gateway's HMAC signature (Payments)"
BLOCK = "the owner: LOST_SIM or THEFT with a verified OTP (Service control)"
LIFT = "per reason (Service control)"
END = "the owner: USER_REQUEST only; FRAUD: an admin only (Service control)"

# fmt: off
MATRIX: Mapping[Operation, Rule] = {
    #                                                        anonymous subscriber agent admin
    Operation("GET", "/health"):                                Rule(YES, YES, YES, YES),
    Operation("POST", "/payments/webhook"):                     Rule(YES, YES, YES, YES, note=HMAC),
    Operation("GET", "/plans"):                                 Rule(NO, YES, YES, YES),
    Operation("GET", "/plans/{plan_id}"):                       Rule(NO, YES, YES, YES),
    Operation("POST", "/subscribe"):                            Rule(NO, OWN, YES, NO, BODY_USER),
    Operation("POST", "/upgrade"):                              Rule(NO, OWN, YES, NO, BODY_USER),
    Operation("POST", "/activate-sim"):                         Rule(NO, NO, YES, YES),
    Operation("GET", "/activations/{activation_id}"):           Rule(NO, NO, YES, YES),
    Operation("GET", "/users/{user_id}"):                       Rule(NO, OWN, YES, YES),
    Operation("GET", "/users/{user_id}/usage"):                 Rule(NO, OWN, YES, YES),
    Operation("GET", "/users/{user_id}/invoices"):              Rule(NO, OWN, YES, YES),
    Operation("GET", "/invoices/{invoice_id}"):                 Rule(NO, OWN, YES, YES, INVOICE),
    Operation("GET", "/invoices/{invoice_id}/pdf"):             Rule(NO, OWN, YES, YES, INVOICE),
    Operation("POST", "/invoices/{invoice_id}/credit-notes"):   Rule(NO, NO, NO, YES),
    Operation("POST", "/payments"):                             Rule(NO, OWN, YES, NO, BODY_USER),
    Operation("GET", "/payments/{payment_id}"):                 Rule(NO, OWN, YES, YES, PAYMENT),
    Operation("POST", "/users/{user_id}/autopay"):              Rule(NO, OWN, NO, NO),
    Operation("POST", "/service-control/block/{user_id}"):      Rule(NO, OWN, YES, YES, note=BLOCK),
    Operation("POST", "/service-control/unblock/{user_id}"):    Rule(NO, NO, YES, YES, note=LIFT),
    Operation("GET", "/service-control/status/{user_id}"):      Rule(NO, OWN, YES, YES),
    Operation("POST", "/service-control/disconnect/{user_id}"): Rule(NO, OWN, YES, YES, note=END),
    Operation("GET", "/service-control/disconnections/{disconnection_id}"): Rule(
        NO, OWN, YES, YES, "disconnection's owner"),
    Operation("POST", "/service-control/otp/{user_id}"):        Rule(NO, OWN, NO, NO),
    Operation("POST", "/service-control/otp/{user_id}/verify"): Rule(NO, OWN, NO, NO),
    Operation("POST", "/users/{user_id}/sim-replacement"):      Rule(NO, NO, YES, YES),
    Operation("GET", "/audit"):                                 Rule(NO, NO, NO, YES),
}
# fmt: on

_KIND_OF_ROLE = {
    Role.SUBSCRIBER: CallerKind.SUBSCRIBER,
    Role.AGENT: CallerKind.AGENT,
    Role.ADMIN: CallerKind.ADMIN,
}
_RANK = {Access.DENIED: 0, Access.OWN_ONLY: 1, Access.ALLOWED: 2}


def caller_kinds(principal: Principal | None) -> frozenset[CallerKind]:
    """Anyone may do what an anonymous caller may; roles add to that. Roles that
    are not API roles (``service``: workflows) add nothing."""
    kinds = {CallerKind.ANONYMOUS}
    if principal is not None:
        kinds.update(_KIND_OF_ROLE[role] for role in principal.roles if role in _KIND_OF_ROLE)
    return frozenset(kinds)


def access_of(rule: Rule, principal: Principal | None) -> Access:
    """The widest access any of the caller's kinds has."""
    return max((rule.access(kind) for kind in caller_kinds(principal)), key=_RANK.__getitem__)


def authorize(
    operation: Operation,
    principal: Principal | None,
    path_parameters: Mapping[str, str],
    matrix: Mapping[Operation, Rule] = MATRIX,
) -> None:
    """Raise :class:`Unauthorized` (no caller where one is needed) or
    :class:`Forbidden` unless the matrix lets this caller call this operation.
    An operation the matrix does not list is refused to everyone."""
    rule = matrix.get(operation)
    if rule is not None and rule.anonymous is Access.ALLOWED:
        return
    if principal is None:
        raise Unauthorized("missing caller identity")
    if rule is None:
        raise Forbidden(f"{operation} is not in the authorization matrix")
    access = access_of(rule, principal)
    if access is Access.DENIED:
        raise Forbidden(f"this action is for: {_who(rule)}")
    owner = path_parameters.get(OWNER_PARAMETER)
    if access is Access.OWN_ONLY and owner is not None and owner != principal.subject:
        raise Forbidden("you may only access your own account")


def _who(rule: Rule) -> str:
    named = [
        f"{kind.value} (own account)" if rule.access(kind) is Access.OWN_ONLY else kind.value
        for kind in CallerKind
        if rule.access(kind) is not Access.DENIED
    ]
    return ", ".join(named) or "nobody"


# --- the README's table ------------------------------------------------------------------

_CELL = {Access.ALLOWED: "yes", Access.OWN_ONLY: "own", Access.DENIED: "—"}


def markdown_table(matrix: Mapping[Operation, Rule] = MATRIX) -> str:
    """The matrix as the README shows it, one row per operation in path order."""
    kinds = list(CallerKind)
    lines = [
        "| method | path | " + " | ".join(kind.value for kind in kinds) + " | notes |",
        "|---|---|" + "---|" * len(kinds) + "---|",
    ]
    for operation in sorted(matrix, key=lambda op: (op.path, op.method)):
        rule = matrix[operation]
        cells = [_cell(rule, kind) for kind in kinds]
        row = [operation.method, f"`{operation.path}`", *cells, rule.note]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _cell(rule: Rule, kind: CallerKind) -> str:
    access = rule.access(kind)
    if access is Access.OWN_ONLY and rule.owner:
        return f"own ({rule.owner})"
    return _CELL[access]


if __name__ == "__main__":
    print(markdown_table())
