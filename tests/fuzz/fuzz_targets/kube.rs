#![no_main]
//! See agent-user/src/fuzzing.rs (`kube`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tether::fuzzing::run("kube", data);
});
