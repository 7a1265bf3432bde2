//! What the running kernel allows, learnt by real loads at start (never from version numbers
//! or `bpftool feature probe`, which gives false negatives), and the mechanism Tether picked for
//! each hook as a result. The report is logged at start, served by `tether status`, and every
//! event names the mechanism that saw it.
use std::path::Path;

use serde::Serialize;

use crate::{
    kernel_layout::Degradation,
    programs::{self, Hook, Kind, LsmGroup, Mechanism, Via},
};

/// The result of one probe.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Probe {
    pub available: bool,
    /// How it was probed and, when unavailable, the kernel's answer.
    pub detail: String,
}

impl Probe {
    pub fn yes(detail: impl Into<String>) -> Probe {
        Probe {
            available: true,
            detail: detail.into(),
        }
    }

    pub fn no(detail: impl Into<String>) -> Probe {
        Probe {
            available: false,
            detail: detail.into(),
        }
    }
}

/// Kernel features Tether can use.
#[derive(Debug, Clone, Serialize)]
pub struct Features {
    /// BPF LSM programs load, and `bpf` is in the active LSM list (without it they load and
    /// attach but are never called).
    pub bpf_lsm: Probe,
    /// Where BPF LSM is not in effect: the LSM programs attached as fmod_ret programs on the
    /// kernel's `security_*` functions (BPF trampolines), refusing before the effect just the
    /// same.
    pub fmod_ret: Probe,
    pub fentry: Probe,
    pub cgroup_sock_addr: Probe,
    /// The cgroup sock_create hook (IP socket creation), where no BPF LSM socket hook is.
    pub cgroup_sock: Probe,
    pub ring_buffer: Probe,
    pub send_signal: Probe,
    /// Landlock ABI version for unprivileged self-restriction (None: no Landlock).
    pub landlock_abi: Option<u32>,
    pub landlock: Probe,
    /// The active LSMs (/sys/kernel/security/lsm), when readable.
    pub active_lsms: Option<String>,
}

/// The mechanism observing one hook, and what it could enforce.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HookMechanism {
    pub hook: &'static str,
    /// The programs that see it, e.g. `lsm/file_open`.
    pub mechanism: String,
    /// What enforcement on this hook can do on this kernel (used by the policy engine later).
    pub enforcement: String,
}

/// The whole report: kernel, features, the hook mechanisms in effect, and what is degraded.
#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    pub kernel: String,
    pub features: Features,
    pub hooks: Vec<HookMechanism>,
    /// The BPF LSM hook groups attached (the loader's groups: exec, file_write, file_names,
    /// file_owner, file_attrs, io_uring, ...).
    pub lsm_groups: Vec<String>,
    pub degraded: Vec<Degradation>,
    /// Tracepoints this kernel does not have (coverage lost, reported).
    pub missing_tracepoints: Vec<String>,
}

impl KernelReport {
    /// Is BPF LSM hook group `group` attached?
    pub fn lsm_group(&self, group: &str) -> bool {
        self.lsm_groups.iter().any(|g| g == group)
    }

    /// Is the BPF LSM mechanism (or fmod_ret in its place) what first judges `hook`?
    pub fn lsm_in_effect(&self, hook: &str) -> bool {
        let groups: Vec<&str> = self.lsm_groups.iter().map(String::as_str).collect();
        rows(&groups, true, 0)
            .iter()
            .any(|r| r.hook.as_str() == hook && r.parts.first().is_some_and(Part::is_lsm))
    }

    /// One-line-per-fact summary for the start-up log.
    pub fn lines(&self) -> Vec<String> {
        let f = &self.features;
        let yn = |p: &Probe| if p.available { "yes" } else { "no" };
        let mut out = vec![format!(
            "kernel {}: bpf_lsm={} fmod_ret={} fentry={} cgroup_sock_addr={} ring_buffer={} send_signal={} landlock_abi={}",
            self.kernel,
            yn(&f.bpf_lsm),
            yn(&f.fmod_ret),
            yn(&f.fentry),
            yn(&f.cgroup_sock_addr),
            yn(&f.ring_buffer),
            yn(&f.send_signal),
            f.landlock_abi.map_or("none".to_string(), |v| v.to_string()),
        )];
        if !f.bpf_lsm.available {
            out.push(format!("bpf_lsm unavailable: {}", f.bpf_lsm.detail));
            out.push(format!(
                "fmod_ret {}: {}",
                if f.fmod_ret.available {
                    "in effect"
                } else {
                    "unavailable"
                },
                f.fmod_ret.detail
            ));
        }
        for h in &self.hooks {
            out.push(format!(
                "hook {}: {} (enforcement: {})",
                h.hook, h.mechanism, h.enforcement
            ));
        }
        for d in &self.degraded {
            out.push(format!(
                "DEGRADED {}: {} (missing: {})",
                d.feature,
                d.effect,
                d.missing.join(", ")
            ));
        }
        for t in &self.missing_tracepoints {
            out.push(format!("coverage: {t}"));
        }
        out
    }
}

/// One part of a hook's mechanism: a program of the table, or words around them.
#[derive(Debug, Clone)]
enum Part {
    M(Mechanism),
    T(String),
}

impl Part {
    fn is_lsm(&self) -> bool {
        matches!(self, Part::M(m) if m.is_lsm())
    }
}

/// A hook's mechanism, built part by part.
#[derive(Debug, Clone, Default)]
struct Parts(Vec<Part>);

impl Parts {
    /// An LSM program (by program name).
    fn lsm(mut self, program: &str) -> Parts {
        self.0.push(Part::M(Mechanism::lsm(program)));
        self
    }
    /// A family of LSM hooks (`path_*`).
    fn lsm_family(mut self, hooks: &'static str) -> Parts {
        self.0.push(Part::M(Mechanism::Lsm(hooks)));
        self
    }
    /// A program at tracepoint `event` (or its own attach point).
    fn at(mut self, program: &'static str, event: &'static str) -> Parts {
        self.0.push(Part::M(Mechanism::at(program, event)));
        self
    }
    /// Words; a program of the table by name where they name one.
    fn t(mut self, text: impl Into<String>) -> Parts {
        self.0.push(Part::T(text.into()));
        self
    }
    fn name(&self, via: Via) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::M(m) => m.name(via),
                Part::T(t) => t.clone(),
            })
            .collect()
    }
}

/// One hook of the report, before its mechanism is named.
struct Row {
    hook: Hook,
    parts: Vec<Part>,
    enforcement: String,
}

/// The mechanism per hook, given the hook groups where BPF LSM is in effect (`exec`,
/// `file_write`, `file_names`, `file_owner`, `file_attrs`, `connect`, `sockets`, `unix`, ...;
/// `io_uring` where those hooks also see what a ring does: its async workers are threads of
/// the process, 5.12+),
/// whether bpf_send_signal is allowed and what else was attached (agent_common::feature).
/// The LSM programs are named as BPF LSM (see [`hook_mechanisms_via`]).
pub fn hook_mechanisms(lsm: &[&str], send_signal: bool, attached: u32) -> Vec<HookMechanism> {
    hook_mechanisms_via(lsm, send_signal, attached, Via::Lsm)
}

/// [`hook_mechanisms`], with the LSM programs named as they run here (`via`): as BPF LSM
/// (`lsm/file_open`) or as fmod_ret on the `security_*` functions
/// (`fmod_ret/security_file_open`).
pub fn hook_mechanisms_via(lsm: &[&str], send_signal: bool, attached: u32, via: Via) -> Vec<HookMechanism> {
    rows(lsm, send_signal, attached)
        .into_iter()
        .map(|r| HookMechanism {
            hook: r.hook.as_str(),
            mechanism: Parts(r.parts).name(via),
            enforcement: r.enforcement,
        })
        .collect()
}

/// `tracepoint/<category>` of program `program`.
fn tracepoints(program: &str) -> String {
    match programs::get(program).kind {
        Kind::Tracepoint { category, .. } => format!("tracepoint/{category}"),
        _ => unreachable!("{program} is a tracepoint program"),
    }
}

/// `cgroup_sock_addr/connect4,connect6`: the IPv4 and IPv6 programs of one call.
fn cgroup_pair(v4: &str, v6: &str) -> String {
    format!("{},{}", programs::get(v4).at(""), programs::get(v6).name)
}

fn rows(lsm: &[&str], send_signal: bool, attached: u32) -> Vec<Row> {
    let on = |g: LsmGroup| lsm.contains(&g.as_str());
    let kill_or_none = |kill: &str| {
        if send_signal {
            kill.to_string()
        } else {
            "none (observe only: bpf_send_signal is refused)".to_string()
        }
    };
    let hook = |hook, parts: Parts, enforcement: String| Row {
        hook,
        parts: parts.0,
        enforcement,
    };
    let p = Parts::default;
    let cgroup_sock = attached & agent_common::feature::CGROUP_SOCK != 0;
    vec![
        hook(
            Hook::Lineage,
            p().at("sched_process_fork", "sched_process_fork")
                .t(", ")
                .at("sched_process_exit", "sched_process_exit"),
            "none (observes)".into(),
        ),
        if on(LsmGroup::Exec) {
            hook(
                Hook::Exec,
                p().lsm("bprm_check_security")
                    .t(", ")
                    .at("sched_process_exec", "sched_process_exec"),
                "deny before exec (-EPERM from the LSM hook)".into(),
            )
        } else {
            hook(
                Hook::Exec,
                p().at("sched_process_exec", "sched_process_exec"),
                kill_or_none("kill right after exec (bpf_send_signal)"),
            )
        },
        file_write_mechanism(
            on(LsmGroup::FileWrite),
            on(LsmGroup::FileNames),
            on(LsmGroup::FileOwner),
            &kill_or_none,
        ),
        hook(
            Hook::Connect,
            if on(LsmGroup::Connect) {
                p().lsm("socket_connect")
                    .t(format!(", {} (TCP Fast Open)", cgroup_pair("connect4", "connect6")))
            } else {
                p().t(cgroup_pair("connect4", "connect6"))
            },
            "deny (-EPERM before the connection is made)".into(),
        ),
        hook(
            Hook::Send,
            p().t(cgroup_pair("sendmsg4", "sendmsg6")),
            "deny (-EPERM before the datagram is sent)".into(),
        ),
        if on(LsmGroup::FileAttrs) {
            hook(
                Hook::FileAttrs,
                if on(LsmGroup::FileAcls) {
                    p().lsm("inode_setxattr")
                        .t(", inode_removexattr, inode_set_acl, inode_remove_acl, inode_setattr (times)")
                } else {
                    p().lsm("inode_setxattr")
                        .t(", inode_removexattr, inode_setattr (times)")
                },
                "deny before the change (-EPERM); a target the hook cannot place in a mount is refused (fail closed)"
                    .into(),
            )
        } else {
            hook(
                Hook::FileAttrs,
                p().t(tracepoints("sys_exit_file")),
                kill_or_none("judged at the syscall's exit (fd calls) or by the daemon (names), killed after the fact"),
            )
        },
        if on(LsmGroup::Unix) {
            hook(
                Hook::Unix,
                p().lsm("unix_stream_connect").t(", ").lsm("unix_may_send"),
                "deny (-EPERM) on the peer the kernel resolved, before the connection or datagram".into(),
            )
        } else {
            hook(
                Hook::Unix,
                p().t(format!(
                    "{}/connect (resolved peer), sendto/sendmsg (name given)",
                    tracepoints("sys_exit_sock")
                )),
                kill_or_none(
                    "kill: a connect once made, before any byte is sent; a datagram to a named socket after it is sent",
                ),
            )
        },
        if on(LsmGroup::Sockets) {
            hook(
                Hook::SocketCreate,
                p().lsm("socket_create"),
                "deny (-EPERM) raw, packet, ICMP and vsock sockets not granted".into(),
            )
        } else {
            hook(
                Hook::SocketCreate,
                if cgroup_sock {
                    p().at("sock_create", "")
                        .t(" (IP), ")
                        .at("sys_enter_sock", "sys_enter_socket")
                        .t(" (packet, vsock)")
                } else {
                    p().at("sys_enter_sock", "sys_enter_socket")
                },
                if cgroup_sock {
                    format!(
                        "deny (-EPERM) raw and ICMP sockets not granted; packet and vsock: {}",
                        kill_or_none("kill before the socket reaches the caller")
                    )
                } else {
                    kill_or_none("kill before the socket reaches the caller")
                },
            )
        },
        hook(
            Hook::Listen,
            if on(LsmGroup::Sockets) {
                p().t(format!("{}, ", cgroup_pair("bind4", "bind6")))
                    .lsm("socket_listen")
                    .t(", ")
                    .at("sys_exit_sock", "sys_exit_accept")
            } else {
                p().t(format!("{}, ", cgroup_pair("bind4", "bind6")))
                    .at("sys_exit_sock", "sys_exit_listen")
                    .t(", sys_exit_accept")
            },
            if on(LsmGroup::Sockets) {
                format!(
                    "deny binds and listens (-EPERM); accepted connections: {}",
                    kill_or_none("kill after the accept")
                )
            } else {
                format!(
                    "deny binds (-EPERM); listens on a port the kernel picks and accepts: {}",
                    kill_or_none("kill after the call")
                )
            },
        ),
        if on(LsmGroup::SelfGuard) {
            hook(
                Hook::Tamper,
                p().lsm("bpf")
                    .t(", ")
                    .lsm("task_kill")
                    .t(", ")
                    .lsm("ptrace_access_check"),
                "refuse (-EPERM) a tracked process's bpf(2), signals to the daemon, and ptrace-family access to the daemon or to untracked processes".into(),
            )
        } else {
            hook(
                Hook::Tamper,
                p().t("tether exec's sandbox (seccomp: bpf, ptrace, process_vm_*; Landlock: signal scoping, ptrace of processes outside it); the daemon's check of its kernel state"),
                "refused only under tether exec; for other agents after the fact: kernel state repaired and alerted within 2 s".into(),
            )
        },
        if on(LsmGroup::FileNames) && on(LsmGroup::IoUring) {
            hook(
                Hook::IoUring,
                p().t("the BPF LSM hooks (each operation a ring performs)"),
                "as the operations' own hooks".into(),
            )
        } else {
            hook(
                Hook::IoUring,
                p().at("sys_enter_io_uring_setup", "sys_enter_io_uring_setup")
                    .t(", sys_enter_io_uring_enter"),
                kill_or_none("kill before a ring not granted is used"),
            )
        },
    ]
}

/// The file_write row: file_open for opens, the path hooks for name-based operations
/// (`names`: all but chown; `owner`: chown), the syscall's exit for what no hook covers.
fn file_write_mechanism(opens: bool, names: bool, owner: bool, kill_or_none: &dyn Fn(&str) -> String) -> Row {
    let mut path_ops = Vec::new();
    if names {
        path_ops.push("create, mkdir, rmdir, unlink, rename, link, symlink, truncate, chmod");
    }
    if owner {
        path_ops.push("chown");
    }
    let path_ops = path_ops.join(", ");
    // What no LSM hook covers is judged at the syscall's exit.
    let mut after: Vec<&str> = Vec::new();
    if !opens {
        after.push(if names {
            "write-opens of existing files"
        } else {
            "opens"
        });
    }
    if !names {
        after.push("name-based operations");
    }
    if names && !owner {
        after.push("chown");
    }
    let mut mechanism = Parts::default();
    let mut first = true;
    let mut sep = |m: Parts| {
        if std::mem::take(&mut first) { m } else { m.t(", ") }
    };
    if opens {
        mechanism = sep(mechanism).lsm("file_open").t(" (opens)");
    }
    if !path_ops.is_empty() {
        mechanism = sep(mechanism).lsm_family("path_*").t(format!(" ({path_ops})"));
    }
    let syscalls = tracepoints("sys_exit_file");
    let any_lsm = !mechanism.0.is_empty();
    mechanism = sep(mechanism).t(if after.is_empty() {
        format!("{syscalls} (records)")
    } else if !any_lsm {
        syscalls
    } else {
        format!("{syscalls} ({}; records)", after.join(", "))
    });
    let enforcement = match (opens || names, after.is_empty()) {
        (true, true) => "deny before the operation (-EPERM from the LSM hooks)".to_string(),
        (true, false) => format!(
            "deny before the operation (-EPERM from the LSM hooks){}; {}: {}",
            if opens && !names {
                " (an O_CREAT refused by file_open has created the file)"
            } else {
                ""
            },
            after.join(", "),
            kill_or_none("judged at the syscall's exit, killed after the fact")
        ),
        (false, _) => {
            kill_or_none("kill at the syscall's exit (the call has completed: O_CREAT created, O_TRUNC truncated)")
        }
    };
    Row {
        hook: Hook::FileWrite,
        parts: mechanism.0,
        enforcement,
    }
}

/// The kernel release (uname -r).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub const SECURITYFS: &str = "/sys/kernel/security";

/// Why a kernel feature could not be probed or is not there (reported as the probe's detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("securityfs is not mounted and mounting it at {SECURITYFS} failed: {0}")]
    Securityfs(nix::Error),
    #[error("cannot read {path}: {why}")]
    Read { path: String, why: String },
    #[error("the kernel has no Landlock (ENOSYS)")]
    NoLandlock,
    #[error("Landlock is built in but not enabled (EOPNOTSUPP; add it to lsm=)")]
    LandlockOff,
    #[error("landlock_create_ruleset: {0}")]
    Landlock(String),
}

/// The active LSM list, mounting securityfs first when it is not mounted.
pub fn active_lsms() -> Result<String, ProbeError> {
    let file = Path::new(SECURITYFS).join("lsm");
    if !file.exists() {
        nix::mount::mount(
            Some("securityfs"),
            SECURITYFS,
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(ProbeError::Securityfs)?;
    }
    std::fs::read_to_string(&file)
        .map(|s| s.trim().to_string())
        .map_err(|e| ProbeError::Read {
            path: file.display().to_string(),
            why: e.to_string(),
        })
}

/// Is `bpf` in a comma-separated active LSM list?
pub fn bpf_lsm_active(list: &str) -> bool {
    list.split(',').any(|l| l.trim() == "bpf")
}

/// The Landlock ABI version (landlock_create_ruleset with LANDLOCK_CREATE_RULESET_VERSION).
pub fn landlock_abi() -> Result<u32, ProbeError> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr, size 0 and the VERSION flag the syscall only returns a number.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => ProbeError::NoLandlock,
            Some(libc::EOPNOTSUPP) => ProbeError::LandlockOff,
            _ => ProbeError::Landlock(e.to_string()),
        });
    }
    Ok(r as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_must_be_in_the_active_list() {
        assert!(bpf_lsm_active("lockdown,capability,landlock,bpf"));
        assert!(bpf_lsm_active("bpf"));
        assert!(!bpf_lsm_active("lockdown,capability,landlock,bpfx"));
        assert!(!bpf_lsm_active("lockdown,yama,apparmor"));
    }

    /// Landlock answers without privileges; every kernel has some answer.
    #[test]
    fn landlock_probe_answers() {
        match landlock_abi() {
            Ok(v) => assert!(v >= 1),
            Err(e) => assert!(e.to_string().to_lowercase().contains("landlock"), "{e}"),
        }
    }

    fn without_lsm_files() -> Vec<HookMechanism> {
        hook_mechanisms(&["exec", "connect"], true, 0)
    }

    #[test]
    fn the_strongest_mechanism_per_hook() {
        let m = |hooks: &[HookMechanism], h: &str| -> (String, String) {
            let x = hooks.iter().find(|x| x.hook == h).expect(h);
            (x.mechanism.clone(), x.enforcement.clone())
        };
        let with_lsm = hook_mechanisms(&["exec", "file_write", "file_names", "file_owner", "connect"], true, 0);
        assert!(m(&with_lsm, "exec").0.starts_with("lsm/bprm_check_security"));
        assert!(m(&with_lsm, "exec").1.starts_with("deny before exec"));
        assert!(m(&with_lsm, "file_write").0.starts_with("lsm/file_open"));
        assert!(m(&with_lsm, "file_write").0.contains("lsm/path_*"));
        assert_eq!(
            m(&with_lsm, "file_write").1,
            "deny before the operation (-EPERM from the LSM hooks)"
        );
        // Without the path hooks, only opens are refused; the rest is killed after the fact.
        let opens_only = hook_mechanisms(&["exec", "file_write", "connect"], true, 0);
        assert!(!m(&opens_only, "file_write").0.contains("path_"));
        assert!(m(&opens_only, "file_write").1.contains("killed after the fact"));
        assert!(m(&opens_only, "file_write").1.contains("O_CREAT refused by file_open"));
        // Without path_chown (kernels before 6.0), chown alone is judged at the exit.
        let no_owner = hook_mechanisms(&["exec", "file_write", "file_names", "connect"], true, 0);
        let (mech, enf) = m(&no_owner, "file_write");
        assert!(
            mech.contains("lsm/path_* (create,") && !mech.contains("chown)"),
            "{mech}"
        );
        assert!(
            enf.ends_with("chown: judged at the syscall's exit, killed after the fact"),
            "{enf}"
        );
        // Path hooks without file_open: write-opens of existing files are judged at the exit.
        let names_only = hook_mechanisms(&["file_names", "file_owner"], true, 0);
        assert!(m(&names_only, "file_write").1.contains("write-opens of existing files"));
        let (mech, enf) = m(&without_lsm_files(), "file_write");
        assert_eq!(mech, "tracepoint/syscalls");
        assert!(enf.starts_with("kill at the syscall's exit"), "{enf}");
        assert_eq!(
            m(&with_lsm, "connect").0,
            "lsm/socket_connect, cgroup_sock_addr/connect4,connect6 (TCP Fast Open)"
        );
        let without = hook_mechanisms(&[], true, 0);
        assert_eq!(m(&without, "exec").0, "tracepoint/sched/sched_process_exec");
        assert!(m(&without, "exec").1.starts_with("kill right after exec"));
        assert_eq!(m(&without, "connect").0, "cgroup_sock_addr/connect4,connect6");
        let no_signal = hook_mechanisms(&[], false, 0);
        assert!(m(&no_signal, "exec").1.starts_with("none"));
        assert!(m(&no_signal, "file_write").1.starts_with("none"));
        assert_eq!(
            with_lsm.iter().map(|h| h.hook).collect::<Vec<_>>(),
            [
                "lineage",
                "exec",
                "file_write",
                "connect",
                "send",
                "file_attrs",
                "unix",
                "socket_create",
                "listen",
                "tamper",
                "io_uring"
            ]
        );
        assert!(m(&without, "tamper").1.contains("after the fact"));
        let guarded = hook_mechanisms(&["self"], true, 0);
        assert!(m(&guarded, "tamper").0.contains("lsm/bpf"));
        // The channels beyond connect and write: refused before where BPF LSM hooks are,
        // killed (and said to be after the fact where they are) otherwise.
        let all = hook_mechanisms(
            &[
                "exec",
                "file_write",
                "file_names",
                "file_attrs",
                "connect",
                "sockets",
                "unix",
                "io_uring",
            ],
            true,
            0,
        );
        // Kernels before 5.12 run a ring's async work in kernel threads no hook attributes.
        let kthread_workers = hook_mechanisms(&["exec", "file_write", "file_names"], true, 0);
        assert!(m(&kthread_workers, "io_uring").1.starts_with("kill before"));
        assert_eq!(m(&all, "unix").0, "lsm/unix_stream_connect, lsm/unix_may_send");
        assert!(m(&all, "unix").1.starts_with("deny"));
        assert!(m(&all, "socket_create").1.starts_with("deny"));
        assert!(m(&all, "io_uring").0.contains("BPF LSM hooks"));
        assert!(
            m(&without, "unix").1.contains("after it is sent"),
            "{:?}",
            m(&without, "unix")
        );
        assert!(m(&without, "io_uring").1.starts_with("kill before"));
        let cgroup_sock = hook_mechanisms(&[], true, agent_common::feature::CGROUP_SOCK);
        assert!(
            m(&cgroup_sock, "socket_create")
                .1
                .starts_with("deny (-EPERM) raw and ICMP")
        );
    }

    /// Where fmod_ret stands in, every `lsm/<hook>` of a mechanism is the hook's `security_*`
    /// function and nothing else changes; a hook is judged by BPF LSM (or fmod_ret) first
    /// exactly where its mechanism starts with an LSM hook.
    #[test]
    fn fmod_ret_names_and_lsm_in_effect_follow_the_lsm_names() {
        let groups = [
            "exec",
            "file_write",
            "file_names",
            "file_owner",
            "file_truncate",
            "file_attrs",
            "file_acls",
            "connect",
            "self",
            "sockets",
            "unix",
            "io_uring",
        ];
        for mask in 0..(1u32 << groups.len()) {
            let on: Vec<&str> = groups
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, g)| *g)
                .collect();
            for attached in [0, agent_common::feature::CGROUP_SOCK] {
                let lsm = hook_mechanisms(&on, true, attached);
                let fmod = hook_mechanisms_via(&on, true, attached, Via::FmodRet);
                for (l, f) in lsm.iter().zip(&fmod) {
                    let renamed = l
                        .mechanism
                        .replace("lsm/bprm_check_security", "fmod_ret/security_bprm_check")
                        .replace("lsm/", "fmod_ret/security_");
                    assert_eq!(f.mechanism, renamed, "{on:?}");
                    assert_eq!((f.hook, &f.enforcement), (l.hook, &l.enforcement));
                }
            }
            let mut report = test_report();
            report.lsm_groups = on.iter().map(|g| g.to_string()).collect();
            for h in hook_mechanisms(&on, true, 0) {
                assert_eq!(
                    report.lsm_in_effect(h.hook),
                    h.mechanism.starts_with("lsm/"),
                    "{on:?}: {}",
                    h.hook
                );
            }
        }
    }

    fn test_report() -> KernelReport {
        KernelReport {
            kernel: "6.1.0".into(),
            features: Features {
                cgroup_sock: Probe::yes("test"),
                bpf_lsm: Probe::no("load: EPERM"),
                fmod_ret: Probe::no("load: EPERM"),
                fentry: Probe::no("load: EPERM"),
                cgroup_sock_addr: Probe::yes("loaded"),
                ring_buffer: Probe::yes("created"),
                send_signal: Probe::yes("loaded"),
                landlock_abi: Some(3),
                landlock: Probe::yes("ABI 3"),
                active_lsms: None,
            },
            hooks: Vec::new(),
            lsm_groups: Vec::new(),
            degraded: Vec::new(),
            missing_tracepoints: vec![],
        }
    }

    #[test]
    fn report_lines_name_every_hook_and_degradation() {
        let r = KernelReport {
            hooks: vec![HookMechanism {
                hook: "connect",
                mechanism: "cgroup_sock_addr/connect4,connect6".into(),
                enforcement: "deny (-EPERM)".into(),
            }],
            degraded: vec![Degradation {
                feature: "argv",
                effect: "exec events carry no command line",
                missing: vec!["mm_struct.arg_start: not found".into()],
            }],
            ..test_report()
        };
        let text = r.lines().join("\n");
        assert!(text.contains("bpf_lsm=no") && text.contains("landlock_abi=3"), "{text}");
        assert!(text.contains("bpf_lsm unavailable: load: EPERM"), "{text}");
        assert!(
            text.contains("hook connect: cgroup_sock_addr/connect4,connect6"),
            "{text}"
        );
        assert!(text.contains("DEGRADED argv"), "{text}");
        assert!(!r.lsm_in_effect("connect"));
    }
}
