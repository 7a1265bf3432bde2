//! Kernel integration tests for Tether live in tests/; this crate only hosts them and the
//! `netprobe` helper the tracked scripts call.
