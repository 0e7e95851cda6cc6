"""``tbcss``: the local runtime's command line.

    tbcss local up [--port 3000] [--moto-port 0] [--state-dir .tbcss] [--app app:build_app]
    tbcss local info
    tbcss local clock show | advance --days N | --hours N
    tbcss local sms [--to NUMBER]
    tbcss token --sub demo-prepaid --role subscriber [--ttl-minutes 60]
    tbcss seed plans [--table NAME]
    tbcss cdr generate [--count 1000] [--seed 1] [--msisdn N ...] [-o FILE]
    tbcss cdr send FILE
    tbcss bill run --date YYYY-MM-DD
    tbcss network show MSISDN
    tbcss report monthly [--month YYYY-MM] [--json]

Failures print one line on stderr and exit with a non-zero code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.services.compliance_report import WrittenReport

EXIT_FAILURE = 1
EXIT_USAGE = 2
STATE_DIR_VARIABLE = "TBCSS_STATE_DIR"


class CliError(Exception):
    """A failure the user can act on: printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        args.run(args)
    except CliError as error:
        return _fail(str(error))
    except ModuleNotFoundError as error:
        return _fail(f"missing dependency {error.name!r}: pip install -e '.[infra,dev]'")
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the CLI's process boundary: one readable line
        logging.getLogger("tbcss").debug("failure", exc_info=True)
        return _fail(f"{type(error).__name__}: {error}")
    return 0


def _fail(message: str) -> int:
    sys.stderr.write(f"tbcss: error: {message}\n")
    return EXIT_FAILURE


# --- arguments -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tbcss", description="TB-CSS local tools")
    commands = parser.add_subparsers(title="commands")

    local = commands.add_parser("local", help="the local runtime").add_subparsers(title="local")
    up = local.add_parser("up", help="run the whole system locally (foreground)")
    up.add_argument("--port", type=int, default=3000, help="API port (default 3000)")
    up.add_argument("--moto-port", default="0", help="AWS endpoint port (0 or auto: any free)")
    up.add_argument("--app", default="app:build_app", help="CDK app factory module:function")
    up.add_argument("--no-seed", action="store_true", help="skip the plan catalog and demo users")
    up.add_argument("--quiet", action="store_true", help="do not echo handler logs")
    up.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="CDK context for the synth, as cdk -c (e.g. inactivity_days=10, "
        "invoice_due_days=3); repeatable",
    )
    _state_dir_option(up)
    up.set_defaults(run=_local_up)

    info = local.add_parser("info", help="print the running runtime's endpoints as JSON")
    _state_dir_option(info)
    info.set_defaults(run=_local_info)

    clock = local.add_parser("clock", help="the runtime's clock").add_subparsers(title="clock")
    show = clock.add_parser("show", help="print the runtime's current time")
    _state_dir_option(show)
    show.set_defaults(run=_clock_show)
    advance = clock.add_parser("advance", help="move time forward and fire due schedules")
    amount = advance.add_mutually_exclusive_group(required=True)
    amount.add_argument("--days", type=float)
    amount.add_argument("--hours", type=float)
    amount.add_argument("--minutes", type=float)
    _state_dir_option(advance)
    advance.set_defaults(run=_clock_advance)

    sms = local.add_parser("sms", help="print the SMS the runtime has sent, as JSON lines")
    sms.add_argument("--to", help="only those to this number (with or without +91)")
    _state_dir_option(sms)
    sms.set_defaults(run=_local_sms)

    token = commands.add_parser("token", help="print a bearer token from the local issuer")
    token.add_argument("--sub", required=True, help="subject (user id)")
    token.add_argument("--role", action="append", required=True, help="role (repeatable)")
    token.add_argument("--ttl-minutes", type=int, default=60)
    _state_dir_option(token)
    token.set_defaults(run=_token)

    seed = commands.add_parser("seed", help="load seed data").add_subparsers(title="seed")
    plans = seed.add_parser("plans", help="load the seed plan catalog")
    plans.add_argument("--table", help="table name (default: the running runtime's table)")
    plans.add_argument("--region", help="region (default: the runtime's, or AWS_REGION)")
    _state_dir_option(plans)
    plans.set_defaults(run=_seed_plans)
    _cdr_commands(commands)
    _bill_commands(commands)
    _network_commands(commands)
    _report_commands(commands)
    return parser


def _cdr_commands(commands: Any) -> None:
    cdr = commands.add_parser("cdr", help="the CDR feed").add_subparsers(title="cdr")
    generate = cdr.add_parser("generate", help="write a realistic CDR feed as JSON lines")
    generate.add_argument("--count", type=int, default=1000, help="records before duplicates")
    generate.add_argument("--seed", type=int, default=1, help="same seed, same feed")
    generate.add_argument(
        "--msisdn",
        action="append",
        help="subscriber number (repeatable; default: the demo subscribers)",
    )
    generate.add_argument("--duplicates", type=float, default=0.02, help="re-sent share")
    generate.add_argument("--out-of-order", type=float, default=0.05, help="delayed share")
    generate.add_argument("--unknown", type=float, default=0.01, help="unknown-number share")
    generate.add_argument("--end", help="ISO time of the last record (default: now)")
    generate.add_argument("-o", "--output", type=Path, help="file (default: stdout)")
    generate.set_defaults(run=_cdr_generate)
    send = cdr.add_parser("send", help="put a JSON-lines feed on the running system's stream")
    send.add_argument("file", type=Path, help="JSON lines, one CDR each ('-': stdin)")
    send.add_argument("--stream", help="stream name (default: the runtime's CDR stream)")
    _state_dir_option(send)
    send.set_defaults(run=_cdr_send)


DEMO_MSISDNS = ("9876500001", "9876500002")


def _cdr_generate(args: argparse.Namespace) -> None:
    from datetime import UTC, datetime  # noqa: PLC0415 - fast start

    from infra.cdr import FeedMix, generate, write_lines  # noqa: PLC0415

    end = datetime.fromisoformat(args.end) if args.end else datetime.now(UTC)
    mix = FeedMix(
        count=args.count,
        duplicate_rate=args.duplicates,
        out_of_order_rate=args.out_of_order,
        unknown_rate=args.unknown,
    )
    records = generate(args.msisdn or DEMO_MSISDNS, mix, seed=args.seed, end=end)
    if args.output is None:
        write_lines(records, sys.stdout)
        return
    with args.output.open("w") as out:
        count = write_lines(records, out)
    print(f"{count} records written to {args.output}", file=sys.stderr)


def _cdr_send(args: argparse.Namespace) -> None:
    import boto3  # noqa: PLC0415 - fast start

    from infra.cdr import progress_bar, read_lines, send  # noqa: PLC0415

    info = _running(args.state_dir)
    stream = args.stream or next((s for s in info["streams"] if "CdrStream" in s), None)
    if stream is None:
        raise CliError("the running system has no CDR stream")
    if str(args.file) == "-":
        records = read_lines(sys.stdin)
    else:
        with args.file.open() as lines:
            records = read_lines(lines)
    session = boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        region_name=info["region"],
    )
    kinesis = session.client("kinesis", endpoint_url=info["aws_endpoint_url"])
    count = send(kinesis, stream, records, progress_bar())
    print(f"{count} records put on {stream}")


def _bill_commands(commands: Any) -> None:
    bill = commands.add_parser("bill", help="billing").add_subparsers(title="bill")
    run = bill.add_parser("run", help="run the bill run of an IST day on the local system")
    run.add_argument("--date", required=True, help="bill date YYYY-MM-DD (cycle-end day, IST)")
    run.add_argument("--timeout", type=float, default=600, help="seconds to wait for the workers")
    _state_dir_option(run)
    run.set_defaults(run=_bill_run)


def _bill_run(args: argparse.Namespace) -> None:
    """Invokes the bill-run function (as its schedule would, for that day), then
    shows the worker draining the billing queue as a progress bar on stderr."""
    import time  # noqa: PLC0415 - fast start
    from datetime import date  # noqa: PLC0415

    import boto3  # noqa: PLC0415

    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        raise CliError(f"not a date (YYYY-MM-DD): {args.date!r}") from None
    info = _running(args.state_dir)
    function = next((n for i, n in info["functions"].items() if "BillingSchedules" in i), None)
    queue = next((q for q in info["queues"] if "BillingTasks" in q and "Dlq" not in q), None)
    if function is None or queue is None:
        raise CliError("the running system has no billing module")
    session = boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        region_name=info["region"],
    )
    endpoint = info["aws_endpoint_url"]
    payload = json.dumps({"sweep": "bill_run", "date": day.isoformat()})
    answer = session.client("lambda", endpoint_url=endpoint).invoke(
        FunctionName=function, Payload=payload.encode()
    )
    result = json.loads(answer["Payload"].read() or b"{}")
    if answer.get("FunctionError"):
        raise CliError(f"bill run failed: {result.get('errorMessage', result)}")
    total = int(result.get("messages", 0))
    sqs = session.client("sqs", endpoint_url=endpoint)
    deadline = time.monotonic() + args.timeout
    done = -1
    while True:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        left = sum(int(value) for value in attributes.values())
        if total - left != done:
            done = max(0, total - left)
            _progress(done, total)
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    sys.stderr.write("\n")
    if left:
        raise CliError(f"{left} message(s) still queued after {args.timeout:.0f} s")
    print(f"bill run {day}: cycle days {result.get('cycle_days')}, {total} subscriber(s) billed")


def _progress(done: int, total: int, width: int = 30) -> None:
    filled = width * done // max(1, total)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} invoices")
    sys.stderr.flush()


def _network_commands(commands: Any) -> None:
    network = commands.add_parser("network", help="the simulated network (HLR)")
    show = network.add_subparsers(title="network").add_parser(
        "show", help="print what the simulated network knows about a line, as JSON"
    )
    show.add_argument("msisdn", help="the line's number (10 digits)")
    show.add_argument("--prefix", help="SSM path of the lines (default: the runtime stage's)")
    _state_dir_option(show)
    show.set_defaults(run=_network_show)


STACK_NAME = re.compile(r"^TbCss-(?P<stage>[\w-]+)$")  # app.py names the stack after its stage
DEFAULT_STAGE = "dev"


def _lines_prefix(info: dict[str, Any]) -> str:
    """infra/activation.py's ``/tbcss/<stage>/simulator/lines``, for the runtime's stage."""
    match = STACK_NAME.match(str(info.get("stack", "")))
    stage = match["stage"] if match else DEFAULT_STAGE
    return f"/tbcss/{stage}/simulator/lines"


def _network_show(args: argparse.Namespace) -> None:
    from shared.network_lines import SsmLineRegistry  # noqa: PLC0415 - fast start

    info = _running(args.state_dir)
    ssm = _session(info).client("ssm", endpoint_url=info["aws_endpoint_url"])
    registry = SsmLineRegistry(ssm, args.prefix or _lines_prefix(info))
    record = registry.get(args.msisdn)
    if record is None:
        raise CliError(
            f"line {args.msisdn} is unknown to the simulated network "
            f"(no parameter {registry.parameter_name(args.msisdn)}): it was never provisioned"
        )
    print(record.model_dump_json(indent=2))


def _report_commands(commands: Any) -> None:
    report = commands.add_parser("report", help="compliance reports")
    monthly = report.add_subparsers(title="report").add_parser(
        "monthly", help="write an IST month's compliance report (CSV + PDF) to S3"
    )
    monthly.add_argument(
        "--month", help="YYYY-MM (default: the month before the runtime's current time)"
    )
    monthly.add_argument("--json", action="store_true", help="print the result as JSON")
    _state_dir_option(monthly)
    monthly.set_defaults(run=_report_monthly)


REPORT_FUNCTION = "AuditReportFunction"  # logical id prefix (infra/audit.py's "Report")
REPORT_TIMEOUT_SECONDS = 900  # the function's own timeout


def _report_monthly(args: argparse.Namespace) -> None:
    """Invokes the report function as its monthly rule would, for the month asked."""
    from botocore.config import Config  # noqa: PLC0415 - fast start

    from shared.errors import InvalidRequest  # noqa: PLC0415
    from shared.services.compliance_report import ReportMonth, WrittenReport  # noqa: PLC0415

    try:
        payload = {"month": ReportMonth.parse(args.month).label} if args.month else {}
    except InvalidRequest as error:
        raise CliError(error.message) from None
    info = _running(args.state_dir)
    function = next(
        (n for i, n in info["functions"].items() if i.startswith(REPORT_FUNCTION)), None
    )
    if function is None:
        raise CliError("the running system has no compliance report function")
    config = Config(read_timeout=REPORT_TIMEOUT_SECONDS, retries={"total_max_attempts": 1})
    client = _session(info).client("lambda", endpoint_url=info["aws_endpoint_url"], config=config)
    answer = client.invoke(FunctionName=function, Payload=json.dumps(payload).encode())
    result = json.loads(answer["Payload"].read() or b"{}")
    if answer.get("FunctionError"):
        raise CliError(f"report failed: {result.get('errorMessage', result)}")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_report_text(WrittenReport.model_validate(result)))


def _report_text(written: WrittenReport) -> str:
    """Where the documents went, then every count of the report as an aligned table."""
    from shared.services.compliance_report import report_rows  # noqa: PLC0415

    report = written.report
    scope = "complete" if report.complete else "partial: the month has not ended"
    lines = [
        f"compliance report {written.month} ({scope}), {report.records} audit records",
        f"  {written.csv_uri}",
        f"  {written.pdf_uri}",
        "",
    ]
    rows = [("SECTION", "METRIC", "DIMENSION", "VALUE")]
    rows += [
        (r.section, r.metric, r.dimension, r.value)
        for r in report_rows(report)
        if r.section != "report"  # the lines above say it
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for *labels, value in rows:
        cells = [label.ljust(width) for label, width in zip(labels, widths, strict=True)]
        lines.append("  ".join([*cells, value]))
    return "\n".join(lines)


def _local_sms(args: argparse.Namespace) -> None:
    """What moto's SNS "sent": read through the runtime's ``/_tbcss/sms`` route."""
    import requests  # noqa: PLC0415 - fast start

    info = _running(args.state_dir)
    url = f"{info['aws_endpoint_url']}/_tbcss/sms"
    params = {"region": info["region"], **({"to": args.to} if args.to else {})}
    try:
        response = requests.get(url, params=params, timeout=30)
    except requests.ConnectionError:
        raise CliError(f"the runtime does not answer at {url}") from None
    if response.status_code >= 400:
        raise CliError(f"GET {url} -> HTTP {response.status_code}: {response.text[:200]}")
    for message in response.json():
        print(json.dumps(message, ensure_ascii=False))


def _session(info: dict[str, Any]) -> Any:
    """boto3 against the running runtime's moto (any credentials do)."""
    import boto3  # noqa: PLC0415 - fast start

    return boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        region_name=info["region"],
    )


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(STATE_DIR_VARIABLE, ".tbcss")
    parser.add_argument("--state-dir", type=Path, default=Path(default), help="state directory")


# --- local up --------------------------------------------------------------------------


def _local_up(args: argparse.Namespace) -> None:
    from infra.local.runtime import (  # noqa: PLC0415 - moto loads only for `up`
        LOCAL_CONTEXT,
        LocalRuntime,
        RuntimeOptions,
        echo_to_stderr,
    )

    moto_port = 0 if args.moto_port in ("0", "auto") else _port(args.moto_port)
    _refuse_second_instance(args.state_dir)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("botocore", "boto3", "pynamodb", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    runtime = LocalRuntime(
        RuntimeOptions(
            port=args.port,
            moto_port=moto_port,
            state_dir=args.state_dir,
            app_spec=args.app,
            seed=not args.no_seed,
            echo=None if args.quiet else echo_to_stderr,
            context={**LOCAL_CONTEXT, **_context_pairs(args.context)},
            warm_openapi=True,
        )
    )
    stop = threading.Event()
    _on_signals(stop.set)
    try:
        runtime.start()
    except OSError as error:
        raise CliError(str(error)) from None
    try:
        _print_banner(runtime.info())
        stop.wait()
        print("stopping...", flush=True)
    finally:
        runtime.stop()


def _port(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CliError(f"not a port: {text!r}") from None


def _refuse_second_instance(state_dir: Path) -> None:
    info = _runtime_info_or_none(state_dir)
    if info is not None and _pid_alive(int(info.get("pid", 0))):
        raise CliError(f"a runtime is already running at {info['api_url']} (pid {info['pid']})")


def _context_pairs(pairs: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` as a dict; the CDK reads context values as strings too."""
    context = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"context must be KEY=VALUE, not {pair!r}")
        context[key] = value
    return context


def _on_signals(handler: Callable[[], None]) -> None:
    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        handler()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def _print_banner(info: dict[str, Any]) -> None:
    api = info["api_url"]
    seconds = info["startup_seconds"].get("total", 0.0)
    lines = [
        f"TB-CSS local runtime ready: {api}  (started in {seconds:.1f} s)",
        f"  Swagger UI:   {api}/swagger",
        f"  OpenAPI:      {api}/openapi.json",
        f"  AWS endpoint: {info['aws_endpoint_url']}  (region {info['region']})",
        f"  Table:        {info['table']}",
        "  Token:        TOKEN=$(tbcss token --sub demo-prepaid --role subscriber)",
        f'  Try:          curl -H "Authorization: Bearer $TOKEN" {api}/plans',
        "  Time travel:  tbcss local clock advance --days 30",
        "  Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


# --- talking to a running runtime -----------------------------------------------------


def _runtime_info_or_none(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / "runtime.json"
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running(state_dir: Path) -> dict[str, Any]:
    info = _runtime_info_or_none(state_dir)
    if info is None or not _pid_alive(int(info.get("pid", 0))):
        raise CliError(f"no local runtime is running (state dir {state_dir}): tbcss local up")
    return info


def _control(state_dir: Path, method: str, path: str, body: Any = None) -> dict[str, Any]:
    import requests  # noqa: PLC0415 - `tbcss token` stays fast without it

    url = _running(state_dir)["api_url"] + path
    try:
        response = requests.request(method, url, json=body, timeout=600)
    except requests.ConnectionError:
        raise CliError(f"the runtime does not answer at {url}") from None
    if response.status_code >= 400:
        raise CliError(f"{method} {path} -> HTTP {response.status_code}: {response.text[:200]}")
    answer: dict[str, Any] = response.json()
    return answer


def _local_info(args: argparse.Namespace) -> None:
    print(json.dumps(_control(args.state_dir, "GET", "/_local/info"), indent=2))


def _clock_show(args: argparse.Namespace) -> None:
    print(json.dumps(_control(args.state_dir, "GET", "/_local/clock"), indent=2))


def _clock_advance(args: argparse.Namespace) -> None:
    seconds = (args.days or 0) * 86400 + (args.hours or 0) * 3600 + (args.minutes or 0) * 60
    if seconds <= 0:
        raise CliError("advance by a positive amount")
    answer = _control(args.state_dir, "POST", "/_local/clock/advance", {"seconds": seconds})
    print(f"now {answer['now']} (offset {answer['offset_seconds'] / 86400:.2f} days)")
    for line in answer.get("fired", []):
        print(f"  fired: {line}")
    if not answer.get("fired"):
        print("  nothing was due")


# --- token and seed -----------------------------------------------------------------------


def _token(args: argparse.Namespace) -> None:
    from infra.local.issuer import LocalIssuer  # noqa: PLC0415 - fast start

    roles = [role for value in args.role for role in value.split(",") if role]
    print(LocalIssuer(args.state_dir).issue(args.sub, roles, args.ttl_minutes * 60))


def _seed_plans(args: argparse.Namespace) -> None:
    from infra.local.runtime import seed_table  # noqa: PLC0415 - fast start

    table, region = args.table, args.region
    if table is None:
        info = _running(args.state_dir)
        table = info["table"]
        region = region or info["region"]
        os.environ["AWS_ENDPOINT_URL"] = info["aws_endpoint_url"]
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise CliError("no region: pass --region or set AWS_REGION")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    count = seed_table(table, region, demo_subscribers=False)
    print(f"{count} plans loaded into {table}")


if __name__ == "__main__":
    sys.exit(main())
