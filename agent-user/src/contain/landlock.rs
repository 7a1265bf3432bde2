//! Landlock, applied by `tether exec` to itself just before it execs the agent, where BPF LSM
//! is refused: kernel-enforced for the whole tree it starts, inherited by every child, and
//! impossible to drop. Landlock can only allow hierarchies, so each scope pattern becomes its
//! literal directory (or file): coarser than the scope, never narrower. The exact scope and
//! the guardrails stay with the kernel probes (SIGKILL) and the daemon.
use std::path::{Path, PathBuf};

use landlock::{ABI, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus};
use serde::{Deserialize, Serialize};

use crate::credentials::scope::PSEUDO_DEVICES;

/// What to restrict, as the daemon sends it with a binding (None: leave that class alone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    /// Patterns of `scope.write` (writes anywhere else are refused with EACCES).
    pub write: Option<Vec<String>>,
    /// Patterns of `scope.exec` (execs of anything else are refused with EACCES).
    pub exec: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("Landlock: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("Landlock is not enforced by this kernel ({0:?})")]
    NotEnforced(RulesetStatus),
}

/// The literal directory or file a pattern lives in: the part before its first wildcard, cut
/// back to a `/`, then to the nearest path that exists (a rule needs an existing object).
pub fn anchor(pattern: &str) -> PathBuf {
    let literal = match pattern.find(['*', '?', '[', '{', '\\']) {
        Some(i) => &pattern[..pattern[..i].rfind('/').map(|j| j + 1).unwrap_or(1)],
        None => pattern,
    };
    let mut p = PathBuf::from(literal);
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

/// The ELF interpreter of the running executable (execve of a dynamic binary opens it for
/// execution too).
fn interpreter() -> Option<PathBuf> {
    let exe = std::fs::read("/proc/self/exe").ok()?;
    // Find PT_INTERP: a 64-bit little-endian ELF.
    if exe.get(..4)? != b"\x7fELF" || exe.get(4)? != &2 {
        return None;
    }
    let u64_at = |o: usize| Some(u64::from_le_bytes(exe.get(o..o + 8)?.try_into().ok()?));
    let u16_at = |o: usize| Some(u16::from_le_bytes(exe.get(o..o + 2)?.try_into().ok()?));
    let (phoff, phentsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32::from_le_bytes(exe.get(ph..ph + 4)?.try_into().ok()?) == 3 {
            let (off, size) = (u64_at(ph + 8)? as usize, u64_at(ph + 32)? as usize);
            let raw = exe.get(off..off + size)?;
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            return Some(PathBuf::from(String::from_utf8_lossy(&raw[..end]).into_owned()));
        }
    }
    None
}

fn add(
    ruleset: landlock::RulesetCreated,
    path: &Path,
    access: BitFlags<AccessFs>,
) -> Result<landlock::RulesetCreated, LandlockError> {
    match PathFd::new(path) {
        Ok(fd) => Ok(ruleset.add_rule(PathBeneath::new(fd, access))?),
        // Gone since the anchor was chosen: nothing to allow there.
        Err(_) => Ok(ruleset),
    }
}

/// Restricts the calling process (and everything it execs or forks from now on).
pub fn apply(plan: &LandlockPlan) -> Result<(), LandlockError> {
    let abi = ABI::V3;
    let write = AccessFs::from_write(abi);
    let exec = BitFlags::from(AccessFs::Execute);
    let mut handled = BitFlags::<AccessFs>::EMPTY;
    if plan.write.is_some() {
        handled |= write;
    }
    if plan.exec.is_some() {
        handled |= exec;
    }
    if handled.is_empty() {
        return Ok(());
    }
    let mut rs = Ruleset::default().handle_access(handled)?.create()?;
    if let Some(patterns) = &plan.write {
        for p in patterns {
            rs = add(rs, &anchor(p), write)?;
        }
        for d in PSEUDO_DEVICES {
            rs = add(rs, Path::new(d), AccessFs::from_file(abi) & write)?;
        }
        rs = add(rs, Path::new("/dev/pts"), write)?;
    }
    if let Some(patterns) = &plan.exec {
        for p in patterns {
            rs = add(rs, &anchor(p), exec)?;
        }
        if let Some(interp) = interpreter() {
            rs = add(rs, &interp, exec)?;
        }
    }
    let status = rs.restrict_self()?;
    match status.ruleset {
        RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced => Ok(()),
        other => Err(LandlockError::NotEnforced(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_the_literal_part_cut_to_an_existing_path() {
        assert_eq!(anchor("/etc/"), PathBuf::from("/etc/"));
        assert_eq!(anchor("/usr/bin/python3*"), PathBuf::from("/usr/bin/"));
        assert_eq!(anchor("/tmp/does-not-exist-xyz/a/b"), PathBuf::from("/tmp"));
        assert_eq!(anchor("/home/*/.ssh/**"), PathBuf::from("/home/"));
        assert_eq!(anchor("/*"), PathBuf::from("/"));
    }

    #[test]
    fn our_interpreter_is_found() {
        // Tests are dynamically linked on these machines.
        let i = interpreter().expect("PT_INTERP of the test binary");
        assert!(i.exists(), "{}", i.display());
    }
}
