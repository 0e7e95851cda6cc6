"""SIM care against in-memory ports: the owner's one-time password for a lost or
stolen SIM (request, verify, use by the block) and the agent's SIM replacement."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest

from shared.auth import Principal, Role
from shared.errors import DomainError
from shared.models import SubscriberStatus
from shared.network import UNRESTRICTED, BarringProfile, DataAccess
from shared.service_control import BlockReason
from shared.services.sim_care import (
    OtpConfig,
    OtpRequestResult,
    OtpStatus,
    OwnerOtps,
    SimReplacementResult,
)
from shared.settings import Settings
from tests.unit.service_control.fakes import (
    ADMIN,
    AGENT,
    ICCID,
    MSISDN,
    OTHER_SUBSCRIBER,
    OWNER,
    T0,
    USER,
    IccidClaim,
)
from tests.unit.service_control.sim_care_fakes import SimCare, make_sim_care

R = BlockReason
BARRED = BarringProfile(outgoing_barred=True, data=DataAccess.BARRED)
NEW_ICCID = "8991000000000000127"
OTHER_ICCID = "8991000000000000341"
SIX_DIGITS = re.compile(r"\b[0-9]{6}\b")


@pytest.fixture
def care() -> SimCare:
    care = make_sim_care()
    care.world.add_line()
    return care


def code_of(text: str) -> str:
    found = SIX_DIGITS.findall(text)
    assert len(found) == 1, text
    return str(found[0])


def request(care: SimCare, reason: BlockReason = R.LOST_SIM) -> tuple[OtpRequestResult, str]:
    """An OTP requested by the owner, and the code the SMS carried."""
    result = care.otps.request(OWNER, USER, reason)
    return result, code_of(care.notifier.sms[-1][1])


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def set_contacts(care: SimCare, *, phone: str | None, email: str | None) -> None:
    current = care.world.subscribers.get_subscriber(USER)
    care.world.subscribers.put(current.model_copy(update={"phone": phone, "email": email}))


# --- requesting an OTP --------------------------------------------------------------


def test_the_code_goes_by_sms_to_the_alternate_number_and_nowhere_else(
    care: SimCare, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)

    result, code = request(care)

    assert care.notifier.sms[0][0] == "+919123456780"  # the alternate, not the lost 9876543210
    assert care.notifier.emails == []
    assert result.channel == "SMS"
    assert result.sent_to == "+91XXXXXX6780"
    assert result.expires_at == T0 + timedelta(minutes=5)
    stored = care.otp_store.get(USER, result.otp_id)
    assert stored is not None
    assert stored.status is OtpStatus.SENT
    assert stored.reason is R.LOST_SIM
    # The code is in the SMS only: not in the result, the stored OTP or any log.
    assert code not in result.model_dump_json()
    assert code not in stored.model_dump_json()
    logged = caplog.text + capsys.readouterr().out
    logged += "".join(str(record.__dict__) for record in caplog.records)
    assert code not in logged


def test_codes_are_random_six_digit_numbers(care: SimCare) -> None:
    codes = {request(care)[1] for _ in range(3)}

    assert len(codes) == 3  # a repeat among three random codes: about 3 in a million
    assert all(len(code) == 6 and code.isdigit() for code in codes)


@pytest.mark.parametrize(
    "phone",
    [None, MSISDN, "+91 98765 43210"],
    ids=["no alternate number", "the lost number itself", "the lost number, other format"],
)
def test_without_an_alternate_number_the_code_goes_by_email(
    care: SimCare, phone: str | None
) -> None:
    set_contacts(care, phone=phone, email="asha@example.in")

    result = care.otps.request(OWNER, USER, R.THEFT)

    assert care.notifier.sms == []
    (to, subject, body), *_ = care.notifier.emails
    assert to == "asha@example.in"
    assert "stolen" in subject
    assert SIX_DIGITS.search(body)
    assert result.channel == "EMAIL"
    assert result.sent_to == "a***@example.in"


def test_with_no_alternate_contact_the_owner_is_sent_to_an_agent(care: SimCare) -> None:
    set_contacts(care, phone=None, email=None)

    with pytest.raises(DomainError) as raised:
        care.otps.request(OWNER, USER, R.LOST_SIM)

    assert (raised.value.status, raised.value.code) == (409, "NO_ALTERNATE_CONTACT")
    assert "agent" in raised.value.message
    assert care.otp_store.otps == {}


def test_a_fourth_request_in_the_window_is_throttled_until_the_next_window(
    care: SimCare,
) -> None:
    for _ in range(3):
        request(care)

    with pytest.raises(DomainError) as raised:
        care.otps.request(OWNER, USER, R.LOST_SIM)

    assert (raised.value.status, raised.value.code) == (429, "THROTTLED")
    # T0 is 10:00 UTC, a window start (900 s windows): the next one opens at 10:15.
    assert raised.value.details == {"retry_after_seconds": 900}
    assert len(care.notifier.sms) == 3
    assert len(care.otp_store.otps) == 3

    care.world.clock.advance(timedelta(minutes=15))
    request(care)
    assert len(care.notifier.sms) == 4


@pytest.mark.parametrize(
    "caller",
    [OTHER_SUBSCRIBER, AGENT, ADMIN, Principal(USER, frozenset({Role.AGENT}))],
    ids=["another subscriber", "agent", "admin", "agent with the owner's id"],
)
def test_only_the_owner_may_request_or_verify_an_otp(care: SimCare, caller: Principal) -> None:
    result, code = request(care)

    with pytest.raises(DomainError) as requested:
        care.otps.request(caller, USER, R.LOST_SIM)
    with pytest.raises(DomainError) as verified:
        care.otps.verify(caller, USER, result.otp_id, code)

    assert requested.value.status == verified.value.status == 403
    assert len(care.notifier.sms) == 1
    assert care.otp_store.otps[(USER, result.otp_id)].status is OtpStatus.SENT


@pytest.mark.parametrize("reason", [R.AGENT, R.OVERDUE, R.FRAUD_SUSPECTED])
def test_an_otp_is_only_for_a_lost_or_stolen_sim(care: SimCare, reason: BlockReason) -> None:
    with pytest.raises(DomainError) as raised:
        care.otps.request(OWNER, USER, reason)

    assert raised.value.status == 422
    assert care.notifier.sms == []


def test_a_disconnected_line_gets_no_otp(care: SimCare) -> None:
    care.world.add_line(status=SubscriberStatus.PERMANENT_DISCONNECTED)

    with pytest.raises(DomainError) as raised:
        care.otps.request(OWNER, USER, R.LOST_SIM)

    assert raised.value.code == "SUBSCRIBER_NOT_CONTROLLABLE"
    assert care.notifier.sms == []


def test_an_undelivered_code_is_reported_without_the_code_in_any_log(
    care: SimCare, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing:
        def send_sms(self, e164_number: str, text: str) -> str:
            raise RuntimeError(f"SNS refused {e164_number}: {text}")

        def send_email(self, to: str, subject: str, body: str) -> str:
            raise AssertionError(f"no email expected: {to} {subject} {body}")

    otps = OwnerOtps(
        store=care.otp_store,
        subscribers=care.world.subscribers,
        notifier=Failing(),
        clock=care.world.clock,
    )
    caplog.set_level(logging.DEBUG)

    with pytest.raises(DomainError) as raised:
        otps.request(OWNER, USER, R.LOST_SIM)

    assert (raised.value.status, raised.value.code) == (503, "OTP_NOT_SENT")
    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert "SNS refused" not in logged


# --- verifying ------------------------------------------------------------------------


def test_the_right_code_verifies_and_repeating_it_gives_the_same_answer(care: SimCare) -> None:
    result, code = request(care)
    care.world.clock.advance(timedelta(minutes=2))

    verified = care.otps.verify(OWNER, USER, result.otp_id, code)
    care.world.clock.advance(timedelta(minutes=1))
    again = care.otps.verify(OWNER, USER, result.otp_id, code)

    assert verified.valid_until == T0 + timedelta(minutes=12)
    assert again == verified
    assert care.otp_store.otps[(USER, result.otp_id)].status is OtpStatus.VERIFIED


def test_wrong_codes_count_down_and_lock_the_otp(care: SimCare) -> None:
    result, code = request(care)
    left = []
    for _ in range(4):
        with pytest.raises(DomainError) as raised:
            care.otps.verify(OWNER, USER, result.otp_id, wrong(code))
        assert (raised.value.status, raised.value.code) == (422, "OTP_INVALID")
        left.append(raised.value.details["attempts_left"])

    with pytest.raises(DomainError) as fifth:
        care.otps.verify(OWNER, USER, result.otp_id, wrong(code))
    with pytest.raises(DomainError) as right_too_late:
        care.otps.verify(OWNER, USER, result.otp_id, code)

    assert left == [4, 3, 2, 1]
    assert (fifth.value.status, fifth.value.code) == (409, "OTP_LOCKED")
    assert right_too_late.value.code == "OTP_LOCKED"
    assert care.otp_store.otps[(USER, result.otp_id)].status is OtpStatus.LOCKED


def test_the_attempt_limit_comes_from_the_settings(care: SimCare) -> None:
    config = OtpConfig.from_settings(Settings(otp_max_attempts=2, otp_code_ttl_seconds=60))
    otps = OwnerOtps(
        store=care.otp_store,
        subscribers=care.world.subscribers,
        notifier=care.notifier,
        clock=care.world.clock,
        config=config,
    )
    result = otps.request(OWNER, USER, R.LOST_SIM)
    code = code_of(care.notifier.sms[-1][1])

    with pytest.raises(DomainError) as first:
        otps.verify(OWNER, USER, result.otp_id, wrong(code))
    with pytest.raises(DomainError) as second:
        otps.verify(OWNER, USER, result.otp_id, wrong(code))

    assert result.expires_at == T0 + timedelta(minutes=1)
    assert "1 minutes" in care.notifier.sms[-1][1]
    assert first.value.details == {"attempts_left": 1}
    assert second.value.code == "OTP_LOCKED"


def test_a_malformed_code_is_refused_without_using_an_attempt(care: SimCare) -> None:
    result, _ = request(care)

    with pytest.raises(DomainError) as raised:
        care.otps.verify(OWNER, USER, result.otp_id, "12345")

    assert raised.value.code == "VALIDATION_ERROR"
    assert care.otp_store.otps[(USER, result.otp_id)].attempts == 0


def test_an_expired_code_no_longer_verifies(care: SimCare) -> None:
    result, code = request(care)
    care.world.clock.advance(timedelta(minutes=5))

    with pytest.raises(DomainError) as raised:
        care.otps.verify(OWNER, USER, result.otp_id, code)

    assert (raised.value.status, raised.value.code) == (422, "OTP_EXPIRED")
    assert care.otp_store.otps[(USER, result.otp_id)].status is OtpStatus.SENT


def test_an_unknown_otp_is_not_found(care: SimCare) -> None:
    with pytest.raises(DomainError) as raised:
        care.otps.verify(OWNER, USER, "otp-nope", "123456")

    assert (raised.value.status, raised.value.code) == (404, "OTP_NOT_FOUND")


def test_a_verify_racing_the_same_verify_gives_the_same_answer(care: SimCare) -> None:
    result, code = request(care)
    twin: list[object] = []
    care.otp_store.before_update = lambda: twin.append(
        care.otps.verify(OWNER, USER, result.otp_id, code)
    )

    verified = care.otps.verify(OWNER, USER, result.otp_id, code)

    assert twin == [verified]


def test_concurrent_wrong_guesses_cannot_pass_the_limit(care: SimCare) -> None:
    result, code = request(care)
    for _ in range(3):
        with pytest.raises(DomainError):
            care.otps.verify(OWNER, USER, result.otp_id, wrong(code))
    outcomes: list[str] = []

    def racing_guess() -> None:
        with pytest.raises(DomainError) as raised:
            care.otps.verify(OWNER, USER, result.otp_id, wrong(code))
        outcomes.append(raised.value.code)

    # Both guesses read attempts=3; the other one counts first, so ours is the
    # fifth wrong code even though it read "2 left".
    care.otp_store.before_update = racing_guess
    with pytest.raises(DomainError) as ours:
        care.otps.verify(OWNER, USER, result.otp_id, wrong(code))
    with pytest.raises(DomainError) as right:
        care.otps.verify(OWNER, USER, result.otp_id, code)

    assert outcomes == ["OTP_INVALID"]
    assert ours.value.code == "OTP_LOCKED"
    assert right.value.code == "OTP_LOCKED"
    assert care.otp_store.otps[(USER, result.otp_id)].attempts == 5


# --- using the verified OTP: the block -------------------------------------------------


def test_the_owner_blocks_a_lost_sim_with_a_verified_otp_once(care: SimCare) -> None:
    result, code = request(care)
    care.otps.verify(OWNER, USER, result.otp_id, code)

    view = care.world.service.block(OWNER, USER, R.LOST_SIM, otp_id=result.otp_id)
    with pytest.raises(DomainError) as reused:
        care.world.service.block(OWNER, USER, R.LOST_SIM, otp_id=result.otp_id)

    assert view.status is SubscriberStatus.TEMP_BLOCKED
    assert view.block_reasons == [R.LOST_SIM]
    assert care.network.profile_of() == BARRED
    assert care.otp_store.otps[(USER, result.otp_id)].status is OtpStatus.USED
    assert (reused.value.status, reused.value.code) == (409, "OTP_USED")
    assert care.world.state().reasons == {R.LOST_SIM}


def test_check_verified_refuses_what_the_block_must_not_accept(care: SimCare) -> None:
    sent, _ = request(care)
    verified, code = request(care)
    care.otps.verify(OWNER, USER, verified.otp_id, code)

    def code_of_check(otp_id: str, reason: BlockReason = R.LOST_SIM) -> str:
        with pytest.raises(DomainError) as raised:
            care.otps.check_verified(USER, otp_id, reason)
        return raised.value.code

    assert code_of_check(verified.otp_id, R.THEFT) == "OTP_REASON_MISMATCH"
    assert code_of_check(sent.otp_id) == "OTP_NOT_VERIFIED"
    assert code_of_check("otp-nope") == "OTP_NOT_FOUND"
    care.otps.check_verified(USER, verified.otp_id, R.LOST_SIM)  # the right one passes

    care.world.clock.advance(timedelta(minutes=10))
    assert code_of_check(verified.otp_id) == "OTP_EXPIRED"
    with pytest.raises(DomainError) as blocked:
        care.world.service.block(OWNER, USER, R.LOST_SIM, otp_id=verified.otp_id)
    assert blocked.value.code == "OTP_EXPIRED"
    assert care.world.state().reasons == frozenset()


# --- SIM replacement -------------------------------------------------------------------


def test_a_replacement_lifts_lost_sim_and_theft_and_keeps_an_unpaid_bill_block(
    care: SimCare,
) -> None:
    care.world.add_line(reasons={R.LOST_SIM, R.THEFT, R.OVERDUE})

    result = care.replacement.replace(AGENT, USER, NEW_ICCID)

    assert result.status is SubscriberStatus.TEMP_BLOCKED
    assert result.block_reasons == [R.OVERDUE]
    assert result.iccid == "XXXXXXXXXXXXXXX0127"
    assert result.previous_iccid == "XXXXXXXXXXXXXXX0017"
    assert result.network_reference
    assert result.network_in_sync
    state = care.world.state()
    assert (state.iccid, state.reasons) == (NEW_ICCID, frozenset({R.OVERDUE}))
    # The network: the new SIM on the number, still barred for the bill.
    assert care.network.sims[MSISDN] == NEW_ICCID
    assert care.network.orders[0].profile.user_id == USER
    assert care.network.orders[0].profile.subscriber_type == "postpaid"
    assert care.network.profile_of() == BARRED
    # The claims: the new SIM in use, the lost one never to be issued again.
    assert care.world.store.claims[NEW_ICCID] == IccidClaim(USER, "IN_USE")
    assert care.world.store.claims[ICCID] == IccidClaim(USER, "RETIRED")
    (entry,) = care.world.store.entries()
    assert entry.actor == "agent:agent-7"
    assert entry.lifted == {R.LOST_SIM, R.THEFT}
    (replaced,) = care.world.events.of_type("SimReplaced")
    assert replaced.detail["iccid"] == "XXXXXXXXXXXXXXX0127"
    assert replaced.detail["previous_iccid"] == "XXXXXXXXXXXXXXX0017"
    assert replaced.detail["actor"] == "agent:agent-7"
    assert NEW_ICCID not in str(replaced.detail)
    (unblocked,) = care.world.events.of_type("ServiceUnblocked")
    assert unblocked.detail["lifted"] == ["LOST_SIM", "THEFT"]
    assert unblocked.detail["block_reasons"] == ["OVERDUE"]


def test_a_replacement_for_a_lost_sim_alone_gives_the_line_back(care: SimCare) -> None:
    care.world.add_line(reasons={R.LOST_SIM})

    result = care.replacement.replace(ADMIN, USER, f"{NEW_ICCID[:4]} {NEW_ICCID[4:]}")

    assert result.status is SubscriberStatus.ACTIVE
    assert result.block_reasons == []
    assert care.network.profile_of() == UNRESTRICTED
    assert care.world.state().network_in_sync


def test_repeating_a_finished_replacement_changes_nothing(care: SimCare) -> None:
    care.replacement.replace(AGENT, USER, NEW_ICCID)
    orders = len(care.network.orders)

    again = care.replacement.replace(AGENT, USER, NEW_ICCID)

    assert not again.changed
    assert again.iccid == "XXXXXXXXXXXXXXX0127"
    assert len(care.network.orders) == orders
    assert len(care.world.events.of_type("SimReplaced")) == 1


def test_a_sim_held_by_someone_else_or_retired_cannot_be_used(care: SimCare) -> None:
    care.world.store.claims[OTHER_ICCID] = IccidClaim("u2", None)
    care.world.store.claims[NEW_ICCID] = IccidClaim(USER, "RETIRED")  # this user's lost SIM

    for iccid in (OTHER_ICCID, NEW_ICCID):
        with pytest.raises(DomainError) as raised:
            care.replacement.replace(AGENT, USER, iccid)
        assert (raised.value.status, raised.value.code) == (409, "DUPLICATE_ICCID")

    assert care.network.orders == []
    assert care.world.state().iccid == ICCID
    assert care.world.store.claims[OTHER_ICCID] == IccidClaim("u2", None)


def test_a_sim_the_network_refuses_is_given_back(care: SimCare) -> None:
    care.world.add_line(reasons={R.THEFT})
    care.network.outcomes = ["permanent"]

    with pytest.raises(DomainError) as raised:
        care.replacement.replace(AGENT, USER, NEW_ICCID)

    assert (raised.value.status, raised.value.code) == (409, "SIM_REJECTED")
    assert "not in the inventory" in raised.value.message
    assert NEW_ICCID not in care.world.store.claims  # free for another attempt or user
    assert len(care.network.orders) == 1
    state = care.world.state()
    assert (state.iccid, state.reasons) == (ICCID, frozenset({R.THEFT}))
    assert care.world.events.events == []


def test_a_busy_network_is_retried_within_the_request(care: SimCare) -> None:
    care.network.outcomes = ["transient", "transient"]

    result = care.replacement.replace(AGENT, USER, NEW_ICCID)

    assert [order.attempt for order in care.network.orders] == [1, 2, 3]
    assert result.changed
    assert care.world.state().iccid == NEW_ICCID


def test_an_unreachable_network_keeps_the_sim_for_a_retry(care: SimCare) -> None:
    care.world.add_line(reasons={R.LOST_SIM})
    care.network.outcomes = ["transient"] * 3

    with pytest.raises(DomainError) as raised:
        care.replacement.replace(AGENT, USER, NEW_ICCID)

    assert (raised.value.status, raised.value.code) == (503, "NETWORK_UNAVAILABLE")
    assert care.world.store.claims[NEW_ICCID] == IccidClaim(USER, "PENDING_REPLACEMENT")
    assert care.world.state().iccid == ICCID
    with pytest.raises(DomainError) as taken:  # nobody else gets it meanwhile
        care.claims.claim("u2", NEW_ICCID)
    assert taken.value.code == "DUPLICATE_ICCID"

    result = care.replacement.replace(AGENT, USER, NEW_ICCID)

    assert result.status is SubscriberStatus.ACTIVE
    assert care.world.store.claims[NEW_ICCID] == IccidClaim(USER, "IN_USE")


@pytest.mark.parametrize(
    "status", [SubscriberStatus.PERMANENT_DISCONNECTED, SubscriberStatus.PENDING_DISCONNECT]
)
def test_a_line_being_or_already_disconnected_keeps_its_sim(
    care: SimCare, status: SubscriberStatus
) -> None:
    care.world.add_line(status=status)

    with pytest.raises(DomainError) as raised:
        care.replacement.replace(AGENT, USER, NEW_ICCID)

    assert (raised.value.status, raised.value.code) == (409, "SUBSCRIBER_NOT_CONTROLLABLE")
    assert NEW_ICCID not in care.world.store.claims
    assert care.network.orders == []


@pytest.mark.parametrize("caller", [OWNER, OTHER_SUBSCRIBER], ids=["owner", "stranger"])
def test_subscribers_cannot_replace_a_sim(care: SimCare, caller: Principal) -> None:
    with pytest.raises(DomainError) as raised:
        care.replacement.replace(caller, USER, NEW_ICCID)

    assert raised.value.status == 403
    assert care.network.orders == []


@pytest.mark.parametrize(
    "iccid", ["8991000000000000128", "12345", "1291000000000000127"], ids=["luhn", "short", "89"]
)
def test_an_invalid_iccid_is_refused_before_anything_happens(care: SimCare, iccid: str) -> None:
    with pytest.raises(DomainError) as raised:
        care.replacement.replace(AGENT, USER, iccid)

    assert raised.value.status == 422
    assert raised.value.details[0]["field"] == "new_iccid"
    assert care.world.store.claims.keys() == {ICCID}


def test_a_block_landing_during_the_replacement_is_kept(care: SimCare) -> None:
    care.world.add_line(reasons={R.LOST_SIM})
    care.world.store.before_save = lambda: care.world.service.block(AGENT, USER, R.AGENT)

    result = care.replacement.replace(AGENT, USER, NEW_ICCID)

    assert result.block_reasons == [R.AGENT]
    state = care.world.state()
    assert (state.iccid, state.reasons) == (NEW_ICCID, frozenset({R.AGENT}))
    assert care.network.profile_of() == BARRED


def test_of_two_racing_replacements_the_first_to_commit_wins_on_the_network_too(
    care: SimCare,
) -> None:
    # Our order reaches the network after the other replacement committed.
    care.network.during_provision = lambda: care.replacement.replace(ADMIN, USER, OTHER_ICCID)

    with pytest.raises(DomainError) as raised:
        care.replacement.replace(AGENT, USER, NEW_ICCID)

    assert raised.value.code == "CONCURRENT_MODIFICATION"
    assert care.world.state().iccid == OTHER_ICCID
    assert care.network.sims[MSISDN] == OTHER_ICCID
    assert NEW_ICCID not in care.world.store.claims
    assert care.world.store.claims[OTHER_ICCID] == IccidClaim(USER, "IN_USE")


def test_a_twin_request_racing_the_same_replacement_changes_nothing_twice(
    care: SimCare,
) -> None:
    care.world.add_line(reasons={R.LOST_SIM})
    twin: list[SimReplacementResult] = []
    care.network.during_provision = lambda: twin.append(
        care.replacement.replace(AGENT, USER, NEW_ICCID)
    )

    ours = care.replacement.replace(AGENT, USER, NEW_ICCID)

    assert twin[0].changed
    assert not ours.changed
    assert (ours.iccid, ours.status) == ("XXXXXXXXXXXXXXX0127", SubscriberStatus.ACTIVE)
    assert care.world.store.claims[NEW_ICCID] == IccidClaim(USER, "IN_USE")
    assert len(care.world.store.entries()) == 1
    assert len(care.world.events.of_type("SimReplaced")) == 1
