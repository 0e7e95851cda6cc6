"""Domain models (pydantic). These are what services take and return; the
DynamoDB item shapes live in :mod:`shared.db`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SubscriberType(StrEnum):
    PREPAID = "prepaid"
    POSTPAID = "postpaid"


class RenewalRule(StrEnum):
    """What happens when a plan period ends."""

    # Prepaid: service on the plan stops at expiry until the subscriber recharges.
    MANUAL_RECHARGE = "MANUAL_RECHARGE"
    # Prepaid: the same plan is bought again from the wallet at expiry, if it covers the price.
    AUTO_RENEW_FROM_WALLET = "AUTO_RENEW_FROM_WALLET"
    # Postpaid: the rental recurs every bill cycle until the plan is changed.
    MONTHLY_BILL_CYCLE = "MONTHLY_BILL_CYCLE"


class RepeatPurchase(StrEnum):
    """What buying a prepaid plan again while that same plan is active does."""

    # The new validity starts when the current one ends (the quota of the current
    # period is not touched); the subscriber is told the new expiry.
    EXTEND = "EXTEND"
    # The plan starts again now, like an /upgrade to itself: the unused part of the
    # current period is credited pro rata and the full price is charged.
    RESTART = "RESTART"


class OverageRates(Frozen):
    """Pay-as-you-go rates beyond the included quota, with their pulse (rating unit).

    A partly used pulse is charged as a whole pulse (rounded up), as operators do.
    """

    data_paise_per_pulse: NonNegativeInt
    data_pulse_bytes: PositiveInt = Field(description="10240 = per 10 KB, 1048576 = per MB")
    voice_paise_per_pulse: NonNegativeInt
    voice_pulse_seconds: PositiveInt = Field(description="1 = per second, 60 = per minute")
    sms_paise_each: NonNegativeInt


class Plan(Frozen):
    plan_id: Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9_-]{1,39}$")]
    name: str
    type: SubscriberType
    description: str = ""
    price_paise: PositiveInt
    price_includes_gst: bool = Field(
        description="Prepaid MRPs include GST; postpaid rentals are billed plus GST."
    )
    validity_days: PositiveInt = Field(description="Prepaid validity, or 30 for a monthly rental")
    data_bytes: NonNegativeInt
    voice_seconds: NonNegativeInt | None = Field(description="None means unlimited")
    sms: NonNegativeInt
    overage: OverageRates
    renewal_rule: RenewalRule
    repeat_purchase: RepeatPurchase = Field(
        default=RepeatPurchase.EXTEND,
        description="Prepaid: buying this plan again while it is active extends or restarts it",
    )
    active: bool = True

    @model_validator(mode="after")
    def _renewal_fits_type(self) -> Plan:
        postpaid_rule = self.renewal_rule is RenewalRule.MONTHLY_BILL_CYCLE
        if postpaid_rule != (self.type is SubscriberType.POSTPAID):
            raise ValueError("postpaid plans renew per bill cycle; prepaid plans never do")
        return self


class SubscriberStatus(StrEnum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    TEMP_BLOCKED = "TEMP_BLOCKED"
    PENDING_DISCONNECT = "PENDING_DISCONNECT"
    KYC_REJECTED = "KYC_REJECTED"  # activation refused; SIM and number went back to stock
    PERMANENT_DISCONNECTED = "PERMANENT_DISCONNECTED"


class Subscriber(Frozen):
    """The parts of a subscriber profile that plans and billing need."""

    user_id: str
    msisdn: str
    subscriber_type: SubscriberType
    state: str = Field(description="Indian state code of the billing address (GST place of supply)")
    status: SubscriberStatus
    bill_cycle_day: Annotated[int, Field(ge=1, le=31)] = 1
    created_at: datetime
    # Set by activation (issue 4); optional so profiles created elsewhere stay valid.
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    iccid: str | None = None
    activation_id: str | None = None


class Subscription(Frozen):
    """One plan period of one subscriber."""

    subscription_id: str
    user_id: str
    plan_id: str
    plan_type: SubscriberType
    price_paise: int
    started_at: datetime
    valid_until: datetime | None = Field(description="Prepaid expiry; None for postpaid")
    ended_at: datetime | None = None
