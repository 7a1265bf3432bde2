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
}

/// Offsets of tracepoint record fields, from /sys/kernel/tracing/events/*/*/format.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointFields {
    /// sched_process_exec: `__data_loc char[] filename`.
    pub exec_filename: u32,
    /// sched_process_exit: `bool group_dead` ([`ABSENT`] on kernels before 6.16; the program
    /// then treats the exit of the thread-group leader as the end of the process).
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
}

impl Config {
    /// All offsets zero: the value compiled into the BPF object, always replaced at load.
    pub const fn zeroed() -> Self {
        // SAFETY: Config is plain integers.
        unsafe { core::mem::zeroed() }
    }
}

const _: () = {
    assert!(core::mem::size_of::<Offsets>() == 42 * 4);
    assert!(core::mem::size_of::<TracepointFields>() == 24);
    assert!(core::mem::size_of::<Config>() == 42 * 4 + 24 + 8 + 8 + 8 * crate::select::KINDS + 8);
    assert!(core::mem::align_of::<Config>() == 8);
};
