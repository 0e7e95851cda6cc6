"""Cold start: each handler module's import-and-init time, in a fresh
interpreter per sample, beside a bare ``import boto3`` + one client.

Prints milliseconds (median and max of N samples). No AWS calls are made:
module init only builds clients, it does not use them.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.results import Figure, write_results

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "5"))
BASELINE = "import boto3; boto3.client('dynamodb')"
HANDLERS = sorted(
    f"functions.{path.parent.name}.handler" for path in ROOT.glob("functions/*/handler.py")
)
ENV = {
    **os.environ,
    "AWS_REGION": "ap-south-1",
    "AWS_DEFAULT_REGION": "ap-south-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "TABLE_NAME": "bench",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "JWKS_JSON": '{"keys": []}',
}
PROBE = """
import time
start = time.perf_counter()
{statement}
print((time.perf_counter() - start) * 1000)
"""


def sample(statement: str) -> float:
    output = subprocess.run(
        [sys.executable, "-c", PROBE.format(statement=statement)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(output.stdout.strip().splitlines()[-1])


def measure(label: str, statement: str) -> float:
    """The median of the samples, in ms (printed with the max)."""
    times = [sample(statement) for _ in range(SAMPLES)]
    median = statistics.median(times)
    print(f"{label:<40} {median:>9.1f} {max(times):>9.1f}")
    return median


def main() -> None:
    print(f"cold start, {SAMPLES} fresh interpreters each (ms)")
    print(f"{'what':<40} {'median':>9} {'max':>9}")
    baseline = measure("baseline: import boto3 + one client", BASELINE)
    medians = {module: measure(module, f"import {module}") for module in HANDLERS}
    slowest = max(medians, key=medians.__getitem__)
    write_results(
        "cold_start",
        {"samples": SAMPLES, "handlers": len(HANDLERS)},
        [
            Figure("baseline import boto3 + one client, median", baseline, "ms"),
            Figure(
                "handler import, median of the handlers' medians",
                statistics.median(medians.values()),
                "ms",
            ),
            Figure(f"slowest handler import, median ({slowest})", medians[slowest], "ms"),
        ],
    )


if __name__ == "__main__":
    main()
