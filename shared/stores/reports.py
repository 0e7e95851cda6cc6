"""Report documents in the private, KMS-encrypted reports bucket (infra/audit.py),
behind :class:`shared.services.compliance_report.ReportDocuments`. The bucket is
versioned: a report run again replaces the object and keeps the earlier one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class S3ReportDocuments:
    def __init__(self, client: S3Client, bucket: str) -> None:
        if not bucket:
            raise ValueError("no reports bucket: set REPORT_BUCKET_NAME")
        self._client = client
        self._bucket = bucket

    def put(self, key: str, body: bytes, content_type: str) -> str:
        self._client.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type)
        return f"s3://{self._bucket}/{key}"
