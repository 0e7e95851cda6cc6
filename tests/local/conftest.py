"""One local runtime per test session, running the small fixture stack
(tests/local/fixture): deploy once, test the gateway, the Invoke shim, Step
Functions and the deployment against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.deploy import Deployment
from infra.local.meter import local_client
from infra.local.runtime import LocalRuntime, RuntimeOptions

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_APP = "tests.local.fixture.app:build_app"
# Under the git-ignored state dir, so the synthesized fixture is reused between runs.
STATE_DIR = ROOT / ".tbcss" / "tests-local"


@pytest.fixture(scope="session")
def runtime() -> Iterator[LocalRuntime]:
    options = RuntimeOptions(port=0, state_dir=STATE_DIR, app_spec=FIXTURE_APP, seed=False)
    with LocalRuntime(options) as started:
        yield started


@pytest.fixture(scope="session")
def deployment(runtime: LocalRuntime) -> Deployment:
    assert runtime.deployment is not None
    return runtime.deployment


@pytest.fixture(scope="session")
def aws(runtime: LocalRuntime, deployment: Deployment) -> Any:
    """boto3 clients against the runtime's moto: ``aws("sqs")``."""

    def client(service: str) -> Any:
        return local_client(service, runtime.endpoint_url, deployment.region, billed=True)

    return client


def function_named(deployment: Deployment, prefix: str) -> str:
    """Physical name of the fixture function whose logical id starts with ``prefix``."""
    return next(f.name for f in deployment.functions.values() if f.logical_id.startswith(prefix))
