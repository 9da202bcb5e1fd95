//! Untrusted ciphertext blobs into `decrypt`, in a ring holding the keys of
//! the frozen vectors (so inputs reach authentication, not just key lookup).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| strongroom::hazmat::fuzzing::decrypt_blob(data));
