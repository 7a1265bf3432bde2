#![no_main]
//! See agent-user/src/fuzzing.rs (`scope`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether::fuzzing::run("scope", data);
});
