"""One way to define a TB-CSS Lambda function: shared code asset, dependency
layer, Powertools environment, log retention, least privilege by default."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

ROOT = Path(__file__).resolve().parent.parent
# Everything a Lambda does not need stays out of the code asset.
ASSET_EXCLUDES = [
    ".git",
    ".venv",
    ".tbcss",
    ".*_cache",
    "**/__pycache__",
    "cdk.out",
    "build",
    "tests",
    "bench",
    "events",
    "infra",
    "docs",
    "*.md",
    "Makefile",
    "*.lock",
    "*.toml",
    "cdk.json",
    "app.py",
    ".ci",
]
DEPENDENCY_LAYER_DIR = ROOT / "build" / "layer"


@dataclass
class Packaging:
    """The code asset every function shares, and the dependency layer if built.

    ``make layer`` installs the runtime dependencies into build/layer for
    Lambda's platform; without it the stack still synthesizes (tests, local
    runtime) but a real deployment would lack its dependencies.
    """

    code: lambda_.Code = field(
        default_factory=lambda: lambda_.Code.from_asset(str(ROOT), exclude=ASSET_EXCLUDES)
    )
    layer_dir: Path | None = field(
        default_factory=lambda: DEPENDENCY_LAYER_DIR if DEPENDENCY_LAYER_DIR.is_dir() else None
    )
    _layer: lambda_.LayerVersion | None = None

    def layers(self, scope: Construct) -> list[lambda_.ILayerVersion]:
        if self.layer_dir is None:
            return []
        if self._layer is None:
            self._layer = lambda_.LayerVersion(
                scope,
                "Dependencies",
                code=lambda_.Code.from_asset(str(self.layer_dir)),
                compatible_runtimes=[lambda_.Runtime.PYTHON_3_11],
                compatible_architectures=[lambda_.Architecture.ARM_64],
                description="TB-CSS runtime dependencies (pinned by requirements.lock)",
            )
        return [self._layer]


class ServiceFunction(Construct):
    """A Lambda running ``functions/<module>/<entry>.py``'s ``handler`` (entry
    defaults to handler.py; e.g. ``tasks`` for a module's workflow tasks)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        module: str,
        packaging: Packaging,
        environment: dict[str, str],
        memory_mb: int = 512,
        timeout_seconds: int = 10,
        handler: str = "handler",
        entry: str = "handler",
    ) -> None:
        super().__init__(scope, construct_id)
        log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Its own role instead of AWSLambdaBasicExecutionRole (logs on every log
        # group): this function writes to its log group only.
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"TB-CSS {module} {entry}",
        )
        log_group.grant_write(role)
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=lambda_.Runtime.PYTHON_3_11,
            architecture=lambda_.Architecture.ARM_64,
            code=packaging.code,
            handler=f"functions.{module}.{entry}.{handler}",
            layers=packaging.layers(scope),
            memory_size=memory_mb,
            timeout=Duration.seconds(timeout_seconds),
            log_group=log_group,
            role=role,
            environment={
                "POWERTOOLS_SERVICE_NAME": module,
                "POWERTOOLS_METRICS_NAMESPACE": "TBCSS",
                "POWERTOOLS_LOG_LEVEL": "INFO",
                **environment,
            },
        )
