//! strongroom against the real AWS Encryption SDK (Python, the version
//! `.ci/esdk-setup` pins): the Python SDK encrypts with a raw AES master key
//! holding the same 32 bytes strongroom imported (BYOK), strongroom opens
//! every message; strongroom seals the same set, the Python SDK decrypts
//! every message. Both committing suites (0x0478, 0x0578), sizes 0, 1,
//! frame − 1, frame, frame + 1 and 1 MiB.
//!
//! Needs `STRONGROOM_ESDK_PYTHON` (set by `eval "$(.ci/esdk-setup)"`) or
//! `.ci/esdk-venv`. Without them the test prints one line and passes,
//! except under `CI=true`, where a skip is a failure.
#![cfg(feature = "esdk")]

#[path = "esdk/common.rs"]
mod common;

use base64ct::{Base64, Encoding};
use serde_json::{Value, json};
use std::time::Duration;
use strongroom::interop::esdk::{EsdkOptions, EsdkSuite};
use strongroom::{EncryptionContext, Error};

const FRAME: usize = 4096;
const SUITES: [EsdkSuite; 2] = [
    EsdkSuite::AesGcmHkdfSha512Commit,
    EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384,
];
const TIMEOUT: Duration = Duration::from_secs(300);

fn sizes() -> Vec<usize> {
    vec![0, 1, FRAME - 1, FRAME, FRAME + 1, 1 << 20]
}

fn context() -> EncryptionContext {
    EncryptionContext::new()
        .with("purpose", "esdk interop")
        .with("tenant", "acme")
        .with("unicode", "grüße ✓")
}

fn context_json(ctx: &EncryptionContext) -> Value {
    Value::Object(
        ctx.iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect(),
    )
}

fn python_or_skip() -> Option<std::path::PathBuf> {
    match common::python() {
        Ok(p) => Some(p),
        Err(why) => {
            assert!(
                !common::in_ci(),
                "CI=true: the ESDK interop test may not skip ({why}); run .ci/esdk-setup"
            );
            println!("esdk_python: SKIPPED ({why}); enable with: eval \"$(.ci/esdk-setup)\"");
            None
        }
    }
}

fn b64(s: &Value) -> Vec<u8> {
    Base64::decode_vec(s.as_str().expect("base64 string")).expect("valid base64")
}

#[test]
fn python_encrypts_strongroom_opens_and_back() {
    let Some(py) = python_or_skip() else {
        return;
    };
    let key: [u8; 32] = {
        let ring = strongroom::KeyRing::in_memory();
        let c = ring.client(strongroom::Principal::service("rng").unwrap());
        c.generate_random(32)
            .unwrap()
            .expose_secret()
            .try_into()
            .unwrap()
    };
    let c = common::ring_with_key(&key);
    let ctx = context();
    let key_b64 = Base64::encode_string(&key);

    // ---- Python encrypts, strongroom opens --------------------------------
    let mut cases = Vec::new();
    for suite in SUITES {
        for size in sizes() {
            cases.push((suite, size));
        }
    }
    let job = json!({
        "op": "encrypt",
        "key": key_b64,
        "namespace": common::NAMESPACE,
        "name": common::NAME,
        "context": context_json(&ctx),
        "cases": cases.iter().map(|(s, n)| json!({
            "suite": s.id(),
            "frame_len": FRAME,
            "plaintext": Base64::encode_string(&common::data(*n)),
        })).collect::<Vec<_>>(),
    });
    let answer = common::run_python(&py, &job, TIMEOUT);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), cases.len());
    for ((suite, size), r) in cases.iter().zip(results) {
        let message = b64(&r["ciphertext"]);
        // The header names the suite the Python SDK was asked for.
        assert_eq!(u16::from_be_bytes([message[1], message[2]]), suite.id());
        let opened = c
            .esdk_open(common::ALIAS, &message, &ctx)
            .unwrap_or_else(|e| panic!("{suite:?} size {size}: {e}"));
        assert_eq!(
            opened.plaintext.expose_secret(),
            common::data(*size).as_slice()
        );
        assert_eq!(opened.suite, *suite);
        assert_eq!(opened.frame_len as usize, FRAME);
        assert!(opened.context.contains_all(&ctx));
        assert_eq!(
            opened.context.get("aws-crypto-public-key").is_some(),
            suite.is_signed()
        );
        // The same bytes through the streaming reader.
        let mut r = c
            .esdk_open_reader(common::ALIAS, message.as_slice(), &ctx, EsdkOptions::new())
            .unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut out).unwrap();
        assert_eq!(out, common::data(*size));
        // Another required context fails opaquely.
        let other = ctx.clone().with("tenant", "zeta");
        assert!(matches!(
            c.esdk_open(common::ALIAS, &message, &other),
            Err(Error::DecryptionFailed)
        ));
    }
    println!(
        "esdk_python: strongroom opened {} messages written by aws-encryption-sdk {}",
        cases.len(),
        answer["sdk"]
    );

    // ---- strongroom seals, Python decrypts --------------------------------
    // The same set, plus frame lengths the Python SDK cannot write (it
    // writes multiples of 128 bytes only) but must read.
    let mut cases: Vec<(EsdkSuite, usize, u32, bool)> = Vec::new();
    for suite in SUITES {
        for size in sizes() {
            cases.push((suite, size, FRAME as u32, false));
        }
        cases.push((suite, 5, 1, false));
        cases.push((suite, 2500, 1000, false));
        cases.push((suite, 70_000, 65_537, true));
    }
    let mut messages = Vec::new();
    for (suite, size, frame, streaming) in &cases {
        let opts = EsdkOptions::new().suite(*suite).frame_len(*frame);
        let m = if *streaming {
            let mut w = c
                .esdk_seal_writer(common::ALIAS, &ctx, opts.clone(), Vec::new())
                .unwrap();
            for piece in common::data(*size).chunks(777) {
                std::io::Write::write_all(&mut w, piece).unwrap();
            }
            w.finish().unwrap()
        } else {
            c.esdk_seal_with(common::ALIAS, &common::data(*size), &ctx, opts.clone())
                .unwrap()
        };
        messages.push(m);
    }
    let job = json!({
        "op": "decrypt",
        "key": key_b64,
        "namespace": common::NAMESPACE,
        "name": common::NAME,
        "cases": messages.iter().map(|m| json!({"ciphertext": Base64::encode_string(m)})).collect::<Vec<_>>(),
    });
    let answer = common::run_python(&py, &job, TIMEOUT);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), cases.len());
    for ((suite, size, frame, _), r) in cases.iter().zip(results) {
        assert_eq!(
            r["ok"],
            Value::Bool(true),
            "{suite:?} size {size} frame {frame}: {}",
            r["error"]
        );
        assert_eq!(b64(&r["plaintext"]), common::data(*size));
        assert_eq!(r["suite"].as_u64(), Some(u64::from(suite.id())));
        assert_eq!(r["frame_len"].as_u64(), Some(u64::from(*frame)));
        let theirs = r["context"].as_object().unwrap();
        for (k, v) in ctx.iter() {
            assert_eq!(theirs.get(k).and_then(Value::as_str), Some(v));
        }
        assert_eq!(theirs.len(), ctx.len() + usize::from(suite.is_signed()));
    }
    println!(
        "esdk_python: aws-encryption-sdk {} opened {} messages written by strongroom",
        answer["sdk"],
        cases.len()
    );

    // ---- and the Python SDK refuses what it must refuse --------------------
    let mut tampered = messages[1].clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let job = json!({
        "op": "decrypt",
        "key": key_b64,
        "namespace": common::NAMESPACE,
        "name": common::NAME,
        "cases": [{"ciphertext": Base64::encode_string(&tampered)}],
    });
    let answer = common::run_python(&py, &job, TIMEOUT);
    assert_eq!(answer["results"][0]["ok"], Value::Bool(false));
}
