"""In-memory fakes of the activation ports, enforcing the same rules as the
DynamoDB store: the ICCID and MSISDN claims and the new profile are written
together or not at all; a POS payment is captured once per activation."""

from __future__ import annotations

from typing import Any

from shared.errors import ActivationNotFound, DuplicateIccid, DuplicateMsisdn, UserNotFound
from shared.kyc import KycSealError, KycType, SealedKyc
from shared.models import Subscriber, SubscriberStatus
from shared.services.activation import Activation, ActivationStatus, HistoryEntry
from shared.validation import mask
from tests.fakes import InMemorySubscriptionStore


class InMemoryActivationStore:
    def __init__(self, subscriptions: InMemorySubscriptionStore) -> None:
        self.subscriptions = subscriptions  # profiles and wallets live there
        self.activations: dict[str, Activation] = {}
        self.iccids: dict[str, str] = {}  # iccid -> activation id
        self.msisdns: dict[str, str] = {}  # msisdn -> user id
        self.kyc: dict[str, SealedKyc] = {}
        self.pos_receipts: dict[str, int] = {}

    def create(self, activation: Activation, subscriber: Subscriber, kyc: SealedKyc) -> None:
        if activation.iccid in self.iccids:
            raise DuplicateIccid("ICCID in use")
        if activation.msisdn in self.msisdns:
            raise DuplicateMsisdn("MSISDN in use")
        self.iccids[activation.iccid] = activation.activation_id
        self.msisdns[activation.msisdn] = activation.user_id
        self.subscriptions.put_subscriber(subscriber)
        self.kyc[activation.user_id] = kyc
        self.activations[activation.activation_id] = activation

    def get(self, activation_id: str) -> Activation:
        try:
            return self.activations[activation_id]
        except KeyError:
            raise ActivationNotFound(activation_id) from None

    def activation_for_iccid(self, iccid: str) -> Activation | None:
        activation_id = self.iccids.get(iccid)
        return self.activations[activation_id] if activation_id else None

    def record(
        self,
        activation_id: str,
        entry: HistoryEntry,
        *,
        status: ActivationStatus | None = None,
        workflow_started: bool | None = None,
    ) -> None:
        current = self.get(activation_id)
        update: dict[str, Any] = {"history": [*current.history, entry], "updated_at": entry.at}
        if status is not None:
            update["status"] = status
        if workflow_started is not None:
            update["workflow_started"] = workflow_started
        self.activations[activation_id] = current.model_copy(update=update)

    def sealed_kyc(self, user_id: str) -> SealedKyc:
        return self.kyc[user_id]

    def get_profile(self, user_id: str) -> tuple[Subscriber, SealedKyc | None]:
        return self.get_subscriber(user_id), self.kyc.get(user_id)

    def get_subscriber(self, user_id: str) -> Subscriber:
        return self.subscriptions.get_subscriber(user_id)

    def set_subscriber_status(self, user_id: str, status: SubscriberStatus) -> None:
        subscriber = self.get_subscriber(user_id)
        self.subscriptions.put_subscriber(subscriber.model_copy(update={"status": status}))

    def reject(self, activation: Activation, entry: HistoryEntry) -> None:
        self.record(activation.activation_id, entry, status=ActivationStatus.KYC_REJECTED)
        self.set_subscriber_status(activation.user_id, SubscriberStatus.KYC_REJECTED)
        del self.iccids[activation.iccid]
        del self.msisdns[activation.msisdn]

    def capture_pos_payment(self, user_id: str, activation_id: str, amount_paise: int) -> bool:
        if activation_id in self.pos_receipts:
            return False
        if user_id not in self.subscriptions.subscribers:
            raise UserNotFound(user_id)
        self.pos_receipts[activation_id] = amount_paise
        self.subscriptions.credit_wallet(user_id, amount_paise)
        return True


class FakeVault:
    """Seals by masking: enough for the service (which never looks inside)."""

    def __init__(self) -> None:
        self.plain: dict[str, str] = {}  # user id -> number, for open()

    def fingerprint(self, kyc_type: KycType, number: str) -> str:
        return f"fp-{kyc_type.value}-{sum(number.encode())}-{number[-2:]}"

    def seal(self, kyc_type: KycType, number: str, *, user_id: str) -> SealedKyc:
        self.plain[user_id] = number
        return SealedKyc(
            kyc_type=kyc_type,
            ciphertext="Y2lwaGVy",
            nonce="bm9uY2U=",
            encrypted_data_key="a2V5",
            key_id="fake-key",
            encryption_context={"user_id": user_id, "purpose": "kyc"},
            masked=mask(number),
            fingerprint=self.fingerprint(kyc_type, number),
        )

    def open(self, sealed: SealedKyc, *, user_id: str) -> str:
        if sealed.encryption_context["user_id"] != user_id:
            raise KycSealError("another subscriber's record")
        return self.plain[user_id]


class FakeWorkflows:
    def __init__(self) -> None:
        self.started: dict[str, dict[str, str]] = {}
        self.fail_next = False

    def start(self, name: str, payload: dict[str, str]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("Step Functions unreachable")
        existing = self.started.setdefault(name, payload)
        assert existing == payload, "same name, other input: AWS would refuse"


class FakeNotifier:
    def __init__(self) -> None:
        self.sms: list[tuple[str, str]] = []
        self.emails: list[tuple[str, str, str]] = []

    def send_sms(self, e164_number: str, text: str) -> str:
        self.sms.append((e164_number, text))
        return f"sms-{len(self.sms)}"

    def send_email(self, to: str, subject: str, body: str) -> str:
        self.emails.append((to, subject, body))
        return f"email-{len(self.emails)}"


class FakeEscalations:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
