"""KYC identifiers at rest: envelope encryption plus a blind fingerprint.

Sealing an Aadhaar or PAN number (DESIGN.md section 8):

1. KMS generates a fresh AES-256 data key for this one record, returning it
   in plaintext and encrypted under the KMS key, both bound to the caller's
   encryption context (e.g. ``{"user_id": "..."}``).
2. The number is encrypted locally with AES-256-GCM under the plaintext data
   key, a random 96-bit nonce and, as additional authenticated data, the same
   encryption context. Moving a sealed record to another subscriber therefore
   fails twice: KMS refuses to decrypt the data key under the other context,
   and GCM refuses the ciphertext.
3. Only the encrypted data key is stored; the plaintext key goes out of scope
   as soon as the cipher is built. (CPython cannot wipe immutable ``bytes``;
   the guarantee is that nothing keeps or logs a reference to it.)

The fingerprint is what lets activation refuse one Aadhaar across too many
subscribers without decrypting anything: an HMAC-SHA256 of the normalized
number under a secret pepper. A plain SHA-256 would not do: there are fewer
than 10^11 valid Aadhaar numbers and about as many individual PANs (some 10^9
once the surname initial is known), so anyone holding the table could hash them
all in minutes on one GPU and read every number back. With HMAC, that attack
needs the pepper too, which lives in Secrets Manager, outside the table and
outside the KMS key's reach. Rotating the pepper means recomputing every
fingerprint (or keeping a pepper version next to them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Literal, Protocol

from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field

from shared.validation import mask, normalize_aadhaar, normalize_pan

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

ALGORITHM: Final = "AES-256-GCM"
DATA_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits: GCM's native nonce size, safe to draw at random per record
MIN_PEPPER_BYTES = 32  # as long as the HMAC-SHA256 output: no shortcut by guessing the pepper
MASK_VISIBLE = 4


class KycType(StrEnum):
    AADHAAR = "AADHAAR"
    PAN = "PAN"


class KycSealError(Exception):
    """A sealed KYC record cannot be opened: wrong context, wrong key, or tampered."""


class KeyService(Protocol):
    """The port to a key-management service that issues envelope data keys."""

    def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        """A new AES-256 key as ``(plaintext_key, encrypted_key)``, bound to ``context``."""
        ...

    def decrypt_data_key(
        self, encrypted_key: bytes, context: Mapping[str, str], *, key_id: str | None = None
    ) -> bytes:
        """The plaintext of a data key; raises :class:`KycSealError` if it will not open."""
        ...


class KmsKeyService:
    """:class:`KeyService` over AWS KMS (or anything speaking its API, e.g. moto)."""

    def __init__(self, client: KMSClient) -> None:
        self._client = client

    def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        response = self._client.generate_data_key(
            KeyId=key_id, KeySpec="AES_256", EncryptionContext=dict(context)
        )
        return response["Plaintext"], response["CiphertextBlob"]

    def decrypt_data_key(
        self, encrypted_key: bytes, context: Mapping[str, str], *, key_id: str | None = None
    ) -> bytes:
        try:
            if key_id is None:
                response = self._client.decrypt(
                    CiphertextBlob=encrypted_key, EncryptionContext=dict(context)
                )
            else:
                # Naming the key stops a forged record from steering us to another key.
                response = self._client.decrypt(
                    CiphertextBlob=encrypted_key, EncryptionContext=dict(context), KeyId=key_id
                )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in {"InvalidCiphertextException", "IncorrectKeyException"}:
                raise KycSealError("KMS refused the data key for this context") from error
            raise
        return response["Plaintext"]


class SealedKyc(BaseModel):
    """A KYC number as it is stored: ciphertext, wrapped key and what binds them.

    Binary fields are standard base64 so the record is plain JSON / DynamoDB strings.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kyc_type: KycType
    ciphertext: str = Field(description="base64 AES-256-GCM ciphertext with its 16-byte tag")
    nonce: str = Field(description="base64 96-bit GCM nonce")
    encrypted_data_key: str = Field(description="base64 data key as wrapped by KMS")
    key_id: str = Field(description="the KMS key that wrapped the data key")
    encryption_context: dict[str, str]
    algorithm: Literal["AES-256-GCM"] = ALGORITHM
    masked: str = Field(description="safe to show: all but the last 4 characters hidden")
    fingerprint: str = Field(description="hex HMAC-SHA256 of the number under the pepper")


def normalize_kyc_number(kyc_type: KycType, number: str) -> str:
    """The canonical number, validated the way subscriber KYC requires (PAN of an individual)."""
    if kyc_type is KycType.AADHAAR:
        return normalize_aadhaar(number)
    return normalize_pan(number)


def kyc_fingerprint(kyc_type: KycType, number: str, *, pepper: bytes) -> str:
    """Deterministic, non-reversible lookup key for de-duplicating KYC across subscribers.

    The type is part of the message so an Aadhaar and a PAN can never collide.
    """
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ValueError(f"pepper must be at least {MIN_PEPPER_BYTES} random bytes")
    message = f"{kyc_type.value}:{normalize_kyc_number(kyc_type, number)}".encode()
    return hmac.new(pepper, message, hashlib.sha256).hexdigest()


def _associated_data(kyc_type: KycType, context: Mapping[str, str]) -> bytes:
    """Canonical bytes GCM authenticates alongside the ciphertext.

    Sorted-key JSON, so the same context always gives the same bytes; the type
    and algorithm are in it too so neither can be relabelled in storage.
    """
    bound = {"algorithm": ALGORITHM, "context": dict(context), "kyc_type": kyc_type.value}
    return json.dumps(bound, sort_keys=True, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as error:
        raise KycSealError(f"{field} is not valid base64") from error


def _encrypt(
    plaintext: bytes,
    *,
    key_service: KeyService,
    key_id: str,
    associated_data: bytes,
    context: Mapping[str, str],
) -> tuple[bytes, bytes, bytes]:
    """``(ciphertext, nonce, encrypted_data_key)``; the plaintext data key dies here."""
    data_key, encrypted_data_key = key_service.generate_data_key(key_id, context)
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError("the key service must issue 256-bit data keys")
    cipher = AESGCM(data_key)
    del data_key
    nonce = os.urandom(NONCE_BYTES)
    return cipher.encrypt(nonce, plaintext, associated_data), nonce, encrypted_data_key


def seal(
    kyc_type: KycType,
    number: str,
    *,
    key_service: KeyService,
    key_id: str,
    context: Mapping[str, str],
    pepper: bytes,
) -> SealedKyc:
    """Validate, normalize and encrypt a KYC number for storage.

    ``context`` should name the record's owner (e.g. ``{"user_id": ...}``): it
    must be non-empty, because it is what ties the ciphertext to one subscriber.
    """
    if not context:
        raise ValueError("encryption context must not be empty: it binds the record to its owner")
    kyc_type = KycType(kyc_type)
    normalized = normalize_kyc_number(kyc_type, number)
    ciphertext, nonce, encrypted_data_key = _encrypt(
        normalized.encode(),
        key_service=key_service,
        key_id=key_id,
        associated_data=_associated_data(kyc_type, context),
        context=context,
    )
    return SealedKyc(
        kyc_type=kyc_type,
        ciphertext=_b64(ciphertext),
        nonce=_b64(nonce),
        encrypted_data_key=_b64(encrypted_data_key),
        key_id=key_id,
        encryption_context=dict(context),
        masked=mask(normalized, MASK_VISIBLE),
        fingerprint=kyc_fingerprint(kyc_type, normalized, pepper=pepper),
    )


def open_sealed(
    sealed: SealedKyc,
    *,
    key_service: KeyService,
    expected_context: Mapping[str, str] | None = None,
) -> str:
    """The normalized KYC number inside ``sealed``.

    Pass ``expected_context`` rebuilt from where the record was read (the
    profile's own user_id): only then does a record copied from another
    subscriber, context and all, fail to open. Without it the record's stored
    context is used, which still catches tampering but not a wholesale copy.
    Raises :class:`KycSealError` when the record will not open.
    """
    context = sealed.encryption_context if expected_context is None else expected_context
    data_key = key_service.decrypt_data_key(
        _unb64(sealed.encrypted_data_key, "encrypted_data_key"), context, key_id=sealed.key_id
    )
    cipher = AESGCM(data_key)
    del data_key
    try:
        plaintext = cipher.decrypt(
            _unb64(sealed.nonce, "nonce"),
            _unb64(sealed.ciphertext, "ciphertext"),
            _associated_data(sealed.kyc_type, context),
        )
    except InvalidTag as error:
        raise KycSealError("KYC ciphertext failed authentication") from error
    return plaintext.decode()
