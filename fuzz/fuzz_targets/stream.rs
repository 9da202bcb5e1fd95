//! Untrusted envelope messages through the streaming reader.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strongroom::hazmat::fuzzing::open_stream(data));
