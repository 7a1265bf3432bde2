//! Refusals of the Landlock layer of `tether exec`'s sandbox for TCP: Landlock's network
//! rights (ABI 4+) refuse a connect or bind in an LSM hook that runs before the cgroup hooks
//! and before BPF LSM, so neither sees the attempt. These programs, attached to
//! `sys_enter_*`/`sys_exit_*` of connect and bind (agent_common::syscalls::LANDLOCKED), keep
//! what a tracked process's TCP socket asked for and record it when the call fails with
//! EACCES (the errno of an LSM's refusal: Landlock's where the sandbox restricts TCP).
use core::ffi::c_void;

use agent_common::{PendingNet, contain::verdict, hook, net_op, sock_kind, syscalls};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, helpers::generated, macros::tracepoint, programs::TracePointContext,
};

use crate::{
    kernel::tp,
    maps::{LANDLOCK_CALLS, tracked},
    net,
    sock::{family_of, sock_of_fd, u16_at},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u16 = 1;
const IPPROTO_TCP: u8 = 6;
const EACCES: i64 = 13;

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: offsets from this kernel's syscall tracepoint format.
    unsafe { ctx.read_at::<u64>(tp!(sys_args) as usize + 8 * n) }.unwrap_or(0)
}

#[tracepoint]
pub fn sys_enter_landlocked(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if tracked((pid_tgid >> 32) as u32).is_none() {
        return 0;
    }
    // SAFETY: offset from this kernel's syscall tracepoint format.
    let nr = unsafe { ctx.read_at::<i32>(tp!(sys_nr) as usize) }.unwrap_or(-1) as u32;
    let op = match nr {
        syscalls::NR_CONNECT => net_op::CONNECT,
        syscalls::NR_BIND => net_op::BIND,
        _ => return 0,
    };
    let sk = sock_of_fd(arg(&ctx, 0) as i32);
    if sk.is_null() {
        return 0;
    }
    let family = family_of(sk);
    if (family != AF_INET && family != AF_INET6) || u16_at(sk, crate::kernel::off!(sock_type)) != SOCK_STREAM {
        return 0;
    }
    // struct sockaddr_in / sockaddr_in6 as passed: the port at 2 (network order), the IPv4
    // address at 4, the IPv6 one at 8.
    let user = arg(&ctx, 1);
    let mut raw = [0u8; 24];
    // SAFETY: the helper bounds the copy to the buffer; a failed read leaves zeros.
    let r = unsafe { generated::bpf_probe_read_user(raw.as_mut_ptr() as *mut c_void, 24, user as *const c_void) };
    if r != 0 {
        return 0;
    }
    let mut p = PendingNet {
        addr: [0; 16],
        port: u16::from_be_bytes([raw[2], raw[3]]),
        family: family as u8,
        op,
        nr,
    };
    if family == AF_INET {
        p.addr[..4].copy_from_slice(&raw[4..8]);
    } else {
        p.addr.copy_from_slice(&raw[8..24]);
    }
    let _ = LANDLOCK_CALLS.insert(&(pid_tgid as u32), &p, 0);
    0
}

#[tracepoint]
pub fn sys_exit_landlocked(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let tid = pid_tgid as u32;
    // SAFETY: map lookup, copied out before the remove.
    let Some(p) = (unsafe { LANDLOCK_CALLS.get(&tid) }).copied() else {
        return 0;
    };
    let _ = LANDLOCK_CALLS.remove(&tid);
    // SAFETY: offset from this kernel's syscall tracepoint format.
    let ret = unsafe { ctx.read_at::<i64>(tp!(sys_ret) as usize) }.unwrap_or(0);
    if ret != -EACCES {
        return 0;
    }
    net::record(
        hook::LANDLOCK_NET,
        0,
        pid_tgid,
        &t,
        verdict::DENIED,
        p.op,
        p.family,
        SOCK_STREAM as u8,
        IPPROTO_TCP,
        p.port,
        &p.addr,
        sock_kind::NONE,
    );
    0
}
