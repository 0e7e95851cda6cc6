"""CDK construct of the plans module: catalog, subscribe, upgrade, health."""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from constructs import Construct

from infra.function import ServiceFunction
from infra.platform import Platform


class Plans(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, platform: Platform) -> None:
        super().__init__(scope, construct_id)
        fn = ServiceFunction(
            self,
            "Api",
            module="plans",
            packaging=platform.packaging,
            environment=platform.environment,
        ).function
        # Catalog reads, subscription writes and idempotency records: this table only.
        platform.table.grant_read_write_data(fn)
        platform.bus.grant_put_events_to(fn)

        integration = apigw.LambdaIntegration(fn)
        api = platform.api.root
        api.add_resource("health").add_method(
            "GET", integration, authorization_type=apigw.AuthorizationType.NONE
        )
        plans = api.add_resource("plans")
        plans.add_method("GET", integration, authorizer=platform.authorizer)
        plans.add_resource("{plan_id}").add_method(
            "GET", integration, authorizer=platform.authorizer
        )
        for path in ("subscribe", "upgrade"):
            api.add_resource(path).add_method("POST", integration, authorizer=platform.authorizer)
        self.function = fn
