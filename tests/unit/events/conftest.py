"""Shared fixtures for the event-core tests: the spec appendix signing key."""

from __future__ import annotations

import pytest
from signedjson.key import decode_signing_key_base64, get_verify_key
from signedjson.types import SigningKey, VerifyKey

# The appendix "Cryptographic Test Vectors" seed, server name and key ID.
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SPEC_SERVER = "domain"
SPEC_KEY_ID = "ed25519:1"


@pytest.fixture
def spec_key() -> SigningKey:
    key: SigningKey = decode_signing_key_base64("ed25519", "1", SPEC_SEED)
    return key


@pytest.fixture
def spec_verify_key(spec_key: SigningKey) -> VerifyKey:
    vk: VerifyKey = get_verify_key(spec_key)
    return vk
