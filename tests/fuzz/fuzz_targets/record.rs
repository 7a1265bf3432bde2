#![no_main]
//! See agent-user/src/fuzzing.rs (`record`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether::fuzzing::run("record", data);
});
