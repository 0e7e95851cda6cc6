"""The billing arithmetic of the usage meter (infra/local/usage_units.py)."""

from __future__ import annotations

import base64

import pytest

from infra.local import usage_units as units


@pytest.mark.parametrize(
    ("item", "size"),
    [
        ({"PK": {"S": "USER#1"}}, 2 + 6),
        ({"name": {"S": "é"}}, 4 + 2),  # UTF-8 bytes
        ({"n": {"N": "123.450"}}, 1 + 4),  # 5 significant digits: 3 bytes + 1
        ({"n": {"N": "0.000100"}}, 1 + 2),  # leading and trailing zeros trimmed
        ({"n": {"N": "-1000000"}}, 1 + 2),
        ({"n": {"N": "0"}}, 1 + 2),
        ({"b": {"B": base64.b64encode(b"\x00\x01\x02").decode()}}, 1 + 3),  # raw bytes
        ({"flag": {"BOOL": True}, "x": {"NULL": True}}, (4 + 1) + (1 + 1)),
        ({"l": {"L": [{"S": "ab"}, {"N": "7"}]}}, 1 + 3 + (2 + 2) + 2),  # 3 + 1 per element
        ({"m": {"M": {"k": {"S": "v"}}}}, 1 + 3 + (1 + 1) + 1),
        ({"m": {"M": {}}}, 1 + 3),
        ({"ss": {"SS": ["a", "bc"]}, "ns": {"NS": ["1", "22"]}}, (2 + 3) + (2 + 2 + 2)),
    ],
)
def test_item_size(item: units.Item, size: int) -> None:
    assert units.item_size(item) == size


def test_binary_values_from_the_backend_are_bytes() -> None:
    assert units.item_size({"b": {"B": b"\x00" * 10}}) == 11


@pytest.mark.parametrize(
    ("size", "consistent", "transactional", "half_units"),
    [
        (4096, True, False, 2),  # 4 KB: one unit
        (4097, True, False, 4),  # rounded up per 4 KB
        (4097, False, False, 2),  # eventually consistent: half
        (1, False, False, 1),  # 0.5
        (0, False, False, 1),  # a miss costs the minimum: 0.5
        (0, True, False, 2),  # 1
        (5000, True, True, 8),  # TransactGetItems: twice, 2 x 2 units
    ],
)
def test_read_units(size: int, consistent: bool, transactional: bool, half_units: int) -> None:
    assert (
        units.read_half_units(size, consistent=consistent, transactional=transactional)
        == half_units
    )


@pytest.mark.parametrize(
    ("before", "after", "transactional", "expected"),
    [
        (0, 1024, False, 1),  # 1 KB
        (0, 1025, False, 2),  # rounded up per KB
        (1500, 300, False, 2),  # the larger of before and after (a shrinking update)
        (2048, 0, False, 2),  # a delete: the item deleted
        (0, 0, False, 1),  # a delete or check of nothing: at least 1
        (0, 0, True, 2),  # a ConditionCheck in a transaction
        (0, 3000, True, 6),  # a put in a transaction: twice
    ],
)
def test_write_units(before: int, after: int, transactional: bool, expected: int) -> None:
    assert units.write_units(before, after, transactional=transactional) == expected


def test_the_items_a_transaction_writes() -> None:
    request = {
        "TransactItems": [
            {"Put": {"TableName": "t", "Item": {"PK": {"S": "a"}, "v": {"N": "1"}}}},
            {"Update": {"TableName": "t", "Key": {"PK": {"S": "b"}}, "UpdateExpression": "x"}},
            {"ConditionCheck": {"TableName": "u", "Key": {"PK": {"S": "c"}}}},
        ]
    }

    refs = units.written_items("TransactWriteItems", request)

    assert [(ref.table, ref.key["PK"]["S"], ref.transactional) for ref in refs] == [
        ("t", "a", True),
        ("t", "b", True),
        ("u", "c", True),
    ]


def test_the_items_a_batch_reads() -> None:
    request = {
        "RequestItems": {
            "t": {"Keys": [{"PK": {"S": "a"}}, {"PK": {"S": "b"}}], "ConsistentRead": True},
            "u": {"Keys": [{"PK": {"S": "c"}}]},
        }
    }

    refs = units.point_reads("BatchGetItem", request)

    assert [(ref.table, ref.consistent) for ref in refs] == [("t", True), ("t", True), ("u", False)]


def test_a_query_page_is_rounded_once_for_all_its_items() -> None:
    item = {"PK": {"S": "x" * 1998}}  # 2,000 bytes
    page = {"Items": [item, item, item]}  # 6,000 bytes: 2 units, not 3

    assert units.page_read_half_units(page, consistent=True) == 4
    assert units.page_read_half_units(page, consistent=False) == 2
    assert units.page_read_half_units({"Items": []}, consistent=False) == 1  # the minimum


def _record(data_bytes: int, key: str = "k") -> dict[str, str]:
    return {"Data": base64.b64encode(b"x" * data_bytes).decode(), "PartitionKey": key}


def test_kinesis_payload_units_are_25_kb_per_record() -> None:
    exactly = _record(25 * 1024 - 1)  # with the 1-byte partition key: 25 KB
    assert units.kinesis_payload_units([exactly]) == 1
    assert units.kinesis_payload_units([_record(25 * 1024)]) == 2
    assert units.kinesis_payload_units([_record(0), _record(10)]) == 2  # one each, at least


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 100])
def test_base64_length_without_decoding(length: int) -> None:
    assert units.base64_length(base64.b64encode(b"y" * length).decode()) == length


@pytest.mark.parametrize(("payload", "billed"), [(0, 1), (65536, 1), (65537, 2), (200_000, 4)])
def test_sqs_bills_every_64_kb_chunk(payload: int, billed: int) -> None:
    assert units.sqs_billed_requests(payload) == billed


def test_sqs_message_bytes_count_body_and_attributes() -> None:
    message = {
        "MessageBody": "hello",
        "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "bill"}},
    }

    assert units.sqs_message_bytes(message) == 5 + (4 + 6 + 4)


def test_eventbridge_entries_are_billed_per_64_kb() -> None:
    small = {"Source": "tbcss", "DetailType": "X", "Detail": "{}"}
    assert units.event_entry_bytes(small) == 5 + 1 + 2
    assert units.event_entry_bytes({**small, "Time": 1_700_000_000, "Resources": ["ab"]}) == (
        8 + 14 + 2
    )
    big = {"Source": "s", "DetailType": "d", "Detail": "x" * (64 * 1024)}
    assert units.eventbridge_billed_events([small, small, big]) == 1 + 1 + 2


@pytest.mark.parametrize(
    ("seconds", "memory_mb", "mb_ms"),
    [
        (0.1, 1024, 100 * 1024),  # no float noise: 0.1 s is 100 ms
        (0.1001, 1024, 101 * 1024),  # rounded up to the ms
        (0.0, 512, 512),  # at least 1 ms
        (2.5, 256, 2500 * 256),
    ],
)
def test_lambda_duration_is_rounded_up_to_the_millisecond(
    seconds: float, memory_mb: int, mb_ms: int
) -> None:
    assert units.lambda_mb_milliseconds(seconds, memory_mb) == mb_ms
