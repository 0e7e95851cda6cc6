"""The TB-CSS stack: the platform plus one construct per module."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra import nag
from infra.activation import Activation, ActivationTimings
from infra.audit import Audit
from infra.billing import Billing
from infra.function import Packaging
from infra.payments import SIMULATOR, Payments
from infra.plans import Plans
from infra.platform import build_platform
from infra.service_control import ServiceControl
from infra.usage import Usage

# Feature flags this stack's security depends on, set here rather than in cdk.json:
# tests and the local runtime synthesize without the CLI, which reads cdk.json.
FEATURE_FLAGS = {
    # EventBridge may use an encrypted target queue's key only for this account's rules.
    "@aws-cdk/aws-events:eventsTargetQueueSameAccount": True,
    # S3 server access logs delivered under a bucket policy, not an ACL (ACLs are off).
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}


class TbCssStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str = "dev",
        packaging: Packaging | None = None,
        activation_timings: ActivationTimings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        for flag, value in FEATURE_FLAGS.items():
            self.node.set_context(flag, value)
        self.platform = build_platform(self, stage=stage, packaging=packaging or Packaging())
        self.plans = Plans(self, "Plans", platform=self.platform)
        self.usage = Usage(self, "Usage", platform=self.platform)
        timings = activation_timings or ActivationTimings.from_context(
            self.node.try_get_context("activation_retry_seconds")
        )
        self.activation = Activation(
            self, "Activation", platform=self.platform, stage=stage, timings=timings
        )

        self.billing = Billing(self, "Billing", platform=self.platform)
        # Its workflow retries on the activation timings (short locally, via the context).
        self.service_control = ServiceControl(
            self,
            "ServiceControl",
            platform=self.platform,
            activation=self.activation,
            billing=self.billing,
        )
        self.payments = Payments(
            self,
            "Payments",
            platform=self.platform,
            activation=self.activation,
            stage=stage,
            gateway=self.node.try_get_context("payment_gateway") or SIMULATOR,
        )

        # Last: its rule takes every module's events, its aspect every module's roles.
        self.audit = Audit(self, "Audit", platform=self.platform)

        CfnOutput(self, "ApiUrl", value=self.platform.api.url)
        CfnOutput(self, "TableName", value=self.platform.table.table_name)
        CfnOutput(self, "EventBusName", value=self.platform.bus.event_bus_name)
        # Last: the acknowledged cdk-nag findings name the constructs above.
        nag.acknowledge(self)
