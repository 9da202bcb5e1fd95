#!/usr/bin/env python3
"""Makes tests/vectors/esdk/python-<version>.json with the real AWS
Encryption SDK for Python. Run once, with the pinned SDK:

    eval "$(.ci/esdk-setup)"
    "$STRONGROOM_ESDK_PYTHON" tests/vectors/esdk/make_vectors.py

The file records the wrapping key, key namespace and name, context,
plaintext and ciphertext of every vector, so tests/esdk.rs checks them
without Python. Never regenerate to make a failing test pass: the vectors
are frozen on purpose.
"""
import base64
import hashlib
import json
import os
import sys

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "esdk"))
import esdk_python  # noqa: E402  (the interop test's helper)

KEY = hashlib.sha256(b"strongroom esdk frozen vectors key").digest()
NAMESPACE = "strongroom-vectors"
NAME = "frozen-key-1"
CONTEXT = {"purpose": "frozen vectors", "tenant": "acme", "z-last": "grüße ✓"}


def data(n):
    return bytes((i * 31 + 7) % 251 for i in range(n))


def main():
    job = {"key": base64.b64encode(KEY).decode(), "namespace": NAMESPACE, "name": NAME}
    mk = esdk_python.master_key(job)
    vectors = []
    plan = []
    for suite in (0x0478, 0x0578):
        for size in (0, 1, 127, 128, 129, 1000):
            plan.append((suite, size, 128, CONTEXT))
        plan.append((suite, 5000, 4096, CONTEXT))
        plan.append((suite, 3, 128, {}))
    for suite in (0x0178, 0x0378):
        plan.append((suite, 300, 128, CONTEXT))
        plan.append((suite, 0, 128, {}))
        plan.append((suite, 300, 0, CONTEXT))  # non-framed body
    for suite, size, frame, ctx in plan:
        pt = data(size)
        policy = (
            CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
            if suite in (0x0478, 0x0578)
            else CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT
        )
        client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=policy)
        ct, header = client.encrypt(
            source=pt,
            key_provider=mk,
            encryption_context=ctx,
            algorithm=Algorithm.get_by_id(suite),
            frame_length=frame,
        )
        check, _ = aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT
        ).decrypt(source=ct, key_provider=mk)
        assert check == pt
        vectors.append(
            {
                "suite": suite,
                "frame_len": frame,
                "context": ctx,
                "plaintext_len": size,
                "plaintext": base64.b64encode(pt).decode(),
                "ciphertext": base64.b64encode(ct).decode(),
            }
        )
    out = {
        "description": "AWS Encryption SDK messages written by the Python SDK with a raw AES "
        "master key (AES-256-GCM, IV 12, tag 16); frozen. Made by make_vectors.py.",
        "sdk": "aws-encryption-sdk (Python) " + aws_encryption_sdk.__version__,
        "key": base64.b64encode(KEY).decode(),
        "key_namespace": NAMESPACE,
        "key_name": NAME,
        "vectors": vectors,
    }
    path = os.path.join(os.path.dirname(__file__), "python-%s.json" % aws_encryption_sdk.__version__)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", path, len(vectors), "vectors")


if __name__ == "__main__":
    main()
