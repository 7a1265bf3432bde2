//! /proc: snapshots of live processes for the process table, and adoption at start of the
//! processes that match an agent selector, with all their descendants.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
};

use agent_common::InodeKey;

use crate::{
    lineage::{ProcSnapshot, ProcSource},
    selectors::{self, Candidate},
};

/// Reads /proc through the procfs crate.
pub struct Procfs;

impl ProcSource for Procfs {
    fn snapshot(&self, pid: u32) -> Option<ProcSnapshot> {
        let p = procfs::process::Process::new(pid as i32).ok()?;
        let stat = p.stat().ok()?;
        Some(ProcSnapshot {
            pid,
            ppid: stat.ppid as u32,
            start: stat.starttime,
            exe: p.exe().map(|e| e.display().to_string()).unwrap_or_default(),
            argv: p.cmdline().unwrap_or_default(),
            comm: stat.comm,
            uid: p.uid().unwrap_or(u32::MAX),
        })
    }
}

/// One variable of a live process's environment (/proc/PID/environ, as it was at exec).
pub fn environ_var(pid: u32, name: &str) -> Option<String> {
    let env = procfs::process::Process::new(pid as i32).ok()?.environ().ok()?;
    env.get(std::ffi::OsStr::new(name))
        .map(|v| v.to_string_lossy().into_owned())
}

/// Inode of a live process's executable, as the kernel selector map keys it.
pub fn exe_inode(pid: u32) -> Option<InodeKey> {
    let m = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some(InodeKey::from_stat(m.dev(), m.ino()))
}

/// A process found running, with what the selectors look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub pid: u32,
    pub ppid: u32,
    pub candidate: Candidate,
}

/// Which running processes to adopt: those `selected`, then all their descendants. Parents
/// come before children in the result. Pure.
pub fn select_for_adoption(running: &[Running], selected: impl Fn(&Candidate) -> bool, self_pid: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for r in running {
        children.entry(r.ppid).or_default().push(r.pid);
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<u32> = running
        .iter()
        .filter(|r| r.pid != self_pid && selected(&r.candidate))
        .map(|r| r.pid)
        .collect();
    stack.reverse();
    while let Some(pid) = stack.pop() {
        if pid == self_pid || !seen.insert(pid) {
            continue;
        }
        out.push(pid);
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids.iter().rev());
        }
    }
    out
}

/// Every running process (kernel threads included; they never match).
pub fn running() -> Vec<Running> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok())
        .filter_map(|p| {
            let stat = p.stat().ok()?;
            let pid = stat.pid as u32;
            Some(Running {
                pid,
                ppid: stat.ppid as u32,
                candidate: Candidate {
                    comm: stat.comm,
                    exe: exe_inode(pid),
                    uid: p.uid().ok(),
                    cgroup: selectors::cgroup_of(pid),
                    pod: None,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(pid: u32, ppid: u32, comm: &str) -> Running {
        Running {
            pid,
            ppid,
            candidate: Candidate {
                comm: comm.into(),
                ..Candidate::default()
            },
        }
    }

    #[test]
    fn adopts_matches_and_their_descendants_parents_first() {
        let running = vec![
            r(1, 0, "init"),
            r(10, 1, "claude"),
            r(11, 10, "bash"),
            r(12, 11, "git"),
            r(20, 1, "bash"),
            r(30, 11, "tether"),
        ];
        let got = select_for_adoption(&running, |c| c.comm == "claude", 30);
        assert_eq!(got, vec![10, 11, 12], "the daemon itself (30) is never adopted");
    }

    #[test]
    fn adoption_applies_the_selectors_rules() {
        let key = InodeKey {
            ino: 5,
            dev: 9,
            _pad: 0,
        };
        let sels = selectors::CompiledSelectors {
            list: vec![selectors::Compiled {
                id: "py-in-agents".into(),
                exe: [key].into(),
                cgroup: [("/agents".to_string(), 3)].into(),
                ..Default::default()
            }],
        };
        let mut running = vec![r(1, 0, "init"), r(2, 1, "python3"), r(3, 1, "python3")];
        for p in &mut running[1..] {
            p.candidate.exe = Some(key);
        }
        running[1].candidate.cgroup = Some("/agents/a".into());
        running[2].candidate.cgroup = Some("/user.slice".into());
        let got = select_for_adoption(&running, |c| sels.matching(c).is_some(), 99);
        assert_eq!(got, vec![2], "same executable, only the one in the selected cgroup");
    }
}
