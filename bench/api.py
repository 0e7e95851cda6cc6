"""API load: concurrent clients against the local runtime's gateway, then each
endpoint's handler alone, to show how much of a request is the project's own code.

1. Through the gateway (``LocalRuntime`` in this process: moto server, gateway,
   authorizer and handlers in worker subprocesses): GET /plans, GET
   /users/{id}/usage and POST /subscribe, each with ``BENCH_API_CLIENTS``
   threads (a ``requests.Session`` each) for ``BENCH_API_SECONDS``. Every client
   first sends ``BENCH_API_WARMUP`` requests that are not measured, so workers'
   cold starts (and the authorizer's first call per token) are left out.
   Before the load, each bench subscriber is subscribed once with its own
   Idempotency-Key, and a few of its CDRs go through the stream and get rated (a
   usage report's common case). POST /subscribe's load is replays of those keys,
   each checked against the first answer (status and body).
2. Handler only: the same handler modules called in this process with API
   Gateway proxy events against in-process moto (``mock_aws``), the same data
   (the CDRs rated by the rating service in process), ``BENCH_API_HANDLER_CALLS``
   times each. botocore hooks time every AWS call's round trip (moto's work) and
   count the calls; handler-only = handler call - time in AWS calls, per call.

Latencies are client-side and include the load generator's own threads, which
share one interpreter (and the GIL) with the gateway and the moto server.
Sizes: ``BENCH_API_CLIENTS`` (8), ``BENCH_API_SECONDS`` (15), ``BENCH_API_WARMUP``
(3), ``BENCH_API_HANDLER_CALLS`` (300), ``BENCH_API_SUBSCRIBERS`` (8, one
Idempotency-Key each). Writes bench/results/api.json.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import requests
from aws_lambda_powertools.utilities.typing import LambdaContext
from moto import mock_aws

from bench.rating import RequestCounter  # its import sets the in-process AWS environment
from bench.results import Figure, write_results
from functions.plans import handler as plans_module
from functions.usage import handler as usage_module
from infra.cdr import FeedMix, generate
from infra.cdr import send as send_cdrs
from infra.local.runtime import (
    LocalRuntime,
    RuntimeOptions,
    aws_environment,
    seed_subscriber,
    seed_table,
)
from shared.clock import system_clock
from shared.db import DynamoSubscriptionStore
from shared.events import EventBridgePublisher
from shared.models import Subscriber, SubscriberStatus, SubscriberType
from shared.queues import SqsAnomalySink
from shared.services.usage import InboundRecord, RatingService
from shared.settings import get_settings
from shared.stores.usage import DynamoRatingStore
from tests.activation_data import iccid, msisdn
from tests.apigw import Caller, HttpResult, api_event, lambda_context, parse_response
from tests.integration.conftest import create_table

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".tbcss" / "bench-api"
CLIENTS = int(os.environ.get("BENCH_API_CLIENTS", "8"))
SECONDS = float(os.environ.get("BENCH_API_SECONDS", "15"))
WARMUP_REQUESTS = int(os.environ.get("BENCH_API_WARMUP", "3"))  # per client, not measured
HANDLER_CALLS = int(os.environ.get("BENCH_API_HANDLER_CALLS", "300"))
HANDLER_WARMUP_CALLS = 20
SUBSCRIBERS = int(os.environ.get("BENCH_API_SUBSCRIBERS", "8"))  # one Idempotency-Key each
REQUEST_TIMEOUT_SECONDS = 30
MISMATCHES_SHOWN = 5
BARRIER_TIMEOUT_SECONDS = 300  # every client's warm-up, cold starts included
SERIAL_BASE = 4_200_000  # the bench lines' MSISDNs and ICCIDs (tests.activation_data)
PREPAID_PLAN, POSTPAID_PLAN = "PRE_SMART_299", "POST_BASIC_399"
PREPAID_WALLET_PAISE = 1_000_00  # the plan's price and some headroom
REGION = "ap-south-1"
CDRS_PER_LINE = 5  # usage to report: GET /usage's common case is a line with rated usage
CDR_SPAN = timedelta(minutes=1)  # after the plans start, within rating's 5 minutes of future
FEED_SEED = 20261126
RATED_TIMEOUT_SECONDS = 90
PLANS, USAGE, SUBSCRIBE = "GET /plans", "GET /users/{id}/usage", "POST /subscribe (replays)"


# --- the bench subscribers ------------------------------------------------------------


@dataclass(frozen=True)
class BenchLine:
    """A seeded subscriber, the plan its one /subscribe starts and that request's key."""

    subscriber: Subscriber
    plan_id: str
    wallet_paise: int
    idempotency_key: str

    @property
    def user_id(self) -> str:
        return self.subscriber.user_id

    def subscribe_body(self) -> dict[str, str]:
        return {"user_id": self.user_id, "plan_id": self.plan_id}


def bench_lines(count: int) -> list[BenchLine]:
    """Half prepaid (a wallet that pays for the plan), half postpaid."""
    run = uuid.uuid4().hex[:8]
    lines = []
    for index in range(count):
        prepaid = index % 2 == 0
        subscriber = Subscriber(
            user_id=f"bench-{index:03d}",
            msisdn=msisdn(SERIAL_BASE + index),
            subscriber_type=SubscriberType.PREPAID if prepaid else SubscriberType.POSTPAID,
            state="KA",
            status=SubscriberStatus.ACTIVE,
            bill_cycle_day=1,
            created_at=datetime.now(UTC),
            iccid=iccid(SERIAL_BASE + index),
        )
        lines.append(
            BenchLine(
                subscriber,
                PREPAID_PLAN if prepaid else POSTPAID_PLAN,
                PREPAID_WALLET_PAISE if prepaid else 0,
                f"bench-api-{run}-{index}",
            )
        )
    return lines


def seed_lines(table: str, region: str, lines: list[BenchLine]) -> None:
    """The plan catalog and the bench subscribers, the way the runtime seeds its demo
    lines (no network lines: these endpoints do not touch the network)."""
    seed_table(table, region, demo_subscribers=False)
    store = DynamoSubscriptionStore()
    for line in lines:
        seed_subscriber(store, line.subscriber, lines=None, wallet_paise=line.wallet_paise)


def usage_feed(lines: list[BenchLine]) -> list[bytes]:
    """A few CDRs for every line, all after its plan started (call this once they have)."""
    start = datetime.now(UTC) + timedelta(seconds=1)  # the feed's times have whole seconds
    mix = FeedMix(
        count=CDRS_PER_LINE, duplicate_rate=0, out_of_order_rate=0, unknown_rate=0, span=CDR_SPAN
    )
    return [
        json.dumps(record).encode()
        for number, line in enumerate(lines)
        for record in generate(
            [line.subscriber.msisdn], mix, seed=FEED_SEED + number, end=start + CDR_SPAN
        )
    ]


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


# --- part 1: through the gateway -------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


def answer_of(response: requests.Response) -> Answer:
    try:
        return Answer(response.status_code, response.json())
    except ValueError:
        return Answer(response.status_code, response.text)


@dataclass(frozen=True)
class Endpoint:
    """``send`` makes request number ``n``; ``check`` says what is wrong with its answer
    besides its status (None: nothing)."""

    name: str
    send: Callable[[requests.Session, int], requests.Response]
    check: Callable[[int, requests.Response], str | None] | None = None


@dataclass
class LoadResult:
    endpoint: str
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # of the answered requests
    non_2xx: int = 0
    unanswered: list[str] = field(default_factory=list)  # timeouts, refused connections
    mismatches: list[str] = field(default_factory=list)  # replays unlike the first answer

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + len(self.unanswered)

    @property
    def errors(self) -> int:
        return self.non_2xx + len(self.unanswered)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def merge(self, other: LoadResult) -> None:
        self.latencies_ms += other.latencies_ms
        self.non_2xx += other.non_2xx
        self.unanswered += other.unanswered
        self.mismatches += other.mismatches


class GatewayBench:
    def __init__(self, runtime: LocalRuntime, lines: list[BenchLine]) -> None:
        assert runtime.issuer is not None
        self.url = runtime.api_url
        self.lines = lines
        self.tokens = {
            line.user_id: runtime.issuer.issue(line.user_id, ["subscriber"]) for line in lines
        }
        self.first_answers: dict[str, Answer] = {}

    def headers(self, line: BenchLine, *, key: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.tokens[line.user_id]}"}
        return headers | ({"Idempotency-Key": line.idempotency_key} if key else {})

    def subscribe(self, session: requests.Session, line: BenchLine) -> requests.Response:
        return session.post(
            f"{self.url}/subscribe",
            json=line.subscribe_body(),
            headers=self.headers(line, key=True),
            timeout=REQUEST_TIMEOUT_SECONDS,
        )

    def subscribe_all_once(self) -> None:
        """The first answer of every key (the replays must repeat it)."""
        with requests.Session() as session:
            for line in self.lines:
                self.first_answers[line.idempotency_key] = answer_of(self.subscribe(session, line))

    def wait_until_rated(self) -> None:
        """Until every line's usage report shows the CDRs put on the stream."""
        deadline = time.monotonic() + RATED_TIMEOUT_SECONDS
        waiting = list(self.lines)
        with requests.Session() as session:
            while waiting and time.monotonic() < deadline:
                waiting = [line for line in waiting if not self._rated(session, line)]
                time.sleep(0.5)
        if waiting:
            users = [line.user_id for line in waiting]
            raise RuntimeError(f"no usage rated after {RATED_TIMEOUT_SECONDS} s for {users}")

    def _rated(self, session: requests.Session, line: BenchLine) -> bool:
        path = f"{self.url}/users/{line.user_id}/usage"
        response = session.get(path, headers=self.headers(line), timeout=REQUEST_TIMEOUT_SECONDS)
        return response.ok and bool(response.json()["daily"])

    def endpoints(self) -> list[Endpoint]:
        def line(number: int) -> BenchLine:
            return self.lines[number % len(self.lines)]

        def plans(session: requests.Session, number: int) -> requests.Response:
            headers = self.headers(line(number))
            return session.get(
                f"{self.url}/plans", headers=headers, timeout=REQUEST_TIMEOUT_SECONDS
            )

        def usage(session: requests.Session, number: int) -> requests.Response:
            owner = line(number)
            path = f"{self.url}/users/{owner.user_id}/usage"
            return session.get(path, headers=self.headers(owner), timeout=REQUEST_TIMEOUT_SECONDS)

        def replay(session: requests.Session, number: int) -> requests.Response:
            return self.subscribe(session, line(number))

        def same_as_first(number: int, response: requests.Response) -> str | None:
            key = line(number).idempotency_key
            first, now = self.first_answers[key], answer_of(response)
            if now == first:
                return None
            return (
                f"key {key}: first {first.status} {first.body!r}, replay {now.status} {now.body!r}"
            )

        return [
            Endpoint(PLANS, plans),
            Endpoint(USAGE, usage),
            Endpoint(SUBSCRIBE, replay, same_as_first),
        ]


def run_load(endpoint: Endpoint, clients: int, seconds: float) -> LoadResult:
    """``clients`` threads: warm-up requests, then all together for ``seconds``."""
    window: dict[str, float] = {}

    def open_window() -> None:  # run once, by the last client to finish its warm-up
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + seconds

    barrier = threading.Barrier(clients, action=open_window)
    results = [LoadResult(endpoint.name) for _ in range(clients)]

    def client(index: int) -> None:
        with requests.Session() as session:
            for number in range(WARMUP_REQUESTS):
                with contextlib.suppress(requests.RequestException):
                    endpoint.send(session, index + number * clients)
            barrier.wait(timeout=BARRIER_TIMEOUT_SECONDS)
            number = WARMUP_REQUESTS
            while time.perf_counter() < window["end"]:
                _measure(endpoint, session, index + number * clients, results[index])
                number += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = LoadResult(endpoint.name, seconds=time.perf_counter() - window["start"])
    for result in results:
        total.merge(result)
    return total


def _measure(
    endpoint: Endpoint, session: requests.Session, number: int, result: LoadResult
) -> None:
    started = time.perf_counter()
    try:
        response = endpoint.send(session, number)
    except requests.RequestException as error:
        result.unanswered.append(f"request {number}: {error}")
        return
    result.latencies_ms.append((time.perf_counter() - started) * 1000)
    if not response.ok:
        result.non_2xx += 1
    problem = endpoint.check(number, response) if endpoint.check else None
    if problem:
        result.mismatches.append(problem)


def through_gateway(lines: list[BenchLine]) -> list[LoadResult]:
    runtime = LocalRuntime(RuntimeOptions(port=0, state_dir=STATE_DIR, seed=True))
    try:
        runtime.start()
        progress(f"local runtime up in {runtime.timings['total']:.1f} s")
        assert runtime.deployment is not None
        table = next(iter(runtime.deployment.tables.values()))
        region = runtime.deployment.region
        with aws_environment(runtime.endpoint_url, region):
            seed_lines(table, region, lines)
        bench = GatewayBench(runtime, lines)
        bench.subscribe_all_once()
        statuses = Counter(answer.status for answer in bench.first_answers.values())
        progress(f"first /subscribe answers by status: {dict(statuses)}")
        stream = next(name for name in runtime.deployment.streams.values() if "CdrStream" in name)
        with aws_environment(runtime.endpoint_url, region):
            send_cdrs(boto3.client("kinesis"), stream, usage_feed(lines))
        bench.wait_until_rated()
        results = []
        for endpoint in bench.endpoints():
            progress(f"through the gateway: {endpoint.name}")
            results.append(run_load(endpoint, CLIENTS, SECONDS))
        return results
    finally:
        runtime.stop()


def print_load(results: list[LoadResult]) -> None:
    print(
        f"API load through the local gateway: {CLIENTS} clients, {SECONDS:g} s per endpoint, "
        f"after {WARMUP_REQUESTS} unmeasured requests per client (cold starts excluded)"
    )
    print(
        f"  {'endpoint':<28}{'requests':>9}{'errors':>8}{'req/s':>8}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    )
    for result in results:
        latencies = result.latencies_ms
        print(
            f"  {result.endpoint:<28}{result.requests:>9,}{result.errors:>8,}"
            f"{result.per_second:>8.1f}{percentile(latencies, 50):>9.1f}"
            f"{percentile(latencies, 95):>9.1f}{percentile(latencies, 99):>9.1f}"
        )
        if result.endpoint == SUBSCRIBE:
            print(f"    replays unlike the first answer: {len(result.mismatches):,}")
        for problem in (result.mismatches + result.unanswered)[:MISMATCHES_SHOWN]:
            print(f"      {problem[:300]}")


# --- part 2: the handler alone ------------------------------------------------------------


class AwsCallMeter(RequestCounter):
    """bench.rating's counter (its DynamoDB counts stay), extended to every
    service's calls, as service/operation, and to the time inside AWS calls: from
    ``before-send`` (hooked first, ahead of moto's own handler that answers the
    request in process) to ``before-parse`` (the raw answer is back). Building,
    signing and parsing requests is the SDK's work in the function: it stays in
    the handler's share, as it would in Lambda."""

    def __init__(self) -> None:
        super().__init__()
        self.operations: Counter[str] = Counter()
        self.aws_seconds = 0.0
        self._sent_at: float | None = None

    def __call__(self, model: Any, params: dict[str, Any], **kwargs: Any) -> None:
        self.operations[f"{model.service_model.service_name}/{model.name}"] += 1
        super().__call__(model, params, **kwargs)

    def register(self, events: Any) -> None:
        super().register(events)
        events.register_first("before-send", self._sent)
        events.register("before-parse", self._answered)
        events.register("response-received", self._answered)  # after an exception too

    def _sent(self, **_: Any) -> None:
        self._sent_at = time.perf_counter()

    def _answered(self, **_: Any) -> None:
        if self._sent_at is not None:
            self.aws_seconds += time.perf_counter() - self._sent_at
            self._sent_at = None

    def reset(self) -> None:
        super().reset()
        self.operations.clear()


Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


@dataclass(frozen=True)
class HandlerCall:
    """Call number ``n``'s event for ``handler``, and the answer it must give (None:
    any 2xx)."""

    name: str
    handler: Handler
    context: LambdaContext
    event: Callable[[int], dict[str, Any]]
    expected: Callable[[int], HttpResult] | None = None


@dataclass
class HandlerResult:
    endpoint: str
    total_ms: list[float] = field(default_factory=list)
    aws_ms: list[float] = field(default_factory=list)
    errors: int = 0
    mismatches: int = 0
    aws_requests: Counter[str] = field(default_factory=Counter)

    @property
    def handler_only_ms(self) -> list[float]:
        return [total - aws for total, aws in zip(self.total_ms, self.aws_ms, strict=True)]

    def requests_per_call(self) -> dict[str, float]:
        calls = len(self.total_ms)
        return {name: count / calls for name, count in sorted(self.aws_requests.items())}


def measure_handler(meter: AwsCallMeter, call: HandlerCall) -> HandlerResult:
    for number in range(HANDLER_WARMUP_CALLS):
        call.handler(call.event(number), call.context)
    result = HandlerResult(call.name)
    meter.reset()
    for number in range(HANDLER_WARMUP_CALLS, HANDLER_WARMUP_CALLS + HANDLER_CALLS):
        event = call.event(number)
        aws_before = meter.aws_seconds
        started = time.perf_counter()
        response = call.handler(event, call.context)
        result.total_ms.append((time.perf_counter() - started) * 1000)
        result.aws_ms.append((meter.aws_seconds - aws_before) * 1000)
        answer = parse_response(response)
        result.errors += not 200 <= answer.status < 300
        if call.expected is not None:
            expected = call.expected(number)
            result.mismatches += (answer.status, answer.body) != (expected.status, expected.body)
    result.aws_requests = Counter(meter.operations)
    return result


def handler_only(lines: list[BenchLine]) -> list[HandlerResult]:
    settings = get_settings()
    meter = AwsCallMeter()
    with meter.installed(), mock_aws():
        # Imported again inside the meter, as a cold start would: the idempotency
        # layer makes its client at import, and the meter hooks clients as they are made.
        plans = importlib.reload(plans_module)
        usage = importlib.reload(usage_module)
        create_table(boto3.client("dynamodb", region_name=REGION), settings.table_name)
        events = boto3.client("events", region_name=REGION)
        events.create_event_bus(Name=settings.event_bus_name)
        seed_lines(settings.table_name, REGION, lines)
        plans_context = lambda_context("bench-plans")
        first_answers = {
            line.idempotency_key: parse_response(
                plans.handler(subscribe_event(line), plans_context)
            )
            for line in lines
        }
        rate_in_process(usage_feed(lines), settings.event_bus_name)
        calls = handler_calls(lines, plans.handler, usage.handler, first_answers)
        results = []
        for call in calls:
            progress(f"handler alone: {call.name}")
            results.append(measure_handler(meter, call))
        return results


def rate_in_process(records: list[bytes], bus_name: str) -> None:
    """What the stream's rating worker does with the records, without the stream."""
    sqs = boto3.client("sqs", region_name=REGION)
    anomalies = sqs.create_queue(QueueName="bench-api-anomalies")["QueueUrl"]
    events = EventBridgePublisher(boto3.client("events", region_name=REGION), bus_name)
    service = RatingService(
        DynamoRatingStore(), SqsAnomalySink(sqs, anomalies), events, system_clock()
    )
    inbound = [InboundRecord(f"{n:056d}", f"bench:{n}", data) for n, data in enumerate(records)]
    outcome = service.rate_records(inbound)
    if outcome.rated != len(records):
        raise RuntimeError(f"rated {outcome.rated} of {len(records)} CDRs: {outcome}")


def subscribe_event(line: BenchLine) -> dict[str, Any]:
    return api_event(
        "POST",
        "/subscribe",
        caller=Caller(line.user_id),
        body=line.subscribe_body(),
        idempotency_key=line.idempotency_key,
    )


def handler_calls(
    lines: list[BenchLine],
    plans_handler: Handler,
    usage_handler: Handler,
    first_answers: dict[str, HttpResult],
) -> list[HandlerCall]:
    def line(number: int) -> BenchLine:
        return lines[number % len(lines)]

    def plans(number: int) -> dict[str, Any]:
        return api_event("GET", "/plans", caller=Caller(line(number).user_id))

    def usage(number: int) -> dict[str, Any]:
        user_id = line(number).user_id
        return api_event(
            "GET",
            f"/users/{user_id}/usage",
            resource="/users/{user_id}/usage",
            path_parameters={"user_id": user_id},
            caller=Caller(user_id),
        )

    plans_context = lambda_context("bench-plans")
    return [
        HandlerCall(PLANS, plans_handler, plans_context, plans),
        HandlerCall(USAGE, usage_handler, lambda_context("bench-usage"), usage),
        HandlerCall(
            SUBSCRIBE,
            plans_handler,
            plans_context,
            lambda number: subscribe_event(line(number)),
            lambda number: first_answers[line(number).idempotency_key],
        ),
    ]


def print_handler_only(results: list[HandlerResult]) -> None:
    print(
        f"Handler alone, in process, in-process moto: {HANDLER_CALLS} calls per endpoint after "
        f"{HANDLER_WARMUP_CALLS} unmeasured (p50 per call, ms; handler-only = call - in AWS)"
    )
    print(f"  {'endpoint':<28}{'call':>8}{'in AWS':>8}{'handler-only':>14}{'errors':>8}")
    for result in results:
        print(
            f"  {result.endpoint:<28}{statistics.median(result.total_ms):>8.2f}"
            f"{statistics.median(result.aws_ms):>8.2f}"
            f"{statistics.median(result.handler_only_ms):>14.2f}{result.errors:>8,}"
        )
        if result.mismatches:
            print(f"    replays unlike the first answer: {result.mismatches:,}")
        requests_per_call = result.requests_per_call()
        print(f"    AWS requests per call: {sum(requests_per_call.values()):.2f}")
        for operation, count in requests_per_call.items():
            print(f"      {operation:<32}{count:>6.2f}")


# --- results -------------------------------------------------------------------------------


def figures(loads: list[LoadResult], handlers: list[HandlerResult]) -> list[Figure]:
    found: list[Figure] = []
    for load in loads:
        latencies = load.latencies_ms
        found += [
            Figure(f"{load.endpoint} requests/s", round(load.per_second, 1), "req/s"),
            Figure(f"{load.endpoint} p50", round(percentile(latencies, 50), 1), "ms"),
            Figure(f"{load.endpoint} p95", round(percentile(latencies, 95), 1), "ms"),
            Figure(f"{load.endpoint} p99", round(percentile(latencies, 99), 1), "ms"),
            Figure(f"{load.endpoint} errors", load.errors, "requests"),
        ]
        if load.endpoint == SUBSCRIBE:
            found.append(Figure(f"{load.endpoint} mismatches", len(load.mismatches), "requests"))
    for handler in handlers:
        per_call = handler.requests_per_call()
        found += [
            Figure(f"{handler.endpoint} handler call p50", _median(handler.total_ms), "ms"),
            Figure(f"{handler.endpoint} in AWS p50", _median(handler.aws_ms), "ms"),
            Figure(f"{handler.endpoint} handler-only p50", _median(handler.handler_only_ms), "ms"),
            Figure(f"{handler.endpoint} AWS requests", sum(per_call.values()), "per request"),
        ]
        found += [
            Figure(f"{handler.endpoint} {operation}", count, "per request")
            for operation, count in per_call.items()
        ]
    return found


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> None:
    progress("starting the local runtime")
    lines = bench_lines(SUBSCRIBERS)
    loads = through_gateway(lines)
    handlers = handler_only(lines)
    print_load(loads)
    print()
    print_handler_only(handlers)
    parameters: dict[str, object] = {
        "clients": CLIENTS,
        "seconds_per_endpoint": SECONDS,
        "warmup_requests_per_client": WARMUP_REQUESTS,
        "subscribers": SUBSCRIBERS,
        "idempotency_keys": SUBSCRIBERS,
        "handler_calls": HANDLER_CALLS,
        "max_workers_per_function": RuntimeOptions().max_workers_per_function,
    }
    write_results("api", parameters, figures(loads, handlers))


if __name__ == "__main__":
    main()
