//! The leaf layer: domain types every other module shares (the actions and modes of rules,
//! severities, the kernel's verdict on one record, the two output streams, what Tether keeps
//! of a pod, where an actor runs). It imports nothing of the crate; `tests/layers.rs` holds every module to the
//! layer order of ARCHITECTURE.md.
use std::collections::BTreeMap;

use agent_common::contain::{action, rule_class, verdict};
use serde::{Deserialize, Serialize};

/// The map for what is looked up on every event (the process table, the processes already
/// introduced, cgroup identities): foldhash, a fraction of SipHash's cost, seeded per process.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// What to do about a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Alert,
    Deny,
    Kill,
    KillTree,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Deny => "deny",
            Action::Kill => "kill",
            Action::KillTree => "kill-tree",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decide, report what would have happened, never deny or kill.
    #[default]
    Observe,
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Enforce => "enforce",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    /// OCSF severity_id.
    pub fn ocsf_id(self) -> u8 {
        match self {
            Severity::Informational => 1,
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            Severity::Critical => 5,
        }
    }
}

/// What the kernel decided and did about one record (Header::verdict).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KernelVerdict {
    /// The deciding rule's action; None: allowed (or not judged).
    pub action: Option<Action>,
    pub enforce: bool,
    /// The kernel refused the action (EPERM).
    pub denied: bool,
    /// The kernel SIGKILLed the process.
    pub killed: bool,
    /// The kernel met a pattern it cannot judge exactly: the daemon decides.
    pub undecided: bool,
    /// The kernel could not judge the action at all (its target unreadable, truncated or not
    /// placeable, a map full): the unjudged posture decided.
    pub unjudged: bool,
    /// The kill came after the operation's side effect.
    pub after_effect: bool,
    pub class: RuleClass,
    /// Guardrail index (for [`RuleClass::Guardrail`]).
    pub rule: u16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleClass {
    #[default]
    None,
    Guardrail,
    Unbound,
    Expired,
    Scope,
    Unjudged,
}

impl KernelVerdict {
    pub fn from_bits(bits: u32) -> KernelVerdict {
        let action = match (bits & verdict::ACTION_MASK) as u8 {
            action::ALERT => Some(Action::Alert),
            action::DENY => Some(Action::Deny),
            action::KILL => Some(Action::Kill),
            action::KILL_TREE => Some(Action::KillTree),
            _ => None,
        };
        let class = match (bits & verdict::CLASS_MASK) >> verdict::CLASS_SHIFT {
            rule_class::GUARDRAIL => RuleClass::Guardrail,
            rule_class::UNBOUND => RuleClass::Unbound,
            rule_class::EXPIRED => RuleClass::Expired,
            rule_class::SCOPE => RuleClass::Scope,
            rule_class::UNJUDGED => RuleClass::Unjudged,
            _ => RuleClass::None,
        };
        KernelVerdict {
            action,
            enforce: bits & verdict::ENFORCE != 0,
            denied: bits & verdict::DENIED != 0,
            killed: bits & verdict::KILLED != 0,
            undecided: bits & verdict::UNDECIDED != 0,
            unjudged: bits & verdict::UNJUDGED != 0,
            after_effect: bits & verdict::AFTER_EFFECT != 0,
            class,
            rule: (bits >> verdict::RULE_SHIFT) as u16,
        }
    }

    /// Did the kernel act (refuse or kill)?
    pub fn acted(&self) -> bool {
        self.denied || self.killed
    }

    /// Does the verdict refuse (enforce mode, deny or stronger)?
    pub fn refuses(&self) -> bool {
        self.enforce && self.action.is_some_and(|a| a >= Action::Deny)
    }
}

/// The two output streams: every action (audit) and the findings (alerts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Audit,
    Alerts,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Audit => "audit",
            Stream::Alerts => "alerts",
        }
    }
}

/// What Tether keeps of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Hash)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.serviceAccountName` (`default` where the pod names none): its workload identity.
    pub service_account: String,
}

/// The runtime that made a container cgroup, as far as its name tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    /// A bare id (cgroupfs driver): containerd or Docker; the name does not say which.
    Unknown,
}

/// Where an actor runs: the node, and its container and pod when it has them (written into
/// every event's `unmapped.tether`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Hash)]
pub struct Identity {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// A container, by id and runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Hash)]
pub struct Container {
    pub id: String,
    pub runtime: Runtime,
}

/// An actor's pod: known to the pod cache, or only its UID (from the cgroup path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Hash)]
#[serde(untagged)]
pub enum PodRef {
    Known(PodMeta),
    /// In a pod the API has not told about (yet), or pod identity is off.
    Unresolved {
        uid: String,
        resolved: bool,
    },
}
