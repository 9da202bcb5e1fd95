//! Untrusted envelope messages into `open`, in a ring holding the real keys
//! of the frozen vectors.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strongroom::hazmat::fuzzing::open_message(data));
