"""Idempotency claims that name the attempt which wrote them.

Powertools claims a key with a conditional PutItem: no record yet, or an expired
one. When DynamoDB applies that PutItem but its answer is lost (a timeout), the
SDK sends it again and the condition fails on the attempt's own claim. Powertools
then tells the attempt holding the key that the key is "in progress", and so it
tells each of the client's retries, until the claim's in-progress expiry (the
function's timeout) lapses: seconds of refusals with nobody working on the key.

Here each attempt writes a token of its own into its claim, and may write over a
claim still in progress that holds that same token, so the resent PutItem
succeeds as the first would have. A claim of another attempt (one still running,
or one that crashed) still holds the key until it expires, and a finished record
stays as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS

CLAIM_OWNER_ATTRIBUTE = "claim_owner"
IN_PROGRESS = STATUS_CONSTANTS["INPROGRESS"]
_PUT_ITEM_PARAMETERS = "before-parameter-build.dynamodb.PutItem"


class ClaimOwner:
    """Marks the claims a persistence layer writes with the current attempt's token."""

    def __init__(self, persistence: DynamoDBPersistenceLayer) -> None:
        self._status_attribute = persistence.status_attr
        self._token: ContextVar[str | None] = ContextVar("idempotency_claim_owner", default=None)
        persistence.client.meta.events.register(_PUT_ITEM_PARAMETERS, self.mark_claim)

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Claims written inside are this attempt's (a token of its own)."""
        reset = self._token.set(uuid.uuid4().hex)
        try:
            yield
        finally:
            self._token.reset(reset)

    def mark_claim(self, params: dict[str, Any], **_: Any) -> None:
        """botocore's hook on a PutItem's parameters: a claim made inside an attempt
        carries its token, and may replace a claim of the same token that is still
        in progress (never a finished record: a late copy of the first PutItem
        must not undo the answer stored since)."""
        token = self._token.get()
        if token is None or "ConditionExpression" not in params:
            return  # not a claim: no attempt, or an unconditional write
        params["Item"][CLAIM_OWNER_ATTRIBUTE] = {"S": token}
        params["ConditionExpression"] = (
            f"({params['ConditionExpression']}) OR "
            "(#claim_owner = :claim_owner AND #claim_status = :claim_in_progress)"
        )
        params["ExpressionAttributeNames"] = {
            **params.get("ExpressionAttributeNames", {}),
            "#claim_owner": CLAIM_OWNER_ATTRIBUTE,
            "#claim_status": self._status_attribute,
        }
        params["ExpressionAttributeValues"] = {
            **params.get("ExpressionAttributeValues", {}),
            ":claim_owner": {"S": token},
            ":claim_in_progress": {"S": IN_PROGRESS},
        }
