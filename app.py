#!/usr/bin/env python3
"""CDK entry point: synthesizes the TB-CSS stack offline into cdk.out/."""

from __future__ import annotations

import os
from typing import Any

import aws_cdk as cdk

from infra import nag
from infra.stack import TbCssStack

DEFAULT_REGION = "ap-south-1"


def build_app(outdir: str | None = None, context: dict[str, Any] | None = None) -> cdk.App:
    # The CDK CLI names the output directory in CDK_OUTDIR (cdk synth --output ...).
    app = cdk.App(outdir=outdir or os.environ.get("CDK_OUTDIR") or "cdk.out", context=context)
    stage = app.node.try_get_context("stage") or "dev"
    region = app.node.try_get_context("region") or DEFAULT_REGION
    TbCssStack(app, f"TbCss-{stage}", stage=stage, env=cdk.Environment(region=region))
    # `cdk synth -c nag=true`: cdk-nag's AwsSolutions checks; a finding fails the synth.
    if str(app.node.try_get_context(nag.CONTEXT_KEY)).lower() == "true":
        nag.add_checks(app)
    return app


if __name__ == "__main__":
    build_app().synth()
