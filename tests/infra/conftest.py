"""The stack is synthesized once per session (a few seconds each time)."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from infra.stack import TbCssStack

STAGE = "dev"
REGION = "ap-south-1"


def build_stack(context: dict[str, Any] | None = None) -> TbCssStack:
    """``context`` as ``cdk synth -c key=value`` would hand it to the app."""
    app = cdk.App(context=context)
    return TbCssStack(app, "T", stage=STAGE, env=cdk.Environment(region=REGION))


@pytest.fixture(scope="session")
def stack() -> TbCssStack:
    return build_stack()


@pytest.fixture(scope="session")
def template(stack: TbCssStack) -> Template:
    return Template.from_stack(stack)


@pytest.fixture(scope="session")
def resources(template: Template) -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = template.to_json()["Resources"]
    return resources
