"""Builds the audit trail from settings, once per container."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from shared.services.audit import AuditTrail
from shared.stores.audit import DynamoAuditStore

if TYPE_CHECKING:
    from shared.services.compliance_report import ComplianceReports


@lru_cache(maxsize=1)
def trail() -> AuditTrail:
    return AuditTrail(DynamoAuditStore())


@lru_cache(maxsize=1)
def compliance_reports() -> ComplianceReports:
    # Imported here: the API and the consumer share this module and need neither
    # reportlab nor the S3 client on their cold start.
    import boto3  # noqa: PLC0415

    from shared.clock import system_clock  # noqa: PLC0415
    from shared.compliance_pdf import render_compliance_pdf  # noqa: PLC0415
    from shared.services.compliance_report import ComplianceReports  # noqa: PLC0415
    from shared.settings import get_settings  # noqa: PLC0415
    from shared.stores.reports import S3ReportDocuments  # noqa: PLC0415

    return ComplianceReports(
        trail=trail(),
        documents=S3ReportDocuments(boto3.client("s3"), get_settings().report_bucket_name),
        clock=system_clock(),
        render_pdf=render_compliance_pdf,
    )
