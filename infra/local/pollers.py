"""Local event source mappings: read Kinesis shards and SQS queues in moto and
invoke the mapped function with the exact event Lambda would send.

moto never runs mappings itself (Kinesis mappings do not consume; an enabled SQS
mapping eats messages, so the deploy disables them all). The pollers read the
*synthesized* settings from :class:`~infra.local.deploy.Deployment` and follow
AWS's delivery semantics:

Kinesis (per shard, in order)
    batches of up to ``BatchSize`` records, waiting up to
    ``MaximumBatchingWindowInSeconds`` to fill one, and sent early, smaller,
    when the event would pass Lambda's 6 MB invoke payload limit; on a handler error the batch
    is retried (split in halves first with ``BisectBatchOnFunctionError``); with
    ``ReportBatchItemFailures`` processing resumes at the first reported sequence
    number (checkpoint semantics); when retries run out the failing records are
    described to the on-failure destination and the shard moves on.
    ``MaximumRetryAttempts`` -1 (AWS: retry until the record expires, which
    blocks the shard for up to a day) is capped at
    :data:`LOCAL_INFINITE_RETRY_CAP` retries locally.
SQS
    up to 10 messages per receive, more with a batching window; success deletes
    the batch, ``batchItemFailures`` deletes all but the reported messages, a
    handler error deletes nothing: the queue's visibility timeout and redrive
    policy (moto implements both) move poison messages to its DLQ.

Nothing is dropped silently: every give-up is logged at WARNING with counts.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3

from infra.local.contracts import InvocationResult, Invoker
from infra.local.meter import local_session

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_kinesis.type_defs import RecordTypeDef
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

    from infra.local.deploy import Deployment, EventSourceMappingSpec

log = logging.getLogger("tbcss.local.pollers")

LOCAL_INFINITE_RETRY_CAP = 5
SQS_MAX_PER_RECEIVE = 10
# Lambda's synchronous invoke payload limit: a stream mapping invokes with fewer
# than BatchSize records rather than pass it.
INVOKE_PAYLOAD_LIMIT = 6 * 1024 * 1024
EMPTY_EVENT_BYTES = len(json.dumps({"Records": []}))
SQS_WAIT_SECONDS = 1  # long-poll length: also bounds how long stop() waits
IDLE_SLEEP_SECONDS = 0.1
RETRY_DELAY_SECONDS = 0.05
SHARD_REFRESH_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 5.0
DEFAULT_ACCOUNT = "123456789012"  # moto's default


# --- shared plumbing ---------------------------------------------------------


@dataclass(frozen=True)
class Arn:
    service: str
    region: str
    account: str
    resource: str

    @classmethod
    def parse(cls, arn: str) -> Arn:
        parts = arn.split(":", 5)
        if len(parts) < 6 or parts[0] != "arn":
            raise ValueError(f"not an ARN: {arn!r}")
        return cls(service=parts[2], region=parts[3], account=parts[4], resource=parts[5])

    @property
    def name(self) -> str:
        """The last path element: stream and queue names, function names."""
        return self.resource.rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def _function_arn(function_name: str, region: str, account: str) -> str:
    if function_name.startswith("arn:"):
        return function_name
    return f"arn:aws:lambda:{region}:{account}:function:{function_name}"


def _iso_millis(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class _PassResult:
    """``progressed``: work was done (loop again at once). ``empty_seen_at``: the
    source had nothing at all, no batch in flight, as seen by a look that began at
    this tick of :meth:`_Activity.tick` (what drain() waits for); None if not empty."""

    progressed: bool
    empty_seen_at: int | None


class _Activity:
    """Counts passes that did work, across all pollers, and ticks the moments of
    looks at a source, for drain()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._ticks = 0

    def bump(self) -> None:
        with self._lock:
            self._count += 1

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def tick(self) -> int:
        """A number greater than every tick before: orders looks against drain()."""
        with self._lock:
            self._ticks += 1
            return self._ticks


@dataclass(frozen=True)
class PollerSettings:
    """Timings; tests shorten them."""

    sqs_wait_seconds: int = SQS_WAIT_SECONDS
    idle_sleep_seconds: float = IDLE_SLEEP_SECONDS
    retry_delay_seconds: float = RETRY_DELAY_SECONDS
    infinite_retry_cap: int = LOCAL_INFINITE_RETRY_CAP


class _Poller:
    """One thread per event source mapping; subclasses implement one pass."""

    def __init__(
        self,
        mapping: EventSourceMappingSpec,
        invoker: Invoker,
        session: boto3.session.Session,
        *,
        endpoint_url: str | None,
        region: str,
        activity: _Activity,
        settings: PollerSettings,
    ) -> None:
        self.mapping = mapping
        self._invoker = invoker
        self._session = session
        self._endpoint_url = endpoint_url
        self._region = region
        self._activity = activity
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"poller-{mapping.logical_id}", daemon=True
        )
        self._state_lock = threading.Lock()
        self._last_seen_empty = 0  # the tick of the latest look that found the source empty
        self._in_flight = False  # a batch is taken from the source and not yet counted
        source = Arn.parse(mapping.source_arn)
        self.source_name = source.name
        self.account = source.account or DEFAULT_ACCOUNT
        self.function_arn = _function_arn(mapping.function_name, region, self.account)

    # lifecycle
    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def last_seen_empty(self) -> int:
        """The tick at which the latest look that found the source empty began."""
        with self._state_lock:
            return self._last_seen_empty

    def look_now(self) -> None:
        """A look from the caller's thread, where the source allows one (SQS)."""

    def _record_empty_look(self, tick: int) -> None:
        with self._state_lock:
            self._last_seen_empty = max(self._last_seen_empty, tick)

    def _set_in_flight(self, in_flight: bool) -> None:
        with self._state_lock:
            self._in_flight = in_flight

    def _is_in_flight(self) -> bool:
        with self._state_lock:
            return self._in_flight

    def _run(self) -> None:
        backoff = self._settings.idle_sleep_seconds
        while not self._stop.is_set():
            try:
                result = self._poll_once()
            except Exception:
                # moto restarting, a throttled call, a bug in one record's shape:
                # keep the runtime alive and try again later.
                if self._is_in_flight():  # a handler may have run: a drain must look again
                    self._activity.bump()
                self._set_in_flight(False)
                log.exception("poller %s: pass failed; retrying in %.1fs", self.name, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = self._settings.idle_sleep_seconds
            if result.progressed:
                self._activity.bump()
            self._set_in_flight(False)  # counted: a drain now sees the work or none
            if result.empty_seen_at is not None:
                self._record_empty_look(result.empty_seen_at)
            if not result.progressed:
                self._stop.wait(self._settings.idle_sleep_seconds)

    @property
    def name(self) -> str:
        return f"{self.mapping.logical_id} ({self.source_name} -> {self.mapping.function_name})"

    def _client(self, service: str) -> Any:
        return self._session.client(  # type: ignore[call-overload]
            service, endpoint_url=self._endpoint_url, region_name=self._region
        )

    def _invoke(self, event: dict[str, Any]) -> InvocationResult:
        return self._invoker.invoke(self.mapping.function_name, event, "RequestResponse")

    def _poll_once(self) -> _PassResult:
        raise NotImplementedError


def _reported_failures(result: InvocationResult, report: bool) -> list[Any] | None:
    """The ``itemIdentifier`` values a successful invocation reported, or None
    when the whole batch succeeded (feature off, or nothing reported)."""
    if not report or not isinstance(result.payload, dict):
        return None
    failures = result.payload.get("batchItemFailures")
    if not failures:
        return None
    if not isinstance(failures, list):
        return [None]  # malformed: AWS treats the whole batch as failed
    return [item.get("itemIdentifier") if isinstance(item, dict) else None for item in failures]


# --- Kinesis -----------------------------------------------------------------


@dataclass
class _Shard:
    shard_id: str
    iterator: str | None
    buffer: list[RecordTypeDef] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # each buffered record's bytes in the event
    buffered_since: float | None = None  # monotonic time the oldest buffered record arrived


@dataclass(frozen=True)
class _Attempt:
    records: list[RecordTypeDef]
    retries: int  # retries already spent on these records


class KinesisPoller(_Poller):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kinesis: KinesisClient = self._client("kinesis")
        self._shards: dict[str, _Shard] = {}
        self._shards_listed_at = 0.0
        retries = self.mapping.maximum_retry_attempts
        self._max_retries = self._settings.infinite_retry_cap if retries is None else retries
        if retries is None:
            log.info(
                "poller %s: MaximumRetryAttempts -1 (infinite) is capped at %d locally",
                self.name,
                self._max_retries,
            )

    def _poll_once(self) -> _PassResult:
        # Every shard is read after this tick: an empty pass saw the stream empty since.
        started = self._activity.tick()
        self._refresh_shards()
        progressed, empty = False, True
        for shard in list(self._shards.values()):
            if self._stop.is_set():
                return _PassResult(progressed=progressed, empty_seen_at=None)  # not all read
            fetched = self._fill(shard)
            delivered = self._deliver_ready(shard)
            progressed = progressed or fetched or delivered
            empty = empty and not fetched and not delivered and not shard.buffer
        return _PassResult(progressed=progressed, empty_seen_at=started if empty else None)

    # shards and records
    def _refresh_shards(self) -> None:
        if self._shards and time.monotonic() - self._shards_listed_at < SHARD_REFRESH_SECONDS:
            return
        known = bool(self._shards)
        shards = self._kinesis.list_shards(StreamARN=self.mapping.source_arn)["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in self._shards:
                # Shards appearing later (resharding) are read from their start.
                position = "TRIM_HORIZON" if known else self._starting_position()
                self._shards[shard_id] = _Shard(shard_id, self._iterator(shard_id, position))
        self._shards_listed_at = time.monotonic()

    def _starting_position(self) -> str:
        position = (self.mapping.starting_position or "LATEST").upper()
        if position not in ("TRIM_HORIZON", "LATEST"):
            log.warning("poller %s: starting position %s read as LATEST", self.name, position)
            return "LATEST"
        return position

    def _iterator(self, shard_id: str, position: str) -> str:
        response = self._kinesis.get_shard_iterator(
            StreamARN=self.mapping.source_arn,
            ShardId=shard_id,
            ShardIteratorType=position,  # type: ignore[arg-type]
        )
        return response["ShardIterator"]

    def _fill(self, shard: _Shard) -> bool:
        room = self.mapping.batch_size - len(shard.buffer)
        if room <= 0 or shard.iterator is None:
            return False
        # moto finds the stream by name/ARN, not by the iterator: pass both.
        response = self._kinesis.get_records(
            ShardIterator=shard.iterator, Limit=room, StreamARN=self.mapping.source_arn
        )
        shard.iterator = response.get("NextShardIterator")
        records = response["Records"]
        if records and shard.buffered_since is None:
            shard.buffered_since = time.monotonic()
        shard.buffer.extend(records)
        shard.sizes.extend(self._event_bytes(shard.shard_id, record) for record in records)
        return bool(records)

    def _deliver_ready(self, shard: _Shard) -> bool:
        if not shard.buffer or not self._batch_ready(shard):
            return False
        batch = shard.buffer[: self._next_batch_length(shard)]
        if not self._deliver(shard.shard_id, batch):
            return True  # stopped mid-batch: keep the records buffered
        del shard.buffer[: len(batch)]
        del shard.sizes[: len(batch)]
        shard.buffered_since = time.monotonic() if shard.buffer else None
        return True

    def _next_batch_length(self, shard: _Shard) -> int:
        """Up to BatchSize records, fewer if their event would pass the payload limit."""
        size = EMPTY_EVENT_BYTES
        for count, record_size in enumerate(shard.sizes[: self.mapping.batch_size]):
            size += record_size
            if size > INVOKE_PAYLOAD_LIMIT:
                return max(count, 1)
        return min(len(shard.buffer), self.mapping.batch_size)

    def _event_bytes(self, shard_id: str, record: RecordTypeDef) -> int:
        return len(json.dumps(self._event_record(shard_id, record))) + len(", ")

    def _batch_ready(self, shard: _Shard) -> bool:
        window = self.mapping.max_batching_window_seconds
        length = self._next_batch_length(shard)
        if length >= self.mapping.batch_size or length < len(shard.buffer) or window <= 0:
            return True  # a full batch (by count or by payload) is waiting
        waited = time.monotonic() - (shard.buffered_since or time.monotonic())
        return waited >= window

    # delivery: retries, bisection, checkpoints, give-ups
    def _deliver(self, shard_id: str, batch: list[RecordTypeDef]) -> bool:
        """Resolve the batch completely (success or give-up). False if stopped."""
        pending: deque[_Attempt] = deque([_Attempt(batch, retries=0)])
        while pending:
            if self._stop.is_set():
                return False
            attempt = pending.popleft()
            result = self._invoke(self._event(shard_id, attempt.records))
            failed_at = self._first_failed_index(result, attempt.records)
            if failed_at is None:
                continue
            # Records before the first failure are checkpointed (not redelivered).
            remaining = attempt.records[failed_at:]
            if attempt.retries >= self._max_retries:
                self._give_up(shard_id, remaining, attempt.retries + 1, result)
                continue
            pending.extendleft(reversed(self._retries_of(remaining, attempt.retries, result)))
            self._stop.wait(self._settings.retry_delay_seconds)
        return True

    def _retries_of(
        self, remaining: list[RecordTypeDef], retries: int, result: InvocationResult
    ) -> list[_Attempt]:
        # Bisect only on handler errors: a partial-failure report already says where.
        if not result.ok and self.mapping.bisect_on_error and len(remaining) > 1:
            half = len(remaining) // 2
            return [
                _Attempt(remaining[:half], retries + 1),
                _Attempt(remaining[half:], retries + 1),
            ]
        return [_Attempt(remaining, retries + 1)]

    def _first_failed_index(
        self, result: InvocationResult, records: Sequence[RecordTypeDef]
    ) -> int | None:
        if not result.ok:
            return 0
        reported = _reported_failures(result, self.mapping.report_batch_item_failures)
        if reported is None:
            return None
        positions = {record["SequenceNumber"]: index for index, record in enumerate(records)}
        if any(identifier not in positions for identifier in reported):
            log.warning(
                "poller %s: unknown itemIdentifier in %s: whole batch failed", self.name, reported
            )
            return 0
        return min(positions[identifier] for identifier in reported)

    def _event(self, shard_id: str, records: Sequence[RecordTypeDef]) -> dict[str, Any]:
        return {"Records": [self._event_record(shard_id, record) for record in records]}

    def _event_record(self, shard_id: str, record: RecordTypeDef) -> dict[str, Any]:
        sequence = record["SequenceNumber"]
        return {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": record["PartitionKey"],
                "sequenceNumber": sequence,
                "data": base64.b64encode(record["Data"]).decode("ascii"),
                "approximateArrivalTimestamp": _arrival(record),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{sequence}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": f"arn:aws:iam::{self.account}:role/{self.mapping.function_name}",
            "awsRegion": self._region,
            "eventSourceARN": self.mapping.source_arn,
        }

    def _give_up(
        self,
        shard_id: str,
        records: list[RecordTypeDef],
        invoke_count: int,
        result: InvocationResult,
    ) -> None:
        first, last = records[0], records[-1]
        destination = self.mapping.on_failure_destination_arn
        log.warning(
            "poller %s: giving up on %d record(s) of %s (%s..%s) after %d invocation(s); %s",
            self.name,
            len(records),
            shard_id,
            first["SequenceNumber"],
            last["SequenceNumber"],
            invoke_count,
            f"described to {destination}" if destination else "no on-failure destination",
        )
        if destination is None:
            return
        batch_info = {
            "shardId": shard_id,
            "startSequenceNumber": first["SequenceNumber"],
            "endSequenceNumber": last["SequenceNumber"],
            "approximateArrivalOfFirstRecord": _iso_arrival(first),
            "approximateArrivalOfLastRecord": _iso_arrival(last),
            "batchSize": len(records),
            "streamArn": self.mapping.source_arn,
        }
        message = _failure_record(self.function_arn, invoke_count, result)
        message["KinesisBatchInfo"] = batch_info
        _send_to_destination(self._client, destination, message)


def _arrival(record: RecordTypeDef) -> float:
    return round(record["ApproximateArrivalTimestamp"].timestamp(), 3)


def _iso_arrival(record: RecordTypeDef) -> str:
    return _iso_millis(record["ApproximateArrivalTimestamp"])


def _failure_record(
    function_arn: str, invoke_count: int, result: InvocationResult
) -> dict[str, Any]:
    """The part of Lambda's on-failure record common to stream sources."""
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": result.function_error or "",
        },
        "version": "1.0",
        "timestamp": _iso_millis(datetime.now(UTC)),
    }


def _send_to_destination(
    client: Callable[[str], Any], destination: str, message: dict[str, Any]
) -> None:
    arn = Arn.parse(destination)
    body = json.dumps(message)
    if arn.service == "sqs":
        sqs: SQSClient = client("sqs")
        url = sqs.get_queue_url(QueueName=arn.name, QueueOwnerAWSAccountId=arn.account)
        sqs.send_message(QueueUrl=url["QueueUrl"], MessageBody=body)
    elif arn.service == "sns":
        sns: SNSClient = client("sns")
        sns.publish(TopicArn=destination, Message=body)
    else:
        log.warning("on-failure destination %s is not supported locally: %s", destination, body)


# --- SQS ---------------------------------------------------------------------


class SqsPoller(_Poller):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sqs: SQSClient = self._client("sqs")
        self._queue_url = (
            self.mapping.source_url
            or self._sqs.get_queue_url(
                QueueName=self.source_name, QueueOwnerAWSAccountId=self.account
            )["QueueUrl"]
        )

    def _poll_once(self) -> _PassResult:
        messages = self._collect_batch()
        if not messages:
            # The queue's counters, read after this tick, are the look that counts
            # (the receive may have begun before a drain() did).
            looked = self._activity.tick()
            return _PassResult(
                progressed=False, empty_seen_at=looked if self._queue_is_empty() else None
            )
        result = self._invoke(self._event(messages))
        self._settle(messages, result)
        return _PassResult(progressed=True, empty_seen_at=None)

    def look_now(self) -> None:
        """A drain's look, without waiting out this poller's long poll: the queue's
        counters all zero, and then no batch of ours in flight (one received, its
        messages deleted, is not yet counted as work)."""
        if self._is_in_flight():
            return  # not empty: no need to ask
        looked = self._activity.tick()
        # Counters first, then the flag: a batch received and finished between the
        # two reads would otherwise go unseen.
        if self._queue_is_empty() and not self._is_in_flight():
            self._record_empty_look(looked)

    def _collect_batch(self) -> list[MessageTypeDef]:
        batch_size = self.mapping.batch_size
        window = self.mapping.max_batching_window_seconds
        messages = self._receive(batch_size, self._settings.sqs_wait_seconds)
        if messages:
            self._set_in_flight(True)
        deadline = time.monotonic() + window
        # The window lets a batch grow past the first receive, up to BatchSize.
        while messages and len(messages) < batch_size and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = self._receive(batch_size - len(messages), min(1, int(left)))
            if not more:
                self._stop.wait(min(left, self._settings.idle_sleep_seconds))
            messages += more
        return messages

    def _receive(self, wanted: int, wait_seconds: int) -> list[MessageTypeDef]:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=max(1, min(SQS_MAX_PER_RECEIVE, wanted)),
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def _queue_is_empty(self) -> bool:
        counters = (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
        response = self._sqs.get_queue_attributes(
            QueueUrl=self._queue_url,
            AttributeNames=list(counters),  # type: ignore[arg-type]
        )
        attributes: dict[str, str] = {str(k): v for k, v in response["Attributes"].items()}
        return all(int(attributes.get(counter, "0")) == 0 for counter in counters)

    def _event(self, messages: Sequence[MessageTypeDef]) -> dict[str, Any]:
        return {"Records": [self._event_record(message) for message in messages]}

    def _event_record(self, message: MessageTypeDef) -> dict[str, Any]:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: _lambda_message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.mapping.source_arn,
            "awsRegion": self._region,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record

    def _settle(self, messages: list[MessageTypeDef], result: InvocationResult) -> None:
        if not result.ok:
            # Nothing deleted: the messages come back after the visibility timeout
            # and the queue's redrive policy moves poison ones to its DLQ.
            log.warning(
                "poller %s: handler failed on %d message(s); left for redelivery: %s",
                self.name,
                len(messages),
                _error_message(result),
            )
            return
        reported = _reported_failures(result, self.mapping.report_batch_item_failures)
        if reported is None:
            self._delete(messages)
            return
        ids = {message["MessageId"] for message in messages}
        if any(identifier not in ids for identifier in reported):
            log.warning("poller %s: unknown itemIdentifier in %s: batch kept", self.name, reported)
            return
        log.info(
            "poller %s: %d of %d message(s) reported failed",
            self.name,
            len(set(reported)),
            len(messages),
        )
        self._delete([message for message in messages if message["MessageId"] not in reported])

    def _delete(self, messages: list[MessageTypeDef]) -> None:
        for start in range(0, len(messages), SQS_MAX_PER_RECEIVE):
            chunk = messages[start : start + SQS_MAX_PER_RECEIVE]
            response = self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(chunk)
                ],
            )
            for failure in response.get("Failed", []):
                log.warning("poller %s: delete failed: %s", self.name, failure)


def _lambda_message_attribute(value: Any) -> dict[str, Any]:
    """SQS's MessageAttributeValue -> the camel-case shape Lambda's SQS event uses."""
    binary = value.get("BinaryValue")
    return {
        "stringValue": value.get("StringValue"),
        "binaryValue": base64.b64encode(binary).decode("ascii") if binary else None,
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [
            base64.b64encode(item).decode("ascii") for item in value.get("BinaryListValues", [])
        ],
        "dataType": value.get("DataType", "String"),
    }


def _error_message(result: InvocationResult) -> str:
    if isinstance(result.payload, dict):
        return f"{result.payload.get('errorType')}: {result.payload.get('errorMessage')}"
    return str(result.payload)


# --- the set of pollers --------------------------------------------------------


class EventSourcePollers:
    """Starts one poller thread per enabled Kinesis/SQS event source mapping."""

    def __init__(
        self,
        deployment: Deployment,
        invoker: Invoker,
        *,
        endpoint_url: str | None,
        region: str,
        settings: PollerSettings | None = None,
    ) -> None:
        self._activity = _Activity()
        self._settings = settings or PollerSettings()
        self._pollers: list[_Poller] = []
        self._started = False
        for mapping in deployment.event_source_mappings:
            poller = self._poller_for(mapping, invoker, endpoint_url, region)
            if poller is not None:
                self._pollers.append(poller)

    def _poller_for(
        self,
        mapping: EventSourceMappingSpec,
        invoker: Invoker,
        endpoint_url: str | None,
        region: str,
    ) -> _Poller | None:
        if not mapping.enabled:
            log.info("mapping %s is disabled in the template: not polled", mapping.logical_id)
            return None
        kind = Arn.parse(mapping.source_arn).service
        poller_class: type[_Poller] | None = {"kinesis": KinesisPoller, "sqs": SqsPoller}.get(kind)
        if poller_class is None:
            log.warning("mapping %s: %s sources are not polled locally", mapping.logical_id, kind)
            return None
        return poller_class(
            mapping,
            invoker,
            # A session per poller: boto3 sessions are not safe to share across threads.
            local_session(endpoint_url),
            endpoint_url=endpoint_url,
            region=region,
            activity=self._activity,
            settings=self._settings,
        )

    @property
    def mapping_ids(self) -> list[str]:
        return [poller.mapping.logical_id for poller in self._pollers]

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for poller in self._pollers:
            poller.start()

    def stop(self, timeout_seconds: float = 10.0) -> None:
        for poller in self._pollers:
            poller.request_stop()
        deadline = time.monotonic() + timeout_seconds
        for poller in self._pollers:
            poller.join(max(0.0, deadline - time.monotonic()))
            if poller.alive:
                log.warning("poller %s still busy after stop (a handler is running)", poller.name)

    def drain(self, timeout_seconds: float = 30.0) -> bool:
        """Wait until every source is empty and no batch is in flight.

        True once every poller has found its source empty in a look begun after
        the check started (an SQS queue's counters all zero; every shard of a
        stream read to its end), and no poller did any work in the meantime (a
        handler may feed another poller's source).
        """
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            work_before = self._activity.count
            if not self._wait_for_empty_looks(self._activity.tick(), deadline):
                return False
            if self._activity.count == work_before:
                return True
        return False

    def _wait_for_empty_looks(self, mark: int, deadline: float) -> bool:
        while time.monotonic() < deadline:
            waiting = [poller for poller in self._pollers if poller.last_seen_empty() <= mark]
            for poller in waiting:
                poller.look_now()
            if all(poller.last_seen_empty() > mark for poller in waiting):
                return True
            time.sleep(0.05)
        return False
