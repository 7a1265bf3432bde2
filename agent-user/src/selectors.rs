//! Agent selectors: which processes are AI agents. Written in rule files (`agents:`), resolved
//! at load against this host (executable paths to inodes, user names to uids, cgroup paths to
//! cgroup ids), then matched in the kernel at every exec (agent_common::select) and here, by
//! the same rules, for processes already running when the daemon starts.
//!
//! Semantics: a process matches a selector when it meets every criterion the selector gives
//! (exe AND comm AND uid AND cgroup), each criterion being met by any of its values; it is an
//! agent when it matches any selector.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    path::Path,
};

use agent_common::{COMM_LEN, InodeKey, select};

/// A user named by a selector: a uid, or a name resolved at load.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(untagged)]
pub enum UserRef {
    Id(u32),
    Name(String),
}

/// One selector as written (validated for shape, not yet resolved on this host).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub id: String,
    /// Absolute executable paths (matched by the file they name: symlinks followed).
    pub exe: BTreeSet<String>,
    /// Process names (comm, at most 15 bytes).
    pub comm: BTreeSet<String>,
    /// Real uids, or user names.
    pub uid: BTreeSet<UserRef>,
    /// cgroup v2 paths as /proc/PID/cgroup shows them (`/system.slice/agent.service`); a
    /// process in that cgroup or any cgroup below it matches.
    pub cgroup: BTreeSet<String>,
    /// Kubernetes namespaces of the process's pod.
    pub namespace: BTreeSet<String>,
    /// Labels the process's pod must carry, each with this value.
    pub pod_labels: BTreeMap<String, String>,
}

impl Selector {
    /// Does it select by pod (namespace or labels)?
    pub fn by_pod(&self) -> bool {
        !self.namespace.is_empty() || !self.pod_labels.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    #[error("agent selector {id:?}: exe {path}: {source}")]
    Exe {
        id: String,
        path: String,
        source: std::io::Error,
    },
    #[error("agent selector {id:?}: uid {name:?}: no such user on this host")]
    NoUser { id: String, name: String },
    #[error("agent selector {id:?}: uid {name:?}: cannot look the user up: {source}")]
    UserLookup {
        id: String,
        name: String,
        source: nix::Error,
    },
    #[error(
        "agent selector {id:?}: cgroup {path:?}: {source} (looked for {dir}; the cgroup must exist when the rules load)"
    )]
    Cgroup {
        id: String,
        path: String,
        dir: String,
        source: std::io::Error,
    },
    #[error("{0} agent selectors; at most {max} are supported", max = select::MAX)]
    TooMany(usize),
}

/// Do a pod's namespace and labels meet pod criteria: the namespace one of `namespace` (any,
/// when empty) AND every label of `pod_labels` with its value? (Agent selectors and the
/// guardrails' `pods:` alike.)
pub fn pod_meets(
    namespace: &BTreeSet<String>,
    pod_labels: &BTreeMap<String, String>,
    pod_namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    (namespace.is_empty() || namespace.contains(pod_namespace))
        && pod_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Pod criteria (of a selector, or of a guardrail's `pods:`) that Kubernetes cannot have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodCriteriaError {
    #[error("namespace {0:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)")]
    Namespace(String),
    #[error(
        "pod_labels key {0:?} is not a Kubernetes label key ([prefix/]name, name at most 63 of letters, digits, '-', '_', '.')"
    )]
    LabelKey(String),
    #[error(
        "pod_labels value {value:?} of {key:?} is not a Kubernetes label value (at most 63 of letters, digits, '-', '_', '.', alphanumeric at both ends)"
    )]
    LabelValue { key: String, value: String },
}

/// A selector whose values have the wrong shape ([`validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("an agent selector has an empty id")]
    EmptyId,
    #[error("agent selector {0:?} selects nothing: give exe, comm, uid, cgroup, namespace or pod_labels")]
    SelectsNothing(String),
    #[error(
        "agent selector {0:?}: cgroup cannot be combined with namespace or pod_labels (both select by cgroup); use two selectors"
    )]
    CgroupAndPod(String),
    #[error("agent selector {id:?}: {source}")]
    Pod { id: String, source: PodCriteriaError },
    #[error("agent selector {id:?}: exe {exe:?} is not an absolute path")]
    RelativeExe { id: String, exe: String },
    #[error("agent selector {id:?}: comm {comm:?} must be 1 to 15 bytes without '/' (the kernel keeps 15)")]
    Comm { id: String, comm: String },
    #[error("agent selector {id:?}: uid {name:?} is not a user name")]
    UserName { id: String, name: String },
    #[error("agent selector {id:?}: cgroup {path:?} {why}")]
    Cgroup { id: String, path: String, why: CgroupShape },
}

/// What is wrong with a selector's cgroup path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CgroupShape {
    #[error("must be an absolute cgroup v2 path, as /proc/PID/cgroup shows it (e.g. /system.slice/agent.service)")]
    Relative,
    #[error("is the root cgroup: it would select every process on the host")]
    Root,
    #[error("has an empty, `.` or `..` component")]
    BadComponent,
}

/// Checks namespace names and pod label keys and values (of a selector, or of a guardrail's
/// `pods:`); the error names the offending value.
pub fn validate_pod_criteria(
    namespace: &BTreeSet<String>,
    pod_labels: &BTreeMap<String, String>,
) -> Result<(), PodCriteriaError> {
    for ns in namespace {
        if !is_dns_label(ns) {
            return Err(PodCriteriaError::Namespace(ns.clone()));
        }
    }
    for (k, v) in pod_labels {
        if !is_label_key(k) {
            return Err(PodCriteriaError::LabelKey(k.clone()));
        }
        if !v.is_empty() && !is_label_name(v) {
            return Err(PodCriteriaError::LabelValue {
                key: k.clone(),
                value: v.clone(),
            });
        }
    }
    Ok(())
}

/// Checks the shape of a selector's values; the error names the offending value.
pub fn validate(s: &Selector) -> Result<(), ShapeError> {
    let id = &s.id;
    if id.trim().is_empty() {
        return Err(ShapeError::EmptyId);
    }
    if s.exe.is_empty() && s.comm.is_empty() && s.uid.is_empty() && s.cgroup.is_empty() && !s.by_pod() {
        return Err(ShapeError::SelectsNothing(id.clone()));
    }
    if s.by_pod() && !s.cgroup.is_empty() {
        return Err(ShapeError::CgroupAndPod(id.clone()));
    }
    validate_pod_criteria(&s.namespace, &s.pod_labels).map_err(|source| ShapeError::Pod { id: id.clone(), source })?;
    for exe in &s.exe {
        if !exe.starts_with('/') {
            return Err(ShapeError::RelativeExe {
                id: id.clone(),
                exe: exe.clone(),
            });
        }
    }
    for comm in &s.comm {
        if comm.is_empty() || comm.len() > COMM_LEN - 1 || comm.contains('/') {
            return Err(ShapeError::Comm {
                id: id.clone(),
                comm: comm.clone(),
            });
        }
    }
    for u in &s.uid {
        if let UserRef::Name(n) = u
            && (n.is_empty() || n.contains([':', '/', ' ', '\n']))
        {
            return Err(ShapeError::UserName {
                id: id.clone(),
                name: n.clone(),
            });
        }
    }
    for c in &s.cgroup {
        let bad = |why| {
            Err(ShapeError::Cgroup {
                id: id.clone(),
                path: c.clone(),
                why,
            })
        };
        if !c.starts_with('/') {
            return bad(CgroupShape::Relative);
        }
        if c.trim_end_matches('/').is_empty() {
            return bad(CgroupShape::Root);
        }
        if c.trim_end_matches('/')
            .split('/')
            .skip(1)
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return bad(CgroupShape::BadComponent);
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A label name (or value): at most 63 characters, alphanumeric at both ends.
fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name.
fn is_label_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => prefix.len() <= 253 && prefix.split('.').all(is_dns_label) && is_label_name(name),
        None => is_label_name(k),
    }
}

/// A selector resolved on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub id: String,
    pub comm: BTreeSet<String>,
    /// The inodes the `exe` paths name.
    pub exe: BTreeSet<InodeKey>,
    pub uid: BTreeSet<u32>,
    /// cgroup path (normalized, no trailing '/') -> cgroup id.
    pub cgroup: BTreeMap<String, u64>,
    /// Pod criteria, matched in userspace against the node's pods; the kernel matches them
    /// through the cgroups of the matching pods, which the daemon keeps in the cgroup map.
    pub namespace: BTreeSet<String>,
    pub pod_labels: BTreeMap<String, String>,
}

/// What is known of a process when matching it in userspace (adoption at start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidate {
    pub comm: String,
    pub exe: Option<InodeKey>,
    pub uid: Option<u32>,
    /// Its cgroup v2 path (/proc/PID/cgroup, the `0::` line).
    pub cgroup: Option<String>,
    /// Its pod, when it runs in one the daemon knows.
    pub pod: Option<std::sync::Arc<crate::model::PodMeta>>,
}

impl Compiled {
    /// Does `c` match this selector? The same rules the kernel applies at exec.
    pub fn matches(&self, c: &Candidate) -> bool {
        (self.comm.is_empty() || self.comm.contains(&c.comm))
            && (self.exe.is_empty() || c.exe.is_some_and(|e| self.exe.contains(&e)))
            && (self.uid.is_empty() || c.uid.is_some_and(|u| self.uid.contains(&u)))
            && (self.cgroup.is_empty()
                || c.cgroup
                    .as_deref()
                    .is_some_and(|path| self.cgroup.keys().any(|sel| cgroup_within(path, sel))))
            && (!self.by_pod() || c.pod.as_deref().is_some_and(|p| self.pod_matches(p)))
    }

    pub fn by_pod(&self) -> bool {
        !self.namespace.is_empty() || !self.pod_labels.is_empty()
    }

    /// Does the pod meet this selector's pod criteria (namespace AND every label)?
    pub fn pod_matches(&self, pod: &crate::model::PodMeta) -> bool {
        pod_meets(&self.namespace, &self.pod_labels, &pod.namespace, &pod.labels)
    }
}

/// Is cgroup `path` the cgroup `sel` or below it, within the levels the kernel walks up?
fn cgroup_within(path: &str, sel: &str) -> bool {
    let below = if path == sel {
        Some("")
    } else {
        path.strip_prefix(sel).and_then(|rest| rest.strip_prefix('/'))
    };
    below.is_some_and(|rest| rest.split('/').filter(|s| !s.is_empty()).count() < select::CGROUP_LEVELS)
}

/// All selectors, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledSelectors {
    pub list: Vec<Compiled>,
}

/// The kernel's selector maps and masks (agent_common::select).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSelectors {
    pub comm: BTreeMap<[u8; COMM_LEN], u64>,
    pub exe: BTreeMap<InodeKey, u64>,
    pub uid: BTreeMap<u32, u64>,
    pub cgroup: BTreeMap<u64, u64>,
    /// One bit per selector.
    pub all: u64,
    /// Per criterion, the selectors that do not constrain it.
    pub free: [u64; select::KINDS],
}

/// Comm selector key: the name, NUL-padded to TASK_COMM_LEN.
pub fn comm_key(comm: &str) -> [u8; COMM_LEN] {
    let mut k = [0u8; COMM_LEN];
    let b = comm.as_bytes();
    let n = b.len().min(COMM_LEN - 1);
    k[..n].copy_from_slice(&b[..n]);
    k
}

impl CompiledSelectors {
    /// The id of the first selector `c` matches.
    pub fn matching(&self, c: &Candidate) -> Option<&str> {
        self.list.iter().find(|s| s.matches(c)).map(|s| s.id.as_str())
    }

    pub fn any_exe(&self) -> bool {
        self.list.iter().any(|s| !s.exe.is_empty())
    }

    pub fn any_cgroup(&self) -> bool {
        self.list.iter().any(|s| !s.cgroup.is_empty())
    }

    /// The kernel's view: each key maps to the mask of the selectors listing it. Pure.
    pub fn kernel(&self) -> KernelSelectors {
        let mut k = KernelSelectors::default();
        for (i, s) in self.list.iter().enumerate().take(select::MAX) {
            let bit = 1u64 << i;
            k.all |= bit;
            for c in &s.comm {
                *k.comm.entry(comm_key(c)).or_default() |= bit;
            }
            for e in &s.exe {
                *k.exe.entry(*e).or_default() |= bit;
            }
            for u in &s.uid {
                *k.uid.entry(*u).or_default() |= bit;
            }
            for id in s.cgroup.values() {
                *k.cgroup.entry(*id).or_default() |= bit;
            }
            for (kind, free) in [
                (select::COMM, s.comm.is_empty()),
                (select::EXE, s.exe.is_empty()),
                (select::UID, s.uid.is_empty()),
                // A pod selector constrains the cgroup: the matching pods' cgroups, added at
                // runtime (none until the pod watch reports one).
                (select::CGROUP, s.cgroup.is_empty() && !s.by_pod()),
            ] {
                if free {
                    k.free[kind] |= bit;
                }
            }
        }
        k
    }
}

/// Resolves the selectors on this host: exe paths to inodes (symlinks followed), user names to
/// uids, cgroup paths to cgroup ids under `cgroup_root` (the cgroup v2 mount). Anything that
/// does not resolve is an error naming the selector.
pub fn compile(selectors: &[Selector], cgroup_root: &Path) -> Result<CompiledSelectors, SelectorError> {
    if selectors.len() > select::MAX {
        return Err(SelectorError::TooMany(selectors.len()));
    }
    let mut list = Vec::new();
    for s in selectors {
        let id = s.id.clone();
        let mut c = Compiled {
            id: id.clone(),
            comm: s.comm.clone(),
            namespace: s.namespace.clone(),
            pod_labels: s.pod_labels.clone(),
            ..Compiled::default()
        };
        for path in &s.exe {
            let m = std::fs::metadata(path).map_err(|source| SelectorError::Exe {
                id: id.clone(),
                path: path.clone(),
                source,
            })?;
            c.exe.insert(InodeKey::from_stat(m.dev(), m.ino()));
        }
        for u in &s.uid {
            let uid = match u {
                UserRef::Id(n) => *n,
                UserRef::Name(name) => match nix::unistd::User::from_name(name) {
                    Ok(Some(user)) => user.uid.as_raw(),
                    Ok(None) => {
                        return Err(SelectorError::NoUser { id, name: name.clone() });
                    }
                    Err(source) => {
                        return Err(SelectorError::UserLookup {
                            id,
                            name: name.clone(),
                            source,
                        });
                    }
                },
            };
            c.uid.insert(uid);
        }
        for path in &s.cgroup {
            let norm = path.trim_end_matches('/').to_string();
            let dir = cgroup_root.join(norm.trim_start_matches('/'));
            // cgroup v2: the cgroup id is the kernfs node id, the directory's inode number.
            let m = std::fs::metadata(&dir).map_err(|source| SelectorError::Cgroup {
                id: id.clone(),
                path: path.clone(),
                dir: dir.display().to_string(),
                source,
            })?;
            c.cgroup.insert(norm, m.ino());
        }
        list.push(c);
    }
    Ok(CompiledSelectors { list })
}

/// A process's cgroup v2 path, from /proc/PID/cgroup (the `0::` line).
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_proc_cgroup(&text)
}

/// The cgroup v2 path in a /proc/PID/cgroup text.
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(id: &str) -> Selector {
        Selector {
            id: id.into(),
            ..Selector::default()
        }
    }

    #[test]
    fn criteria_of_one_selector_are_anded_values_ored() {
        let s = Compiled {
            id: "agents-as-bot".into(),
            comm: ["python3".to_string(), "node".to_string()].into(),
            uid: [1001].into(),
            cgroup: [("/agents.slice".to_string(), 77)].into(),
            ..Compiled::default()
        };
        let c = |comm: &str, uid: u32, cg: &str| Candidate {
            comm: comm.into(),
            exe: None,
            uid: Some(uid),
            cgroup: Some(cg.into()),
            pod: None,
        };
        assert!(s.matches(&c("node", 1001, "/agents.slice")));
        assert!(s.matches(&c("python3", 1001, "/agents.slice/run-1.scope")));
        assert!(!s.matches(&c("python3", 1000, "/agents.slice")), "wrong uid");
        assert!(!s.matches(&c("bash", 1001, "/agents.slice")), "wrong comm");
        assert!(
            !s.matches(&c("node", 1001, "/agents.slicex")),
            "a sibling with the same prefix"
        );
        assert!(!s.matches(&c("node", 1001, "/user.slice")), "another cgroup");
        let deep = format!("/agents.slice{}", "/x".repeat(select::CGROUP_LEVELS));
        assert!(
            !s.matches(&c("node", 1001, &deep)),
            "beyond the levels the kernel walks"
        );
        let ok = format!("/agents.slice{}", "/x".repeat(select::CGROUP_LEVELS - 1));
        assert!(s.matches(&c("node", 1001, &ok)));
    }

    #[test]
    fn kernel_masks_agree_with_userspace_matching() {
        let list = vec![
            Compiled {
                id: "by-comm".into(),
                comm: ["claude".to_string()].into(),
                ..Compiled::default()
            },
            Compiled {
                id: "by-uid-and-comm".into(),
                comm: ["python3".to_string()].into(),
                uid: [1001].into(),
                ..Compiled::default()
            },
            Compiled {
                id: "by-cgroup".into(),
                cgroup: [("/agents".to_string(), 9)].into(),
                ..Compiled::default()
            },
        ];
        let sels = CompiledSelectors { list };
        let k = sels.kernel();
        assert_eq!(k.all, 0b111);
        assert_eq!(k.free[select::COMM], 0b100);
        assert_eq!(k.free[select::UID], 0b101);
        assert_eq!(k.free[select::EXE], 0b111);
        assert_eq!(k.free[select::CGROUP], 0b011);
        // The kernel's decision, simulated from the maps (cgroup: the process's own id only).
        let kernel_selects = |comm: &str, uid: u32, cg: u64| {
            let mut m = k.all;
            m &= k.free[select::COMM] | k.comm.get(&comm_key(comm)).copied().unwrap_or(0);
            m &= k.free[select::UID] | k.uid.get(&uid).copied().unwrap_or(0);
            m &= k.free[select::CGROUP] | k.cgroup.get(&cg).copied().unwrap_or(0);
            m != 0
        };
        for (comm, uid, cg, path) in [
            ("claude", 0, 1, "/"),
            ("python3", 1001, 1, "/x"),
            ("python3", 1000, 1, "/x"),
            ("bash", 1001, 9, "/agents"),
            ("bash", 1001, 1, "/user"),
        ] {
            let c = Candidate {
                comm: comm.into(),
                exe: None,
                uid: Some(uid),
                cgroup: Some(path.into()),
                pod: None,
            };
            assert_eq!(
                kernel_selects(comm, uid, cg),
                sels.matching(&c).is_some(),
                "{comm} {uid} {path}"
            );
        }
    }

    #[test]
    fn shapes_are_validated_with_the_offending_value() {
        let mut s = sel("a");
        assert!(validate(&s).unwrap_err().to_string().contains("selects nothing"));
        s.cgroup.insert("agents.slice".into());
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("absolute cgroup v2 path")
        );
        s.cgroup = ["/".to_string()].into();
        assert!(validate(&s).unwrap_err().to_string().contains("every process"));
        s.cgroup = ["/a/../b".to_string()].into();
        assert!(validate(&s).unwrap_err().to_string().contains("`..`"));
        s.cgroup = ["/agents.slice/".to_string()].into();
        validate(&s).unwrap();
        s.uid.insert(UserRef::Name("a b".into()));
        assert!(validate(&s).unwrap_err().to_string().contains("not a user name"));
    }

    #[test]
    fn resolution_errors_name_the_selector_and_value() {
        let mut s = sel("cg");
        s.cgroup.insert("/no-such-cgroup-tether".into());
        let e = compile(&[s], Path::new("/sys/fs/cgroup")).unwrap_err().to_string();
        assert!(
            e.contains("\"cg\"") && e.contains("/no-such-cgroup-tether") && e.contains("must exist"),
            "{e}"
        );
        let mut s = sel("x");
        s.exe.insert("/nonexistent/agent".into());
        let e = compile(&[s], Path::new("/sys/fs/cgroup")).unwrap_err().to_string();
        assert!(e.contains("\"x\"") && e.contains("/nonexistent/agent"), "{e}");
        let mut s = sel("u");
        s.uid.insert(UserRef::Name("no-such-user-tether".into()));
        let e = compile(&[s], Path::new("/sys/fs/cgroup")).unwrap_err().to_string();
        assert!(e.contains("no such user"), "{e}");
        let mut s = sel("root-by-name");
        s.uid.insert(UserRef::Name("root".into()));
        s.uid.insert(UserRef::Id(1001));
        let c = compile(&[s], Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(c.list[0].uid, [0, 1001].into());
        let many: Vec<Selector> = (0..65).map(|i| sel(&format!("s{i}"))).collect();
        assert!(matches!(
            compile(&many, Path::new("/")),
            Err(SelectorError::TooMany(65))
        ));
    }

    #[test]
    fn proc_cgroup_lines_are_parsed() {
        assert_eq!(
            parse_proc_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n").as_deref(),
            Some("/user.slice/user-1000.slice/session-3.scope")
        );
        assert_eq!(
            parse_proc_cgroup("12:pids:/x\n0::/init.scope\n").as_deref(),
            Some("/init.scope")
        );
        assert_eq!(parse_proc_cgroup("3:cpu:/x\n"), None);
    }

    #[test]
    fn pod_selectors_match_namespace_and_every_label_and_constrain_the_cgroup() {
        use crate::model::PodMeta;
        let s = Compiled {
            id: "agents".into(),
            comm: ["python3".to_string()].into(),
            namespace: ["agents".to_string(), "sandbox".to_string()].into(),
            pod_labels: [("tether.dev/agent".to_string(), "true".to_string())].into(),
            ..Compiled::default()
        };
        let pod = |ns: &str, labels: &[(&str, &str)]| {
            Some(std::sync::Arc::new(PodMeta {
                namespace: ns.into(),
                name: "p".into(),
                uid: "u".into(),
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                service_account: "default".into(),
            }))
        };
        let c = |comm: &str, pod| Candidate {
            comm: comm.into(),
            pod,
            ..Candidate::default()
        };
        let labelled = [("tether.dev/agent", "true"), ("app", "x")];
        assert!(s.matches(&c("python3", pod("sandbox", &labelled))));
        assert!(!s.matches(&c("python3", pod("default", &labelled))), "namespace");
        assert!(
            !s.matches(&c("python3", pod("agents", &[("tether.dev/agent", "false")]))),
            "label value"
        );
        assert!(!s.matches(&c("python3", pod("agents", &[]))), "label missing");
        assert!(!s.matches(&c("bash", pod("agents", &labelled))), "comm still ANDed");
        assert!(!s.matches(&c("python3", None)), "not in a known pod");
        // In the kernel the selector is not free on the cgroup criterion: without a matching
        // pod's cgroup in the map it selects nothing.
        let k = CompiledSelectors { list: vec![s] }.kernel();
        assert_eq!(k.free[select::CGROUP], 0);
        assert!(k.cgroup.is_empty());
    }

    #[test]
    fn pod_criteria_are_validated_with_the_offending_value() {
        let base = Selector {
            id: "p".into(),
            ..Selector::default()
        };
        let with = |f: &dyn Fn(&mut Selector)| {
            let mut s = base.clone();
            f(&mut s);
            validate(&s).map_err(|e| e.to_string())
        };
        assert!(
            with(&|s| {
                s.namespace.insert("agents".into());
            })
            .is_ok()
        );
        assert!(
            with(&|s| {
                s.pod_labels.insert("app.kubernetes.io/name".into(), "coder".into());
            })
            .is_ok()
        );
        assert!(
            with(&|s| {
                s.pod_labels.insert("flag".into(), String::new());
            })
            .is_ok()
        );
        let err = with(&|s| {
            s.namespace.insert("Agents_1".into());
        })
        .unwrap_err();
        assert!(err.contains("\"Agents_1\" is not a Kubernetes namespace"), "{err}");
        let err = with(&|s| {
            s.pod_labels.insert("bad key!".into(), "v".into());
        })
        .unwrap_err();
        assert!(err.contains("\"bad key!\""), "{err}");
        let err = with(&|s| {
            s.pod_labels.insert("k".into(), "-v".into());
        })
        .unwrap_err();
        assert!(err.contains("value \"-v\""), "{err}");
        let err = with(&|s| {
            s.namespace.insert("agents".into());
            s.cgroup.insert("/agents.slice".into());
        })
        .unwrap_err();
        assert!(err.contains("cannot be combined"), "{err}");
    }
}
