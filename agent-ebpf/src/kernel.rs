//! Every read of a kernel struct happens here, at offsets the daemon resolved from the running
//! kernel's BTF and wrote into `CONFIG` (Rust BPF has no CO-RE; see agent_common::config).
use core::ffi::c_void;

use agent_common::{
    COMM_LEN, Header, NAME_MAX_WIRE, Tracked, WALK_MAIN, WALK_MAX_STEPS, WalkedPath, config::ABSENT, counter, walk,
};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_task, bpf_get_current_uid_gid,
    bpf_ktime_get_boot_ns, bpf_probe_read_kernel, generated,
};

use crate::maps::{WALK_SCRATCH, WalkScratch, count, degraded};

/// A kernel pointer (never dereferenced directly, only through probe reads).
pub type KPtr = *const u8;

/// Offset of a kernel struct field on the running kernel.
macro_rules! off {
    ($field:ident) => {
        $crate::maps::config_value(&$crate::maps::CONFIG.off.$field) as usize
    };
}
pub(crate) use off;

/// Tracepoint record field offset on the running kernel.
macro_rules! tp {
    ($field:ident) => {
        $crate::maps::config_value(&$crate::maps::CONFIG.tp.$field)
    };
}
pub(crate) use tp;

/// `v & mask`, with the mask kept in the program: the verifier needs to see it, and the
/// compiler would drop it where an earlier check implies it.
#[inline(always)]
pub fn masked(v: usize, mask: usize) -> usize {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&v) & mask }
}

#[inline(always)]
pub fn read_ptr(base: KPtr, offset: usize) -> Result<KPtr, i32> {
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset) as *const KPtr) }
}

#[inline(always)]
pub fn read_u32(base: KPtr, offset: usize) -> Result<u32, i32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset) as *const u32) }
}

#[inline(always)]
pub fn read_u64(base: KPtr, offset: usize) -> Result<u64, i32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset) as *const u64) }
}

#[inline(always)]
pub fn current_task() -> KPtr {
    // SAFETY: helper call without arguments.
    (unsafe { bpf_get_current_task() }) as KPtr
}

/// Start time (ns since boot) of the process `task` belongs to: its leader's start_boottime,
/// the value /proc/PID/stat reports (in clock ticks).
#[inline(always)]
pub fn process_start_ns(task: KPtr) -> Result<u64, i32> {
    let leader = read_ptr(task, off!(task_group_leader))?;
    read_u64(leader, off!(task_start_boottime))
}

/// tgid of the real parent of `task`.
#[inline(always)]
pub fn parent_tgid(task: KPtr) -> Result<u32, i32> {
    let parent = read_ptr(task, off!(task_real_parent))?;
    read_u32(parent, off!(task_tgid))
}

/// Fills the common record header for the current thread, acting under tracking entry `t`, as
/// made by hook `hook` (agent_common::hook); the verdict is the caller's.
#[inline(always)]
pub fn fill_header(h: &mut Header, kind: u32, hook: u32, pid_tgid: u64, t: &Tracked, flags: u32) {
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: helper calls without pointer arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    h.kind = kind;
    h.flags = if t.expires_ns != 0 && now >= t.expires_ns {
        flags | agent_common::flags::TASK_EXPIRED
    } else {
        flags
    };
    h.ktime_ns = now;
    h.tgid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.uid = uid_gid as u32;
    h.gid = (uid_gid >> 32) as u32;
    // SAFETY: as above.
    h.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    h.start_ns = t.start_ns;
    h.comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
    h.task = t.task;
    h.verdict = 0;
    h.guard_set = t.guard_set;
    h.hook = hook;
}

/// The head of a `struct fdtable`.
#[repr(C)]
#[derive(Clone, Copy)]
struct FdTable {
    max_fds: u32,
    _pad: u32,
    fd: KPtr,
}

/// The `struct file *` behind descriptor `fd` of `task`, if any.
#[inline(always)]
pub fn file_of_fd(task: KPtr, fd: i32) -> Result<KPtr, i32> {
    if fd < 0 {
        return Err(-9);
    }
    let files = read_ptr(task, off!(task_files))?;
    let fdt = read_ptr(files, off!(files_fdt))?;
    let (max_off, fd_off) = (off!(fdt_max_fds), off!(fdt_fd));
    // `struct fdtable { unsigned int max_fds; struct file **fd; ...}`: one read where the
    // array follows the count, as in every kernel.
    let (max, array) = if fd_off == max_off + 8 {
        // SAFETY: bpf_probe_read_kernel checks the address.
        let t: FdTable = unsafe { bpf_probe_read_kernel(fdt.wrapping_add(max_off) as *const FdTable) }?;
        (t.max_fds, t.fd)
    } else {
        (read_u32(fdt, max_off)?, read_ptr(fdt, fd_off)?)
    };
    if fd as u32 >= max {
        return Err(-9);
    }
    let file = read_ptr(array, (fd as usize) * 8)?;
    if file.is_null() { Err(-9) } else { Ok(file) }
}

/// Address of the `struct path` inside a `struct file`.
#[inline(always)]
pub fn file_path(file: KPtr) -> KPtr {
    file.wrapping_add(off!(file_f_path))
}

/// Address of the cwd (`fs->pwd`) or root (`fs->root`) `struct path` of `task`.
#[inline(always)]
pub fn fs_path(task: KPtr, root: bool) -> Result<KPtr, i32> {
    let fs = read_ptr(task, off!(task_fs))?;
    Ok(fs.wrapping_add(if root { off!(fs_root) } else { off!(fs_pwd) }))
}

/// Marks `out` as holding no path.
#[inline(always)]
pub fn walk_empty(out: &mut WalkedPath) {
    out.start = WALK_MAIN as u16;
    out.leaf = WALK_MAIN as u16;
    out.flags = walk::EMPTY;
}

/// Marks `out` as not walked because this kernel lacks a field the walk needs.
#[inline(always)]
pub fn walk_unavailable(out: &mut WalkedPath) {
    out.start = WALK_MAIN as u16;
    out.leaf = WALK_MAIN as u16;
    out.flags = walk::EMPTY | walk::UNAVAILABLE;
}

/// Rebuilds the absolute path of a `struct path` (at kernel address `path`) into `out`, by
/// walking dentries up to the root of their mount, then crossing to the parent mount, up to
/// the root of the mount namespace. Symlinks, `..` and relative starting points are already
/// resolved: these are the kernel's own objects.
#[inline(always)]
pub fn walk_path(path: KPtr, out: &mut WalkedPath) {
    walk_at(path, core::ptr::null(), out, true);
}

/// Walks the `struct path` a Unix socket was bound at: the path in the binding process's
/// mount namespace (a socket bound on the host and mounted into a container is judged by
/// its host path, the server it reaches), so any namespace root ends the walk.
#[inline(always)]
pub fn walk_socket_file(path: KPtr, out: &mut WalkedPath) {
    walk_at(path, core::ptr::null(), out, false);
}

/// Rebuilds the absolute path of `dentry` as an entry of directory `dir` (a `struct path`;
/// the dentry may not exist yet: the name a create, rename or link is about to make), into
/// `out`; with a null `dentry`, the path of `dir` itself. One subprogram for every walk: the
/// verifier sees a single shape of it.
#[inline(always)]
pub fn walk_path_at(dir: KPtr, dentry: KPtr, out: &mut WalkedPath) {
    walk_at(dir, dentry, out, true);
}

/// [`walk_path_at`]; `own_ns`: the walk must end at the root of the current thread's mount
/// namespace, else it is [`walk::DETACHED`].
#[inline(never)]
fn walk_at(dir: KPtr, dentry: KPtr, out: &mut WalkedPath, own_ns: bool) {
    if degraded(agent_common::config::degraded::PATHS) {
        walk_unavailable(out);
        return;
    }
    let (mnt_off, dentry_off) = (off!(path_mnt), off!(path_dentry));
    let (vfsmnt, dentry) = if !dentry.is_null() {
        (read_ptr(dir, mnt_off), Ok(dentry))
    } else if dentry_off == mnt_off + 8 {
        // `struct path { struct vfsmount *mnt; struct dentry *dentry; }`: one read.
        // SAFETY: bpf_probe_read_kernel checks the address.
        match unsafe { bpf_probe_read_kernel(dir.wrapping_add(mnt_off) as *const [KPtr; 2]) } {
            Ok([m, d]) => (Ok(m), Ok(d)),
            Err(e) => (Err(e), Err(e)),
        }
    } else {
        (read_ptr(dir, mnt_off), read_ptr(dir, dentry_off))
    };
    let (Ok(vfsmnt), Ok(dentry)) = (vfsmnt, dentry) else {
        walk_empty(out);
        out.flags = walk::READ_ERROR;
        count(counter::READ_ERROR);
        return;
    };
    out.flags = 0;
    walk_dentries(vfsmnt, dentry, out, own_ns);
}

/// Is `mnt` (a `struct mount`) the root mount of the current thread's mount namespace? True
/// where the kernel lacks the fields to tell (the walk then trusts the tree it met).
#[inline(always)]
fn is_ns_root(mnt: KPtr) -> bool {
    let (ns_off, mnt_ns_off, root_off) = (off!(task_nsproxy), off!(nsproxy_mnt_ns), off!(mnt_ns_root));
    if ns_off == ABSENT as usize || mnt_ns_off == ABSENT as usize || root_off == ABSENT as usize {
        return true;
    }
    match read_ptr(current_task(), ns_off)
        .and_then(|ns| read_ptr(ns, mnt_ns_off))
        .and_then(|m| read_ptr(m, root_off))
    {
        Ok(root) => root == mnt,
        // No namespace (an exiting task): nothing to tell it from.
        Err(_) => true,
    }
}

/// Is `mnt` (a `struct mount`) the root mount of some mount namespace (not of a tree a lazy
/// umount detached)? True where the kernel lacks the fields to tell.
#[inline(always)]
fn is_some_ns_root(mnt: KPtr) -> bool {
    let (ns_off, root_off) = (off!(mount_mnt_ns), off!(mnt_ns_root));
    if ns_off == ABSENT as usize || root_off == ABSENT as usize {
        return true;
    }
    match read_ptr(mnt, ns_off) {
        Ok(ns) if !ns.is_null() => read_ptr(ns, root_off).is_ok_and(|root| root == mnt),
        _ => false,
    }
}

/// The fields of a `struct dentry` a walk reads: its parent and its name (`d_name`).
#[repr(C)]
#[derive(Clone, Copy)]
struct DentryHead {
    parent: KPtr,
    /// `d_name.hash`, unused.
    _hash: u32,
    len: u32,
    name: KPtr,
}

/// The fields of a `struct mount` a walk reads: its parent mount, where it is mounted there,
/// and the root dentry of its own tree (`mnt.mnt_root`).
#[repr(C)]
#[derive(Clone, Copy)]
struct MountHead {
    parent: KPtr,
    mountpoint: KPtr,
    root: KPtr,
}

/// Offsets of the fields a walk reads, and whether each group is laid out as in every kernel
/// Tether knows (then one read takes a group).
#[derive(Clone, Copy)]
struct WalkOffsets {
    d_parent: usize,
    d_name_len: usize,
    d_name_name: usize,
    dense_dentry: bool,
    mnt_parent: usize,
    mnt_mountpoint: usize,
    mnt_root: usize,
    dense_mount: bool,
}

impl WalkOffsets {
    #[inline(always)]
    fn get() -> WalkOffsets {
        let (d_parent, d_name_len, d_name_name) =
            (off!(dentry_d_parent), off!(dentry_d_name_len), off!(dentry_d_name_name));
        let (mnt_parent, mnt_mountpoint) = (off!(mount_mnt_parent), off!(mount_mnt_mountpoint));
        let (mount_mnt, vfs_root) = (off!(mount_mnt), off!(vfsmount_mnt_root));
        WalkOffsets {
            d_parent,
            d_name_len,
            d_name_name,
            // d_parent, then `struct qstr d_name { u32 hash; u32 len; const char *name; }`.
            dense_dentry: d_name_len == d_parent + 12 && d_name_name == d_parent + 16,
            mnt_parent,
            mnt_mountpoint,
            mnt_root: mount_mnt + vfs_root,
            // mnt_parent, mnt_mountpoint, then `struct vfsmount mnt { struct dentry *mnt_root; ...}`.
            dense_mount: mnt_mountpoint == mnt_parent + 8 && mount_mnt == mnt_parent + 16 && vfs_root == 0,
        }
    }
}

/// The parent, name length and name of `dentry`: one read, or three.
#[inline(always)]
fn dentry_head(dentry: KPtr, o: &WalkOffsets) -> Result<DentryHead, i32> {
    if o.dense_dentry {
        // SAFETY: bpf_probe_read_kernel checks the address.
        return unsafe { bpf_probe_read_kernel(dentry.wrapping_add(o.d_parent) as *const DentryHead) };
    }
    Ok(DentryHead {
        parent: read_ptr(dentry, o.d_parent)?,
        _hash: 0,
        len: read_u32(dentry, o.d_name_len)?,
        name: read_ptr(dentry, o.d_name_name)?,
    })
}

/// The parent, mountpoint and root dentry of `mnt` (a `struct mount`): one read, or three.
#[inline(always)]
fn mount_head(mnt: KPtr, o: &WalkOffsets) -> Result<MountHead, i32> {
    if o.dense_mount {
        // SAFETY: bpf_probe_read_kernel checks the address.
        return unsafe { bpf_probe_read_kernel(mnt.wrapping_add(o.mnt_parent) as *const MountHead) };
    }
    Ok(MountHead {
        parent: read_ptr(mnt, o.mnt_parent)?,
        mountpoint: read_ptr(mnt, o.mnt_mountpoint)?,
        root: read_ptr(mnt, o.mnt_root)?,
    })
}

/// Phase 1 of a walk: the names met from the leaf up, left in per-CPU scratch memory.
/// Loop-carried facts (count, flags) live in memory, not registers, so every state at the loop
/// head looks alike to the verifier and it verifies the loop once per iteration, not once per
/// combination of branches. Kernel reads are the cost of a walk: one per dentry and one per
/// mount.
#[inline(always)]
fn collect_names(vfsmnt: KPtr, mut dentry: KPtr, w: &mut WalkScratch, own_ns: bool) {
    let o = WalkOffsets::get();
    let mut mnt = vfsmnt.wrapping_sub(off!(mount_mnt));
    w.count = 0;
    w.flags = walk::TRUNCATED; // cleared when the root is reached
    let Ok(mut m) = mount_head(mnt, &o) else {
        w.flags = walk::READ_ERROR;
        return;
    };
    for _ in 0..WALK_MAX_STEPS {
        if dentry == m.root {
            // Root of this mount: continue from the mountpoint in the parent mount.
            if m.parent == mnt {
                // A mount tree's root: the namespace's own, another namespace's, or a
                // detached tree's.
                let attached = if own_ns { is_ns_root(mnt) } else { is_some_ns_root(mnt) };
                w.flags = if attached { 0 } else { walk::DETACHED };
                return;
            }
            dentry = m.mountpoint;
            mnt = m.parent;
            let Ok(up) = mount_head(mnt, &o) else {
                w.flags = walk::READ_ERROR;
                return;
            };
            m = up;
            continue;
        }
        let Ok(d) = dentry_head(dentry, &o) else {
            w.flags = walk::READ_ERROR;
            return;
        };
        if dentry == d.parent {
            // Root of a filesystem that is not this mount's root: an unnamed object (pipefs,
            // sockfs, a memfd) or a tree mounted nowhere here.
            w.flags = walk::DETACHED;
            return;
        }
        let i = w.count as usize;
        if i >= WALK_MAX_STEPS as usize {
            return;
        }
        w.len[i] = d.len;
        w.name[i] = d.name as u64;
        w.count += 1;
        dentry = d.parent;
    }
}

/// Phase 2: copy the names into `out`, leaf last, ending at WALK_MAIN.
#[inline(always)]
fn walk_dentries(vfsmnt: KPtr, dentry: KPtr, out: &mut WalkedPath, own_ns: bool) {
    let Some(w) = WALK_SCRATCH.get_ptr_mut(0) else {
        walk_empty(out);
        return;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let w = unsafe { &mut *w };
    collect_names(vfsmnt, dentry, w, own_ns);
    let mut flags = w.flags;
    let buf = out.buf.as_mut_ptr();
    let mut pos: usize = WALK_MAIN;
    for j in 0..WALK_MAX_STEPS as usize {
        if j >= w.count as usize {
            break;
        }
        // A dentry name is at most NAME_MAX (255) bytes: the mask only shows the verifier the
        // bound (a clamp would be a branch that doubles the verifier's states per step).
        let n = (w.len[j] as usize) & NAME_MAX_WIRE;
        if pos < n + 1 {
            flags |= walk::TRUNCATED;
            break;
        }
        pos -= n + 1;
        if j == 0 {
            out.leaf = pos as u16;
        }
        w.pos[j] = pos as u16;
        let p = pos & (WALK_MAIN - 1);
        // SAFETY: p < WALK_MAIN and p + 1 + n <= WALK_MAIN < WALK_BUF; the masks let the
        // verifier see the bounds.
        unsafe {
            *buf.add(p) = b'/';
            generated::bpf_probe_read_kernel(
                buf.add((p + 1) & (WALK_MAIN - 1)) as *mut c_void,
                (n & NAME_MAX_WIRE) as u32,
                w.name[j] as *const c_void,
            );
        }
    }
    if flags & walk::READ_ERROR != 0 {
        count(counter::READ_ERROR);
    }
    if pos == WALK_MAIN {
        pos -= 1;
        out.leaf = pos as u16;
        // SAFETY: pos = WALK_MAIN - 1 is in bounds.
        unsafe { *buf.add(pos & (WALK_MAIN - 1)) = b'/' };
    }
    out.start = pos as u16;
    out.flags |= flags;
    w.start = pos as u16;
}
