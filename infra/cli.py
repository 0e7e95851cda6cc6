"""``tbcss``: the local runtime's command line.

    tbcss local up [--port 3000] [--moto-port 0] [--state-dir .tbcss] [--app app:build_app]
    tbcss local info
    tbcss local clock show | advance --days N | --hours N
    tbcss token --sub demo-prepaid --role subscriber [--ttl-minutes 60]
    tbcss seed plans [--table NAME]

Failures print one line on stderr and exit with a non-zero code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

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
    return parser


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(STATE_DIR_VARIABLE, ".tbcss")
    parser.add_argument("--state-dir", type=Path, default=Path(default), help="state directory")


# --- local up --------------------------------------------------------------------------


def _local_up(args: argparse.Namespace) -> None:
    from infra.local.runtime import (  # noqa: PLC0415 - moto loads only for `up`
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
