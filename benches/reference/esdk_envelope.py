"""Seal + open of 1 KiB with the AWS Encryption SDK for Python, raw AES-256
keyring (RawMasterKey), committing suite without signature
(AES_256_GCM_HKDF_SHA512_COMMIT_KEY). Prints the best of three timed loops,
in nanoseconds per seal+open. Used by benches/references.rs; needs the SDK
(.ci/esdk-setup)."""
import sys
import time

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
key = RawMasterKey(
    provider_id="bench",
    key_id=b"bench-key",
    wrapping_key=WrappingKey(
        wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
        wrapping_key=b"\x42" * 32,
        wrapping_key_type=EncryptionKeyType.SYMMETRIC,
    ),
)
client = aws_encryption_sdk.EncryptionSDKClient(
    commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
)
data = b"\x5a" * 1024
ctx = {"bench": "1"}
suite = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY


def once():
    ct, _ = client.encrypt(source=data, key_provider=key, encryption_context=ctx, algorithm=suite)
    pt, _ = client.decrypt(source=ct, key_provider=key)
    return pt


for _ in range(n // 10):
    assert once() == data
best = None
for _ in range(3):
    t = time.perf_counter()
    for _ in range(n):
        once()
    dt = (time.perf_counter() - t) / n
    best = dt if best is None or dt < best else best
print(f"{best * 1e9:.0f}")
