"""Fires the template's EventBridge schedule rules against the local clock.

moto stores ``rate()``/``cron()`` rules but never fires them. :class:`Scheduler`
does, two ways:

* in the background, as (local) time passes;
* on :meth:`Scheduler.advance`, which moves the clock forward and fires every
  occurrence that falls in the skipped interval, in time order, setting the clock
  to each occurrence's time before delivering it, so handlers see the scheduled
  time (the invoker hands ``clock.offset_seconds()`` to every invocation).

Rules due at the same moment (the midnight sweeps) fire concurrently, as
EventBridge fires them independently; one moment's deliveries all finish before
the clock moves to the next.

``rate()`` schedules count from the moment the scheduler was created (as a rule
created when the runtime started); ``cron()`` is absolute, in UTC.

Cron support (AWS's six fields ``min hour day-of-month month day-of-week year``):
``*``, ``?``, lists, ranges, steps (``*/n``, ``a/n``, ``a-b/n``), month and day
names (``JAN``, ``MON-FRI``), ``L`` and ``LW`` and ``nW`` in day-of-month,
``L`` / ``nL`` (last weekday n) and ``n#k`` (k-th weekday n) in day-of-week.
Not supported: ranges that wrap (``FRI-MON``), ``L-n`` offsets, and specifying
both day fields (AWS rejects that too): such rules are logged and never fired.

:class:`PatternDelivery` covers the other half of EventBridge that moto lacks:
events matched by pattern rules whose targets moto cannot reach (Lambda, Step
Functions, Kinesis, SNS; the deploy strips those targets from moto). It is not
wired to PutEvents by itself: whoever observes a PutEvents calls ``deliver``.
"""

from __future__ import annotations

import calendar
import json
import logging
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from itertools import groupby
from typing import TYPE_CHECKING, Any, Protocol

from infra.local.contracts import InvocationType, Invoker
from infra.local.deploy import MOTO_DELIVERABLE_TARGETS
from infra.local.meter import local_session
from infra.local.workers import ASYNC_RETRY_DELAYS_SECONDS

if TYPE_CHECKING:
    from infra.local.deploy import Deployment, RuleSpec, TargetSpec

log = logging.getLogger("tbcss.local.scheduler")

TICK_SECONDS = 1.0
# One advance fires at most a rule's LATEST occurrences (what follows a jump sees
# the state they leave); the earlier ones skipped are logged, never silent. A cron
# rule names its days (each day's sweep matters). A rate rule polls (a janitor):
# each run sees everything still open, so the runtime keeps only its last few
# (a month of rate(15 minutes) is 2,900 synchronous invocations).
MAX_OCCURRENCES_PER_RULE = 200
# Deliveries of one moment run at once on at most this many threads.
MAX_CONCURRENT_DELIVERIES = 8


class MovableClock(Protocol):
    """``contracts.Clock`` plus the forward move the scheduler needs (LocalClock)."""

    def offset_seconds(self) -> float: ...

    def now_epoch(self) -> float: ...

    def advance_to(self, epoch: float) -> float: ...


# --- schedule expressions ------------------------------------------------------


class Schedule(Protocol):
    def occurrences(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Occurrences in ``(after, until]``, ascending."""
        ...


@dataclass(frozen=True)
class RateSchedule:
    period: timedelta
    anchor: datetime

    def occurrences(self, after: datetime, until: datetime) -> Iterator[datetime]:
        # The first firing is one period after the anchor (the rule's creation).
        elapsed = max(0.0, (after - self.anchor).total_seconds())
        index = int(elapsed // self.period.total_seconds()) + 1
        moment = self.anchor + self.period * index
        while moment <= until:
            if moment > after:
                yield moment
            index += 1
            moment = self.anchor + self.period * index


_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def parse_schedule(expression: str, *, anchor: datetime) -> Schedule:
    """``rate(...)`` or ``cron(...)`` -> a :class:`Schedule`; ValueError if unsupported."""
    text = expression.strip()
    rate = _RATE.match(text)
    if rate:
        value, unit = int(rate.group(1)), rate.group(2).rstrip("s")
        if value <= 0:
            raise ValueError(f"rate must be positive: {expression}")
        return RateSchedule(timedelta(seconds=value * _RATE_UNITS[unit]), anchor)
    if text.startswith("cron(") and text.endswith(")"):
        return CronSchedule.parse(text[5:-1])
    raise ValueError(f"unsupported schedule expression: {expression}")


_MONTHS = {name.upper(): index for index, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}

DayTest = Callable[[date], bool]


def _aws_weekday(day: date) -> int:
    """AWS numbers days 1 (SUN) .. 7 (SAT); Python 0 (MON) .. 6 (SUN)."""
    return (day.weekday() + 1) % 7 + 1


def _last_day(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def _number(token: str, names: dict[str, int]) -> int:
    upper = token.upper()
    if upper in names:
        return names[upper]
    if not token.isdigit():
        raise ValueError(f"bad cron value {token!r}")
    return int(token)


def _values(field: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int]:
    """``*``, ``a``, ``a-b``, ``a/n``, ``*/n``, ``a-b/n`` and lists of them."""
    names = names or {}
    result: set[int] = set()
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if span in ("*", "?"):
            start, end = low, high
        elif "-" in span:
            first, last = span.split("-", 1)
            start, end = _number(first, names), _number(last, names)
        else:
            start = _number(span, names)
            end = high if step_text else start
        if step <= 0 or not low <= start <= end <= high:
            raise ValueError(f"cron field {field!r} out of range {low}-{high}")
        result.update(range(start, end + 1, step))
    return result


def _nearest_weekday(day: date, wanted: int) -> int:
    """Day of month of the weekday nearest ``wanted`` within the same month (``nW``)."""
    last = _last_day(day)
    target = date(day.year, day.month, min(wanted, last))
    if target.weekday() == 5:  # Saturday: Friday, or Monday if that leaves the month
        return target.day - 1 if target.day > 1 else target.day + 2
    if target.weekday() == 6:  # Sunday: Monday, or Friday if that leaves the month
        return target.day + 1 if target.day < last else target.day - 2
    return target.day


def _on_days_of_month(days: frozenset[int]) -> DayTest:
    return lambda day: day.day in days


def _on_nearest_weekday(wanted: int | None) -> DayTest:
    """``nW``; ``None`` stands for the last day of the month (``LW``)."""
    return lambda day: day.day == _nearest_weekday(day, wanted or _last_day(day))


def _on_weekdays(weekdays: frozenset[int]) -> DayTest:
    return lambda day: _aws_weekday(day) in weekdays


def _on_last_weekday(weekday: int) -> DayTest:
    return lambda day: _aws_weekday(day) == weekday and day.day + 7 > _last_day(day)


def _on_nth_weekday(weekday: int, nth: int) -> DayTest:
    return lambda day: _aws_weekday(day) == weekday and (day.day - 1) // 7 + 1 == nth


def _any_of(tests: list[DayTest]) -> DayTest:
    return lambda day: any(test(day) for test in tests)


def _day_of_month_item(item: str) -> DayTest:
    upper = item.upper()
    if upper == "L":
        return lambda day: day.day == _last_day(day)
    if upper == "LW":
        return _on_nearest_weekday(None)
    if upper.endswith("W") and upper[:-1].isdigit():
        return _on_nearest_weekday(int(upper[:-1]))
    return _on_days_of_month(frozenset(_values(item, 1, 31)))


def _day_of_week_item(item: str) -> DayTest:
    upper = item.upper()
    if upper == "L":
        return _on_weekdays(frozenset({7}))  # Quartz: L alone is the last day, SAT
    if upper.endswith("L"):
        return _on_last_weekday(_number(upper[:-1], _DAYS))
    if "#" in upper:
        weekday, _, nth = upper.partition("#")
        return _on_nth_weekday(_number(weekday, _DAYS), int(nth))
    return _on_weekdays(frozenset(_values(item, 1, 7, _DAYS)))


def _day_test(field: str, item_test: Callable[[str], DayTest]) -> DayTest | None:
    """None means "any day" (``?`` or ``*``)."""
    if field in ("?", "*"):
        return None
    return _any_of([item_test(item) for item in field.split(",")])


@dataclass(frozen=True)
class CronSchedule:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    years: frozenset[int]
    day_of_month: DayTest | None
    day_of_week: DayTest | None

    @classmethod
    def parse(cls, body: str) -> CronSchedule:
        fields = body.split()
        if len(fields) != 6:
            raise ValueError(f"cron needs 6 fields, got {len(fields)}: {body!r}")
        minute, hour, dom, month, dow, year = fields
        if dom != "?" and dow != "?":
            raise ValueError(f"cron needs '?' in day-of-month or day-of-week: {body!r}")
        return cls(
            minutes=tuple(sorted(_values(minute, 0, 59))),
            hours=tuple(sorted(_values(hour, 0, 23))),
            months=frozenset(_values(month, 1, 12, _MONTHS)),
            years=frozenset(_values(year, 1970, 2199)),
            day_of_month=_day_test(dom, _day_of_month_item),
            day_of_week=_day_test(dow, _day_of_week_item),
        )

    def matches_day(self, day: date) -> bool:
        return (
            day.year in self.years
            and day.month in self.months
            and (self.day_of_month is None or self.day_of_month(day))
            and (self.day_of_week is None or self.day_of_week(day))
        )

    def occurrences(self, after: datetime, until: datetime) -> Iterator[datetime]:
        # Walk days, not minutes: a year of advance is 366 cheap day checks.
        day = after.astimezone(UTC).date()
        last = until.astimezone(UTC).date()
        while day <= last:
            if self.matches_day(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                        if after < moment <= until:
                            yield moment
            day += timedelta(days=1)


# --- delivery ------------------------------------------------------------------


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_path(document: Any, path: str) -> Any:
    """The dotted subset of JSONPath EventBridge uses: ``$``, ``$.a.b``, ``$.a[0]``."""
    if not path.startswith("$"):
        raise ValueError(f"bad JSONPath {path!r}")
    node = document
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path[1:]):
        if part.startswith("["):
            node = node[int(part[1:-1])] if isinstance(node, list) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def _transform(event: dict[str, Any], transformer: dict[str, Any], rule_arn: str) -> Any:
    """EventBridge InputTransformer: ``<name>`` placeholders from InputPathsMap."""
    values: dict[str, Any] = {
        name: _json_path(event, path) for name, path in transformer.get("InputPathsMap", {}).items()
    }
    values["aws.events.rule-arn"] = rule_arn
    values["aws.events.rule-name"] = rule_arn.rsplit("/", 1)[-1]
    values["aws.events.event.ingestion-time"] = event["time"]
    values["aws.events.event.json"] = event
    template = str(transformer.get("InputTemplate", ""))

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        # Strings are inserted raw (the template quotes them); anything else as JSON.
        return value if isinstance(value, str) else json.dumps(value)

    text = re.sub(r"<([A-Za-z0-9_.\-]+)>", substitute, template)
    try:
        return json.loads(text)
    except ValueError:
        return text


def target_input(target: TargetSpec, event: dict[str, Any], rule_arn: str) -> Any:
    """What the target receives: the event, or the target's Input/InputPath/InputTransformer."""
    if target.input is not None:
        try:
            return json.loads(target.input)
        except ValueError:
            return target.input
    if target.input_path:
        return _json_path(event, target.input_path)
    if target.input_transformer:
        return _transform(event, target.input_transformer, rule_arn)
    return event


def _as_text(payload: Any) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload)


def rule_arn(rule: RuleSpec, region: str, account: str) -> str:
    bus = "" if rule.bus_name in ("", "default") else f"{rule.bus_name}/"
    return f"arn:aws:events:{region}:{account}:rule/{bus}{rule.name}"


class TargetDelivery:
    """Delivers one event to one EventBridge rule target, as EventBridge would.

    Lambda functions go through the Invoker; SQS, Step Functions, Kinesis, SNS
    and event buses through their APIs in moto. Returns a short outcome
    ("ok", "queued", "error: ...", "skipped: ...") instead of raising: one broken
    target must not stop the others or the clock. Thread-safe if the Invoker is
    (WorkerInvoker is): the boto3 clients, created lazily under a lock, are shared.
    """

    def __init__(
        self,
        deployment: Deployment,
        invoker: Invoker,
        *,
        endpoint_url: str | None,
        region: str,
    ) -> None:
        self._deployment = deployment
        self._invoker = invoker
        self._endpoint_url = endpoint_url
        self._region = region
        self._session = local_session(endpoint_url)
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    def label(self, target: TargetSpec) -> str:
        if self._deployment.has_function(target.arn):
            return self._deployment.function(target.arn).logical_id
        return target.arn.rsplit(":", 1)[-1].rsplit("/", 1)[-1]

    def deliver(
        self,
        target: TargetSpec,
        event: dict[str, Any],
        rule_arn: str,
        invocation: InvocationType,
    ) -> str:
        service = target.arn.split(":")[2] if target.arn.startswith("arn:") else "lambda"
        try:
            payload = target_input(target, event, rule_arn)
            return self._deliver_to(service, target, payload, event, invocation)
        except Exception as error:
            log.exception("delivery to %s failed", target.arn)
            return f"error: {type(error).__name__}: {error}"

    def _deliver_to(
        self,
        service: str,
        target: TargetSpec,
        payload: Any,
        event: dict[str, Any],
        invocation: InvocationType,
    ) -> str:
        if service == "lambda":
            return self._invoke(target.arn, payload, invocation)
        if service == "sqs":
            self._send_to_queue(target, _as_text(payload), event["id"])
        elif service == "states":
            self._client("stepfunctions").start_execution(
                stateMachineArn=target.arn, name=event["id"], input=_as_text(payload)
            )
        elif service == "kinesis":
            self._client("kinesis").put_record(
                StreamARN=target.arn, Data=_as_text(payload).encode(), PartitionKey=event["id"]
            )
        elif service == "events":
            self._put_on_bus(target.arn, payload, event)
        elif service == "sns":
            self._client("sns").publish(TopicArn=target.arn, Message=_as_text(payload))
        else:
            return f"skipped: {service} targets are not supported locally"
        return "ok"

    def _invoke(self, arn: str, payload: Any, invocation: InvocationType) -> str:
        known = self._deployment.has_function(arn)
        name = self._deployment.function(arn).name if known else arn
        # EventBridge invokes Lambda asynchronously, and Lambda retries a failed run
        # twice: an "Event" invocation gets that from the invoker; a synchronous one
        # (a clock advance waits for its sweeps) gets it here.
        attempts = len(ASYNC_RETRY_DELAYS_SECONDS) + 1 if invocation == "RequestResponse" else 1
        for _ in range(attempts):
            result = self._invoker.invoke(name, payload, invocation)
            if result.ok:
                return "ok" if invocation == "RequestResponse" else "queued"
        error = result.payload if isinstance(result.payload, dict) else {}
        return f"error: {error.get('errorType')}: {error.get('errorMessage')}"

    def _send_to_queue(self, target: TargetSpec, body: str, event_id: str) -> None:
        name, account = target.arn.rsplit(":", 1)[-1], target.arn.split(":")[4]
        sqs = self._client("sqs")
        url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        message: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
        if name.endswith(".fifo"):
            message["MessageGroupId"] = target.sqs_message_group_id or "eventbridge"
            message["MessageDeduplicationId"] = event_id
        sqs.send_message(**message)

    def _put_on_bus(self, bus_arn: str, payload: Any, event: dict[str, Any]) -> None:
        detail = payload.get("detail", {}) if isinstance(payload, dict) else payload
        self._client("events").put_events(
            Entries=[
                {
                    "EventBusName": bus_arn,
                    "Source": event["source"],
                    "DetailType": event["detail-type"],
                    "Resources": event.get("resources", []),
                    "Detail": _as_text(detail),
                }
            ]
        )

    def _client(self, service: str) -> Any:
        # A boto3 client is thread-safe once made; making clients from one Session is not.
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = self._session.client(  # type: ignore[call-overload]
                    service, endpoint_url=self._endpoint_url, region_name=self._region
                )
            return self._clients[service]


# --- the scheduler -----------------------------------------------------------------


@dataclass(frozen=True)
class _Occurrence:
    moment: datetime
    order: int  # the rule's position in the template: ties fire in template order
    rule: RuleSpec


def _moment(occurrence: _Occurrence) -> datetime:
    return occurrence.moment


class Scheduler:
    """Fires schedule rules; see the module docstring."""

    def __init__(
        self,
        deployment: Deployment,
        invoker: Invoker,
        clock: MovableClock,
        *,
        endpoint_url: str | None,
        region: str,
        tick_seconds: float = TICK_SECONDS,
        max_occurrences_per_rule: int = MAX_OCCURRENCES_PER_RULE,
        max_occurrences_per_rate_rule: int | None = None,
    ) -> None:
        self._clock = clock
        self._region = region
        self._account = deployment.account
        self._tick_seconds = tick_seconds
        self._max_occurrences = max_occurrences_per_rule
        self._max_rate_occurrences = max_occurrences_per_rate_rule or max_occurrences_per_rule
        # Shared by the concurrent deliveries of one moment (it is thread-safe).
        self._delivery = TargetDelivery(
            deployment, invoker, endpoint_url=endpoint_url, region=region
        )
        self._fire_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        started = clock.now_epoch()
        self._fired_until = started
        anchor = datetime.fromtimestamp(started, UTC)
        self._schedules = self._parse_rules(deployment.rules, anchor)

    def _parse_rules(
        self, rules: list[RuleSpec], anchor: datetime
    ) -> list[tuple[RuleSpec, Schedule]]:
        schedules = []
        for rule in rules:
            if not rule.schedule_expression:
                continue
            if not rule.enabled:
                log.info("rule %s is disabled in the template: never fired", rule.name)
                continue
            try:
                schedules.append((rule, parse_schedule(rule.schedule_expression, anchor=anchor)))
            except ValueError as error:
                log.warning("rule %s is never fired locally: %s", rule.name, error)
        return schedules

    @property
    def rule_names(self) -> list[str]:
        return [rule.name for rule, _ in self._schedules]

    # lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_seconds):
            try:
                # Real time passing: asynchronous deliveries, as EventBridge does.
                self._fire_until(self._clock.now_epoch(), move_clock=False, invocation="Event")
            except Exception:
                log.exception("scheduler tick failed; trying again next tick")

    # time travel
    def advance(self, seconds: float) -> list[str]:
        """Move the clock forward and fire, in time order, everything due meanwhile.

        Lambda targets are invoked synchronously so the result (and errors) are
        known when this returns. Returns one line per delivery.
        """
        if seconds < 0:
            raise ValueError("time only moves forward")
        return self._fire_until(
            self._clock.now_epoch() + seconds, move_clock=True, invocation="RequestResponse"
        )

    def advance_to(self, moment: datetime) -> list[str]:
        """Like :meth:`advance`, to an absolute (aware) moment; a past moment fires nothing new."""
        return self.advance(max(0.0, moment.timestamp() - self._clock.now_epoch()))

    def _fire_until(
        self, target: float, *, move_clock: bool, invocation: InvocationType
    ) -> list[str]:
        with self._fire_lock:
            if target <= self._fired_until:
                return []
            after = datetime.fromtimestamp(self._fired_until, UTC)
            until = datetime.fromtimestamp(target, UTC)
            lines: list[str] = []
            for moment, occurrences in groupby(self._due(after, until), key=_moment):
                if move_clock:
                    self._clock.advance_to(moment.timestamp())
                lines.extend(self._fire_moment(list(occurrences), invocation))
                # Progress kept moment by moment: should a later moment raise, what
                # already fired is never fired again by the next advance.
                self._fired_until = moment.timestamp()
            if move_clock:
                self._clock.advance_to(target)
            self._fired_until = target
            return lines

    def _due(self, after: datetime, until: datetime) -> list[_Occurrence]:
        due: list[_Occurrence] = []
        for order, (rule, schedule) in enumerate(self._schedules):
            rate = isinstance(schedule, RateSchedule)
            cap = self._max_rate_occurrences if rate else self._max_occurrences
            latest: deque[datetime] = deque(maxlen=cap)
            seen = 0
            for moment in schedule.occurrences(after, until):
                latest.append(moment)
                seen += 1
            taken = list(latest)
            if seen > len(taken):
                log.warning(
                    "rule %s: %d occurrence(s) before %s not fired (only the latest %d "
                    "per advance)",
                    rule.name,
                    seen - len(taken),
                    iso_z(taken[0]),
                    cap,
                )
            due.extend(_Occurrence(moment, order, rule) for moment in taken)
        return sorted(due, key=lambda occurrence: (occurrence.moment, occurrence.order))

    def _fire_moment(self, occurrences: list[_Occurrence], invocation: InvocationType) -> list[str]:
        """Every target of one moment's rules at once, as EventBridge fires them.
        Returns when all are done, one line each, in template order."""
        deliveries = [
            delivery
            for occurrence in occurrences
            for delivery in self._deliveries(occurrence, invocation)
        ]
        if len(deliveries) <= 1:
            return [deliver() for deliver in deliveries]
        workers = min(len(deliveries), MAX_CONCURRENT_DELIVERIES)
        with ThreadPoolExecutor(workers, thread_name_prefix="scheduler-fire") as pool:
            futures = [pool.submit(deliver) for deliver in deliveries]
            # deliver() turns a failure into its outcome, so one target's failure
            # is its own line and never costs the others theirs.
            return [future.result() for future in futures]

    def _deliveries(
        self, occurrence: _Occurrence, invocation: InvocationType
    ) -> list[Callable[[], str]]:
        """One call per target; an occurrence's targets share its event, as on AWS."""
        rule = occurrence.rule
        arn = rule_arn(rule, self._region, self._account)
        event = self.scheduled_event(arn, occurrence.moment)
        return [
            partial(self._fire_target, rule, target, event, arn, invocation)
            for target in rule.targets
        ]

    def _fire_target(
        self,
        rule: RuleSpec,
        target: TargetSpec,
        event: dict[str, Any],
        arn: str,
        invocation: InvocationType,
    ) -> str:
        outcome = self._delivery.deliver(target, event, arn, invocation)
        line = f"{event['time']} rule {rule.name} -> {self._delivery.label(target)} {outcome}"
        (log.info if outcome in ("ok", "queued") else log.warning)("%s", line)
        return line

    def scheduled_event(self, rule_arn: str, moment: datetime) -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self._account,
            "time": iso_z(moment),
            "region": self._region,
            "resources": [rule_arn],
            "detail": {},
        }


# --- events matched by pattern rules -----------------------------------------------


def _matches_value(matcher: Any, value: Any, present: bool) -> bool:
    """One element of a pattern's value list against one event value."""
    if not isinstance(matcher, dict):
        return present and matcher == value
    if "exists" in matcher:
        return bool(matcher["exists"]) == present
    if not present:
        return False
    if "anything-but" in matcher:
        excluded = matcher["anything-but"]
        if isinstance(excluded, dict):
            return not _matches_value(excluded, value, present)
        return value not in (excluded if isinstance(excluded, list) else [excluded])
    return _matches_operator(matcher, value)


def _prefix(value: str, operand: Any) -> bool:
    if isinstance(operand, dict):  # {"prefix": {"equals-ignore-case": "x"}}
        return value.lower().startswith(str(operand.get("equals-ignore-case", "")).lower())
    return value.startswith(str(operand))


def _wildcard(value: str, operand: Any) -> bool:
    pattern = ".*".join(re.escape(part) for part in str(operand).split("*"))
    return re.fullmatch(pattern, value, re.DOTALL) is not None


_STRING_OPERATORS: dict[str, Callable[[str, Any], bool]] = {
    "prefix": _prefix,
    "suffix": lambda value, operand: value.endswith(str(operand)),
    "equals-ignore-case": lambda value, operand: value.lower() == str(operand).lower(),
    "wildcard": _wildcard,
}


def _matches_operator(matcher: dict[str, Any], value: Any) -> bool:
    if "numeric" in matcher:
        return _matches_numeric(matcher["numeric"], value)
    for name, test in _STRING_OPERATORS.items():
        if name in matcher:
            return isinstance(value, str) and test(value, matcher[name])
    log.warning("event pattern operator %s is not supported locally", sorted(matcher))
    return False


_NUMERIC = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _matches_numeric(conditions: list[Any], value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    pairs = zip(conditions[::2], conditions[1::2], strict=False)
    return all(_NUMERIC[operator](value, bound) for operator, bound in pairs)


def pattern_matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge event-pattern matching: nested fields, value lists (any of),
    array event values (any element), ``$or``, and the operators ``prefix``,
    ``suffix``, ``equals-ignore-case``, ``wildcard``, ``anything-but``,
    ``numeric``, ``exists``. (``cidr`` is not supported.)"""
    for key, expected in pattern.items():
        if key == "$or":
            if not any(pattern_matches(branch, event) for branch in expected):
                return False
            continue
        present = isinstance(event, dict) and key in event
        value = event.get(key) if present else None
        if isinstance(expected, dict):
            if not isinstance(value, dict) or not pattern_matches(expected, value):
                return False
            continue
        values = value if isinstance(value, list) and value else [value]
        if not any(_matches_value(m, v, present) for m in expected for v in values):
            return False
    return True


def _moto_delivers(arn: str) -> bool:
    # Same rule as the deploy: moto keeps (and delivers to) these targets itself.
    return any(marker in arn for marker in MOTO_DELIVERABLE_TARGETS)


class PatternDelivery:
    """Delivers events put on a bus to pattern-rule targets moto cannot reach.

    The deploy strips Lambda / Step Functions / Kinesis / SNS targets from pattern
    rules (moto's PutEvents fails on them); whoever sees a PutEvents (a shim in
    front of moto, or code that publishes) hands the entries to :meth:`deliver`.
    SQS, bus and log targets are left to moto, which still has them.
    """

    def __init__(
        self,
        deployment: Deployment,
        invoker: Invoker,
        clock: MovableClock,
        *,
        endpoint_url: str | None,
        region: str,
        invocation: InvocationType = "Event",
    ) -> None:
        self._deployment = deployment
        self._clock = clock
        self._region = region
        self._invocation = invocation
        # TargetDelivery is thread-safe; the lock only keeps the deliveries of
        # one PutEvents call from interleaving with another's.
        self._lock = threading.Lock()
        self._delivery = TargetDelivery(
            deployment, invoker, endpoint_url=endpoint_url, region=region
        )
        self._rules = [
            rule
            for rule in deployment.rules
            if rule.enabled
            and rule.event_pattern is not None
            and any(not _moto_delivers(target.arn) for target in rule.targets)
        ]

    @property
    def rule_names(self) -> list[str]:
        return [rule.name for rule in self._rules]

    def event_from_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A PutEvents entry (``Source``, ``DetailType``, ``Detail``, ...) -> the event."""
        moment = entry.get("Time") or datetime.fromtimestamp(self._clock.now_epoch(), UTC)
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": entry.get("DetailType", ""),
            "source": entry.get("Source", ""),
            "account": self._deployment.account,
            "time": iso_z(moment),
            "region": self._region,
            "resources": list(entry.get("Resources", [])),
            "detail": json.loads(entry.get("Detail") or "{}"),
        }

    def deliver(self, entries: list[dict[str, Any]]) -> list[str]:
        """Match each entry against the pattern rules of its bus and deliver."""
        lines: list[str] = []
        with self._lock:
            for entry in entries:
                bus = str(entry.get("EventBusName") or "default").rsplit("/", 1)[-1]
                lines.extend(self._deliver_event(bus, self.event_from_entry(entry)))
        return lines

    def _deliver_event(self, bus: str, event: dict[str, Any]) -> list[str]:
        lines = []
        for rule in self._rules:
            if rule.bus_name != bus or not pattern_matches(rule.event_pattern or {}, event):
                continue
            arn = rule_arn(rule, self._region, self._deployment.account)
            for target in rule.targets:
                if _moto_delivers(target.arn):
                    continue
                outcome = self._delivery.deliver(target, event, arn, self._invocation)
                line = f"{event['detail-type']} rule {rule.name} -> "
                line += f"{self._delivery.label(target)} {outcome}"
                (log.info if outcome in ("ok", "queued") else log.warning)("%s", line)
                lines.append(line)
        return lines
