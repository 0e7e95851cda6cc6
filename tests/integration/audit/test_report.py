"""The compliance report handler against moto: records appended by the audit
store, read back from the table's day partitions, written to the bucket as a CSV
and a PDF."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.audit import report as report_handler
from infra.cli import main
from infra.local.contracts import InvocationResult
from infra.local.moto_server import InvokeShim
from infra.local.serving import ThreadedServer
from shared.clock import FixedClock
from shared.compliance_pdf import render_compliance_pdf
from shared.services.audit import MAX_PAGE, AuditTrail
from shared.services.compliance_report import ComplianceReports, InvalidMonth, ReportMonth
from shared.stores.audit import DynamoAuditStore
from shared.stores.reports import S3ReportDocuments
from tests.apigw import lambda_context
from tests.integration.conftest import REGION, Aws
from tests.unit.audit.envelopes import delivered
from tests.unit.audit.events import activated, invoice_issued

BUCKET = "tbcss-test-reports"
REPORT_FUNCTION = "TbCss-dev-AuditReportFunction-0a1b2c"
NOVEMBER = ReportMonth(2026, 11)
# What the monthly rule sends: 00:30 UTC on the 1st, 06:00 IST.
SCHEDULED = {
    "version": "0",
    "id": "5f3a1d7e-0000-4000-8000-000000000001",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-12-01T00:30:00Z",
    "region": REGION,
    "resources": [f"arn:aws:events:{REGION}:123456789012:rule/monthly-report"],
    "detail": {},
}


@dataclass
class Reports:
    s3: Any
    trail: AuditTrail
    clock: FixedClock

    def run(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = report_handler.handler(event, lambda_context("report"))
        return result

    def csv(self, key: str) -> dict[tuple[str, str, str], str]:
        body = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode("utf-8")
        rows = csv.DictReader(io.StringIO(body))
        return {(r["section"], r["metric"], r["dimension"]): r["value"] for r in rows}


@pytest.fixture
def reports(aws: Aws) -> Iterator[Reports]:
    s3: Any = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    trail = AuditTrail(DynamoAuditStore())
    clock = FixedClock(datetime(2026, 12, 1, 0, 30, tzinfo=UTC))
    service = ComplianceReports(
        trail=trail,
        documents=S3ReportDocuments(s3, BUCKET),
        clock=clock,
        render_pdf=render_compliance_pdf,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_handler, "compliance_reports", lambda: service)
        yield Reports(s3, trail, clock)


def test_the_monthly_run_writes_last_months_csv_and_pdf_with_its_counts(reports: Reports) -> None:
    busy_day = datetime(2026, 11, 14, 4, 0, tzinfo=UTC)
    invoices = [  # more than one page of one day's partition
        invoice_issued(busy_day + timedelta(seconds=i), f"u{i}", total_paise=1_000 + i, tax_paise=0)
        for i in range(MAX_PAGE + 5)
    ]
    events = [
        activated(NOVEMBER.start - timedelta(seconds=1), "october"),  # 31 Oct, IST
        activated(NOVEMBER.start, "first"),  # 1 Nov 00:00 IST, still 31 Oct in UTC
        activated(datetime(2026, 11, 30, 18, 29, 59, tzinfo=UTC), "last"),  # 30 Nov 23:59:59 IST
        activated(NOVEMBER.end, "december"),
        *invoices,
    ]
    for envelope in delivered(*events):
        assert reports.trail.record_event(envelope) == "recorded"

    result = reports.run(SCHEDULED)

    assert result["month"] == "2026-11"
    assert result["csv_uri"] == f"s3://{BUCKET}/compliance/2026-11/compliance-2026-11.csv"
    assert result["pdf_key"] == "compliance/2026-11/compliance-2026-11.pdf"
    counts = reports.csv(result["csv_key"])
    assert counts["report", "records", ""] == str(2 + len(invoices))
    assert counts["activations", "count", "prepaid"] == "2"
    assert counts["invoices_issued", "count", ""] == str(len(invoices))
    expected_paise = sum(1_000 + i for i in range(len(invoices)))
    assert counts["invoices_issued", "amount_paise", ""] == str(expected_paise)
    assert result["report"]["invoices_issued"]["amount_paise"] == expected_paise
    pdf = reports.s3.get_object(Bucket=BUCKET, Key=result["pdf_key"])
    assert pdf["ContentType"] == "application/pdf"
    assert pdf["Body"].read().startswith(b"%PDF-")
    head = reports.s3.head_object(Bucket=BUCKET, Key=result["csv_key"])
    assert head["ContentType"] == "text/csv; charset=utf-8"


def test_a_month_asked_for_is_reported_again_and_the_earlier_version_kept(
    reports: Reports,
) -> None:
    [first] = delivered(activated(datetime(2026, 10, 5, tzinfo=UTC), "u1"))
    reports.trail.record_event(first)
    assert reports.run({"month": "2026-10"})["report"]["activations"]["prepaid"] == 1

    [late] = delivered(activated(datetime(2026, 10, 20, tzinfo=UTC), "u2"))
    reports.trail.record_event(late)
    again = reports.run({"month": "2026-10"})

    assert again["report"]["activations"]["prepaid"] == 2
    versions = reports.s3.list_object_versions(Bucket=BUCKET, Prefix=again["csv_key"])
    assert len(versions["Versions"]) == 2


def test_a_bad_month_fails_the_invocation_with_a_clear_message(reports: Reports) -> None:
    with pytest.raises(InvalidMonth, match=r"month must be YYYY-MM .* not '11/2026'"):
        reports.run({"month": "11/2026"})

    listed = reports.s3.list_objects_v2(Bucket=BUCKET)
    assert listed["KeyCount"] == 0


# --- tbcss report monthly ------------------------------------------------------------


class InProcess:
    """The runtime's invoker, reduced to this test's one function run in-process."""

    def invoke(
        self, function_name: str, payload: Any, invocation_type: str = "RequestResponse"
    ) -> InvocationResult:
        assert invocation_type == "RequestResponse", "the CLI waits for the report"
        try:
            return InvocationResult(report_handler.handler(payload, lambda_context(function_name)))
        except Exception as error:
            failure = {"errorMessage": str(error), "errorType": type(error).__name__}
            return InvocationResult(failure, function_error="Unhandled")


@pytest.fixture
def runtime(reports: Reports, tmp_path: Path) -> Iterator[Path]:
    """A runtime's state dir whose AWS endpoint is the runtime's Invoke shim,
    running the report handler: what `tbcss` finds after `tbcss local up`."""
    shim = InvokeShim(moto_app=None)
    shim.set_invoker(InProcess(), [REPORT_FUNCTION])
    server = ThreadedServer(shim, port=0, name="invoke-shim")
    server.start()
    info = {
        "pid": os.getpid(),
        "aws_endpoint_url": f"http://127.0.0.1:{server.port}",
        "region": REGION,
        "functions": {"AuditReportFunctionF1AE9DFF": REPORT_FUNCTION, "AuditApiFunction": "api"},
    }
    (tmp_path / "runtime.json").write_text(json.dumps(info))
    yield tmp_path
    server.stop()


def test_tbcss_report_monthly_prints_where_it_wrote_and_the_counts(
    reports: Reports, runtime: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for envelope in delivered(
        activated(datetime(2026, 11, 3, tzinfo=UTC), "u1", "postpaid"),
        invoice_issued(datetime(2026, 11, 4, tzinfo=UTC), "u1", total_paise=70_682, tax_paise=0),
    ):
        reports.trail.record_event(envelope)
    state_dir = ["--state-dir", str(runtime)]

    assert main(["report", "monthly", "--month", "2026-11", "--json", *state_dir]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert main(["report", "monthly", "--month", "2026-11", *state_dir]) == 0
    table = capsys.readouterr().out

    assert printed["csv_uri"] == f"s3://{BUCKET}/compliance/2026-11/compliance-2026-11.csv"
    assert printed["report"]["activations"] == {"postpaid": 1, "prepaid": 0}
    assert printed["report"]["invoices_issued"]["amount_rupees"] == "706.82"
    assert reports.csv(printed["csv_key"])["invoices_issued", "count", ""] == "1"
    lines = table.splitlines()
    assert lines[0] == "compliance report 2026-11 (complete), 2 audit records"
    assert lines[1].strip() == printed["csv_uri"]
    assert lines[2].strip() == printed["pdf_uri"]
    assert any(line.split() == ["activations", "count", "postpaid", "1"] for line in lines)
    assert any(line.split() == ["invoices_issued", "amount_rupees", "706.82"] for line in lines)


def test_tbcss_report_monthly_fails_in_one_line(
    runtime: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = ["--state-dir", str(runtime)]

    assert main(["report", "monthly", "--month", "2026/11", *state_dir]) != 0
    assert capsys.readouterr().err == (
        "tbcss: error: month must be YYYY-MM (e.g. 2026-11), not '2026/11'\n"
    )
    assert main(["report", "monthly", "--month", "2027-03", *state_dir]) != 0
    assert capsys.readouterr().err == "tbcss: error: report failed: 2027-03 has not started yet\n"
