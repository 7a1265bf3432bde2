//! Every BPF program of agent-ebpf, declared once: its kind and attach point, the hook it
//! serves, what it needs from the kernel, its fallback and what it enforces ([`PROGRAMS`]).
//! The loader attaches by walking the table (one generic attach per [`Kind`]), the BPF LSM
//! groups and their variants come from it, and the mechanism names of `tether status` and of
//! every event ([`Mechanism`]) are rendered from its entries. The "Kernel programs" table of
//! ARCHITECTURE.md is generated from it ([`markdown`]); a test compares the two, another
//! compares the table with the programs of the built object.
use std::fmt;

use crate::kernel_layout::need;

/// A hook as `tether status` reports it: what a program observes or judges.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Lineage,
    Exec,
    FileWrite,
    Connect,
    Send,
    FileAttrs,
    Unix,
    SocketCreate,
    Listen,
    Tamper,
    IoUring,
    /// What `tether exec`'s sandbox refused (no row of its own in `tether status`).
    Sandbox,
    /// A feature probe: loaded once at start, never attached.
    Probe,
}

impl Hook {
    pub const fn as_str(self) -> &'static str {
        match self {
            Hook::Lineage => "lineage",
            Hook::Exec => "exec",
            Hook::FileWrite => "file_write",
            Hook::Connect => "connect",
            Hook::Send => "send",
            Hook::FileAttrs => "file_attrs",
            Hook::Unix => "unix",
            Hook::SocketCreate => "socket_create",
            Hook::Listen => "listen",
            Hook::Tamper => "tamper",
            Hook::IoUring => "io_uring",
            Hook::Sandbox => "sandbox",
            Hook::Probe => "probe",
        }
    }
}

/// A group of BPF LSM hooks, used whole or not at all (as BPF LSM, or as fmod_ret where that
/// stands in). Every file hook judges a path: without path resolution it could not say which
/// file. path_chown is a group of its own: kernels before 6.0 cannot attach BPF to a hook
/// that takes a struct (kuid_t) by value. file_truncate and the ACL hooks exist from 6.2.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LsmGroup {
    Exec,
    FileWrite,
    FileNames,
    FileOwner,
    FileTruncate,
    FileAttrs,
    FileAcls,
    Connect,
    /// Tether itself: bpf(2), signals to the daemon, ptrace-family access.
    SelfGuard,
    Sockets,
    Unix,
    /// No programs of its own: the path hooks also see what an io_uring ring does (its async
    /// workers are threads of the process, 5.12+), so the io_uring tracepoints are not needed.
    IoUring,
}

impl LsmGroup {
    pub const fn as_str(self) -> &'static str {
        match self {
            LsmGroup::Exec => "exec",
            LsmGroup::FileWrite => "file_write",
            LsmGroup::FileNames => "file_names",
            LsmGroup::FileOwner => "file_owner",
            LsmGroup::FileTruncate => "file_truncate",
            LsmGroup::FileAttrs => "file_attrs",
            LsmGroup::FileAcls => "file_acls",
            LsmGroup::Connect => "connect",
            LsmGroup::SelfGuard => "self",
            LsmGroup::Sockets => "sockets",
            LsmGroup::Unix => "unix",
            LsmGroup::IoUring => "io_uring",
        }
    }

    /// The need bits (kernel_layout::need) of the fields the group's programs read.
    pub const fn needs(self) -> u32 {
        match self {
            LsmGroup::Exec => need::LSM_EXEC | need::PATHS,
            LsmGroup::FileWrite => need::LSM_FILE | need::PATHS,
            LsmGroup::FileNames | LsmGroup::FileOwner | LsmGroup::FileTruncate => need::LSM_PATH | need::PATHS,
            LsmGroup::FileAttrs | LsmGroup::FileAcls => need::LSM_INODE | need::PATHS,
            LsmGroup::Connect => need::LSM_CONNECT,
            LsmGroup::SelfGuard => need::CORE,
            LsmGroup::Sockets => need::SOCKETS,
            LsmGroup::Unix => need::SOCKETS | need::PATHS,
            LsmGroup::IoUring => need::CORE,
        }
    }

    /// The path hooks (`--no-lsm-path-hooks` leaves them out).
    pub const fn is_path(self) -> bool {
        matches!(
            self,
            LsmGroup::FileNames
                | LsmGroup::FileOwner
                | LsmGroup::FileTruncate
                | LsmGroup::FileAttrs
                | LsmGroup::FileAcls
        )
    }
}

/// Entry or exit of a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Enter,
    Exit,
}

impl Dir {
    pub const fn as_str(self) -> &'static str {
        match self {
            Dir::Enter => "sys_enter",
            Dir::Exit => "sys_exit",
        }
    }
}

/// The syscalls a syscall-tracepoint program is attached to, one tracepoint each (which of
/// them on this kernel is the loader's choice: see `loader`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscalls {
    /// agent_common::syscalls::WATCHED (opens left to file_open where that is in effect).
    File,
    /// agent_common::syscalls::SOCKET_WATCHED, those no BPF LSM hook judges.
    Socket,
    /// agent_common::syscalls::SANDBOXED.
    Sandboxed,
    /// agent_common::syscalls::LANDLOCKED.
    Landlocked,
}

impl Syscalls {
    /// The calls as attachment reports name them (`*`: all of a set that varies by kernel).
    pub fn shown(self) -> String {
        match self {
            Syscalls::Landlocked => agent_common::syscalls::LANDLOCKED
                .iter()
                .map(|sc| sc.name)
                .collect::<Vec<_>>()
                .join(","),
            _ => "*".into(),
        }
    }
}

/// The tracepoints of a tracepoint program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Events {
    /// The tracepoint named as the program (its link pinned under the program's name).
    Own,
    /// These tracepoints (each link pinned as `program@event`).
    Named(&'static [&'static str]),
    /// `{dir}_{name}` of each syscall of a set (each link pinned as `program@event`).
    Syscalls(Dir, Syscalls),
}

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A raw tracepoint.
    RawTracepoint(&'static str),
    /// Tracepoints of a tracefs category.
    Tracepoint { category: &'static str, events: Events },
    /// A BPF LSM hook, or fmod_ret on its `security_*` function. `params`: the hook's
    /// parameter count the program was written for, for hooks with one program per prototype.
    Lsm {
        hook: &'static str,
        group: LsmGroup,
        params: Option<u32>,
    },
    /// cgroup sock_addr, at the cgroup v2 root (the attach type: connect4, sendmsg6, ...).
    CgroupSockAddr(&'static str),
    /// cgroup sock, at the cgroup v2 root.
    CgroupSock(&'static str),
    /// fentry (probe only).
    FEntry(&'static str),
}

impl Kind {
    /// The section as the tables name it.
    fn section(&self) -> String {
        match self {
            Kind::RawTracepoint(_) => "raw_tp".into(),
            Kind::Tracepoint { category, .. } => format!("tracepoint/{category}"),
            Kind::Lsm { .. } => "lsm".into(),
            Kind::CgroupSockAddr(_) => "cgroup sock_addr".into(),
            Kind::CgroupSock(_) => "cgroup_sock".into(),
            Kind::FEntry(_) => "fentry".into(),
        }
    }
}

/// What a program needs from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Tracepoints,
    RawTracepoints,
    /// BPF LSM in `lsm=` (or BPF trampolines, for fmod_ret) and the BTF fields of its group.
    BpfLsm,
    CgroupV2,
    /// Landlock ABI 4 or later (network rights).
    LandlockNet,
    /// Nothing: the load is the probe.
    Nothing,
}

impl Needs {
    pub const fn as_str(self) -> &'static str {
        match self {
            Needs::Tracepoints => "tracepoints",
            Needs::RawTracepoints => "raw_tp",
            Needs::BpfLsm => "BPF LSM (or fmod_ret)",
            Needs::CgroupV2 => "cgroup v2",
            Needs::LandlockNet => "Landlock ABI 4",
            Needs::Nothing => "—",
        }
    }
}

/// When the loader attaches a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    /// Where the LSM group is not in effect.
    Without(LsmGroup),
    /// Where Landlock has network rights (ABI 4+).
    LandlockNet,
    /// With its group (see [`Kind::Lsm`]).
    InGroup,
    /// Never: loaded once as a feature probe.
    Probe,
}

/// What stands in where a program cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    None,
    /// These programs (their table entries).
    Programs(&'static [&'static str]),
    /// Something that is not a program.
    Other(&'static str),
}

/// One BPF program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    pub name: &'static str,
    pub kind: Kind,
    pub hook: Hook,
    pub needs: Needs,
    pub when: When,
    pub fallback: Fallback,
    pub enforces: &'static str,
}

const fn tp(name: &'static str, category: &'static str, events: Events, hook: Hook) -> Program {
    Program {
        name,
        kind: Kind::Tracepoint { category, events },
        hook,
        needs: Needs::Tracepoints,
        when: When::Always,
        fallback: Fallback::None,
        enforces: "",
    }
}

const fn syscalls(name: &'static str, dir: Dir, set: Syscalls, hook: Hook) -> Program {
    tp(name, "syscalls", Events::Syscalls(dir, set), hook)
}

const fn lsm(name: &'static str, hook: &'static str, group: LsmGroup, on: Hook) -> Program {
    Program {
        name,
        kind: Kind::Lsm {
            hook,
            group,
            params: None,
        },
        hook: on,
        needs: Needs::BpfLsm,
        when: When::InGroup,
        fallback: Fallback::None,
        enforces: "",
    }
}

const fn sock_addr(name: &'static str, hook: Hook, enforces: &'static str) -> Program {
    Program {
        name,
        kind: Kind::CgroupSockAddr(name),
        hook,
        needs: Needs::CgroupV2,
        when: When::Always,
        fallback: Fallback::None,
        enforces,
    }
}

impl Program {
    const fn enforcing(mut self, enforces: &'static str) -> Program {
        self.enforces = enforces;
        self
    }
    const fn when(mut self, when: When) -> Program {
        self.when = when;
        self
    }
    const fn fallback(mut self, fallback: Fallback) -> Program {
        self.fallback = fallback;
        self
    }
    const fn params(mut self, n: u32) -> Program {
        if let Kind::Lsm { hook, group, .. } = self.kind {
            self.kind = Kind::Lsm {
                hook,
                group,
                params: Some(n),
            };
        }
        self
    }

    /// Not needed to start: a program with programs to fall back on that are not LSM hooks
    /// (those have their groups), replaced by them when it fails to load or attach.
    pub const fn optional(&self) -> bool {
        matches!(self.fallback, Fallback::Programs(_)) && !matches!(self.kind, Kind::Lsm { .. })
    }

    /// The LSM group of an LSM program.
    pub const fn lsm_group(&self) -> Option<LsmGroup> {
        match self.kind {
            Kind::Lsm { group, .. } => Some(group),
            _ => None,
        }
    }

    /// The LSM hook of an LSM program.
    pub const fn lsm_hook(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Lsm { hook, .. } => Some(hook),
            _ => None,
        }
    }

    /// The mechanism name of this program at tracepoint `event` (or at its own attach point).
    pub fn at(&self, event: &str) -> String {
        match self.kind {
            Kind::RawTracepoint(tp) => format!("raw_tp/{tp}"),
            Kind::Tracepoint { category, .. } => format!("tracepoint/{category}/{event}"),
            Kind::Lsm { hook, .. } => format!("lsm/{hook}"),
            Kind::CgroupSockAddr(t) => format!("cgroup_sock_addr/{t}"),
            Kind::CgroupSock(t) => format!("cgroup_sock/{t}"),
            Kind::FEntry(f) => format!("fentry/{f}"),
        }
    }
}

use Hook as H;
use LsmGroup as G;

const EXEC_TPS: Fallback = Fallback::Programs(&["sched_process_exec", "sys_enter_execve", "sys_enter_execveat"]);
const FILE_TPS: Fallback = Fallback::Programs(&["sys_enter_file", "sys_exit_file"]);
const SOCK_TPS: Fallback = Fallback::Programs(&["sys_enter_sock", "sys_exit_sock"]);
const REFUSE_EXEC: &str = "refuses the exec (`-EPERM`)";
const REFUSE_FILE: &str = "refuses before the change (`-EPERM`)";
const REFUSE_SOCK: &str = "refuses (`-EPERM`); the resolved Unix peer";
const REFUSE_SELF: &str = "refuses (`-EPERM`) a tracked process's reach for Tether";
const INTEGRITY: Fallback = Fallback::Other("the daemon's integrity check every 2 s");

/// Every program of the object, in the order the loader attaches them (lineage first: a
/// fork must never be missed between other attachments; the LSM groups, then fmod_ret in
/// their place where BPF LSM is not in effect; the rest).
pub static PROGRAMS: &[Program] = &[
    Program {
        name: "sched_process_fork",
        kind: Kind::RawTracepoint("sched_process_fork"),
        hook: H::Lineage,
        needs: Needs::RawTracepoints,
        when: When::Always,
        fallback: Fallback::None,
        enforces: "tracking: a child of a tracked process is tracked before it runs",
    },
    tp("sched_process_exit", "sched", Events::Own, H::Lineage).enforcing("records"),
    tp("sched_process_exec", "sched", Events::Own, H::Exec)
        .enforcing("records; exec of an agent image selects it; SIGKILL right after exec where no LSM hook refused it"),
    lsm("bprm_check_security", "bprm_check_security", G::Exec, H::Exec)
        .fallback(EXEC_TPS)
        .enforcing(REFUSE_EXEC),
    lsm("file_open", "file_open", G::FileWrite, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("path_mknod", "path_mknod", G::FileNames, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("path_mkdir", "path_mkdir", G::FileNames, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("path_rmdir", "path_rmdir", G::FileNames, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("path_unlink", "path_unlink", G::FileNames, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    // path_rename gained `flags` in 5.19.
    lsm("path_rename", "path_rename", G::FileNames, H::FileWrite)
        .params(5)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("path_rename4", "path_rename", G::FileNames, H::FileWrite)
        .params(4)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("path_link", "path_link", G::FileNames, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("path_symlink", "path_symlink", G::FileNames, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("path_truncate", "path_truncate", G::FileNames, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("path_chmod", "path_chmod", G::FileNames, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("path_chown", "path_chown", G::FileOwner, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("file_truncate", "file_truncate", G::FileTruncate, H::FileWrite)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    // The inode hooks gained an idmap (or user namespace) first.
    lsm("inode_setxattr", "inode_setxattr", G::FileAttrs, H::FileAttrs)
        .params(6)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("inode_setxattr_old", "inode_setxattr", G::FileAttrs, H::FileAttrs)
        .params(5)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("inode_removexattr", "inode_removexattr", G::FileAttrs, H::FileAttrs)
        .params(3)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("inode_removexattr_old", "inode_removexattr", G::FileAttrs, H::FileAttrs)
        .params(2)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("inode_setattr", "inode_setattr", G::FileAttrs, H::FileAttrs)
        .params(3)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("inode_setattr_old", "inode_setattr", G::FileAttrs, H::FileAttrs)
        .params(2)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("inode_set_acl", "inode_set_acl", G::FileAcls, H::FileAttrs)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("inode_remove_acl", "inode_remove_acl", G::FileAcls, H::FileAttrs)
        .fallback(FILE_TPS)
        .enforcing(REFUSE_FILE),
    lsm("socket_connect", "socket_connect", G::Connect, H::Connect)
        .fallback(Fallback::Programs(&["connect4", "connect6"]))
        .enforcing("refuses (`-EPERM`) before the connection"),
    // bpf gained `kernel` in 6.9.
    lsm("bpf", "bpf", G::SelfGuard, H::Tamper)
        .params(4)
        .fallback(INTEGRITY)
        .enforcing(REFUSE_SELF),
    lsm("bpf_old", "bpf", G::SelfGuard, H::Tamper)
        .params(3)
        .fallback(INTEGRITY)
        .enforcing(REFUSE_SELF),
    lsm("task_kill", "task_kill", G::SelfGuard, H::Tamper)
        .fallback(INTEGRITY)
        .enforcing(REFUSE_SELF),
    lsm("ptrace_access_check", "ptrace_access_check", G::SelfGuard, H::Tamper)
        .fallback(INTEGRITY)
        .enforcing(REFUSE_SELF),
    lsm("socket_create", "socket_create", G::Sockets, H::SocketCreate)
        .fallback(Fallback::Programs(&["sock_create", "sys_enter_sock"]))
        .enforcing("refuses (`-EPERM`) raw, packet, ICMP and vsock sockets not granted"),
    lsm("socket_listen", "socket_listen", G::Sockets, H::Listen)
        .fallback(SOCK_TPS)
        .enforcing("refuses (`-EPERM`) listens"),
    lsm("unix_stream_connect", "unix_stream_connect", G::Unix, H::Unix)
        .fallback(SOCK_TPS)
        .enforcing(REFUSE_SOCK),
    lsm("unix_may_send", "unix_may_send", G::Unix, H::Unix)
        .fallback(SOCK_TPS)
        .enforcing(REFUSE_SOCK),
    sock_addr("connect4", H::Connect, "refuses (`-EPERM`) before the connection is made"),
    sock_addr("connect6", H::Connect, "refuses (`-EPERM`) before the connection is made"),
    sock_addr("sendmsg4", H::Send, "refuses (`-EPERM`) before the datagram is sent"),
    sock_addr("sendmsg6", H::Send, "refuses (`-EPERM`) before the datagram is sent"),
    sock_addr("bind4", H::Listen, "refuses (`-EPERM`) the bind"),
    sock_addr("bind6", H::Listen, "refuses (`-EPERM`) the bind"),
    Program {
        name: "sock_create",
        kind: Kind::CgroupSock("sock_create"),
        hook: H::SocketCreate,
        needs: Needs::CgroupV2,
        when: When::Without(G::Sockets),
        fallback: Fallback::Programs(&["sys_enter_sock"]),
        enforces: "refuses (`-EPERM`) raw and ICMP sockets not granted",
    },
    syscalls("sys_enter_file", Dir::Enter, Syscalls::File, H::FileWrite).enforcing(
        "write scope and guardrails; SIGKILL before the call where that holds, after the effect otherwise (`after_effect`)",
    ),
    syscalls("sys_exit_file", Dir::Exit, Syscalls::File, H::FileWrite).enforcing(
        "write scope and guardrails; SIGKILL before the call where that holds, after the effect otherwise (`after_effect`)",
    ),
    // Refused execs (Landlock, LSMs, permissions): sched_process_exec never sees them.
    tp("sys_enter_execve", "syscalls", Events::Named(&["sys_enter_execve"]), H::Exec)
        .enforcing("exec scope and guardrails: SIGKILL before the new image runs"),
    tp("sys_enter_execveat", "syscalls", Events::Named(&["sys_enter_execveat"]), H::Exec)
        .enforcing("exec scope and guardrails: SIGKILL before the new image runs"),
    tp(
        "sys_exit_execve",
        "syscalls",
        Events::Named(&["sys_exit_execve", "sys_exit_execveat"]),
        H::Exec,
    )
    .enforcing("records the execs the kernel refused"),
    syscalls("sys_enter_sock", Dir::Enter, Syscalls::Socket, H::SocketCreate)
        .enforcing("Unix peers by name, listen, socket kinds: SIGKILL before the call"),
    syscalls("sys_exit_sock", Dir::Exit, Syscalls::Socket, H::SocketCreate)
        .enforcing("Unix peers by name, listen, socket kinds: SIGKILL before the call"),
    syscalls("sys_enter_sandboxed", Dir::Enter, Syscalls::Sandboxed, H::Sandbox)
        .enforcing("records what the sandbox's seccomp filter refused"),
    syscalls("sys_exit_sandboxed", Dir::Exit, Syscalls::Sandboxed, H::Sandbox)
        .enforcing("records what the sandbox's seccomp filter refused"),
    Program {
        needs: Needs::LandlockNet,
        ..syscalls("sys_enter_landlocked", Dir::Enter, Syscalls::Landlocked, H::Sandbox)
    }
    .when(When::LandlockNet)
    .enforcing("records the TCP connects and binds the sandbox's Landlock layer refused"),
    Program {
        needs: Needs::LandlockNet,
        ..syscalls("sys_exit_landlocked", Dir::Exit, Syscalls::Landlocked, H::Sandbox)
    }
    .when(When::LandlockNet)
    .enforcing("records the TCP connects and binds the sandbox's Landlock layer refused"),
    // io_uring: where the path hooks do not see what a ring does, rings must be granted.
    tp("sys_enter_io_uring_setup", "syscalls", Events::Own, H::IoUring)
        .when(When::Without(G::IoUring))
        .enforcing("kills a tracked ring's submitter (no syscall per operation)"),
    tp("sys_enter_io_uring_enter", "syscalls", Events::Own, H::IoUring)
        .when(When::Without(G::IoUring))
        .enforcing("kills a tracked ring's submitter (no syscall per operation)"),
    Program {
        name: "probe_fentry",
        kind: Kind::FEntry("security_file_open"),
        hook: H::Probe,
        needs: Needs::Nothing,
        when: When::Probe,
        fallback: Fallback::None,
        enforces: "probe: does this kernel allow fentry programs?",
    },
    tp("probe_send_signal", "syscalls", Events::Own, H::Probe)
        .when(When::Probe)
        .enforcing("probe: does this kernel allow bpf_send_signal?"),
];

/// Program `name` of the table (a name not in it is a bug: the tests walk every use).
pub fn get(name: &str) -> &'static Program {
    PROGRAMS
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("program {name} is not in the program table"))
}

/// The BPF LSM groups, in the table's order, each with its hooks (the hook of each program,
/// once per hook: the variants of a hook share it).
pub fn lsm_groups() -> Vec<(LsmGroup, Vec<&'static str>)> {
    let mut out: Vec<(LsmGroup, Vec<&'static str>)> = Vec::new();
    for p in PROGRAMS {
        let Kind::Lsm { hook, group, .. } = p.kind else {
            continue;
        };
        match out.iter_mut().find(|(g, _)| *g == group) {
            Some((_, hooks)) if hooks.contains(&hook) => {}
            Some((_, hooks)) => hooks.push(hook),
            None => out.push((group, vec![hook])),
        }
    }
    out
}

/// The LSM program for `hook` on a kernel whose hook (or `security_*` function) takes
/// `params` parameters: the variant written for that count, else the program named as the
/// hook.
pub fn lsm_variant(hook: &str, params: Option<u32>) -> &'static str {
    let of_hook = || PROGRAMS.iter().filter(move |p| p.lsm_hook() == Some(hook));
    of_hook()
        .find(|p| matches!(p.kind, Kind::Lsm { params: Some(n), .. } if Some(n) == params))
        .or_else(|| of_hook().find(|p| p.name == hook))
        .map(|p| p.name)
        .unwrap_or_else(|| panic!("no LSM program for hook {hook}"))
}

/// The hooks with one program per prototype.
pub fn variant_hooks() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in PROGRAMS {
        if let Kind::Lsm {
            hook, params: Some(_), ..
        } = p.kind
            && !out.contains(&hook)
        {
            out.push(hook);
        }
    }
    out
}

/// The `security_*` function that calls LSM hook `hook` (where an fmod_ret program stands in
/// for the hook).
pub fn security_function(hook: &str) -> String {
    match hook {
        "bprm_check_security" => "security_bprm_check".into(),
        h => format!("security_{h}"),
    }
}

/// The mechanism that saw an event, or one part of a hook's mechanism in `tether status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// A BPF LSM hook (or a family of them, `path`, `inode`, as records name them): `lsm/<hook>`,
    /// or `fmod_ret/security_<hook>` where fmod_ret stands in for BPF LSM.
    Lsm(&'static str),
    /// A program at one of its attach points (`tracepoint/syscalls/sys_exit_connect`).
    At(&'static str, &'static str),
    /// The hook a record names (agent_common::hook), when no program says more.
    Record(&'static str),
    /// A seccomp filter refused the call before it ran.
    Seccomp,
}

/// Which programs stand for the LSM hooks on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Lsm,
    FmodRet,
}

impl Mechanism {
    /// The mechanism that judged an LSM program's hook.
    pub fn lsm(program: &str) -> Mechanism {
        Mechanism::Lsm(get(program).lsm_hook().expect("an LSM program"))
    }

    /// Program `program` at tracepoint `event`.
    pub fn at(program: &'static str, event: &'static str) -> Mechanism {
        debug_assert!(PROGRAMS.iter().any(|p| p.name == program), "{program}");
        Mechanism::At(program, event)
    }

    /// Is it a BPF LSM hook (or fmod_ret standing in for one)?
    pub fn is_lsm(&self) -> bool {
        matches!(self, Mechanism::Lsm(_))
    }

    /// Its name as events and `tether status` write it.
    pub fn name(&self, via: Via) -> String {
        match (self, via) {
            (Mechanism::Lsm(hook), Via::Lsm) => format!("lsm/{hook}"),
            (Mechanism::Lsm(hook), Via::FmodRet) => format!("fmod_ret/{}", security_function(hook)),
            (Mechanism::At(program, event), _) => get(program).at(event),
            (Mechanism::Record(name), _) => (*name).to_string(),
            (Mechanism::Seccomp, _) => "seccomp (refused before the call ran)".into(),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name(Via::Lsm))
    }
}

impl PartialEq<&str> for Mechanism {
    fn eq(&self, other: &&str) -> bool {
        self.name(Via::Lsm) == *other
    }
}

/// The mechanism a record names by its hook id (agent_common::hook), when nothing more
/// precise is known about the event.
pub fn record(id: u32) -> Mechanism {
    use agent_common::hook as h;
    match id {
        h::LSM_EXEC => Mechanism::lsm("bprm_check_security"),
        h::LSM_CONNECT => Mechanism::lsm("socket_connect"),
        h::LSM_FILE => Mechanism::lsm("file_open"),
        // Families of hooks, as the kernel's records name them.
        h::LSM_PATH => Mechanism::Lsm("path"),
        h::LSM_INODE => Mechanism::Lsm("inode"),
        h::LSM_SOCKET => Mechanism::Lsm("socket"),
        h::LSM_UNIX => Mechanism::Lsm("unix"),
        _ => Mechanism::Record(h::name(id).unwrap_or("unknown")),
    }
}

/// The LSM program that judged a file operation, by the record's agent_common::file_hook id;
/// None for NONE or an unknown id.
pub fn file_hook(id: u16) -> Option<Mechanism> {
    use agent_common::file_hook as f;
    let program = match id {
        f::FILE_OPEN => "file_open",
        f::PATH_MKNOD => "path_mknod",
        f::PATH_MKDIR => "path_mkdir",
        f::PATH_RMDIR => "path_rmdir",
        f::PATH_UNLINK => "path_unlink",
        f::PATH_RENAME => "path_rename",
        f::PATH_LINK => "path_link",
        f::PATH_SYMLINK => "path_symlink",
        f::PATH_TRUNCATE => "path_truncate",
        f::PATH_CHMOD => "path_chmod",
        f::PATH_CHOWN => "path_chown",
        f::FILE_TRUNCATE => "file_truncate",
        f::INODE_SETXATTR => "inode_setxattr",
        f::INODE_REMOVEXATTR => "inode_removexattr",
        f::INODE_SETATTR => "inode_setattr",
        _ => return None,
    };
    Some(Mechanism::lsm(program))
}

/// The "Kernel programs" table of ARCHITECTURE.md: a row per run of programs that share
/// section, hook, needs, fallback and what they enforce.
pub fn markdown() -> String {
    let mut rows: Vec<(Vec<&str>, [String; 5])> = Vec::new();
    for p in PROGRAMS {
        let fallback = match p.fallback {
            Fallback::None => "—".to_string(),
            Fallback::Programs(names) => names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
            Fallback::Other(text) => text.to_string(),
        };
        let hook = match p.kind {
            Kind::Lsm { group, .. } => format!("{} (group `{}`)", p.hook.as_str(), group.as_str()),
            _ => p.hook.as_str().to_string(),
        };
        let needs = match p.when {
            When::Always | When::InGroup | When::LandlockNet => p.needs.as_str().to_string(),
            When::Without(g) => format!("{}; only without the LSM group `{}`", p.needs.as_str(), g.as_str()),
            When::Probe => "nothing: loaded once as a probe, never attached".into(),
        };
        let key = [p.kind.section(), hook, needs, fallback, p.enforces.to_string()];
        match rows.last_mut() {
            Some((names, k)) if *k == key => names.push(p.name),
            _ => rows.push((vec![p.name], key)),
        }
    }
    let mut out =
        String::from("| program | section | hook | needs | fallback | enforces |\n|---|---|---|---|---|---|\n");
    for (names, [section, hook, needs, fallback, enforces]) in rows {
        let names = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        out.push_str(&format!(
            "| {names} | {section} | {hook} | {needs} | {fallback} | {enforces} |\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_fallbacks_are_programs_of_the_table() {
        for (i, p) in PROGRAMS.iter().enumerate() {
            assert!(PROGRAMS[..i].iter().all(|q| q.name != p.name), "{} twice", p.name);
            if let Fallback::Programs(names) = p.fallback {
                for n in names {
                    assert!(PROGRAMS.iter().any(|q| q.name == *n), "{}: fallback {n}", p.name);
                }
            }
            assert!(!p.enforces.is_empty(), "{}: says what it enforces", p.name);
            assert_eq!(
                p.when == When::InGroup,
                matches!(p.kind, Kind::Lsm { .. }),
                "{}: LSM programs attach with their group",
                p.name
            );
        }
    }

    #[test]
    fn variants_are_picked_by_parameter_count() {
        assert_eq!(lsm_variant("path_rename", Some(4)), "path_rename4");
        assert_eq!(lsm_variant("path_rename", Some(5)), "path_rename");
        assert_eq!(lsm_variant("path_rename", None), "path_rename");
        assert_eq!(lsm_variant("inode_setxattr", Some(5)), "inode_setxattr_old");
        assert_eq!(lsm_variant("inode_removexattr", Some(2)), "inode_removexattr_old");
        assert_eq!(lsm_variant("inode_setattr", Some(2)), "inode_setattr_old");
        assert_eq!(lsm_variant("bpf", Some(3)), "bpf_old");
        assert_eq!(lsm_variant("bpf", Some(4)), "bpf");
        assert_eq!(lsm_variant("file_open", Some(1)), "file_open");
        assert_eq!(variant_hooks(), crate::kernel_layout::VARIANT_HOOKS);
    }

    /// How mechanisms were named for fmod_ret before they were typed: every `lsm/` of the
    /// text became `fmod_ret/security_`, `bprm_check_security` being `security_bprm_check`.
    fn renamed(text: &str) -> String {
        text.replace("lsm/bprm_check_security", "fmod_ret/security_bprm_check")
            .replace("lsm/", "fmod_ret/security_")
    }

    #[test]
    fn records_and_file_hooks_name_what_the_kernel_names() {
        for id in 0..agent_common::hook::COUNT {
            let name = agent_common::hook::name(id).unwrap();
            assert_eq!(record(id).name(Via::Lsm), name, "{id}");
            assert_eq!(record(id).name(Via::FmodRet), renamed(name), "{id}");
        }
        for id in 0..=u8::MAX as u16 {
            let m = file_hook(id);
            assert_eq!(
                m.map(|m| m.to_string()).as_deref(),
                agent_common::file_hook::mechanism(id),
                "{id}"
            );
            if let Some(m) = m {
                assert_eq!(m.name(Via::FmodRet), renamed(&m.to_string()));
            }
        }
        assert_eq!(Mechanism::Seccomp.to_string(), "seccomp (refused before the call ran)");
    }

    #[test]
    fn mechanisms_are_named_as_before() {
        assert_eq!(Mechanism::lsm("file_open").name(Via::Lsm), "lsm/file_open");
        assert_eq!(
            Mechanism::lsm("bprm_check_security").name(Via::FmodRet),
            "fmod_ret/security_bprm_check"
        );
        assert_eq!(
            Mechanism::lsm("path_rename4").name(Via::FmodRet),
            "fmod_ret/security_path_rename"
        );
        assert_eq!(
            Mechanism::at("sys_exit_sock", "sys_exit_connect").to_string(),
            "tracepoint/syscalls/sys_exit_connect"
        );
        assert_eq!(get("sched_process_fork").at(""), "raw_tp/sched_process_fork");
        assert_eq!(get("connect4").at(""), "cgroup_sock_addr/connect4");
        assert_eq!(get("sock_create").at(""), "cgroup_sock/sock_create");
    }

    fn doc(name: &str) -> (std::path::PathBuf, String) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (path, text)
    }

    /// The lines of the first table after `marker` in `text`: (its byte range, its text).
    fn table_after(text: &str, marker: &str) -> (std::ops::Range<usize>, String) {
        let at = text.find(marker).unwrap_or_else(|| panic!("no {marker:?}"));
        let start = at + text[at..].find("\n|").expect("a table") + 1;
        let mut end = start;
        for line in text[start..].split_inclusive('\n') {
            if !line.starts_with('|') {
                break;
            }
            end += line.len();
        }
        (start..end, text[start..end].to_string())
    }

    /// ARCHITECTURE.md's "Kernel programs" table is [`markdown`]; `TETHER_BLESS=1` rewrites it.
    #[test]
    fn architecture_md_lists_the_programs_of_the_table() {
        let (path, text) = doc("ARCHITECTURE.md");
        let (range, table) = table_after(&text, "## Kernel programs\n");
        let want = markdown();
        if table != want && std::env::var("TETHER_BLESS").as_deref() == Ok("1") {
            let mut text = text.clone();
            text.replace_range(range, &want);
            std::fs::write(&path, text).expect("writing ARCHITECTURE.md");
            return;
        }
        assert!(
            table == want,
            "ARCHITECTURE.md's \"Kernel programs\" table differs from the program table \
             (TETHER_BLESS=1 cargo test -p agent-user architecture_md rewrites it); it should read:\n{want}"
        );
    }

    /// Every name in the README's mechanism table is a program, hook, tracepoint or section
    /// of the table, and every BPF LSM hook that judges an agent's actions is named there.
    #[test]
    fn readme_mechanism_table_agrees_with_the_table() {
        let (_, text) = doc("README.md");
        let (_, table) = table_after(&text, "| hook | where BPF LSM is in effect | otherwise |");
        let mut known: Vec<String> = ["lsm", "tracepoint", "raw_tp", "cgroup_sock_addr", "cgroup_sock"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        use agent_common::syscalls as sc;
        let calls: Vec<&str> = sc::WATCHED
            .iter()
            .map(|s| s.name)
            .chain(sc::SOCKET_WATCHED.iter().map(|s| s.name))
            .chain(sc::SANDBOXED.iter().map(|s| s.name))
            .chain(sc::LANDLOCKED.iter().map(|s| s.name))
            .collect();
        for p in PROGRAMS {
            known.push(p.name.into());
            match p.kind {
                Kind::Lsm { hook, .. } => known.push(hook.into()),
                Kind::Tracepoint { category, events } => {
                    known.push(category.into());
                    match events {
                        Events::Own => {}
                        Events::Named(names) => known.extend(names.iter().map(|n| n.to_string())),
                        Events::Syscalls(dir, _) => {
                            known.push(dir.as_str().into());
                            known.extend(calls.iter().map(|c| format!("{}_{c}", dir.as_str())));
                            known.extend(calls.iter().map(|c| c.to_string()));
                        }
                    }
                }
                Kind::RawTracepoint(t) | Kind::CgroupSockAddr(t) | Kind::CgroupSock(t) | Kind::FEntry(t) => {
                    known.push(t.into())
                }
            }
        }
        let lsm_hooks: Vec<&str> = PROGRAMS.iter().filter_map(|p| p.lsm_hook()).collect();
        let mut named: Vec<String> = Vec::new();
        // Names of programs, hooks and tracepoints (plain words such as `mechanism` aside).
        for code in table.split('`').skip(1).step_by(2).filter(|c| c.contains(['/', '_'])) {
            for word in code.split('/') {
                if let Some(prefix) = word.strip_suffix('*') {
                    assert!(
                        lsm_hooks.iter().any(|h| h.starts_with(prefix)),
                        "README names {code}, which matches no LSM hook"
                    );
                    named.extend(
                        lsm_hooks
                            .iter()
                            .filter(|h| h.starts_with(prefix))
                            .map(|h| h.to_string()),
                    );
                    continue;
                }
                assert!(
                    known.iter().any(|k| k == word),
                    "README names `{code}`: {word} is not in the program table"
                );
                named.push(word.to_string());
            }
        }
        for p in PROGRAMS {
            if let Kind::Lsm { hook, group, .. } = p.kind
                && group != LsmGroup::SelfGuard
            {
                assert!(
                    named.iter().any(|n| n == hook),
                    "README's mechanism table does not name lsm/{hook}"
                );
            }
        }
    }
}
