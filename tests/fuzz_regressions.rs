//! Replays the fuzz seeds (fuzz/seeds/<target>/) and every kept crash input
//! (tests/fuzz_regressions/<target>/) through the fuzz entry points. Runs in
//! debug, so arithmetic overflow panics are caught too.

use std::path::Path;
use strongroom::hazmat::fuzzing;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [
        root.join("fuzz/seeds").join(target),
        root.join("tests/fuzz_regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            f(&data);
            // Also every truncation and a few single-byte edits of it.
            for cut in 0..data.len().min(512) {
                f(&data[..cut]);
            }
            for i in (0..data.len()).step_by(7) {
                let mut d = data.clone();
                d[i] = d[i].wrapping_add(1);
                f(&d);
            }
            n += 1;
        }
    }
    n
}

#[test]
fn blob_seeds_and_regressions() {
    assert!(replay("blob", fuzzing::decrypt_blob) >= 3);
}

#[test]
fn message_seeds_and_regressions() {
    assert!(replay("message", fuzzing::open_message) >= 4);
}

#[test]
fn open_range_seeds_and_regressions() {
    assert!(replay("open_range", fuzzing::open_range) >= 4);
}

#[test]
fn stream_seeds_and_regressions() {
    assert!(replay("stream", fuzzing::open_stream) >= 4);
}

#[test]
fn policy_seeds_and_regressions() {
    assert!(replay("policy", fuzzing::policy_json) >= 3);
}

#[test]
fn public_key_seeds_and_regressions() {
    assert!(replay("public_key", fuzzing::public_key) >= 2);
}

#[test]
fn keystore_file_seeds_and_regressions() {
    assert!(replay("keystore_file", fuzzing::keystore_file) >= 2);
}

#[test]
fn open_requiring_seeds_and_regressions() {
    assert!(replay("open_requiring", fuzzing::open_requiring) >= 4);
}

#[test]
fn context_seeds_and_regressions() {
    assert!(replay("context", fuzzing::context) >= 7);
}

#[test]
fn seeds_are_real_ciphertexts() {
    // The seeds must authenticate, or the fuzzer starts far from the
    // interesting code.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let blob = std::fs::read(root.join("fuzz/seeds/blob/vector-0")).unwrap();
    assert_eq!(&blob[..4], b"SR\x01\x01");
    let msg = std::fs::read(root.join("fuzz/seeds/message/vector-0")).unwrap();
    assert_eq!(&msg[..4], b"SR\x02\x01");
}

#[cfg(feature = "esdk")]
#[test]
fn esdk_seeds_and_regressions() {
    assert!(replay("esdk", fuzzing::esdk_message) >= 4);
}
