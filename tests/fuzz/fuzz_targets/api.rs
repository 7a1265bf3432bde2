#![no_main]
//! See agent-user/src/fuzzing.rs (`api`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether::fuzzing::run("api", data);
});
