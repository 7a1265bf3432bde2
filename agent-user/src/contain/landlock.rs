//! Landlock, applied by `tether exec` to itself just before it execs the agent (see
//! [`super::sandbox`]): kernel-enforced for the whole tree it starts, inherited by every child,
//! impossible to drop, on every kernel with Landlock, at the highest ABI the kernel offers.
//!
//! Landlock can only allow hierarchies, so:
//! - each scope pattern becomes its literal directory (or file): coarser than the scope, never
//!   narrower (the exact scope stays with the kernel probes and the daemon);
//! - a guarded tree inside a granted one is expressed by granting its siblings, level by level
//!   down to it ([`grants`]): the directories on the way to it keep their entries writable but
//!   get no new ones. Symlinks on the way are not followed (their targets are granted, or not,
//!   on their own); `/proc` and `/sys` are granted whole (kernel files; the kernel probes judge
//!   what is guarded there, and their entries come and go with processes).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};

use crate::credentials::scope::PSEUDO_DEVICES;

/// Ports Landlock is given one rule each for; a scope with wider port ranges leaves TCP to the
/// cgroup hooks (which refuse on every kernel).
const MAX_PORTS: usize = 1024;
/// Rules a guarded tree may expand into (siblings granted level by level).
const MAX_RULES: usize = 4096;

/// What to restrict, as the daemon sends it with a registration or binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    /// Patterns of `scope.write` (None: anywhere but `guarded`).
    pub write: Option<Vec<String>>,
    /// Patterns of `scope.exec` (None: not restricted).
    pub exec: Option<Vec<String>>,
    /// Trees no write may reach (enforced guardrails and Tether's own files), literal paths.
    #[serde(default)]
    pub guarded: Vec<String>,
    /// TCP port ranges connects may go to (None: not restricted by Landlock).
    #[serde(default)]
    pub connect: Option<Vec<(u16, u16)>>,
    /// TCP port ranges binds may use (None: not restricted by Landlock).
    #[serde(default)]
    pub bind: Option<Vec<(u16, u16)>>,
    /// Abstract Unix sockets outside the sandbox may not be connected to.
    #[serde(default)]
    pub scope_abstract_unix: bool,
    /// Processes outside the sandbox (the daemon) may not be signalled.
    #[serde(default)]
    pub scope_signal: bool,
}

/// What Landlock holds once applied (for `tether status` and the events).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockLayers {
    /// The ABI the ruleset was built for (the kernel's).
    pub abi: u32,
    /// Writes restricted (to the scope, and away from the guarded trees).
    pub write: bool,
    pub exec: bool,
    /// TCP connect / bind restricted to the scope's ports.
    pub connect: bool,
    pub bind: bool,
    /// Scopes in effect: `signal`, `abstract_unix`.
    pub scopes: Vec<String>,
    /// Guarded trees expressed (their siblings granted).
    pub guarded: Vec<String>,
    /// What the plan asked for that this kernel's Landlock cannot do, said plainly.
    pub missing: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("Landlock: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("Landlock is not enforced by this kernel ({0:?})")]
    NotEnforced(RulesetStatus),
    #[error("a guarded tree expands into more than {MAX_RULES} Landlock rules")]
    TooManyRules,
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

/// The literal tree a guard pattern names (`dir/`, `dir/**` or an exact path), None for a
/// pattern with wildcards elsewhere (left to the kernel probes: denying its anchor would deny
/// far more than the rule says).
pub fn guard_tree(pattern: &str) -> Option<PathBuf> {
    let p = pattern.strip_suffix("**").unwrap_or(pattern);
    if p.contains(['*', '?', '[', '{', '\\']) || !p.starts_with('/') {
        return None;
    }
    let p = p.trim_end_matches('/');
    Some(PathBuf::from(if p.is_empty() { "/" } else { p }))
}

/// The paths to grant so that everything under `roots` is covered except `guarded` (each
/// guarded tree and the directories on the way down to it are left out, their other entries
/// granted). Paths are taken as given: callers canonicalise.
pub fn grants(roots: &[PathBuf], guarded: &[PathBuf]) -> Result<Vec<PathBuf>, LandlockError> {
    fn walk(dir: &Path, guarded: &[PathBuf], out: &mut Vec<PathBuf>) -> Result<(), LandlockError> {
        if out.len() > MAX_RULES {
            return Err(LandlockError::TooManyRules);
        }
        if guarded.iter().any(|g| dir.starts_with(g)) {
            return Ok(());
        }
        let below = guarded.iter().any(|g| g.starts_with(dir) && g != dir);
        let whole = !below || kernel_tree(dir);
        if whole {
            out.push(dir.to_path_buf());
            return Ok(());
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for p in names {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {}
                Ok(_) => walk(&p, guarded, out)?,
                Err(_) => {}
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for r in roots {
        walk(r, guarded, &mut out)?;
    }
    out.sort();
    out.dedup();
    Ok(out)
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
    abi: ABI,
) -> Result<landlock::RulesetCreated, LandlockError> {
    let access = match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => access & AccessFs::from_file(abi),
        Ok(_) => access,
        // Gone since the plan was made: nothing to allow there.
        Err(_) => return Ok(ruleset),
    };
    match PathFd::new(path) {
        Ok(fd) => Ok(ruleset.add_rule(PathBeneath::new(fd, access))?),
        Err(_) => Ok(ruleset),
    }
}

/// Port ranges as single ports, None when there are more than Landlock is given.
fn ports(ranges: &[(u16, u16)]) -> Option<BTreeSet<u16>> {
    let mut out = BTreeSet::new();
    for &(lo, hi) in ranges {
        if (hi as usize - lo as usize) >= MAX_PORTS {
            return None;
        }
        out.extend(lo..=hi);
        if out.len() > MAX_PORTS {
            return None;
        }
    }
    Some(out)
}

/// `p` with its longest existing prefix resolved (a guarded path that does not exist yet,
/// behind a symlinked directory such as /var/run, is guarded where it would be made).
fn canonical(p: &Path) -> PathBuf {
    let mut head = p.to_path_buf();
    let mut tail = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&head) {
            return tail.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                head = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Under /proc or /sys (granted whole: see the module's text).
fn kernel_tree(p: &Path) -> bool {
    p.starts_with("/proc") || p.starts_with("/sys")
}

/// Restricts the calling process (and everything it execs or forks from now on), at ABI
/// `kernel_abi` (the kernel's, from `landlock_create_ruleset`).
pub fn apply(plan: &LandlockPlan, kernel_abi: u32) -> Result<LandlockLayers, LandlockError> {
    let abi = ABI::from(kernel_abi as i32);
    let mut layers = LandlockLayers {
        abi: kernel_abi,
        ..Default::default()
    };
    let write = AccessFs::from_write(abi);
    let exec = BitFlags::from(AccessFs::Execute);
    let restrict_write = plan.write.is_some() || !plan.guarded.is_empty();
    let mut handled = BitFlags::<AccessFs>::EMPTY;
    if restrict_write {
        handled |= write;
    }
    if plan.exec.is_some() {
        handled |= exec;
    }
    let net = AccessNet::from_all(abi);
    let connect = plan.connect.as_deref().and_then(ports);
    let bind = plan.bind.as_deref().and_then(ports);
    let mut handled_net = BitFlags::<AccessNet>::EMPTY;
    for (asked, got, right, name) in [
        (&plan.connect, &connect, AccessNet::ConnectTcp, "connect"),
        (&plan.bind, &bind, AccessNet::BindTcp, "bind"),
    ] {
        match (asked, got) {
            (None, _) => {}
            (Some(_), None) => layers.missing.push(format!(
                "tcp {name}: more than {MAX_PORTS} ports in the scope (left to the cgroup hooks)"
            )),
            (Some(_), Some(_)) if !net.contains(right) => layers.missing.push(format!(
                "tcp {name}: Landlock ABI {kernel_abi} has no network rights (4+)"
            )),
            (Some(_), Some(_)) => handled_net |= right,
        }
    }
    let mut scopes = BitFlags::<Scope>::EMPTY;
    let all_scopes = Scope::from_all(abi);
    for (asked, s, name) in [
        (plan.scope_signal, Scope::Signal, "signal"),
        (plan.scope_abstract_unix, Scope::AbstractUnixSocket, "abstract_unix"),
    ] {
        if !asked {
            continue;
        }
        if all_scopes.contains(s) {
            scopes |= s;
            layers.scopes.push(name.to_string());
        } else {
            layers
                .missing
                .push(format!("{name} scoping: Landlock ABI {kernel_abi} has none (6+)"));
        }
    }
    if handled.is_empty() && handled_net.is_empty() && scopes.is_empty() {
        return Ok(layers);
    }
    let mut attr = Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
    if !handled.is_empty() {
        attr = attr.handle_access(handled)?;
    }
    if !handled_net.is_empty() {
        attr = attr.handle_access(handled_net)?;
    }
    if !scopes.is_empty() {
        attr = attr.scope(scopes)?;
    }
    let mut rs = attr.create()?;
    if restrict_write {
        let roots: Vec<PathBuf> = match &plan.write {
            Some(patterns) => patterns.iter().map(|p| canonical(&anchor(p))).collect(),
            None => vec![PathBuf::from("/")],
        };
        let guarded: Vec<PathBuf> = plan.guarded.iter().map(|g| canonical(Path::new(g))).collect();
        for p in grants(&roots, &guarded)? {
            rs = add(rs, &p, write, abi)?;
        }
        for d in PSEUDO_DEVICES {
            rs = add(rs, Path::new(d), write, abi)?;
        }
        rs = add(rs, Path::new("/dev/pts"), write, abi)?;
        layers.write = true;
        for (g, c) in plan.guarded.iter().zip(&guarded) {
            if kernel_tree(c) {
                layers.missing.push(format!(
                    "write guard {g}: under /proc or /sys, left to the kernel probes"
                ));
            } else {
                layers.guarded.push(g.clone());
            }
        }
    }
    if let Some(patterns) = &plan.exec {
        for p in patterns {
            rs = add(rs, &anchor(p), exec, abi)?;
        }
        if let Some(interp) = interpreter() {
            rs = add(rs, &interp, exec, abi)?;
        }
        layers.exec = true;
    }
    for (set, right) in [(&connect, AccessNet::ConnectTcp), (&bind, AccessNet::BindTcp)] {
        if handled_net.contains(right)
            && let Some(ports) = set
        {
            for &port in ports {
                rs = rs.add_rule(NetPort::new(port, right))?;
            }
        }
    }
    layers.connect = handled_net.contains(AccessNet::ConnectTcp);
    layers.bind = handled_net.contains(AccessNet::BindTcp);
    let status = rs.restrict_self()?;
    match status.ruleset {
        RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced => Ok(layers),
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
    fn guard_trees_are_literal_only() {
        assert_eq!(guard_tree("/etc/"), Some(PathBuf::from("/etc")));
        assert_eq!(guard_tree("/var/lib/tether/**"), Some(PathBuf::from("/var/lib/tether")));
        assert_eq!(
            guard_tree("/proc/sysrq-trigger"),
            Some(PathBuf::from("/proc/sysrq-trigger"))
        );
        assert_eq!(guard_tree("/home/*/.ssh"), None);
        assert_eq!(guard_tree("relative/"), None);
    }

    #[test]
    fn a_guarded_tree_is_left_out_by_granting_its_siblings() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for p in ["a/keep", "a/guarded/x", "b", "a/also"] {
            std::fs::create_dir_all(root.join(p)).unwrap();
        }
        std::fs::write(root.join("a/file"), b"").unwrap();
        std::os::unix::fs::symlink(root.join("a/guarded"), root.join("a/link")).unwrap();
        let g = grants(&[root.to_path_buf()], &[root.join("a/guarded")]).unwrap();
        let want: Vec<PathBuf> = ["a/also", "a/file", "a/keep", "b"]
            .iter()
            .map(|p| root.join(p))
            .collect();
        assert_eq!(g, want, "the symlink to the guarded tree is not granted either");
        // Nothing guarded below: the root itself.
        assert_eq!(
            grants(&[root.join("b")], &[root.join("a/guarded")]).unwrap(),
            vec![root.join("b")]
        );
        // The root inside a guarded tree: nothing.
        assert!(
            grants(&[root.join("a/guarded/x")], &[root.join("a/guarded")])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn port_ranges_expand_up_to_the_cap() {
        assert_eq!(ports(&[(80, 81), (443, 443)]).unwrap().len(), 3);
        assert!(ports(&[(0, u16::MAX)]).is_none());
    }

    #[test]
    fn our_interpreter_is_found() {
        // Tests are dynamically linked on these machines.
        let i = interpreter().expect("PT_INTERP of the test binary");
        assert!(i.exists(), "{}", i.display());
    }
}
