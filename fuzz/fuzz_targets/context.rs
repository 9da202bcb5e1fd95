//! Untrusted canonical encryption-context encodings.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strongroom::hazmat::fuzzing::context(data));
