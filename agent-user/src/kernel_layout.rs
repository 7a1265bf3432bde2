//! The running kernel's layout: struct field offsets from its BTF, tracepoint field offsets
//! from its tracepoint formats. Builds the `CONFIG` global the BPF programs read everything at.
use std::path::Path;

use agent_common::{
    Config, Offsets,
    config::{ABSENT, TracepointFields},
};
use btfparse::{Readable, TypeInformation};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read kernel BTF at {path}: {reason} (Tether needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)")]
    Btf { path: String, reason: BtfUnreadable },
    #[error(
        "this kernel's BTF lacks fields Tether cannot work without (process lineage): {}",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Core(Vec<Missing>),
    #[error("cannot read tracepoint format {path}: {source}")]
    Format { path: String, source: std::io::Error },
    #[error("tracepoint {tracepoint} has no field {field}")]
    NoTracepointField { tracepoint: String, field: String },
}

/// Why the BTF file gives no types.
#[derive(Debug, thiserror::Error)]
pub enum BtfUnreadable {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// btfparse's error has no Display; its Debug form names the kind and the message.
    #[error("{0:?}")]
    Parse(btfparse::Error),
}

/// Why a struct field or kernel function the programs need is not in the kernel's BTF.
#[derive(Debug, thiserror::Error)]
pub enum Absent {
    #[error("hidden by {HIDE_FIELDS_ENV}")]
    Hidden,
    #[error("no struct {0} in the kernel's BTF")]
    NoStruct(String),
    #[error("not byte-aligned ({0:?})")]
    NotByteAligned(btfparse::Offset),
    #[error("not found ({0:?})")]
    NoField(btfparse::Error),
    #[error("no function {0} in the kernel's BTF")]
    NoFunction(String),
    #[error("{0} is not a function in the kernel's BTF")]
    NotAFunction(String),
    #[error("{0} has no prototype in the kernel's BTF")]
    NoPrototype(String),
}

/// A field (`struct.field`) or function this kernel lacks, and why.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {why}")]
pub struct Missing {
    pub name: String,
    pub why: Absent,
}

/// The BTF file, read whole: btfparse reads it a few bytes at a time, and a syscall per read
/// (millions of them) took seconds here and most of a daemon start in the TCG VMs.
struct BtfBytes(Vec<u8>);

impl Readable for BtfBytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(buffer.len())?))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "BTF read of {} bytes at {offset} past its end ({})",
                        buffer.len(),
                        self.0.len()
                    ),
                )
            })?;
        buffer.copy_from_slice(bytes);
        Ok(())
    }
}

/// What needs a struct field, as bits: the `degraded` bits the BPF programs honour, plus
/// hooks the loader only uses when their fields exist.
pub mod need {
    use agent_common::config::degraded;
    /// Lineage itself: without it Tether cannot work, and refuses to start.
    pub const CORE: u32 = 0;
    pub const EXIT_CODE: u32 = degraded::EXIT_CODE;
    pub const ARGV: u32 = degraded::ARGV;
    pub const PATHS: u32 = degraded::PATHS;
    pub const EXE_INODE: u32 = degraded::EXE_INODE;
    pub const CGROUP: u32 = degraded::CGROUP;
    pub const OBJECT: u32 = degraded::OBJECT;
    pub const SOCKETS: u32 = degraded::SOCKETS;
    /// The BPF LSM file_open hook (else write-opens are seen by syscall tracepoints).
    pub const LSM_FILE: u32 = 1 << 16;
    /// The BPF LSM socket_connect hook (else connects are seen by cgroup hooks).
    pub const LSM_CONNECT: u32 = 1 << 17;
    /// The BPF LSM bprm_check_security hook (else execs are judged at sched_process_exec).
    pub const LSM_EXEC: u32 = 1 << 18;
    /// The BPF LSM path hooks (path_mknod, path_unlink, path_rename, ...; else name-based
    /// file operations are judged at the syscall's exit and by the daemon).
    pub const LSM_PATH: u32 = 1 << 19;
    /// The BPF LSM inode hooks (extended attributes, ACLs, times: else judged after the
    /// fact).
    pub const LSM_INODE: u32 = 1 << 20;
    /// A walk that tells a detached tree from the process's own (else such paths are taken
    /// as they read).
    pub const NS_ROOT: u32 = 1 << 21;
    /// The bits the BPF programs read from `Config::degraded`.
    pub const KERNEL_MASK: u32 = 0xffff;
}

/// A feature switched off because the running kernel lacks a field it reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Degradation {
    pub feature: &'static str,
    pub effect: &'static str,
    /// The missing fields (`struct.field: reason`).
    pub missing: Vec<String>,
}

/// Human names and effects of each need bit.
const NEEDS: &[(u32, &str, &str)] = &[
    (need::EXIT_CODE, "exit codes", "exit events carry no exit code"),
    (need::ARGV, "argv", "exec events carry no command line"),
    (
        need::PATHS,
        "path resolution",
        "paths are the strings the process passed, not rebuilt from kernel objects (relative ones stay relative)",
    ),
    (
        need::EXE_INODE,
        "executable selectors",
        "agent selectors by `exe` are refused",
    ),
    (
        need::CGROUP,
        "cgroup selectors",
        "agent selectors by `cgroup` are refused",
    ),
    (
        need::LSM_FILE,
        "BPF LSM file_open",
        "write-opens are observed by syscall tracepoints instead",
    ),
    (
        need::LSM_EXEC,
        "BPF LSM bprm_check_security",
        "execs are observed (and killed, never refused) at sched_process_exec instead",
    ),
    (
        need::LSM_PATH,
        "BPF LSM path hooks",
        "creates, renames, unlinks, links, mkdir/rmdir, truncate, chmod and chown are judged after the fact (syscall exit, daemon) instead of refused",
    ),
    (
        need::LSM_CONNECT,
        "BPF LSM socket_connect",
        "connects are observed by cgroup sock_addr hooks instead",
    ),
    (
        need::OBJECT,
        "object judgement",
        "writes are judged by the name used: a device node by its path, not its device, and a file with several hard links by the link used",
    ),
    (
        need::SOCKETS,
        "socket details",
        "Unix connects and sends, listens and accepted connections are not judged where BPF LSM is not in effect",
    ),
    (
        need::LSM_INODE,
        "BPF LSM inode hooks",
        "extended attributes, ACLs and file times are judged after the fact instead of refused",
    ),
    (
        need::NS_ROOT,
        "mount namespace root",
        "a path under a detached mount tree is judged as it reads from that tree's root",
    ),
];

/// Struct field offsets, with what this kernel lacks.
#[derive(Debug, Clone)]
pub struct ResolvedOffsets {
    pub offsets: Offsets,
    /// OR of the [`need`] bits of every missing field.
    pub degraded: u32,
    pub degradations: Vec<Degradation>,
    /// Parameter counts of the BPF LSM hooks whose prototype changed across kernels
    /// ([`VARIANT_HOOKS`]); a hook this kernel lacks is absent.
    pub hook_params: std::collections::BTreeMap<&'static str, u32>,
    /// io_uring's async workers are threads of the submitting process (5.12+, where the
    /// kernel has `create_io_thread`); before, they are kernel threads, so no hook run in
    /// one is attributed to the process (see [`Layout::uring_workers_in_process`]).
    pub uring_workers_in_process: bool,
    /// Parameter counts of the functions asked for ([`offsets_from_btf`]'s `functions`);
    /// one the kernel lacks is absent.
    pub func_params: std::collections::BTreeMap<String, u32>,
}

/// BPF LSM hooks with one program per prototype (the loader picks by parameter count).
pub const VARIANT_HOOKS: [&str; 5] = [
    "path_rename",
    "inode_setxattr",
    "inode_removexattr",
    "inode_setattr",
    "bpf",
];

/// The kernel's view of the running kernel: `CONFIG`, what is degraded, and the hook
/// prototypes the loader needs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub config: Config,
    pub degradations: Vec<Degradation>,
    /// Every [`need`] bit of a missing field (the kernel-visible ones are in the config).
    pub degraded: u32,
    pub hook_params: std::collections::BTreeMap<&'static str, u32>,
    /// Parameter counts of the functions the loader asked for (the `bpf_lsm_*` hooks and the
    /// `security_*` functions of its fmod_ret fallback).
    pub func_params: std::collections::BTreeMap<String, u32>,
    /// io_uring's async workers run as threads of the process that submitted the work
    /// (Linux 5.12+). Before, an operation punted to a worker (every openat, for one) runs in
    /// a kernel thread that no tracked map names: the BPF LSM hooks cannot attribute it, so
    /// rings are judged as where BPF LSM is absent (granted, or killed before use).
    pub uring_workers_in_process: bool,
}

/// Resolves every field the programs read through `lookup(struct, field)`. A missing field
/// that lineage needs is an error; any other missing field switches off (openly) the features
/// that read it and leaves its offset [`ABSENT`].
/// `hook_params(hook)` is the parameter count of BPF LSM hook `hook`.
pub fn resolve_offsets(
    mut lookup: impl FnMut(&str, &str) -> Result<u32, Absent>,
    mut hook_params: impl FnMut(&str) -> Result<u32, Absent>,
) -> Result<ResolvedOffsets, LayoutError> {
    // kernfs_node.parent was renamed `__parent` in 6.15 (RCU-protected since); same meaning.
    let kernfs_parent = lookup("kernfs_node", "__parent").ok();
    // inode.i_nlink is a const view of `__i_nlink` (one union); either gives the offset.
    let i_nlink = lookup("inode", "__i_nlink").ok();
    let mut missing: Vec<(u32, Missing)> = Vec::new();
    let params: std::collections::BTreeMap<&'static str, u32> = VARIANT_HOOKS
        .iter()
        .filter_map(|h| hook_params(h).ok().map(|n| (*h, n)))
        .collect();
    // The previous verdict of path_rename follows the hook's parameters.
    let path_rename_ret = match hook_params("path_rename") {
        Ok(n) => n,
        Err(why) => {
            let name = "bpf_lsm_path_rename".to_string();
            missing.push((need::LSM_PATH, Missing { name, why }));
            ABSENT
        }
    };
    let mut core_missing: Vec<Missing> = Vec::new();
    let mut get = |ty: &str, field: &str, needs: u32| -> u32 {
        match lookup(ty, field) {
            Ok(o) => o,
            Err(why) => {
                let what = Missing {
                    name: format!("{ty}.{field}"),
                    why,
                };
                if needs == need::CORE {
                    core_missing.push(what);
                } else {
                    missing.push((needs, what));
                }
                ABSENT
            }
        }
    };
    use need::*;
    let offsets = Offsets {
        task_tgid: get("task_struct", "tgid", CORE),
        task_real_parent: get("task_struct", "real_parent", CORE),
        task_group_leader: get("task_struct", "group_leader", CORE),
        task_start_boottime: get("task_struct", "start_boottime", CORE),
        task_exit_code: get("task_struct", "exit_code", EXIT_CODE),
        task_mm: get("task_struct", "mm", ARGV | PATHS | EXE_INODE),
        task_fs: get("task_struct", "fs", PATHS),
        task_files: get("task_struct", "files", PATHS),
        mm_arg_start: get("mm_struct", "arg_start", ARGV),
        mm_arg_end: get("mm_struct", "arg_end", ARGV),
        mm_exe_file: get("mm_struct", "exe_file", PATHS | EXE_INODE),
        fs_root: get("fs_struct", "root", PATHS),
        fs_pwd: get("fs_struct", "pwd", PATHS),
        files_fdt: get("files_struct", "fdt", PATHS),
        fdt_max_fds: get("fdtable", "max_fds", PATHS),
        fdt_fd: get("fdtable", "fd", PATHS),
        file_f_path: get("file", "f_path", PATHS | LSM_FILE),
        file_f_inode: get("file", "f_inode", EXE_INODE),
        path_mnt: get("path", "mnt", PATHS),
        path_dentry: get("path", "dentry", PATHS),
        dentry_d_parent: get("dentry", "d_parent", PATHS),
        dentry_d_name_len: get("dentry", "d_name.len", PATHS),
        dentry_d_name_name: get("dentry", "d_name.name", PATHS),
        vfsmount_mnt_root: get("vfsmount", "mnt_root", PATHS),
        mount_mnt: get("mount", "mnt", PATHS),
        mount_mnt_parent: get("mount", "mnt_parent", PATHS),
        mount_mnt_mountpoint: get("mount", "mnt_mountpoint", PATHS),
        inode_i_ino: get("inode", "i_ino", EXE_INODE),
        inode_i_sb: get("inode", "i_sb", EXE_INODE),
        sb_s_dev: get("super_block", "s_dev", EXE_INODE),
        file_f_mode: get("file", "f_mode", LSM_FILE),
        file_f_flags: get("file", "f_flags", LSM_FILE),
        socket_type: get("socket", "type", LSM_CONNECT),
        socket_sk: get("socket", "sk", LSM_CONNECT),
        sock_sk_protocol: get("sock", "sk_protocol", LSM_CONNECT),
        binprm_file: get("linux_binprm", "file", LSM_EXEC),
        task_cgroups: get("task_struct", "cgroups", CGROUP),
        css_set_dfl_cgrp: get("css_set", "dfl_cgrp", CGROUP),
        cgroup_kn: get("cgroup", "kn", CGROUP),
        kernfs_node_parent: match kernfs_parent {
            Some(o) => o,
            None => get("kernfs_node", "parent", CGROUP),
        },
        kernfs_node_id: get("kernfs_node", "id", CGROUP),
        path_rename_ret,
        inode_i_mode: get("inode", "i_mode", OBJECT),
        inode_i_rdev: get("inode", "i_rdev", OBJECT),
        inode_i_nlink: match i_nlink {
            Some(o) => o,
            None => get("inode", "i_nlink", OBJECT),
        },
        dentry_d_inode: get("dentry", "d_inode", OBJECT),
        dentry_d_sb: get("dentry", "d_sb", LSM_INODE),
        vfsmount_mnt_sb: get("vfsmount", "mnt_sb", LSM_INODE),
        file_private_data: get("file", "private_data", SOCKETS),
        sock_family: get("sock_common", "skc_family", SOCKETS),
        sock_type: get("sock", "sk_type", SOCKETS),
        sock_num: get("sock_common", "skc_num", SOCKETS),
        sock_dport: get("sock_common", "skc_dport", SOCKETS),
        sock_daddr: get("sock_common", "skc_daddr", SOCKETS),
        sock_rcv_saddr: get("sock_common", "skc_rcv_saddr", SOCKETS),
        sock_v6_daddr: get("sock_common", "skc_v6_daddr", SOCKETS),
        sock_v6_rcv_saddr: get("sock_common", "skc_v6_rcv_saddr", SOCKETS),
        unix_path: get("unix_sock", "path", SOCKETS),
        unix_addr: get("unix_sock", "addr", SOCKETS),
        unix_peer: get("unix_sock", "peer", SOCKETS),
        unix_address_len: get("unix_address", "len", SOCKETS),
        unix_address_name: get("unix_address", "name", SOCKETS),
        iattr_ia_valid: get("iattr", "ia_valid", LSM_INODE),
        task_nsproxy: get("task_struct", "nsproxy", NS_ROOT),
        nsproxy_mnt_ns: get("nsproxy", "mnt_ns", NS_ROOT),
        mnt_ns_root: get("mnt_namespace", "root", NS_ROOT),
        mount_mnt_ns: get("mount", "mnt_ns", NS_ROOT),
        _pad: 0,
        mount_mnt_mounts: get("mount", "mnt_mounts", LSM_INODE),
        mount_mnt_child: get("mount", "mnt_child", LSM_INODE),
        // Where the exit is told apart by the group's live count, a process without it would
        // be untracked when its first thread ends (the rest would run untracked): core.
        task_signal: get("task_struct", "signal", CORE),
        signal_live: get("signal_struct", "live", CORE),
    };
    if !core_missing.is_empty() {
        return Err(LayoutError::Core(core_missing));
    }
    let degraded = missing.iter().fold(0, |acc, (n, _)| acc | n);
    let degradations = NEEDS
        .iter()
        .filter(|(bit, _, _)| degraded & bit != 0)
        .map(|&(bit, feature, effect)| Degradation {
            feature,
            effect,
            missing: missing
                .iter()
                .filter(|(n, _)| n & bit != 0)
                .map(|(_, w)| w.to_string())
                .collect(),
        })
        .collect();
    Ok(ResolvedOffsets {
        offsets,
        degraded,
        degradations,
        hook_params: params,
        func_params: Default::default(),
        uring_workers_in_process: false,
    })
}

/// Environment variable naming fields (`struct.field`, comma-separated) to treat as absent:
/// shows what Tether does on a kernel that lacks them, on one that has them.
pub const HIDE_FIELDS_ENV: &str = "TETHER_HIDE_BTF_FIELDS";

/// Offsets of every struct field the programs read, from a BTF file (see [`resolve_offsets`]).
pub fn offsets_from_btf(path: &Path, functions: &[String]) -> Result<ResolvedOffsets, LayoutError> {
    let hidden: Vec<String> = std::env::var(HIDE_FIELDS_ENV)
        .unwrap_or_default()
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    if !hidden.is_empty() {
        tracing::warn!(
            "{HIDE_FIELDS_ENV} is set: treating {} as absent from this kernel",
            hidden.join(", ")
        );
    }
    let btf_err = |reason: BtfUnreadable| LayoutError::Btf {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| btf_err(e.into()))?;
    let ti = TypeInformation::new(&BtfBytes(bytes)).map_err(|e| btf_err(BtfUnreadable::Parse(e)))?;
    let mut r = resolve_offsets(
        |ty, field| {
            if hidden.iter().any(|h| *h == format!("{ty}.{field}")) {
                return Err(Absent::Hidden);
            }
            let id = ti.id_of(ty).ok_or_else(|| Absent::NoStruct(ty.to_string()))?;
            match ti.offset_of(id, field) {
                Ok((_, btfparse::Offset::ByteOffset(o))) => Ok(o),
                Ok((_, other)) => Err(Absent::NotByteAligned(other)),
                Err(e) => Err(Absent::NoField(e)),
            }
        },
        |hook| lsm_hook_params(&ti, hook),
    )?;
    r.uring_workers_in_process = ti.id_of("create_io_thread").is_some();
    r.func_params = functions
        .iter()
        .filter_map(|f| func_params(&ti, f).ok().map(|n| (f.clone(), n)))
        .collect();
    Ok(r)
}

/// Parameter count of BPF LSM hook `hook`: the prototype of `bpf_lsm_<hook>` (absent where
/// the kernel lacks the hook, e.g. path hooks without CONFIG_SECURITY_PATH).
fn lsm_hook_params(ti: &TypeInformation, hook: &str) -> Result<u32, Absent> {
    func_params(ti, &format!("bpf_lsm_{hook}"))
}

/// Parameter count of kernel function `name`, from its BTF prototype.
fn func_params(ti: &TypeInformation, name: &str) -> Result<u32, Absent> {
    use btfparse::TypeVariant;
    let id = ti.id_of(name).ok_or_else(|| Absent::NoFunction(name.to_string()))?;
    let Some(TypeVariant::Func(func)) = ti.from_id(id) else {
        return Err(Absent::NotAFunction(name.to_string()));
    };
    match ti.from_id(*func.prototype_tid()) {
        Some(TypeVariant::FuncProto(proto)) => Ok(proto.parameter_list().len() as u32),
        _ => Err(Absent::NoPrototype(name.to_string())),
    }
}

/// Field offsets of one tracepoint format file (`field:TYPE NAME; offset:N; ...`).
pub fn parse_format(text: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next().unwrap_or("").trim();
        let offset = parts
            .find_map(|p| p.trim().strip_prefix("offset:"))
            .and_then(|o| o.trim().parse::<u32>().ok());
        // The name is the last identifier of the declaration, before any array suffix.
        let name = decl.rsplit(' ').next().unwrap_or("").split('[').next().unwrap_or("");
        if let (false, Some(offset)) = (name.is_empty(), offset) {
            out.push((name.to_string(), offset));
        }
    }
    out
}

fn tracepoint_fields(tracefs: &Path, category: &str, name: &str) -> Result<Vec<(String, u32)>, LayoutError> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| LayoutError::Format {
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse_format(&text))
}

fn field(fields: &[(String, u32)], tracepoint: &str, name: &str) -> Result<u32, LayoutError> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, o)| *o)
        .ok_or_else(|| LayoutError::NoTracepointField {
            tracepoint: tracepoint.into(),
            field: name.into(),
        })
}

/// Tracepoint field offsets from the running kernel's tracefs.
pub fn tracepoint_offsets(tracefs: &Path) -> Result<TracepointFields, LayoutError> {
    let exec = tracepoint_fields(tracefs, "sched", "sched_process_exec")?;
    let exit = tracepoint_fields(tracefs, "sched", "sched_process_exit")?;
    let enter = tracepoint_fields(tracefs, "syscalls", "sys_enter_openat")?;
    let sys_exit = tracepoint_fields(tracefs, "syscalls", "sys_exit_openat")?;
    Ok(TracepointFields {
        exec_filename: field(&exec, "sched_process_exec", "filename")?,
        exit_group_dead: field(&exit, "sched_process_exit", "group_dead").unwrap_or(ABSENT),
        sys_nr: field(&enter, "sys_enter_openat", "__syscall_nr")?,
        sys_args: field(&enter, "sys_enter_openat", "dfd")?,
        sys_ret: field(&sys_exit, "sys_exit_openat", "ret")?,
        exec_old_pid: field(&exec, "sched_process_exec", "old_pid")?,
    })
}

/// The complete CONFIG for the running kernel, and what it lacks.
pub fn layout(btf: &Path, tracefs: &Path, self_tgid: u32, functions: &[String]) -> Result<Layout, LayoutError> {
    let r = offsets_from_btf(btf, functions)?;
    let config = Config {
        off: r.offsets,
        tp: tracepoint_offsets(tracefs)?,
        self_tgid,
        degraded: r.degraded & need::KERNEL_MASK,
        selectors: 0,
        select_free: [0; agent_common::select::KINDS],
        generation: 0,
    };
    Ok(Layout {
        config,
        degradations: r.degradations,
        degraded: r.degraded,
        hook_params: r.hook_params,
        func_params: r.func_params,
        uring_workers_in_process: r.uring_workers_in_process,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_6_18: &str = "name: sched_process_exit
ID: 367
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;
";

    #[test]
    fn parses_tracepoint_formats() {
        let f = parse_format(EXIT_6_18);
        assert_eq!(field(&f, "x", "comm").unwrap(), 8);
        assert_eq!(field(&f, "x", "group_dead").unwrap(), 32);
        assert_eq!(field(&f, "x", "common_pid").unwrap(), 4);
        assert!(matches!(
            field(&f, "x", "nope"),
            Err(LayoutError::NoTracepointField { .. })
        ));
        let exec = parse_format("\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;");
        assert_eq!(exec, vec![("filename".to_string(), 8)]);
    }

    #[test]
    fn a_missing_btf_file_is_a_clear_error() {
        let err = offsets_from_btf(Path::new("/nonexistent/vmlinux"), &[]).unwrap_err();
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }

    #[test]
    fn a_truncated_btf_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        // A valid header (magic 0xeb9f, version 1, 24 bytes) whose sections lie past the end.
        let mut header = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        for v in [0u32, 4096, 4096, 4096] {
            header.extend(v.to_le_bytes());
        }
        std::fs::write(&path, &header).unwrap();
        let err = offsets_from_btf(&path, &[]).unwrap_err();
        assert!(matches!(err, LayoutError::Btf { .. }), "{err}");
        assert!(err.to_string().contains("past its end"), "{err}");
    }

    /// A fake kernel: every field at offset 8, except those listed.
    fn kernel_without(missing: &'static [&'static str]) -> impl FnMut(&str, &str) -> Result<u32, Absent> {
        move |ty, field| {
            let name = format!("{ty}.{field}");
            if missing.contains(&name.as_str()) {
                Err(Absent::Hidden)
            } else {
                Ok(8)
            }
        }
    }

    #[test]
    fn a_missing_field_degrades_the_features_that_read_it_openly() {
        let r = resolve_offsets(kernel_without(&["dentry.d_name.name", "socket.sk"]), |_| Ok(5)).unwrap();
        assert_eq!(r.offsets.dentry_d_name_name, ABSENT);
        assert_eq!(r.offsets.dentry_d_parent, 8);
        assert_eq!(r.degraded, need::PATHS | need::LSM_CONNECT);
        let features: Vec<&str> = r.degradations.iter().map(|d| d.feature).collect();
        assert_eq!(features, ["path resolution", "BPF LSM socket_connect"]);
        assert_eq!(
            r.degradations[0].missing,
            ["dentry.d_name.name: hidden by TETHER_HIDE_BTF_FIELDS"]
        );
        // task_struct.mm feeds argv, paths and exe selectors.
        let r = resolve_offsets(kernel_without(&["task_struct.mm"]), |_| Ok(5)).unwrap();
        assert_eq!(r.degraded, need::ARGV | need::PATHS | need::EXE_INODE);
        let r = resolve_offsets(kernel_without(&[]), |_| Ok(4)).unwrap();
        assert_eq!((r.degraded, r.degradations.len()), (0, 0));
        assert_eq!(r.offsets.path_rename_ret, 4);
        // A kernel without the path hooks (no CONFIG_SECURITY_PATH) only loses them.
        let r = resolve_offsets(kernel_without(&[]), |h| Err(Absent::NoFunction(format!("bpf_lsm_{h}")))).unwrap();
        assert_eq!(r.degraded, need::LSM_PATH);
        assert_eq!(r.offsets.path_rename_ret, ABSENT);
        assert_eq!(
            r.degradations[0].missing,
            ["bpf_lsm_path_rename: no function bpf_lsm_path_rename in the kernel's BTF"]
        );
    }

    #[test]
    fn a_missing_lineage_field_refuses_to_start() {
        let err = resolve_offsets(kernel_without(&["task_struct.real_parent", "file.f_mode"]), |_| Ok(5)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("task_struct.real_parent") && text.contains("lineage"),
            "{text}"
        );
        assert!(!text.contains("f_mode"), "only the fatal fields: {text}");
    }

    /// Reads this machine's BTF when it has one (no root needed: the file is world-readable).
    #[test]
    fn resolves_offsets_from_this_kernels_btf() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipped: this machine has no {}", path.display());
            return;
        }
        let r = offsets_from_btf(path, &[]).expect("this kernel's BTF has the lineage fields");
        assert_eq!(r.degradations, vec![], "this kernel has every field we read");
        let o = r.offsets;
        // path_rename(old_dir, old_dentry, new_dir, new_dentry[, flags since 5.19]).
        assert!(matches!(o.path_rename_ret, 4 | 5), "{}", o.path_rename_ret);
        assert_ne!(o.task_tgid, 0);
        assert_ne!(o.task_real_parent, o.task_tgid);
        assert_eq!(
            o.dentry_d_name_len,
            o.dentry_d_name_name - 4,
            "qstr: len then name pointer"
        );
    }
}
