"""Seal + open of 1 KiB with Tink's KmsEnvelopeAead (Python), a local
AES-256-GCM key standing in for the KMS key-encryption key. Prints the best
of three timed loops, in nanoseconds per seal+open. Used by
benches/references.rs; needs `pip install tink` (.ci/tink-setup)."""
import sys
import time

import tink
from tink import aead

n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
aead.register()
kek = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
env = aead.KmsEnvelopeAead(aead.aead_key_templates.AES256_GCM, kek)
data = b"\x5a" * 1024
ad = b"bench=1"
for _ in range(n // 10):
    assert env.decrypt(env.encrypt(data, ad), ad) == data
best = None
for _ in range(3):
    t = time.perf_counter()
    for _ in range(n):
        env.decrypt(env.encrypt(data, ad), ad)
    dt = (time.perf_counter() - t) / n
    best = dt if best is None or dt < best else best
print(f"{best * 1e9:.0f}")
