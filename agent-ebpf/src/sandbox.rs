//! Refusals of the seccomp filter `tether exec` applies (agent-user contain::seccomp): a call a
//! seccomp filter refuses never reaches its `sys_enter_*` tracepoint (seccomp runs first) but
//! does reach its `sys_exit_*` one. Both programs are attached to the calls of
//! agent_common::syscalls::SANDBOXED: the entry marks the thread, and an exit with EPERM and
//! no mark is recorded as refused before it ran. Tracked processes only.
use agent_common::{SandboxEvent, contain::verdict, hook, kind};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext};

use crate::{
    kernel::{fill_header, tp},
    maps::{PROC_EVENTS, SANDBOX_ENTERED, reserve, tracked, wake_flags_of},
};

const EPERM: i64 = 1;

#[tracepoint]
pub fn sys_enter_sandboxed(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if tracked((pid_tgid >> 32) as u32).is_none() {
        return 0;
    }
    // SAFETY: offset from this kernel's syscall tracepoint format.
    let nr = unsafe { ctx.read_at::<i32>(tp!(sys_nr) as usize) }.unwrap_or(-1) as u32;
    let _ = SANDBOX_ENTERED.insert(&(pid_tgid as u32), &nr, 0);
    0
}

#[tracepoint]
pub fn sys_exit_sandboxed(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let tid = pid_tgid as u32;
    // SAFETY: offsets from this kernel's syscall tracepoint format.
    let nr = unsafe { ctx.read_at::<i32>(tp!(sys_nr) as usize) }.unwrap_or(-1) as u32;
    let ret = unsafe { ctx.read_at::<i64>(tp!(sys_ret) as usize) }.unwrap_or(0);
    // SAFETY: a plain u32 value, copied out before the remove.
    let entered = unsafe { SANDBOX_ENTERED.get(&tid) }.copied();
    if entered.is_some() {
        let _ = SANDBOX_ENTERED.remove(&tid);
    }
    if entered == Some(nr) || ret != -EPERM {
        return 0;
    }
    let Some(mut slot) = reserve::<SandboxEvent>(&PROC_EVENTS, hook::SECCOMP) else {
        return 0;
    };
    // SAFETY: the reservation is sized for SandboxEvent; every field is written below.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::SANDBOX, hook::SECCOMP, pid_tgid, &t, 0);
    ev.header.verdict = verdict::DENIED;
    ev.syscall_nr = nr;
    ev._pad = 0;
    ev.ret = ret;
    slot.submit(wake_flags_of::<SandboxEvent>(&PROC_EVENTS));
    0
}
