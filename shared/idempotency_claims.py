"""Idempotency claims that name the attempt which wrote them.

Powertools claims a key with a conditional PutItem: no record yet, or an expired
one. When DynamoDB applies that PutItem but its answer is lost (a timeout), the
SDK sends it again and the condition fails on the attempt's own claim. Powertools
then tells the attempt holding the key that the key is "in progress", and so it
tells each of the client's retries, until the claim's in-progress expiry (the
function's timeout) lapses: seconds of refusals with nobody working on the key.

Here each attempt writes a token of its own into its claim, and may write over a
claim holding that same token, so the resent PutItem succeeds as the first would
have. A claim of another attempt (one still running, or one that crashed) still
holds the key until it expires.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import boto3

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

CLAIM_OWNER_ATTRIBUTE = "claim_owner"
_PUT_ITEM_PARAMETERS = "before-parameter-build.dynamodb.PutItem"


class ClaimOwner:
    """Marks the claims written through one client with the current attempt's token."""

    def __init__(self) -> None:
        self._token: ContextVar[str | None] = ContextVar("idempotency_claim_owner", default=None)

    def client(self) -> DynamoDBClient:
        """A DynamoDB client for the idempotency records, its claims marked."""
        client = boto3.client("dynamodb")
        client.meta.events.register(_PUT_ITEM_PARAMETERS, self._mark_claim)
        return client

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Claims written inside are this attempt's (a token of its own)."""
        reset = self._token.set(uuid.uuid4().hex)
        try:
            yield
        finally:
            self._token.reset(reset)

    def _mark_claim(self, params: dict[str, Any], **_: Any) -> None:
        token = self._token.get()
        if token is None or "ConditionExpression" not in params:
            return  # not a claim: no attempt, or an unconditional write
        params["Item"][CLAIM_OWNER_ATTRIBUTE] = {"S": token}
        params["ConditionExpression"] = (
            f"({params['ConditionExpression']}) OR #claim_owner = :claim_owner"
        )
        params["ExpressionAttributeNames"] = {
            **params.get("ExpressionAttributeNames", {}),
            "#claim_owner": CLAIM_OWNER_ATTRIBUTE,
        }
        params["ExpressionAttributeValues"] = {
            **params.get("ExpressionAttributeValues", {}),
            ":claim_owner": {"S": token},
        }
