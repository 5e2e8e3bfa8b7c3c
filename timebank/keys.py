"""Ed25519 signing keys for district nodes, the clearinghouse and the city root.

A key is its 32-byte seed (PyNaCl has no key-file format); the public key is derived
from it. Storing a seed on disk is the runtime's business (``runtime.keyfiles``).

A *key id* names a public key in envelopes and in the key ring: the lowercase hex of the
first 8 bytes of SHA-256 over the 32 raw public-key bytes, so always 16 hex characters.
It is a name, not a security boundary: the signature is always checked against the full
public key it points to, and the key ring refuses two different keys with one id.
"""

from __future__ import annotations

import hashlib

from nacl.signing import SigningKey

__all__ = [
    "KEY_ID_HEX_LEN",
    "PUBLIC_KEY_LEN",
    "SEED_LEN",
    "SigningKey",
    "generate",
    "key_id",
    "public_key",
]

#: Bytes in an Ed25519 seed (the whole private key as stored on disk).
SEED_LEN = 32
#: Bytes in a raw Ed25519 public key.
PUBLIC_KEY_LEN = 32
#: Hex characters in a key id (8 bytes of SHA-256).
KEY_ID_HEX_LEN = 16


def generate() -> SigningKey:
    """A new random signing key (seed from the operating system's CSPRNG)."""
    return SigningKey.generate()


def public_key(key: SigningKey) -> bytes:
    """The 32 raw public-key bytes of a signing key."""
    return bytes(key.verify_key)


def key_id(public_key: bytes) -> str:
    """Hex of the first 8 bytes of SHA-256 of the 32-byte raw public key (16 hex chars)."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LEN:
        raise ValueError(f"an Ed25519 public key is exactly {PUBLIC_KEY_LEN} bytes")
    return hashlib.sha256(public_key).digest()[: KEY_ID_HEX_LEN // 2].hex()
