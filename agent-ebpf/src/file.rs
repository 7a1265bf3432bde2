//! File writes: one entry and one exit program, each attached to the `sys_enter_*` /
//! `sys_exit_*` tracepoints of every watched syscall (agent_common::syscalls::WATCHED).
//!
//! Entry (tracked processes only; everything else costs one map lookup): decode the arguments,
//! drop opens without write intent, copy the path strings, and park the call in `PENDING`. A
//! call that cannot be parked (the map is full: an agent can fill it with threads blocked in
//! opens) cannot be followed to its exit: it is judged unjudged there and then (a kill in
//! enforce mode) and recorded.
//! Exit: build the record, judge it, then emit it. Where the kernel has the object (the file
//! an open returned, the file behind an fd argument) its path is rebuilt from kernel objects
//! and the object is judged by what it is (a device node as its device); for name-based calls
//! the directory the name is resolved from (cwd, dirfd, or the process root for absolute
//! names) comes from kernel objects and the name is the string copied at entry (the daemon
//! judges those, where no BPF LSM path hook did before the call).
use core::ffi::c_void;

use agent_common::{
    AT_FDCWD, FilePath, Object, PendingFile, RAW_DEFERRED, RAW_PATH_LEN, RAW_UNREADABLE, Tracked, WalkedPath, config,
    contain::{S_IFBLK, S_IFCHR, S_IFMT, verdict},
    file_hook, file_op, hook, kind, path_source,
    syscalls::{self, Shape},
    walk,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    contain::{judge_device, judge_object, kill_current, refuses, unjudged},
    kernel::{
        KPtr, current_task, file_of_fd, file_path, fill_header, fs_path, off, read_ptr, tp, walk_empty, walk_path,
        walk_unavailable,
    },
    maps::{FILE_SCRATCH, FILE_WALK, PENDING, SCRATCH, count, degraded, file_ring, tracked},
    record::{carries_name, put_raw, put_walk, send},
};

const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const WRITE_INTENT: u64 = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC;
const O_PATH: u64 = 0o10000000;
const AT_REMOVEDIR: u64 = 0x200;

#[tracepoint]
pub fn sys_enter_file(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(t) = tracked(tgid) else {
        return 0;
    };
    let _ = enter(&ctx, pid_tgid, &t);
    0
}

/// A sys_enter record's number and arguments (`int __syscall_nr; unsigned long args[6];`).
#[repr(C)]
#[derive(Clone, Copy)]
struct SysEnter {
    nr: i64,
    args: [u64; 6],
}

/// The syscall number and arguments of a sys_enter record: one read where the arguments
/// follow the number as in every kernel's format, else one read each.
#[inline(always)]
fn sys_enter(ctx: &TracePointContext) -> Result<SysEnter, i32> {
    let (nr_off, args_off) = (tp!(sys_nr) as usize, tp!(sys_args) as usize);
    if args_off == nr_off + 8 {
        // SAFETY: offsets from this kernel's syscall tracepoint format.
        return unsafe { ctx.read_at::<SysEnter>(nr_off) };
    }
    // SAFETY: as above.
    let nr = unsafe { ctx.read_at::<i32>(nr_off) }?;
    let mut r = SysEnter {
        nr: nr as i64,
        args: [0; 6],
    };
    for (n, a) in r.args.iter_mut().enumerate().take(5) {
        // SAFETY: as above.
        *a = unsafe { ctx.read_at::<u64>(args_off + 8 * n) }.unwrap_or(0);
    }
    Ok(r)
}

/// The kernel's dev_t (major << 20 | minor) from mknod's `dev` (new_decode_dev).
#[inline(always)]
fn kernel_dev(dev: u32) -> u32 {
    let major = (dev & 0xfff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    (major << 20) | minor
}

#[inline(always)]
fn enter(ctx: &TracePointContext, pid_tgid: u64, t: &Tracked) -> Result<(), i32> {
    let tid = pid_tgid as u32;
    let call = sys_enter(ctx)?;
    let nr = call.nr as i32 as u32;
    let Some(sc) = syscalls::by_nr(nr) else {
        return Ok(());
    };
    let Some(p) = SCRATCH.get_ptr_mut(0) else {
        let v = unjudged(t);
        if refuses(v) {
            kill_current();
        }
        return Err(-1);
    };
    // SAFETY: per-CPU scratch slot owned by this program run.
    let p: &mut PendingFile = unsafe { &mut *p };
    p.syscall_nr = nr;
    p.hook = file_hook::NONE;
    p.verdict = 0;
    p.dev = 0;
    p.flags = 0;
    p.mode = 0;
    p.uid = u32::MAX;
    p.gid = u32::MAX;
    p.fd = -1;
    p.dfd_a = AT_FDCWD;
    p.dfd_b = AT_FDCWD;
    p.source_a = path_source::DIR_AND_NAME;
    p.source_b = path_source::NONE;
    let [a0, a1, a2, a3, a4, _] = call.args;
    // (dirfd, name) pointers of path a and b.
    let mut name_a: u64 = 0;
    let mut name_b: u64 = 0;
    match sc.shape {
        Shape::Open | Shape::OpenAt | Shape::OpenAt2 | Shape::OpenByHandle | Shape::Creat => {
            p.op = file_op::OPEN_WRITE;
            match sc.shape {
                Shape::OpenByHandle => {
                    // No name: path a is the fd returned (the exit walks it as the object).
                    (p.flags, p.source_a) = (a2, path_source::OBJECT);
                }
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
                    p.flags = unsafe { bpf_probe_read_user(a2 as *const u64) }.unwrap_or(WRITE_INTENT);
                    p.mode = unsafe { bpf_probe_read_user((a2 + 8) as *const u64) }.unwrap_or(0) as u32;
                }
                _ => {
                    (name_a, p.flags, p.mode) = (a0, O_CREAT | O_WRONLY | O_TRUNC, a1 as u32);
                }
            }
            // O_PATH opens nothing for I/O: the kernel drops every other flag (O_CREAT too).
            if p.flags & WRITE_INTENT == 0 || p.flags & O_PATH != 0 {
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
        Shape::Mknod | Shape::MknodAt => {
            p.op = file_op::MKNOD;
            (p.dfd_a, name_a, p.mode, p.dev) = if sc.shape == Shape::Mknod {
                (AT_FDCWD, a0, a1 as u32, kernel_dev(a2 as u32))
            } else {
                (a0 as i32, a1, a2 as u32, kernel_dev(a3 as u32))
            };
        }
        Shape::SetXattr | Shape::RemoveXattr => {
            p.op = if sc.shape == Shape::SetXattr {
                file_op::SETXATTR
            } else {
                file_op::REMOVEXATTR
            };
            (name_a, name_b, p.source_b) = (a0, a1, path_source::NAME_ONLY);
        }
        Shape::FSetXattr | Shape::FRemoveXattr => {
            p.op = if sc.shape == Shape::FSetXattr {
                file_op::SETXATTR
            } else {
                file_op::REMOVEXATTR
            };
            (p.fd, p.source_a, name_b, p.source_b) = (a0 as i32, path_source::OBJECT, a1, path_source::NAME_ONLY);
        }
        Shape::SetXattrAt | Shape::RemoveXattrAt => {
            p.op = if sc.shape == Shape::SetXattrAt {
                file_op::SETXATTR
            } else {
                file_op::REMOVEXATTR
            };
            (p.dfd_a, name_a, p.flags, name_b, p.source_b) = (a0 as i32, a1, a2, a3, path_source::NAME_ONLY);
        }
        Shape::UtimensAt => {
            p.op = file_op::UTIMES;
            (p.dfd_a, name_a, p.flags) = (a0 as i32, a1, a3);
            if a1 == 0 {
                // futimens: the file of the fd.
                (p.fd, p.source_a) = (a0 as i32, path_source::OBJECT);
            }
        }
        Shape::Utimes => (p.op, name_a) = (file_op::UTIMES, a0),
        Shape::FutimesAt => (p.op, p.dfd_a, name_a) = (file_op::UTIMES, a0 as i32, a1),
    }
    (p.ptr_a, p.ptr_b) = (name_a, name_b);
    (p.raw_len_a, p.raw_truncated_a) = if p.op == file_op::OPEN_WRITE && name_a != 0 {
        (0, RAW_DEFERRED)
    } else {
        read_name(name_a, &mut p.raw_a)
    };
    (p.raw_len_b, p.raw_truncated_b) = read_name(name_b, &mut p.raw_b);
    if PENDING.insert(&tid, &*p, 0).is_err() {
        // Fail closed: a call the kernel cannot follow is judged now, and recorded (with
        // the names as given: walking here would make this program too large to verify).
        count(agent_common::counter::PENDING_FULL);
        if p.raw_truncated_a == RAW_DEFERRED {
            (p.raw_len_a, p.raw_truncated_a) = read_name(name_a, &mut p.raw_a);
        }
        let mut v = unjudged(t);
        if refuses(v) && kill_current() {
            v |= verdict::KILLED | verdict::AFTER_EFFECT;
        }
        unfollowed(pid_tgid, t, p, v);
    }
    Ok(())
}

/// The record of a call the kernel could not follow to its exit: its names as given.
#[inline(never)]
fn unfollowed(pid_tgid: u64, t: &Tracked, p: &PendingFile, judged: u32) {
    let Some(ev) = FILE_SCRATCH.get_ptr_mut(0) else {
        count(agent_common::counter::lost(hook::FILE_SYSCALL));
        return;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.header, kind::FILE, hook::FILE_SYSCALL, pid_tgid, t, 0);
    ev.header.verdict = judged;
    ev.op = p.op;
    ev.hook = file_hook::NONE;
    ev.syscall_nr = p.syscall_nr;
    ev.ret = 0;
    ev.flags = p.flags;
    ev.mode = p.mode;
    ev.uid = p.uid;
    ev.gid = p.gid;
    ev.obj = Object::default();
    let mut end = 0;
    for (head, raw, len, truncated) in [
        (&mut ev.a, &p.raw_a, p.raw_len_a, p.raw_truncated_a),
        (&mut ev.b, &p.raw_b, p.raw_len_b, p.raw_truncated_b),
    ] {
        head.source = if len > 0 {
            path_source::NAME_ONLY
        } else {
            path_source::NONE
        };
        end = put_walk(&mut ev.text, end, head, core::ptr::null());
        end = put_raw(&mut ev.text, end, head, raw.as_ptr(), len, truncated);
    }
    send(file_ring(judged), ev, end, hook::FILE_SYSCALL);
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
    // SAFETY: offset from this kernel's syscall tracepoint format.
    let ret = unsafe { ctx.read_at::<i64>(tp!(sys_ret) as usize) }.unwrap_or(0);
    // An open's name, where its record needs it: a failed open has no file to report.
    if p.raw_truncated_a == RAW_DEFERRED && ret < 0 {
        (p.raw_len_a, p.raw_truncated_a) = read_name(p.ptr_a, &mut p.raw_a);
    }
    if p.raw_truncated_a == RAW_UNREADABLE || p.raw_truncated_b == RAW_UNREADABLE {
        count(agent_common::counter::READ_ERROR);
    }
    let tgid = (pid_tgid >> 32) as u32;
    // The process may have left the map (exited) between entry and exit.
    if let Some(t) = tracked(tgid) {
        report(pid_tgid, &t, p, ret);
    }
    let _ = PENDING.remove(&tid);
    0
}

/// Builds the record of call `p` (returned `ret`) in per-CPU scratch, judges what the kernel
/// can judge at this point, then emits it.
#[inline(always)]
fn report(pid_tgid: u64, t: &Tracked, p: &mut PendingFile, ret: i64) {
    let (Some(ev), Some(walk_a), Some(walk_b)) = (
        FILE_SCRATCH.get_ptr_mut(0),
        FILE_WALK.get_ptr_mut(0),
        FILE_WALK.get_ptr_mut(1),
    ) else {
        count(agent_common::counter::lost(hook::FILE_SYSCALL));
        if refuses(unjudged(t)) {
            kill_current();
        }
        return;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let (ev, walk_a, walk_b) = unsafe { (&mut *ev, &mut *walk_a, &mut *walk_b) };
    let via_lsm = if p.hook != file_hook::NONE {
        agent_common::flags::VIA_LSM
    } else {
        0
    };
    fill_header(&mut ev.header, kind::FILE, hook::FILE_SYSCALL, pid_tgid, t, via_lsm);
    ev.op = p.op;
    ev.hook = p.hook;
    ev.syscall_nr = p.syscall_nr;
    ev.ret = ret;
    ev.flags = p.flags;
    ev.mode = p.mode;
    ev.uid = p.uid;
    ev.gid = p.gid;
    ev.obj = Object::default();
    let task = current_task();
    // Path a: for a successful open the returned fd is the object itself.
    let object_fd = if p.op == file_op::OPEN_WRITE && ret >= 0 {
        ret as i32
    } else {
        p.fd
    };
    let object = fill_path(task, walk_a, &mut ev.a, p.source_a, object_fd);
    // A successful open whose file is out of reach (another thread closed its fd already):
    // its name is only what the caller's memory says now, which the caller can have
    // rewritten since the kernel read it. Not judged by that name (fail closed, below).
    // (Where this kernel has no path fields every path is a name as passed, judged by the
    // daemon as before.)
    let lost_object = p.op == file_op::OPEN_WRITE
        && ret >= 0
        && ev.a.source == path_source::DIR_AND_NAME
        && !degraded(config::degraded::PATHS);
    if ev.a.source == path_source::DIR_AND_NAME && p.raw_truncated_a == RAW_DEFERRED {
        // For the record: the name as the caller's memory holds it now.
        (p.raw_len_a, p.raw_truncated_a) = read_name(p.ptr_a, &mut p.raw_a);
        if p.raw_truncated_a == RAW_UNREADABLE {
            count(agent_common::counter::READ_ERROR);
        }
    }
    if ev.a.source == path_source::DIR_AND_NAME {
        walk_base(task, walk_a, p.dfd_a, &p.raw_a, p.raw_len_a);
    }
    fill_path(task, walk_b, &mut ev.b, p.source_b, -1);
    if ev.b.source == path_source::DIR_AND_NAME {
        walk_base(task, walk_b, p.dfd_b, &p.raw_b, p.raw_len_b);
    }
    let fmt = p.mode & S_IFMT;
    let device_node = p.op == file_op::MKNOD && (fmt == S_IFCHR || fmt == S_IFBLK);
    if p.op == file_op::MKNOD {
        ev.obj.mode = p.mode;
        ev.obj.rdev = p.dev;
    }
    if p.hook != file_hook::NONE {
        // A BPF LSM hook judged the operation before it happened (and refused it, or let it
        // through): its verdict is the record's.
        ev.header.verdict = p.verdict;
    } else if device_node && ret >= 0 {
        // A device node, judged as the device it names (its name does not matter), where no
        // BPF LSM path hook refused it before it existed: the caller is killed before it can
        // use it, and every open of it is judged by the device too.
        let mut judged = judge_device(t, p.mode, p.dev);
        if refuses(judged) && kill_current() {
            judged |= verdict::KILLED | verdict::AFTER_EFFECT;
        }
        ev.header.verdict = judged;
    } else if ret >= 0 {
        // Judgement at the syscall's exit: the operation is done, so a refusal can only be a
        // SIGKILL before the process uses its result. Only an object (an opened file, an
        // fd's file) has a whole path here; a name-based operation (rename, unlink, ...) is
        // left to the daemon.
        let mut judged = if lost_object {
            unjudged(t)
        } else if ev.a.source == path_source::OBJECT && ev.b.source != path_source::DIR_AND_NAME {
            let inode = if object.is_null() {
                core::ptr::null()
            } else {
                read_ptr(object, off!(file_f_inode)).unwrap_or_default()
            };
            judge_object(t, inode, walk_a, &mut ev.obj)
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
    // The text: each path's walk, and its name where the path carries one.
    let mut end = put_walk(&mut ev.text, 0, &mut ev.a, walk_a);
    let (raw_a, truncated_a) = if carries_name(ev.a.source) {
        (p.raw_len_a, p.raw_truncated_a)
    } else {
        (0, 0)
    };
    end = put_raw(&mut ev.text, end, &mut ev.a, p.raw_a.as_ptr(), raw_a, truncated_a);
    end = put_walk(&mut ev.text, end, &mut ev.b, walk_b);
    let (raw_b, truncated_b) = if carries_name(ev.b.source) {
        (p.raw_len_b, p.raw_truncated_b)
    } else {
        (0, 0)
    };
    end = put_raw(&mut ev.text, end, &mut ev.b, p.raw_b.as_ptr(), raw_b, truncated_b);
    if !send(file_ring(ev.header.verdict), ev, end, hook::FILE_SYSCALL) {
        // Counted by send. A record the daemon was to judge (a name-based call) is now
        // judged by nobody: it gets the unjudged verdict here instead (fail closed).
        if ev.header.verdict & verdict::UNDECIDED != 0 {
            let v = unjudged(t);
            if refuses(v) {
                kill_current();
            }
        }
    }
}

/// Fills the head of one path of a record and walks the object it names into `walk`: the
/// file behind `object_fd` where there is one (returned), else nothing (the caller walks
/// the directory of a [`path_source::DIR_AND_NAME`] path with [`walk_base`]).
#[inline(always)]
fn fill_path(task: KPtr, walk: &mut WalkedPath, out: &mut FilePath, source: u8, object_fd: i32) -> KPtr {
    walk_empty(walk);
    if source == path_source::NONE || source == path_source::NAME_ONLY {
        out.source = source;
        return core::ptr::null();
    }
    if degraded(config::degraded::PATHS) {
        // No kernel objects to walk on this kernel: the name as passed, flagged.
        out.source = path_source::DIR_AND_NAME;
        walk_unavailable(walk);
        return core::ptr::null();
    }
    if object_fd >= 0
        && let Ok(file) = file_of_fd(task, object_fd)
    {
        out.source = path_source::OBJECT;
        walk_path(file_path(file), walk);
        return file;
    }
    out.source = path_source::DIR_AND_NAME;
    core::ptr::null()
}

/// Walks the directory the name `raw` is resolved from into `walk`: the process root for an
/// absolute name, the cwd, or the directory behind `dfd`. Left as it is where path walking
/// is off on this kernel.
#[inline(always)]
fn walk_base(task: KPtr, walk: &mut WalkedPath, dfd: i32, raw: &[u8; RAW_PATH_LEN], raw_len: u16) {
    if walk.flags & walk::UNAVAILABLE != 0 {
        return;
    }
    let base = if raw_len > 0 && raw[0] == b'/' {
        fs_path(task, true)
    } else if dfd == AT_FDCWD {
        fs_path(task, false)
    } else {
        file_of_fd(task, dfd).map(file_path)
    };
    match base {
        Ok(path) => walk_path(path, walk),
        Err(_) => walk_empty(walk),
    }
}
