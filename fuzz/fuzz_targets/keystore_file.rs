//! Untrusted keystore record files and backup archives.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strongroom::hazmat::fuzzing::keystore_file(data));
