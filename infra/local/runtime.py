"""The whole local runtime in one object: moto (with the Invoke shim), the
deployed stack, the worker pools, the event-source pollers, the scheduler,
the HTTP gateway and the demo data.

Usable in-process (tests: ``with LocalRuntime(options) as runtime: ...``) or
through ``tbcss local up``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pynamodb.exceptions import TransactWriteError

from infra.local import faults
from infra.local.botocore_models import decode_models, share_with_every_session
from infra.local.clock import LocalClock
from infra.local.deploy import DEFAULT_APP, Deployment, deploy
from infra.local.gateway import Gateway, GatewayServer
from infra.local.issuer import LocalIssuer
from infra.local.meter import UsageMeter
from infra.local.moto_server import MotoServer
from infra.local.pollers import EventSourcePollers
from infra.local.scheduler import PatternDelivery, Scheduler
from infra.local.workers import LocalSettings, WorkerInvoker
from shared.catalog import seed_plans
from shared.db import DynamoPlanCatalog, DynamoSubscriptionStore, bind_table, current_table
from shared.errors import ConcurrentModification
from shared.models import Subscriber, SubscriberStatus, SubscriberType
from shared.network import ServiceProfile, SimulatedNetwork
from shared.network_lines import SsmLineRegistry, line_registry
from shared.simulation import StaticKnobs
from shared.stores.activation import ICCID_SK, IccidClaimItem, iccid_pk

logger = logging.getLogger("tbcss.local")

RUNTIME_FILE = "runtime.json"
DEFAULT_STATE_DIR = Path(".tbcss")
DEFAULT_API_PORT = 3000
DEMO_WALLET_PAISE = 100_000  # ₹1,000
LOCAL_CONTEXT: dict[str, Any] = {"activation_retry_seconds": 1}


@dataclass(frozen=True)
class DemoSubscriber:
    user_id: str
    msisdn: str
    subscriber_type: str
    iccid: str
    wallet_paise: int = 0


DEMO_SUBSCRIBERS = (
    DemoSubscriber(
        "demo-prepaid", "9876500001", "prepaid", "8991000000000000010", DEMO_WALLET_PAISE
    ),
    DemoSubscriber("demo-postpaid", "9876500002", "postpaid", "8991000000000000028"),
)
LINES_PREFIX_VARIABLE = "SIMULATOR_LINES_PARAMETER_PREFIX"
RATE_RULE_RUNS_PER_ADVANCE = 8  # a rate rule's latest runs fired by one clock advance
# What this process's own clients talk to (the deploy, pollers, scheduler, seeding);
# the workers' are worker_main.CLIENT_SERVICES (that file loads before any project code).
RUNTIME_SERVICES = (
    "cloudformation",
    "s3",
    "ssm",
    "secretsmanager",
    "dynamodb",
    "sqs",
    "kinesis",
    "events",
    "stepfunctions",
    "lambda",
)


@dataclass
class RuntimeOptions:
    port: int = DEFAULT_API_PORT
    moto_port: int = 0  # 0: any free port
    state_dir: Path = DEFAULT_STATE_DIR
    app_spec: str = DEFAULT_APP
    seed: bool = True  # the plan catalog and the demo subscribers
    echo: Callable[[str], None] | None = field(default=None)  # where handler logs go
    max_workers_per_function: int = 4
    # CDK context for the synth: short workflow retry intervals, so a demo or a test
    # sees a retry or an escalation in seconds (production keeps the stack defaults).
    context: dict[str, Any] = field(default_factory=lambda: dict(LOCAL_CONTEXT))
    fault_plan: faults.FaultPlan | None = None  # the workers' faults at start (set_faults)
    # Build /swagger's document in the background at start (a Python process per API
    # function, seconds of CPU): for a person at `make run`, not for a test's runtime.
    warm_openapi: bool = False


class LocalRuntime:
    def __init__(self, options: RuntimeOptions | None = None) -> None:
        self.options = options or RuntimeOptions()
        self.state_dir = self.options.state_dir.resolve()
        # Every AWS request, Lambda invocation and API request, in billing units:
        # ``runtime.meter.snapshot()``, and ``after - before`` per phase.
        self.meter = UsageMeter()
        self.moto = MotoServer(port=self.options.moto_port, meter=self.meter)
        self.issuer: LocalIssuer | None = None
        self.deployment: Deployment | None = None
        self.invoker: WorkerInvoker | None = None
        self.clock = LocalClock()
        self.scheduler: Scheduler | None = None
        self.pollers: EventSourcePollers | None = None
        self.gateway: GatewayServer | None = None
        self.timings: dict[str, float] = {}
        self._started_at = 0.0

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> LocalRuntime:
        """Bring everything up; returns once the API accepts requests."""
        self._started_at = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        faults.reset(self.state_dir)  # a reused state dir: no old plan, no old record
        # The pollers' and scheduler's boto3 sessions need some credentials; moto
        # accepts any. Real ones, if set, stay (they are never sent anywhere but moto).
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = round(time.monotonic() - self._started_at, 3)
        self._write_runtime_file()
        return self

    def _start_all(self) -> None:
        _ensure_port_free(self.options.port)  # fail in milliseconds, not after the deploy
        self.issuer = LocalIssuer(self.state_dir)
        # Every session of this process reads models decoded once, before any of its
        # threads (pollers, seeding) makes a client and decodes them again meanwhile.
        share_with_every_session()
        decode_models(RUNTIME_SERVICES)
        self._mark("models")
        self.moto.start()
        self._mark("moto")
        # Handlers' boto3 clients (and this process's) find moto through this variable.
        self.deployment = deploy(
            self.moto.endpoint_url,
            self.state_dir,
            app_spec=self.options.app_spec,
            context=self.options.context,
        )
        self._mark("deploy")
        self.set_faults(self.options.fault_plan)
        settings = LocalSettings(
            endpoint_url=self.moto.endpoint_url,
            region=self.deployment.region,
            state_dir=self.state_dir,
            auth_environment=self.issuer.environment(),
        )
        self.invoker = WorkerInvoker(
            self.deployment,
            settings,
            clock=self.clock,
            echo=self.options.echo,
            max_workers_per_function=self.options.max_workers_per_function,
            meter=self.meter,
        )
        self.moto.set_invoker(self.invoker, [f.name for f in self.deployment.functions.values()])
        gateway = Gateway(self.deployment, self.invoker, settings, control=self, meter=self.meter)
        self.gateway = GatewayServer(gateway, self.options.port)
        self.gateway.start()
        if self.options.warm_openapi:
            gateway.openapi.warm_up()  # in the background: /swagger answers at once later
        self._mark("gateway")
        if self.options.seed:
            self.seed()
            self._mark("seed")
        self._start_event_machinery()
        self._mark("pollers+scheduler")

    def _start_event_machinery(self) -> None:
        assert self.deployment is not None
        assert self.invoker is not None
        endpoint, region = self.moto.endpoint_url, self.deployment.region
        self.pollers = EventSourcePollers(
            self.deployment, self.invoker, endpoint_url=endpoint, region=region
        )
        self.pollers.start()
        self.scheduler = Scheduler(
            self.deployment,
            self.invoker,
            self.clock,
            endpoint_url=endpoint,
            region=region,
            # A janitor's last runs after a jump see all it would have seen.
            max_occurrences_per_rate_rule=RATE_RULE_RUNS_PER_ADVANCE,
        )
        self.scheduler.start()
        # Pattern-rule targets moto cannot reach (Lambda, Step Functions...) get the
        # events the shim sees going into PutEvents.
        delivery = PatternDelivery(
            self.deployment, self.invoker, self.clock, endpoint_url=endpoint, region=region
        )
        if delivery.rule_names:
            self.moto.on_put_events(delivery.deliver)

    def _mark(self, step: str) -> None:
        self.timings[step] = round(time.monotonic() - self._started_at, 3)

    def stop(self) -> None:
        """Stop everything that started, in reverse order; safe to call twice."""
        for part in (self.gateway, self.scheduler, self.pollers, self.invoker, self.moto):
            if part is None:
                continue
            try:
                part.stop()
            except Exception:  # shutting down: log and keep stopping the rest
                logger.exception("while stopping the local runtime")
        self.gateway = self.scheduler = self.pollers = self.invoker = None
        self._remove_runtime_file()

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses ---------------------------------------------------------------

    @property
    def api_url(self) -> str:
        assert self.gateway is not None, "start() first"
        return self.gateway.url

    @property
    def endpoint_url(self) -> str:
        return self.moto.endpoint_url

    # --- demo data -----------------------------------------------------------------

    def seed(self) -> None:
        """The plan catalog and two demo subscribers, written through the same
        repositories the handlers use (into the deployed table)."""
        assert self.deployment is not None
        table = next(iter(self.deployment.tables.values()))
        previous = current_table()
        with aws_environment(self.moto.endpoint_url, self.deployment.region):
            try:
                seed_table(table, self.deployment.region, lines_prefix=self.lines_prefix())
            finally:
                # Leave this process's models (and their cached clients) as they were:
                # a runtime started in-process by tests must not capture other tests' table.
                bind_table(*previous)

    def lines_prefix(self) -> str | None:
        """Where the deployed functions keep the simulated network's lines."""
        assert self.deployment is not None
        prefixes = {
            spec.environment[LINES_PREFIX_VARIABLE]
            for spec in self.deployment.functions.values()
            if spec.environment.get(LINES_PREFIX_VARIABLE)
        }
        return next(iter(prefixes), None)

    # --- control plane (the gateway's /_local endpoints) -----------------------

    def info(self) -> dict[str, Any]:
        assert self.deployment is not None
        return {
            "api_url": self.api_url,
            "swagger_url": f"{self.api_url}/swagger",
            "openapi_url": f"{self.api_url}/openapi.json",
            "pid": os.getpid(),
            "state_dir": str(self.state_dir),
            "startup_seconds": self.timings,
            **self.deployment.summary(),
            "schedules": self.scheduler.rule_names if self.scheduler else [],
            "pollers": list(self.pollers.mapping_ids) if self.pollers else [],
            "workers": self.invoker.pool_sizes() if self.invoker else {},
        }

    def clock_show(self) -> dict[str, Any]:
        now = float(self.clock.now_epoch())
        return {
            "now": datetime.fromtimestamp(now, UTC).isoformat(),
            "offset_seconds": self.clock.offset_seconds(),
        }

    def clock_advance(self, seconds: float) -> dict[str, Any]:
        if self.scheduler is not None:
            fired = list(self.scheduler.advance(seconds))
        else:
            self.clock.advance(seconds)
            fired = []
        return {**self.clock_show(), "fired": fired}

    # --- fault injection (infra/local/faults.py) ------------------------------------

    def set_faults(self, plan: faults.FaultPlan | None) -> None:
        """Faults for the handlers' AWS requests from the next request on (None: none).
        Workers pick the plan up without a restart; the runtime's own requests
        (pollers, scheduler, seeding) never get faults."""
        if plan is not None and self.deployment is not None:
            functions = [(f.name, f.logical_id) for f in self.deployment.functions.values()]
            unmatched = plan.unmatched_filters(functions)
            if unmatched:
                raise ValueError(f"the fault plan's {unmatched} match no function")
        faults.write_plan(self.state_dir, plan)

    def fault_records(self) -> list[faults.InjectedFault]:
        """Every fault injected since the runtime started, oldest first."""
        return faults.read_injected(self.state_dir)

    def injected_faults(self) -> Counter[faults.FaultKind]:
        """How many faults of each kind were injected since the runtime started."""
        return faults.count_by_kind(self.fault_records())

    # --- runtime file --------------------------------------------------------------

    def _write_runtime_file(self) -> None:
        path = self.state_dir / RUNTIME_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.info(), indent=2))
        temporary.replace(path)

    def _remove_runtime_file(self) -> None:
        path = self.state_dir / RUNTIME_FILE
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass


def _ensure_port_free(port: int, host: str = "127.0.0.1") -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def seed_table(
    table_name: str,
    region: str,
    *,
    demo_subscribers: bool = True,
    lines_prefix: str | None = None,
) -> int:
    """Load the seed catalog (and the demo subscribers) into ``table_name``; idempotent.
    With ``lines_prefix``, the demo lines are provisioned on the simulated network too
    (as activation would have), so service control can bar and unbar them.
    Returns the number of plans."""
    bind_table(table_name, region)
    count = DynamoPlanCatalog().save_all(seed_plans())
    store = DynamoSubscriptionStore()
    lines = line_registry(lines_prefix)
    for demo in DEMO_SUBSCRIBERS if demo_subscribers else ():
        subscriber = Subscriber(
            user_id=demo.user_id,
            msisdn=demo.msisdn,
            subscriber_type=SubscriberType(demo.subscriber_type),
            state="KA",
            status=SubscriberStatus.ACTIVE,
            bill_cycle_day=1,
            created_at=datetime.now(UTC),
            iccid=demo.iccid,
        )
        seed_subscriber(store, subscriber, lines=lines, wallet_paise=demo.wallet_paise)
    return count


def seed_subscriber(
    store: DynamoSubscriptionStore,
    subscriber: Subscriber,
    *,
    lines: SsmLineRegistry | None,
    wallet_paise: int = 0,
) -> bool:
    """An active subscriber as activation leaves one (profile, MSISDN, SIM claim,
    network line), without the workflow: the demo lines, and bulk test data.
    False if it is already there (a second seed must not double the wallet)."""
    if lines is not None:
        _provision_line(lines, subscriber)
    try:
        store.put_subscriber(subscriber)
    except (TransactWriteError, ConcurrentModification):
        return False
    # The SIM's claim, as activation writes it: a SIM swap retires it, a
    # disconnection too.
    assert subscriber.iccid is not None
    IccidClaimItem(
        pk=iccid_pk(subscriber.iccid),
        sk=ICCID_SK,
        entity="ICCID",
        user_id=subscriber.user_id,
        activation_id="SEED",
    ).save()
    if wallet_paise:
        store.credit_wallet(subscriber.user_id, wallet_paise)
    return True


def _provision_line(lines: SsmLineRegistry, subscriber: Subscriber) -> None:
    if lines.get(subscriber.msisdn) is not None:
        return
    network = SimulatedNetwork(StaticKnobs(), lines=lines)
    assert subscriber.iccid is not None
    profile = ServiceProfile(
        user_id=subscriber.user_id, subscriber_type=subscriber.subscriber_type.value
    )
    network.provision(subscriber.msisdn, subscriber.iccid, profile, attempt=1)


@contextmanager
def aws_environment(endpoint_url: str, region: str) -> Iterator[None]:
    """Point this process's AWS SDKs at moto for the duration of the block."""
    values = {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def echo_to_stderr(line: str) -> None:
    """Handlers' log lines, on the runtime's terminal."""
    print(line, file=sys.stderr, flush=True)
