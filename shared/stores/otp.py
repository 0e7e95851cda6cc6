"""One-time passwords of the owner's lost-SIM / theft block (issue 7).

| item | PK | SK | TTL |
|---|---|---|---|
| OTP | ``USER#<id>`` | ``OTP#<otp_id>`` | ``expires_at`` (epoch) |
| request counter | ``USER#<id>`` | ``OTP_RATE#<window start>`` | ``expires_at`` |

The code is never stored: only its salted SHA-256. An OTP is SENT, then
VERIFIED (usable until ``verified_until``), then USED by the block it
authorized; LOCKED after too many wrong codes.
"""

from __future__ import annotations

from datetime import datetime

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute

from shared.db import Item, conditional_update, user_pk
from shared.service_control import BlockReason
from shared.services.sim_care import Otp, OtpStatus

__all__ = ["DynamoOtpStore", "OtpItem", "OtpRateItem", "OtpStatus", "otp_sk", "rate_sk"]


def otp_sk(otp_id: str) -> str:
    return f"OTP#{otp_id}"


def rate_sk(window_start: datetime) -> str:
    return f"OTP_RATE#{int(window_start.timestamp())}"


class OtpItem(Item):
    otp_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    reason = UnicodeAttribute()  # the BlockReason it may authorize
    code_hash = UnicodeAttribute()
    salt = UnicodeAttribute()
    status = UnicodeAttribute()
    attempts = NumberAttribute(default=0)
    created_at = UTCDateTimeAttribute()
    code_expires_at = UTCDateTimeAttribute()
    verified_until = UTCDateTimeAttribute(null=True)
    expires_at = NumberAttribute()  # TTL (epoch seconds)


class OtpRateItem(Item):
    requests = NumberAttribute(default=0)
    expires_at = NumberAttribute()


class DynamoOtpStore:
    """Implements :class:`shared.services.sim_care.OtpStore`: every change is one
    conditional UpdateItem, so concurrent requests and guesses cannot overshoot
    the limits."""

    def count_request(
        self, user_id: str, window_start: datetime, limit: int, expires_at: datetime
    ) -> bool:
        counter = OtpRateItem(user_pk(user_id), rate_sk(window_start))
        return conditional_update(
            counter,
            [
                OtpRateItem.entity.set("OTP_RATE"),
                OtpRateItem.requests.add(1),
                OtpRateItem.expires_at.set(int(expires_at.timestamp())),
            ],
            OtpRateItem.requests.does_not_exist() | (OtpRateItem.requests < limit),
        )

    def create(self, otp: Otp, expires_at: datetime) -> None:
        OtpItem(
            user_pk(otp.user_id),
            otp_sk(otp.otp_id),
            entity="OTP",
            otp_id=otp.otp_id,
            user_id=otp.user_id,
            reason=otp.reason.value,
            code_hash=otp.code_hash,
            salt=otp.salt,
            status=otp.status.value,
            attempts=otp.attempts,
            created_at=otp.created_at,
            code_expires_at=otp.code_expires_at,
            verified_until=otp.verified_until,
            expires_at=int(expires_at.timestamp()),
        ).save(condition=OtpItem.pk.does_not_exist())

    def get(self, user_id: str, otp_id: str) -> Otp | None:
        try:
            item = OtpItem.get(user_pk(user_id), otp_sk(otp_id), consistent_read=True)
        except OtpItem.DoesNotExist:
            return None
        return _otp(item)

    def record_wrong_code(self, user_id: str, otp_id: str, max_attempts: int) -> Otp | None:
        # Two conditional updates that never both apply: below the last attempt
        # only the count moves; the last one also locks.
        item = OtpItem(user_pk(user_id), otp_sk(otp_id))
        sent = OtpItem.status == OtpStatus.SENT.value
        count = OtpItem.attempts.add(1)
        if conditional_update(item, [count], sent & (OtpItem.attempts < max_attempts - 1)):
            return _otp(item)
        lock = OtpItem.status.set(OtpStatus.LOCKED.value)
        if conditional_update(item, [count, lock], sent & (OtpItem.attempts == max_attempts - 1)):
            return _otp(item)
        return None

    def mark_verified(
        self, user_id: str, otp_id: str, verified_until: datetime, now: datetime
    ) -> bool:
        return conditional_update(
            OtpItem(user_pk(user_id), otp_sk(otp_id)),
            [
                OtpItem.status.set(OtpStatus.VERIFIED.value),
                OtpItem.verified_until.set(verified_until),
            ],
            (OtpItem.status == OtpStatus.SENT.value) & (OtpItem.code_expires_at > now),
        )


def _otp(item: OtpItem) -> Otp:
    return Otp(
        otp_id=item.otp_id,
        user_id=item.user_id,
        reason=BlockReason(item.reason),
        code_hash=item.code_hash,
        salt=item.salt,
        status=OtpStatus(item.status),
        attempts=int(item.attempts),
        created_at=item.created_at,
        code_expires_at=item.code_expires_at,
        verified_until=item.verified_until,
    )
