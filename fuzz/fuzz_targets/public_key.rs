//! Untrusted public keys (SPKI DER, PEM) and signatures.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strongroom::hazmat::fuzzing::public_key(data));
