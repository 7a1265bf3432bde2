//! Containment in the kernel: rules and credential scopes compiled into the BPF maps
//! ([`compile`], pure), written to the kernel ([`kernel_maps`]), the kernel's verdict in each
//! record decoded ([`KernelVerdict`]), the kills the kernel cannot do itself ([`kill`]), and
//! the sandbox `tether exec` applies to itself ([`sandbox`]: [`landlock`], [`seccomp`]).
pub mod compile;
pub mod kernel_maps;
pub mod kill;
pub mod landlock;
pub mod sandbox;
pub mod seccomp;

use serde::Serialize;

pub use crate::model::{KernelVerdict, RuleClass};
use crate::policy::engine::{Action, Decision, Mode};

/// What the daemon still has to do about a decided action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonAct {
    None,
    /// Kill the acting process (pidfd): the kernel could not (a cgroup hook cannot signal),
    /// or could not judge the action (undecided), and the action took effect.
    Kill,
    /// Kill every process of the task (or of the agent tree, for an unbound agent).
    KillTree,
}

/// The daemon's share of enforcing `decision` (the engine's, on the same rules as the kernel)
/// given what the kernel did. `succeeded`: the operation took effect (a failed syscall needs
/// no after-the-fact kill).
pub fn daemon_act(decision: &Decision, kv: &KernelVerdict, succeeded: bool) -> DaemonAct {
    let Some(action) = decision.action else {
        return DaemonAct::None;
    };
    if decision.mode != Mode::Enforce {
        return DaemonAct::None;
    }
    match action {
        Action::Alert => DaemonAct::None,
        Action::KillTree => DaemonAct::KillTree,
        Action::Kill if !kv.killed => DaemonAct::Kill,
        Action::Deny if !kv.acted() && succeeded => DaemonAct::Kill,
        _ => DaemonAct::None,
    }
}

/// The outcome of an action, as reported: OCSF action/disposition and who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// OCSF action_id: 1 Allowed, 2 Denied.
    pub action_id: u8,
    pub action: &'static str,
    /// OCSF disposition_id: 1 Allowed, 2 Blocked, 15 Detected, 99 Other.
    pub disposition_id: u8,
    pub disposition: &'static str,
    /// The mechanism that acted (None: nothing acted).
    pub by: Option<String>,
    pub denied: bool,
    pub killed: bool,
    /// The kill came after the operation took effect (e.g. the file was already created).
    pub after_effect: bool,
}

/// What happened, from the decision, what the kernel did (`kv`, on hook `mechanism`), what the
/// daemon did (`act`, and whether its kill reached the process), and how the operation ended
/// (`errno`: Some when the syscall failed; `landlocked`: the task runs under Landlock, so an
/// EACCES is Landlock's refusal).
pub fn outcome(
    decision: Option<&Decision>,
    kv: &KernelVerdict,
    mechanism: &str,
    errno: Option<i64>,
    landlocked: bool,
    act: DaemonAct,
    daemon_killed: bool,
) -> Outcome {
    let allowed = |disposition_id, disposition| Outcome {
        action_id: 1,
        action: "Allowed",
        disposition_id,
        disposition,
        by: None,
        denied: false,
        killed: false,
        after_effect: false,
    };
    let violation = decision.is_some_and(|d| d.action.is_some());
    let daemon_kill = match act {
        DaemonAct::Kill if daemon_killed => Some("process killed by the daemon (pidfd)"),
        DaemonAct::KillTree if daemon_killed => Some("every process of the task killed by the daemon (pidfd)"),
        _ => None,
    };
    if kv.denied {
        return Outcome {
            action_id: 2,
            action: "Denied",
            disposition_id: 2,
            disposition: "Blocked",
            by: Some(match daemon_kill {
                Some(k) => format!("{mechanism}; {k}"),
                None => mechanism.to_string(),
            }),
            denied: true,
            killed: kv.killed || daemon_kill.is_some(),
            // E.g. an O_CREAT refused by file_open: the (empty) file exists already.
            after_effect: kv.after_effect,
        };
    }
    if kv.killed {
        // Killed by the probe: before the action took effect, or after it.
        return Outcome {
            action_id: if kv.after_effect { 1 } else { 2 },
            action: if kv.after_effect { "Allowed" } else { "Denied" },
            disposition_id: if kv.after_effect { 99 } else { 2 },
            disposition: if kv.after_effect {
                "Process killed after the operation took effect"
            } else {
                "Blocked (process killed before the action took effect)"
            },
            by: Some(format!("{mechanism} (bpf_send_signal SIGKILL)")),
            denied: false,
            killed: true,
            after_effect: kv.after_effect,
        };
    }
    if violation && landlocked && errno == Some(-(libc::EACCES as i64)) {
        return Outcome {
            action_id: 2,
            action: "Denied",
            disposition_id: 2,
            disposition: "Blocked",
            by: Some("landlock (applied by tether exec)".into()),
            denied: true,
            killed: false,
            after_effect: false,
        };
    }
    if matches!(act, DaemonAct::Kill | DaemonAct::KillTree) && daemon_killed {
        let done = errno.is_none();
        return Outcome {
            action_id: if done { 1 } else { 2 },
            action: if done { "Allowed" } else { "Denied" },
            disposition_id: 99,
            disposition: if done {
                "Process killed after the operation took effect"
            } else {
                "Process killed"
            },
            by: Some(if act == DaemonAct::KillTree {
                "daemon (pidfd SIGKILL to every process of the task)".to_string()
            } else {
                "daemon (pidfd SIGKILL, after the fact)".to_string()
            }),
            denied: false,
            killed: true,
            after_effect: done,
        };
    }
    if violation {
        allowed(15, "Detected")
    } else {
        allowed(1, "Allowed")
    }
}

/// Why rules could not be put in the kernel (nothing of them is in force then).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Compile(#[from] compile::CompileError),
    #[error(transparent)]
    Maps(#[from] kernel_maps::MapsError),
}

/// Writes the guardrails (for every agent, and for each guard set in `sets`: the pods'),
/// the exempt writes and the verdicts of `rules` into the kernel maps (each owner's new
/// entries before its stale ones go, so there is no moment without rules), and removes the
/// guard sets no longer in use. Everything is compiled first: a compile error changes nothing.
pub fn install_rules(
    maps: &mut kernel_maps::KernelRules,
    rules: &crate::policy::engine::Rules,
    sets: &std::collections::BTreeSet<u32>,
) -> Result<(), InstallError> {
    use agent_common::contain::{EXEMPT, guard_owner, guard_set_of_owner};
    let mut compiled = vec![(0, compile::guardrails(rules, 0)?)];
    for &set in sets.iter().filter(|s| **s != 0) {
        compiled.push((set, compile::guardrails(rules, set)?));
    }
    let (posture, verdicts) = compile::verdicts(rules);
    if verdicts.len() > agent_common::contain::MAX_GUARDRAILS as usize {
        return Err(kernel_maps::MapsError::TooManyGuardrails(verdicts.len()).into());
    }
    maps.install(EXEMPT, &compile::exempt())?;
    for (set, guards) in &compiled {
        maps.install(guard_owner(*set), guards)?;
    }
    maps.set_verdicts(&posture, &verdicts)?;
    let unused: Vec<u32> = maps
        .owners()
        .filter(|o| guard_set_of_owner(*o).is_some_and(|s| !sets.contains(&s)))
        .collect();
    for o in unused {
        maps.remove(o);
    }
    for u in &compiled[0].1.undecided {
        tracing::warn!("guardrail pattern {u}: not judged by the kernel; the daemon kills after the fact");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::contain::{action, rule_class, verdict};

    use crate::policy::engine::Severity;

    fn decision(action: Action, mode: Mode) -> Decision {
        Decision {
            action: Some(action),
            rule: "scope:write".into(),
            reason: "r".into(),
            severity: Severity::High,
            mode,
            violation: None,
            attack: Vec::new(),
        }
    }

    #[test]
    fn the_daemon_only_does_what_the_kernel_could_not() {
        let kernel_denied = KernelVerdict {
            denied: true,
            ..Default::default()
        };
        let nothing = KernelVerdict::default();
        let enforce = |a| decision(a, Mode::Enforce);
        assert_eq!(
            daemon_act(&enforce(Action::Deny), &kernel_denied, false),
            DaemonAct::None
        );
        assert_eq!(daemon_act(&enforce(Action::Deny), &nothing, true), DaemonAct::Kill);
        assert_eq!(daemon_act(&enforce(Action::Deny), &nothing, false), DaemonAct::None);
        assert_eq!(
            daemon_act(&enforce(Action::Kill), &kernel_denied, false),
            DaemonAct::Kill
        );
        assert_eq!(
            daemon_act(&enforce(Action::KillTree), &kernel_denied, false),
            DaemonAct::KillTree
        );
        assert_eq!(daemon_act(&enforce(Action::Alert), &nothing, true), DaemonAct::None);
        assert_eq!(
            daemon_act(&decision(Action::KillTree, Mode::Observe), &nothing, true),
            DaemonAct::None
        );
    }

    #[test]
    fn outcomes_are_honest() {
        let d = decision(Action::Deny, Mode::Enforce);
        let o = outcome(
            Some(&d),
            &KernelVerdict::from_bits(action::DENY as u32 | verdict::ENFORCE | verdict::DENIED),
            "cgroup_sock_addr/connect",
            Some(-1),
            false,
            DaemonAct::None,
            false,
        );
        assert_eq!((o.action_id, o.disposition_id), (2, 2));
        assert_eq!(o.by.as_deref(), Some("cgroup_sock_addr/connect"));
        assert!(!o.killed);
        // Refused by the cgroup hook, the tree killed by the daemon: both are said.
        let kt = decision(Action::KillTree, Mode::Enforce);
        let o = outcome(
            Some(&kt),
            &KernelVerdict::from_bits(action::KILL_TREE as u32 | verdict::ENFORCE | verdict::DENIED),
            "cgroup_sock_addr/connect",
            Some(-1),
            false,
            DaemonAct::KillTree,
            true,
        );
        assert!(o.denied && o.killed, "{o:?}");
        assert_eq!(
            o.by.as_deref(),
            Some("cgroup_sock_addr/connect; every process of the task killed by the daemon (pidfd)")
        );
        let after =
            KernelVerdict::from_bits(action::DENY as u32 | verdict::ENFORCE | verdict::KILLED | verdict::AFTER_EFFECT);
        let o = outcome(
            Some(&d),
            &after,
            "tracepoint/syscalls",
            None,
            false,
            DaemonAct::None,
            false,
        );
        assert_eq!((o.action_id, o.disposition_id, o.after_effect), (1, 99, true));
        let o = outcome(
            Some(&d),
            &KernelVerdict::default(),
            "tracepoint/syscalls",
            Some(-13),
            true,
            DaemonAct::None,
            false,
        );
        assert_eq!(o.by.as_deref(), Some("landlock (applied by tether exec)"));
        let observe = decision(Action::Deny, Mode::Observe);
        let o = outcome(
            Some(&observe),
            &KernelVerdict::default(),
            "x",
            None,
            false,
            DaemonAct::None,
            false,
        );
        assert_eq!((o.action_id, o.disposition_id, o.by), (1, 15, None));
        let o = outcome(
            None,
            &KernelVerdict::default(),
            "x",
            None,
            false,
            DaemonAct::None,
            false,
        );
        assert_eq!((o.action_id, o.disposition_id), (1, 1));
    }

    #[test]
    fn verdict_bits_decode() {
        let v = KernelVerdict::from_bits(
            action::KILL as u32
                | verdict::ENFORCE
                | verdict::KILLED
                | verdict::AFTER_EFFECT
                | (rule_class::GUARDRAIL << verdict::CLASS_SHIFT)
                | (7 << verdict::RULE_SHIFT),
        );
        assert_eq!(v.action, Some(Action::Kill));
        assert!(v.enforce && v.killed && v.after_effect && !v.denied && !v.undecided);
        assert_eq!(v.class, RuleClass::Guardrail);
        assert_eq!(v.rule, 7);
        assert_eq!(KernelVerdict::from_bits(0), KernelVerdict::default());
        assert!(KernelVerdict::from_bits(verdict::UNDECIDED).undecided);
    }
}
