"""moto in-process for the local event runtime tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.local.pollers import PollerSettings
from tests.local.events.support import REGION

# Short waits so a test runs in seconds; the semantics are the production ones.
FAST = PollerSettings(sqs_wait_seconds=0, idle_sleep_seconds=0.02, retry_delay_seconds=0.0)


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        yield {service: boto3.client(service, region_name=REGION) for service in ("kinesis", "sqs")}
