"""Configuration: one pydantic settings model, read once from the environment."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a handler needs to know about its deployment.

    Environment variable names are the upper-case field names (``TABLE_NAME``...).
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    table_name: str = "tbcss"
    event_bus_name: str = "tbcss-events"
    aws_region: str = Field(default="ap-south-1", validation_alias="AWS_REGION")

    # JWT verification (Cognito in AWS, the local issuer in local mode).
    jwt_issuer: str = "https://tbcss.local/issuer"
    jwt_audience: str = "tbcss-api"
    # Where the JWKS lives: an https:// URL, a file:// path, or empty when jwks_json is set.
    jwks_url: str = ""
    jwks_json: str = ""

    # Idempotency records live in the single table and expire after this many seconds.
    idempotency_ttl_seconds: int = 24 * 3600

    # The operator's GST registration state (decides CGST+SGST vs IGST).
    operator_state: str = "KA"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings are read once per process (per Lambda container)."""
    return Settings()
