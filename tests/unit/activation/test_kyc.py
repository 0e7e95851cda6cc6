"""KYC envelope encryption against moto's KMS (in-process, no network)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Mapping

import boto3
import pytest
from moto import mock_aws

from shared.kyc import (
    KeyService,
    KmsKeyService,
    KycSealError,
    KycType,
    SealedKyc,
    kyc_fingerprint,
    open_sealed,
    seal,
)
from shared.validation import verhoeff_check_digit

REGION = "ap-south-1"
# An Aadhaar built from an arbitrary body; its digits appear nowhere in moto's
# fixed ids (account 123456789012), so a leak cannot hide behind a coincidence.
AADHAAR = "49182736455" + verhoeff_check_digit("49182736455")
PAN = "ABCPE1234F"
PEPPER = b"p" * 32
OTHER_PEPPER = b"q" * 32
CONTEXT = {"user_id": "U-100", "purpose": "kyc"}


@pytest.fixture
def kms() -> Iterator[tuple[KmsKeyService, str]]:
    with mock_aws():
        client = boto3.client("kms", region_name=REGION)
        key_id = client.create_key(Description="tbcss kyc")["KeyMetadata"]["KeyId"]
        yield KmsKeyService(client), key_id


def seal_aadhaar(
    kms: tuple[KmsKeyService, str],
    number: str = AADHAAR,
    *,
    context: Mapping[str, str] = CONTEXT,
    pepper: bytes = PEPPER,
) -> SealedKyc:
    service, key_id = kms
    return seal(
        KycType.AADHAAR, number, key_service=service, key_id=key_id, context=context, pepper=pepper
    )


def flip_byte(b64: str, index: int = 0) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


class ContextBlindKeys:
    """A key service that ignores the context, to prove GCM's AAD binding on its own."""

    def __init__(self) -> None:
        self._key = os.urandom(32)

    # Both methods ignore their arguments on purpose: that is what makes the fake blind.
    def generate_data_key(
        self,
        key_id: str,  # noqa: ARG002
        context: Mapping[str, str],  # noqa: ARG002
    ) -> tuple[bytes, bytes]:
        return self._key, b"wrapped"

    def decrypt_data_key(
        self,
        encrypted_key: bytes,  # noqa: ARG002
        context: Mapping[str, str],  # noqa: ARG002
        *,
        key_id: str | None = None,  # noqa: ARG002
    ) -> bytes:
        return self._key


def test_fake_satisfies_the_port() -> None:
    keys: KeyService = ContextBlindKeys()
    assert keys.decrypt_data_key(b"", {}) == keys.generate_data_key("k", {})[0]


def test_round_trip_aadhaar(kms: tuple[KmsKeyService, str]) -> None:
    sealed = seal_aadhaar(kms, "4918 2736 4553")
    assert open_sealed(sealed, key_service=kms[0]) == AADHAAR
    assert open_sealed(sealed, key_service=kms[0], expected_context=dict(CONTEXT)) == AADHAAR


def test_round_trip_pan(kms: tuple[KmsKeyService, str]) -> None:
    service, key_id = kms
    sealed = seal(
        KycType.PAN,
        "abcpe1234f",
        key_service=service,
        key_id=key_id,
        context=CONTEXT,
        pepper=PEPPER,
    )
    assert open_sealed(sealed, key_service=service) == PAN
    assert sealed.masked == "XXXXXX234F"


def test_sealed_record_shape(kms: tuple[KmsKeyService, str]) -> None:
    sealed = seal_aadhaar(kms)
    assert sealed.kyc_type is KycType.AADHAAR
    assert sealed.algorithm == "AES-256-GCM"
    assert sealed.key_id == kms[1]
    assert sealed.encryption_context == CONTEXT
    assert sealed.masked == "XXXXXXXX" + AADHAAR[-4:]
    assert len(base64.b64decode(sealed.nonce)) == 12
    # 12 plaintext bytes + the 16-byte GCM tag.
    assert len(base64.b64decode(sealed.ciphertext)) == 12 + 16
    assert len(sealed.fingerprint) == 64
    # The stored record survives a JSON round trip (it is what goes to DynamoDB).
    assert SealedKyc.model_validate_json(sealed.model_dump_json()) == sealed


def test_sealed_record_contains_no_plaintext_digits(kms: tuple[KmsKeyService, str]) -> None:
    document = seal_aadhaar(kms).model_dump_json()
    assert AADHAAR not in document
    assert AADHAAR[-8:] not in document
    assert AADHAAR[:8] not in document
    # Also not in any decoded binary field (e.g. a data key wrapped in the clear).
    for field in ("ciphertext", "nonce", "encrypted_data_key"):
        raw = base64.b64decode(json.loads(document)[field])
        assert AADHAAR.encode() not in raw
        assert AADHAAR[-8:].encode() not in raw


def test_the_plaintext_data_key_is_not_stored(kms: tuple[KmsKeyService, str]) -> None:
    sealed = seal_aadhaar(kms)
    wrapped = base64.b64decode(sealed.encrypted_data_key)
    plaintext_key = kms[0].decrypt_data_key(wrapped, CONTEXT)
    assert len(plaintext_key) == 32
    assert base64.b64encode(plaintext_key).decode() not in sealed.model_dump_json()
    assert plaintext_key not in wrapped


def test_a_different_context_does_not_open(kms: tuple[KmsKeyService, str]) -> None:
    sealed = seal_aadhaar(kms)
    moved = sealed.model_copy(update={"encryption_context": {**CONTEXT, "user_id": "U-200"}})
    with pytest.raises(KycSealError):
        open_sealed(moved, key_service=kms[0])


def test_a_record_copied_to_another_subscriber_does_not_open(
    kms: tuple[KmsKeyService, str],
) -> None:
    sealed = seal_aadhaar(kms)  # copied whole, stored context included
    with pytest.raises(KycSealError):
        open_sealed(sealed, key_service=kms[0], expected_context={**CONTEXT, "user_id": "U-200"})


def test_gcm_binds_the_context_even_if_the_key_service_does_not() -> None:
    keys = ContextBlindKeys()
    sealed = seal(
        KycType.AADHAAR, AADHAAR, key_service=keys, key_id="k", context=CONTEXT, pepper=PEPPER
    )
    assert open_sealed(sealed, key_service=keys) == AADHAAR
    with pytest.raises(KycSealError, match="authentication"):
        open_sealed(sealed, key_service=keys, expected_context={"user_id": "U-200"})
    relabelled = sealed.model_copy(update={"kyc_type": KycType.PAN})
    with pytest.raises(KycSealError, match="authentication"):
        open_sealed(relabelled, key_service=keys)


@pytest.mark.parametrize("field", ["ciphertext", "nonce"])
def test_tampering_does_not_open(kms: tuple[KmsKeyService, str], field: str) -> None:
    sealed = seal_aadhaar(kms)
    tampered = sealed.model_copy(update={field: flip_byte(getattr(sealed, field))})
    with pytest.raises(KycSealError, match="authentication"):
        open_sealed(tampered, key_service=kms[0])


def test_a_tampered_data_key_does_not_open(kms: tuple[KmsKeyService, str]) -> None:
    sealed = seal_aadhaar(kms)
    # The last byte: the wrapped key's own ciphertext. (The first bytes of a
    # moto blob name the KMS key, and an unknown key is AccessDenied, which is an
    # operational error and rightly not reported as tampering.)
    tampered = sealed.model_copy(
        update={"encrypted_data_key": flip_byte(sealed.encrypted_data_key, -1)}
    )
    with pytest.raises(KycSealError):
        open_sealed(tampered, key_service=kms[0])


def test_truncated_ciphertext_does_not_open(kms: tuple[KmsKeyService, str]) -> None:
    sealed = seal_aadhaar(kms)
    raw = base64.b64decode(sealed.ciphertext)
    truncated = sealed.model_copy(update={"ciphertext": base64.b64encode(raw[:-1]).decode()})
    with pytest.raises(KycSealError):
        open_sealed(truncated, key_service=kms[0])


def test_garbage_base64_does_not_open(kms: tuple[KmsKeyService, str]) -> None:
    sealed = seal_aadhaar(kms).model_copy(update={"nonce": "not base64!"})
    with pytest.raises(KycSealError, match="base64"):
        open_sealed(sealed, key_service=kms[0])


def test_two_seals_differ_but_share_the_fingerprint(kms: tuple[KmsKeyService, str]) -> None:
    first = seal_aadhaar(kms)
    second = seal_aadhaar(kms, "4918 2736 4553")
    assert first.ciphertext != second.ciphertext
    assert first.nonce != second.nonce
    assert first.encrypted_data_key != second.encrypted_data_key
    assert first.fingerprint == second.fingerprint


def test_fingerprint_ignores_the_subscriber(kms: tuple[KmsKeyService, str]) -> None:
    # Dedup across subscribers: a different context must not change the fingerprint.
    other = seal_aadhaar(kms, context={"user_id": "U-200"})
    assert other.fingerprint == seal_aadhaar(kms).fingerprint


def test_a_different_pepper_gives_a_different_fingerprint(kms: tuple[KmsKeyService, str]) -> None:
    assert (
        seal_aadhaar(kms, pepper=OTHER_PEPPER).fingerprint
        != seal_aadhaar(kms, pepper=PEPPER).fingerprint
    )


def test_fingerprint_is_not_a_plain_hash() -> None:
    fingerprint = kyc_fingerprint(KycType.AADHAAR, AADHAAR, pepper=PEPPER)
    assert fingerprint != hashlib.sha256(AADHAAR.encode()).hexdigest()
    assert fingerprint != hashlib.sha256(f"AADHAAR:{AADHAAR}".encode()).hexdigest()


def test_fingerprint_format_is_pinned() -> None:
    # Stored fingerprints are compared across releases: the message format
    # ("<TYPE>:<normalized number>") must never drift.
    expected = hmac.new(PEPPER, f"AADHAAR:{AADHAAR}".encode(), hashlib.sha256).hexdigest()
    assert kyc_fingerprint(KycType.AADHAAR, "4918 2736 4553", pepper=PEPPER) == expected
    pan = hmac.new(PEPPER, f"PAN:{PAN}".encode(), hashlib.sha256).hexdigest()
    assert kyc_fingerprint(KycType.PAN, "abcpe1234f", pepper=PEPPER) == pan


def test_short_pepper_is_refused(kms: tuple[KmsKeyService, str]) -> None:
    with pytest.raises(ValueError, match="pepper"):
        seal_aadhaar(kms, pepper=b"short")


def test_invalid_numbers_are_not_sealed(kms: tuple[KmsKeyService, str]) -> None:
    with pytest.raises(ValueError, match="Verhoeff"):
        seal_aadhaar(kms, AADHAAR[:-1] + str((int(AADHAAR[-1]) + 1) % 10))
    service, key_id = kms
    with pytest.raises(ValueError, match="individual"):
        seal(
            KycType.PAN,
            "ABCCE1234F",
            key_service=service,
            key_id=key_id,
            context=CONTEXT,
            pepper=PEPPER,
        )


def test_empty_context_is_refused(kms: tuple[KmsKeyService, str]) -> None:
    with pytest.raises(ValueError, match="context"):
        seal_aadhaar(kms, context={})
