#!/usr/bin/env python3
"""Writes fuzz seed corpora from the frozen format vectors.

Run from the repository root: python3 fuzz/make_seeds.py
"""
import json, os, struct

v = json.load(open("tests/vectors/format-v1.json"))

def ctx_bytes(ctx):
    out = struct.pack(">H", len(ctx))
    for k in sorted(ctx, key=lambda s: s.encode()):
        kb, vb = k.encode(), ctx[k].encode()
        out += struct.pack(">H", len(kb)) + kb + struct.pack(">H", len(vb)) + vb
    return out

def write(target, name, data):
    d = os.path.join("fuzz", "seeds", target)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, name), "wb").write(data)

for i, b in enumerate(v["blobs"]):
    write("blob", f"vector-{i}", bytes.fromhex(b["ciphertext_hex"]))
    write("context", f"blob-{i}", ctx_bytes(b["context"]))
for i, m in enumerate(v["messages"]):
    msg = bytes.fromhex(m["message_hex"])
    write("message", f"vector-{i}", msg)
    write("stream", f"vector-{i}", msg)
    # open_range: offset and length (u16 each), then the message.
    write("open_range", f"vector-{i}", struct.pack(">HH", i, 7 + i) + msg)
    c = ctx_bytes(m["context"])
    write("open_requiring", f"vector-{i}", bytes([len(c)]) + c + msg)
    write("context", f"message-{i}", c)

# AWS Encryption SDK messages the Python SDK wrote (tests/vectors/esdk/).
import base64
e = json.load(open("tests/vectors/esdk/python-4.0.7.json"))
for x in e["vectors"]:
    s, n = x["suite"], x["plaintext_len"]
    if s in (0x0478, 0x0578) and n not in (129, 3):
        continue
    if s in (0x0178, 0x0378) and n != 300:
        continue
    name = "python-%04x%s%s" % (s, "-nonframed" if x["frame_len"] == 0 else "",
                                "-emptyctx" if not x["context"] else "")
    write("esdk", name, base64.b64decode(x["ciphertext"]))
