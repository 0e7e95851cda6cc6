"""Builds the activation services from settings, once per container: both the
API handler and the workflow tasks use these."""

from __future__ import annotations

from functools import lru_cache

import boto3

from shared.activation_adapters import (
    KmsKycVault,
    SqsEscalationQueue,
    StepFunctionsStarter,
    load_pepper,
)
from shared.clock import system_clock
from shared.db import DynamoPlanCatalog, DynamoSubscriptionStore
from shared.events import EventBridgePublisher
from shared.kyc import KmsKeyService
from shared.kyc_provider import KycProvider, SimulatedKycProvider
from shared.network import LineRegistry, NetworkProvisioner, SimulatedNetwork
from shared.network_lines import line_registry
from shared.notifications import AwsNotifier
from shared.services.activation import ActivationService, ActivationWorkflow
from shared.services.subscriptions import SubscriptionService
from shared.settings import get_settings
from shared.simulation import KnobSource, SsmKnobs, StaticKnobs
from shared.stores.activation import DynamoActivationStore

SIMULATOR = "simulator"


@lru_cache(maxsize=1)
def vault() -> KmsKycVault:
    settings = get_settings()
    # The pepper is read once per container: it changes only with a re-fingerprinting.
    pepper = load_pepper(boto3.client("secretsmanager"), settings.kyc_pepper_secret_id)
    return KmsKycVault(KmsKeyService(boto3.client("kms")), settings.kyc_key_id, pepper)


@lru_cache(maxsize=1)
def events() -> EventBridgePublisher:
    return EventBridgePublisher(boto3.client("events"), get_settings().event_bus_name)


@lru_cache(maxsize=1)
def activation_service() -> ActivationService:
    settings = get_settings()
    starter = StepFunctionsStarter(
        boto3.client("stepfunctions"), settings.activation_state_machine_arn
    )
    return ActivationService(
        DynamoActivationStore(), vault(), DynamoPlanCatalog(), starter, system_clock()
    )


def knobs() -> KnobSource:
    name = get_settings().simulator_knobs_parameter
    return SsmKnobs(boto3.client("ssm"), name) if name else StaticKnobs()


def kyc_provider() -> KycProvider:
    """Only the simulator exists yet; a real provider's adapter plugs in here."""
    choice = get_settings().kyc_provider
    if choice != SIMULATOR:
        raise ValueError(f"unknown KYC provider {choice!r}")
    return SimulatedKycProvider(knobs())


def network() -> NetworkProvisioner:
    choice = get_settings().network_provisioner
    if choice != SIMULATOR:
        raise ValueError(f"unknown network provisioner {choice!r}")
    prefix = get_settings().simulator_lines_parameter_prefix
    lines: LineRegistry | None = line_registry(prefix)
    return SimulatedNetwork(knobs(), lines=lines)


@lru_cache(maxsize=1)
def activation_workflow() -> ActivationWorkflow:
    settings = get_settings()
    catalog = DynamoPlanCatalog()
    clock = system_clock()
    return ActivationWorkflow(
        store=DynamoActivationStore(),
        vault=vault(),
        kyc_provider=kyc_provider(),
        network=network(),
        subscriptions=SubscriptionService(catalog, DynamoSubscriptionStore(), events(), clock),
        catalog=catalog,
        notifier=AwsNotifier(
            boto3.client("sns"), boto3.client("ses"), settings.notification_sender
        ),
        escalations=SqsEscalationQueue(boto3.client("sqs"), settings.escalation_queue_url),
        events=events(),
        clock=clock,
    )
