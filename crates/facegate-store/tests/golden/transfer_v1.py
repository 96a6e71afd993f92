#!/usr/bin/env python3
"""Golden vector of the facegate-transfer v1 bundle, computed apart from the Rust code.

Run: python3 crates/facegate-store/tests/golden/transfer_v1.py (needs the `cryptography`
package; Debian: python3-cryptography). Its output is pasted into the GOLDEN_* constants of
crates/facegate-store/src/transfer.rs. The layout follows the module docs there:

  terminal id = SHA-256("facegate-terminal-id/v1" || x25519 pub || ed25519 pub)[:16], hex
  AAD = len32("facegate-transfer/v1") || u32 version || transfer id (16) || i64 created_at
        || len32(sender id) || len32(receiver id) || len32(subject) || ephemeral pub (32)
  key = HKDF-SHA256(salt "facegate-transfer/v1", ikm X25519(eph, receiver),
                    info "facegate-transfer/key/v1" || eph pub || receiver pub)
  sealed = AES-256-GCM(key, nonce, payload, AAD)
  signature = Ed25519(sender, len32("facegate-transfer/signature/v1") || len32(AAD)
                      || len32(nonce) || len32(sealed))
"""
import hashlib
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RAW = dict(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)


def len32(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def terminal(agreement: int, seed: int):
    x = X25519PrivateKey.from_private_bytes(bytes([agreement]) * 32)
    e = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    xp = x.public_key().public_bytes(**RAW)
    ep = e.public_key().public_bytes(**RAW)
    tid = hashlib.sha256(b"facegate-terminal-id/v1" + xp + ep).digest()[:16].hex()
    return x, e, xp, tid


_, sender_sign, _, sender_id = terminal(0x11, 0x22)
_, _, receiver_pub, receiver_id = terminal(0x33, 0x44)
eph = X25519PrivateKey.from_private_bytes(bytes([0x55]) * 32)
eph_pub = eph.public_key().public_bytes(**RAW)

aad = (
    len32(b"facegate-transfer/v1")
    + struct.pack(">I", 1)
    + bytes([0x66]) * 16
    + struct.pack(">q", 1_750_000_000_000)
    + len32(sender_id.encode())
    + len32(receiver_id.encode())
    + len32(b"emp-1")
    + eph_pub
)
shared = eph.exchange(X25519PublicKey.from_public_bytes(receiver_pub))
key = HKDF(
    algorithm=hashes.SHA256(),
    length=32,
    salt=b"facegate-transfer/v1",
    info=b"facegate-transfer/key/v1" + eph_pub + receiver_pub,
).derive(shared)
nonce = bytes([0x77]) * 12
sealed = AESGCM(key).encrypt(nonce, b"golden payload", aad)
signature = sender_sign.sign(
    len32(b"facegate-transfer/signature/v1") + len32(aad) + len32(nonce) + len32(sealed)
)

print(f'const GOLDEN_SENDER_ID: &str = "{sender_id}";')
print(f'const GOLDEN_RECEIVER_ID: &str = "{receiver_id}";')
print(f'const GOLDEN_AAD: &str = "{aad.hex()}";')
print(f'const GOLDEN_SEALED: &str = "{sealed.hex()}";')
print(f'const GOLDEN_SIGNATURE: &str = "{signature.hex()}";')
