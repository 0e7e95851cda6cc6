"""Builds the service-control services from settings, once per container: the
API, the worker, the workflow tasks and the inactivity sweep share them.

The network simulator, the event publisher and the billing service come from
the activation and billing wirings: one construction of each, whichever
module's Lambda runs it."""

from __future__ import annotations

from functools import lru_cache

import boto3

from functions.activation.wiring import network
from functions.billing.wiring import billing, events
from shared.activation_adapters import StepFunctionsStarter
from shared.clock import system_clock
from shared.db import CYCLE_SHARDS, DynamoSubscriptionStore
from shared.network import BarringRetries, NetworkProvisioner
from shared.notifications import AwsNotifier
from shared.services.disconnection import DisconnectionConfig, Disconnections
from shared.services.service_control import ServiceControl
from shared.services.sim_care import OtpConfig, OwnerOtps, SimReplacement
from shared.settings import get_settings
from shared.stores.billing import SqsTaskQueue
from shared.stores.otp import DynamoOtpStore
from shared.stores.service_control import (
    DynamoDisconnectionStore,
    DynamoFacts,
    DynamoServiceStore,
)
from shared.stores.sim_care import DynamoSimClaims


@lru_cache(maxsize=1)
def line_network() -> NetworkProvisioner:
    """Activation's network adapter, built once here: three services share it.
    Barring orders retry a transient failure in the call (BarringRetries)."""
    return BarringRetries(network())


@lru_cache(maxsize=1)
def facts() -> DynamoFacts:
    return DynamoFacts()


@lru_cache(maxsize=1)
def notifier() -> AwsNotifier:
    return AwsNotifier(boto3.client("sns"), boto3.client("ses"), get_settings().notification_sender)


@lru_cache(maxsize=1)
def owner_otps() -> OwnerOtps:
    return OwnerOtps(
        store=DynamoOtpStore(),
        subscribers=DynamoSubscriptionStore(),
        notifier=notifier(),
        clock=system_clock(),
        config=OtpConfig.from_settings(get_settings()),
    )


@lru_cache(maxsize=1)
def service_control() -> ServiceControl:
    return ServiceControl(
        store=DynamoServiceStore(),
        facts=facts(),
        network=line_network(),
        events=events(),
        clock=system_clock(),
        otps=owner_otps(),
        retries=task_queue(),
    )


@lru_cache(maxsize=1)
def disconnections() -> Disconnections:
    settings = get_settings()
    return Disconnections(
        store=DynamoDisconnectionStore(),
        states=DynamoServiceStore(),
        subscribers=DynamoSubscriptionStore(),
        facts=facts(),
        billing=billing(),
        network=line_network(),
        sync=service_control(),
        starter=StepFunctionsStarter(
            boto3.client("stepfunctions"), settings.disconnection_state_machine_arn
        ),
        notifier=notifier(),
        events=events(),
        clock=system_clock(),
        config=DisconnectionConfig(
            inactivity_days=settings.inactivity_days,
            cooling_off_days=settings.msisdn_cooling_off_days,
            shards=CYCLE_SHARDS,
        ),
    )


@lru_cache(maxsize=1)
def sim_replacement() -> SimReplacement:
    return SimReplacement(
        store=DynamoServiceStore(),
        claims=DynamoSimClaims(),
        subscribers=DynamoSubscriptionStore(),
        network=line_network(),
        sync=service_control(),
        events=events(),
        clock=system_clock(),
    )


def task_queue() -> SqsTaskQueue:
    """The service-control queue: the inactivity sweep's fan-out and network syncs
    to retry."""
    return SqsTaskQueue(boto3.client("sqs"), get_settings().service_control_queue_url)
