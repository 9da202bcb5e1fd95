//! Untrusted AWS Encryption SDK messages (header, body, footer) into
//! `esdk_open` and `esdk_open_reader`, in a ring holding the key of the
//! frozen ESDK vectors (the seeds).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strongroom::hazmat::fuzzing::esdk_message(data));
