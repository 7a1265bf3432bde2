//! The seccomp filter `tether exec` applies to itself after Landlock, for what Landlock cannot
//! express: calls that reach around every path and network rule (bpf, ptrace and
//! process_vm_*, device nodes, file handles, raw and packet sockets, kernel modules, kexec),
//! io_uring unless the scope grants it, and the metadata writes the kernel probes can only
//! judge after the fact (where BPF LSM is not in effect). Each is refused with EPERM, before
//! it happens, on every kernel. A syscall of another ABI (32-bit `int 0x80`, x32) kills the
//! process: the kernel probes read the 64-bit table.
use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch, sock_filter,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompPlan {
    /// io_uring is granted: its calls stay open.
    #[serde(default)]
    pub io_uring: bool,
    /// Raw IP sockets are granted.
    #[serde(default)]
    pub raw: bool,
    /// Packet sockets are granted.
    #[serde(default)]
    pub packet: bool,
    /// Device nodes may be made (mknod of a character or block device).
    #[serde(default)]
    pub devices: bool,
    /// Refuse chown and extended-attribute writes (set where the kernel cannot refuse them in
    /// advance; chmod and utimes stay, judged after the fact: builds need them).
    #[serde(default)]
    pub metadata: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("seccomp: {0}")]
    Apply(#[from] seccompiler::Error),
    #[error("seccomp: no filter for this architecture")]
    Arch,
}

/// The calls refused, by name (for status and events).
pub fn refused(plan: &SeccompPlan) -> Vec<&'static str> {
    let mut v = vec![
        "bpf",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "open_by_handle_at",
        "pidfd_getfd",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
    ];
    if !plan.devices {
        v.push("mknod/mknodat (devices)");
    }
    if !plan.io_uring {
        v.extend(["io_uring_setup", "io_uring_enter", "io_uring_register"]);
    }
    if !plan.raw {
        v.push("socket(SOCK_RAW)");
    }
    if !plan.packet {
        v.push("socket(AF_PACKET)");
    }
    if plan.metadata {
        v.extend(["chown family", "setxattr/removexattr family"]);
    }
    v.push("32-bit and x32 syscalls (kill)");
    v
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

/// The filter's program (x86_64 and aarch64).
pub fn program(plan: &SeccompPlan) -> Result<BpfProgram, SeccompError> {
    let arch = if cfg!(target_arch = "x86_64") {
        TargetArch::x86_64
    } else if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        return Err(SeccompError::Arch);
    };
    let filter = SeccompFilter::new(
        rules(plan)?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    let mut prog: BpfProgram = filter.try_into()?;
    splice_abi_check(&mut prog);
    Ok(prog)
}

/// The calls refused (by number), each with the argument conditions under which it is (none:
/// always). Every number is one of agent_common::syscalls::SANDBOXED, whose tracepoints
/// record the refusals.
fn rules(plan: &SeccompPlan) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let always = [
        libc::SYS_bpf,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_open_by_handle_at,
        libc::SYS_pidfd_getfd,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
    ];
    for nr in always {
        rules.insert(nr, vec![]);
    }
    if !plan.io_uring {
        for nr in [
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ] {
            rules.insert(nr, vec![]);
        }
    }
    // mknod(path, mode, dev) / mknodat(dirfd, path, mode, dev) of a character or block device.
    let fmt = libc::S_IFMT as u64;
    let device = |arg: u8| -> Result<Vec<SeccompRule>, SeccompError> {
        Ok(vec![
            SeccompRule::new(vec![cond(arg, SeccompCmpOp::MaskedEq(fmt), libc::S_IFCHR as u64)?])?,
            SeccompRule::new(vec![cond(arg, SeccompCmpOp::MaskedEq(fmt), libc::S_IFBLK as u64)?])?,
        ])
    };
    if !plan.devices {
        #[cfg(target_arch = "x86_64")]
        rules.insert(libc::SYS_mknod, device(1)?);
        rules.insert(libc::SYS_mknodat, device(2)?);
    }
    // socket(domain, type, protocol).
    let mut socket = Vec::new();
    if !plan.packet {
        socket.push(SeccompRule::new(vec![cond(
            0,
            SeccompCmpOp::Eq,
            libc::AF_PACKET as u64,
        )?])?);
        // The old SOCK_PACKET type of AF_INET is a packet socket too.
        const SOCK_PACKET: u64 = 10;
        socket.push(SeccompRule::new(vec![
            cond(0, SeccompCmpOp::Eq, libc::AF_INET as u64)?,
            cond(1, SeccompCmpOp::MaskedEq(0xf), SOCK_PACKET)?,
        ])?);
    }
    if !plan.raw {
        for family in [libc::AF_INET, libc::AF_INET6] {
            socket.push(SeccompRule::new(vec![
                cond(0, SeccompCmpOp::Eq, family as u64)?,
                cond(1, SeccompCmpOp::MaskedEq(0xf), libc::SOCK_RAW as u64)?,
            ])?);
        }
    }
    if !socket.is_empty() {
        rules.insert(libc::SYS_socket, socket);
    }
    if plan.metadata {
        #[cfg(target_arch = "x86_64")]
        for nr in [libc::SYS_chown, libc::SYS_lchown] {
            rules.insert(nr, vec![]);
        }
        for nr in [
            libc::SYS_fchown,
            libc::SYS_fchownat,
            libc::SYS_setxattr,
            libc::SYS_lsetxattr,
            libc::SYS_fsetxattr,
            libc::SYS_removexattr,
            libc::SYS_lremovexattr,
            libc::SYS_fremovexattr,
            // setxattrat, removexattrat (6.13+; libc has no names for them yet).
            463,
            466,
        ] {
            rules.insert(nr, vec![]);
        }
    }
    Ok(rules)
}

fn splice_abi_check(#[allow(unused_variables)] prog: &mut BpfProgram) {
    // After the architecture check (three instructions): x32 calls carry the x86_64 audit arch
    // with bit 30 set in the number; they would pass every rule above.
    #[cfg(target_arch = "x86_64")]
    {
        const X32_BIT: u32 = 0x4000_0000;
        let check = [
            // A = seccomp_data.nr
            sock_filter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 0,
            },
            // if A >= X32_BIT: kill; else go on
            sock_filter {
                code: 0x35,
                jt: 0,
                jf: 1,
                k: X32_BIT,
            },
            sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_KILL_PROCESS,
            },
        ];
        prog.splice(3..3, check);
    }
}

/// Applies the filter to the calling thread (before exec: the agent inherits it).
pub fn apply(plan: &SeccompPlan) -> Result<Vec<&'static str>, SeccompError> {
    let prog = program(plan)?;
    seccompiler::apply_filter(&prog)?;
    Ok(refused(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds_for_every_plan() {
        for io_uring in [false, true] {
            for metadata in [false, true] {
                let p = SeccompPlan {
                    io_uring,
                    metadata,
                    ..Default::default()
                };
                let prog = program(&p).unwrap();
                assert!(prog.len() > 20, "{}", prog.len());
                // The x32 check sits right after the architecture check.
                assert_eq!(prog[4].k, 0x4000_0000);
            }
        }
    }

    /// Each call the filter can refuse has its refusals recorded: it is one of the calls the
    /// sandbox probes are attached to.
    #[test]
    fn every_refused_call_is_one_the_sandbox_probes_watch() {
        let all = SeccompPlan {
            metadata: true,
            ..Default::default()
        };
        for nr in rules(&all).unwrap().keys() {
            assert!(
                agent_common::syscalls::sandboxed_by_nr(*nr as u32).is_some(),
                "syscall {nr} is refused but its refusals would not be recorded"
            );
        }
        assert_eq!(
            agent_common::syscalls::sandboxed_by_nr(libc::SYS_io_uring_setup as u32).map(|s| s.name),
            Some("io_uring_setup")
        );
    }

    /// Applied in a child: the refused calls fail with EPERM, the others work.
    #[test]
    fn a_child_under_the_filter_is_refused_bpf_and_raw_sockets() {
        use nix::{
            sys::wait::{WaitStatus, waitpid},
            unistd::{ForkResult, fork},
        };
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = (|| {
                    if apply(&SeccompPlan::default()).is_err() {
                        return 10;
                    }
                    let bpf = unsafe { libc::syscall(libc::SYS_bpf, 0, 0, 0) };
                    if bpf != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
                        return 11;
                    }
                    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 1) };
                    if raw != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
                        return 12;
                    }
                    let tcp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
                    if tcp < 0 {
                        return 13;
                    }
                    let uring = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, 0) };
                    if uring != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
                        return 14;
                    }
                    0
                })();
                unsafe { libc::_exit(code) };
            }
            ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, code) => assert_eq!(code, 0, "child check {code} failed"),
                other => panic!("{other:?}"),
            },
        }
    }
}
