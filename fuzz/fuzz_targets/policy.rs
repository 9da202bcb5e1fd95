//! Untrusted key-policy JSON.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strongroom::hazmat::fuzzing::policy_json(data));
