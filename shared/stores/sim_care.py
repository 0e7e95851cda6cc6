"""The ICCID claims of a SIM replacement (issue 7): the adapter behind
:class:`shared.services.sim_care.SimClaims`.

A replacement claims ``ICCID#<iccid>/ICCID`` (the activation's claim item) as
PENDING_REPLACEMENT while the new SIM is provisioned; the service-control
store's SimSwap guard then sets it IN_USE and retires the old SIM's claim in the
profile's transaction (shared/stores/service_control.py).
"""

from __future__ import annotations

from pynamodb.exceptions import DeleteError, PutError

from shared.db import CONDITION_FAILED
from shared.errors import DuplicateIccid
from shared.stores.activation import ICCID_SK, IccidClaimItem, iccid_pk
from shared.stores.service_control import PENDING_REPLACEMENT
from shared.validation import mask

# What the claim's activation_id says when no activation made it.
REPLACEMENT_ACTIVATION = "SIM-REPLACEMENT"


class DynamoSimClaims:
    def claim(self, user_id: str, iccid: str) -> None:
        ours = (IccidClaimItem.user_id == user_id) & (
            IccidClaimItem.claim_status == PENDING_REPLACEMENT
        )
        item = IccidClaimItem(
            iccid_pk(iccid),
            ICCID_SK,
            entity="ICCID",
            user_id=user_id,
            activation_id=REPLACEMENT_ACTIVATION,
            claim_status=PENDING_REPLACEMENT,
        )
        try:
            item.save(condition=IccidClaimItem.pk.does_not_exist() | ours)
        except PutError as error:
            if error.cause_response_code == CONDITION_FAILED:
                raise DuplicateIccid(f"ICCID {mask(iccid)} is already in use") from None
            raise

    def release(self, user_id: str, iccid: str) -> None:
        item = IccidClaimItem(iccid_pk(iccid), ICCID_SK)
        try:
            item.delete(
                condition=(IccidClaimItem.user_id == user_id)
                & (IccidClaimItem.claim_status == PENDING_REPLACEMENT)
            )
        except DeleteError as error:
            if error.cause_response_code != CONDITION_FAILED:
                raise
