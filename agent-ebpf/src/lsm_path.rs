//! BPF LSM path hooks: every name-based file operation (create, mkdir, rmdir, unlink, rename,
//! link, symlink, truncate, chmod, chown) judged before it happens, where the kernel allows
//! BPF LSM. The object is rebuilt from the kernel's own (directory, dentry) pair, so the
//! judgement is on the resolved path, not on a string the caller could race.
//!
//! A refused operation gets EPERM (and a kill verdict a SIGKILL) and never happens. The record
//! is the syscall's own (sys_exit_file), which finds this hook's verdict in the thread's
//! PENDING entry; with no watched syscall in flight (an O_CREAT open, whose record file_open
//! makes once the file exists; io_uring; mknod) a refusal is recorded here.
use core::ffi::c_void;

use agent_common::{
    FileEvent, FilePath, NO_SYSCALL, Tracked,
    contain::{class, verdict},
    counter, file_hook, file_op, kind, path_source,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::lsm,
    programs::LsmContext,
};

use crate::{
    contain::{judge_path, kill_current, kills, refuses},
    kernel::{KPtr, fill_header, walk_empty, walk_path_at},
    lsm::tracked,
    maps::{EVENTS, PATH_WALK, PENDING, count, wake_flags},
};

const EPERM: i32 = 1;

/// A path argument of a hook: `dentry` in directory `dir`, or (null dentry) the object's own
/// `struct path` at `dir`.
#[derive(Clone, Copy)]
struct At {
    dir: KPtr,
    dentry: KPtr,
}

impl At {
    fn entry(dir: u64, dentry: u64) -> At {
        At {
            dir: dir as KPtr,
            dentry: dentry as KPtr,
        }
    }

    fn object(path: u64) -> At {
        At {
            dir: path as KPtr,
            dentry: core::ptr::null(),
        }
    }
}

/// What a hook hands to [`judge`].
struct Call {
    hook: u16,
    op: u16,
    a: At,
    /// The second path of a rename or link (its destination).
    b: Option<At>,
    /// A new symlink's target text (kernel memory), else null.
    target: KPtr,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The write verdict on one path, walked into PATH_WALK[`slot`] (where the record copies it
/// from: every program has one or two walks, never more).
#[inline(never)]
fn judge_write(t: &Tracked, dir: KPtr, dentry: KPtr, slot: u32) -> u32 {
    let Some(w) = PATH_WALK.get_ptr_mut(slot) else {
        return verdict::UNDECIDED;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let w = unsafe { &mut *w };
    walk_path_at(dir, dentry, w);
    judge_path(t, class::WRITE, w)
}

/// Copies the walk in PATH_WALK[`slot`] into `out`.
#[inline(always)]
fn copy_walk(slot: u32, out: &mut agent_common::WalkedPath) {
    let Some(w) = PATH_WALK.get_ptr(slot) else {
        walk_empty(out);
        return;
    };
    // SAFETY: both are WalkedPath-sized.
    unsafe {
        generated::bpf_probe_read_kernel(
            out as *mut agent_common::WalkedPath as *mut c_void,
            core::mem::size_of::<agent_common::WalkedPath>() as u32,
            w as *const c_void,
        )
    };
}

/// Judges `call` (both paths of a rename or link, both walked so the record has both: the
/// first that refuses decides), refuses or kills as the verdict says, and leaves the verdict
/// where the record will be made.
#[inline(always)]
fn judge(ret: i32, call: Call) -> i32 {
    if ret != 0 {
        return ret; // another BPF LSM program refused already
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked(pid_tgid) else {
        return 0;
    };
    let mut judged = judge_write(&t, call.a.dir, call.a.dentry, 0);
    if let Some(b) = call.b {
        let second = judge_write(&t, b.dir, b.dentry, 1);
        let undecided = (judged | second) & verdict::UNDECIDED;
        if !refuses(judged) && (refuses(second) || judged & verdict::ACTION_MASK == 0) {
            judged = second;
        }
        judged |= undecided;
    }
    let refused = refuses(judged);
    if refused {
        judged |= verdict::DENIED;
        if kills(judged) && kill_current() {
            judged |= verdict::KILLED;
        }
    }
    if let Some(p) = PENDING.get_ptr_mut(&(pid_tgid as u32)) {
        // SAFETY: this thread's entry; its syscall's exit reads it.
        let p = unsafe { &mut *p };
        p.hook = call.hook;
        p.verdict = judged;
    } else if refused {
        record(pid_tgid, &t, judged, &call);
    }
    if refused { -EPERM } else { 0 }
}

#[inline(always)]
fn no_raw(p: &mut FilePath, source: u8) {
    p.source = source;
    p.raw_len = 0;
    p.raw_truncated = 0;
    p._pad = 0;
}

/// The record of a refusal with no syscall record to carry it.
#[inline(always)]
fn record(pid_tgid: u64, t: &Tracked, judged: u32, call: &Call) {
    let Some(mut slot) = EVENTS.reserve::<FileEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    // SAFETY: the reservation is sized for FileEvent; the fields userspace reads are written.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::FILE, pid_tgid, t, agent_common::flags::VIA_LSM);
    ev.header.verdict = judged;
    ev.op = call.op;
    ev.hook = call.hook;
    ev.syscall_nr = NO_SYSCALL;
    ev.ret = -(EPERM as i64);
    ev.flags = 0;
    ev.mode = call.mode;
    ev.uid = call.uid;
    ev.gid = call.gid;
    ev._pad1 = 0;
    no_raw(&mut ev.a, path_source::OBJECT);
    copy_walk(0, &mut ev.a.walked);
    if call.b.is_some() {
        no_raw(&mut ev.b, path_source::OBJECT);
        copy_walk(1, &mut ev.b.walked);
    } else if !call.target.is_null() {
        no_raw(&mut ev.b, path_source::NAME_ONLY);
        walk_empty(&mut ev.b.walked);
        // SAFETY: the helper bounds the copy to the buffer.
        let n = unsafe {
            generated::bpf_probe_read_kernel_str(
                ev.b.raw.as_mut_ptr() as *mut c_void,
                ev.b.raw.len() as u32,
                call.target as *const c_void,
            )
        };
        if n > 0 {
            ev.b.raw_len = (n - 1) as u16;
            ev.b.raw_truncated = (n as usize == ev.b.raw.len()) as u8;
        }
    } else {
        no_raw(&mut ev.b, path_source::NONE);
        walk_empty(&mut ev.b.walked);
    }
    slot.submit(wake_flags());
}

/// Defaults of a one-path call.
#[inline(always)]
fn call(hook: u16, op: u16, a: At) -> Call {
    Call {
        hook,
        op,
        a,
        b: None,
        target: core::ptr::null(),
        mode: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    }
}

/// path_mknod(const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev):
/// a new file, from an O_CREAT open (before the file exists) or mknod.
#[lsm(hook = "path_mknod")]
pub fn path_mknod(ctx: LsmContext) -> i32 {
    let mut c = call(
        file_hook::PATH_MKNOD,
        file_op::CREATE,
        At::entry(ctx.arg(0), ctx.arg(1)),
    );
    c.mode = ctx.arg::<u64>(2) as u32 & 0xffff;
    judge(ctx.arg(4), c)
}

/// path_mkdir(const struct path *dir, struct dentry *dentry, umode_t mode).
#[lsm(hook = "path_mkdir")]
pub fn path_mkdir(ctx: LsmContext) -> i32 {
    let mut c = call(file_hook::PATH_MKDIR, file_op::MKDIR, At::entry(ctx.arg(0), ctx.arg(1)));
    c.mode = ctx.arg::<u64>(2) as u32 & 0xffff;
    judge(ctx.arg(3), c)
}

/// path_rmdir(const struct path *dir, struct dentry *dentry).
#[lsm(hook = "path_rmdir")]
pub fn path_rmdir(ctx: LsmContext) -> i32 {
    judge(
        ctx.arg(2),
        call(file_hook::PATH_RMDIR, file_op::RMDIR, At::entry(ctx.arg(0), ctx.arg(1))),
    )
}

/// path_unlink(const struct path *dir, struct dentry *dentry).
#[lsm(hook = "path_unlink")]
pub fn path_unlink(ctx: LsmContext) -> i32 {
    judge(
        ctx.arg(2),
        call(
            file_hook::PATH_UNLINK,
            file_op::UNLINK,
            At::entry(ctx.arg(0), ctx.arg(1)),
        ),
    )
}

fn rename(ctx: &LsmContext, ret: i32) -> i32 {
    let mut c = call(
        file_hook::PATH_RENAME,
        file_op::RENAME,
        At::entry(ctx.arg(0), ctx.arg(1)),
    );
    c.b = Some(At::entry(ctx.arg(2), ctx.arg(3)));
    judge(ret, c)
}

/// path_rename(const struct path *old_dir, struct dentry *old_dentry,
/// const struct path *new_dir, struct dentry *new_dentry, unsigned int flags): kernels from
/// 5.19. The previous verdict follows the parameters, so kernels before (no `flags`) get
/// [`path_rename4`]; the daemon loads the one matching the hook's prototype in the BTF.
#[lsm(hook = "path_rename")]
pub fn path_rename(ctx: LsmContext) -> i32 {
    rename(&ctx, ctx.arg(5))
}

/// path_rename without `flags` (kernels before 5.19).
#[lsm(hook = "path_rename")]
pub fn path_rename4(ctx: LsmContext) -> i32 {
    rename(&ctx, ctx.arg(4))
}

/// path_link(struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry):
/// a hard link never crosses a mount, so the existing file is walked from new_dir's mount.
#[lsm(hook = "path_link")]
pub fn path_link(ctx: LsmContext) -> i32 {
    let new_dir: u64 = ctx.arg(1);
    let mut c = call(file_hook::PATH_LINK, file_op::LINK, At::entry(new_dir, ctx.arg(0)));
    c.b = Some(At::entry(new_dir, ctx.arg(2)));
    judge(ctx.arg(3), c)
}

/// path_symlink(const struct path *dir, struct dentry *dentry, const char *old_name).
#[lsm(hook = "path_symlink")]
pub fn path_symlink(ctx: LsmContext) -> i32 {
    let mut c = call(
        file_hook::PATH_SYMLINK,
        file_op::SYMLINK,
        At::entry(ctx.arg(0), ctx.arg(1)),
    );
    c.target = ctx.arg::<u64>(2) as KPtr;
    judge(ctx.arg(3), c)
}

/// path_truncate(const struct path *path): truncate(2), and an O_TRUNC open after file_open.
#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    judge(
        ctx.arg(1),
        call(file_hook::PATH_TRUNCATE, file_op::TRUNCATE, At::object(ctx.arg(0))),
    )
}

/// path_chmod(const struct path *path, umode_t mode).
#[lsm(hook = "path_chmod")]
pub fn path_chmod(ctx: LsmContext) -> i32 {
    let mut c = call(file_hook::PATH_CHMOD, file_op::CHMOD, At::object(ctx.arg(0)));
    c.mode = ctx.arg::<u64>(1) as u32 & 0xffff;
    judge(ctx.arg(2), c)
}

/// path_chown(const struct path *path, kuid_t uid, kgid_t gid).
#[lsm(hook = "path_chown")]
pub fn path_chown(ctx: LsmContext) -> i32 {
    let mut c = call(file_hook::PATH_CHOWN, file_op::CHOWN, At::object(ctx.arg(0)));
    c.uid = ctx.arg::<u64>(1) as u32;
    c.gid = ctx.arg::<u64>(2) as u32;
    judge(ctx.arg(3), c)
}
