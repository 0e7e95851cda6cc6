"""Concurrent requests cannot break the one-active-plan rule or double-charge.

Each worker thread plays one Lambda container: a fresh copy of the plans
handler module (its own resolver, idempotency layer and clients). Two things a
real container has for itself are made per-thread here: Powertools' current
event (a class attribute, since Lambda runs one request per process) and the
atomicity of each AWS request (moto in-process does not lock; DynamoDB applies
each request atomically). The races tested are then the real ones: between one
request's read and another's write. A barrier holds every worker at the brink
of its write until all are there.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

import functions.plans.handler as plans_handler
from shared import db
from shared.clock import FixedClock
from tests.apigw import Caller, HttpResult, api_event, lambda_context, parse_response
from tests.integration.conftest import Api, Aws, MakeSubscriber

WORKERS = 8
PREPAID_PLANS = ["PRE_DATA_49", "PRE_SMART_299", "PRE_VALUE_719", "PRE_ANNUAL_2999"]
PRICES = {"PRE_DATA_49": 4_900, "PRE_SMART_299": 29_900, "PRE_VALUE_719": 71_900,
          "PRE_ANNUAL_2999": 299_900}  # fmt: skip


@pytest.fixture(scope="module")
def containers() -> Iterator[list[ModuleType]]:
    """WORKERS independent copies of functions/plans/handler.py."""
    path = Path(plans_handler.__file__)
    copies = []
    for index in range(WORKERS):
        name = f"plans_container_{index}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # pydantic resolves the annotations through it
        spec.loader.exec_module(module)
        copies.append(module)
    yield copies
    for module in copies:
        sys.modules.pop(module.__name__, None)


@pytest.fixture
def fleet(
    containers: list[ModuleType], clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> list[ModuleType]:
    for module in containers:
        monkeypatch.setattr(module, "system_clock", lambda: clock)
        module.subscriptions.cache_clear()
    return containers


@pytest.fixture
def per_thread_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each thread sees its own current event, as each container would."""
    local = threading.local()
    resolve = APIGatewayRestResolver.resolve

    class ThreadLocalEvent:
        def __get__(self, obj: object, owner: type | None = None) -> Any:
            return local.event

        def __set__(self, obj: object, value: Any) -> None:
            local.event = value

    def resolve_in_thread(self: APIGatewayRestResolver, event: Any, context: Any) -> Any:
        local.event = self._to_proxy_event(event)
        return resolve(self, event, context)

    monkeypatch.setattr(APIGatewayRestResolver, "current_event", ThreadLocalEvent(), raising=False)
    monkeypatch.setattr(APIGatewayRestResolver, "resolve", resolve_in_thread)


def hold_at(monkeypatch: pytest.MonkeyPatch, method: str, *, after: bool) -> None:
    """Make every worker wait in DynamoSubscriptionStore.<method> until all arrived."""
    barrier = threading.Barrier(WORKERS, timeout=20)
    original: Callable[..., Any] = getattr(db.DynamoSubscriptionStore, method)

    def held(self: db.DynamoSubscriptionStore, *args: Any, **kwargs: Any) -> Any:
        if not after:
            barrier.wait()
        result = original(self, *args, **kwargs)
        if after:
            barrier.wait()
        return result

    monkeypatch.setattr(db.DynamoSubscriptionStore, method, held)


def run_concurrently(fleet: list[ModuleType], events: list[dict[str, Any]]) -> list[HttpResult]:
    def call(index: int) -> HttpResult:
        context = lambda_context(f"plans-{index}")
        return parse_response(fleet[index].handler(events[index], context))

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(call, range(WORKERS)))


def post(path: str, user: str, plan: str, key: str) -> dict[str, Any]:
    return api_event(
        "POST",
        path,
        caller=Caller(user),
        body={"user_id": user, "plan_id": plan},
        idempotency_key=key,
    )


@pytest.mark.usefixtures("api", "atomic_moto", "per_thread_requests")
def test_concurrent_subscribes_start_exactly_one_plan(
    aws: Aws,
    store: db.DynamoSubscriptionStore,
    make_subscriber: MakeSubscriber,
    fleet: list[ModuleType],
) -> None:
    make_subscriber("u1", wallet_paise=1_000_000)
    plans = [PREPAID_PLANS[i % len(PREPAID_PLANS)] for i in range(WORKERS)]
    events = [post("/subscribe", "u1", plan, f"key-{i}") for i, plan in enumerate(plans)]
    with pytest.MonkeyPatch.context() as patch:
        hold_at(patch, "start", after=False)
        results = run_concurrently(fleet, events)

    statuses = Counter(r.status for r in results)
    assert statuses == {201: 1, 409: WORKERS - 1}, [r.body for r in results]
    assert {r.error_code for r in results if r.status == 409} <= {
        "ACTIVE_PLAN_EXISTS",
        "CONCURRENT_MODIFICATION",
    }
    (winner,) = [r for r in results if r.status == 201]
    assert aws.sort_keys("USER#u1").count("SUB#ACTIVE") == 1
    (period,) = store.history("u1")
    assert period.subscription_id == winner.body["subscription_id"]
    assert store.wallet_balance("u1") == 1_000_000 - PRICES[winner.body["plan_id"]]
    assert len(aws.published()) == 1


@pytest.mark.usefixtures("atomic_moto", "per_thread_requests")
def test_concurrent_upgrades_apply_exactly_one_change(
    api: Api,
    aws: Aws,
    *,
    clock: FixedClock,
    store: db.DynamoSubscriptionStore,
    make_subscriber: MakeSubscriber,
    fleet: list[ModuleType],
) -> None:
    make_subscriber("u1", wallet_paise=1_000_000)
    first = api.post("/subscribe", {"user_id": "u1", "plan_id": "PRE_SMART_299"}, as_user="u1")
    assert first.status == 201
    aws.published()
    clock.advance(timedelta(days=10))
    targets = ["PRE_DATA_49", "PRE_VALUE_719", "PRE_ANNUAL_2999"]
    events = [post("/upgrade", "u1", targets[i % 3], f"up-{i}") for i in range(WORKERS)]
    with pytest.MonkeyPatch.context() as patch:
        hold_at(patch, "get_active", after=True)  # all read the same old plan first
        results = run_concurrently(fleet, events)

    statuses = Counter(r.status for r in results)
    assert statuses == {200: 1, 409: WORKERS - 1}, [r.body for r in results]
    assert {r.error_code for r in results if r.status == 409} == {"CONCURRENT_MODIFICATION"}
    (winner,) = [r for r in results if r.status == 200]
    old, new = store.history("u1")
    assert old.ended_at is not None
    assert new.subscription_id == winner.body["subscription_id"]
    active = store.get_active("u1")
    assert active is not None
    assert active.subscription_id == winner.body["subscription_id"]
    assert store.wallet_balance("u1") == 1_000_000 - 29_900 - winner.body["wallet_debit_paise"]
    assert [e["detail"]["change_type"] for e in aws.published()] in (["UPGRADE"], ["DOWNGRADE"])
