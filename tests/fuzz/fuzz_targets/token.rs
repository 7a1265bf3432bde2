#![no_main]
//! See agent-user/src/fuzzing.rs (`token`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether::fuzzing::run("token", data);
});
