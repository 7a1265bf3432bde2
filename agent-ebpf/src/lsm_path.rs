//! BPF LSM file hooks beyond file_open: every name-based file operation (create, mknod, mkdir,
//! rmdir, unlink, rename, link, symlink) and every change of a file's content or attributes
//! (truncate, chmod, chown, extended attributes and ACLs, times) judged before it happens,
//! where the kernel allows BPF LSM. The target is the kernel's own object: the (directory,
//! dentry) pair of a name, or the inode a metadata change acts on (the file a symlink leads
//! to where the call follows it), never a string the caller could race.
//!
//! A refused operation gets EPERM (and a kill verdict a SIGKILL) and never happens. The record
//! is the syscall's own (sys_exit_file), which finds this hook's verdict in the thread's
//! PENDING entry; with no watched syscall in flight (an O_CREAT open, whose record file_open
//! makes once the file exists; io_uring) the hook records the operation itself: always when
//! it refuses, and an allowed one unless another record already covers it.

use agent_common::{
    AT_FDCWD, NO_SYSCALL, Object, PendingFile, Tracked,
    contain::{S_IFBLK, S_IFCHR, S_IFMT, S_IFREG, class, verdict},
    file_hook, file_op, hook, kind, path_source,
};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};

use crate::{
    contain::{judge_device, judge_object, judge_path, kill_current, kills, lsm_answer, refuses, unjudged},
    kernel::{
        KPtr, current_task, file_of_fd, file_path, fill_header, fs_path, off, read_ptr, read_u32, walk_empty,
        walk_path_at,
    },
    lsm::tracked,
    maps::{LSM_FILE_SCRATCH, PATH_WALK, PENDING, count, file_ring, opaque, scalar},
    record::{put_kernel_str, put_raw, put_walk, send},
};

const EPERM: i32 = 1;

/// How one path of a hook is judged.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Judge {
    /// A name being made, removed or renamed: by its path.
    Name,
    /// An existing file whose content or attributes change: by what the inode is
    /// (`contain::judge_object`).
    Object,
}

/// A path argument of a hook: `dentry` in directory `dir` (a `struct path`), or (null
/// dentry) the object's own `struct path` at `dir`.
#[derive(Clone, Copy)]
#[repr(C)]
struct At {
    dir: KPtr,
    dentry: KPtr,
    judge: Judge,
}

impl At {
    fn entry(dir: u64, dentry: u64) -> At {
        At {
            dir: dir as KPtr,
            dentry: dentry as KPtr,
            judge: Judge::Name,
        }
    }

    fn object(path: u64) -> At {
        At {
            dir: path as KPtr,
            dentry: core::ptr::null(),
            judge: Judge::Object,
        }
    }
}

/// What a hook hands to [`judge`]. Plain fields only (no `Option`): the record subprogram
/// takes it by reference, so its type goes into the object's BTF, which the kernel checks.
#[repr(C)]
struct Call {
    hook: u16,
    op: u16,
    mode: u32,
    a: At,
    /// The second path of a rename or link (its destination), when `has_b`.
    b: At,
    has_b: bool,
    /// A device node about to be made: judged as the device (`mode`, `rdev`), not by its
    /// name.
    device: bool,
    /// With no syscall in flight, record an allowed operation too (no other record covers
    /// it); a refusal is always recorded.
    record_allowed: bool,
    rdev: u32,
    uid: u32,
    gid: u32,
    /// A new symlink's target text, or an extended attribute's name (kernel memory), else
    /// null.
    text: KPtr,
}

/// The inode of a `struct path` (or of `dentry` when given).
#[inline(always)]
fn inode_of(path: KPtr, dentry: KPtr) -> KPtr {
    let d = if dentry.is_null() {
        read_ptr(path, off!(path_dentry)).unwrap_or_default()
    } else {
        dentry
    };
    if d.is_null() {
        return core::ptr::null();
    }
    read_ptr(d, off!(dentry_d_inode)).unwrap_or_default()
}

/// The write verdict on one path, walked into PATH_WALK[`slot`] (where the record copies it
/// from: every program has one or two walks, never more); what the object is goes to `obj`.
/// Names and objects are judged by subprograms of their own: a rename judges two names, and
/// the verifier walks each subprogram once per call.
#[inline(always)]
fn judge_write(t: &Tracked, at: &At, slot: u32, obj: &mut Object) -> u32 {
    match at.judge {
        Judge::Name => {
            let (dir, dentry) = (scalar(at.dir.cast()), scalar(at.dentry.cast()));
            // A pointer lost on the way (the slot's lookup failed) would walk another name.
            if dir == 0 || (dentry == 0 && !at.dentry.is_null()) {
                return unjudged(t);
            }
            tether_judge_name(dir, dentry, slot)
        }
        Judge::Object => judge_obj(t, at.dir, at.dentry, obj),
    }
}

/// A name being made, removed or renamed, walked into PATH_WALK[`slot`]: `dir` a `struct
/// path`, `dentry` the entry. A BPF global function (external linkage: the verifier checks it
/// once per program, on its own, not once per caller state; a rename judges two names), so it
/// takes scalars only and finds the tracked entry itself; its answer is an unknown scalar to
/// the caller.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tether_judge_name(dir: u64, dentry: u64, slot: u32) -> u32 {
    let Some(t) = tracked(bpf_get_current_pid_tgid()) else {
        // The caller found it a moment ago: a lookup failing here is unjudged (fail closed).
        return crate::contain::unjudged_untracked();
    };
    let Some(w) = PATH_WALK.get_ptr_mut(slot) else {
        return unjudged(&t);
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let w = unsafe { &mut *w };
    walk_path_at(dir as KPtr, dentry as KPtr, w);
    judge_path(&t, class::WRITE, w)
}

/// An existing file whose content or attributes change, walked into PATH_WALK[0].
#[inline(never)]
fn judge_obj(t: &Tracked, dir: KPtr, dentry: KPtr, obj: &mut Object) -> u32 {
    let Some(w) = PATH_WALK.get_ptr_mut(0) else {
        return unjudged(t);
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let w = unsafe { &mut *w };
    walk_path_at(dir, dentry, w);
    opaque(judge_object(t, inode_of(dir, dentry), w, obj))
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
    let mut obj = Object::default();
    let mut judged = if call.device {
        obj.mode = call.mode;
        obj.rdev = call.rdev;
        // The node's name is walked for the record; the device decides.
        if let Some(w) = PATH_WALK.get_ptr_mut(0) {
            // SAFETY: per-CPU scratch owned by this program run.
            walk_path_at(call.a.dir, call.a.dentry, unsafe { &mut *w });
        }
        judge_device(&t, call.mode, call.rdev)
    } else {
        judge_write(&t, &call.a, 0, &mut obj)
    };
    if call.has_b {
        let mut unused = Object::default();
        let second = judge_write(&t, &call.b, 1, &mut unused);
        let marks = (judged | second) & (verdict::UNDECIDED | verdict::UNJUDGED);
        if !refuses(judged) && (refuses(second) || judged & verdict::ACTION_MASK == 0) {
            judged = second;
        }
        judged |= marks;
    }
    finish(pid_tgid, &t, judged, &call, &obj)
}

/// Refuses or kills as `judged` says, and leaves the verdict where the record will be made.
#[inline(always)]
fn finish(pid_tgid: u64, t: &Tracked, mut judged: u32, call: &Call, obj: &Object) -> i32 {
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
    } else if (refused || call.record_allowed) && !record(pid_tgid, t, judged, call, obj) {
        // Lost (counted): what the daemon was to judge is judged by nobody now.
        return crate::lsm::unrecorded(t, lsm_answer(refused), judged);
    }
    lsm_answer(refused)
}

/// The record of an operation with no syscall record to carry it; whether it was sent (a
/// loss is counted).
#[inline(never)]
fn record(pid_tgid: u64, t: &Tracked, judged: u32, call: &Call, obj: &Object) -> bool {
    let (Some(ev), Some(walk_a), Some(walk_b)) = (
        LSM_FILE_SCRATCH.get_ptr_mut(0),
        PATH_WALK.get_ptr(0),
        PATH_WALK.get_ptr(1),
    ) else {
        count(agent_common::counter::lost(hook::LSM_PATH));
        return false;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    fill_header(
        &mut ev.header,
        kind::FILE,
        hook::LSM_PATH,
        pid_tgid,
        t,
        agent_common::flags::VIA_LSM,
    );
    ev.header.verdict = judged;
    ev.op = call.op;
    ev.hook = call.hook;
    ev.syscall_nr = NO_SYSCALL;
    ev.ret = if refuses(judged) { -(EPERM as i64) } else { 0 };
    ev.flags = 0;
    ev.mode = call.mode;
    ev.uid = call.uid;
    ev.gid = call.gid;
    ev.obj = *obj;
    ev.a.source = path_source::OBJECT;
    let end = put_walk(&mut ev.text, 0, &mut ev.a, walk_a);
    let end = put_raw(&mut ev.text, end, &mut ev.a, core::ptr::null(), 0, 0);
    let end = if call.has_b {
        ev.b.source = path_source::OBJECT;
        let end = put_walk(&mut ev.text, end, &mut ev.b, walk_b);
        put_raw(&mut ev.text, end, &mut ev.b, core::ptr::null(), 0, 0)
    } else if !call.text.is_null() {
        ev.b.source = path_source::NAME_ONLY;
        let end = put_walk(&mut ev.text, end, &mut ev.b, core::ptr::null());
        put_kernel_str(&mut ev.text, end, &mut ev.b, call.text)
    } else {
        ev.b.source = path_source::NONE;
        let end = put_walk(&mut ev.text, end, &mut ev.b, core::ptr::null());
        put_raw(&mut ev.text, end, &mut ev.b, core::ptr::null(), 0, 0)
    };
    send(file_ring(judged), ev, end, hook::LSM_PATH)
}

/// Defaults of a one-path call.
#[inline(always)]
fn call(hook: u16, op: u16, a: At) -> Call {
    Call {
        hook,
        op,
        mode: 0,
        a,
        b: a,
        has_b: false,
        device: false,
        record_allowed: true,
        rdev: 0,
        uid: u32::MAX,
        gid: u32::MAX,
        text: core::ptr::null(),
    }
}

/// The kernel's dev_t (major << 20 | minor) from the value a hook gets (the userspace
/// encoding of mknod's `dev`, as new_decode_dev reads it).
#[inline(always)]
fn kernel_dev(dev: u32) -> u32 {
    let major = (dev & 0xfff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    (major << 20) | minor
}

/// path_mknod(const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev):
/// a new file, from an O_CREAT open (before the file exists) or mknod. A device node is
/// judged as the device it would name.
#[lsm(hook = "path_mknod")]
pub fn path_mknod(ctx: LsmContext) -> i32 {
    let mode = ctx.arg::<u64>(2) as u32 & 0xffff;
    let fmt = mode & S_IFMT;
    let mut c = call(
        file_hook::PATH_MKNOD,
        if fmt == S_IFREG {
            file_op::CREATE
        } else {
            file_op::MKNOD
        },
        At::entry(ctx.arg(0), ctx.arg(1)),
    );
    c.mode = mode;
    if fmt == S_IFCHR || fmt == S_IFBLK {
        // The hook gets the encoding mknod(2) was given, decoded here as the kernel does.
        c.device = true;
        c.rdev = kernel_dev(ctx.arg::<u64>(3) as u32);
    }
    // A regular file made by an open is recorded by file_open once it exists.
    c.record_allowed = fmt != S_IFREG;
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

#[inline(always)]
fn rename(ctx: &LsmContext, ret: i32) -> i32 {
    let mut c = call(
        file_hook::PATH_RENAME,
        file_op::RENAME,
        At::entry(ctx.arg(0), ctx.arg(1)),
    );
    c.b = At::entry(ctx.arg(2), ctx.arg(3));
    c.has_b = true;
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
/// The file linked to is judged as a write of it (a link is a new way to write it): a file
/// the task may not write gets no second name.
#[lsm(hook = "path_link")]
pub fn path_link(ctx: LsmContext) -> i32 {
    let new_dir: u64 = ctx.arg(1);
    let mut source = At::entry(new_dir, ctx.arg(0));
    source.judge = Judge::Object;
    let mut c = call(file_hook::PATH_LINK, file_op::LINK, source);
    c.b = At::entry(new_dir, ctx.arg(2));
    c.has_b = true;
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
    c.text = ctx.arg::<u64>(2) as KPtr;
    judge(ctx.arg(3), c)
}

/// path_truncate(const struct path *path): truncate(2), and on kernels before 6.2 an O_TRUNC
/// open after file_open (which recorded that open: an allowed one is not recorded again).
#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    let mut c = call(file_hook::PATH_TRUNCATE, file_op::TRUNCATE, At::object(ctx.arg(0)));
    c.record_allowed = false;
    judge(ctx.arg(1), c)
}

/// path_chmod(const struct path *path, umode_t mode): chmod, fchmod, fchmodat on the file the
/// call resolved (a symlink's target where the call follows it).
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

/// file_truncate(struct file *file) (6.2+): ftruncate, io_uring's, and an O_TRUNC open after
/// file_open (which recorded that open).
#[lsm(hook = "file_truncate")]
pub fn file_truncate(ctx: LsmContext) -> i32 {
    let file: KPtr = ctx.arg::<u64>(0) as KPtr;
    let mut c = call(
        file_hook::FILE_TRUNCATE,
        file_op::TRUNCATE,
        At::object(file_path(file) as u64),
    );
    c.record_allowed = false;
    judge(ctx.arg(1), c)
}

// ---- inode hooks: extended attributes, ACLs, times ----
//
// These hooks get a dentry and no mount. The mount comes from the syscall in flight (its
// PENDING entry): the file of an fd-based call, else the directory the name was resolved
// from, or a mount directly below it holding the dentry's filesystem. A dentry that cannot
// be placed so (io_uring, a name that crossed deeper mounts) is unjudged: refused in
// enforce mode.

/// The mount (a `struct vfsmount`) of the filesystem `sb` as reached from `path`: its own,
/// or one of its mount's children (one level, at most 16).
#[inline(always)]
fn mount_holding(path: KPtr, sb: KPtr) -> KPtr {
    let Ok(vfsmnt) = read_ptr(path, off!(path_mnt)) else {
        return core::ptr::null();
    };
    if read_ptr(vfsmnt, off!(vfsmount_mnt_sb)).ok() == Some(sb) {
        return vfsmnt;
    }
    let mount = vfsmnt.wrapping_sub(off!(mount_mnt));
    let head = mount.wrapping_add(off!(mount_mnt_mounts));
    let mut node = read_ptr(head, 0).unwrap_or(head);
    for _ in 0..16 {
        if node == head || node.is_null() {
            break;
        }
        let child = node.wrapping_sub(off!(mount_mnt_child));
        let child_vfs = child.wrapping_add(off!(mount_mnt));
        if read_ptr(child_vfs, off!(vfsmount_mnt_sb)).ok() == Some(sb) {
            return child_vfs;
        }
        node = read_ptr(node, 0).unwrap_or(head);
    }
    core::ptr::null()
}

/// Judges a change of `dentry`'s inode (op `op`, by hook `hook`) by the syscall in flight.
/// `text`: an attribute name for the record.
#[inline(always)]
fn judge_inode(ret: i32, hook: u16, op: u16, dentry: KPtr, text: KPtr) -> i32 {
    if ret != 0 {
        return ret;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked(pid_tgid) else {
        return 0;
    };
    let mut c = call(hook, op, At::entry(0, dentry as u64));
    c.text = text;
    c.a.judge = Judge::Object;
    // The syscall's own view: where its lookup started.
    let (task, pending) = (current_task(), PENDING.get_ptr(&(pid_tgid as u32)));
    let base = match pending {
        // SAFETY: this thread's entry, read-only here.
        Some(p) => unsafe { base_path(task, &*p) },
        None => core::ptr::null(),
    };
    let sb = read_ptr(dentry, off!(dentry_d_sb)).unwrap_or_default();
    let vfsmnt = if base.is_null() || sb.is_null() {
        core::ptr::null()
    } else {
        mount_holding(base, sb)
    };
    if vfsmnt.is_null() {
        let obj = Object::default();
        if let Some(w) = PATH_WALK.get_ptr_mut(0) {
            // SAFETY: per-CPU scratch owned by this program run.
            walk_empty(unsafe { &mut *w });
        }
        return finish(pid_tgid, &t, unjudged(&t), &c, &obj);
    }
    // A `struct path`-shaped pair on the stack: the walk reads mnt (and the dentry given).
    let mut pair = [0u64; 2];
    let (mnt_at, dentry_at) = (off!(path_mnt), off!(path_dentry));
    if mnt_at < 16 && dentry_at < 16 {
        pair[(mnt_at / 8) & 1] = vfsmnt as u64;
        pair[(dentry_at / 8) & 1] = dentry as u64;
    }
    c.a.dir = pair.as_ptr() as KPtr;
    let mut obj = Object::default();
    let judged = judge_write(&t, &c.a, 0, &mut obj);
    finish(pid_tgid, &t, judged, &c, &obj)
}

/// The `struct path` the pending syscall's first name is resolved from: the object of an fd
/// call, the process root for an absolute name, the cwd or the dirfd's directory.
///
/// # Safety
/// `p` is this thread's PENDING entry.
#[inline(always)]
unsafe fn base_path(task: KPtr, p: &PendingFile) -> KPtr {
    let r = if p.fd >= 0 {
        file_of_fd(task, p.fd).map(file_path)
    } else if p.raw_len_a > 0 && p.raw_a[0] == b'/' {
        fs_path(task, true)
    } else if p.dfd_a == AT_FDCWD {
        fs_path(task, false)
    } else {
        file_of_fd(task, p.dfd_a).map(file_path)
    };
    r.unwrap_or(core::ptr::null())
}

// The inode hooks gained a first parameter (a user namespace in 5.12, an idmap in 6.3; for
// inode_setattr only in 6.3): one program per prototype, the daemon loads the one matching
// the hook's BTF prototype (the `*_old` ones take the dentry first).

/// inode_setxattr(idmap, dentry, name, value, size, flags): an extended attribute (a
/// capability, a security label, an ACL before 6.2) of the file the call resolved.
#[lsm(hook = "inode_setxattr")]
pub fn inode_setxattr(ctx: LsmContext) -> i32 {
    let (d, name) = (ctx.arg::<u64>(1) as KPtr, ctx.arg::<u64>(2) as KPtr);
    judge_inode(ctx.arg(6), file_hook::INODE_SETXATTR, file_op::SETXATTR, d, name)
}

/// inode_setxattr(dentry, name, value, size, flags) (5.10).
#[lsm(hook = "inode_setxattr")]
pub fn inode_setxattr_old(ctx: LsmContext) -> i32 {
    let (d, name) = (ctx.arg::<u64>(0) as KPtr, ctx.arg::<u64>(1) as KPtr);
    judge_inode(ctx.arg(5), file_hook::INODE_SETXATTR, file_op::SETXATTR, d, name)
}

/// inode_removexattr(idmap, dentry, name).
#[lsm(hook = "inode_removexattr")]
pub fn inode_removexattr(ctx: LsmContext) -> i32 {
    let (d, name) = (ctx.arg::<u64>(1) as KPtr, ctx.arg::<u64>(2) as KPtr);
    judge_inode(ctx.arg(3), file_hook::INODE_REMOVEXATTR, file_op::REMOVEXATTR, d, name)
}

/// inode_removexattr(dentry, name) (5.10).
#[lsm(hook = "inode_removexattr")]
pub fn inode_removexattr_old(ctx: LsmContext) -> i32 {
    let (d, name) = (ctx.arg::<u64>(0) as KPtr, ctx.arg::<u64>(1) as KPtr);
    judge_inode(ctx.arg(2), file_hook::INODE_REMOVEXATTR, file_op::REMOVEXATTR, d, name)
}

/// inode_set_acl(idmap, dentry, acl_name, kacl) (6.2+: POSIX ACLs no longer go through
/// inode_setxattr).
#[lsm(hook = "inode_set_acl")]
pub fn inode_set_acl(ctx: LsmContext) -> i32 {
    let (d, name) = (ctx.arg::<u64>(1) as KPtr, ctx.arg::<u64>(2) as KPtr);
    judge_inode(ctx.arg(4), file_hook::INODE_SETXATTR, file_op::SETXATTR, d, name)
}

/// inode_remove_acl(idmap, dentry, acl_name) (6.2+).
#[lsm(hook = "inode_remove_acl")]
pub fn inode_remove_acl(ctx: LsmContext) -> i32 {
    let (d, name) = (ctx.arg::<u64>(1) as KPtr, ctx.arg::<u64>(2) as KPtr);
    judge_inode(ctx.arg(3), file_hook::INODE_REMOVEXATTR, file_op::REMOVEXATTR, d, name)
}

const ATTR_MODE: u32 = 1;
const ATTR_UID: u32 = 2;
const ATTR_GID: u32 = 4;
const ATTR_SIZE: u32 = 8;
const ATTR_ATIME: u32 = 16;
const ATTR_MTIME: u32 = 32;

/// Judges an inode_setattr that changes times only (utimensat and kin); mode, owner and size
/// changes have their path hooks.
#[inline(always)]
fn setattr(ret: i32, dentry: KPtr, attr: KPtr) -> i32 {
    if ret != 0 || tracked(bpf_get_current_pid_tgid()).is_none() {
        return ret;
    }
    let valid = read_u32(attr, off!(iattr_ia_valid)).unwrap_or(0);
    if valid & (ATTR_ATIME | ATTR_MTIME) == 0 || valid & (ATTR_MODE | ATTR_UID | ATTR_GID | ATTR_SIZE) != 0 {
        return ret;
    }
    judge_inode(
        ret,
        file_hook::INODE_SETATTR,
        file_op::UTIMES,
        dentry,
        core::ptr::null(),
    )
}

/// inode_setattr(idmap, dentry, attr) (6.3+).
#[lsm(hook = "inode_setattr")]
pub fn inode_setattr(ctx: LsmContext) -> i32 {
    setattr(ctx.arg(3), ctx.arg::<u64>(1) as KPtr, ctx.arg::<u64>(2) as KPtr)
}

/// inode_setattr(dentry, attr) (before 6.3).
#[lsm(hook = "inode_setattr")]
pub fn inode_setattr_old(ctx: LsmContext) -> i32 {
    setattr(ctx.arg(2), ctx.arg::<u64>(0) as KPtr, ctx.arg::<u64>(1) as KPtr)
}
