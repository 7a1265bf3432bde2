//! The kills the kernel cannot do itself (a cgroup hook cannot send signals; kill-tree reaches
//! other processes): through pidfds, so a pid recycled since the record was made is never hit.
//!
//! kill-tree leaves no window for escape: every process of a task is in the kernel's tracked
//! map from the moment it is forked (the fork hook inserts it synchronously), a process with a
//! pending SIGKILL can no longer fork, and the loop below signals every tracked member, oldest
//! first (so no parent runs on after a child's death), and reads the map again until no
//! member is left alive.
use std::{os::fd::RawFd, time::Duration};

use crate::lineage::ns_to_ticks;

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("pidfd_open({pid}): {source}")]
    Open { pid: u32, source: std::io::Error },
    #[error("pidfd_send_signal({pid}): {source}")]
    Signal { pid: u32, source: std::io::Error },
    #[error("{0} process(es) of the tree still alive after {1} rounds")]
    Survivors(usize, usize),
}

struct PidFd(RawFd);

impl Drop for PidFd {
    fn drop(&mut self) {
        // SAFETY: an fd we own.
        unsafe { libc::close(self.0) };
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<PidFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(PidFd(fd as RawFd))
    }
}

/// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Outcome of one kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    Signalled,
    /// The process was already gone (or the pid now belongs to another process).
    Gone,
}

/// SIGKILLs process `pid` if it is still the one that started at `start_ns` (ns since boot;
/// 0: unknown, not checked).
pub fn kill(pid: u32, start_ns: u64, ticks_per_sec: u64) -> Result<Killed, KillError> {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(Killed::Gone),
        Err(source) => return Err(KillError::Open { pid, source }),
    };
    // The pidfd pins the process: the start time read now is the pidfd's process's.
    if start_ns != 0 && start_ticks(pid) != Some(ns_to_ticks(start_ns, ticks_per_sec)) {
        return Ok(Killed::Gone);
    }
    // SAFETY: plain syscall; a null siginfo means "as kill(2) would".
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.0,
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(Killed::Gone);
        }
        return Err(KillError::Signal { pid, source: e });
    }
    Ok(Killed::Signalled)
}

/// Kills every member of a tree: `members()` lists (pid, start_ns) of the live members (from
/// the kernel's tracked map). Returns the pids signalled.
pub fn kill_tree(mut members: impl FnMut() -> Vec<(u32, u64)>, ticks_per_sec: u64) -> Result<Vec<u32>, KillError> {
    const ROUNDS: usize = 200;
    let mut signalled = std::collections::BTreeSet::new();
    for _ in 0..ROUNDS {
        let all = members();
        if signalled.is_empty() {
            tracing::debug!(members = ?all, "kill-tree: the tree's tracked entries");
        }
        let mut live: Vec<(u32, u64)> = all
            .into_iter()
            .filter(|(pid, start)| {
                start_ticks(*pid).is_some_and(|t| *start == 0 || t == ns_to_ticks(*start, ticks_per_sec))
                    && !is_zombie(*pid)
            })
            .collect();
        if live.is_empty() {
            return Ok(signalled.into_iter().map(|(pid, _)| pid).collect());
        }
        tracing::debug!(live = live.len(), "kill-tree round");
        signal_order(&mut live);
        for (pid, start) in live {
            if kill(pid, start, ticks_per_sec)? == Killed::Signalled {
                signalled.insert((pid, start));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = members().len();
    Err(KillError::Survivors(left, ROUNDS))
}

/// Oldest first: a parent started before its children, so it is signalled before them and
/// never runs again after one of them dies (a shell whose `sleep` was killed first would go
/// on to its next command before its own SIGKILL landed).
fn signal_order(members: &mut [(u32, u64)]) {
    members.sort_by_key(|(pid, start)| (*start, *pid));
}

/// Is `pid` gone, a zombie waiting to be reaped, or being reaped (`X`)?
pub(crate) fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with(['Z', 'X'])))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_signalled_before_their_children() {
        // (pid, start_ns): the root started first, a child later, a grandchild last; pids
        // say nothing of age (they wrap).
        let mut m = vec![(300, 3_000), (900, 1_000), (100, 2_000)];
        signal_order(&mut m);
        assert_eq!(m, vec![(900, 1_000), (100, 2_000), (300, 3_000)]);
    }
}
