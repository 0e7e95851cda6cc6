"""The activation service and workflow steps against in-memory ports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.catalog import seed_plans
from shared.clock import FixedClock
from shared.errors import DuplicateIccid, DuplicateMsisdn, InvalidRequest
from shared.events import InMemoryEventPublisher
from shared.kyc_provider import KycProviderUnavailable, KycRejected, SimulatedKycProvider
from shared.models import SubscriberStatus
from shared.network import NetworkTransientError, SimulatedNetwork
from shared.services.activation import (
    ActivationRequest,
    ActivationService,
    ActivationStatus,
    ActivationWorkflow,
)
from shared.services.subscriptions import SubscriptionService
from shared.simulation import StaticKnobs
from tests.activation_data import activation_body
from tests.fakes import InMemoryPlanCatalog, InMemorySubscriptionStore
from tests.unit.activation.fakes import (
    FakeEscalations,
    FakeNotifier,
    FakeVault,
    FakeWorkflows,
    InMemoryActivationStore,
)

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@dataclass
class World:
    store: InMemoryActivationStore
    subscriptions: InMemorySubscriptionStore
    workflows: FakeWorkflows
    notifier: FakeNotifier
    escalations: FakeEscalations
    events: InMemoryEventPublisher
    service: ActivationService
    flow: ActivationWorkflow


@pytest.fixture
def world() -> World:
    clock = FixedClock(T0)
    catalog = InMemoryPlanCatalog(seed_plans())
    subscriptions = InMemorySubscriptionStore()
    store = InMemoryActivationStore(subscriptions)
    vault, workflows = FakeVault(), FakeWorkflows()
    notifier, escalations, events = FakeNotifier(), FakeEscalations(), InMemoryEventPublisher()
    knobs = StaticKnobs()
    flow = ActivationWorkflow(
        store=store,
        vault=vault,
        kyc_provider=SimulatedKycProvider(knobs),
        network=SimulatedNetwork(knobs),
        subscriptions=SubscriptionService(catalog, subscriptions, events, clock),
        catalog=catalog,
        notifier=notifier,
        escalations=escalations,
        events=events,
        clock=clock,
    )
    service = ActivationService(store, vault, catalog, workflows, clock)
    return World(store, subscriptions, workflows, notifier, escalations, events, service, flow)


def request(**overrides: Any) -> ActivationRequest:
    return ActivationRequest.model_validate(activation_body(**overrides))


# --- validation --------------------------------------------------------------


def _problems(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        ActivationRequest.model_validate(body)
    return {".".join(map(str, e["loc"])): e["msg"] for e in caught.value.errors()}


def test_identifiers_are_normalized() -> None:
    body = activation_body()
    body["msisdn"] = "+91 " + body["msisdn"]
    body["kyc"] = {"type": "PAN", "number": "abcpk7000z"}
    parsed = ActivationRequest.model_validate(body)
    assert parsed.msisdn == body["msisdn"].removeprefix("+91 ")
    assert parsed.kyc.number == "ABCPK7000Z"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"iccid": "8991000000000000001"}, "iccid", "Luhn"),
        ({"msisdn": "5123456789"}, "msisdn", "6-9"),
        ({"kyc": {"type": "AADHAAR", "number": "123456789012"}}, "kyc.number", "0 or 1"),
        ({"kyc": {"type": "AADHAAR", "number": "500000000001"}}, "kyc.number", "Verhoeff"),
        ({"kyc": {"type": "PAN", "number": "ABCCE1234F"}}, "kyc.number", "individual"),
        ({"state": "XX"}, "state", "state"),
        ({"subscriber_type": "corporate"}, "subscriber_type", "prepaid"),
        ({"email": "not-an-email"}, "email", "pattern"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str, words: str) -> None:
    problems = _problems({**activation_body(), **change})
    assert field in problems
    assert words in problems[field]


def test_a_plan_that_cannot_be_bought_is_bad_input_and_nothing_is_stored(world: World) -> None:
    for plan_id in ("NO_SUCH_PLAN", "POST_BASIC_399"):  # unknown; postpaid for a prepaid line
        with pytest.raises(InvalidRequest) as caught:
            world.service.accept(request(plan_id=plan_id))
        assert caught.value.details[0]["field"] == "plan_id"
    assert world.store.activations == {}
    assert world.workflows.started == {}


# --- accepting ---------------------------------------------------------------


def test_accept_claims_everything_and_starts_the_workflow_named_after_the_activation(
    world: World,
) -> None:
    body = request()
    accepted = world.service.accept(body)

    activation = world.store.get(accepted.activation_id)
    assert activation.status is ActivationStatus.PENDING
    assert activation.workflow_started
    assert world.workflows.started == {
        accepted.activation_id: {
            "activation_id": accepted.activation_id,
            "user_id": accepted.user_id,
        }
    }
    profile = world.subscriptions.get_subscriber(accepted.user_id)
    assert profile.status is SubscriberStatus.PENDING
    assert (profile.iccid, profile.msisdn) == (body.iccid, body.msisdn)
    sealed = world.store.sealed_kyc(accepted.user_id)
    assert body.kyc.number not in sealed.model_dump_json()
    assert body.kyc.number not in activation.model_dump_json()


def test_the_same_iccid_or_msisdn_again_is_a_conflict(world: World) -> None:
    first = request()
    world.service.accept(first)
    other = request()

    with pytest.raises(DuplicateIccid):
        world.service.accept(other.model_copy(update={"iccid": first.iccid}))
    with pytest.raises(DuplicateMsisdn):
        world.service.accept(other.model_copy(update={"msisdn": first.msisdn}))
    assert len(world.store.activations) == 1


def test_a_retry_after_start_execution_failed_resumes_the_same_activation(world: World) -> None:
    body = request()
    world.workflows.fail_next = True
    with pytest.raises(ConnectionError):
        world.service.accept(body)
    (stored,) = world.store.activations.values()
    assert not stored.workflow_started

    retried = world.service.accept(body)

    assert retried.activation_id == stored.activation_id
    assert list(world.workflows.started) == [stored.activation_id]
    with pytest.raises(DuplicateIccid):  # once started, the same request is a duplicate
        world.service.accept(body)
    other_kyc = request().kyc
    world.workflows.fail_next = False
    with pytest.raises(DuplicateIccid):
        world.service.accept(body.model_copy(update={"kyc": other_kyc}))


# --- the workflow steps -------------------------------------------------------


def _steps(world: World, activation_id: str) -> list[tuple[str, str]]:
    return [(e.step.value, e.outcome.value) for e in world.store.get(activation_id).history]


def test_happy_path_states_history_money_event_and_notifications(world: World) -> None:
    body = request()
    accepted = world.service.accept(body)
    activation_id = accepted.activation_id

    world.flow.verify_kyc(activation_id)
    world.flow.provision(activation_id)
    assert world.store.get(activation_id).status is ActivationStatus.PROVISIONING
    world.flow.complete(activation_id)
    world.flow.complete(activation_id)  # a redelivered invocation changes nothing
    world.flow.notify(activation_id)

    assert world.store.get(activation_id).status is ActivationStatus.ACTIVE
    assert _steps(world, activation_id) == [
        ("Request", "ACCEPTED"),
        ("Request", "SUCCEEDED"),
        ("VerifyKyc", "PASSED"),
        ("ProvisionNetwork", "SUCCEEDED"),
        ("Complete", "SUCCEEDED"),
        ("Notify", "SENT"),
    ]
    user = accepted.user_id
    assert world.subscriptions.get_subscriber(user).status is SubscriberStatus.ACTIVE
    # Paid at the point of sale: captured once, applied once, nothing left over.
    assert world.store.pos_receipts == {activation_id: 29900}
    assert world.subscriptions.wallet_balance(user) == 0
    assert world.subscriptions.get_active(user).plan_id == "PRE_SMART_299"  # type: ignore[union-attr]
    assert [e.detail_type for e in world.events.events] == ["PlanChanged", "SubscriberActivated"]
    assert world.notifier.sms[0][0] == f"+91{body.msisdn}"
    assert world.notifier.emails[0][0] == body.email


def test_kyc_failures_are_recorded_and_typed_then_rejection_releases_the_claims(
    world: World,
) -> None:
    flaky = world.service.accept(request(kyc_script="991")).activation_id
    with pytest.raises(KycProviderUnavailable):
        world.flow.verify_kyc(flaky)
    world.flow.verify_kyc(flaky)  # the retry passes
    assert _steps(world, flaky)[-2:] == [("VerifyKyc", "FAILED"), ("VerifyKyc", "PASSED")]

    body = request(kyc_script="999")
    refused = world.service.accept(body).activation_id
    for _ in range(2):
        with pytest.raises(KycRejected):
            world.flow.verify_kyc(refused)
    world.flow.reject_kyc(refused, {"Error": "KycRejected", "Cause": '{"errorMessage": "no"}'})

    activation = world.store.get(refused)
    assert activation.status is ActivationStatus.KYC_REJECTED
    assert activation.history[-1].detail == {"error": "KycRejected", "message": "no"}
    assert world.store.get_subscriber(activation.user_id).status is SubscriberStatus.KYC_REJECTED
    world.service.accept(body.model_copy(update={"kyc": request().kyc}))  # SIM back in stock


def test_provisioning_failures_count_attempts_and_escalation_tells_an_engineer(
    world: World,
) -> None:
    body = request(network_script="993")
    activation_id = world.service.accept(body).activation_id
    world.flow.verify_kyc(activation_id)
    for _ in range(3):
        with pytest.raises(NetworkTransientError):
            world.flow.provision(activation_id)
    world.flow.escalate(activation_id, {"Error": "NetworkTransientError", "Cause": "busy"})
    world.flow.escalate(activation_id, {"Error": "NetworkTransientError", "Cause": "busy"})

    activation = world.store.get(activation_id)
    assert activation.status is ActivationStatus.ESCALATED
    (message,) = world.escalations.messages  # the repeat did not tell twice
    assert [a["attempt"] for a in message["attempts"]] == [1, 2, 3]
    assert (message["iccid"], message["msisdn"]) == (body.iccid, body.msisdn)
    assert message["final_error"] == {"error": "NetworkTransientError", "message": "busy"}
    assert body.kyc.number not in str(message)
    assert world.events.of_type("SubscriberActivated") == []


def test_the_sample_events_fit_the_handlers() -> None:
    import json  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from functions.activation.tasks import TASKS  # noqa: PLC0415

    events = Path(__file__).resolve().parents[3] / "events"
    post = json.loads((events / "api" / "activate_sim_post.json").read_text())
    ActivationRequest.model_validate_json(post["body"])
    for sample in (events / "activation").glob("*.json"):
        task = json.loads(sample.read_text()).get("task")
        assert task is None or task in TASKS, sample.name
