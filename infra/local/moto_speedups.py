"""Speedups for moto at soak scale, with the same results and requests.

moto does three things per DynamoDB request that cost O(table size), which makes
a table of 100,000 items crawl:

* TransactWriteItems deep-copies every table it names, to roll back a cancelled
  transaction. Installed, that copy is a no-op and the transaction saves (and on
  any failure restores) only the items it names, plus the table's stream records.
* A base-table Query sorts every item of the table, then keeps the partition's.
  Installed, it starts from the queried partition only.
* A GSI Query sorts every item by the base table's key first, then sorts the
  matching items again by the index's key (which ends with the base table's key,
  unique per item, so the first sort never decides anything). Installed, the
  first sort is skipped and a string partition key is matched by plain string
  compares before moto's own (casting) checks. moto keeps no index, so the
  speedup keeps one: the items grouped by the index's string partition key,
  built in one pass and reused until the next write to any table (a sweep's
  queries of every shard, with nothing written between, pass over the table once).

Every request, whatever the service:

* moto finds the handler's method for the action by listing the handler class's
  members (``inspect.getmembers``, about 0.3 ms). Installed, the list is
  remembered per class: classes do not change while the server runs.
* An EventBridge rule's target gets its input through moto's template parser,
  which compiles each of its JSONPath expressions again for every event (jsonpath_ng
  builds a parser each time, about 2 ms). Installed, compiled expressions are
  remembered by their text.

The server itself finds the backend of every request by listing moto's package
folder (a stat per service) and trying every service's URL patterns, under one
lock; the answer depends only on the request's host, so it is remembered.

And two outside DynamoDB:

* For every record put on a Kinesis stream with an event source mapping, moto
  tries to run the function in Docker, even when the mapping is disabled (the
  local deploy disables them all: the runtime's pollers deliver): about 5 ms and
  an error line per record without Docker. Installed, a disabled mapping
  delivers nothing, as on AWS.
* A Kinesis shard finds its last sequence number by listing every record's key
  on every put, and is not safe for concurrent use: a GetRecords walking the
  shard while a put appends fails ("OrderedDict mutated during iteration", a
  500 to the poller), and two concurrent puts could take the same number, one
  record overwriting the other. Installed, ``put_record`` and ``get_records``
  (what the runtime's pollers and producers call) take turns, one lock for all
  shards, and the last key is read from the end. Other shard walks (iterators
  AT_TIMESTAMP, DescribeStream) still run unlocked.
* SQS checks every message of a queue for visibility and delay on every send and
  receive (the queue's counters are recomputed), reading the clock through
  naive-datetime arithmetic each time: about 8 us a message. Installed, SQS
  reads the same wall clock with ``time.time()``: still O(queue), much cheaper.

Used by :class:`infra.local.moto_server.MotoServer` for its lifetime and by the
benches around ``mock_aws``. Installing is process-wide (moto's backends are)
and counted: nested or concurrent users are fine, the last one out uninstalls.
Writes must not run concurrently with a transaction on the same table (the
restore would undo them): the server serializes its table writes.
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The deployment's rules name a few dozen input paths; the bound only guards memory.
JSONPATH_EXPRESSIONS = 1024


@contextmanager
def installed() -> Iterator[None]:
    install()
    try:
        yield
    finally:
        uninstall()


def install() -> None:
    _PATCHES.acquire()


def uninstall() -> None:
    _PATCHES.release()


class _Patches:
    """moto's methods swapped for the lifetime of the outermost install."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._undo: list[Callable[[], None]] = []

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._undo = _apply()

    def release(self) -> None:
        with self._lock:
            if self._users == 0:
                raise RuntimeError("moto speedups are not installed")
            self._users -= 1
            if self._users == 0:
                for undo in reversed(self._undo):
                    undo()
                self._undo = []


_PATCHES = _Patches()


def swapped(owner: Any, name: str, replacement: Any) -> Callable[[], None]:
    """Replace ``owner.name`` (a moto class or module attribute); returns the undo."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    return lambda: setattr(owner, name, original)


def memoized(owner: Any, name: str, *, size: int | None) -> Callable[[], None]:
    """``owner.name``, a pure function of hashable arguments, remembers its answers."""
    return swapped(owner, name, functools.lru_cache(maxsize=size)(getattr(owner, name)))


def _apply() -> list[Callable[[], None]]:
    # moto's imports are heavy: only when something installs the speedups.
    import jsonpath_ng.ext  # noqa: PLC0415
    import moto.dynamodb.models as dynamodb_models  # noqa: PLC0415
    import moto.sqs.models as sqs_models  # noqa: PLC0415
    from moto.awslambda.models import LambdaBackend  # noqa: PLC0415
    from moto.core import responses  # noqa: PLC0415
    from moto.dynamodb.models.table import Table  # noqa: PLC0415
    from moto.kinesis.models import Shard  # noqa: PLC0415
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication  # noqa: PLC0415

    backend = dynamodb_models.DynamoDBBackend
    writes = _Writes()
    return [
        swapped(dynamodb_models, "copy", _TableKeepingCopy(Table)),
        swapped(backend, "transact_write_items", _restoring(backend.transact_write_items)),
        *[
            swapped(backend, name, writes.counted(getattr(backend, name)))
            for name in _writing_methods(backend)
        ],
        swapped(Table, "query", _narrowed_query(Table.query, _IndexCache(writes))),
        swapped(Table, "all_items", _narrowable_all_items(Table.all_items)),
        swapped(
            LambdaBackend,
            "send_kinesis_message",
            _when_enabled(LambdaBackend.send_kinesis_message),
        ),
        swapped(Shard, "get_max_sequence_number", _last_sequence_number),
        *[
            swapped(Shard, name, _taking_turns(getattr(Shard, name), _SHARD_TURNS))
            for name in ("put_record", "get_records")
        ],
        swapped(sqs_models, "unix_time_millis", _unix_time_millis),
        swapped(
            DomainDispatcherApplication,
            "get_backend_for_host",
            _remembered(DomainDispatcherApplication.get_backend_for_host),
        ),
        memoized(responses, "method_names_from_class", size=None),
        memoized(jsonpath_ng.ext, "parse", size=JSONPATH_EXPRESSIONS),
    ]


# --- TransactWriteItems: save and restore the named items only -----------------


class _TableKeepingCopy:
    """Stands in for the ``copy`` module inside ``moto.dynamodb.models``, whose only
    deep copy of a whole Table is the transaction backup (see _restoring)."""

    def __init__(self, table_class: type) -> None:
        self._table_class = table_class

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if isinstance(value, self._table_class):
            return value  # the backup: _restoring puts back what changed instead
        return copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _restoring(original: Callable[..., None]) -> Callable[..., None]:
    def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = _SavedState.of(backend, transact_items)
        try:
            original(backend, transact_items)
        except Exception:
            saved.restore()
            raise

    return transact_write_items


@dataclass(frozen=True)
class _SavedItem:
    table: Any
    hash_key: Any
    range_key: Any  # None for a table without a sort key
    item: Any  # a deep copy, or None when there was no item


@dataclass(frozen=True)
class _SavedState:
    items: list[_SavedItem]
    stream_lengths: list[tuple[Any, int]]  # (stream shard, records before)

    @classmethod
    def of(cls, backend: Any, transact_items: list[dict[str, Any]]) -> _SavedState:
        items = []
        tables: dict[int, Any] = {}
        for transact_item in transact_items:
            saved = _saved_item(backend, transact_item)
            if saved is not None:
                items.append(saved)
                tables[id(saved.table)] = saved.table
        streams = [
            (table.stream_shard, len(table.stream_shard.items))
            for table in tables.values()
            if table.stream_shard is not None
        ]
        return cls(items, streams)

    def restore(self) -> None:
        for saved in reversed(self.items):
            _put_back(saved)
        for shard, length in self.stream_lengths:
            del shard.items[length:]


def _saved_item(backend: Any, transact_item: dict[str, Any]) -> _SavedItem | None:
    """The current state of the item one action names; None when moto will
    refuse the action anyway (no such table, no key): it changes nothing then."""
    if len(transact_item) != 1:
        return None
    (action,) = transact_item.values()
    if not isinstance(action, dict):
        return None
    table = table_named(backend, action.get("TableName", ""))
    key = action.get("Key") or action.get("Item") or {}
    found = stored_item(table, key) if table is not None else None
    if found is None:
        return None
    hash_key, range_key, current = found
    return _SavedItem(table, hash_key, range_key, copy.deepcopy(current))


def table_named(backend: Any, name: str) -> Any:
    """moto's Table by name or ARN, or None."""
    try:
        return backend.get_table(name)
    except Exception:  # moto reports the missing table itself
        return None


def stored_item(table: Any, key: Mapping[str, Any]) -> tuple[Any, Any, Any] | None:
    """``(hash key, range key, item or None)`` of the item that ``key`` (a key, or
    a whole item) names in a moto Table; None if it lacks a key attribute."""
    from moto.dynamodb.models.dynamo_type import DynamoType  # noqa: PLC0415

    hash_value = key.get(table.hash_key_attr)
    range_value = key.get(table.range_key_attr) if table.range_key_attr else None
    if hash_value is None or (table.range_key_attr and range_value is None):
        return None
    hash_key = DynamoType(dict(hash_value))
    range_key = DynamoType(dict(range_value)) if range_value is not None else None
    # .get, never [..]: table.items is a defaultdict and a lookup must not add keys.
    stored = table.items.get(hash_key)
    if range_key is not None and stored is not None:
        stored = stored.get(range_key)
    return hash_key, range_key, stored


def _put_back(saved: _SavedItem) -> None:
    items = saved.table.items
    if saved.range_key is None:
        if saved.item is None:
            items.pop(saved.hash_key, None)
        else:
            items[saved.hash_key] = saved.item
        return
    if saved.item is not None:
        items[saved.hash_key][saved.range_key] = saved.item
        return
    partition = items.get(saved.hash_key)
    if partition is not None:
        partition.pop(saved.range_key, None)
        if not partition:
            del items[saved.hash_key]


# --- Query: start from the candidates, not from the sorted table ----------------

_query_scope = threading.local()  # (table, candidate items) of this thread's query


def _narrowed_query(original: Callable[..., Any], index: _IndexCache) -> Callable[..., Any]:
    signature = inspect.signature(original)

    def query(table: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(table, *args, **kwargs).arguments
        if arguments.get("index_name"):
            # query() sorts them by the index and checks every key condition itself.
            conditions = list(arguments.get("hash_key_conditions") or ())
            candidates = index.candidates(table, conditions)
            for name, value in conditions:
                candidates = _with_string(candidates, name, value)
        elif arguments.get("hash_key") is not None:
            candidates = _partition(table, arguments["hash_key"])  # query() sorts them
        else:
            return original(table, *args, **kwargs)
        # Per thread: the server answers several queries at once.
        _query_scope.candidates = (table, candidates)
        try:
            return original(table, *args, **kwargs)
        finally:
            _query_scope.candidates = None

    return query


def _narrowable_all_items(original: Callable[[Any], list[Any]]) -> Callable[[Any], list[Any]]:
    def all_items(table: Any) -> list[Any]:
        narrowed = getattr(_query_scope, "candidates", None)
        if narrowed is not None and narrowed[0] is table:
            return list(narrowed[1])
        return original(table)

    return all_items


def _partition(table: Any, hash_key: Any) -> list[Any]:
    stored = table.items.get(hash_key)
    if stored is None:
        return []
    return list(stored.values()) if table.range_key_attr else [stored]


def _with_string(items: list[Any], name: str, value: Any) -> list[Any]:
    """The items whose attribute ``name`` is the string ``value`` (all of them when
    ``value`` is not a string). For strings moto's own equality (type and cast
    value) is exactly this, only slower: it casts both sides on every compare."""
    if value.type != "S":
        return items
    wanted = value.value
    return [
        item
        for item in items
        if (found := item.attrs.get(name)) is not None
        and found.type == "S"
        and found.value == wanted
    ]


def _unsorted_items(table: Any) -> list[Any]:
    # list() of a dict view runs in C, under the GIL: safe while another thread writes.
    partitions = list(table.items.values())
    if not table.range_key_attr:
        return partitions
    return [item for partition in partitions for item in list(partition.values())]


# --- GSI Query: an index of the items by partition key, dropped on any write ----

# DynamoDBBackend's methods that change nothing; every other one counts as a write
# (an unknown or new method only costs the index a rebuild). Static methods are left
# alone (a wrapper would hand them the backend as a first argument). ImportTable
# writes on a thread of its own, uncounted: the project never imports.
_READ_ONLY_PREFIXES = ("describe_", "get_", "list_")
_READ_ONLY = frozenset(
    {
        "batch_get_item",
        "query",
        "scan",
        "transact_get_items",
        "owns_arn",
        "iter_tagged_resources",
        "default_vpc_endpoint_service",
        "default_vpc_endpoint_service_factory",
        "vpce_random_number",
    }
)


def _writing_methods(backend: type) -> list[str]:
    return [
        name
        for name, _ in inspect.getmembers(backend, inspect.isfunction)
        if not isinstance(inspect.getattr_static(backend, name), staticmethod)
        and not name.startswith("_")
        and not name.startswith(_READ_ONLY_PREFIXES)
        and name not in _READ_ONLY
    ]


class _Writes:
    """Counts DynamoDB writes: the generation moves when one starts and when it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._in_flight = 0

    def counted(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def write(*args: Any, **kwargs: Any) -> Any:
            self._moved(+1)
            try:
                return method(*args, **kwargs)
            finally:
                self._moved(-1)

        return write

    def _moved(self, in_flight: int) -> None:
        with self._lock:
            self._generation += 1
            self._in_flight += in_flight

    def quiet_generation(self) -> int | None:
        """The current generation, or None while a write is under way."""
        with self._lock:
            return None if self._in_flight else self._generation


@dataclass(frozen=True)
class _Grouping:
    table: Any
    by_value: dict[str, list[Any]]


class _IndexCache:
    """The items of a table grouped by one string attribute, kept while nothing is
    written (only the current generation's: a write drops them all). A query that
    races a write groups afresh and keeps nothing."""

    def __init__(self, writes: _Writes) -> None:
        self._writes = writes
        self._lock = threading.Lock()
        self._generation = -1  # generations count from 0: no grouping kept yet
        self._groupings: dict[tuple[int, str], _Grouping] = {}

    def candidates(self, table: Any, conditions: list[tuple[str, Any]]) -> list[Any]:
        """The items that can match the first string condition (every item if none)."""
        name, value = next(
            ((name, value) for name, value in conditions if value.type == "S"), ("", None)
        )
        if value is None:
            return _unsorted_items(table)
        return self._grouping(table, name).get(value.value, [])

    def _grouping(self, table: Any, name: str) -> dict[str, list[Any]]:
        generation = self._writes.quiet_generation()
        key = (id(table), name)
        with self._lock:
            current = generation is not None and generation == self._generation
            kept = self._groupings.get(key) if current else None
        if kept is not None and kept.table is table:
            return kept.by_value
        by_value: dict[str, list[Any]] = {}
        for item in _unsorted_items(table):
            found = item.attrs.get(name)
            if found is not None and found.type == "S":
                by_value.setdefault(found.value, []).append(item)
        if generation is not None and self._writes.quiet_generation() == generation:
            with self._lock:
                if generation != self._generation:
                    self._generation, self._groupings = generation, {}
                self._groupings[key] = _Grouping(table, by_value)
        return by_value


# --- the server: a request's backend, remembered per host ------------------------


def _remembered(original: Callable[[Any, str | None], Any]) -> Callable[[Any, str | None], Any]:
    backends: dict[str | None, Any] = {}

    def get_backend_for_host(dispatcher: Any, host: str | None) -> Any:
        if host not in backends:
            backends[host] = original(dispatcher, host)
        return backends[host]

    return get_backend_for_host


# --- Kinesis: a disabled event source mapping delivers nothing ------------------


def _when_enabled(original: Callable[..., None]) -> Callable[..., None]:
    def send_kinesis_message(
        backend: Any, function_name: str, kinesis_stream: str, *args: Any, **kwargs: Any
    ) -> None:
        mappings = list(backend._event_source_mappings.values())
        if any(
            mapping.enabled
            and mapping.function_arn == function_name
            and mapping.event_source_arn == kinesis_stream
            for mapping in mappings
        ):
            original(backend, function_name, kinesis_stream, *args, **kwargs)

    return send_kinesis_message


# --- Kinesis shards: one at a time, the last key from the end ---------------------

_SHARD_TURNS = threading.Lock()


def _taking_turns(original: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(*args, **kwargs)

    return one_at_a_time


def _last_sequence_number(shard: Any) -> int:
    """Shard.get_max_sequence_number: the records are kept in sequence order."""
    return int(next(reversed(shard.records), 0))


# --- SQS: the same clock, read cheaply -------------------------------------------


def _unix_time_millis(moment: datetime | None = None) -> float:
    """moto.core.utils.unix_time_millis: now (or a naive UTC datetime) in epoch ms."""
    if moment is None:
        return time.time() * 1000.0
    return (moment - _EPOCH).total_seconds() * 1000.0


_EPOCH = datetime(1970, 1, 1)  # naive UTC, as moto's datetimes are
