//! Lineage: a child of a tracked process is tracked from its fork on; the end of a process
//! removes it. Threads are not processes and are never added.
use agent_common::{
    ExitEvent, ForkEvent, Tracked,
    config::{self, ABSENT},
    contain::verdict,
    counter, hook, kind, track_reason,
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{
    contain::{kill_current, refuses, unjudged},
    kernel::{KPtr, current_task, fill_header, off, read_ptr, read_u32, read_u64, tp},
    maps::{PROC_EVENTS, TRACKED, count, degraded, reserve, self_tgid, tracked, wake_flags_of},
};

/// sched_process_fork(struct task_struct *parent, struct task_struct *child), in the parent.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let parent_tgid = (pid_tgid >> 32) as u32;
    let Some(parent) = tracked(parent_tgid) else {
        return 0;
    };
    let child: KPtr = ctx.arg::<u64>(1) as KPtr;
    let Ok(child_tgid) = read_u32(child, off!(task_tgid)) else {
        // The child may be a new process the map will not hold: fail closed.
        count(counter::READ_ERROR);
        if refuses(unjudged(&parent)) {
            kill_current();
        }
        return 0;
    };
    if child_tgid == parent_tgid || child_tgid == self_tgid() {
        return 0; // a new thread, or (never) the daemon itself
    }
    let child_start_ns = read_u64(child, off!(task_start_boottime)).unwrap_or(0);
    let entry = Tracked {
        start_ns: child_start_ns,
        root_tgid: parent.root_tgid,
        reason: track_reason::INHERITED,
        task: parent.task,
        guard_set: parent.guard_set,
        expires_ns: parent.expires_ns,
    };
    // A child the tracked map has no room for would run unwatched: fail closed. The parent
    // is killed here (a signal reaches only the current thread); the record names the child,
    // which the daemon kills.
    let mut judged = 0;
    if TRACKED.insert(&child_tgid, &entry, 0).is_err() {
        count(counter::TRACKED_FULL);
        judged = unjudged(&parent);
        if refuses(judged) && kill_current() {
            judged |= verdict::KILLED;
        }
    }
    let Some(mut slot) = reserve::<ForkEvent>(&PROC_EVENTS, hook::SCHED_FORK) else {
        return 0;
    };
    // SAFETY: the reservation is sized for ForkEvent; every field is written below.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::FORK, hook::SCHED_FORK, pid_tgid, &parent, 0);
    ev.header.verdict = judged;
    ev.child_tgid = child_tgid;
    ev.root_tgid = parent.root_tgid;
    ev.child_start_ns = child_start_ns;
    slot.submit(wake_flags_of::<ForkEvent>(&PROC_EVENTS));
    0
}

/// sched_process_exit, in the exiting thread.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(tracked) = tracked(tgid) else {
        return 0;
    };
    let group_dead_off = tp!(exit_group_dead);
    let group_dead = if group_dead_off != ABSENT {
        // SAFETY: offset from this kernel's tracepoint format.
        (unsafe { ctx.read_at::<u8>(group_dead_off as usize) }).unwrap_or(0) != 0
    } else {
        // do_exit has already counted this thread out of signal->live: 0 means it was the
        // last one (two threads ending together may both see 0; the second removal is a
        // no-op). Unreadable: keep tracking (a stale entry over-tracks a later process with
        // the same tgid; an untracked live thread would be an escape).
        read_ptr(current_task(), off!(task_signal))
            .and_then(|signal| read_u32(signal, off!(signal_live)))
            .map(|live| live == 0)
            .unwrap_or(false)
    };
    if !group_dead {
        return 0;
    }
    let _ = TRACKED.remove(&tgid);
    let exit_code = if degraded(config::degraded::EXIT_CODE) {
        u32::MAX
    } else {
        read_u32(current_task(), off!(task_exit_code)).unwrap_or(u32::MAX)
    };
    let Some(mut slot) = reserve::<ExitEvent>(&PROC_EVENTS, hook::SCHED_EXIT) else {
        return 0;
    };
    // SAFETY: as above.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::EXIT, hook::SCHED_EXIT, pid_tgid, &tracked, 0);
    ev.exit_code = exit_code;
    ev._pad = 0;
    slot.submit(wake_flags_of::<ExitEvent>(&PROC_EVENTS));
    0
}
