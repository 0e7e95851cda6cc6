"""The bench results format (bench.results) and the summary table (bench.summary)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.results import Figure, read_results, write_results
from bench.summary import EXPECTED_BENCHES, format_value, load_all, render, table_rows


def test_results_round_trip_through_the_file(tmp_path: Path) -> None:
    figures = [Figure("throughput", 1234.5, "CDRs/s"), Figure("requests", 22, "per 1k")]

    path = write_results("rating", {"cdrs": 2000}, figures, directory=tmp_path)
    results = read_results("rating", directory=tmp_path)

    assert path == tmp_path / "rating.json"
    assert results is not None
    assert results.figures == figures
    assert results.parameters == {"cdrs": 2000}
    assert results.machine["python"]
    assert results.measured_at.endswith("+00:00")


def test_a_bench_that_has_not_run_has_no_results(tmp_path: Path) -> None:
    assert read_results("rating", directory=tmp_path) is None


def test_the_summary_lists_every_figure_and_marks_missing_benches(tmp_path: Path) -> None:
    write_results("rating", {}, [Figure("throughput", 600, "CDRs/s")], directory=tmp_path)
    write_results("extra", {}, [Figure("thing", 0.5, "s")], directory=tmp_path)
    (tmp_path / "soak-usage.json").write_text(json.dumps({"profile": "full"}))

    results, skipped = load_all(tmp_path)
    rows = table_rows(results)

    assert skipped == ["soak-usage.json"]
    by_bench = {row[0]: row for row in rows}
    assert by_bench["rating"][1:4] == ("throughput", "600", "CDRs/s")
    assert by_bench["extra"][1:4] == ("thing", "0.5", "s")
    missing = [bench for bench in EXPECTED_BENCHES if bench != "rating"]
    assert all("MISSING" in by_bench[bench][1] for bench in missing)
    assert [row[0] for row in rows] == [*EXPECTED_BENCHES, "extra"]


def test_the_table_has_one_header_and_one_line_per_row() -> None:
    text = render([("rating", "throughput", "600", "CDRs/s", "2026-01-01T00:00:00+00:00")])

    header, rule, row = text.splitlines()
    assert header.split(" | ")[0].strip() == "bench"
    assert set(rule) <= {"-", "+"}
    assert "throughput" in row


def test_values_are_shown_readably() -> None:
    assert format_value(20000.0) == "20,000"
    assert format_value(1234.567) == "1,234.6"
    assert format_value(2.19123) == "2.19"
    assert format_value(0.0030412) == "0.00304"
