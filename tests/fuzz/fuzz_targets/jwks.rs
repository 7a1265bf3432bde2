#![no_main]
//! See agent-user/src/fuzzing.rs (`jwks`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether::fuzzing::run("jwks", data);
});
