"""The one format every benchmark writes its key figures in.

Each bench prints its own report and also writes ``bench/results/<bench>.json``
(build output, gitignored) so that ``bench.summary`` can put every bench's
figures in one table:

    {"bench": ..., "measured_at": "<ISO UTC>", "machine": {...},
     "parameters": {...}, "figures": [{"metric": ..., "value": ..., "unit": ...}]}
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Figure:
    metric: str
    value: float
    unit: str


@dataclass(frozen=True)
class BenchResults:
    bench: str
    measured_at: str
    machine: dict[str, object]
    parameters: dict[str, object]
    figures: list[Figure]


def machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_results(
    bench: str,
    parameters: dict[str, object],
    figures: list[Figure],
    *,
    directory: Path = RESULTS_DIR,
) -> Path:
    results = BenchResults(
        bench=bench,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        parameters=parameters,
        figures=figures,
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{bench}.json"
    path.write_text(json.dumps(asdict(results), indent=2) + "\n")
    print(f"results written to {_shown(path)}")
    return path


def read_results(name: str, *, directory: Path = RESULTS_DIR) -> BenchResults | None:
    """The bench's last results, or None if it has not written any."""
    path = directory / f"{name}.json"
    if not path.exists():
        return None
    return parse_results(json.loads(path.read_text()))


def parse_results(document: dict[str, Any]) -> BenchResults:
    """A results document as written by ``write_results``; KeyError if it is not one."""
    return BenchResults(
        bench=document["bench"],
        measured_at=document["measured_at"],
        machine=document["machine"],
        parameters=document["parameters"],
        figures=[Figure(**figure) for figure in document["figures"]],
    )


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
