//! The containment engine: pure. Rules are compiled once, when the rule files load (a bad rule
//! fails the load, never an action); [`Rules::evaluate`] then decides each attempted action of
//! an agent process from the rules and the process's credential, with no I/O.
//!
//! Order of judgement:
//! 1. guardrails, in file order: they hold whatever a credential says;
//! 2. the credential: none (or not valid yet) -> the `unbound` posture; expired or revoked ->
//!    `actions.expired`; valid -> the scope, and `actions.scope` when the action is outside it.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::credentials::{
    scope::{CompiledScope, Grant, PathIndex, PathPattern, Proto, ScopeError, ScopeSpec, Violation},
    tasks::CredState,
};
pub use crate::model::{Action, Mode, Severity};

/// An action an agent process attempts, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Exec {
        path: String,
    },
    /// A write-intent file operation; every path it touches (a rename: both ends).
    Write {
        paths: Vec<WritePath>,
    },
    Connect {
        proto: Proto,
        ip: IpAddr,
        port: u16,
    },
    /// A connect or send to a Unix socket: its file's path, or `@name`.
    Unix {
        name: String,
    },
    /// A bind, listen or accept, by the local address and port.
    Listen {
        proto: Proto,
        ip: IpAddr,
        port: u16,
    },
    /// A socket kind or io_uring, which a scope must grant.
    Grant {
        grant: Grant,
    },
}

/// One path a write touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritePath {
    /// The path judged: a device node as its device (`/dev/char/M:m`).
    pub path: String,
    /// The write changes this file itself (its content or attributes), not a name in a
    /// directory: the pseudo devices' usual names are exempt only then.
    pub object: bool,
}

impl WritePath {
    pub fn object(path: impl Into<String>) -> WritePath {
        WritePath {
            path: path.into(),
            object: true,
        }
    }

    pub fn name(path: impl Into<String>) -> WritePath {
        WritePath {
            path: path.into(),
            object: false,
        }
    }
}

/// The credential context of the acting process.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    None,
    Bound { state: CredState, scope: &'a CompiledScope },
}

/// What each violation class does: its action and mode (`unbound`: None when agents without
/// a credential are let be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Postures {
    pub unbound: Option<(Action, Mode)>,
    pub expired: (Action, Mode),
    pub scope: (Action, Mode),
    pub unjudged: (Action, Mode),
}

impl Postures {
    /// In the kernel's POSTURE order: unbound, expired, scope, unjudged.
    pub fn kernel_order(&self) -> [Option<(Action, Mode)>; 4] {
        [self.unbound, Some(self.expired), Some(self.scope), Some(self.unjudged)]
    }
}

/// Does a class with this action and mode refuse (enforce mode, deny or stronger)?
pub fn refuses((action, mode): (Action, Mode)) -> bool {
    mode == Mode::Enforce && action != Action::Alert
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// None: allowed.
    pub action: Option<Action>,
    /// The rule that decided (`guardrail:<id>`, `unbound`, `credential-expired`,
    /// `credential-revoked`, `scope:<clause>`); empty when allowed.
    pub rule: String,
    pub reason: String,
    pub severity: Severity,
    /// The mode the deciding rule runs in: observe means report `action` as what *would*
    /// have happened.
    pub mode: Mode,
    /// For a `scope:<clause>` decision: the clause, what was attempted and what the clause
    /// allows (the alert's details), from the one judgement that decided.
    #[serde(skip)]
    pub violation: Option<Violation>,
    /// The ATT&CK techniques of the deciding guardrail.
    #[serde(skip)]
    pub attack: Vec<String>,
}

impl Decision {
    /// A call the seccomp filter of `tether exec`'s sandbox refused before it ran: decided by
    /// the sandbox the daemon sent with the registration (see daemon::sandboxes), not by a
    /// rule evaluated here.
    pub fn sandbox(call: &str) -> Decision {
        Decision {
            action: Some(Action::Deny),
            rule: format!("sandbox:{call}"),
            reason: format!("{call} refused by the seccomp filter of tether exec's sandbox"),
            severity: Severity::Medium,
            mode: Mode::Enforce,
            violation: None,
            attack: Vec::new(),
        }
    }

    fn allow() -> Decision {
        Decision {
            action: None,
            rule: String::new(),
            reason: String::new(),
            severity: Severity::Informational,
            mode: Mode::Observe,
            violation: None,
            attack: Vec::new(),
        }
    }
}

/// A guardrail as written in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailSpec {
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub severity: Severity,
    pub action: Action,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub exec: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub connect: Vec<String>,
    /// Local addresses and ports never to bind or listen on.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Socket kinds never to create (raw, packet, icmp, vsock).
    #[serde(default)]
    pub sockets: Vec<String>,
    /// Only in these pods (a guardrail without it holds for every agent process).
    #[serde(default)]
    pub pods: Option<PodMatch>,
    /// MITRE ATT&CK techniques the guardrail stands against (`T1552.005`, ...): its alerts'
    /// `finding_info.attacks`.
    #[serde(default)]
    pub attack: Vec<String>,
}

/// The pods a guardrail holds in: their namespace is one of `namespace` (when given) AND
/// they carry every label of `pod_labels`. Matched in userspace against the node's pods; the
/// kernel holds it through the guard set the daemon gives each such pod's cgroup.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct PodMatch {
    #[serde(default)]
    pub namespace: std::collections::BTreeSet<String>,
    #[serde(default)]
    pub pod_labels: std::collections::BTreeMap<String, String>,
}

impl PodMatch {
    pub fn matches(&self, namespace: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        crate::selectors::pod_meets(&self.namespace, &self.pod_labels, namespace, labels)
    }
}

/// A posture or violation-class action as written.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    pub action: Action,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// The containment part of the rule files, merged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainmentSpec {
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub guardrails: Vec<GuardrailSpec>,
    /// Agent processes with no valid credential.
    #[serde(default)]
    pub unbound: Option<ActionSpec>,
    /// Actions outside a valid credential's scope.
    #[serde(default)]
    pub scope: Option<ActionSpec>,
    /// Actions under an expired or revoked credential.
    #[serde(default)]
    pub expired: Option<ActionSpec>,
    /// Actions the kernel could not judge (what it needed was unreadable, truncated or not
    /// placeable, or a map was full): never allowed by default.
    #[serde(default)]
    pub unjudged: Option<ActionSpec>,
    /// `self_protection:` of the rule files: narrows the built-in guardrail.
    #[serde(default)]
    pub self_protection: Option<SelfProtection>,
    /// Tether's own files and sockets, set by the daemon (never by a rule file): the built-in
    /// guardrail [`SELF_GUARDRAIL`] refuses agents every write to them and every connect to
    /// the sockets.
    #[serde(skip)]
    pub tether: TetherFiles,
}

/// The id of the built-in guardrail over Tether's own files.
pub const SELF_GUARDRAIL: &str = "tether-self";

/// What the built-in guardrail covers (write patterns, and Unix socket paths).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TetherFiles {
    pub write: Vec<String>,
    pub sockets: Vec<String>,
}

/// The only way to narrow the built-in guardrail: named paths left out, or its mode, said in a
/// rule file and logged at every load.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SelfProtection {
    /// Paths of the guardrail to leave out, each exactly as `tether status` lists it.
    #[serde(default)]
    pub except: Vec<String>,
    /// The guardrail's mode (default: enforce, whatever the global mode says).
    #[serde(default)]
    pub mode: Option<Mode>,
}

#[derive(Debug, Clone)]
struct Guardrail {
    id: String,
    description: String,
    severity: Severity,
    action: Action,
    mode: Mode,
    matcher: CompiledScope,
    /// Index into [`Rules::pod_matchers`]: only in the pods it matches.
    pods: Option<usize>,
    /// ATT&CK technique ids.
    attack: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct ClassAction {
    action: Action,
    severity: Severity,
    mode: Mode,
}

/// Compiled rules.
#[derive(Debug, Clone)]
pub struct Rules {
    pub mode: Mode,
    guardrails: Vec<Guardrail>,
    /// The distinct `pods:` of the guardrails, in file order: bit i of a guard set is
    /// matcher i.
    pod_matchers: Vec<PodMatch>,
    unbound: Option<ClassAction>,
    scope: ClassAction,
    expired: ClassAction,
    unjudged: ClassAction,
    /// The guardrails' `exec`, `write` and `unix:` patterns, each list compiled into one
    /// matcher (a guardrail's index is its owner): a path is matched once, not once per
    /// guardrail.
    exec_index: PathIndex,
    write_index: PathIndex,
    unix_index: PathIndex,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("guardrail {id:?}: {}", pattern_error(.source))]
    Pattern { id: String, source: ScopeError },
    #[error("guardrail {0:?} matches nothing: give exec, write, connect, listen or sockets")]
    Empty(String),
    #[error("guardrail id {0:?} is used twice")]
    Duplicate(String),
    #[error("guardrail ids must be non-empty")]
    NoId,
    #[error(
        "guardrail id {0:?} is reserved for the built-in guardrail over Tether's own files (narrow it with `self_protection:`)"
    )]
    Reserved(String),
    #[error("self_protection.except: {0:?} is not one of the built-in guardrail's paths ({1})")]
    NotSelf(String, String),
    #[error("guardrail {id:?}: pods: {reason}")]
    Pods { id: String, reason: String },
    #[error("guardrail {id:?}: attack {technique:?} is not an ATT&CK technique id (T1234 or T1234.567)")]
    Attack { id: String, technique: String },
    #[error("guardrail {id:?}: more than {max} different `pods:` matchers in the rules (the kernel tells {max} apart)", max = agent_common::contain::MAX_POD_MATCHERS)]
    TooManyPodMatchers { id: String },
}

/// `T1234` or `T1234.567`.
fn attack_id(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    match b.len() {
        5 => b[0] == b'T' && digits(&b[1..]),
        9 => b[0] == b'T' && digits(&b[1..5]) && b[5] == b'.' && digits(&b[6..]),
        _ => false,
    }
}

/// A pattern error in a guardrail's words (its lists are `exec`, `write`, `connect`, not a
/// credential's `scope.*`).
fn pattern_error(e: &ScopeError) -> String {
    match e {
        ScopeError::Pattern {
            class,
            index,
            pattern,
            reason,
        } => format!("{class}[{index}] {pattern:?}: {reason}"),
        ScopeError::TooMany { class, count } => format!("{class} has {count} entries, too many"),
    }
}

impl RuleError {
    /// The guardrail the error is about.
    pub fn rule_id(&self) -> Option<&str> {
        match self {
            RuleError::Pattern { id, .. }
            | RuleError::Empty(id)
            | RuleError::Duplicate(id)
            | RuleError::Pods { id, .. }
            | RuleError::Attack { id, .. }
            | RuleError::TooManyPodMatchers { id }
            | RuleError::Reserved(id) => Some(id),
            RuleError::NoId | RuleError::NotSelf(..) => None,
        }
    }
}

/// The built-in guardrail over Tether's own files (None when the daemon gave none: the
/// rule files alone, as `tether policy check` sees them).
fn self_guardrail(spec: &ContainmentSpec) -> Result<Option<GuardrailSpec>, RuleError> {
    let t = &spec.tether;
    if t.write.is_empty() && t.sockets.is_empty() {
        return Ok(None);
    }
    let narrow = spec.self_protection.clone().unwrap_or_default();
    let all: Vec<&String> = t.write.iter().chain(&t.sockets).collect();
    for e in &narrow.except {
        if !all.contains(&e) {
            let list = all.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            return Err(RuleError::NotSelf(e.clone(), list));
        }
    }
    let keep = |p: &&String| !narrow.except.contains(p);
    Ok(Some(GuardrailSpec {
        id: SELF_GUARDRAIL.into(),
        description: "Tether's own rule files, state, spool, pins, sockets, outputs and binary (built in)".into(),
        severity: Severity::Critical,
        action: Action::Deny,
        mode: Some(narrow.mode.unwrap_or(Mode::Enforce)),
        exec: vec![],
        write: t.write.iter().filter(keep).cloned().collect(),
        connect: t.sockets.iter().filter(keep).map(|s| format!("unix:{s}")).collect(),
        listen: vec![],
        sockets: vec![],
        pods: None,
        // Impair Defenses: Disable or Modify Tools.
        attack: vec!["T1562.001".into()],
    })
    .filter(|g| !g.write.is_empty() || !g.connect.is_empty()))
}

impl Rules {
    /// Compiles the containment rules; `spec.mode` is the global mode.
    pub fn compile(spec: &ContainmentSpec) -> Result<Rules, RuleError> {
        let mode = spec.mode.unwrap_or_default();
        let mut ids = std::collections::BTreeSet::new();
        let mut guardrails = Vec::new();
        let mut pod_matchers: Vec<PodMatch> = Vec::new();
        let builtin = self_guardrail(spec)?;
        let from_files = builtin.is_some() as usize;
        for (i, g) in builtin.iter().chain(&spec.guardrails).enumerate() {
            if g.id.trim().is_empty() {
                return Err(RuleError::NoId);
            }
            if g.id == SELF_GUARDRAIL && i >= from_files {
                return Err(RuleError::Reserved(g.id.clone()));
            }
            if !ids.insert(g.id.clone()) {
                return Err(RuleError::Duplicate(g.id.clone()));
            }
            if g.exec.is_empty()
                && g.write.is_empty()
                && g.connect.is_empty()
                && g.listen.is_empty()
                && g.sockets.is_empty()
            {
                return Err(RuleError::Empty(g.id.clone()));
            }
            let matcher = CompiledScope::compile(&ScopeSpec {
                exec: g.exec.clone(),
                write: g.write.clone(),
                connect: g.connect.clone(),
                listen: g.listen.clone(),
                sockets: g.sockets.clone(),
                io_uring: false,
            })
            .map_err(|source| RuleError::Pattern {
                id: g.id.clone(),
                source,
            })?;
            let pods = match &g.pods {
                None => None,
                Some(m) => {
                    crate::selectors::validate_pod_criteria(&m.namespace, &m.pod_labels).map_err(|reason| {
                        RuleError::Pods {
                            id: g.id.clone(),
                            reason: reason.to_string(),
                        }
                    })?;
                    if m.namespace.is_empty() && m.pod_labels.is_empty() {
                        return Err(RuleError::Pods {
                            id: g.id.clone(),
                            reason: "give namespace or pod_labels (or leave pods out: every agent)".into(),
                        });
                    }
                    Some(match pod_matchers.iter().position(|p| p == m) {
                        Some(i) => i,
                        None => {
                            if pod_matchers.len() >= agent_common::contain::MAX_POD_MATCHERS as usize {
                                return Err(RuleError::TooManyPodMatchers { id: g.id.clone() });
                            }
                            pod_matchers.push(m.clone());
                            pod_matchers.len() - 1
                        }
                    })
                }
            };
            for t in &g.attack {
                if !attack_id(t) {
                    return Err(RuleError::Attack {
                        id: g.id.clone(),
                        technique: t.clone(),
                    });
                }
            }
            guardrails.push(Guardrail {
                id: g.id.clone(),
                description: g.description.clone(),
                severity: g.severity,
                action: g.action,
                mode: g.mode.unwrap_or(mode),
                matcher,
                pods,
                attack: g.attack.clone(),
            });
        }
        let class = |a: Option<ActionSpec>, default: Action| {
            let a = a.unwrap_or(ActionSpec {
                action: default,
                severity: Severity::Medium,
                mode: None,
            });
            ClassAction {
                action: a.action,
                severity: a.severity,
                mode: a.mode.unwrap_or(mode),
            }
        };
        let unbound = spec.unbound.map(|a| class(Some(a), Action::Alert));
        let scope = class(spec.scope, Action::Alert);
        let expired = class(spec.expired, Action::Alert);
        // Fail closed: what the kernel cannot judge is refused wherever any rule is enforced
        // (a rule-by-rule rollout enforces a guardrail before the global mode), unless the
        // rules give the class a mode of their own.
        // (The built-in guardrail does not count: it is enforced in observe mode too.)
        let any_enforced = mode == Mode::Enforce
            || guardrails
                .iter()
                .any(|g| g.mode == Mode::Enforce && g.id != SELF_GUARDRAIL)
            || [Some(scope), Some(expired), unbound]
                .into_iter()
                .flatten()
                .any(|c| c.mode == Mode::Enforce);
        let unjudged = match spec.unjudged {
            Some(a) => ClassAction {
                action: a.action,
                severity: a.severity,
                mode: a.mode.unwrap_or(if any_enforced { Mode::Enforce } else { mode }),
            },
            None => ClassAction {
                action: Action::Deny,
                severity: Severity::High,
                mode: if any_enforced { Mode::Enforce } else { Mode::Observe },
            },
        };
        let index = |list: fn(&CompiledScope) -> &[PathPattern]| {
            PathIndex::new(guardrails.iter().enumerate().map(|(i, g)| (i, list(&g.matcher))))
        };
        Ok(Rules {
            exec_index: index(|m| &m.exec),
            write_index: index(|m| &m.write),
            unix_index: index(|m| &m.unix),
            mode,
            guardrails,
            pod_matchers,
            unbound,
            scope,
            expired,
            unjudged,
        })
    }

    pub fn guardrail_ids(&self) -> Vec<&str> {
        self.guardrails.iter().map(|g| g.id.as_str()).collect()
    }

    /// The guardrails, in file order (their index is the kernel's rule index): id, action,
    /// mode and patterns.
    pub fn guardrails(&self) -> impl Iterator<Item = (&str, Action, Mode, &CompiledScope)> {
        self.guardrails
            .iter()
            .map(|g| (g.id.as_str(), g.action, g.mode, &g.matcher))
    }

    /// The distinct pod matchers of the guardrails (bit i of a guard set is matcher i).
    pub fn pod_matchers(&self) -> &[PodMatch] {
        &self.pod_matchers
    }

    /// The `pods:` of guardrail `index`.
    pub fn guardrail_pods(&self, index: usize) -> Option<&PodMatch> {
        self.guardrails.get(index)?.pods.map(|i| &self.pod_matchers[i])
    }

    /// Does guardrail `index` hold for a process whose pod gives guard set `set`?
    pub fn holds_in(&self, index: usize, set: u32) -> bool {
        self.guardrails
            .get(index)
            .is_some_and(|g| g.pods.is_none_or(|i| set & (1 << i) != 0))
    }

    /// The guard set of a pod (namespace, labels): a bit per pod matcher it meets; 0 for a
    /// process in no pod.
    pub fn guard_set(&self, pod: Option<(&str, &std::collections::BTreeMap<String, String>)>) -> u32 {
        let Some((ns, labels)) = pod else { return 0 };
        self.pod_matchers
            .iter()
            .enumerate()
            .filter(|(_, m)| m.matches(ns, labels))
            .fold(0, |set, (i, _)| set | (1 << i))
    }

    /// The write patterns of the guardrails that refuse for every agent (enforced, not
    /// alert-only, without `pods:`): what `tether exec`'s Landlock keeps writes away from.
    pub fn enforced_write_guards(&self) -> Vec<String> {
        self.guardrails
            .iter()
            .filter(|g| g.pods.is_none() && g.mode == Mode::Enforce && g.action != Action::Alert)
            .flat_map(|g| g.matcher.spec.write.iter().cloned())
            .collect()
    }

    /// Action and mode of each violation class.
    pub fn postures(&self) -> Postures {
        let am = |c: ClassAction| (c.action, c.mode);
        Postures {
            unbound: self.unbound.map(am),
            expired: am(self.expired),
            scope: am(self.scope),
            unjudged: am(self.unjudged),
        }
    }

    /// The decision on an action the kernel could not judge (`why`: what it lacked). An
    /// expired or revoked credential's class decides when it refuses, as in the kernel.
    pub fn unjudged(&self, attempt: Option<&Attempt>, cred: Credential, why: &str) -> Decision {
        let what = attempt.map(describe).unwrap_or_else(|| "an action".into());
        if let Credential::Bound {
            state: state @ (CredState::Expired | CredState::Revoked),
            ..
        } = cred
            && self.expired.action >= Action::Deny
            && self.expired.mode == Mode::Enforce
        {
            return Decision {
                action: Some(self.expired.action),
                rule: format!("credential-{}", state.as_str()),
                reason: format!("{what} under a {} credential", state.as_str()),
                severity: self.expired.severity,
                mode: self.expired.mode,
                violation: None,
                attack: Vec::new(),
            };
        }
        Decision {
            action: Some(self.unjudged.action),
            rule: "unjudged".into(),
            reason: format!("{what} could not be judged by the kernel ({why})"),
            severity: self.unjudged.severity,
            mode: self.unjudged.mode,
            violation: None,
            attack: Vec::new(),
        }
    }

    /// Decides one attempted action of an agent process whose pod gives guard set `set` (the
    /// set the kernel judged by; 0: in no pod a `pods:` guardrail names).
    pub fn evaluate(&self, attempt: &Attempt, cred: Credential, set: u32) -> Decision {
        if let Some((g, what)) = self.first_guardrail(attempt, set) {
            return Decision {
                action: Some(g.action),
                rule: format!("guardrail:{}", g.id),
                reason: if g.description.is_empty() {
                    format!("{what} is forbidden by guardrail {}", g.id)
                } else {
                    format!("{what}: {}", g.description)
                },
                severity: g.severity,
                mode: g.mode,
                violation: None,
                attack: g.attack.clone(),
            };
        }
        let decide = |c: ClassAction, rule: String, reason: String| Decision {
            action: Some(c.action),
            rule,
            reason,
            severity: c.severity,
            mode: c.mode,
            violation: None,
            attack: Vec::new(),
        };
        match cred {
            Credential::None => match self.unbound {
                Some(c) => decide(
                    c,
                    "unbound".into(),
                    format!("{} by an agent process with no task credential", describe(attempt)),
                ),
                None => Decision::allow(),
            },
            Credential::Bound { state, scope } => match state {
                CredState::Expired | CredState::Revoked => decide(
                    self.expired,
                    format!("credential-{}", state.as_str()),
                    format!("{} under a {} credential", describe(attempt), state.as_str()),
                ),
                CredState::None => match self.unbound {
                    Some(c) => decide(c, "unbound".into(), format!("{} with no credential", describe(attempt))),
                    None => Decision::allow(),
                },
                CredState::Valid => match scope_violation(scope, attempt) {
                    Some(v) => Decision {
                        rule: format!("scope:{}", v.clause),
                        reason: format!("{} is outside the credential's scope.{}", v.attempted, v.clause),
                        violation: Some(v),
                        ..decide(self.scope, String::new(), String::new())
                    },
                    None => Decision::allow(),
                },
            },
        }
    }
}

impl Rules {
    /// The first guardrail, in file order, that holds in guard set `set` and whose patterns
    /// match `attempt`, with what of the attempt they match (of a write, the first path the
    /// guardrail matches). Paths go through the compiled indexes; the rest, guardrail by
    /// guardrail.
    fn first_guardrail(&self, attempt: &Attempt, set: u32) -> Option<(&Guardrail, String)> {
        let mut hits = Vec::new();
        let mut first = |index: &PathIndex, path: &str| {
            index.owners(path, &mut hits);
            hits.iter().copied().find(|&i| self.holds_in(i, set))
        };
        let found = match attempt {
            Attempt::Exec { path } => first(&self.exec_index, path).map(|i| (i, format!("exec {path}"))),
            Attempt::Unix { name } => first(&self.unix_index, name).map(|i| (i, format!("unix:{name}"))),
            Attempt::Write { paths } => {
                // Paths in order: a later path wins only with an earlier guardrail.
                let mut best: Option<(usize, &str)> = None;
                for p in paths {
                    if let Some(i) = first(&self.write_index, &p.path)
                        && best.is_none_or(|(b, _)| i < b)
                    {
                        best = Some((i, &p.path));
                    }
                }
                best.map(|(i, path)| (i, format!("write {path}")))
            }
            _ => self
                .guardrails
                .iter()
                .enumerate()
                .filter(|(i, _)| self.holds_in(*i, set))
                .find_map(|(i, g)| guardrail_hit(&g.matcher, attempt).map(|what| (i, what))),
        };
        found.map(|(i, what)| (&self.guardrails[i], what))
    }
}

/// The attempt an event represents, if it is an action (fork and exit are not; neither is a
/// send on a protocol that is neither TCP nor UDP). File operations on a device node are
/// writes of the device (`/dev/char/M:m`), as the kernel judges them.
pub fn attempt_of(event: &crate::events::Event) -> Option<Attempt> {
    use crate::events::{Event, FileOp, Transport};
    let proto = |t: &Transport| match t {
        Transport::Tcp => Some(Proto::Tcp),
        Transport::Udp => Some(Proto::Udp),
        Transport::Other(_) => None,
    };
    match event {
        Event::Exec { exe, filename, .. } => Some(Attempt::Exec {
            path: if exe.path.is_empty() {
                filename.clone()
            } else {
                exe.path.clone()
            },
        }),
        Event::File {
            op,
            path,
            path2,
            object,
            ..
        } => {
            let first = match object.and_then(|o| o.device_path()) {
                Some(dev) => WritePath::object(dev),
                None if op.changes_object() => WritePath::object(path.path.clone()),
                None => WritePath::name(path.path.clone()),
            };
            let mut paths = vec![first];
            if let (FileOp::Rename | FileOp::Link, Some(dst)) = (op, path2) {
                paths.push(WritePath::name(dst.path.clone()));
            }
            Some(Attempt::Write { paths })
        }
        Event::Net {
            op,
            transport,
            addr,
            port,
            local_port,
            ..
        } => {
            let proto = proto(transport)?;
            match op {
                crate::events::NetOp::Connect | crate::events::NetOp::Send => Some(Attempt::Connect {
                    proto,
                    ip: *addr,
                    port: *port,
                }),
                crate::events::NetOp::Bind | crate::events::NetOp::Listen => Some(Attempt::Listen {
                    proto,
                    ip: *addr,
                    port: *port,
                }),
                // An accepted connection: the listen it came in on (the local address is
                // the one the listener bound, not recorded; any address of the port).
                crate::events::NetOp::Accept => Some(Attempt::Listen {
                    proto,
                    ip: match addr {
                        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                    },
                    port: *local_port,
                }),
            }
        }
        Event::Socket { kind, .. } => Some(Attempt::Grant { grant: *kind }),
        Event::Unix { peer, .. } => Some(Attempt::Unix {
            name: peer.judged_name(),
        }),
        Event::Uring { .. } => Some(Attempt::Grant { grant: Grant::IoUring }),
        // Refused before it ran, by a filter the rules do not compile to.
        Event::Fork { .. } | Event::Exit { .. } | Event::Sandbox { .. } => None,
    }
}

impl Decision {
    /// The alert kind of a decision (`finding_info.types`).
    pub fn alert_kind(&self) -> &'static str {
        match self.rule.split_once(':').map(|(k, _)| k).unwrap_or(&self.rule) {
            "guardrail" => "guardrail-violation",
            "scope" => "scope-violation",
            "credential-expired" => "credential-expired",
            "credential-revoked" => "credential-revoked",
            "unbound" => "unbound-agent",
            "unjudged" => "unjudged-action",
            "sandbox" => "sandbox-refused",
            _ => "policy-violation",
        }
    }

    /// What enforcement would have done, in observe mode (None when enforcing, or for an alert).
    pub fn would(&self) -> Option<Action> {
        self.action
            .filter(|a| *a != Action::Alert && self.mode == Mode::Observe)
    }
}

fn describe(a: &Attempt) -> String {
    match a {
        Attempt::Exec { path } => format!("exec {path}"),
        Attempt::Write { paths } => format!(
            "write {}",
            paths.iter().map(|p| p.path.as_str()).collect::<Vec<_>>().join(" -> ")
        ),
        Attempt::Connect { proto, ip, port } => format!("{}:{ip}:{port}", proto.as_str()),
        Attempt::Unix { name } => format!("unix:{name}"),
        Attempt::Listen { proto, ip, port } => format!("listen {}:{ip}:{port}", proto.as_str()),
        Attempt::Grant { grant } => match grant {
            Grant::IoUring => "io_uring".into(),
            g => format!("a {} socket", g.as_str()),
        },
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address.
fn canonical(ip: &IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
        v4 => *v4,
    }
}

/// What of `attempt` a guardrail's patterns match, if anything.
fn guardrail_hit(m: &CompiledScope, attempt: &Attempt) -> Option<String> {
    match attempt {
        Attempt::Exec { path } => m.matches_exec(path).then(|| format!("exec {path}")),
        Attempt::Write { paths } => paths
            .iter()
            .find(|p| m.matches_write(&p.path))
            .map(|p| format!("write {}", p.path)),
        Attempt::Connect { proto, ip, port } => {
            let ip = canonical(ip);
            m.matches_connect(*proto, ip, *port)
                .then(|| format!("{}:{ip}:{port}", proto.as_str()))
        }
        Attempt::Unix { name } => m.matches_unix(name).then(|| format!("unix:{name}")),
        Attempt::Listen { proto, ip, port } => {
            let ip = canonical(ip);
            m.matches_listen(*proto, ip, *port)
                .then(|| format!("listen {}:{ip}:{port}", proto.as_str()))
        }
        Attempt::Grant { grant } => m.grants(*grant).then(|| describe(attempt)),
    }
}

/// The scope clause `attempt` falls outside of, with what was attempted and what the clause
/// allows (None: inside the scope).
pub fn scope_violation(scope: &CompiledScope, attempt: &Attempt) -> Option<Violation> {
    match attempt {
        Attempt::Exec { path } => scope.check_exec(path).err(),
        Attempt::Write { paths } => paths.iter().find_map(|p| scope.check_write(&p.path, p.object).err()),
        Attempt::Connect { proto, ip, port } => scope.check_connect(*proto, canonical(ip), *port).err(),
        Attempt::Unix { name } => scope.check_unix(name).err(),
        Attempt::Listen { proto, ip, port } => scope.check_listen(*proto, canonical(ip), *port).err(),
        Attempt::Grant { grant } => scope.check_grant(*grant).err(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every fixture under policies/fixtures: the named policy must decide each case as
    /// expected (the same runner as `tether policy test`).
    #[test]
    fn golden_fixtures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/fixtures");
        let results = crate::policy::fixtures::run(&[dir]).unwrap_or_else(|e| panic!("{e}"));
        let failed: Vec<_> = results.iter().filter(|r| r.failure.is_some()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        assert!(results.len() >= 10, "fixtures ran: {}", results.len());
    }

    fn one_by_one(rules: &Rules, attempt: &Attempt, set: u32) -> Option<(String, String)> {
        rules
            .guardrails
            .iter()
            .enumerate()
            .filter(|(i, _)| rules.holds_in(*i, set))
            .find_map(|(_, g)| guardrail_hit(&g.matcher, attempt).map(|what| (g.id.clone(), what)))
    }

    /// Paths near each pattern of the rules: the pattern itself, its wildcards filled in
    /// several ways, its parent, and names under it.
    fn paths_near(rules: &Rules) -> Vec<String> {
        let mut out = vec!["/".to_string(), "/tmp/x".into(), "@x".into()];
        for (_, _, _, m) in rules.guardrails() {
            let s = &m.spec;
            for text in s.exec.iter().chain(&s.write).chain(&s.connect) {
                let t = text.strip_prefix("unix:").unwrap_or(text);
                for fill in ["", "a", "a/b", ".x", "a.b/c"] {
                    let filled = t.replace("**", fill).replace(['*', '?'], fill);
                    out.push(filled.clone());
                    out.push(format!("{filled}/sub"));
                    out.push(filled.trim_end_matches('/').to_string());
                    if let Some((parent, _)) = filled.trim_end_matches('/').rsplit_once('/') {
                        out.push(parent.to_string());
                        out.push(format!("{parent}/other"));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The compiled indexes decide exactly as the guardrails one by one: the same guardrail
    /// and the same words, for every attempt on a path near any pattern of the shipped
    /// policies and the fixtures, in every guard set.
    #[test]
    fn the_indexes_match_as_the_guardrails_one_by_one() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let mut checked = 0;
        for name in ["default.yaml", "enforce-example.yaml"] {
            let policy = crate::policy::load_policy(&[dir.join(name)]).unwrap();
            let rules = &policy.rules;
            let paths = paths_near(rules);
            let sets = 1u32 << rules.pod_matchers().len();
            for set in 0..sets {
                for p in &paths {
                    let mut attempts = vec![
                        Attempt::Exec { path: p.clone() },
                        Attempt::Unix { name: p.clone() },
                        Attempt::Write {
                            paths: vec![WritePath::object(p.clone())],
                        },
                    ];
                    for q in paths.iter().step_by(7) {
                        attempts.push(Attempt::Write {
                            paths: vec![WritePath::name(p.clone()), WritePath::name(q.clone())],
                        });
                    }
                    for a in &attempts {
                        let got = rules.first_guardrail(a, set).map(|(g, what)| (g.id.clone(), what));
                        assert_eq!(got, one_by_one(rules, a, set), "{name}: {a:?} in guard set {set}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked} attempts");
    }

    #[test]
    fn a_scope_decision_carries_the_clause_it_broke() {
        let spec: ContainmentSpec = serde_yaml_ng::from_str("mode: enforce\nscope: {action: deny}\n").unwrap();
        let rules = Rules::compile(&spec).unwrap();
        let scope = CompiledScope::compile(&ScopeSpec {
            connect: vec!["tcp:10.0.0.0/8:443".into()],
            ..Default::default()
        })
        .unwrap();
        let cred = || Credential::Bound {
            state: CredState::Valid,
            scope: &scope,
        };
        let attempt = Attempt::Connect {
            proto: Proto::Tcp,
            ip: "192.0.2.1".parse().unwrap(),
            port: 22,
        };
        let d = rules.evaluate(&attempt, cred(), 0);
        assert_eq!(d.rule, "scope:connect");
        let v = d.violation.expect("the violation rides with the decision");
        assert_eq!(
            (v.clause, v.allowed),
            ("connect", vec!["tcp:10.0.0.0/8:443".to_string()])
        );
        assert_eq!(v.attempted, "tcp:192.0.2.1:22");
        let inside = Attempt::Connect {
            proto: Proto::Tcp,
            ip: "10.1.2.3".parse().unwrap(),
            port: 443,
        };
        assert_eq!(rules.evaluate(&inside, cred(), 0).violation, None);
    }

    #[test]
    fn rule_errors_name_the_rule() {
        let bad = |y: &str| {
            let spec: ContainmentSpec = serde_yaml_ng::from_str(y).unwrap();
            Rules::compile(&spec).unwrap_err().to_string()
        };
        let e = bad("guardrails: [{id: g, action: deny, write: [etc/]}]");
        assert!(e.contains("guardrail \"g\": write[0]") && e.contains("absolute"), "{e}");
        let e = bad("guardrails: [{id: g, action: deny}]");
        assert!(e.contains("matches nothing"), "{e}");
        let e = bad("guardrails: [{id: g, action: deny, exec: [/x]}, {id: g, action: alert, exec: [/y]}]");
        assert!(e.contains("used twice"), "{e}");
    }

    #[test]
    fn per_rule_mode_overrides_the_global_one() {
        let spec: ContainmentSpec = serde_yaml_ng::from_str(
            "mode: observe\nguardrails:\n  - {id: meta, action: deny, mode: enforce, connect: [\"tcp:169.254.169.254:*\"]}\n  - {id: etc, action: deny, write: [/etc/]}\n",
        )
        .unwrap();
        let r = Rules::compile(&spec).unwrap();
        let meta = r.evaluate(
            &Attempt::Connect {
                proto: Proto::Tcp,
                ip: "169.254.169.254".parse().unwrap(),
                port: 80,
            },
            Credential::None,
            0,
        );
        assert_eq!((meta.action, meta.mode), (Some(Action::Deny), Mode::Enforce));
        let etc = r.evaluate(
            &Attempt::Write {
                paths: vec![WritePath::object("/etc/x")],
            },
            Credential::None,
            0,
        );
        assert_eq!((etc.action, etc.mode), (Some(Action::Deny), Mode::Observe));
        // No unbound posture configured: an agent without a credential is allowed (audited).
        let other = r.evaluate(&Attempt::Exec { path: "/bin/ls".into() }, Credential::None, 0);
        assert_eq!(other.action, None);
    }

    #[test]
    fn pod_guardrails_hold_only_in_the_guard_sets_of_their_pods() {
        let spec: ContainmentSpec = serde_yaml_ng::from_str(
            "guardrails:
  - {id: all, action: deny, exec: [/usr/bin/curl]}
  - {id: ns, action: deny, exec: [/usr/bin/nc], pods: {namespace: [agents]}}
  - {id: lab, action: kill, exec: [/usr/bin/ssh], pods: {pod_labels: {tier: untrusted}}}
  - {id: ns2, action: alert, exec: [/usr/bin/wget], pods: {namespace: [agents]}}
",
        )
        .unwrap();
        let r = Rules::compile(&spec).unwrap();
        // Two distinct matchers (ns and ns2 share one): bits 0 and 1.
        assert_eq!(r.pod_matchers().len(), 2);
        let labels = |kv: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(r.guard_set(None), 0);
        assert_eq!(r.guard_set(Some(("agents", &labels(&[])))), 0b01);
        assert_eq!(r.guard_set(Some(("agents", &labels(&[("tier", "untrusted")])))), 0b11);
        assert_eq!(r.guard_set(Some(("other", &labels(&[("tier", "untrusted")])))), 0b10);
        let exec = |p: &str, set| {
            r.evaluate(&Attempt::Exec { path: p.into() }, Credential::None, set)
                .action
        };
        assert_eq!(exec("/usr/bin/curl", 0), Some(Action::Deny), "every agent");
        assert_eq!(exec("/usr/bin/nc", 0), None, "not in a pod of `agents`");
        assert_eq!(exec("/usr/bin/nc", 0b01), Some(Action::Deny));
        assert_eq!(exec("/usr/bin/wget", 0b01), Some(Action::Alert));
        assert_eq!(exec("/usr/bin/ssh", 0b01), None);
        assert_eq!(exec("/usr/bin/ssh", 0b10), Some(Action::Kill));
        // The kernel's entries for a set: the guardrails for every agent and the set's.
        let ids = |set| -> Vec<usize> { (0..4).filter(|i| r.holds_in(*i, set)).collect() };
        assert_eq!(ids(0), vec![0]);
        assert_eq!(ids(0b11), vec![0, 1, 2, 3]);
        assert_eq!(ids(0b10), vec![0, 2]);
    }

    #[test]
    fn pod_matchers_are_checked_at_load() {
        let bad = |y: &str| {
            let spec: ContainmentSpec = serde_yaml_ng::from_str(y).unwrap();
            Rules::compile(&spec).unwrap_err().to_string()
        };
        let e = bad("guardrails: [{id: g, action: deny, exec: [/x], pods: {namespace: [Agents]}}]");
        assert!(
            e.contains("guardrail \"g\": pods: namespace \"Agents\" is not a Kubernetes namespace"),
            "{e}"
        );
        let e = bad("guardrails: [{id: g, action: deny, exec: [/x], pods: {}}]");
        assert!(e.contains("give namespace or pod_labels"), "{e}");
        let many: String = (0..17)
            .map(|i| format!("  - {{id: g{i}, action: deny, exec: [/x], pods: {{namespace: [ns{i}]}}}}\n"))
            .collect();
        let e = bad(&format!("guardrails:\n{many}"));
        assert!(
            e.contains("guardrail \"g16\": more than 16 different `pods:` matchers"),
            "{e}"
        );
    }

    #[test]
    fn the_built_in_guardrail_holds_in_observe_mode_and_is_narrowed_only_explicitly() {
        let tether = TetherFiles {
            write: vec!["/var/lib/tether/".into(), "/etc/tether/policy.yaml".into()],
            sockets: vec!["/run/tether/admin.sock".into()],
        };
        let mut spec: ContainmentSpec = serde_yaml_ng::from_str("mode: observe\n").unwrap();
        spec.tether = tether.clone();
        let rules = Rules::compile(&spec).unwrap();
        let (id, action, mode, scope) = rules.guardrails().next().unwrap();
        assert_eq!((id, action, mode), (SELF_GUARDRAIL, Action::Deny, Mode::Enforce));
        assert_eq!(scope.spec.connect, vec!["unix:/run/tether/admin.sock".to_string()]);
        // It does not make unjudged actions enforced in an observe-only rollout.
        assert_eq!(rules.postures().unjudged.1, Mode::Observe);
        assert_eq!(rules.enforced_write_guards(), tether.write);
        // A rule file cannot take its id ...
        let mut taken: ContainmentSpec =
            serde_yaml_ng::from_str("guardrails: [{id: tether-self, action: alert, exec: [/x]}]\n").unwrap();
        taken.tether = tether.clone();
        assert!(matches!(Rules::compile(&taken), Err(RuleError::Reserved(_))));
        // ... and narrows it only by naming its paths.
        let mut narrowed: ContainmentSpec =
            serde_yaml_ng::from_str("self_protection: {except: [/var/lib/tether/], mode: observe}\n").unwrap();
        narrowed.tether = tether.clone();
        let rules = Rules::compile(&narrowed).unwrap();
        let (_, _, mode, scope) = rules.guardrails().next().unwrap();
        assert_eq!(mode, Mode::Observe);
        assert_eq!(scope.spec.write, vec!["/etc/tether/policy.yaml".to_string()]);
        let mut wrong: ContainmentSpec = serde_yaml_ng::from_str("self_protection: {except: [/tmp/]}\n").unwrap();
        wrong.tether = tether;
        assert!(matches!(Rules::compile(&wrong), Err(RuleError::NotSelf(..))));
    }
}
