//! io_uring: a ring performs file and socket operations with no syscall of their own. Where
//! the BPF LSM hooks are in effect and the ring's async workers are threads of the process
//! (5.12+) they judge those operations like their syscalls, and these programs are not
//! attached. Elsewhere (before 5.12 the workers are kernel threads no tracked entry names) no
//! hook sees them, so a tracked process may use
//! io_uring only when its scope grants it: io_uring_setup (a new ring) and io_uring_enter (a
//! ring it got another way: inherited across exec, passed over a socket) are judged and, if
//! refused, killed before the call returns. A process bound to no credential has no grant:
//! its io_uring use is unjudged (the unbound posture judges only what is seen).
use agent_common::{
    Tracked, UringEvent,
    contain::{rule_class, verdict},
    hook, kind, sock_kind, uring_op,
};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext};

use crate::{
    contain::{judge_grant, kill_current, refuses, unjudged},
    kernel::{fill_header, tp},
    maps::{PROC_EVENTS, reserve, tracked, wake_flags_of},
};

#[tracepoint]
pub fn sys_enter_io_uring_setup(_ctx: TracePointContext) -> u32 {
    judge(uring_op::SETUP, -1, true);
    0
}

/// Judged at every call; recorded when it refuses (a record per submission would flood the
/// ring: the ring's creation, or first refused use, is what matters).
#[tracepoint]
pub fn sys_enter_io_uring_enter(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from this kernel's syscall tracepoint format (the fd is argument 0).
    let fd = unsafe { ctx.read_at::<u64>(tp!(sys_args) as usize) }.unwrap_or(u64::MAX) as i32;
    judge(uring_op::ENTER, fd, false);
    0
}

#[inline(always)]
fn judge(op: u32, fd: i32, always: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked((pid_tgid >> 32) as u32) else {
        return;
    };
    let mut judged = judge_grant(&t, sock_kind::IO_URING);
    if (judged & verdict::CLASS_MASK) >> verdict::CLASS_SHIFT == rule_class::UNBOUND {
        // No credential, so no grant: and a ring's operations are seen by no hook here, so
        // the unbound posture (which judges what is seen) cannot judge them.
        judged = unjudged(&t);
    }
    if refuses(judged) && kill_current() {
        judged |= verdict::KILLED;
    }
    if always || refuses(judged) {
        record(pid_tgid, &t, judged, op, fd);
    }
}

#[inline(always)]
fn record(pid_tgid: u64, t: &Tracked, judged: u32, op: u32, fd: i32) {
    let Some(mut slot) = reserve::<UringEvent>(&PROC_EVENTS, hook::URING_SYSCALL) else {
        return;
    };
    // SAFETY: the reservation is sized for UringEvent; every field is written below.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::URING, hook::URING_SYSCALL, pid_tgid, t, 0);
    ev.header.verdict = judged;
    ev.op = op;
    ev.fd = fd;
    slot.submit(wake_flags_of::<UringEvent>(&PROC_EVENTS));
}
