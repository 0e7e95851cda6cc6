"""One table of every benchmark's key figures, read from bench/results/*.json.

``python -m bench.summary [results-dir]``. A bench that ``make bench`` runs but
that has written no results yet is listed as missing; JSON files in the folder
that are not bench results (the soak's usage counts) are skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.results import RESULTS_DIR, BenchResults, parse_results

# What `make bench` runs, in the order the table shows them.
EXPECTED_BENCHES = ("cold_start", "rating", "billing", "api", "cost")
HEADERS = ("bench", "metric", "value", "unit", "measured_at")


def load_all(directory: Path) -> tuple[dict[str, BenchResults], list[str]]:
    """Every results file in the folder by bench name, and the files skipped."""
    results: dict[str, BenchResults] = {}
    skipped: list[str] = []
    for path in sorted(directory.glob("*.json")):
        try:
            loaded = parse_results(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError):
            skipped.append(path.name)
            continue
        results[loaded.bench] = loaded
    return results, skipped


def format_value(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def table_rows(results: dict[str, BenchResults]) -> list[tuple[str, ...]]:
    ordered = list(EXPECTED_BENCHES) + sorted(set(results) - set(EXPECTED_BENCHES))
    rows: list[tuple[str, ...]] = []
    for bench in ordered:
        found = results.get(bench)
        if found is None:
            rows.append((bench, "MISSING: no results file, run its bench", "", "", ""))
            continue
        for figure in found.figures:
            value = format_value(figure.value)
            rows.append((bench, figure.metric, value, figure.unit, found.measured_at))
    return rows


def render(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    value_column = HEADERS.index("value")

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(width) if i == value_column else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return " | ".join(cells).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    return "\n".join([line(HEADERS), rule, *(line(row) for row in rows)])


def main() -> None:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS_DIR
    results, skipped = load_all(directory) if directory.is_dir() else ({}, [])
    print(render(table_rows(results)))
    if skipped:
        print(f"(not bench results, skipped: {', '.join(skipped)})")


if __name__ == "__main__":
    main()
