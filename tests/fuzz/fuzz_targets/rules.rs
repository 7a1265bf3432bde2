#![no_main]
//! See agent-user/src/fuzzing.rs (`rules`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether::fuzzing::run("rules", data);
});
