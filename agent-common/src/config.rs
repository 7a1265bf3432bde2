//! The load-time configuration global of the BPF programs.
//!
//! Rust BPF programs have no CO-RE: a field offset compiled in from bindings is only right on
//! the kernel the bindings came from. So the programs read every kernel struct field at an
//! offset that the daemon resolves at load from the running kernel's BTF
//! (/sys/kernel/btf/vmlinux) and every tracepoint field at the offset the running kernel's
//! tracepoint format gives, and writes them here before loading ([`Config`] is the `CONFIG`
//! global of the BPF object). This is the only place kernel layouts enter the programs.

/// Offset value meaning "this field does not exist on the running kernel".
pub const ABSENT: u32 = u32::MAX;

/// Byte offsets of the kernel struct fields the programs read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    pub task_exit_code: u32,
    pub task_mm: u32,
    pub task_fs: u32,
    pub task_files: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_exe_file: u32,
    pub fs_root: u32,
    pub fs_pwd: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_path: u32,
    pub file_f_inode: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name_len: u32,
    pub dentry_d_name_name: u32,
    pub vfsmount_mnt_root: u32,
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    /// Used by the BPF LSM hooks only (file_open, socket_connect).
    pub file_f_mode: u32,
    pub file_f_flags: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    pub sock_sk_protocol: u32,
    /// linux_binprm.file (the BPF LSM exec hook judges the file about to run).
    pub binprm_file: u32,
    /// The cgroup v2 walk of cgroup selectors: task->cgroups->dfl_cgrp->kn, then
    /// kernfs_node.id (the cgroup id, the directory's inode number) and .parent upwards.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_parent: u32,
    pub kernfs_node_id: u32,
    /// Not an offset: the argument index of the BPF LSM path_rename hook's previous verdict
    /// (the hook's parameter count: 4 before the `flags` parameter was added, 5 after), from
    /// the BTF prototype of `bpf_lsm_path_rename`.
    pub path_rename_ret: u32,
    /// The inode a write acts on ([`crate::Object`]): device nodes are judged as their
    /// device, regular files with several links cannot be judged by one name.
    pub inode_i_mode: u32,
    pub inode_i_rdev: u32,
    pub inode_i_nlink: u32,
    pub dentry_d_inode: u32,
    pub dentry_d_sb: u32,
    pub vfsmount_mnt_sb: u32,
    /// The socket behind an fd (file.private_data) and what the socket hooks read of it:
    /// sock_common's family, local port, remote port and the addresses.
    pub file_private_data: u32,
    pub sock_family: u32,
    pub sock_type: u32,
    pub sock_num: u32,
    pub sock_dport: u32,
    pub sock_daddr: u32,
    pub sock_rcv_saddr: u32,
    pub sock_v6_daddr: u32,
    pub sock_v6_rcv_saddr: u32,
    /// Unix sockets: unix_sock.path (the bound socket file), .addr, .peer; unix_address.len
    /// and .name (a sockaddr_un).
    pub unix_path: u32,
    pub unix_addr: u32,
    pub unix_peer: u32,
    pub unix_address_len: u32,
    pub unix_address_name: u32,
    /// iattr.ia_valid (which attributes inode_setattr changes).
    pub iattr_ia_valid: u32,
    /// The root mount of the task's mount namespace (task->nsproxy->mnt_ns->root): a path
    /// walk that ends at another root is of a detached tree ([`crate::walk::DETACHED`]).
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_root: u32,
    /// A mount's children (mount.mnt_mounts, each child linked by its mnt_child): a dentry
    /// met without its mount (the inode hooks) is placed in the mount its lookup started
    /// from, or one mounted directly below it.
    pub mount_mnt_mounts: u32,
    pub mount_mnt_child: u32,
    /// task->signal->live (an atomic count of the group's live threads): where the exit
    /// tracepoint has no `group_dead` (before 6.16), the process ends when it reaches 0 (do_exit
    /// decrements it before the tracepoint fires), whichever thread exits last.
    pub task_signal: u32,
    pub signal_live: u32,
    /// mount.mnt_ns: a socket file's walk (which may end at any namespace's root) must end
    /// at the root of a namespace, not of a detached tree (mnt_ns null after a lazy umount).
    pub mount_mnt_ns: u32,
    /// Keeps the offsets a whole number of 8-byte words (no implicit padding in Config).
    pub _pad: u32,
}

/// Offsets of tracepoint record fields, from /sys/kernel/tracing/events/*/*/format.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointFields {
    /// sched_process_exec: `__data_loc char[] filename`.
    pub exec_filename: u32,
    /// sched_process_exit: `bool group_dead` ([`ABSENT`] on kernels before 6.16; the program
    /// then reads the group's live thread count, [`Offsets::signal_live`]).
    pub exit_group_dead: u32,
    /// sys_enter_*: `int __syscall_nr`.
    pub sys_nr: u32,
    /// sys_enter_*: the first argument (arguments follow, 8 bytes each).
    pub sys_args: u32,
    /// sys_exit_*: `long ret`.
    pub sys_ret: u32,
    /// sched_process_exec: `pid_t old_pid` (the thread that called execve).
    pub exec_old_pid: u32,
}

/// The `CONFIG` global of the BPF object, written by the daemon at load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub off: Offsets,
    pub tp: TracepointFields,
    /// The daemon's own tgid: never tracked, never reported.
    pub self_tgid: u32,
    /// Features switched off because the running kernel lacks a field they read ([`degraded`]).
    pub degraded: u32,
    /// Agent selectors, one bit each (bit i = selector i; 0: no selectors).
    pub selectors: u64,
    /// Per criterion ([`crate::select`]): the selectors that do not constrain it, so they pass
    /// it whatever the process is.
    pub select_free: [u64; crate::select::KINDS],
    /// This load's generation: the programs act only while the `ACTIVE` map holds it, so a
    /// restarted or upgraded daemon attaches its programs next to the pinned ones of the
    /// daemon before it and hands over in one map write (see agent-user's `persist`).
    pub generation: u64,
}

/// Bits of [`Config::degraded`]: what the programs must not read on this kernel.
pub mod degraded {
    /// task_struct.exit_code: exit records carry no code.
    pub const EXIT_CODE: u32 = 1;
    /// mm_struct.arg_start/arg_end: exec records carry no argv.
    pub const ARGV: u32 = 2;
    /// The dentry/mount/fd walk: paths are not rebuilt from kernel objects
    /// ([`crate::walk::UNAVAILABLE`]); only the path as passed is reported.
    pub const PATHS: u32 = 4;
    /// The executable's inode (file->f_inode->i_ino, ->i_sb->s_dev): no exe selectors.
    pub const EXE_INODE: u32 = 8;
    /// The task's cgroup v2 chain (task->cgroups->dfl_cgrp->kn, kernfs_node id/parent): no
    /// cgroup selectors.
    pub const CGROUP: u32 = 16;
    /// The inode fields of [`crate::Object`]: writes are judged by the name only (a device
    /// node by its path, a hard-linked file by the name used).
    pub const OBJECT: u32 = 32;
    /// The sock_common and unix_sock fields: Unix sockets are judged by the name given only
    /// where BPF LSM is in effect, and listens and accepts are not seen by the syscall
    /// tracepoints.
    pub const SOCKETS: u32 = 64;
}

impl Config {
    /// All offsets zero: the value compiled into the BPF object, always replaced at load.
    pub const fn zeroed() -> Self {
        // SAFETY: Config is plain integers.
        unsafe { core::mem::zeroed() }
    }
}

const _: () = {
    assert!(core::mem::size_of::<Offsets>() == 72 * 4);
    assert!(core::mem::size_of::<TracepointFields>() == 24);
    assert!(core::mem::size_of::<Config>() == 72 * 4 + 24 + 8 + 8 + 8 * crate::select::KINDS + 8);
    assert!(core::mem::align_of::<Config>() == 8);
};
