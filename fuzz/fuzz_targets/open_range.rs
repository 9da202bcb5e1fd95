//! Untrusted envelope messages and ranges into `open_range` and
//! `open_range_reader`, checked against `open` of the whole message.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strongroom::hazmat::fuzzing::open_range(data));
