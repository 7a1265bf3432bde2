//! File writes: one entry and one exit program, each attached to the `sys_enter_*` /
//! `sys_exit_*` tracepoints of every watched syscall (agent_common::syscalls::WATCHED).
//!
//! Entry (tracked processes only; everything else costs one map lookup): decode the arguments,
//! drop opens without write intent, copy the path strings, and park the call in `PENDING`.
//! Exit: build one record with the result. Where the kernel has the object (the file an open
//! returned, the file behind an fd argument) its path is rebuilt from kernel objects; for
//! name-based calls the directory the name is resolved from (cwd, dirfd, or the process root
//! for absolute names) comes from kernel objects and the name is the string copied at entry.
use core::ffi::c_void;

use agent_common::{
    AT_FDCWD, FileEvent, FilePath, PendingFile, RAW_PATH_LEN, RAW_UNREADABLE, config,
    contain::{class, verdict},
    counter, file_hook, file_op, kind, path_source,
    syscalls::{self, Shape},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    contain::{judge_path, kill_current, refuses},
    kernel::{
        KPtr, current_task, file_of_fd, file_path, fill_header, fs_path, tp, walk_empty, walk_path, walk_unavailable,
    },
    maps::{EVENTS, PENDING, SCRATCH, count, degraded, tracked, wake_flags},
};

const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const WRITE_INTENT: u64 = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC;
const AT_REMOVEDIR: u64 = 0x200;

#[tracepoint]
pub fn sys_enter_file(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tracked(tgid).is_none() {
        return 0;
    }
    let _ = enter(&ctx, pid_tgid as u32);
    0
}

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: offsets from this kernel's syscall tracepoint format.
    unsafe { ctx.read_at::<u64>(tp!(sys_args) as usize + 8 * n) }.unwrap_or(0)
}

#[inline(always)]
fn enter(ctx: &TracePointContext, tid: u32) -> Result<(), i32> {
    // SAFETY: offset from this kernel's syscall tracepoint format.
    let nr = unsafe { ctx.read_at::<i32>(tp!(sys_nr) as usize) }? as u32;
    let Some(sc) = syscalls::by_nr(nr) else {
        return Ok(());
    };
    let Some(p) = SCRATCH.get_ptr_mut(0) else {
        return Err(-1);
    };
    // SAFETY: per-CPU scratch slot owned by this program run.
    let p: &mut PendingFile = unsafe { &mut *p };
    p.syscall_nr = nr;
    p.hook = file_hook::NONE;
    p.verdict = 0;
    p._pad1 = 0;
    p.flags = 0;
    p.mode = 0;
    p.uid = u32::MAX;
    p.gid = u32::MAX;
    p.fd = -1;
    p.dfd_a = AT_FDCWD;
    p.dfd_b = AT_FDCWD;
    p.source_a = path_source::DIR_AND_NAME;
    p.source_b = path_source::NONE;
    let (a0, a1, a2, a3, a4) = (arg(ctx, 0), arg(ctx, 1), arg(ctx, 2), arg(ctx, 3), arg(ctx, 4));
    // (dirfd, name) pointers of path a and b.
    let mut name_a: u64 = 0;
    let mut name_b: u64 = 0;
    match sc.shape {
        Shape::Open | Shape::OpenAt | Shape::OpenAt2 | Shape::Creat => {
            p.op = file_op::OPEN_WRITE;
            match sc.shape {
                Shape::Open => {
                    (name_a, p.flags, p.mode) = (a0, a1, a2 as u32);
                }
                Shape::OpenAt => {
                    (p.dfd_a, name_a, p.flags, p.mode) = (a0 as i32, a1, a2, a3 as u32);
                }
                Shape::OpenAt2 => {
                    (p.dfd_a, name_a) = (a0 as i32, a1);
                    // struct open_how { u64 flags; u64 mode; u64 resolve; }
                    // SAFETY: user memory read through the helper.
                    p.flags = unsafe { bpf_probe_read_user(a2 as *const u64) }.unwrap_or(0);
                    p.mode = unsafe { bpf_probe_read_user((a2 + 8) as *const u64) }.unwrap_or(0) as u32;
                }
                _ => {
                    (name_a, p.flags, p.mode) = (a0, O_CREAT | O_WRONLY | O_TRUNC, a1 as u32);
                }
            }
            if p.flags & WRITE_INTENT == 0 {
                return Ok(());
            }
        }
        Shape::Truncate => (p.op, name_a) = (file_op::TRUNCATE, a0),
        Shape::FTruncate => (p.op, p.fd, p.source_a) = (file_op::TRUNCATE, a0 as i32, path_source::OBJECT),
        Shape::Rename => (p.op, name_a, name_b, p.source_b) = (file_op::RENAME, a0, a1, path_source::DIR_AND_NAME),
        Shape::RenameAt | Shape::RenameAt2 => {
            (p.op, p.dfd_a, name_a, p.dfd_b, name_b) = (file_op::RENAME, a0 as i32, a1, a2 as i32, a3);
            p.source_b = path_source::DIR_AND_NAME;
            if sc.shape == Shape::RenameAt2 {
                p.flags = a4;
            }
        }
        Shape::Unlink => (p.op, name_a) = (file_op::UNLINK, a0),
        Shape::UnlinkAt => {
            (p.dfd_a, name_a, p.flags) = (a0 as i32, a1, a2);
            p.op = if a2 & AT_REMOVEDIR != 0 {
                file_op::RMDIR
            } else {
                file_op::UNLINK
            };
        }
        Shape::Rmdir => (p.op, name_a) = (file_op::RMDIR, a0),
        Shape::Mkdir => (p.op, name_a, p.mode) = (file_op::MKDIR, a0, a1 as u32),
        Shape::MkdirAt => (p.op, p.dfd_a, name_a, p.mode) = (file_op::MKDIR, a0 as i32, a1, a2 as u32),
        Shape::Link => (p.op, name_a, name_b, p.source_b) = (file_op::LINK, a0, a1, path_source::DIR_AND_NAME),
        Shape::LinkAt => {
            (p.op, p.dfd_a, name_a, p.dfd_b, name_b, p.flags) = (file_op::LINK, a0 as i32, a1, a2 as i32, a3, a4);
            p.source_b = path_source::DIR_AND_NAME;
        }
        // a = the new link (created), b = its target text (never resolved).
        Shape::Symlink => (p.op, name_b, name_a, p.source_b) = (file_op::SYMLINK, a0, a1, path_source::NAME_ONLY),
        Shape::SymlinkAt => {
            (p.op, name_b, p.dfd_a, name_a) = (file_op::SYMLINK, a0, a1 as i32, a2);
            p.source_b = path_source::NAME_ONLY;
        }
        Shape::Chmod => (p.op, name_a, p.mode) = (file_op::CHMOD, a0, a1 as u32),
        Shape::FChmod => (p.op, p.fd, p.mode, p.source_a) = (file_op::CHMOD, a0 as i32, a1 as u32, path_source::OBJECT),
        Shape::FChmodAt | Shape::FChmodAt2 => {
            (p.op, p.dfd_a, name_a, p.mode) = (file_op::CHMOD, a0 as i32, a1, a2 as u32);
            if sc.shape == Shape::FChmodAt2 {
                p.flags = a3;
            }
        }
        Shape::Chown => (p.op, name_a, p.uid, p.gid) = (file_op::CHOWN, a0, a1 as u32, a2 as u32),
        Shape::FChown => {
            (p.op, p.fd, p.uid, p.gid, p.source_a) =
                (file_op::CHOWN, a0 as i32, a1 as u32, a2 as u32, path_source::OBJECT)
        }
        Shape::FChownAt => {
            (p.op, p.dfd_a, name_a, p.uid, p.gid, p.flags) = (file_op::CHOWN, a0 as i32, a1, a2 as u32, a3 as u32, a4);
        }
    }
    (p.ptr_a, p.ptr_b) = (name_a, name_b);
    (p.raw_len_a, p.raw_truncated_a) = read_name(name_a, &mut p.raw_a);
    (p.raw_len_b, p.raw_truncated_b) = read_name(name_b, &mut p.raw_b);
    if PENDING.insert(&tid, p, 0).is_err() {
        count(counter::PENDING_FULL);
    }
    Ok(())
}

/// Copies a NUL-terminated name from user memory; returns (length, truncated).
#[inline(always)]
fn read_name(ptr: u64, out: &mut [u8; RAW_PATH_LEN]) -> (u16, u8) {
    if ptr == 0 {
        return (0, 0);
    }
    // SAFETY: the helper bounds the copy to RAW_PATH_LEN.
    let n = unsafe {
        generated::bpf_probe_read_user_str(
            out.as_mut_ptr() as *mut c_void,
            RAW_PATH_LEN as u32,
            ptr as *const c_void,
        )
    };
    if n <= 0 {
        return (0, RAW_UNREADABLE);
    }
    let len = (n - 1) as u16;
    (len, (n as usize == RAW_PATH_LEN) as u8)
}

#[tracepoint]
pub fn sys_exit_file(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(p) = PENDING.get_ptr_mut(&tid) else {
        return 0;
    };
    // SAFETY: map value owned by this thread until removed below.
    let p: &mut PendingFile = unsafe { &mut *p };
    // Names not readable at entry (page not resident): the kernel has read them by now.
    if p.raw_truncated_a == RAW_UNREADABLE {
        (p.raw_len_a, p.raw_truncated_a) = read_name(p.ptr_a, &mut p.raw_a);
    }
    if p.raw_truncated_b == RAW_UNREADABLE {
        (p.raw_len_b, p.raw_truncated_b) = read_name(p.ptr_b, &mut p.raw_b);
    }
    if p.raw_truncated_a == RAW_UNREADABLE || p.raw_truncated_b == RAW_UNREADABLE {
        count(counter::READ_ERROR);
    }
    exit(&ctx, pid_tgid, p);
    let _ = PENDING.remove(&tid);
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext, pid_tgid: u64, p: &PendingFile) {
    // SAFETY: offset from this kernel's syscall tracepoint format.
    let ret = unsafe { ctx.read_at::<i64>(tp!(sys_ret) as usize) }.unwrap_or(0);
    let tgid = (pid_tgid >> 32) as u32;
    let Some(tracked) = tracked(tgid) else {
        return; // the process left the map (exited) between entry and exit
    };
    let Some(mut slot) = EVENTS.reserve::<FileEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    // SAFETY: the reservation is sized for FileEvent; the fields userspace reads are written.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    let via_lsm = if p.hook != file_hook::NONE {
        agent_common::flags::VIA_LSM
    } else {
        0
    };
    fill_header(&mut ev.header, kind::FILE, pid_tgid, &tracked, via_lsm);
    ev.op = p.op;
    ev.hook = p.hook;
    ev.syscall_nr = p.syscall_nr;
    ev.ret = ret;
    ev.flags = p.flags;
    ev.mode = p.mode;
    ev.uid = p.uid;
    ev.gid = p.gid;
    ev._pad1 = 0;
    let task = current_task();
    // Path a: for a successful open the returned fd is the object itself.
    let object_fd = if p.op == file_op::OPEN_WRITE && ret >= 0 {
        ret as i32
    } else {
        p.fd
    };
    fill_path(
        task,
        &mut ev.a,
        p.source_a,
        object_fd,
        p.dfd_a,
        &p.raw_a,
        p.raw_len_a,
        p.raw_truncated_a,
    );
    fill_path(
        task,
        &mut ev.b,
        p.source_b,
        -1,
        p.dfd_b,
        &p.raw_b,
        p.raw_len_b,
        p.raw_truncated_b,
    );
    // A BPF LSM path hook judged the operation before it happened (and refused it, or let it
    // through): its verdict is the record's.
    if p.hook != file_hook::NONE {
        ev.header.verdict = p.verdict;
    } else if ret >= 0 {
        // Judgement at the syscall's exit: the operation is done, so a refusal can only be a
        // SIGKILL before the process uses its result. Only an opened file has a whole path
        // here (the object); a name-based operation (rename, unlink, ...) is left to the
        // daemon.
        let mut judged = if ev.a.source == path_source::OBJECT && ev.b.source == path_source::NONE {
            judge_path(&tracked, class::WRITE, &ev.a.walked)
        } else {
            verdict::UNDECIDED
        };
        if refuses(judged) && kill_current() {
            judged |= verdict::KILLED;
            if p.op != file_op::OPEN_WRITE || p.flags & (O_CREAT | O_TRUNC) != 0 {
                judged |= verdict::AFTER_EFFECT;
            }
        }
        ev.header.verdict = judged;
    }
    slot.submit(wake_flags());
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill_path(
    task: KPtr,
    out: &mut FilePath,
    source: u8,
    object_fd: i32,
    dfd: i32,
    raw: &[u8; RAW_PATH_LEN],
    raw_len: u16,
    raw_truncated: u8,
) {
    out._pad = 0;
    out.raw_len = raw_len;
    out.raw_truncated = raw_truncated;
    if raw_len > 0 {
        // SAFETY: both buffers are RAW_PATH_LEN bytes.
        unsafe {
            generated::bpf_probe_read_kernel(
                out.raw.as_mut_ptr() as *mut c_void,
                RAW_PATH_LEN as u32,
                raw.as_ptr() as *const c_void,
            )
        };
    }
    if source == path_source::NONE || source == path_source::NAME_ONLY {
        out.source = source;
        walk_empty(&mut out.walked);
        return;
    }
    if degraded(config::degraded::PATHS) {
        // No kernel objects to walk on this kernel: the name as passed, flagged.
        out.source = path_source::DIR_AND_NAME;
        walk_unavailable(&mut out.walked);
        return;
    }
    if object_fd >= 0
        && let Ok(file) = file_of_fd(task, object_fd)
    {
        out.source = path_source::OBJECT;
        walk_path(file_path(file), &mut out.walked);
        return;
    }
    out.source = path_source::DIR_AND_NAME;
    let base = if raw_len > 0 && raw[0] == b'/' {
        fs_path(task, true)
    } else if dfd == AT_FDCWD {
        fs_path(task, false)
    } else {
        file_of_fd(task, dfd).map(file_path)
    };
    match base {
        Ok(path) => walk_path(path, &mut out.walked),
        Err(_) => walk_empty(&mut out.walked),
    }
}
