#![no_main]
//! See agent-user/src/fuzzing.rs (`ocsf`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether::fuzzing::run("ocsf", data);
});
