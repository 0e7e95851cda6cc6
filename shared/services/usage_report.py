"""What GET /users/{user_id}/usage answers: the current cycle's used and
remaining units per type, overage so far, the daily breakdown, the anomaly flag."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, Field

from shared.clock import Clock
from shared.errors import NoActivePlan, UserNotFound
from shared.services.usage import (
    CycleUsage,
    RatingSources,
    RatingState,
    build_state,
    current_cycle,
)


class AnomalyFlagView(BaseModel):
    reason: str
    anomaly_count: int
    window_start: str
    flagged_at: str


class TypeUsage(BaseModel):
    used: int = Field(
        description="Billable units used this cycle (pulse-rounded), overage included"
    )
    included: int | None = Field(description="The plan's quota; null means unlimited")
    remaining: int | None = Field(description="Included units left; null means unlimited")
    overage_paise: int
    exhausted: bool = Field(description="Prepaid: quota used up and the wallet cannot pay on")


class DailyUsage(BaseModel):
    date: str = Field(description="Day in IST, YYYY-MM-DD")
    data_bytes: int
    voice_seconds: int
    sms: int


class CycleView(BaseModel):
    label: str
    start: datetime
    end: datetime
    closed: bool = Field(description="Invoiced (postpaid) or ended (prepaid)")


class UsageReport(BaseModel):
    user_id: str
    msisdn: str
    subscriber_type: str
    plan_id: str
    cycle: CycleView
    data: TypeUsage = Field(description="Bytes")
    voice: TypeUsage = Field(description="Seconds")
    sms: TypeUsage = Field(description="Messages")
    overage_paise: int = Field(description="Charged beyond the quotas this cycle so far")
    wallet_paise: int | None = Field(description="Prepaid: PAYG balance as rating last saw it")
    unbilled_paise: int = Field(description="Prepaid: charges the wallet could not cover")
    daily: list[DailyUsage]
    late_usage_records: int = Field(description="CDRs that arrived after their cycle closed")
    flag: AnomalyFlagView | None = Field(description="Set when the feed sent repeated anomalies")


@dataclass(frozen=True)
class AnomalyFlag:
    reason: str
    anomaly_count: int
    window_start: str
    flagged_at: str


class UsageReader(Protocol):
    def msisdn_of(self, user_id: str) -> str | None: ...

    def load_states(self, msisdns: list[str]) -> dict[str, RatingState]: ...

    def load_sources(self, msisdns: list[str]) -> dict[str, RatingSources]: ...

    def flag_of(self, msisdn: str) -> AnomalyFlag | None: ...


class UsageReports:
    def __init__(self, reader: UsageReader, clock: Clock) -> None:
        self._reader = reader
        self._clock = clock

    def report(self, user_id: str) -> UsageReport:
        msisdn = self._reader.msisdn_of(user_id)
        if msisdn is None:
            raise UserNotFound(f"no subscriber {user_id!r}")
        state = self._reader.load_states([msisdn]).get(msisdn)
        if state is None:  # nothing rated yet: the same view, all zeros
            sources = self._reader.load_sources([msisdn]).get(msisdn)
            state = build_state(msisdn, sources) if sources else None
        if state is None:
            raise NoActivePlan("no active plan, so no usage to show")
        flag = self._reader.flag_of(msisdn)
        return _report(state, current_cycle(state, self._clock.now()), flag)


def _report(state: RatingState, cycle: CycleUsage, flag: AnomalyFlag | None) -> UsageReport:
    plan, balance = cycle.plan, cycle.balance
    remaining = balance.remaining(plan)
    return UsageReport(
        user_id=state.user_id,
        msisdn=state.msisdn,
        subscriber_type=state.subscriber_type.value,
        plan_id=plan.plan_id,
        cycle=CycleView(label=cycle.label, start=cycle.start, end=cycle.end, closed=cycle.closed),
        data=TypeUsage(
            used=balance.used_data_bytes,
            included=plan.data_bytes,
            remaining=remaining.data_bytes,
            overage_paise=balance.overage_data_paise,
            exhausted=balance.data_exhausted,
        ),
        voice=TypeUsage(
            used=balance.used_voice_seconds,
            included=plan.voice_seconds,
            remaining=remaining.voice_seconds,
            overage_paise=balance.overage_voice_paise,
            exhausted=balance.voice_exhausted,
        ),
        sms=TypeUsage(
            used=balance.used_sms,
            included=plan.sms,
            remaining=remaining.sms,
            overage_paise=balance.overage_sms_paise,
            exhausted=balance.sms_exhausted,
        ),
        overage_paise=balance.overage_paise,
        wallet_paise=state.wallet_paise if state.prepaid else None,
        unbilled_paise=balance.unbilled_paise,
        daily=[
            DailyUsage(date=day, data_bytes=d, voice_seconds=v, sms=s)
            for day, (d, v, s) in sorted(cycle.daily.items())
        ],
        late_usage_records=sum(c.late_records for c in state.cycles.values()),
        flag=AnomalyFlagView(**vars(flag)) if flag else None,
    )
