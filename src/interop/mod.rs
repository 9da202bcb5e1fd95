//! Formats other implementations wrote: strongroom reads and writes them
//! beside its own, proven against the real implementations in CI.
//!
//! - [`esdk`]: AWS Encryption SDK messages (feature `esdk`).

pub mod esdk;
