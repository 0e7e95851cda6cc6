"""Usage rating end to end: CDRs (with duplicates) put on the runtime's CDR
stream with `tbcss cdr send`, rated by the real handler behind the local
Kinesis poller, read back through GET /users/{id}/usage; an unknown MSISDN
reaches the anomaly review queue."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.conftest import LocalSystem, wait_for

POSTPAID_MSISDN = "9876500002"  # demo-postpaid (infra/local/runtime.py)


def _usage(system: LocalSystem, token: str) -> dict[str, Any] | None:
    response = system.get("/users/demo-postpaid/usage", token)
    return response.json() if response.status_code == 200 else None


def _cdr(record_id: str, msisdn: str, now: str, **usage: Any) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "source": "MSC-E2E",
        "msisdn": msisdn,
        "started_at": now,
        **usage,
    }


def test_cdrs_with_duplicates_are_rated_once_and_unknown_numbers_reported(
    local_system: LocalSystem, tmp_path: Path
) -> None:
    token = local_system.token("demo-postpaid", "subscriber")
    subscribed = local_system.post(
        "/subscribe",
        {"user_id": "demo-postpaid", "plan_id": "POST_BASIC_399"},
        token,
        key=uuid.uuid4().hex,
    )
    assert subscribed.status_code in (201, 409), subscribed.text  # 409: an earlier test did
    before = _usage(local_system, token)
    assert before is not None
    now = json.loads(local_system.cli("local", "clock", "show"))["now"]
    run = uuid.uuid4().hex[:8]
    sms = [
        _cdr(f"{run}-sms-{i}", POSTPAID_MSISDN, now, usage_type="SMS", count=1) for i in range(3)
    ]
    call = _cdr(f"{run}-call", POSTPAID_MSISDN, now, usage_type="VOICE", duration_seconds=61)
    unknown = _cdr(f"{run}-unknown", "6000000001", now, usage_type="SMS", count=1)
    feed = [*sms, call, sms[0], call, sms[2], unknown]  # three re-sent records
    path = tmp_path / "feed.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in feed))

    output = local_system.cli("cdr", "send", str(path))
    assert f"{len(feed)} records put" in output

    def rated() -> dict[str, Any] | None:
        usage = _usage(local_system, token)
        done = usage and usage["sms"]["used"] >= before["sms"]["used"] + 3
        return usage if done and usage["voice"]["used"] > before["voice"]["used"] else None

    after = wait_for(rated, timeout=60, what="the CDRs in GET usage")
    assert after["sms"]["used"] == before["sms"]["used"] + 3
    assert after["voice"]["used"] == before["voice"]["used"] + 120  # one 61 s call, 60 s pulse

    sqs = local_system.aws("sqs")
    (queue_url,) = [q for q in local_system.info["queues"] if "AnomalyQueue" in q]

    def reported() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        bodies = [json.loads(m["Body"]) for m in messages]
        return [b for b in bodies if f"{run}-unknown" in b["record"]]

    (anomaly,) = wait_for(reported, timeout=30, what="the unknown MSISDN on the anomaly queue")
    assert anomaly["reason"] == "UNKNOWN_MSISDN"
    assert anomaly["msisdn"] == "6000000001"
