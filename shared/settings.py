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

    # Usage rating (issue 5): where CDRs that cannot be rated go for review.
    anomaly_queue_url: str = ""

    # The operator's GST registration state (decides CGST+SGST vs IGST).
    operator_state: str = "KA"

    # Activation (issue 4). KYC numbers are sealed under this KMS key; the pepper of
    # their fingerprints lives in Secrets Manager (name or ARN).
    kyc_key_id: str = ""
    kyc_pepper_secret_id: str = ""
    activation_state_machine_arn: str = ""
    escalation_queue_url: str = ""
    notification_sender: str = "no-reply@tbcss.example.in"
    # Which adapters talk to the KYC provider and the network: only "simulator" exists yet.
    kyc_provider: str = "simulator"
    network_provisioner: str = "simulator"
    # SSM parameter (JSON) holding the simulators' failure / latency knobs.
    simulator_knobs_parameter: str = ""
    # SSM path under which the network simulator keeps one parameter per line
    # (provisioned, ICCID, barring, history); empty: the simulator keeps no state.
    simulator_lines_parameter_prefix: str = ""

    # Billing (issue 6).
    # A bill may fall due on its bill date; the other timers need at least a day.
    invoice_due_days: int = Field(default=15, ge=0)  # due date = bill date + this many days
    overdue_grace_days: int = Field(default=7, ge=1)  # InvoiceOverdue this long after it
    invoice_bucket_name: str = ""  # the invoice PDFs
    report_bucket_name: str = ""  # the monthly compliance reports
    billing_queue_url: str = ""  # bill-run and sweep fan-out (one message per subscriber)
    operator_name: str = "TB Telecom Pvt Ltd"
    operator_gstin: str = "29ABCDE1234F1Z5"
    operator_address: str = "12 MG Road|Bengaluru 560001"  # lines separated by "|"
    operator_upi_id: str = "tbtelecom@upi"
    operator_payment_url: str = "https://pay.tbtelecom.example.in"
    operator_support: str = "care@tbtelecom.example.in, 198"

    # Service control (issue 7). The block for an unpaid bill comes with InvoiceOverdue,
    # i.e. overdue_grace_days after the due date: that is the "days overdue before a block".
    # Blocked for an unpaid bill or an expired plan this long: disconnected.
    inactivity_days: int = Field(default=90, ge=1)
    # A disconnected number is reissued only after this.
    msisdn_cooling_off_days: int = Field(default=90, ge=1)
    disconnection_state_machine_arn: str = ""
    service_control_queue_url: str = ""  # events and sweep fan-out for service control
    otp_code_ttl_seconds: int = 300  # an OTP must be verified within this
    otp_verified_ttl_seconds: int = 600  # a verified OTP must be used within this
    otp_max_attempts: int = 5  # wrong codes before the OTP is locked
    otp_requests_per_window: int = 3  # OTP requests per user per window (then 429)
    otp_window_seconds: int = 900

    # Payments (issue 8). Which adapter talks to the payment gateway: only "simulator"
    # exists yet; it queues its webhooks (with their delay) on the outbox queue, and
    # the delivery function signs them with the webhook secret and hands them to the
    # payments API function.
    payment_gateway: str = "simulator"
    payment_webhook_secret_id: str = ""  # the gateway's HMAC secret (Secrets Manager)
    payments_queue_url: str = ""  # InvoiceIssued (AutoPay) and the AutoPay retry fan-out
    payments_ops_queue_url: str = ""  # payments the janitor could not resolve in time
    webhook_outbox_queue_url: str = ""  # the simulator's webhooks, delayed
    payments_api_function_name: str = ""  # where the simulator delivers its webhooks


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings are read once per process (per Lambda container)."""
    return Settings()
