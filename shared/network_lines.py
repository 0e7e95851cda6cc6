"""The network simulator's lines in SSM Parameter Store: one String parameter
(the LineRecord as JSON) per MSISDN, ``<prefix>/<msisdn>``.

Only the simulator uses it (locally and in test stages): SSM's write throughput
is low, but so is the number of orders a simulated network sees. A record stays
well under the 4 KB of a standard parameter (the history keeps 20 entries).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3

from shared.network import LineRecord

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient


class SsmLineRegistry:
    """A :class:`shared.network.LineRegistry` in SSM, under ``prefix``."""

    def __init__(self, client: SSMClient, prefix: str) -> None:
        self._client = client
        self.prefix = prefix.rstrip("/")

    def parameter_name(self, msisdn: str) -> str:
        return f"{self.prefix}/{msisdn}"

    def get(self, msisdn: str) -> LineRecord | None:
        try:
            answer = self._client.get_parameter(Name=self.parameter_name(msisdn))
        except self._client.exceptions.ParameterNotFound:
            return None
        return LineRecord.model_validate_json(answer["Parameter"].get("Value", "{}"))

    def put(self, record: LineRecord) -> None:
        self._client.put_parameter(
            Name=self.parameter_name(record.msisdn),
            Value=record.model_dump_json(),
            Type="String",
            Overwrite=True,
        )


def line_registry(prefix: str | None) -> SsmLineRegistry | None:
    """The lines under ``prefix``; None without one (a simulator that keeps none).
    Each call makes an SSM client: make one for many orders."""
    return SsmLineRegistry(boto3.client("ssm"), prefix) if prefix else None
