"""The system under soak: the local runtime (every handler in its worker, moto
behind it, the pollers, the scheduler and the clock), started in this process,
and the customers, network and agents that use it over its API and CDR stream.

Customers behave like clients do: a 5xx or a dropped connection is retried with
the same Idempotency-Key; a declined payment is paid again with a new one.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import requests
from boto3.dynamodb.types import TypeDeserializer

from infra.cdr import send
from infra.local.meter import local_client
from infra.local.runtime import (
    LOCAL_CONTEXT,
    LocalRuntime,
    RuntimeOptions,
    aws_environment,
    seed_subscriber,
)
from shared.clock import FixedClock
from shared.db import DynamoPlanCatalog, DynamoSubscriptionStore, bind_table, current_table
from shared.events import EventBridgePublisher
from shared.models import Subscriber, SubscriberStatus, SubscriberType
from shared.network_lines import line_registry
from shared.services.subscriptions import SubscriptionService
from shared.simulation import SimulatorKnobs
from tests.soak.workload import PREPAID_WALLET_PAISE, Line, Profile

log = logging.getLogger("tbcss.soak")
T = TypeVar("T")
R = TypeVar("R")

CLIENTS = 6  # concurrent API clients
RETRIES = 12  # a client's attempts at one request (5xx, dropped connection, key in progress)
# Backoff doubles from 0.25 s up to this: a key held by a crashed attempt (its claim
# lapses after the function's 10 s timeout) is tried again within 2 s of the lapse.
# The 12 attempts span about 20 s: one crashed attempt per key, not two (the quick
# profile's crashes are few; the full profile's rate makes two on one key unlikely).
BACKOFF_CAP_SECONDS = 2.0
# 409s that mean "not now": the key's first attempt still holds it (it crashed; its
# claim lapses after the function's timeout), or a concurrent change won the race.
TRY_AGAIN = ('"IDEMPOTENCY_IN_PROGRESS"', '"CONCURRENT_MODIFICATION"')
TOKEN_TTL_SECONDS = 8 * 3600
AGENT = ("soak-agent", "agent")
KNOBS_PARAMETER = "/tbcss/dev/simulator-knobs"
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
VISIBILITY_TIMEOUT_SECONDS = 5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SoakSystem:
    def __init__(self, state_dir: Path, start_at: datetime, profile: Profile) -> None:
        context = {
            **LOCAL_CONTEXT,
            "invoice_due_days": profile.invoice_due_days,
            "overdue_grace_days": profile.overdue_grace_days,
        }
        self.runtime = LocalRuntime(
            RuntimeOptions(port=free_port(), state_dir=state_dir, seed=True, context=context)
        )
        # Before the scheduler starts, so no schedule fires for the skipped days.
        self.runtime.clock.advance_to(start_at.timestamp())
        self._tokens: dict[tuple[str, str], str] = {}
        self._sessions: dict[int, requests.Session] = {}
        self.client_retries = 0

    # --- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> SoakSystem:
        self.runtime.start()
        self._shorten_visibility_timeouts()
        return self

    def _shorten_visibility_timeouts(self) -> None:
        """A batch whose worker crashed comes back after the queue's visibility
        timeout (3 to 6 minutes as deployed): real time, which the simulated
        clock cannot skip. The soak compresses it as it compresses the month."""
        sqs = self.aws("sqs", billed=False)
        for url in self.deployment.queues.values():
            sqs.set_queue_attributes(
                QueueUrl=url, Attributes={"VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS)}
            )

    def __exit__(self, *_: object) -> None:
        self.runtime.stop()

    @property
    def deployment(self) -> Any:
        assert self.runtime.deployment is not None
        return self.runtime.deployment

    def aws(self, service: str, *, billed: bool = True) -> Any:
        """A client at the runtime's moto; ``billed=False`` for the soak's own
        looking and steering (scans, queue checks), which the meter leaves out."""
        return local_client(
            service, self.runtime.endpoint_url, self.deployment.region, billed=billed
        )

    @property
    def table(self) -> str:
        return str(next(iter(self.deployment.tables.values())))

    def now(self) -> datetime:
        return self.runtime.clock.now()

    def advance_to(self, moment: datetime) -> None:
        """Move the clock; every schedule due on the way fires (bill runs, sweeps, janitors)."""
        assert self.runtime.scheduler is not None
        self.runtime.scheduler.advance_to(moment)

    def settle(self, timeout: float = 900) -> None:
        """Until every stream and queue is drained and no workflow is running. The
        limit is a hang detector, not a target: the full profile's last usage step
        leaves a backlog of thousands of CDRs, slower to drain on a busy machine."""
        assert self.runtime.pollers is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = max(1.0, deadline - time.monotonic())
            # Workflows before and after: one may end by sending to a queue after the
            # pollers' last look.
            if (
                not self._running_executions()
                and self.runtime.pollers.drain(timeout_seconds=left)
                and not self._running_executions()
            ):
                return
            time.sleep(0.5)
        raise AssertionError(f"the system did not settle in {timeout:.0f} s")

    def _running_executions(self) -> int:
        machines = self.aws("stepfunctions", billed=False)
        return sum(
            len(machines.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"])
            for arn in self.deployment.state_machines.values()
        )

    def set_knobs(self, knobs: SimulatorKnobs) -> None:
        """The simulated KYC provider, network and payment gateway misbehave like this."""
        self.aws("ssm", billed=False).put_parameter(
            Name=KNOBS_PARAMETER, Value=knobs.model_dump_json(), Type="String", Overwrite=True
        )

    # --- seeding -------------------------------------------------------------------

    def seed(self, lines: Sequence[Line], since: datetime) -> None:
        """Active subscribers with a plan from ``since`` (now or before), written as
        activation and POST /subscribe would then (through the same services and
        stores), in bulk."""
        bus = str(next(iter(self.deployment.buses.values())))
        previous = current_table()
        with aws_environment(self.runtime.endpoint_url, self.deployment.region):
            bind_table(self.table, self.deployment.region)
            try:
                store = DynamoSubscriptionStore()
                service = SubscriptionService(
                    DynamoPlanCatalog(),
                    store,
                    EventBridgePublisher(self.aws("events"), bus),
                    FixedClock(since),
                )
                network = line_registry(self.runtime.lines_prefix())

                def seed_one(line: Line) -> None:
                    seed_subscriber(
                        store,
                        _subscriber(line, since),
                        lines=network,
                        wallet_paise=0 if line.postpaid else PREPAID_WALLET_PAISE,
                    )
                    service.subscribe(line.user_id, line.plan_id)

                in_parallel(seed_one, lines)
            finally:
                bind_table(*previous)

    # --- the CDR feed ----------------------------------------------------------------

    def send_cdrs(self, records: Sequence[bytes]) -> None:
        stream = str(next(iter(self.deployment.streams.values())))
        send(self.aws("kinesis"), stream, list(records))

    # --- the API, as clients use it ------------------------------------------------------

    def token(self, sub: str, role: str) -> str:
        key = (sub, role)
        if key not in self._tokens:
            assert self.runtime.issuer is not None
            self._tokens[key] = self.runtime.issuer.issue(sub, [role], TOKEN_TTL_SECONDS)
        return self._tokens[key]

    def call(
        self,
        method: str,
        path: str,
        caller: tuple[str, str],
        body: Any = None,
        idempotency_key: str | None = None,
    ) -> requests.Response:
        """One client request, retried as a client would on a 5xx or a dropped
        connection, with the same Idempotency-Key."""
        headers = {"Authorization": f"Bearer {self.token(*caller)}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        url = self.runtime.api_url + path
        session = self._session()
        for attempt in range(RETRIES):
            try:
                answer = session.request(method, url, json=body, headers=headers, timeout=60)
            except requests.ConnectionError:
                answer = None
            if answer is not None and not _worth_retrying(answer):
                return answer
            self.client_retries += 1
            time.sleep(min(BACKOFF_CAP_SECONDS, 0.25 * 2**attempt))
        if answer is None:
            raise AssertionError(f"{method} {path}: no answer after {RETRIES} attempts")
        return answer

    def _session(self) -> requests.Session:
        ident = threading.get_ident()
        if ident not in self._sessions:
            self._sessions[ident] = requests.Session()
        return self._sessions[ident]

    def post(self, path: str, caller: tuple[str, str], body: Any) -> requests.Response:
        return self.call("POST", path, caller, body, str(uuid.uuid4()))

    def get(self, path: str, caller: tuple[str, str]) -> Any:
        answer = self.call("GET", path, caller)
        assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text}"
        return answer.json()

    # --- reading the end state --------------------------------------------------------------

    def items(self) -> Iterator[dict[str, Any]]:
        """Every item of the table, plain Python values."""
        deserializer = TypeDeserializer()
        for page in (
            self.aws("dynamodb", billed=False).get_paginator("scan").paginate(TableName=self.table)
        ):
            for item in page["Items"]:
                yield {name: deserializer.deserialize(value) for name, value in item.items()}

    def queued_bodies(self, url: str) -> list[str]:
        """Every message body in the queue, left there (hidden for a while)."""
        sqs = self.aws("sqs", billed=False)
        bodies: list[str] = []
        while batch := sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300
        ).get("Messages", []):
            bodies += [message["Body"] for message in batch]
        return bodies

    def anomaly_bodies(self) -> list[str]:
        queues = self.deployment.queues.values()
        urls = [url for url in queues if "anomal" in url.lower() and "dlq" not in url.lower()]
        return [body for url in urls for body in self.queued_bodies(url)]

    def dead_letters(self) -> dict[str, list[str]]:
        """The bodies left in every dead-letter queue (and failure destination)."""
        left: dict[str, list[str]] = {}
        for url in self.deployment.queues.values():
            if "dlq" not in url.lower():
                continue
            bodies = self.queued_bodies(url)
            if bodies:
                left[url.rsplit("/", 1)[-1]] = bodies
        return left


def _worth_retrying(answer: requests.Response) -> bool:
    """A 5xx or a "not now" 409: ask again a little later, with the same key."""
    if answer.status_code in TRANSIENT_STATUSES:
        return True
    return answer.status_code == 409 and any(code in answer.text for code in TRY_AGAIN)


def _subscriber(line: Line, since: datetime) -> Subscriber:
    return Subscriber(
        user_id=line.user_id,
        msisdn=line.msisdn,
        subscriber_type=SubscriberType(line.subscriber_type),
        state="KA",
        status=SubscriberStatus.ACTIVE,
        bill_cycle_day=1,
        created_at=since,
        iccid=line.iccid,
    )


def in_parallel(work: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
    """The customers act at once, as many as there are clients."""
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(work, items))


def in_parallel_by_item(work: Callable[[T], R], items: Iterable[T]) -> dict[T, R]:
    """``work`` of every item, asked at once (as :func:`in_parallel`), by item."""
    listed = list(items)
    return dict(zip(listed, in_parallel(work, listed), strict=True))


@contextmanager
def timed(what: str, seconds: dict[str, float]) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        seconds[what] = round(time.monotonic() - started, 1)
        log.warning("soak: %s took %.1f s", what, seconds[what])


def next_month_start(after: datetime) -> datetime:
    """00:00 IST on the first 1st after ``after`` (a bill date for cycle day 1)."""
    ist = after.astimezone(UTC) + timedelta(hours=5, minutes=30)
    year, month = (ist.year + 1, 1) if ist.month == 12 else (ist.year, ist.month + 1)
    return datetime(year, month, 1, tzinfo=UTC) - timedelta(hours=5, minutes=30)
