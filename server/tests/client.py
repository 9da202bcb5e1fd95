"""boto3 against strongroom-kms-server, with real SigV4 signing.

Run by server/tests/boto3.rs, which starts the server and sets:
KMS_ENDPOINT, KMS_REGION, KMS_ACCOUNT, and the access keys ALICE_AK/ALICE_SK
(principal user:alice) and BOB_AK/BOB_SK (user:bob). Every check asserts;
the first failure exits non-zero. The last line of stdout is
`LIBRARY <key id> <base64 blob>`: a ciphertext of b"made by the endpoint"
under context {"purpose": "library-check"}, which the Rust test opens with
the library directly.
"""

import base64
import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

EP = os.environ["KMS_ENDPOINT"]
REGION = os.environ["KMS_REGION"]
ACCOUNT = os.environ["KMS_ACCOUNT"]


def client(ak, sk):
    return boto3.client(
        "kms",
        endpoint_url=EP,
        region_name=REGION,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        # Over HTTPS, the test's own certificate (else the system's CAs).
        verify=os.environ.get("KMS_CA") or None,
    )


alice = client(os.environ["ALICE_AK"], os.environ["ALICE_SK"])
bob = client(os.environ["BOB_AK"], os.environ["BOB_SK"])
checks = []


def check(name):
    checks.append(name)
    print(f"ok: {name}", file=sys.stderr)


def expect_error(code, fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {e}"
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response
        return e
    raise AssertionError(f"expected {code}, but the call succeeded")


arn_prefix = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/"

# --- keys and aliases --------------------------------------------------------
meta = alice.create_key(Description="app key", Tags=[{"TagKey": "team", "TagValue": "a"}])[
    "KeyMetadata"
]
key_id = meta["KeyId"]
assert meta["Arn"] == arn_prefix + key_id, meta
assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True, meta
assert meta["KeyUsage"] == "ENCRYPT_DECRYPT" and meta["KeySpec"] == "SYMMETRIC_DEFAULT", meta
assert meta["Description"] == "app key" and meta["AWSAccountId"] == ACCOUNT, meta
alice.create_alias(AliasName="alias/app", TargetKeyId=key_id)
aliases = alice.list_aliases()["Aliases"]
assert {"AliasName": "alias/app", "TargetKeyId": key_id}.items() <= next(
    a for a in aliases if a["AliasName"] == "alias/app"
).items(), aliases
for ref in ["alias/app", arn_prefix + key_id, key_id, f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/app"]:
    assert alice.describe_key(KeyId=ref)["KeyMetadata"]["KeyId"] == key_id, ref
assert any(k["KeyId"] == key_id for k in alice.list_keys()["Keys"])
expect_error("AlreadyExistsException", alice.create_alias, AliasName="alias/app", TargetKeyId=key_id)
expect_error("NotFoundException", alice.describe_key, KeyId="alias/nope")
expect_error("NotFoundException", alice.describe_key, KeyId="00000000-0000-0000-0000-000000000000")
tags = alice.list_resource_tags(KeyId=key_id)["Tags"]
assert tags == [{"TagKey": "team", "TagValue": "a"}], tags
alice.tag_resource(KeyId=key_id, Tags=[{"TagKey": "env", "TagValue": "test"}])
assert len(alice.list_resource_tags(KeyId=key_id)["Tags"]) == 2
check("create key, alias, describe by id/ARN/alias, tags")

# --- encrypt / decrypt ---------------------------------------------------------
ctx = {"tenant": "42", "purpose": "test"}
enc = alice.encrypt(KeyId="alias/app", Plaintext=b"hello kms", EncryptionContext=ctx)
assert enc["KeyId"] == arn_prefix + key_id, enc
blob = enc["CiphertextBlob"]
dec = alice.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
assert dec["Plaintext"] == b"hello kms" and dec["KeyId"] == arn_prefix + key_id, dec
assert alice.decrypt(CiphertextBlob=blob, EncryptionContext=ctx, KeyId="alias/app")["Plaintext"] == b"hello kms"
expect_error("InvalidCiphertextException", alice.decrypt, CiphertextBlob=blob, EncryptionContext={"tenant": "43", "purpose": "test"})
expect_error("InvalidCiphertextException", alice.decrypt, CiphertextBlob=blob)
tampered = bytearray(blob)
tampered[-5] ^= 0x01
expect_error("InvalidCiphertextException", alice.decrypt, CiphertextBlob=bytes(tampered), EncryptionContext=ctx)
expect_error("InvalidCiphertextException", alice.decrypt, CiphertextBlob=b"not a ciphertext at all", EncryptionContext=ctx)
expect_error("ValidationException", alice.encrypt, KeyId=key_id, Plaintext=b"x" * 4097)
check("encrypt/decrypt round trip with context; wrong context, tampered and junk ciphertexts refused")

# --- data keys, random, re-encrypt ----------------------------------------------
dk = alice.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=ctx)
assert len(dk["Plaintext"]) == 32 and dk["KeyId"] == arn_prefix + key_id, dk.keys()
assert alice.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == dk["Plaintext"]
dk2 = alice.generate_data_key(KeyId=key_id, NumberOfBytes=32)
assert dk2["Plaintext"] != dk["Plaintext"]
wp = alice.generate_data_key_without_plaintext(KeyId="alias/app", KeySpec="AES_256")
assert "Plaintext" not in wp and wp["KeyId"] == arn_prefix + key_id, wp
assert len(alice.decrypt(CiphertextBlob=wp["CiphertextBlob"])["Plaintext"]) == 32
expect_error("ValidationException", alice.generate_data_key, KeyId=key_id, KeySpec="AES_128")
rnd = alice.generate_random(NumberOfBytes=24)["Plaintext"]
assert len(rnd) == 24
expect_error("ValidationException", alice.generate_random, NumberOfBytes=5000)
key2 = alice.create_key()["KeyMetadata"]["KeyId"]
re = alice.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ctx, DestinationKeyId=key2, DestinationEncryptionContext={"moved": "yes"})
assert re["SourceKeyId"] == arn_prefix + key_id and re["KeyId"] == arn_prefix + key2, re
assert alice.decrypt(CiphertextBlob=re["CiphertextBlob"], EncryptionContext={"moved": "yes"})["Plaintext"] == b"hello kms"
expect_error("IncorrectKeyException", alice.decrypt, CiphertextBlob=re["CiphertextBlob"], EncryptionContext={"moved": "yes"}, KeyId=key_id)
check("GenerateDataKey (+WithoutPlaintext), GenerateRandom, ReEncrypt, IncorrectKey")

# --- access control: grants -------------------------------------------------------
expect_error("AccessDeniedException", bob.encrypt, KeyId=key_id, Plaintext=b"x")
expect_error("AccessDeniedException", bob.decrypt, CiphertextBlob=blob, EncryptionContext=ctx)
g = alice.create_grant(KeyId=key_id, GranteePrincipal="user:bob", Operations=["Decrypt", "Encrypt"])
assert g["GrantId"] and g["GrantToken"], g
assert bob.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"hello kms"
bob.encrypt(KeyId=key_id, Plaintext=b"from bob")
grants = alice.list_grants(KeyId=key_id)["Grants"]
assert [x["GrantId"] for x in grants] == [g["GrantId"]] and grants[0]["GranteePrincipal"] == "user:bob", grants
expect_error("AccessDeniedException", bob.create_grant, KeyId=key_id, GranteePrincipal="user:bob", Operations=["Decrypt"])
alice.revoke_grant(KeyId=key_id, GrantId=g["GrantId"])
expect_error("AccessDeniedException", bob.decrypt, CiphertextBlob=blob, EncryptionContext=ctx)
expect_error("ValidationException", alice.create_grant, KeyId=key_id, GranteePrincipal="bob", Operations=["Decrypt"])
expect_error("ValidationException", alice.create_grant, KeyId=key_id, GranteePrincipal="user:bob", Operations=["Fly"])
check("principal without a grant denied; CreateGrant allows; RevokeGrant denies again")

# --- authentication -----------------------------------------------------------------
expect_error("InvalidSignatureException", client(os.environ["ALICE_AK"], "wrong-secret").list_keys)
expect_error("UnrecognizedClientException", client("AKUNKNOWN", os.environ["ALICE_SK"]).list_keys)
wrong_region = boto3.client("kms", endpoint_url=EP, region_name="eu-west-3",
                            aws_access_key_id=os.environ["ALICE_AK"], aws_secret_access_key=os.environ["ALICE_SK"],
                            config=Config(retries={"max_attempts": 1}))
expect_error("InvalidSignatureException", wrong_region.list_keys)
check("wrong secret, unknown access key and wrong region refused")

# --- lifecycle --------------------------------------------------------------------
alice.disable_key(KeyId=key_id)
assert alice.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
expect_error("DisabledException", alice.encrypt, KeyId=key_id, Plaintext=b"x")
expect_error("DisabledException", alice.decrypt, CiphertextBlob=blob, EncryptionContext=ctx)
alice.enable_key(KeyId=key_id)
assert alice.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"hello kms"
sd = alice.schedule_key_deletion(KeyId=key2, PendingWindowInDays=7)
assert sd["KeyState"] == "PendingDeletion" and sd["KeyId"] == arn_prefix + key2, sd
expect_error("KMSInvalidStateException", alice.encrypt, KeyId=key2, Plaintext=b"x")
expect_error("ValidationException", alice.schedule_key_deletion, KeyId=key_id, PendingWindowInDays=3)
alice.cancel_key_deletion(KeyId=key2)
assert alice.describe_key(KeyId=key2)["KeyMetadata"]["KeyState"] == "Disabled"
check("disabled key -> DisabledException; pending deletion -> KMSInvalidStateException; cancel")

# --- policy and rotation --------------------------------------------------------------
import json  # noqa: E402

pol = json.loads(alice.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
assert pol, pol
alice.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(pol))
e = expect_error("MalformedPolicyDocumentException", alice.put_key_policy, KeyId=key_id, PolicyName="default", Policy="{not json")
assert alice.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False
alice.enable_key_rotation(KeyId=key_id)
st = alice.get_key_rotation_status(KeyId=key_id)
assert st["KeyRotationEnabled"] is True and st["RotationPeriodInDays"] == 365, st
check("GetKeyPolicy/PutKeyPolicy, EnableKeyRotation/GetKeyRotationStatus")

# --- signing ------------------------------------------------------------------------
sk = alice.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
assert sk["SigningAlgorithms"] == ["ECDSA_SHA_256"], sk
sig = alice.sign(KeyId=sk["KeyId"], Message=b"signed message", SigningAlgorithm="ECDSA_SHA_256")
assert sig["KeyId"] == arn_prefix + sk["KeyId"]
v = alice.verify(KeyId=sk["KeyId"], Message=b"signed message", Signature=sig["Signature"], SigningAlgorithm="ECDSA_SHA_256")
assert v["SignatureValid"] is True
expect_error("KMSInvalidSignatureException", alice.verify, KeyId=sk["KeyId"], Message=b"other message", Signature=sig["Signature"], SigningAlgorithm="ECDSA_SHA_256")
pub = alice.get_public_key(KeyId=sk["KeyId"])
assert pub["KeySpec"] == "ECC_NIST_P256" and len(pub["PublicKey"]) == 91, pub
expect_error("InvalidKeyUsageException", alice.encrypt, KeyId=sk["KeyId"], Plaintext=b"x")
expect_error("InvalidKeyUsageException", alice.sign, KeyId=key_id, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
check("Sign/Verify/GetPublicKey; wrong signature and wrong usage refused")

# --- data key pairs ---------------------------------------------------------------
pair_ctx = {"purpose": "pair"}
kp = alice.generate_data_key_pair(KeyId="alias/app", KeyPairSpec="ECC_NIST_P256", EncryptionContext=pair_ctx)
assert kp["KeyId"] == arn_prefix + key_id and kp["KeyPairSpec"] == "ECC_NIST_P256", kp.keys()
# SubjectPublicKeyInfo of a P-256 key: 91 bytes, id-ecPublicKey + prime256v1.
assert len(kp["PublicKey"]) == 91 and bytes.fromhex("2a8648ce3d0201") in kp["PublicKey"], kp["PublicKey"]
assert kp["PrivateKeyPlaintext"][:1] == b"\x30", "PKCS#8 DER starts with a SEQUENCE"
opened = alice.decrypt(CiphertextBlob=kp["PrivateKeyCiphertextBlob"], EncryptionContext=pair_ctx)
assert opened["Plaintext"] == kp["PrivateKeyPlaintext"], "the encrypted private key is the plaintext one"
expect_error("InvalidCiphertextException", alice.decrypt, CiphertextBlob=kp["PrivateKeyCiphertextBlob"])
ed = alice.generate_data_key_pair_without_plaintext(KeyId=key_id, KeyPairSpec="ECC_NIST_EDWARDS25519")
assert "PrivateKeyPlaintext" not in ed and ed["KeyPairSpec"] == "ECC_NIST_EDWARDS25519", ed.keys()
# SubjectPublicKeyInfo of an Ed25519 key: 44 bytes, OID 1.3.101.112.
assert len(ed["PublicKey"]) == 44 and bytes.fromhex("2b6570") in ed["PublicKey"], ed["PublicKey"]
ed_sk = alice.decrypt(CiphertextBlob=ed["PrivateKeyCiphertextBlob"])["Plaintext"]
assert ed_sk[:1] == b"\x30" and bytes.fromhex("2b6570") in ed_sk, ed_sk.hex()
expect_error("UnsupportedOperationException", alice.generate_data_key_pair, KeyId=key_id, KeyPairSpec="RSA_2048")
expect_error("ValidationException", alice.generate_data_key_pair, KeyId=key_id, KeyPairSpec="NOT_A_SPEC")
expect_error("AccessDeniedException", bob.generate_data_key_pair, KeyId=key_id, KeyPairSpec="ECC_NIST_P256")
expect_error("AccessDeniedException", bob.generate_data_key_pair_without_plaintext, KeyId=key_id, KeyPairSpec="ECC_NIST_P256")
expect_error("InvalidKeyUsageException", alice.generate_data_key_pair, KeyId=sk["KeyId"], KeyPairSpec="ECC_NIST_P256")
check("GenerateDataKeyPair (+WithoutPlaintext): P-256 and Ed25519; RSA, unknown spec, no grant, wrong usage refused")

# --- HMAC ---------------------------------------------------------------------------
mk = alice.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
assert mk["MacAlgorithms"] == ["HMAC_SHA_256"], mk
mac = alice.generate_mac(KeyId=mk["KeyId"], Message=b"mac me", MacAlgorithm="HMAC_SHA_256")
assert mac["KeyId"] == arn_prefix + mk["KeyId"] and mac["MacAlgorithm"] == "HMAC_SHA_256", mac
assert len(mac["Mac"]) == 32
assert alice.generate_mac(KeyId=mk["KeyId"], Message=b"mac me", MacAlgorithm="HMAC_SHA_256")["Mac"] == mac["Mac"]
assert alice.generate_mac(KeyId=mk["KeyId"], Message=b"mac you", MacAlgorithm="HMAC_SHA_256")["Mac"] != mac["Mac"]
vm = alice.verify_mac(KeyId=mk["KeyId"], Message=b"mac me", Mac=mac["Mac"], MacAlgorithm="HMAC_SHA_256")
assert vm["MacValid"] is True and vm["KeyId"] == arn_prefix + mk["KeyId"], vm
bad_mac = bytearray(mac["Mac"])
bad_mac[0] ^= 0x80
expect_error("KMSInvalidMacException", alice.verify_mac, KeyId=mk["KeyId"], Message=b"mac me", Mac=bytes(bad_mac), MacAlgorithm="HMAC_SHA_256")
expect_error("KMSInvalidMacException", alice.verify_mac, KeyId=mk["KeyId"], Message=b"other", Mac=mac["Mac"], MacAlgorithm="HMAC_SHA_256")
expect_error("KMSInvalidMacException", alice.verify_mac, KeyId=mk["KeyId"], Message=b"mac me", Mac=mac["Mac"][:16], MacAlgorithm="HMAC_SHA_256")
expect_error("InvalidKeyUsageException", alice.generate_mac, KeyId=mk["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_512")
expect_error("InvalidKeyUsageException", alice.generate_mac, KeyId=key_id, Message=b"m", MacAlgorithm="HMAC_SHA_256")
expect_error("ValidationException", alice.generate_mac, KeyId=mk["KeyId"], Message=b"m", MacAlgorithm="MD5")
expect_error("AccessDeniedException", bob.generate_mac, KeyId=mk["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
check("GenerateMac/VerifyMac; wrong MAC, truncated MAC, wrong algorithm, wrong usage, no grant refused")

# --- on-demand rotation -----------------------------------------------------------------
assert alice.list_key_rotations(KeyId=key_id)["Rotations"] == []
before = alice.encrypt(KeyId=key_id, Plaintext=b"before rotation")["CiphertextBlob"]
r = alice.rotate_key_on_demand(KeyId="alias/app")
assert r["KeyId"] == arn_prefix + key_id, r
alice.rotate_key_on_demand(KeyId=key_id)
rots = alice.list_key_rotations(KeyId=key_id)
assert len(rots["Rotations"]) == 2 and rots["Truncated"] is False, rots
assert all(x["RotationType"] == "ON_DEMAND" and x["KeyId"] == arn_prefix + key_id for x in rots["Rotations"]), rots
page = alice.list_key_rotations(KeyId=key_id, Limit=1)
assert page["Truncated"] is True and len(page["Rotations"]) == 1, page
rest = alice.list_key_rotations(KeyId=key_id, Limit=1, Marker=page["NextMarker"])
assert rest["Truncated"] is False and len(rest["Rotations"]) == 1, rest
assert alice.decrypt(CiphertextBlob=before)["Plaintext"] == b"before rotation"
after = alice.encrypt(KeyId=key_id, Plaintext=b"after rotation")["CiphertextBlob"]
assert alice.decrypt(CiphertextBlob=after)["Plaintext"] == b"after rotation"
expect_error("UnsupportedOperationException", alice.rotate_key_on_demand, KeyId=sk["KeyId"])
expect_error("AccessDeniedException", bob.rotate_key_on_demand, KeyId=key_id)
expect_error("AccessDeniedException", bob.list_key_rotations, KeyId=key_id)
expect_error("InvalidMarkerException", alice.list_key_rotations, KeyId=key_id, Marker="x")
check("RotateKeyOnDemand/ListKeyRotations (paged); old ciphertexts still open; asymmetric key and no grant refused")

# --- retiring grants ---------------------------------------------------------------------
g1 = alice.create_grant(KeyId=key_id, GranteePrincipal="user:bob", Operations=["Decrypt"])
g2 = alice.create_grant(KeyId=key_id, GranteePrincipal="user:bob", Operations=["Encrypt"], RetiringPrincipal="user:alice")
assert bob.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"hello kms"
bob.retire_grant(KeyId=key_id, GrantToken=g1["GrantToken"])
expect_error("AccessDeniedException", bob.decrypt, CiphertextBlob=blob, EncryptionContext=ctx)
bob.encrypt(KeyId=key_id, Plaintext=b"still allowed")
alice.retire_grant(KeyId=arn_prefix + key_id, GrantId=g2["GrantId"])
expect_error("AccessDeniedException", bob.encrypt, KeyId=key_id, Plaintext=b"x")
assert alice.list_grants(KeyId=key_id)["Grants"] == []
expect_error("NotFoundException", alice.retire_grant, KeyId=key_id, GrantId=g2["GrantId"])
expect_error("NotFoundException", alice.retire_grant, KeyId=key_id, GrantToken="srgt_" + "0" * 64)
# Not a party to any grant and not allowed by the policy: denied, whether the grant exists or not.
expect_error("AccessDeniedException", bob.retire_grant, KeyId=key_id, GrantToken="srgt_" + "0" * 64)
expect_error("ValidationException", bob.retire_grant, GrantToken=g2["GrantToken"])
check("RetireGrant by the grantee (token) and the retiring principal (id); unknown grants refused")

# --- for the library ----------------------------------------------------------------
lib = alice.encrypt(KeyId="alias/app", Plaintext=b"made by the endpoint", EncryptionContext={"purpose": "library-check"})
print(f"{len(checks)} groups of checks passed", file=sys.stderr)
print(f"LIBRARY {key_id} {base64.b64encode(lib['CiphertextBlob']).decode()}")
