"""AWS adapters of the activation ports: the KYC vault (KMS envelope
encryption + a peppered fingerprint), the workflow starter (Step Functions)
and the ops escalation queue (SQS)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared.kyc import KeyService, KycType, SealedKyc, kyc_fingerprint, open_sealed, seal

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

KYC_PURPOSE = "kyc"


def kyc_context(user_id: str) -> dict[str, str]:
    """The KMS encryption context (and GCM associated data) of a subscriber's KYC."""
    return {"user_id": user_id, "purpose": KYC_PURPOSE}


def load_pepper(secrets_client: Any, secret_id: str) -> bytes:
    """The fingerprint pepper from Secrets Manager (read once per container by callers)."""
    value = secrets_client.get_secret_value(SecretId=secret_id)["SecretString"]
    return str(value).encode()


class KmsKycVault:
    """Implements :class:`shared.services.activation.KycVault`."""

    def __init__(self, key_service: KeyService, key_id: str, pepper: bytes) -> None:
        self._keys = key_service
        self._key_id = key_id
        self._pepper = pepper

    def fingerprint(self, kyc_type: KycType, number: str) -> str:
        return kyc_fingerprint(kyc_type, number, pepper=self._pepper)

    def seal(self, kyc_type: KycType, number: str, *, user_id: str) -> SealedKyc:
        return seal(
            kyc_type,
            number,
            key_service=self._keys,
            key_id=self._key_id,
            context=kyc_context(user_id),
            pepper=self._pepper,
        )

    def open(self, sealed: SealedKyc, *, user_id: str) -> str:
        # The context is rebuilt from the profile the record was read from, so a
        # record copied onto another subscriber does not open.
        return open_sealed(sealed, key_service=self._keys, expected_context=kyc_context(user_id))


class StepFunctionsStarter:
    """Implements :class:`shared.services.activation.WorkflowStarter`."""

    def __init__(self, client: SFNClient, state_machine_arn: str) -> None:
        self._client = client
        self._arn = state_machine_arn

    def start(self, name: str, payload: dict[str, str]) -> None:
        try:
            self._client.start_execution(
                stateMachineArn=self._arn, name=name, input=json.dumps(payload, sort_keys=True)
            )
        except self._client.exceptions.ExecutionAlreadyExists:
            # Same name, but the execution already finished: it ran; nothing to redo.
            return


class SqsEscalationQueue:
    """Implements :class:`shared.services.activation.EscalationQueue`."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._url = queue_url

    def send(self, message: dict[str, Any]) -> None:
        self._client.send_message(
            QueueUrl=self._url,
            MessageBody=json.dumps(message, default=str, sort_keys=True),
            MessageAttributes={
                "activation_id": {
                    "DataType": "String",
                    "StringValue": str(message.get("activation_id", "")),
                }
            },
        )
