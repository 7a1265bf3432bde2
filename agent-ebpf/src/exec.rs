//! exec: report execs of tracked processes; an untracked process whose new image matches an
//! agent selector (comm or executable inode) becomes tracked here, in the kernel, so nothing it
//! does before userspace hears of it is missed.
use core::ffi::c_void;

use agent_common::{
    ARGV_LEN, AT_FDCWD, COMM_LEN, ExecEvent, FILENAME_LEN, InodeKey, NO_TASK, PendingExec, Tracked, WalkedPath, config,
    contain::{class, verdict},
    counter, flags, hook, kind, select, track_reason,
};
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    contain::{judge_path, kill_current, refuses, unjudged},
    kernel::{
        KPtr, current_task, file_of_fd, file_path, fill_header, fs_path, off, parent_tgid, process_start_ns, read_ptr,
        read_u32, read_u64, tp, walk_empty, walk_path,
    },
    lsm::{CHECKED, REPORTED},
    maps::{
        CONFIG, EXEC_CHECKED, EXEC_PENDING, EXEC_WALK, POD_GUARDS, PROC_EVENTS, SELECT_CGROUP, SELECT_COMM, SELECT_EXE,
        SELECT_UID, TRACKED, active, config_value64, count, degraded, reserve, self_tgid, tracked, wake_flags_of,
    },
};

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == self_tgid() {
        return 0;
    }
    let task = current_task();
    // Plain pointers (null = unknown), not Result/Option: a Result kept live across branches
    // is spilled as tag + payload, and older verifiers (5.10) reject the later read of a
    // payload slot that the error path never wrote.
    let mm: KPtr = read_ptr(task, off!(task_mm)).unwrap_or_default();
    let exe_file: KPtr = if mm.is_null() {
        core::ptr::null()
    } else {
        read_ptr(mm, off!(mm_exe_file)).unwrap_or_default()
    };
    // Did the BPF LSM hook check this exec (in the thread that called execve)?
    // SAFETY: offset from this kernel's tracepoint format.
    let old_pid = unsafe { ctx.read_at::<u32>(tp!(exec_old_pid) as usize) }.unwrap_or(0);
    // SAFETY: map lookup, copied out.
    let checked = unsafe { EXEC_CHECKED.get(&old_pid) }.copied();
    let mut rec_flags = if checked.is_some() {
        let _ = EXEC_CHECKED.remove(&old_pid);
        flags::VIA_LSM
    } else {
        0
    };
    // A selected process the tracked map has no room for would run unwatched: fail closed.
    let mut untrackable = 0;
    let tracked = match tracked(tgid) {
        Some(t) => t,
        None => {
            if !active() || !selected(task, exe_file) {
                return 0;
            }
            let entry = Tracked {
                start_ns: process_start_ns(task).unwrap_or(0),
                root_tgid: tgid,
                reason: track_reason::SELECTED,
                task: NO_TASK,
                guard_set: pod_guard_set(task),
                expires_ns: 0,
            };
            if TRACKED.insert(&tgid, &entry, 0).is_err() {
                count(counter::TRACKED_FULL);
                untrackable = unjudged(&entry);
                if refuses(untrackable) && kill_current() {
                    untrackable |= verdict::KILLED;
                }
            }
            rec_flags |= flags::NEWLY_SELECTED;
            entry
        }
    };

    // The executable actually running, resolved by the kernel: walked and judged before a
    // ring slot is asked for, so the verdict never depends on the ring having room.
    let Some(exe) = EXEC_WALK.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let exe = unsafe { &mut *exe };
    if exe_file.is_null() {
        walk_empty(exe);
    } else {
        walk_path(file_path(exe_file), exe);
    }
    // Judgement: by the LSM hook if it saw this exec (it refuses there; what it let through
    // is reported as it judged), else here, where a refusal can only be a SIGKILL before
    // the new image runs a single instruction. The exec that selects an agent is its start,
    // not one of its actions: never judged.
    let judged = match checked {
        Some(v) => v & !CHECKED,
        None if rec_flags & flags::NEWLY_SELECTED != 0 => untrackable,
        None => {
            let mut judged = judge_path(&tracked, class::EXEC, exe);
            if refuses(judged) && kill_current() {
                judged |= verdict::KILLED;
            }
            judged
        }
    };

    let Some(mut slot) = reserve::<ExecEvent>(&PROC_EVENTS, hook::SCHED_EXEC) else {
        return 0;
    };
    // SAFETY: the reservation is sized for ExecEvent; the fields userspace reads are written
    // below (buffers only up to their recorded lengths).
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(
        &mut ev.header,
        kind::EXEC,
        hook::SCHED_EXEC,
        pid_tgid,
        &tracked,
        rec_flags,
    );
    ev.header.verdict = judged;
    ev.ppid = parent_tgid(task).unwrap_or(0);
    ev.failed_errno = 0;
    // SAFETY: both are WalkedPath-sized.
    unsafe {
        generated::bpf_probe_read_kernel(
            &mut ev.exe as *mut WalkedPath as *mut c_void,
            core::mem::size_of::<WalkedPath>() as u32,
            exe as *const WalkedPath as *const c_void,
        )
    };

    // argv, from the new image's mm.
    ev.argv_len = 0;
    if !degraded(config::degraded::ARGV)
        && !mm.is_null()
        && let (Ok(start), Ok(end)) = (read_u64(mm, off!(mm_arg_start)), read_u64(mm, off!(mm_arg_end)))
        && end > start
    {
        let mut len = (end - start) as usize;
        if len > ARGV_LEN - 1 {
            len = ARGV_LEN - 1;
            ev.header.flags |= flags::ARGV_TRUNCATED;
        }
        let len = len & (ARGV_LEN - 1);
        // SAFETY: len < ARGV_LEN.
        let r = unsafe {
            generated::bpf_probe_read_user(ev.argv.as_mut_ptr() as *mut c_void, len as u32, start as *const c_void)
        };
        if r == 0 {
            ev.argv_len = len as u32;
        } else {
            ev.header.flags |= flags::READ_ERROR;
        }
    }

    // The path as passed to execve: a __data_loc string in the tracepoint record.
    ev.filename_len = 0;
    // SAFETY: offset from this kernel's tracepoint format.
    if let Ok(loc) = unsafe { ctx.read_at::<u32>(tp!(exec_filename) as usize) } {
        let src = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize);
        // SAFETY: the helper bounds the copy to FILENAME_LEN.
        let n = unsafe {
            generated::bpf_probe_read_kernel_str(
                ev.filename.as_mut_ptr() as *mut c_void,
                FILENAME_LEN as u32,
                src as *const c_void,
            )
        };
        if n > 0 {
            ev.filename_len = (n - 1) as u32;
        }
    }
    slot.submit(wake_flags_of::<ExecEvent>(&PROC_EVENTS));
    0
}

/// Does the new image match an agent selector? (agent_common::select: criteria ANDed per
/// selector, one bit per selector.)
#[inline(always)]
fn selected(task: KPtr, exe_file: KPtr) -> bool {
    let mut m = config_value64(&CONFIG.selectors);
    if m == 0 {
        return false;
    }
    // comm
    let free = config_value64(&CONFIG.select_free[select::COMM]);
    if free & m != m {
        let comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
        // SAFETY: map lookup, copied out.
        m &= free | unsafe { SELECT_COMM.get(&comm) }.copied().unwrap_or(0);
        if m == 0 {
            return false;
        }
    }
    // real uid
    let free = config_value64(&CONFIG.select_free[select::UID]);
    if free & m != m {
        let uid = bpf_get_current_uid_gid() as u32;
        // SAFETY: map lookup, copied out.
        m &= free | unsafe { SELECT_UID.get(&uid) }.copied().unwrap_or(0);
        if m == 0 {
            return false;
        }
    }
    // executable inode
    let free = config_value64(&CONFIG.select_free[select::EXE]);
    if free & m != m {
        let mut hit = 0;
        if !degraded(config::degraded::EXE_INODE)
            && !exe_file.is_null()
            && let Ok(inode) = read_ptr(exe_file, off!(file_f_inode))
            && let (Ok(ino), Ok(sb)) = (read_u64(inode, off!(inode_i_ino)), read_ptr(inode, off!(inode_i_sb)))
            && let Ok(dev) = read_u32(sb, off!(sb_s_dev))
        {
            let key = InodeKey { ino, dev, _pad: 0 };
            // SAFETY: map lookup, copied out.
            hit = unsafe { SELECT_EXE.get(&key) }.copied().unwrap_or(0);
        }
        m &= free | hit;
        if m == 0 {
            return false;
        }
    }
    // cgroup v2: the process's cgroup and its ancestors
    let free = config_value64(&CONFIG.select_free[select::CGROUP]);
    if free & m != m {
        m &= free | cgroup_hits(task);
    }
    m != 0
}

/// The selectors naming the current cgroup v2 or one of its ancestors.
#[inline(always)]
fn cgroup_hits(task: KPtr) -> u64 {
    let mut hits = 0u64;
    cgroup_walk(task, |id| {
        // SAFETY: map lookup, copied out.
        hits |= unsafe { SELECT_CGROUP.get(&id) }.copied().unwrap_or(0);
        false
    });
    hits
}

/// The guard set of the pod whose cgroup is the thread's or one of its ancestors (0: none).
#[inline(always)]
fn pod_guard_set(task: KPtr) -> u32 {
    let mut set = 0u32;
    cgroup_walk(task, |id| {
        // SAFETY: map lookup, copied out.
        match unsafe { POD_GUARDS.get(&id) } {
            Some(s) => {
                set = *s;
                true
            }
            None => false,
        }
    });
    set
}

/// Calls `f` with the id of the thread's cgroup v2 and of each ancestor, nearest first, until
/// it returns true.
#[inline(always)]
fn cgroup_walk(task: KPtr, mut f: impl FnMut(u64) -> bool) {
    if degraded(config::degraded::CGROUP) {
        return;
    }
    let mut kn: KPtr = match read_ptr(task, off!(task_cgroups))
        .and_then(|css| read_ptr(css, off!(css_set_dfl_cgrp)))
        .and_then(|cg| read_ptr(cg, off!(cgroup_kn)))
    {
        Ok(p) => p,
        Err(_) => return,
    };
    let (id_off, parent_off) = (off!(kernfs_node_id), off!(kernfs_node_parent));
    for _ in 0..select::CGROUP_LEVELS {
        if kn.is_null() {
            break;
        }
        let Ok(id) = read_u64(kn, id_off) else { break };
        if f(id) {
            break;
        }
        kn = read_ptr(kn, parent_off).unwrap_or_default();
    }
}

// ---- refused execs ----
//
// An execve the kernel refuses (Landlock, an LSM, permissions, noexec) leaves no
// sched_process_exec record; these two programs report it. Attached to the execve/execveat
// syscall tracepoints only (they cost nothing to other syscalls), tracked processes only.

const EPERM: i64 = 1;
const EACCES: i64 = 13;

#[inline(always)]
fn exec_arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: offsets from this kernel's syscall tracepoint format.
    unsafe { ctx.read_at::<u64>(tp!(sys_args) as usize + 8 * n) }.unwrap_or(0)
}

#[inline(always)]
fn exec_enter(filename: u64, dfd: i32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tracked(tgid).is_none() {
        return;
    }
    let p = PendingExec { filename, dfd, _pad: 0 };
    if EXEC_PENDING.insert(&(pid_tgid as u32), &p, 0).is_err() {
        count(counter::PENDING_FULL);
    }
}

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    exec_enter(exec_arg(&ctx, 0), AT_FDCWD);
    0
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    exec_enter(exec_arg(&ctx, 1), exec_arg(&ctx, 0) as i32);
    0
}

#[tracepoint]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: map lookup, copied out.
    let Some(p) = (unsafe { EXEC_PENDING.get(&tid) }).copied() else {
        return 0;
    };
    let _ = EXEC_PENDING.remove(&tid);
    // SAFETY: map lookup, copied out.
    let checked = unsafe { EXEC_CHECKED.get(&tid) }.copied();
    if checked.is_some() {
        let _ = EXEC_CHECKED.remove(&tid);
    }
    // SAFETY: offset from this kernel's syscall tracepoint format.
    let ret = unsafe { ctx.read_at::<i64>(tp!(sys_ret) as usize) }.unwrap_or(0);
    if (ret != -EACCES && ret != -EPERM) || checked.is_some_and(|c| c & REPORTED != 0) {
        return 0; // it ran, failed for another reason, or the LSM hook reported it
    }
    let tgid = (pid_tgid >> 32) as u32;
    let Some(tracked) = tracked(tgid) else {
        return 0;
    };
    let Some(mut slot) = reserve::<ExecEvent>(&PROC_EVENTS, hook::EXEC_SYSCALL) else {
        return 0;
    };
    // SAFETY: the reservation is sized for ExecEvent; the fields userspace reads for a refused
    // exec (header, ppid, lengths, exe, filename) are written.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::EXEC, hook::EXEC_SYSCALL, pid_tgid, &tracked, 0);
    let task = current_task();
    ev.ppid = parent_tgid(task).unwrap_or(0);
    ev.argv_len = 0;
    ev.failed_errno = (-ret) as u32;
    ev.filename_len = 0;
    // SAFETY: the helper bounds the copy to FILENAME_LEN; the process image is unchanged.
    let n = unsafe {
        generated::bpf_probe_read_user_str(
            ev.filename.as_mut_ptr() as *mut c_void,
            FILENAME_LEN as u32,
            p.filename as *const c_void,
        )
    };
    if n > 0 {
        ev.filename_len = (n - 1) as u32;
    }
    // The directory a relative name is resolved from.
    let base = if n > 0 && ev.filename[0] == b'/' {
        Err(0)
    } else if p.dfd == AT_FDCWD {
        fs_path(task, false)
    } else {
        file_of_fd(task, p.dfd).map(file_path)
    };
    match base {
        Ok(dir) => walk_path(dir, &mut ev.exe),
        Err(_) => walk_empty(&mut ev.exe),
    }
    slot.submit(wake_flags_of::<ExecEvent>(&PROC_EVENTS));
    0
}
