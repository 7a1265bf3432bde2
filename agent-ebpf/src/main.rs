//! Tether's BPF programs. Small and dumb by design: check the tracked map, look up the maps
//! userspace compiled (`contain`), decide, emit one record with the verdict; the rules are
//! compiled and the reasons reported in userspace (agent-user).
#![no_std]
#![no_main]
// Map keys and values go to the helpers by reference, as the verifier-checked code always
// has: by value they would be moved into another stack slot under the 512-byte limit.
#![allow(clippy::needless_borrows_for_generic_args)]

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
mod record;
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
