#!/usr/bin/env python3
"""The real AWS Encryption SDK (Python) on the other side of strongroom's
ESDK tests (tests/esdk_python.rs).

Reads one JSON job on stdin, writes one JSON answer on stdout. Jobs:

  {"op": "encrypt", "key": b64, "namespace": str, "name": str,
   "context": {...}, "cases": [{"suite": int, "frame_len": int, "plaintext": b64}]}
      -> {"sdk": version, "results": [{"ciphertext": b64}]}
  {"op": "decrypt", "key", "namespace", "name",
   "cases": [{"ciphertext": b64}]}
      -> {"sdk": version, "results": [{"ok": bool, "plaintext": b64,
           "context": {...}, "suite": int, "frame_len": int, "error": str}]}
  {"op": "bench", "key", "namespace", "name", "context", "sizes": [int],
   "suites": [int], "seconds": float}
      -> {"sdk": version, "results": [{"suite", "size", "op", "per_op_us",
           "mib_per_s"}]}

The wrapping key is the raw AES keyring (RawMasterKey, AES-256-GCM, IV 12,
tag 16) under the given namespace (provider id) and name (key id).
"""
import base64
import json
import sys
import time

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import (
    Algorithm,
    CommitmentPolicy,
    EncryptionKeyType,
    WrappingAlgorithm,
)
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey


def master_key(job):
    return RawMasterKey(
        provider_id=job["namespace"],
        key_id=job["name"].encode("utf-8"),
        wrapping_key=WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=base64.b64decode(job["key"]),
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        ),
    )


def client_for(suite_id):
    # Committing suites under the strictest policy; legacy (v1) suites can
    # only be written under FORBID_ENCRYPT (used to make frozen vectors).
    if suite_id in (0x0478, 0x0578):
        policy = CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    else:
        policy = CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT
    return aws_encryption_sdk.EncryptionSDKClient(commitment_policy=policy)


def encrypt(job):
    mk = master_key(job)
    out = []
    for case in job["cases"]:
        suite = case["suite"]
        ct, header = client_for(suite).encrypt(
            source=base64.b64decode(case["plaintext"]),
            key_provider=mk,
            encryption_context=job["context"],
            algorithm=Algorithm.get_by_id(suite),
            frame_length=case["frame_len"],
        )
        assert header.algorithm.algorithm_id == suite
        out.append({"ciphertext": base64.b64encode(ct).decode()})
    return out


def decrypt(job):
    mk = master_key(job)
    # Strict: only committing suites decrypt.
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    out = []
    for case in job["cases"]:
        try:
            pt, header = client.decrypt(source=base64.b64decode(case["ciphertext"]), key_provider=mk)
            out.append(
                {
                    "ok": True,
                    "plaintext": base64.b64encode(pt).decode(),
                    "context": dict(header.encryption_context),
                    "suite": header.algorithm.algorithm_id,
                    "frame_len": header.frame_length,
                }
            )
        except Exception as e:  # noqa: BLE001 - reported to the Rust side
            out.append({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
    return out


def bench(job):
    mk = master_key(job)
    out = []
    for suite in job["suites"]:
        client = client_for(suite)
        for size in job["sizes"]:
            data = bytes((i * 31 + 7) % 251 for i in range(size))
            ct = None
            for op in ("encrypt", "decrypt"):
                n = 0
                start = time.perf_counter()
                while True:
                    if op == "encrypt":
                        ct, _ = client.encrypt(
                            source=data,
                            key_provider=mk,
                            encryption_context=job["context"],
                            algorithm=Algorithm.get_by_id(suite),
                            frame_length=job.get("frame_len", 4096),
                        )
                    else:
                        pt, _ = client.decrypt(source=ct, key_provider=mk)
                        assert pt == data
                    n += 1
                    elapsed = time.perf_counter() - start
                    if elapsed >= job["seconds"] and n >= 3:
                        break
                per_op = elapsed / n
                out.append(
                    {
                        "suite": suite,
                        "size": size,
                        "op": op,
                        "per_op_us": per_op * 1e6,
                        "mib_per_s": size / per_op / (1 << 20),
                    }
                )
    return out


def main():
    job = json.load(sys.stdin)
    op = job["op"]
    results = {"encrypt": encrypt, "decrypt": decrypt, "bench": bench}[op](job)
    json.dump({"sdk": aws_encryption_sdk.__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
