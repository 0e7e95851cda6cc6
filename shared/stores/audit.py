"""Audit records in the single table, behind :class:`shared.services.audit.AuditStore`.

| item | PK | SK | notes |
|---|---|---|---|
| audit record | ``AUDIT#<UTC date>`` | ``<UTC time>#<audit_id>`` | GSI1 (1), GSI2 (2) |

(1) ``AUDITUSER#<user_id>`` / the same time key, when a subscriber is concerned.
(2) ``AUDITACTOR#<actor>`` / the same time key.

Written with ``attribute_not_exists``: a redelivered event finds its record and
changes nothing. No TTL: records stay. The application's IAM roles may not
update or delete ``AUDIT#`` items (infra/audit.py); this adapter offers neither.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pynamodb.attributes import UnicodeAttribute
from pynamodb.exceptions import PutError

from shared.audit import AuditRecord
from shared.db import CONDITION_FAILED, GSI1PK, GSI1SK, GSI2PK, GSI2SK, PK, SK, Gsi2, InGsi1, Item
from shared.services.audit import InvalidCursor, Partition, Window, day_of

AUDIT_ENTITY = "audit"


def day_pk(day: str) -> str:
    return f"AUDIT#{day}"


def user_index_pk(user_id: str) -> str:
    return f"AUDITUSER#{user_id}"


def actor_index_pk(actor: str) -> str:
    return f"AUDITACTOR#{actor}"


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def id_pk(audit_id: str) -> str:
    return f"AUDITID#{audit_id}"


ID_SK = "AUDITID"


def time_key(moment: datetime) -> str:
    """Fixed width, UTC: string order is time order."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


class AuditItem(InGsi1):
    gsi2 = Gsi2()
    gsi2pk = UnicodeAttribute(attr_name=GSI2PK, null=True)
    gsi2sk = UnicodeAttribute(attr_name=GSI2SK, null=True)
    record = UnicodeAttribute()  # the AuditRecord as JSON


class AuditIdItem(Item):
    """Which key an audit id was first recorded under: a retried step announces
    its event again, with the same id and a later time."""

    key = UnicodeAttribute()


class DynamoAuditStore:
    def append(self, record: AuditRecord) -> bool:
        """Claim the id (its first key wins), then put the record at that key.
        Both puts are conditional, so a crash between them is repaired by the
        redelivery, and a repeat writes nothing."""
        key = f"{time_key(record.occurred_at)}#{record.audit_id}"
        claim = AuditIdItem(id_pk(record.audit_id), ID_SK, entity=AUDIT_ENTITY, key=key)
        if not _put_new(claim):
            key = AuditIdItem.get(id_pk(record.audit_id), ID_SK, consistent_read=True).key
            record = record.model_copy(update={"occurred_at": _time_of(key)})
        item = AuditItem(
            day_pk(day_of(record.occurred_at).isoformat()),
            key,
            entity=AUDIT_ENTITY,
            gsi1pk=user_index_pk(record.user_id) if record.user_id else None,
            gsi1sk=key if record.user_id else None,
            gsi2pk=actor_index_pk(record.actor),
            gsi2sk=key,
            record=record.model_dump_json(),
        )
        return _put_new(item)

    def read(
        self, window: Window, limit: int, after: dict[str, str] | None
    ) -> tuple[list[AuditRecord], dict[str, str] | None]:
        # Every record of the window sorts between these: "<time>#<id>" keys.
        low, high = time_key(window.start), time_key(window.end)
        start_key = _start_key(window, after)
        query: Any
        if window.partition is Partition.DAY:
            query = AuditItem.query(
                day_pk(window.value),
                AuditItem.sk.between(low, high),
                limit=limit,
                last_evaluated_key=start_key,
            )
        else:
            index, hash_key, range_key = (
                (AuditItem.gsi1, user_index_pk(window.value), AuditItem.gsi1sk)
                if window.partition is Partition.USER
                else (AuditItem.gsi2, actor_index_pk(window.value), AuditItem.gsi2sk)
            )
            query = index.query(
                hash_key,
                range_key.between(low, high),
                limit=limit,
                last_evaluated_key=start_key,
            )
        records = [AuditRecord.model_validate_json(item.record) for item in query]
        return records, _flat(query.last_evaluated_key)


def _start_key(window: Window, after: dict[str, str] | None) -> dict[str, Any] | None:
    """A cursor's key in DynamoDB's form, checked to be one this window's query
    returns: DynamoDB fails the query (a 500, not a 422) on a start key of another
    shape or outside the key condition's range."""
    if after is None:
        return None
    hash_attribute, range_attribute, hash_key = _PARTITION_KEYS[window.partition]
    position = after.get(range_attribute, "")
    if (
        set(after) != {PK, SK, hash_attribute, range_attribute}
        or after[hash_attribute] != hash_key(window.value)
        or not time_key(window.start) <= position <= time_key(window.end)
        or after[SK] != position
        or after[PK] != day_pk(position[:10])  # the UTC date the time key starts with
    ):
        raise InvalidCursor("the cursor belongs to another query")
    return {name: {"S": value} for name, value in after.items()}


def _flat(key: dict[str, Any] | None) -> dict[str, str] | None:
    """DynamoDB's last evaluated key as plain strings (every key attribute is one)."""
    if not key:
        return None
    return {name: value["S"] if isinstance(value, dict) else value for name, value in key.items()}


_PARTITION_KEYS = {
    Partition.DAY: (PK, SK, day_pk),
    Partition.USER: (GSI1PK, GSI1SK, user_index_pk),
    Partition.ACTOR: (GSI2PK, GSI2SK, actor_index_pk),
}


def _put_new(item: Item) -> bool:
    """Put unless the key exists; whether it was put."""
    try:
        item.save(condition=Item.pk.does_not_exist())
    except PutError as error:
        if error.cause_response_code == CONDITION_FAILED:
            return False
        raise
    return True


def _time_of(key: str) -> datetime:
    return datetime.strptime(key.partition("#")[0], TIME_FORMAT).replace(tzinfo=UTC)
