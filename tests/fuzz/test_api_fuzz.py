"""Schemathesis against the local runtime's /openapi.json: every operation must
never answer 5xx and must answer only what the document says (status codes,
content types, bodies), whatever the input.

The caller is staff with both roles (agent and admin), so every route but the
owner-only ones (AutoPay, the owner's OTPs: 403, as documented) gets past the
authorization matrix to validation and the services. Half the identifiers are the
seed's (tests/fuzz/schemathesis.toml), so the cases reach real subscribers too.

Profiles (``TBCSS_FUZZ_PROFILE``):
- ``quick`` (`make test`): deterministic, the same cases every run: the coverage
  phase (boundary and invalid values of every parameter and field, other media
  types) and 5 generated cases per operation;
- ``long`` (`make fuzz`): random (the report prints the seed), 300 cases per
  operation and the stateful phase (calls chained through the ids responses return).

The schemathesis CLI runs in a subprocess and its report is this test's output (a
failure shows the request and how to replay it): the pytest plugin's lazy schema
loading, which a runtime started by a fixture needs
(``schemathesis.pytest.from_fixture``), fails on pytest 9.2 (it reads the node
attribute ``_nodeid``, which pytest no longer has).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import LocalSystem

CONFIG = Path(__file__).with_name("schemathesis.toml")
PROFILES: dict[str, tuple[str, ...]] = {
    "quick": (
        "--phases=examples,coverage,fuzzing",
        "--max-examples=5",
        "--generation-deterministic",
    ),
    "long": ("--phases=examples,coverage,fuzzing,stateful", "--max-examples=300"),
}
TIMEOUT_SECONDS = {"quick": 300, "long": 3600}


@pytest.mark.e2e
def test_every_operation_answers_as_documented(fuzz_system: LocalSystem, tmp_path: Path) -> None:
    profile = os.environ.get("TBCSS_FUZZ_PROFILE", "quick")
    staff = fuzz_system.cli("token", "--sub", "fuzz-staff", "--role", "agent", "--role", "admin")
    report = tmp_path / "schemathesis.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        f"--config-file={CONFIG}",
        "run",
        f"{fuzz_system.api_url}/openapi.json",
        *PROFILES[profile],
        "--no-color",
        "--report=json",
        f"--report-json-path={report}",
    ]
    environment = {**os.environ, "TBCSS_FUZZ_TOKEN": staff.strip()}

    done = subprocess.run(command, env=environment, timeout=TIMEOUT_SECONDS[profile], check=False)

    summary = json.loads(report.read_text())
    document = fuzz_system.get("/openapi.json").json()
    operations = sum(len(methods) for methods in document["paths"].values())
    assert summary["operations"]["tested"] == operations, summary["operations"]
    assert done.returncode == 0, (
        f"schemathesis: {summary['test_cases']['unique_failures']} failures, "
        f"{len(summary['errors'])} errors (its report is above)"
    )
