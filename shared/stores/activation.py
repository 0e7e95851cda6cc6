"""Activation items in the single table and the repository behind
:class:`shared.services.activation.ActivationStore`.

| item | PK | SK |
|---|---|---|
| activation (status + history) | ``ACT#<activation_id>`` | ``ACT`` |
| ICCID claim | ``ICCID#<iccid>`` | ``ICCID`` |
| POS receipt of the first prepaid plan | ``USER#<user_id>`` | ``POS#<activation_id>`` |

plus the profile (``USER#<id>/PROFILE``) and the MSISDN index of shared.db.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.transactions import TransactWrite

from shared.db import (
    Item,
    MsisdnItem,
    SubscriberItem,
    _apply_wallet_delta,
    _transaction,
    connection,
    user_pk,
)
from shared.errors import (
    ActivationNotFound,
    ConcurrentModification,
    DuplicateIccid,
    DuplicateMsisdn,
    UserNotFound,
)
from shared.kyc import SealedKyc
from shared.models import Subscriber, SubscriberStatus, SubscriberType
from shared.services.activation import (
    Activation,
    ActivationStatus,
    HistoryEntry,
)
from shared.validation import mask

ACTIVATION_SK = "ACT"
ICCID_SK = "ICCID"


def activation_pk(activation_id: str) -> str:
    return f"ACT#{activation_id}"


def iccid_pk(iccid: str) -> str:
    return f"ICCID#{iccid}"


def msisdn_pk(msisdn: str) -> str:
    return f"MSISDN#{msisdn}"


class HistoryAttribute(MapAttribute[str, Any]):
    at = UTCDateTimeAttribute()
    step = UnicodeAttribute()
    outcome = UnicodeAttribute()
    detail = UnicodeAttribute(default="{}")  # JSON: details vary by step


class ActivationItem(Item):
    activation_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    status = UnicodeAttribute()
    msisdn = UnicodeAttribute()
    iccid = UnicodeAttribute()
    subscriber_type = UnicodeAttribute()
    plan_id = UnicodeAttribute(null=True)
    kyc_masked = UnicodeAttribute()
    request_fingerprint = UnicodeAttribute()
    workflow_started = BooleanAttribute(default=False)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    history = ListAttribute(of=HistoryAttribute, default=list)

    def to_domain(self) -> Activation:
        return Activation(
            activation_id=self.activation_id,
            user_id=self.user_id,
            status=ActivationStatus(self.status),
            msisdn=self.msisdn,
            iccid=self.iccid,
            subscriber_type=SubscriberType(self.subscriber_type),
            plan_id=self.plan_id,
            kyc_masked=self.kyc_masked,
            request_fingerprint=self.request_fingerprint,
            workflow_started=bool(self.workflow_started),
            created_at=self.created_at,
            updated_at=self.updated_at,
            history=[_entry_from(raw) for raw in self.history or []],
        )


class IccidClaimItem(Item):
    user_id = UnicodeAttribute()
    activation_id = UnicodeAttribute()
    # Absent = in use since activation. SIM replacement (issue 7): PENDING_REPLACEMENT
    # while the new SIM is provisioned, IN_USE once swapped, RETIRED for the old SIM
    # (a lost or stolen card is never issued again).
    claim_status = UnicodeAttribute(null=True)


class PosReceiptItem(Item):
    activation_id = UnicodeAttribute()
    amount_paise = NumberAttribute()
    captured_at = UTCDateTimeAttribute()


def _history_attribute(entry: HistoryEntry) -> HistoryAttribute:
    return HistoryAttribute(  # type: ignore[no-untyped-call]
        at=entry.at,
        step=entry.step.value,
        outcome=entry.outcome.value,
        detail=json.dumps(entry.detail, default=str, sort_keys=True),
    )


def _entry_from(raw: HistoryAttribute) -> HistoryEntry:
    return HistoryEntry.model_validate(
        {"at": raw.at, "step": raw.step, "outcome": raw.outcome, "detail": json.loads(raw.detail)}
    )


class _AlreadyCaptured(Exception):
    """The POS receipt exists: this payment was captured before."""


class DynamoActivationStore:
    """Implements :class:`shared.services.activation.ActivationStore`."""

    def create(self, activation: Activation, subscriber: Subscriber, kyc: SealedKyc) -> None:
        profile = SubscriberItem.from_domain(subscriber)
        profile.kyc = kyc.model_dump_json()
        claim = IccidClaimItem(
            pk=iccid_pk(activation.iccid),
            sk=ICCID_SK,
            entity="ICCID",
            user_id=activation.user_id,
            activation_id=activation.activation_id,
        )
        number = MsisdnItem(
            pk=msisdn_pk(activation.msisdn),
            sk="MSISDN",
            entity="MSISDN",
            user_id=activation.user_id,
        )
        duplicate_iccid = DuplicateIccid(f"ICCID {mask(activation.iccid)} is already in use")
        duplicate_msisdn = DuplicateMsisdn(f"MSISDN {activation.msisdn} is already in use")
        with _transaction(
            slot_error=duplicate_iccid, debits_wallet=False, item_errors={1: duplicate_msisdn}
        ) as tx:
            tx.save(claim, condition=IccidClaimItem.pk.does_not_exist())
            tx.save(number, condition=MsisdnItem.pk.does_not_exist())
            tx.save(profile, condition=SubscriberItem.pk.does_not_exist())
            tx.save(self._item(activation), condition=ActivationItem.pk.does_not_exist())

    def get(self, activation_id: str) -> Activation:
        try:
            item = ActivationItem.get(
                activation_pk(activation_id), ACTIVATION_SK, consistent_read=True
            )
        except ActivationItem.DoesNotExist:
            raise ActivationNotFound(f"no activation {activation_id!r}") from None
        return item.to_domain()

    def activation_for_iccid(self, iccid: str) -> Activation | None:
        try:
            claim = IccidClaimItem.get(iccid_pk(iccid), ICCID_SK, consistent_read=True)
        except IccidClaimItem.DoesNotExist:
            return None
        return self.get(claim.activation_id)

    def record(
        self,
        activation_id: str,
        entry: HistoryEntry,
        *,
        status: ActivationStatus | None = None,
        workflow_started: bool | None = None,
    ) -> None:
        item = ActivationItem(pk=activation_pk(activation_id), sk=ACTIVATION_SK)
        item.update(
            actions=self._record_actions(entry, status, workflow_started),
            condition=ActivationItem.pk.exists(),
        )

    def get_subscriber(self, user_id: str) -> Subscriber:
        return self._profile(user_id).to_domain()

    def get_profile(self, user_id: str) -> tuple[Subscriber, SealedKyc | None]:
        item = self._profile(user_id)
        kyc = SealedKyc.model_validate_json(item.kyc) if item.kyc else None
        return item.to_domain(), kyc

    def sealed_kyc(self, user_id: str) -> SealedKyc:
        _, kyc = self.get_profile(user_id)
        if kyc is None:
            raise UserNotFound(f"subscriber {user_id!r} has no KYC record")
        return kyc

    def set_subscriber_status(self, user_id: str, status: SubscriberStatus) -> None:
        profile = self._profile(user_id)
        if profile.status == status.value:
            return
        try:
            profile.update(actions=[SubscriberItem.status.set(status.value)])
        except Exception as error:  # the version moved: let the workflow retry
            raise ConcurrentModification("the profile changed meanwhile") from error

    def reject(self, activation: Activation, entry: HistoryEntry) -> None:
        profile = self._profile(activation.user_id)
        item = ActivationItem(pk=activation_pk(activation.activation_id), sk=ACTIVATION_SK)
        owner = activation.user_id
        with TransactWrite(connection=connection()) as tx:
            tx.update(
                item,
                actions=self._record_actions(entry, ActivationStatus.KYC_REJECTED, None),
                condition=ActivationItem.pk.exists(),
            )
            tx.update(
                profile, actions=[SubscriberItem.status.set(SubscriberStatus.KYC_REJECTED.value)]
            )
            tx.delete(
                IccidClaimItem(pk=iccid_pk(activation.iccid), sk=ICCID_SK),
                condition=IccidClaimItem.user_id == owner,
            )
            tx.delete(
                MsisdnItem(pk=msisdn_pk(activation.msisdn), sk="MSISDN"),
                condition=MsisdnItem.user_id == owner,
            )

    def capture_pos_payment(self, user_id: str, activation_id: str, amount_paise: int) -> bool:
        receipt = PosReceiptItem(
            pk=user_pk(user_id),
            sk=f"POS#{activation_id}",
            entity="POS_PAYMENT",
            activation_id=activation_id,
            amount_paise=amount_paise,
            captured_at=datetime.now(UTC),
        )
        try:
            with _transaction(slot_error=_AlreadyCaptured(), debits_wallet=False) as tx:
                tx.save(receipt, condition=PosReceiptItem.pk.does_not_exist())
                _apply_wallet_delta(tx, user_id, amount_paise)
        except _AlreadyCaptured:
            return False
        return True

    # --- helpers -------------------------------------------------------------

    @staticmethod
    def _profile(user_id: str) -> SubscriberItem:
        try:
            return SubscriberItem.get(user_pk(user_id), "PROFILE", consistent_read=True)
        except SubscriberItem.DoesNotExist:
            raise UserNotFound(f"no subscriber {user_id!r}") from None

    @staticmethod
    def _record_actions(
        entry: HistoryEntry, status: ActivationStatus | None, workflow_started: bool | None
    ) -> list[Any]:
        actions: list[Any] = [
            ActivationItem.history.set(ActivationItem.history.append([_history_attribute(entry)])),
            ActivationItem.updated_at.set(entry.at),
        ]
        if status is not None:
            actions.append(ActivationItem.status.set(status.value))
        if workflow_started is not None:
            actions.append(ActivationItem.workflow_started.set(workflow_started))
        return actions

    @staticmethod
    def _item(activation: Activation) -> ActivationItem:
        return ActivationItem(
            pk=activation_pk(activation.activation_id),
            sk=ACTIVATION_SK,
            entity="ACTIVATION",
            activation_id=activation.activation_id,
            user_id=activation.user_id,
            status=activation.status.value,
            msisdn=activation.msisdn,
            iccid=activation.iccid,
            subscriber_type=activation.subscriber_type.value,
            plan_id=activation.plan_id,
            kyc_masked=activation.kyc_masked,
            request_fingerprint=activation.request_fingerprint,
            workflow_started=activation.workflow_started,
            created_at=activation.created_at,
            updated_at=activation.updated_at,
            history=[_history_attribute(entry) for entry in activation.history],
        )
