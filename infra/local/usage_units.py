"""How AWS meters a request, as billing units: pure arithmetic on request and
response bodies, for :mod:`infra.local.meter`.

DynamoDB (on-demand), from the developer guide's "item sizes" and "read/write
request units" pages:

* item size: attribute names plus values; a number is 1 byte per 2 significant
  digits plus 1; a list or map 3 bytes plus 1 byte per element; null and booleans 1.
* a read: ``ceil(size / 4 KB)`` units per item, half of that when eventually
  consistent, twice in TransactGetItems; a miss costs the minimum (0.5 or 1).
  Query and Scan: ``ceil(sum of the page's item sizes / 4 KB)``, same factors.
* a write: ``ceil(size / 1 KB)`` units per item, the size being the larger of the
  item before and after the write (a delete, a failed condition or a condition
  check: the item as it is), at least 1; twice inside TransactWriteItems.

Kinesis bills 25 KB PUT payload units per record, SQS every API call per 64 KB of
payload, EventBridge every PutEvents entry per 64 KB, Lambda GB-seconds with the
duration rounded up to the millisecond.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

KB = 1024
READ_UNIT_BYTES = 4 * KB
WRITE_UNIT_BYTES = KB
KINESIS_PAYLOAD_UNIT_BYTES = 25 * KB
SQS_PAYLOAD_CHUNK_BYTES = 64 * KB
EVENTBRIDGE_CHUNK_BYTES = 64 * KB
EVENT_TIME_BYTES = 14  # an entry's Time counts as 14 bytes when present
TRANSACTION_FACTOR = 2
CONTAINER_OVERHEAD_BYTES = 3
ELEMENT_OVERHEAD_BYTES = 1

AttributeValue = Mapping[str, Any]  # DynamoDB JSON: {"S": "x"}, {"N": "1"}, {"M": {...}}
Item = Mapping[str, AttributeValue]


# --- DynamoDB item sizes -----------------------------------------------------


def item_size(item: Item) -> int:
    """Bytes DynamoDB counts for an item in DynamoDB JSON."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def value_size(value: AttributeValue) -> int:
    ((kind, raw),) = value.items()
    if kind in _SCALAR_SIZES:
        return _SCALAR_SIZES[kind](raw)
    if kind in ("SS", "NS", "BS"):
        return sum(_SCALAR_SIZES[kind[0]](element) for element in raw)
    if kind == "L":
        elements = [value_size(element) for element in raw]
    elif kind == "M":
        elements = [len(name.encode()) + value_size(element) for name, element in raw.items()]
    else:
        raise ValueError(f"not a DynamoDB attribute value: {kind}")
    return CONTAINER_OVERHEAD_BYTES + sum(elements) + ELEMENT_OVERHEAD_BYTES * len(elements)


def number_size(text: str) -> int:
    """1 byte per two significant digits, plus 1 (leading and trailing zeros trimmed)."""
    try:
        digits = Decimal(text).normalize().as_tuple().digits
    except InvalidOperation:
        return len(text.encode())
    significant = len(digits) if any(digits) else 1
    return math.ceil(significant / 2) + 1


def _binary_size(raw: Any) -> int:
    """Raw bytes: JSON carries them base64-encoded, moto's backend as bytes."""
    if isinstance(raw, bytes | bytearray):
        return len(raw)
    return len(base64.b64decode(str(raw)))


_SCALAR_SIZES: dict[str, Callable[[Any], int]] = {
    "S": lambda raw: len(str(raw).encode()),
    "N": lambda raw: number_size(str(raw)),
    "B": _binary_size,
    "BOOL": lambda _: 1,
    "NULL": lambda _: 1,
}


# --- DynamoDB request units --------------------------------------------------


def read_half_units(size: int, *, consistent: bool, transactional: bool = False) -> int:
    """Read request units of one item (or one Query/Scan page), in HALF units so
    sums stay exact integers; a miss (size 0) costs the minimum."""
    whole = max(1, math.ceil(size / READ_UNIT_BYTES))
    if transactional:
        return 2 * TRANSACTION_FACTOR * whole
    return 2 * whole if consistent else whole


def write_units(size_before: int, size_after: int, *, transactional: bool = False) -> int:
    units = max(1, math.ceil(max(size_before, size_after) / WRITE_UNIT_BYTES))
    return TRANSACTION_FACTOR * units if transactional else units


@dataclass(frozen=True)
class ItemRef:
    """One item a request names: its table and its key (or the whole item for a put)."""

    table: str
    key: Item
    transactional: bool = False
    consistent: bool = False


class StoredItems(Protocol):
    def size(self, ref: ItemRef) -> int:
        """Size of the stored item ``ref`` names; 0 when there is none."""
        ...


def written_items(operation: str, request: Mapping[str, Any]) -> list[ItemRef]:
    """The items a write request touches (ConditionChecks included)."""
    if operation == "PutItem":
        return [ItemRef(request["TableName"], request["Item"])]
    if operation in ("UpdateItem", "DeleteItem"):
        return [ItemRef(request["TableName"], request["Key"])]
    if operation == "BatchWriteItem":
        return [
            ItemRef(table, _batch_write_key(action))
            for table, actions in request["RequestItems"].items()
            for action in actions
        ]
    if operation == "TransactWriteItems":
        refs = []
        for transact_item in request["TransactItems"]:
            ((_, action),) = transact_item.items()
            key = action.get("Key") or action["Item"]
            refs.append(ItemRef(action["TableName"], key, transactional=True))
        return refs
    return []


def _batch_write_key(action: Mapping[str, Any]) -> Item:
    if "PutRequest" in action:
        return dict(action["PutRequest"]["Item"])
    return dict(action["DeleteRequest"]["Key"])


def point_reads(operation: str, request: Mapping[str, Any]) -> list[ItemRef]:
    """The items a GetItem, BatchGetItem or TransactGetItems reads."""
    if operation == "GetItem":
        consistent = bool(request.get("ConsistentRead"))
        return [ItemRef(request["TableName"], request["Key"], consistent=consistent)]
    if operation == "BatchGetItem":
        return [
            ItemRef(table, key, consistent=bool(wanted.get("ConsistentRead")))
            for table, wanted in request["RequestItems"].items()
            for key in wanted["Keys"]
        ]
    if operation == "TransactGetItems":
        return [
            ItemRef(entry["Get"]["TableName"], entry["Get"]["Key"], transactional=True)
            for entry in request["TransactItems"]
        ]
    return []


def page_read_half_units(response: Mapping[str, Any], *, consistent: bool) -> int:
    """A Query or Scan page: its items' sizes summed, then rounded up once. The
    items as returned: a filter or a projection makes this an underestimate
    (DynamoDB bills the items read before filtering, whole)."""
    size = sum(item_size(item) for item in response.get("Items", ()))
    return read_half_units(size, consistent=consistent)


# --- other services ----------------------------------------------------------


def kinesis_payload_units(records: Iterable[Mapping[str, Any]]) -> int:
    """PutRecord(s) records (``Data`` base64 as sent, ``PartitionKey``): 25 KB units each."""
    return sum(
        max(1, math.ceil(_record_bytes(record) / KINESIS_PAYLOAD_UNIT_BYTES)) for record in records
    )


def _record_bytes(record: Mapping[str, Any]) -> int:
    return base64_length(str(record.get("Data", ""))) + len(
        str(record.get("PartitionKey", "")).encode()
    )


def base64_length(encoded: str) -> int:
    """Decoded length of a base64 string, without decoding it."""
    stripped = encoded.rstrip()
    return len(stripped) * 3 // 4 - (len(stripped) - len(stripped.rstrip("=")))


def sqs_billed_requests(payload_bytes: int) -> int:
    """One API call is billed as one request per started 64 KB of payload."""
    return max(1, math.ceil(payload_bytes / SQS_PAYLOAD_CHUNK_BYTES))


def sqs_message_bytes(message: Mapping[str, Any]) -> int:
    """A message's body plus its attributes (names, types and values)."""
    size = len(str(message.get("MessageBody", message.get("Body", ""))).encode())
    for name, attribute in (message.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(str(attribute.get("DataType", "")).encode())
        if "StringValue" in attribute:
            size += len(str(attribute["StringValue"]).encode())
        elif "BinaryValue" in attribute:
            size += base64_length(str(attribute["BinaryValue"]))
    return size


def eventbridge_billed_events(entries: Iterable[Mapping[str, Any]]) -> int:
    """Every PutEvents entry counts one event per started 64 KB."""
    return sum(
        max(1, math.ceil(event_entry_bytes(entry) / EVENTBRIDGE_CHUNK_BYTES)) for entry in entries
    )


def event_entry_bytes(entry: Mapping[str, Any]) -> int:
    """EventBridge's entry size: Time (14 bytes), Source, DetailType, Detail, Resources."""
    size = EVENT_TIME_BYTES if entry.get("Time") is not None else 0
    for field in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(field, "")).encode())
    return size + sum(len(str(resource).encode()) for resource in entry.get("Resources", ()))


def lambda_mb_milliseconds(duration_seconds: float, memory_mb: int) -> int:
    """MB-ms of one invocation, the duration rounded up to the millisecond as Lambda bills
    (an integer, so sums stay exact; GB-s = MB-ms / 1024 / 1000)."""
    milliseconds = math.ceil(round(duration_seconds * 1000, 6))
    return max(1, milliseconds) * memory_mb
