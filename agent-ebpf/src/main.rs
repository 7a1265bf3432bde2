//! Tether's BPF programs. Small and dumb by design: check the tracked map, read what the
//! event needs, emit one record; every judgement lives in userspace (agent-user).
#![no_std]
#![no_main]

mod contain;
mod exec;
mod file;
mod kernel;
mod landlock;
mod lineage;
mod lsm;
mod lsm_path;
mod maps;
mod net;
mod sandbox;
mod sock;
mod uring;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
