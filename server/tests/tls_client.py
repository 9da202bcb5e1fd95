"""boto3 over HTTPS against strongroom-kms-server (rustls).

Run by server/tests/boto3.rs (test `boto3_tls`), which generates a
self-signed certificate for 127.0.0.1, starts the server with --tls-cert and
--tls-key, and sets KMS_ENDPOINT (https://...), KMS_REGION, KMS_CA (the
certificate), ALICE_AK and ALICE_SK. Asserts a key round trip over TLS with
the certificate trusted, and a refused handshake without it.
"""

import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import SSLError


def client(verify):
    return boto3.client(
        "kms",
        endpoint_url=os.environ["KMS_ENDPOINT"],
        region_name=os.environ["KMS_REGION"],
        aws_access_key_id=os.environ["ALICE_AK"],
        aws_secret_access_key=os.environ["ALICE_SK"],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        verify=verify,
    )


assert os.environ["KMS_ENDPOINT"].startswith("https://")
kms = client(os.environ["KMS_CA"])
key_id = kms.create_key(Description="over tls")["KeyMetadata"]["KeyId"]
# Several calls on the client's pooled (kept-alive) TLS connection.
for i in range(5):
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"secret %d" % i)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret %d" % i
dk = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
assert len(dk["Plaintext"]) == 32
print("ok: round trip over TLS with the test certificate", file=sys.stderr)

# The certificate is not in the system's trust store: the handshake fails
# on the client's side, and no request is sent.
try:
    client(True).list_keys()
except SSLError as e:
    print(f"ok: untrusted certificate refused ({type(e).__name__})", file=sys.stderr)
else:
    raise AssertionError("a self-signed certificate was trusted without KMS_CA")
print("TLS OK")
