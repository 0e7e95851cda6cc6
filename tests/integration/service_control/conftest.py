"""Service control's stores against moto: a subscriber with a SIM claim, and
helpers that put the billing, plan and OTP items the guards and facts read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import db
from shared.models import Subscriber, SubscriberStatus, SubscriberType, Subscription
from shared.services.billing import InvoiceStatus
from shared.stores.activation import ICCID_SK, IccidClaimItem, iccid_pk
from shared.stores.billing import InvoiceItem, invoice_sk
from shared.stores.otp import OtpItem, OtpStatus, otp_sk
from tests.integration.conftest import T0, Aws

MakeLine = Callable[..., Subscriber]


def put_claim(iccid: str, user_id: str, claim_status: str | None = None) -> None:
    IccidClaimItem(
        iccid_pk(iccid),
        ICCID_SK,
        entity="ICCID",
        user_id=user_id,
        activation_id=f"ACT-{user_id}",
        claim_status=claim_status,
    ).save()


@pytest.fixture
def line(aws: Aws, store: db.DynamoSubscriptionStore) -> MakeLine:
    """A live postpaid line with its SIM claimed (as activation leaves it)."""

    def make(
        user_id: str,
        subscriber_type: SubscriberType = SubscriberType.POSTPAID,
        **profile: Any,
    ) -> Subscriber:
        """``profile``: more profile fields (``phone``, ``email``...)."""
        digits = f"{sum(user_id.encode()) * 7919 % 10**9:09d}"
        subscriber = Subscriber(
            user_id=user_id,
            msisdn=f"9{digits}",
            subscriber_type=subscriber_type,
            state="KA",
            status=SubscriberStatus.ACTIVE,
            bill_cycle_day=5,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            iccid=f"8991{digits}000",
            **profile,
        )
        store.put_subscriber(subscriber)
        assert subscriber.iccid is not None
        put_claim(subscriber.iccid, user_id)
        return subscriber

    return make


def put_invoice(
    user_id: str,
    label: str,
    status: InvoiceStatus = InvoiceStatus.ISSUED,
    *,
    total_paise: int = 70_682,
    credited_paise: int = 0,
    paid_paise: int = 0,
    overdue_notified: bool = False,
) -> str:
    """A minimal invoice item (what billing stores, without the document's lines)."""
    invoice_id = f"INV-{user_id}-{label}"
    InvoiceItem(
        db.user_pk(user_id),
        invoice_sk(label, invoice_id),
        entity="INVOICE",
        invoice_id=invoice_id,
        invoice_number=f"TB/2026-27/{label}",
        user_id=user_id,
        status=status.value,
        bill_date=label,
        due_date=label,
        total_paise=total_paise,
        document="{}",
        credited_paise=credited_paise,
        paid_paise=paid_paise,
        overdue_notified=overdue_notified,
    ).save()
    return invoice_id


def start_plan(
    store: db.DynamoSubscriptionStore, user_id: str, subscription_id: str, at: datetime = T0
) -> Subscription:
    plan = Subscription(
        subscription_id=subscription_id,
        user_id=user_id,
        plan_id="POST_PLUS_599",
        plan_type=SubscriberType.POSTPAID,
        price_paise=59_900,
        started_at=at,
        valid_until=None,
    )
    store.start(plan, wallet_debit_paise=0)
    return plan


def put_otp(
    user_id: str,
    otp_id: str,
    status: str = OtpStatus.VERIFIED,
    verified_until: datetime | None = T0 + timedelta(minutes=10),
) -> None:
    OtpItem(
        db.user_pk(user_id),
        otp_sk(otp_id),
        entity="OTP",
        otp_id=otp_id,
        user_id=user_id,
        reason="LOST_SIM",
        code_hash="0" * 64,
        salt="salt",
        status=status,
        created_at=T0 - timedelta(minutes=2),
        code_expires_at=T0 + timedelta(minutes=3),
        verified_until=verified_until,
        expires_at=int((T0 + timedelta(days=1)).timestamp()),
    ).save()
