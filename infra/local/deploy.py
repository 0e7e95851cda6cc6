"""Synthesize the CDK app, deploy its stack into moto's CloudFormation, and
describe what was deployed (:class:`Deployment`) for the gateway, the workers,
the pollers and the scheduler.

Template transforms for moto (the deployed template differs from the
synthesized one only in these ways; :class:`Deployment` always describes the
*synthesized* template, so the local runtime behaves like AWS):

1. Every ``AWS::Lambda::EventSourceMapping`` is deployed with ``Enabled: false``.
   An enabled SQS mapping makes moto consume every message (it tries to run the
   function, fails without Docker, and the message is gone); Kinesis mappings
   never consume in moto. Our pollers deliver both.
2. Targets that are not SQS queues, buses, log groups or API destinations are
   removed from rules that have an ``EventPattern``. moto's ``PutEvents`` fails
   with HTTP 500 when a matching rule targets a Lambda function or a state
   machine; the local runtime delivers those targets itself (the rule keeps its
   targets in :attr:`Deployment.rules`).

One fix-up after the deploy: moto's CloudFormation creates state machines in
the plain Step Functions backend, but with ``execute_state_machine`` on, the
API serves (and executes) from a second backend, where they are missing.
:func:`_mirror_state_machines` reads them with execution switched off and
creates them again, under the same ARNs, with it switched on.

Nothing else changes. Resource types moto's CloudFormation skips (Cognito,
API Gateway authorizers, stages, gateway responses, ...) are read from the
template instead, and each such difference is listed in
:attr:`Deployment.differences`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from infra.local.moto_server import configure_moto

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_APP = "app:build_app"
ACCOUNT = "123456789012"  # moto's default account
BOOTSTRAP_QUALIFIER = "hnb659fds"
BOOTSTRAP_VERSION = "21"
# Targets moto's EventBridge can deliver to; anything else makes PutEvents fail.
MOTO_DELIVERABLE_TARGETS = (":sqs:", ":events:", ":logs:", ":api-destination/")
DEPLOY_TIMEOUT_SECONDS = 60.0
# What the synthesized assembly depends on: a change here means synthesize again.
SYNTH_INPUT_DIRS = ("infra", "shared", "functions")
SYNTH_INPUT_SUFFIXES = (".py", ".json", ".txt", ".toml", ".lock", ".yaml", ".yml")
# The local runtime and the CLI are not part of any CDK app: editing them must not
# re-synthesize.
SYNTH_IGNORED = (Path("infra") / "local", Path("infra") / "cli.py")


class DeployError(RuntimeError):
    """Synthesis or deployment failed; the message is meant for people."""


# --- what was deployed ------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str  # physical name in moto
    arn: str
    handler: str  # "package.module.function"
    environment: dict[str, str]  # template environment, intrinsics resolved
    timeout_seconds: int
    memory_mb: int
    runtime: str = "python3.11"
    code_dir: str | None = None  # the synthesized code asset the worker imports from


@dataclass(frozen=True)
class EventSourceMappingSpec:
    logical_id: str
    function_name: str
    source_arn: str
    source_kind: str  # "sqs" | "kinesis" | "dynamodb"
    batch_size: int
    max_batching_window_seconds: int
    bisect_on_error: bool
    maximum_retry_attempts: int | None  # None: retry until the record expires (Kinesis)
    maximum_record_age_seconds: int | None
    on_failure_destination_arn: str | None
    report_batch_item_failures: bool
    enabled: bool  # as synthesized (moto always gets Enabled: false)
    starting_position: str | None
    source_url: str | None = None  # the queue URL for SQS sources


@dataclass(frozen=True)
class TargetSpec:
    id: str
    arn: str
    input: str | None = None
    input_path: str | None = None
    input_transformer: dict[str, Any] | None = None
    dead_letter_arn: str | None = None
    role_arn: str | None = None
    maximum_retry_attempts: int | None = None
    maximum_event_age_seconds: int | None = None
    sqs_message_group_id: str | None = None


@dataclass(frozen=True)
class RuleSpec:
    logical_id: str
    name: str
    bus_name: str
    event_pattern: dict[str, Any] | None
    schedule_expression: str | None
    enabled: bool
    targets: list[TargetSpec]


@dataclass(frozen=True)
class AuthorizerSpec:
    logical_id: str
    name: str
    type: str  # "TOKEN" | "REQUEST" | "COGNITO_USER_POOLS"
    function_name: str | None
    identity_header: str | None  # from IdentitySource "method.request.header.X"
    result_ttl_seconds: int


@dataclass(frozen=True)
class RouteSpec:
    path: str  # resource path with {param} placeholders, e.g. /plans/{plan_id}
    http_method: str  # GET, POST, ... or ANY
    authorization_type: str  # NONE | CUSTOM | COGNITO_USER_POOLS | AWS_IAM
    authorizer: AuthorizerSpec | None
    integration_function: str | None  # physical name of the AWS_PROXY Lambda
    method_logical_id: str

    @property
    def authorizer_function(self) -> str | None:
        return self.authorizer.function_name if self.authorizer else None


@dataclass(frozen=True)
class GatewayResponseSpec:
    response_type: str  # UNAUTHORIZED, ACCESS_DENIED, DEFAULT_4XX, ...
    status_code: int | None
    templates: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class Deployment:
    stack_name: str
    region: str
    account: str
    endpoint_url: str
    template: dict[str, Any]  # as synthesized
    physical_ids: dict[str, str]  # logical id -> physical id
    functions: dict[str, FunctionSpec]  # logical id -> spec
    event_source_mappings: list[EventSourceMappingSpec]
    rules: list[RuleSpec]
    state_machines: dict[str, str]  # logical id -> ARN
    queues: dict[str, str]  # logical id -> URL
    streams: dict[str, str]  # logical id -> stream name
    tables: dict[str, str]  # logical id -> table name
    buses: dict[str, str]  # logical id -> bus name
    api_name: str | None
    stage_name: str | None
    routes: list[RouteSpec]
    gateway_responses: dict[str, GatewayResponseSpec]  # response type -> spec
    outputs: dict[str, str]
    differences: list[str] = field(default_factory=list)
    deploy_seconds: float = 0.0

    def function(self, name_or_arn: str) -> FunctionSpec:
        """Look a function up by physical name, ARN (qualified or not) or logical id."""
        wanted = _function_name_from(name_or_arn)
        for spec in self.functions.values():
            if wanted in (spec.name, spec.logical_id):
                return spec
        raise KeyError(name_or_arn)

    def function_by_arn(self, arn: str) -> FunctionSpec:
        return self.function(arn)

    def has_function(self, name_or_arn: str) -> bool:
        try:
            self.function(name_or_arn)
        except KeyError:
            return False
        return True

    def queue_url_by_arn(self, arn: str) -> str | None:
        name = arn.rsplit(":", 1)[-1]
        return next((url for url in self.queues.values() if url.endswith(f"/{name}")), None)

    def summary(self) -> dict[str, Any]:
        """What ``tbcss local info`` prints: enough to point the AWS CLI or boto3 at it."""
        return {
            "stack": self.stack_name,
            "aws_endpoint_url": self.endpoint_url,
            "region": self.region,
            "account": self.account,
            "tables": sorted(self.tables.values()),
            "table": next(iter(self.tables.values()), None),
            "streams": sorted(self.streams.values()),
            "queues": sorted(self.queues.values()),
            "buses": sorted(self.buses.values()),
            "state_machines": sorted(self.state_machines.values()),
            "functions": {spec.logical_id: spec.name for spec in self.functions.values()},
            "routes": [f"{r.http_method} {r.path}" for r in self.routes],
            "differences": self.differences,
        }


def _function_name_from(name_or_arn: str) -> str:
    # arn:aws:lambda:region:account:function:name[:qualifier]
    if name_or_arn.startswith("arn:"):
        parts = name_or_arn.split(":")
        return parts[6] if len(parts) > 6 else name_or_arn
    return name_or_arn.split(":", 1)[0]


# --- synthesis (cached) ------------------------------------------------------


@dataclass(frozen=True)
class StackArtifact:
    stack_name: str
    region: str
    template_path: Path
    assets_path: Path | None


def synthesize(
    app_spec: str,
    state_dir: Path,
    *,
    project_root: Path = ROOT,
    context: Mapping[str, Any] | None = None,
) -> StackArtifact:
    """Synthesize ``module:function`` into ``<state>/synth/<hash>``, reusing an
    assembly whose inputs have not changed (synth costs seconds; hashing, milliseconds).
    ``context`` is CDK context, as ``cdk synth -c key=value`` would pass it."""
    context_json = json.dumps(dict(context or {}), sort_keys=True)
    digest = _synth_inputs_digest(app_spec, project_root, context_json)
    outdir = state_dir / "synth" / digest
    if not (outdir / "manifest.json").is_file():
        _run_synth(app_spec, outdir, project_root, context_json)
    return _stack_artifact(outdir)


def _synth_inputs_digest(app_spec: str, project_root: Path, context_json: str = "{}") -> str:
    hasher = hashlib.sha256(app_spec.encode())
    hasher.update(context_json.encode())
    module_file = project_root / (app_spec.split(":", 1)[0].replace(".", "/") + ".py")
    # An app in its own directory (a test fixture) depends on everything beside it.
    beside = _files_under(module_file.parent, module_file.parent != project_root)
    files = [module_file, project_root / "cdk.json", *beside]
    for name in SYNTH_INPUT_DIRS:
        files.extend(_files_under(project_root / name, True))
    for path in sorted(set(files)):
        relative = path.relative_to(project_root)
        ignored = any(relative == i or i in relative.parents for i in SYNTH_IGNORED)
        if path.is_file() and not ignored:
            hasher.update(str(relative).encode())
            hasher.update(path.read_bytes())
    return hasher.hexdigest()[:16]


def _files_under(directory: Path, recursive: bool) -> Iterator[Path]:
    if not directory.is_dir():
        return
    candidates = directory.rglob("*") if recursive else directory.glob("*")
    for path in candidates:
        if path.suffix in SYNTH_INPUT_SUFFIXES and "__pycache__" not in path.parts:
            yield path


_SYNTH_SCRIPT = """
import importlib, inspect, sys
module_name, _, function_name = sys.argv[1].partition(":")
factory = getattr(importlib.import_module(module_name), function_name or "build_app")
outdir = sys.argv[2]
takes_outdir = "outdir" in inspect.signature(factory).parameters
app = factory(outdir=outdir) if takes_outdir else factory()
app.synth()
"""


def _run_synth(app_spec: str, outdir: Path, project_root: Path, context_json: str) -> None:
    # A subprocess: jsii starts a Node process we do not want living in the runtime.
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=outdir.parent))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project_root), env.get("PYTHONPATH")]))
    # Apps whose factory has no outdir parameter honour the CLI's variable.
    env["CDK_OUTDIR"] = str(tmp)
    env["CDK_CONTEXT_JSON"] = context_json  # what the CDK CLI uses to hand an app its context
    completed = subprocess.run(  # noqa: S603 - fixed interpreter and script
        [sys.executable, "-c", _SYNTH_SCRIPT, app_spec, str(tmp)],
        cwd=project_root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        last_line = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        shutil.rmtree(tmp, ignore_errors=True)
        raise DeployError(f"CDK synth of {app_spec} failed: {last_line}")
    try:
        tmp.rename(outdir)
    except OSError:  # another process synthesized the same inputs meanwhile
        shutil.rmtree(tmp, ignore_errors=True)


def _stack_artifact(outdir: Path) -> StackArtifact:
    manifest = json.loads((outdir / "manifest.json").read_text())
    stacks = [
        (name, artifact)
        for name, artifact in manifest["artifacts"].items()
        if artifact["type"] == "aws:cloudformation:stack"
    ]
    if len(stacks) != 1:
        raise DeployError(f"the local runtime deploys one stack; the app has {len(stacks)}")
    name, artifact = stacks[0]
    region = artifact["environment"].rsplit("/", 1)[-1]
    if region.startswith("unknown"):
        region = "us-east-1"
    assets = outdir / f"{name}.assets.json"
    return StackArtifact(
        stack_name=artifact.get("properties", {}).get("stackName", name),
        region=region,
        template_path=outdir / artifact["properties"]["templateFile"],
        assets_path=assets if assets.is_file() else None,
    )


# --- deployment --------------------------------------------------------------


def deploy(
    endpoint_url: str,
    state_dir: Path,
    *,
    app_spec: str = DEFAULT_APP,
    project_root: Path = ROOT,
    context: Mapping[str, Any] | None = None,
) -> Deployment:
    """Synthesize (cached) and deploy the app's stack into the moto at ``endpoint_url``."""
    started = time.monotonic()
    artifact = synthesize(app_spec, state_dir, project_root=project_root, context=context)
    template = json.loads(artifact.template_path.read_text())
    session = _session(artifact.region)
    clients = _Clients(session, endpoint_url)
    _bootstrap(clients, artifact.region)
    if artifact.assets_path is not None:
        _publish_assets(clients, artifact.assets_path, artifact.region)
    _create_stack(clients.cloudformation, artifact.stack_name, moto_template(template))
    _stand_in_for_skipped_resources(clients, template)
    _mirror_state_machines(clients, endpoint_url)
    deployment = describe(
        clients,
        artifact.stack_name,
        artifact.region,
        endpoint_url,
        template,
        asset_dirs=_asset_dirs(artifact.assets_path),
    )
    return _with_duration(deployment, time.monotonic() - started)


def _with_duration(deployment: Deployment, seconds: float) -> Deployment:
    return Deployment(**{**deployment.__dict__, "deploy_seconds": round(seconds, 3)})


def _session(region: str) -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto accepts any credentials
        region_name=region,
    )


class _Clients:
    def __init__(self, session: boto3.session.Session, endpoint_url: str) -> None:
        self._session = session
        self._endpoint_url = endpoint_url
        self.cloudformation = self.client("cloudformation")

    def client(self, service: str) -> Any:
        return self._session.client(service, endpoint_url=self._endpoint_url)  # type: ignore[call-overload]


def asset_bucket(region: str) -> str:
    return f"cdk-{BOOTSTRAP_QUALIFIER}-assets-{ACCOUNT}-{region}"


def _bootstrap(clients: _Clients, region: str) -> None:
    s3 = clients.client("s3")
    bucket = asset_bucket(region)
    create: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(**create)
    clients.client("ssm").put_parameter(
        Name=f"/cdk-bootstrap/{BOOTSTRAP_QUALIFIER}/version",
        Value=BOOTSTRAP_VERSION,
        Type="String",
        Overwrite=True,
    )


def _publish_assets(clients: _Clients, assets_path: Path, region: str) -> None:
    """Upload file assets where the template expects them: moto's Lambda reads
    each function's code object from S3 when CloudFormation creates it."""
    s3 = clients.client("s3")
    manifest = json.loads(assets_path.read_text())
    for asset in manifest.get("files", {}).values():
        source = assets_path.parent / asset["source"]["path"]
        body = _zip(source) if asset["source"].get("packaging") == "zip" else source.read_bytes()
        for destination in asset["destinations"].values():
            key = destination["objectKey"]
            s3.put_object(Bucket=asset_bucket(region), Key=key, Body=body)


def _asset_dirs(assets_path: Path | None) -> dict[str, str]:
    """S3 object key -> the synthesized directory it was zipped from."""
    if assets_path is None:
        return {}
    manifest = json.loads(assets_path.read_text())
    dirs = {}
    for asset in manifest.get("files", {}).values():
        source = assets_path.parent / asset["source"]["path"]
        if source.is_dir():
            for destination in asset["destinations"].values():
                dirs[destination["objectKey"]] = str(source.resolve())
    return dirs


def _zip(source: Path) -> bytes:
    if source.is_file():
        return source.read_bytes()
    with tempfile.SpooledTemporaryFile() as buffer:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(source.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(source))
        buffer.seek(0)
        return buffer.read()


def moto_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """The synthesized template with the transforms of the module docstring."""
    deployed = copy.deepcopy(dict(template))
    resources = deployed.get("Resources", {})
    for resource in resources.values():
        properties = resource.setdefault("Properties", {})
        if resource["Type"] == "AWS::Lambda::EventSourceMapping":
            properties["Enabled"] = False
        elif resource["Type"] == "AWS::Events::Rule" and "EventPattern" in properties:
            properties["Targets"] = [
                target
                for target in properties.get("Targets", [])
                if _moto_delivers_to(target.get("Arn"), resources)
            ]
    return deployed


MOTO_DELIVERABLE_TYPES = ("AWS::SQS::Queue", "AWS::Events::EventBus", "AWS::Logs::LogGroup")


def _moto_delivers_to(arn: Any, resources: Mapping[str, Any]) -> bool:
    """Whether moto's PutEvents can deliver to this target (by ARN, or by the
    type of the resource the ARN expression references)."""
    logical_id = _first_get_att(arn) or (arn.get("Ref") if isinstance(arn, dict) else None)
    if logical_id:
        return resources.get(logical_id, {}).get("Type") in MOTO_DELIVERABLE_TYPES
    text = json.dumps(arn)
    return any(marker in text for marker in MOTO_DELIVERABLE_TARGETS)


def _create_stack(cloudformation: Any, stack_name: str, template: dict[str, Any]) -> None:
    cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(template),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.monotonic() + DEPLOY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            return
        if not status.endswith("IN_PROGRESS"):
            reason = stack.get("StackStatusReason") or _first_failure(cloudformation, stack_name)
            raise DeployError(f"stack {stack_name} ended in {status}: {reason}")
        time.sleep(0.1)
    raise DeployError(f"stack {stack_name} not created after {DEPLOY_TIMEOUT_SECONDS:.0f} s")


def _stand_in_for_skipped_resources(clients: _Clients, template: Mapping[str, Any]) -> None:
    """Create what moto's CloudFormation skips but handlers need at run time:
    named secrets (with a generated value, as GenerateSecretString would make)
    and verified SES email identities (moto's SES refuses unverified senders)."""
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::SecretsManager::Secret" and isinstance(props.get("Name"), str):
            _create_secret(clients.client("secretsmanager"), props)
        elif resource["Type"] == "AWS::SES::EmailIdentity":
            identity = str(props["EmailIdentity"])
            ses = clients.client("ses")
            if "@" in identity:
                ses.verify_email_identity(EmailAddress=identity)
            else:
                ses.verify_domain_identity(Domain=identity)


def _create_secret(secrets: Any, props: Mapping[str, Any]) -> None:
    generate = props.get("GenerateSecretString", {})
    value = secrets.get_random_password(
        PasswordLength=int(generate.get("PasswordLength", 32)),
        ExcludePunctuation=bool(generate.get("ExcludePunctuation", False)),
    )["RandomPassword"]
    with contextlib.suppress(secrets.exceptions.ResourceExistsException):
        secrets.create_secret(Name=props["Name"], SecretString=value)


def _mirror_state_machines(clients: _Clients, endpoint_url: str) -> None:
    """See the module docstring: make CloudFormation's state machines executable."""
    sfn = clients.client("stepfunctions")
    configure_moto(endpoint_url, execute_state_machines=False)
    try:
        machines = [
            sfn.describe_state_machine(stateMachineArn=m["stateMachineArn"])
            for m in sfn.list_state_machines()["stateMachines"]
        ]
    finally:
        configure_moto(endpoint_url, execute_state_machines=True)
    existing = {m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
    for machine in machines:
        if machine["stateMachineArn"] not in existing:
            sfn.create_state_machine(
                name=machine["name"],
                definition=machine["definition"],
                roleArn=machine["roleArn"],
                type=machine.get("type", "STANDARD"),
            )


def _first_failure(cloudformation: Any, stack_name: str) -> str:
    events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
    for event in events:
        if event.get("ResourceStatus", "").endswith("FAILED"):
            return f"{event['LogicalResourceId']}: {event.get('ResourceStatusReason', '')}"
    return "no reason given"


# --- reading the deployed stack ---------------------------------------------


def describe(
    clients: _Clients,
    stack_name: str,
    region: str,
    endpoint_url: str,
    template: dict[str, Any],
    *,
    asset_dirs: dict[str, str] | None = None,
) -> Deployment:
    cloudformation = clients.cloudformation
    resources = cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in resources
        if r.get("PhysicalResourceId")
    }
    physical.update(_names_moto_does_not_report(template, physical))
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    resolver = Resolver(template, physical, region=region, stack_name=stack_name, clients=clients)
    reader = _TemplateReader(template, resolver, asset_dirs or {})
    differences = reader.skipped_resource_differences()
    return Deployment(
        stack_name=stack_name,
        region=region,
        account=ACCOUNT,
        endpoint_url=endpoint_url,
        template=template,
        physical_ids=physical,
        functions=reader.functions(),
        event_source_mappings=reader.event_source_mappings(),
        rules=reader.rules(),
        state_machines=reader.physical_of_type("AWS::StepFunctions::StateMachine"),
        queues=reader.physical_of_type("AWS::SQS::Queue"),
        streams=reader.physical_of_type("AWS::Kinesis::Stream"),
        tables=reader.physical_of_type("AWS::DynamoDB::Table"),
        buses=reader.physical_of_type("AWS::Events::EventBus"),
        api_name=reader.api_name(),
        stage_name=reader.stage_name(),
        routes=reader.routes(),
        gateway_responses=reader.gateway_responses(),
        outputs={o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])},
        differences=differences + resolver.unresolved_notes(),
    )


# moto creates these but reports no physical id; their name comes from the template.
NAME_PROPERTIES = {
    "AWS::Events::EventBus": "Name",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Kinesis::Stream": "Name",
    "AWS::Lambda::Function": "FunctionName",
}


def _names_moto_does_not_report(
    template: dict[str, Any], physical: dict[str, str]
) -> dict[str, str]:
    names = {}
    for logical_id, resource in template.get("Resources", {}).items():
        name = resource.get("Properties", {}).get(NAME_PROPERTIES.get(resource["Type"], ""))
        if logical_id not in physical and isinstance(name, str):
            names[logical_id] = name
    return names


class Resolver:
    """Resolves CloudFormation intrinsics against the deployed stack's physical ids.

    A reference to a resource moto skipped resolves to its logical id, and the
    reference is noted (the local runtime overrides such values, e.g. Cognito).
    """

    def __init__(
        self,
        template: dict[str, Any],
        physical: dict[str, str],
        *,
        region: str,
        stack_name: str,
        clients: _Clients,
    ) -> None:
        self._resources: dict[str, Any] = template.get("Resources", {})
        self._physical = physical
        self._region = region
        self._stack_name = stack_name
        self._clients = clients
        self._unresolved: set[str] = set()

    def unresolved_notes(self) -> list[str]:
        return [
            f"{logical_id} ({self._resources.get(logical_id, {}).get('Type', '?')}) is not "
            "created in moto; references to it resolve to its logical id"
            for logical_id in sorted(self._unresolved)
        ]

    def value(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, argument),) = node.items()
            handler = self._intrinsics().get(key)
            if handler is not None:
                return handler(argument)
        if isinstance(node, dict):
            return {key: self.value(item) for key, item in node.items()}
        if isinstance(node, list):
            return [self.value(item) for item in node]
        return node

    def text(self, node: Any) -> str:
        resolved = self.value(node)
        return resolved if isinstance(resolved, str) else json.dumps(resolved)

    def _intrinsics(self) -> dict[str, Any]:
        return {
            "Ref": self.ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Join": lambda a: str(a[0]).join(self.text(part) for part in self.value(a[1])),
            "Fn::Select": lambda a: self.value(a[1])[int(self.value(a[0]))],
            "Fn::Split": lambda a: self.text(a[1]).split(a[0]),
            "Fn::Sub": self._sub,
            "Fn::If": lambda a: self.value(a[1]),  # conditions are not evaluated locally
        }

    def pseudo(self) -> dict[str, str]:
        return {
            "AWS::Region": self._region,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self._stack_name,
            "AWS::NoValue": "",
        }

    def ref(self, logical_id: str) -> str:
        if logical_id in self.pseudo():
            return self.pseudo()[logical_id]
        if logical_id in self._physical:
            return self._physical[logical_id]
        self._unresolved.add(logical_id)
        return logical_id

    def _get_att(self, argument: Any) -> str:
        logical_id, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
        kind = self._resources.get(logical_id, {}).get("Type", "")
        physical = self.ref(logical_id)
        return self.attribute(kind, physical, str(attribute))

    def attribute(self, kind: str, physical: str, attribute: str) -> str:
        region, account = self._region, ACCOUNT
        name_of_url = physical.rsplit("/", 1)[-1]
        known: dict[tuple[str, str], str] = {
            (
                "AWS::Lambda::Function",
                "Arn",
            ): f"arn:aws:lambda:{region}:{account}:function:{physical}",
            ("AWS::SQS::Queue", "Arn"): f"arn:aws:sqs:{region}:{account}:{name_of_url}",
            ("AWS::SQS::Queue", "QueueName"): name_of_url,
            ("AWS::SQS::Queue", "QueueUrl"): physical,
            (
                "AWS::Kinesis::Stream",
                "Arn",
            ): f"arn:aws:kinesis:{region}:{account}:stream/{physical}",
            (
                "AWS::DynamoDB::Table",
                "Arn",
            ): f"arn:aws:dynamodb:{region}:{account}:table/{physical}",
            (
                "AWS::Events::EventBus",
                "Arn",
            ): f"arn:aws:events:{region}:{account}:event-bus/{physical}",
            ("AWS::Events::EventBus", "Name"): physical,
            ("AWS::StepFunctions::StateMachine", "Arn"): physical,
            ("AWS::StepFunctions::StateMachine", "Name"): physical.rsplit(":", 1)[-1],
            ("AWS::SNS::Topic", "TopicArn"): physical,
            ("AWS::IAM::Role", "Arn"): f"arn:aws:iam::{account}:role/{physical}",
            ("AWS::KMS::Key", "Arn"): f"arn:aws:kms:{region}:{account}:key/{physical}",
            ("AWS::KMS::Key", "KeyId"): physical,
            (
                "AWS::Logs::LogGroup",
                "Arn",
            ): f"arn:aws:logs:{region}:{account}:log-group:{physical}:*",
            ("AWS::ApiGateway::RestApi", "RootResourceId"): physical,
        }
        if (kind, attribute) in known:
            return known[(kind, attribute)]
        if kind == "AWS::DynamoDB::Table" and attribute == "StreamArn":
            table = self._clients.client("dynamodb").describe_table(TableName=physical)
            return str(table["Table"].get("LatestStreamArn", ""))
        return physical

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {**self.pseudo(), **{k: self.text(v) for k, v in variables.items()}}
        result, rest = "", str(text)
        while "${" in rest:
            before, _, after = rest.partition("${")
            name, _, rest = after.partition("}")
            result += before + self._sub_variable(name, values)
        return result + rest

    def _sub_variable(self, name: str, values: dict[str, str]) -> str:
        if name in values:
            return values[name]
        if "." in name:
            return self._get_att(name)
        return self.ref(name)


class _TemplateReader:
    def __init__(
        self, template: dict[str, Any], resolver: Resolver, asset_dirs: dict[str, str]
    ) -> None:
        self._resources: dict[str, Any] = template.get("Resources", {})
        self._resolve = resolver
        self._asset_dirs = asset_dirs
        self._functions: dict[str, FunctionSpec] | None = None

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource.get("Properties", {})
            for logical_id, resource in self._resources.items()
            if resource["Type"] == kind
        }

    def physical_of_type(self, kind: str) -> dict[str, str]:
        return {logical_id: self._resolve.ref(logical_id) for logical_id in self.of_type(kind)}

    def skipped_resource_differences(self) -> list[str]:
        skipped = {
            "AWS::Cognito::UserPool": "Cognito user pool: tokens come from the local issuer",
            "AWS::Cognito::UserPoolClient": "Cognito app client: JWT_AUDIENCE is the local one",
            "AWS::ApiGateway::Authorizer": "API Gateway authorizers: the local gateway runs them",
            "AWS::ApiGateway::Stage": "API Gateway stage: the local gateway serves at /",
            "AWS::ApiGateway::GatewayResponse": "gateway responses: the local gateway renders them",
            "AWS::SecretsManager::Secret": "secrets: the runtime creates each named secret "
            "with a generated value (moto's CloudFormation skips them)",
            "AWS::SES::EmailIdentity": "SES identities: the runtime verifies them "
            "(moto's CloudFormation skips them; moto's SES refuses unverified senders)",
        }
        present = {resource["Type"] for resource in self._resources.values()}
        notes = [note for kind, note in skipped.items() if kind in present]
        if self.of_type("AWS::Lambda::EventSourceMapping"):
            notes.append("event source mappings are disabled in moto; local pollers deliver")
        if any(
            "EventPattern" in props
            and any(
                not _moto_delivers_to(t.get("Arn"), self._resources)
                for t in props.get("Targets", [])
            )
            for props in self.of_type("AWS::Events::Rule").values()
        ):
            notes.append("rule targets other than SQS are removed from moto; the runtime delivers")
        if self.of_type("AWS::Events::Rule"):
            notes.append("schedules never fire in moto; `tbcss local clock advance` fires them")
        notes.append("function code runs in local worker processes, not in moto's Lambda")
        return notes

    def functions(self) -> dict[str, FunctionSpec]:
        if self._functions is None:
            self._functions = {
                logical_id: self._function(logical_id, props)
                for logical_id, props in self.of_type("AWS::Lambda::Function").items()
            }
        return self._functions

    def _function(self, logical_id: str, props: dict[str, Any]) -> FunctionSpec:
        name = self._resolve.ref(logical_id)
        variables = props.get("Environment", {}).get("Variables", {})
        return FunctionSpec(
            logical_id=logical_id,
            name=name,
            arn=self._resolve.attribute("AWS::Lambda::Function", name, "Arn"),
            handler=str(props.get("Handler", "")),
            environment={key: self._resolve.text(value) for key, value in variables.items()},
            timeout_seconds=int(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
            runtime=str(props.get("Runtime", "python3.11")),
            code_dir=self._asset_dirs.get(str(props.get("Code", {}).get("S3Key", ""))),
        )

    def _function_name(self, node: Any) -> str:
        """A function reference (Ref, GetAtt Arn, ARN or name) -> physical name."""
        return _function_name_from(self._resolve.text(node))

    def event_source_mappings(self) -> list[EventSourceMappingSpec]:
        return [
            self._event_source_mapping(logical_id, props)
            for logical_id, props in self.of_type("AWS::Lambda::EventSourceMapping").items()
        ]

    def _event_source_mapping(
        self, logical_id: str, props: dict[str, Any]
    ) -> EventSourceMappingSpec:
        source_arn = self._resolve.text(props["EventSourceArn"])
        kind = source_arn.split(":")[2]
        destination = props.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        default_batch = 10 if kind == "sqs" else 100
        retries = props.get("MaximumRetryAttempts")
        record_age = props.get("MaximumRecordAgeInSeconds")
        return EventSourceMappingSpec(
            logical_id=logical_id,
            function_name=self._function_name(props["FunctionName"]),
            source_arn=source_arn,
            source_kind=kind,
            batch_size=int(props.get("BatchSize", default_batch)),
            max_batching_window_seconds=int(props.get("MaximumBatchingWindowInSeconds", 0)),
            bisect_on_error=bool(props.get("BisectBatchOnFunctionError", False)),
            maximum_retry_attempts=None if retries in (None, -1) else int(retries),
            maximum_record_age_seconds=None if record_age in (None, -1) else int(record_age),
            on_failure_destination_arn=self._resolve.text(destination) if destination else None,
            report_batch_item_failures="ReportBatchItemFailures"
            in props.get("FunctionResponseTypes", []),
            enabled=bool(props.get("Enabled", True)),
            starting_position=props.get("StartingPosition"),
            source_url=self._queue_url(source_arn) if kind == "sqs" else None,
        )

    def _queue_url(self, arn: str) -> str | None:
        name = arn.rsplit(":", 1)[-1]
        urls = self.physical_of_type("AWS::SQS::Queue").values()
        return next((url for url in urls if url.endswith(f"/{name}")), None)

    def rules(self) -> list[RuleSpec]:
        return [
            self._rule(logical_id, props)
            for logical_id, props in self.of_type("AWS::Events::Rule").items()
        ]

    def _rule(self, logical_id: str, props: dict[str, Any]) -> RuleSpec:
        pattern = props.get("EventPattern")
        return RuleSpec(
            logical_id=logical_id,
            name=self._resolve.ref(logical_id).split("|")[-1],
            bus_name=self._resolve.text(props.get("EventBusName", "default")).rsplit("/", 1)[-1],
            event_pattern=self._resolve.value(pattern) if pattern is not None else None,
            schedule_expression=props.get("ScheduleExpression"),
            enabled=props.get("State", "ENABLED") == "ENABLED",
            targets=[self._target(target) for target in props.get("Targets", [])],
        )

    def _target(self, target: dict[str, Any]) -> TargetSpec:
        resolve = self._resolve
        retry = target.get("RetryPolicy", {})
        dead_letter = target.get("DeadLetterConfig", {}).get("Arn")
        transformer = target.get("InputTransformer")
        group = target.get("SqsParameters", {}).get("MessageGroupId")
        return TargetSpec(
            id=str(target.get("Id", "")),
            arn=resolve.text(target["Arn"]),
            input=resolve.text(target["Input"]) if "Input" in target else None,
            input_path=target.get("InputPath"),
            input_transformer=resolve.value(transformer) if transformer else None,
            dead_letter_arn=resolve.text(dead_letter) if dead_letter else None,
            role_arn=resolve.text(target["RoleArn"]) if "RoleArn" in target else None,
            maximum_retry_attempts=retry.get("MaximumRetryAttempts"),
            maximum_event_age_seconds=retry.get("MaximumEventAgeInSeconds"),
            sqs_message_group_id=resolve.text(group) if group else None,
        )

    # --- REST API ------------------------------------------------------------

    def api_name(self) -> str | None:
        apis = self.of_type("AWS::ApiGateway::RestApi")
        return next((str(props.get("Name", "")) for props in apis.values()), None)

    def stage_name(self) -> str | None:
        stages = self.of_type("AWS::ApiGateway::Stage")
        return next((str(props.get("StageName", "")) for props in stages.values()), None)

    def routes(self) -> list[RouteSpec]:
        authorizers = {
            logical_id: self._authorizer(logical_id, props)
            for logical_id, props in self.of_type("AWS::ApiGateway::Authorizer").items()
        }
        routes = [
            self._route(logical_id, props, authorizers)
            for logical_id, props in self.of_type("AWS::ApiGateway::Method").items()
        ]
        return sorted(routes, key=lambda route: (route.path, route.http_method))

    def _route(
        self, logical_id: str, props: dict[str, Any], authorizers: dict[str, AuthorizerSpec]
    ) -> RouteSpec:
        authorizer_ref = props.get("AuthorizerId", {})
        authorizer_id = authorizer_ref.get("Ref") if isinstance(authorizer_ref, dict) else None
        integration = props.get("Integration", {})
        function_logical_id = _first_get_att(integration.get("Uri"))
        function = self.functions().get(function_logical_id or "")
        return RouteSpec(
            path=self._resource_path(props.get("ResourceId")),
            http_method=str(props["HttpMethod"]).upper(),
            authorization_type=str(props.get("AuthorizationType", "NONE")),
            authorizer=authorizers.get(authorizer_id or ""),
            integration_function=function.name if function else None,
            method_logical_id=logical_id,
        )

    def _resource_path(self, resource_ref: Any) -> str:
        parts: list[str] = []
        node = resource_ref
        # A Ref to an AWS::ApiGateway::Resource walks up; GetAtt RootResourceId ends.
        while isinstance(node, dict) and "Ref" in node:
            props = self._resources.get(node["Ref"], {}).get("Properties", {})
            parts.append(str(props.get("PathPart", "")))
            node = props.get("ParentId")
        return "/" + "/".join(reversed(parts))

    def _authorizer(self, logical_id: str, props: dict[str, Any]) -> AuthorizerSpec:
        function_logical_id = _first_get_att(props.get("AuthorizerUri"))
        function = self.functions().get(function_logical_id or "")
        identity = str(props.get("IdentitySource", ""))
        header = identity.split("method.request.header.", 1)[1] if "header." in identity else None
        return AuthorizerSpec(
            logical_id=logical_id,
            name=str(props.get("Name", logical_id)),
            type=str(props.get("Type", "TOKEN")),
            function_name=function.name if function else None,
            identity_header=header,
            result_ttl_seconds=int(props.get("AuthorizerResultTtlInSeconds", 300)),
        )

    def gateway_responses(self) -> dict[str, GatewayResponseSpec]:
        responses = {}
        for props in self.of_type("AWS::ApiGateway::GatewayResponse").values():
            kind = str(props["ResponseType"])
            status = props.get("StatusCode")
            responses[kind] = GatewayResponseSpec(
                response_type=kind,
                status_code=int(status) if status else None,
                templates={k: str(v) for k, v in props.get("ResponseTemplates", {}).items()},
                headers={k: str(v) for k, v in props.get("ResponseParameters", {}).items()},
            )
        return responses


def _first_get_att(node: Any) -> str | None:
    """The logical id of the first ``Fn::GetAtt [X, "Arn"]`` inside an expression."""
    if isinstance(node, dict):
        if "Fn::GetAtt" in node:
            argument = node["Fn::GetAtt"]
            return str(argument[0] if isinstance(argument, list) else argument.split(".")[0])
        return next(filter(None, (_first_get_att(value) for value in node.values())), None)
    if isinstance(node, list):
        return next(filter(None, (_first_get_att(value) for value in node)), None)
    return None
