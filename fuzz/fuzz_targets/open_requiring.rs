//! Untrusted envelope messages into `open_requiring` with a required context
//! taken from the input.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strongroom::hazmat::fuzzing::open_requiring(data));
